//! The server's settings and its counters.

use std::time::Duration;

/// The server's limits and timeouts. Every field has a default; see the README for what a peer sees at each limit.
#[derive(Debug, Clone)]
pub struct Config {
    /// The PHP `maxuser`: handshaked connections at most; one more is refused with HTTP 503.
    pub max_users: usize,
    /// The largest message, counted over all its fragments, in bytes (inclusive); over it: close 1009.
    pub max_message: usize,
    /// The largest request head in bytes; over it: HTTP 431.
    pub max_head: usize,
    /// Outbound data a connection may have waiting, in bytes, counted once the socket has taken all it can and
    /// not counting the message being written (so one message larger than this still goes out). A connection over
    /// it is a slow reader: its unsent data is dropped and it gets close 1008. Pongs do not count (at most 16 wait),
    /// nor does a close frame, queued only once the connection is closing; each queued frame's queue entry does.
    pub max_buffered: usize,
    /// A connection that has not completed its handshake by then is dropped (slowloris).
    pub handshake_timeout: Duration,
    /// After this long without a frame from the peer, the server pings it; after as long again, it drops it.
    /// `None` turns heartbeats off.
    pub idle_timeout: Option<Duration>,
    /// A message (every frame of it) must arrive within this long of its first byte; a peer still sending one
    /// then gets close 1008. Without it, a peer could hold up to `max_message` bytes of the server's memory for as
    /// long as it liked by sending one more byte now and then. `None` turns it off.
    pub message_timeout: Option<Duration>,
    /// How long a closing connection may take to finish the closing handshake before its socket is dropped.
    pub close_timeout: Duration,
    /// Connections that have not completed their handshake (or are closing) at most; a connection accepted past it
    /// is closed at once, so a flood of idle sockets cannot take every file descriptor.
    pub max_pending: usize,
    /// The listen backlog: connections the kernel holds for `accept` (the PHP passed `maxuser` here; the kernel
    /// caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// If set, a handshake whose `Origin` is not in this list (compared case-insensitively) gets HTTP 403. A
    /// request without an `Origin` (a non-browser client) is refused too.
    pub allowed_origins: Option<Vec<String>>,
    /// How many commands may wait in a loop's inbox when a [`Remote`](crate::Remote) call adds one; past it the
    /// call is refused with [`RemoteError::Full`](crate::RemoteError::Full). Everything waiting counts, the
    /// publishes of other loops too (those are never refused: they are already in the one order), so a loop
    /// behind on its inbox pushes back on other threads, whatever filled it.
    pub remote_queue: usize,
    /// permessage-deflate (RFC 7692): `None` (the default) declines every client's offer; `Some` accepts the first
    /// offer these settings can honour. See [`Deflate`](crate::deflate::Deflate) for the memory each setting costs.
    pub deflate: Option<crate::deflate::Deflate>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_users: 10_000,
            max_message: 16 << 20,
            max_head: 8 << 10,
            max_buffered: 4 << 20,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(30)),
            message_timeout: Some(Duration::from_secs(60)),
            close_timeout: Duration::from_secs(5),
            max_pending: 1024,
            backlog: 1024,
            allowed_origins: None,
            remote_queue: 65_536,
            deflate: None,
        }
    }
}

/// What the overflow policy and the loop did, logged as it happens and when the server stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections dropped because their outbound buffer overflowed.
    pub dropped_slow: u64,
    /// Connections closed right after `accept` because `max_pending` were already waiting.
    pub shed: u64,
    /// The most bytes any one connection had queued.
    pub peak_buffered: usize,
}
