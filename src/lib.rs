//! wsloop: a WebSocket server on one mio poll loop, built the way the classic PHP `socket_select` chatroom builds
//! one, and made correct to RFC 6455, fast, and hard to break.
//!
//! # The PHP original, step by step
//!
//! | PHP step | wsloop |
//! |---|---|
//! | `start_server()`: create, bind, listen; the sockets array | [`Server::start_server`] (or [`Server::bind`] + [`Server::run`]): a `mio::Poll`, the listener as `LISTENER`, a `Slab<Connection>` |
//! | the `while(TRUE)` around `socket_select` | [`Server::run`]: `poll.poll(&mut events, timeout)`, then `match event.token()` |
//! | `add_accept()`: accept, push, `isHand = false` | `Server::add_accept`: accept until `WouldBlock`, `slab.insert`, the slab key as token |
//! | `upgrade()`: read headers, accept key, write 101 | `Server::upgrade`, calling [`handshake::parse_request`], [`handshake::validate`], [`handshake::switching_protocols`] |
//! | `decode()`: unmask, read the payload | `Server::consume`: a loop of `Input::next_event` over the connection's `Inbound` (`inbound.rs`, which keeps what has not fully arrived), which is [`frame::decode`] for a whole frame (text checked as UTF-8 while it is unmasked, `utf8.rs`), unmasks and checks a frame still arriving read by read (`message::Probe`), then hands it to [`message::Assembler::push`] |
//! | `frame()`/`encode()` for outgoing text | [`frame::encode`], queued in the connection's write buffer |
//! | `close()`: close the socket, unset it from the array | `Server::close`: deregister, `slab.remove`, the `close` callback |
//! | the function table `add` / `send` / `close` | [`Handler::add`] (with the request, a [`Context`]), [`Handler::send`] (runs for each *received* message, as in the PHP), [`Handler::close`] (with the code, reason and who closed, [`Closed`]); inside them a [`Handle`] offers `send`, `broadcast`, `close`, and the connection's own data ([`Accept::data`], [`Handle::data`]) |
//!
//! # What the PHP never had
//!
//! Each sits beside the loop, so that [`Server::run`] still reads as the PHP loop:
//!
//! - **Topics** (`topics.rs`): [`Handle::subscribe`], [`Handle::publish`]; a publish walks only the topic's subscribers.
//! - **Other threads** (`remote.rs`, `bus/mod.rs`, `server/inbox.rs`): a [`Remote`] pushes into the loop's bounded
//!   inbox and wakes it through its `WAKER`; the loop carries the command out on its own thread.
//! - **Timers** (`server/timers.rs`): [`Handle::after`], [`Handle::every`], [`Handler::timer`], in the deadline heap
//!   the connections' timeouts use.
//! - **Several loops** (`loops.rs`): [`Loops`] runs the PHP loop N times over, one per thread, on one port; every
//!   subscriber on every loop sees publishes in one and the same order (see `bus/mod.rs`).
//! - **Several machines** (`bus/redis/`, cargo feature `redis`): `Loops::redis` joins nodes through Redis
//!   Streams, one order per topic on every node.
//! - **Compression** ([`deflate`], `server/deflate.rs`): permessage-deflate (RFC 7692), on with
//!   [`Config::deflate`]. The offer is answered in `upgrade`; a compressed message is inflated on its way into the
//!   [`message::Assembler`] (its size limit counting inflated bytes); a frame is compressed as it is queued, a
//!   publish once for every receiver that agreed to the same window.
//! - **TLS** (`tls.rs`, cargo feature `tls`): `wss://` in the same loop, on with `Config::tls` and a `Tls` made
//!   from PEM files (or a rustls configuration of the application's own). A connection is a socket plus a rustls
//!   session; only `connection.rs` sees which: `upgrade` and `decode` get the plaintext, the queue goes out
//!   through the session, and `close_notify` precedes the shutdown of our TCP write side.
//! - **Metrics** (`metrics/`, `server/stats.rs`): every loop counts in figures only it writes; with the cargo
//!   feature `metrics` and `Config::metrics`, the loop itself serves `GET /metrics` (Prometheus' text format) and
//!   `GET /stats` (a live page, pushed the figures over a WebSocket of the loop's own once a second).
//! - **The protocol inspector** ([`inspect`], `server/inspect.rs`): a connection accepted with
//!   [`Accept::inspect`] has its handshake and the start of each frame, both ways, handed to
//!   [`Handler::inspect`], for a page that shows a learner what crossed the wire.
//!
//! # Layout
//!
//! - `server.rs`: the poll loop (with `server/outbound.rs`, `server/timers.rs`, `server/inbox.rs`,
//!   `server/config.rs`). `connection.rs`: one client's socket and buffers. Only these touch sockets.
//! - `inbound.rs`: a connection's inbound side (the partial frame, its probe, the assembler), pure, the one place
//!   that keeps the rules the `unsafe` shortcut of `message::Probe` relies on.
//! - `handshake.rs`, `frame.rs`, `message.rs`, `utf8.rs`: pure code, tested and benchmarked without a network.
//! - `handler.rs`: the user's callbacks and their handle; `accept.rs` and `close.rs`: what they learn of a
//!   connection at its start and at its end. `error.rs`: each error and what the peer sees.
//! - `topics.rs` (pure), `bus/mod.rs`, `remote.rs`, `loops.rs`: topics, other threads, several loops.
//! - `deflate/` (pure: `offer.rs`, `codec.rs`) and `server/deflate.rs`: permessage-deflate.
//! - `tls.rs` (feature `tls`): the certificate and key, and a connection's rustls session, read and written
//!   edge-triggered.
//! - `metrics/` and `server/stats.rs`: the figures, `/metrics` and `/stats`; `inspect.rs` (pure) and
//!   `server/inspect.rs`: the protocol inspector.
//!
//! # The life of a message
//!
//! 1. A client connects; the listener becomes readable; `add_accept` registers the socket, not handshaked.
//! 2. Its request head arrives (in any number of pieces); `upgrade` checks it and queues `101 Switching Protocols`;
//!    the user's `add` runs.
//! 3. A masked frame arrives; `frame::decode` unmasks it in place (a text frame that is a whole message is checked
//!    as UTF-8 in the same pass); a longer frame that takes several reads is unmasked and checked read by read,
//!    as it comes (`message::Probe`). `message::Assembler` joins fragments and checks theirs; the user's `send`
//!    runs with the message.
//! 4. The callback calls `ws.broadcast(...)`: the frame is encoded once, its bytes shared by every receiver's queue.
//! 5. At the end of the loop turn each touched connection writes its queue; what the socket cannot take waits for
//!    `WRITABLE`.
//! 6. The client sends a close frame; the server echoes it, the user's `close` runs, and the server shuts its side
//!    of TCP down first.
//!
//! ```no_run
//! use wsloop::{ConnId, Config, Handle, Handler, Message, Server};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
//!         ws.send(id, msg);
//!     }
//! }
//! Server::start_server("127.0.0.1:9001", Config::default(), Echo).unwrap();
//! ```
#![deny(missing_docs)]
// An `unsafe fn` says what its caller promises; what it does itself on that promise is marked, one block at a time.
#![deny(unsafe_op_in_unsafe_fn)]

/// Declares an item that is not part of the API: `pub` with the cargo feature `internals`, for the benches and the
/// fuzz targets that drive it directly, and `pub(crate)` without. Its documentation says so where it is public.
macro_rules! internal {
    ($(#[$attr:meta])* pub $($item:tt)+) => {
        $(#[$attr])*
        #[doc = ""]
        #[doc = "Not part of the API: public only with the cargo feature `internals`, for the benches and the fuzz \
                 targets, under no semver promise."]
        #[cfg(feature = "internals")]
        pub $($item)+

        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        pub(crate) $($item)+
    };
}

mod accept;
mod bus;
mod close;
mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
mod handler;
pub mod handshake;
pub mod inspect;
mod loops;
pub mod message;
mod metrics;
mod remote;
mod server;
#[cfg(feature = "tls")]
mod tls;
mod topics;
// Not part of the API either, but declared without `internal!`: with the doc lines it adds, rustdoc would resolve the
// links in the module's own docs from here. The module's docs say what it is.
#[cfg(feature = "internals")]
pub mod utf8;
#[cfg(not(feature = "internals"))]
mod utf8;
// The inbound side of a connection, the code the fuzz targets drive as the server does.
#[cfg(feature = "internals")]
pub mod inbound;
#[cfg(not(feature = "internals"))]
mod inbound;

pub use accept::{Accept, Context};
pub use close::{CloseCode, Closed, ClosedBy};
pub use connection::ConnId;
pub use error::{Error, FrameError, HandshakeError, RemoteError};
pub use handler::{Handle, Handler, Outgoing};
pub use loops::Loops;
pub use message::Message;
pub use remote::Remote;
/// The rustls this crate is built with, for a [`Tls::from_config`] of the application's own (`tls` feature).
#[cfg(feature = "tls")]
pub use rustls;
pub use server::{Config, Server, Stats, TimerId};
#[cfg(feature = "tls")]
pub use tls::{Tls, TlsError};

#[cfg(feature = "redis")]
pub use bus::redis::RedisConfig;

// The README's code blocks are compiled as doctests, so that they stay true to the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The answer of a push parser: more bytes are needed, or a complete value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status<T> {
    /// Not enough bytes yet; nothing was consumed.
    Partial,
    /// A complete value.
    Complete(T),
}
