//! The user's function table — `add`, `send`, `close` — and the [`Handle`] the callbacks act through.
//!
//! In the PHP tutorial these were closures stored in `$this->function['add']`, `['send']` and `['close']`, called
//! with the server object. Here they are the methods of the [`Handler`] trait, each optional, called at the same
//! points. A callback never touches a socket: what it asks of its [`Handle`] (send, broadcast, close) is queued and
//! carried out by the loop once the callback returns, so no callback can leave the loop in a broken state.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::accept::{Accept, Context};
use crate::bus::Bus;
use crate::close::{CloseCode, Closed};
use crate::connection::{AnyData, ConnId, Connection};
use crate::frame::{self, Head, OpCode};
use crate::handshake::{HttpResponse, Request};
use crate::message::Message;
use crate::server::{Stats, TimerId, Timers};
use crate::topics::Topics;

/// The user callbacks, named after the PHP function table. Every method has a default that does nothing.
pub trait Handler {
    /// Mirrors the PHP `add` callback: runs after a connection has completed its handshake. `conn` is what it came
    /// with: the request (path, query, headers), the subprotocol chosen, the peer's address.
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, conn: &Context<'_>) {
        let _ = (ws, id, conn);
    }

    /// Mirrors the PHP `send` callback, which despite its name runs for each *received* message: here, once for
    /// every complete text or binary message, with its data and the connection it came from.
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let _ = (ws, id, msg);
    }

    /// Mirrors the PHP `close` callback: runs once when a handshaked connection stops carrying messages, for any
    /// reason. `closed` says why: the close code and reason (the peer's if it closed, the server's if it did; no
    /// code if the connection just dropped), who closed, and the connection's data, handed back.
    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, closed: Closed<'_>) {
        let _ = (ws, id, closed);
    }

    /// A publish or broadcast (`topic` `None`) this loop has just delivered to its subscribers, whoever made it (on
    /// this loop, another, or another node), in the one order every subscriber sees. Not part of the PHP function
    /// table. The chatroom keeps its history with it: what it has seen here is what a newcomer missed. A node that
    /// joins through Redis also hands the last few broadcasts from before it started here, to no client.
    fn published(&mut self, topic: Option<&str>, msg: Message<'_>) {
        let _ = (topic, msg);
    }

    /// A user of another node that died (its lease in Redis ran out): `presence` is what that node's application
    /// gave [`Handle::set_presence`] for it. Runs once, on the first loop of one surviving node.
    fn departed(&mut self, ws: &mut Handle<'_>, presence: &str) {
        let _ = (ws, presence);
    }

    /// An application timer set with [`Handle::after`] or [`Handle::every`] is due: runs on the loop's thread with the
    /// `token` it was set with. Not part of the PHP function table, which had no timers.
    fn timer(&mut self, ws: &mut Handle<'_>, token: u64) {
        let _ = (ws, token);
    }

    /// A pong from connection `id`: the answer to a ping of [`Handle::ping`] carries that ping's payload (RFC 6455
    /// §5.5.3), so the application can time a round trip (what a chat shows as latency). Pongs the peer sends on its
    /// own, and answers to the server's own idle pings, come here too. Not part of the PHP function table.
    fn pong(&mut self, ws: &mut Handle<'_>, id: ConnId, payload: &[u8]) {
        let _ = (ws, id, payload);
    }

    /// What crossed the wire of a connection accepted with [`Accept::inspect`]: its handshake, then the start of each
    /// frame it sent (as it arrived, masked) and of each frame queued for it, in order, once per turn of the loop.
    /// Show it to that connection alone (the chatroom sends it back as JSON). What this callback sends is not
    /// recorded itself. Not part of the PHP function table.
    fn inspect(&mut self, ws: &mut Handle<'_>, id: ConnId, seen: &crate::inspect::Seen) {
        let _ = (ws, id, seen);
    }

    /// A plain HTTP `GET` without any WebSocket header. Return a response to serve it; `None` answers 426.
    fn http(&mut self, req: &Request<'_>) -> Option<HttpResponse> {
        let _ = req;
        None
    }

    /// Decides on a valid handshake before it is accepted: `Ok(accept)` accepts it, with a subprotocol and data of
    /// the application's own type if `accept` says so ([`Accept`]); `Err(response)` refuses it with that HTTP
    /// response (a client or server error status, 400-599; any other is answered with 500), e.g.
    /// `Err(HttpResponse::error(401).header("WWW-Authenticate", "Bearer"))`.
    ///
    /// The connection has no [`ConnId`] yet: what `accept` learns that later callbacks need goes in the data.
    fn accept(&mut self, req: &Request<'_>) -> Result<Accept, HttpResponse> {
        let _ = req;
        Ok(Accept::new())
    }
}

/// A message to send: borrowed, or owned and handed over.
///
/// A borrowed message ([`Message`], `&str`, `&[u8]`) is copied into the queue behind its frame header. An owned one
/// (`String`, `Vec<u8>`) of at least 1024 bytes (`frame::WRITEV_MIN`) is not copied at all: it is queued as it is and
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
    pub(crate) fn into_frame(self) -> (Head, Vec<u8>) {
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

impl Outgoing<'_> {
    /// The opcode and the payload.
    pub(crate) fn parts(&self) -> (OpCode, &[u8]) {
        match self {
            Outgoing::Message(msg) => (msg.opcode(), msg.as_bytes()),
            Outgoing::Text(text) => (OpCode::Text, text.as_bytes()),
            Outgoing::Binary(bytes) => (OpCode::Binary, bytes),
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

/// What a callback (or another thread, or another loop) asked for, carried out by the loop that owns the
/// connection. A frame is a header (none if the bytes are a whole frame) and the bytes that follow it.
pub(crate) enum Action {
    Send(ConnId, Head, Vec<u8>),
    /// To a topic's subscribers, or to everyone (`None`): one frame, its bytes shared by every receiver.
    Publish(Option<Arc<str>>, Head, Arc<Vec<u8>>),
    Close(ConnId, CloseCode, String),
    /// A broadcast from before this node started, for the handler's `published` alone (`redis` feature).
    Replay(Option<String>, OpCode, Vec<u8>),
    /// A user of a node that died, for the handler's `departed` (`redis` feature).
    Departed(String),
}

impl Action {
    pub(crate) fn publish<'m>(topic: Option<&str>, msg: impl Into<Outgoing<'m>>) -> Action {
        let (head, bytes) = msg.into().into_frame();
        Action::Publish(topic.map(Arc::from), head, Arc::new(bytes))
    }

    pub(crate) fn send<'m>(id: ConnId, msg: impl Into<Outgoing<'m>>) -> Action {
        let (head, bytes) = msg.into().into_frame();
        Action::Send(id, head, bytes)
    }
}

/// What callbacks can do: send to one connection, broadcast to all, publish to a topic's subscribers, close one,
/// set timers, and look at the pool.
pub struct Handle<'a> {
    pub(crate) conns: &'a mut Slab<Connection>,
    pub(crate) actions: &'a mut Vec<Action>,
    pub(crate) topics: &'a mut Topics,
    pub(crate) timers: &'a mut Timers,
    pub(crate) bus: &'a Bus,
    /// Publishes a relay refused so far on this loop (the loop looks after a `close` callback).
    pub(crate) refused: &'a mut u64,
    pub(crate) stats: Stats,
    pub(crate) now: Instant,
}

impl Handle<'_> {
    /// Sends a message to one connection. Ignored if that connection is gone or closing.
    ///
    /// `msg` is a received [`Message`], a `&str` or `&[u8]` (copied), or a `String` or `Vec<u8>` (handed over; see
    /// [`Outgoing`]). `id` may belong to another loop of the server: the message then goes to that loop.
    pub fn send<'m>(&mut self, id: ConnId, msg: impl Into<Outgoing<'m>>) {
        self.actions.push(Action::send(id, msg));
    }

    /// Pings connection `id` with `payload` (at most 125 bytes, §5.5; false for a longer one): the peer's pong comes
    /// back to [`Handler::pong`] with the same payload. The ping waits behind what is queued for the connection, so
    /// the round trip it measures is the one a message sent now would take; like a message, it counts against
    /// `max_buffered`. Ignored if the connection is gone or closing; `id` may belong to another loop.
    pub fn ping(&mut self, id: ConnId, payload: &[u8]) -> bool {
        if payload.len() > frame::MAX_CONTROL_PAYLOAD {
            return false;
        }
        let mut ping = Vec::with_capacity(2 + payload.len());
        frame::encode(&mut ping, true, OpCode::Ping, payload);
        self.actions.push(Action::Send(id, Head::NONE, ping));
        true
    }

    /// Sends a message to every handshaked connection (on every loop, and every node), the sender included. The
    /// frame is made once and its bytes are shared by all receivers.
    ///
    /// Returns false only where nodes are joined through Redis and this node keeps `RedisConfig::pending`
    /// publishes already, waiting for Redis to come back: the message is refused (tell the sender).
    pub fn broadcast<'m>(&mut self, msg: impl Into<Outgoing<'m>>) -> bool {
        self.publish_to(None, msg.into())
    }

    /// Sends a message to every subscriber of `topic`, on every loop (and node), the sender included if it is
    /// subscribed. The frame is made once and its bytes are shared by all receivers; only the topic's subscribers
    /// are touched. Every subscriber sees the publishes (and broadcasts) of the whole server in one and the same
    /// order.
    ///
    /// Like everything a callback asks for, it is carried out after the callback returns: it reaches those
    /// subscribed then. Returns false if it was refused, as [`Handle::broadcast`] says.
    pub fn publish<'m>(&mut self, topic: &str, msg: impl Into<Outgoing<'m>>) -> bool {
        self.publish_to(Some(topic), msg.into())
    }

    fn publish_to(&mut self, topic: Option<&str>, msg: Outgoing<'_>) -> bool {
        match self.bus.relay_publish(topic, &msg) {
            Some(Ok(())) => true,
            Some(Err(_)) => {
                *self.refused += 1;
                false
            }
            None => {
                self.actions.push(Action::publish(topic, msg));
                true
            }
        }
    }

    /// Subscribes connection `id` to `topic`, at once. Returns false if `id` is not an open connection of this
    /// loop (for instance one that is closing) or was subscribed already. A connection's subscriptions end with it.
    pub fn subscribe(&mut self, id: ConnId, topic: &str) -> bool {
        if !self.is_open(id) || !self.topics.subscribe(id.key(), topic) {
            return false;
        }
        if let (Some(relay), 1) = (self.bus.relay(), self.topics.count(topic)) {
            relay.hold(topic);
        }
        true
    }

    /// Unsubscribes connection `id` from `topic`, at once. Returns false if it was not subscribed.
    pub fn unsubscribe(&mut self, id: ConnId, topic: &str) -> bool {
        if !self.is_open(id) || !self.topics.unsubscribe(id.key(), topic) {
            return false;
        }
        if let (Some(relay), 0) = (self.bus.relay(), self.topics.count(topic)) {
            relay.release(topic);
        }
        true
    }

    /// Where nodes are joined through Redis: keeps `value` (a name, say) for connection `id` in Redis while it is
    /// connected, so that if this node dies, another announces the user's departure with it
    /// ([`Handler::departed`]). Replaces an earlier value. Does nothing on a server of one node.
    pub fn set_presence(&mut self, id: ConnId, value: &str) {
        if let (Some(relay), true) = (self.bus.relay(), self.is_open(id)) {
            relay.presence(id.get(), Some(value));
        }
    }

    /// How many connections of this loop hold `topic`.
    pub fn subscribers(&self, topic: &str) -> usize {
        self.topics.count(topic)
    }

    /// Starts the closing handshake with `code` (RFC 6455 §7.4) and a short `reason` (cut to 123 bytes at a
    /// character boundary): `ws.close(id, CloseCode::POLICY_VIOLATION, "no spam")`. The connection's `close`
    /// callback runs once this callback returns, with [`ClosedBy::Application`](crate::ClosedBy::Application).
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        self.actions
            .push(Action::Close(id, code, reason.to_string()));
    }

    /// Calls [`Handler::timer`] with `token` once, `delay` from now (at the soonest on the loop's next turn).
    pub fn after(&mut self, delay: Duration, token: u64) -> TimerId {
        self.timers.start(self.now, delay, None, token)
    }

    /// Calls [`Handler::timer`] with `token` every `period` (at least 1 ms), the first time `period` from now,
    /// until [`Handle::cancel`]. A turn of the loop that came late skips the calls it missed rather than bunching
    /// them.
    pub fn every(&mut self, period: Duration, token: u64) -> TimerId {
        let period = period.max(Duration::from_millis(1));
        self.timers.start(self.now, period, Some(period), token)
    }

    /// Cancels a timer. Returns false if it had already fired (a one-shot) or was cancelled.
    pub fn cancel(&mut self, timer: TimerId) -> bool {
        self.timers.cancel(timer)
    }

    /// What this loop has done so far: connections accepted, handshakes, slow readers dropped, connections closed
    /// over the memory budget, the largest queue.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// How many connections are handshaked and open, on all loops of the server (and, joined through Redis, on
    /// every node, as last counted: within a third of the lease).
    pub fn count(&self) -> usize {
        self.bus.all_users()
    }

    /// Bytes queued for `id` that the peer has not read yet, or `None` if the connection is gone (or belongs to
    /// another loop).
    pub fn buffered(&self, id: ConnId) -> Option<usize> {
        self.conn(id).map(Connection::buffered)
    }

    /// True if `id` is a connection of this loop, handshaked and not closing.
    pub fn is_open(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(Connection::is_open)
    }

    /// The peer address of `id`, if it is still connected (to this loop).
    pub fn peer(&self, id: ConnId) -> Option<std::net::SocketAddr> {
        self.conn(id).map(|c| c.peer)
    }

    /// The data of connection `id` ([`Accept::data`], [`Handle::set_data`]), if it is a connection of this loop
    /// and has data of type `T`.
    pub fn data<T: Any>(&self, id: ConnId) -> Option<&T> {
        let data: &AnyData = self.conn(id)?.data.as_deref()?;
        data.downcast_ref()
    }

    /// The data of connection `id`, to change, as [`Handle::data`] finds it.
    pub fn data_mut<T: Any>(&mut self, id: ConnId) -> Option<&mut T> {
        let data: &mut AnyData = self.conn_mut(id)?.data.as_deref_mut()?;
        data.downcast_mut()
    }

    /// Keeps `data` with connection `id` (replacing what it had): later callbacks reach it with [`Handle::data`],
    /// and the `close` callback gets it back. Returns false if `id` is not an open connection of this loop.
    pub fn set_data<T: Any + Send>(&mut self, id: ConnId, data: T) -> bool {
        match self.conn_mut(id).filter(|c| c.is_open()) {
            Some(conn) => {
                conn.data = Some(Box::new(Box::new(data)));
                true
            }
            None => false,
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Connection> {
        self.conns
            .get(id.key())
            .filter(|c| c.id == id && !c.is_viewer)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns
            .get_mut(id.key())
            .filter(|c| c.id == id && !c.is_viewer)
    }
}
