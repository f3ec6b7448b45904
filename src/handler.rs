//! The user's function table — `add`, `send`, `close` — and the [`Handle`] the callbacks act through.
//!
//! In the PHP tutorial these were closures stored in `$this->function['add']`, `['send']` and `['close']`, called
//! with the server object. Here they are the methods of the [`Handler`] trait, each optional, called at the same
//! points. A callback never touches a socket: what it asks of its [`Handle`] (send, broadcast, close) is queued and
//! carried out by the loop once the callback returns, so no callback can leave the loop in a broken state.

use std::borrow::Cow;
use std::sync::Arc;

use slab::Slab;

use crate::connection::{ConnId, Connection};
use crate::frame::{self, Head, OpCode};
use crate::handshake::{HttpResponse, Request};
use crate::message::Message;
use crate::server::Stats;

/// The user callbacks, named after the PHP function table. Every method has a default that does nothing.
pub trait Handler {
    /// Mirrors the PHP `add` callback: runs after a connection has completed its handshake.
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId) {
        let _ = (ws, id);
    }

    /// Mirrors the PHP `send` callback, which despite its name runs for each *received* message: here, once for
    /// every complete text or binary message, with its data and the connection it came from.
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let _ = (ws, id, msg);
    }

    /// Mirrors the PHP `close` callback: runs once when a handshaked connection stops carrying messages, for any
    /// reason. `code` is the close code the peer sent or the server sent, 1005 if the peer's close frame had no
    /// code, or 1006 if the connection just dropped.
    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, code: u16) {
        let _ = (ws, id, code);
    }

    /// A plain HTTP `GET` without any WebSocket header. Return a response to serve it; `None` answers 426.
    fn http(&mut self, req: &Request<'_>) -> Option<HttpResponse> {
        let _ = req;
        None
    }

    /// Decides on a valid handshake before it is accepted: `Ok(None)` accepts it, `Ok(Some(p))` accepts it with
    /// subprotocol `p` (one of `req.protocols()`; any other is a bug, answered with 500), `Err(status)` refuses it
    /// with that HTTP status.
    fn accept(&mut self, req: &Request<'_>) -> Result<Option<String>, u16> {
        let _ = req;
        Ok(None)
    }
}

/// A message to send: borrowed, or owned and handed over.
///
/// A borrowed message ([`Message`], `&str`, `&[u8]`) is copied into the queue behind its frame header. An owned one
/// (`String`, `Vec<u8>`) of at least [`frame::WRITEV_MIN`] bytes is not copied at all: it is queued as it is and
/// written from its own buffer, its header beside it in the same `writev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing<'a> {
    /// A message borrowed from the caller: copied.
    Message(Message<'a>),
    /// An owned text message: handed over.
    Text(String),
    /// An owned binary message: handed over.
    Binary(Vec<u8>),
}

impl Outgoing<'_> {
    /// The frame header and the bytes that follow it: a separate header and the payload itself for a large owned
    /// payload, otherwise no header and the whole frame encoded in one buffer.
    fn into_frame(self) -> (Head, Vec<u8>) {
        let (opcode, payload) = match self {
            Outgoing::Message(msg) => (msg.opcode(), Cow::Borrowed(msg.as_bytes())),
            Outgoing::Text(text) => (OpCode::Text, Cow::Owned(text.into_bytes())),
            Outgoing::Binary(bytes) => (OpCode::Binary, Cow::Owned(bytes)),
        };
        match payload {
            Cow::Owned(payload) if payload.len() >= frame::WRITEV_MIN => {
                (Head::new(true, opcode, payload.len()), payload)
            }
            payload => {
                let mut frame = crate::connection::spare_buffer(
                    frame::header_len(payload.len(), false) + payload.len(),
                );
                frame::encode(&mut frame, true, opcode, &payload);
                (Head::NONE, frame)
            }
        }
    }
}

impl<'a> From<Message<'a>> for Outgoing<'a> {
    fn from(msg: Message<'a>) -> Outgoing<'a> {
        Outgoing::Message(msg)
    }
}

impl<'a> From<&'a str> for Outgoing<'a> {
    fn from(text: &'a str) -> Outgoing<'a> {
        Outgoing::Message(Message::Text(text))
    }
}

impl<'a> From<&'a [u8]> for Outgoing<'a> {
    fn from(bytes: &'a [u8]) -> Outgoing<'a> {
        Outgoing::Message(Message::Binary(bytes))
    }
}

impl From<String> for Outgoing<'_> {
    fn from(text: String) -> Self {
        Outgoing::Text(text)
    }
}

impl From<Vec<u8>> for Outgoing<'_> {
    fn from(bytes: Vec<u8>) -> Self {
        Outgoing::Binary(bytes)
    }
}

/// What a callback asked for, carried out by the loop after the callback returns. A frame is a header (none if
/// the bytes are a whole frame) and the bytes that follow it.
pub(crate) enum Action {
    Send(ConnId, Head, Vec<u8>),
    Broadcast(Head, Arc<Vec<u8>>),
    Close(ConnId, u16, String),
}

/// What callbacks can do: send to one connection, broadcast to all, close one, and look at the pool.
pub struct Handle<'a> {
    conns: &'a Slab<Connection>,
    actions: &'a mut Vec<Action>,
    users: usize,
    stats: Stats,
}

impl<'a> Handle<'a> {
    pub(crate) fn new(
        conns: &'a Slab<Connection>,
        actions: &'a mut Vec<Action>,
        users: usize,
        stats: Stats,
    ) -> Handle<'a> {
        Handle {
            conns,
            actions,
            users,
            stats,
        }
    }

    /// Sends a message to one connection. Ignored if that connection is gone or closing.
    ///
    /// `msg` is a received [`Message`], a `&str` or `&[u8]` (copied), or a `String` or `Vec<u8>` (handed over; see
    /// [`Outgoing`]).
    pub fn send<'m>(&mut self, id: ConnId, msg: impl Into<Outgoing<'m>>) {
        let (head, bytes) = msg.into().into_frame();
        self.actions.push(Action::Send(id, head, bytes));
    }

    /// Sends a message to every handshaked connection, the sender included. The frame is made once and its bytes
    /// are shared by all receivers.
    pub fn broadcast<'m>(&mut self, msg: impl Into<Outgoing<'m>>) {
        let (head, bytes) = msg.into().into_frame();
        self.actions.push(Action::Broadcast(head, Arc::new(bytes)));
    }

    /// Starts the closing handshake with `code` (RFC 6455 §7.4) and a short `reason` (cut to 123 bytes). A code
    /// that may not be sent on the wire (see [`crate::message::is_valid_close_code`]) is replaced with 1000.
    pub fn close(&mut self, id: ConnId, code: u16, reason: &str) {
        self.actions
            .push(Action::Close(id, code, reason.to_string()));
    }

    /// What the server has done so far: connections accepted, handshakes, slow readers dropped, the largest queue.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many connections are handshaked and open.
    pub fn count(&self) -> usize {
        self.users
    }

    /// Bytes queued for `id` that the peer has not read yet, or `None` if the connection is gone.
    pub fn buffered(&self, id: ConnId) -> Option<usize> {
        self.conns
            .get(id.key())
            .filter(|c| c.id == id)
            .map(Connection::buffered)
    }

    /// True if `id` is handshaked and not closing.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.conns
            .get(id.key())
            .is_some_and(|c| c.id == id && c.is_open())
    }

    /// The peer address of `id`, if it is still connected.
    pub fn peer(&self, id: ConnId) -> Option<std::net::SocketAddr> {
        self.conns
            .get(id.key())
            .filter(|c| c.id == id)
            .map(|c| c.peer)
    }
}
