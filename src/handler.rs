//! The user's function table — `add`, `send`, `close` — and the [`Handle`] the callbacks act through.
//!
//! In the PHP tutorial these were closures stored in `$this->function['add']`, `['send']` and `['close']`, called
//! with the server object. Here they are the methods of the [`Handler`] trait, each optional, called at the same
//! points. A callback never touches a socket: what it asks of its [`Handle`] (send, broadcast, close) is queued and
//! carried out by the loop once the callback returns, so no callback can leave the loop in a broken state.

use std::sync::Arc;

use slab::Slab;

use crate::connection::{ConnId, Connection};
use crate::frame;
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
    /// subprotocol `p` (one of `req.protocols()`), `Err(status)` refuses it with that HTTP status.
    fn accept(&mut self, req: &Request<'_>) -> Result<Option<String>, u16> {
        let _ = req;
        Ok(None)
    }
}

/// What a callback asked for, carried out by the loop after the callback returns.
pub(crate) enum Action {
    Send(ConnId, Vec<u8>),
    Broadcast(Arc<Vec<u8>>),
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
    pub fn send(&mut self, id: ConnId, msg: Message<'_>) {
        let mut frame = Vec::new();
        frame::encode(&mut frame, true, msg.opcode(), msg.as_bytes());
        self.actions.push(Action::Send(id, frame));
    }

    /// Sends a message to every handshaked connection, the sender included. The frame is encoded once and its
    /// bytes are shared by all receivers.
    pub fn broadcast(&mut self, msg: Message<'_>) {
        let mut frame = Vec::new();
        frame::encode(&mut frame, true, msg.opcode(), msg.as_bytes());
        self.actions.push(Action::Broadcast(Arc::new(frame)));
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
