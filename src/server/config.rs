//! The server's settings and its counters.

use std::time::Duration;

/// The server's limits and timeouts. Every field has a default; see the README for what a peer sees at each limit.
///
/// A setting is changed on a default `Config`, field by field or with the method of the same name (new settings
/// may come in any release, so a `Config` is never written out whole):
///
/// ```
/// use std::time::Duration;
/// let config = wsloop::Config::default()
///     .max_users(500)
///     .idle_timeout(Some(Duration::from_secs(20)));
/// assert_eq!(config.max_users, 500);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// The memory budget, in bytes, for what connections hold beyond their fixed size: what has arrived of messages
    /// not yet whole (read buffers and fragments joined so far, counted by capacity) and data still queued for a
    /// peer once its socket has taken all it can (a frame broadcast to many is counted once per queue it waits in).
    /// Set it to what the machine can spare for the server. Over it, the connections holding the most are closed
    /// until the total is back under it (never one holding less than 64 KiB): close 1009 for one whose bulk is a
    /// message arriving (dropped at once), 1008 for one whose bulk is what it has not read (a slow reader). With
    /// several loops ([`Loops`](crate::Loops)) each loop keeps its own count, and gets `max_memory / loops` of it.
    pub max_memory: usize,
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
    /// `wss://`: with a certificate and key ([`Tls`](crate::Tls)), every connection speaks TLS before HTTP, in the
    /// same loop; `None` (the default) serves plain `ws://`. The handshake timeout covers the TLS handshake too.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::Tls>,
    /// `GET /metrics` (the figures of every loop in the Prometheus text format) and `GET /stats` (a page that draws
    /// them live, pushed over a WebSocket to `/stats` once a second), served on the WebSocket's port by the loop
    /// itself, before the handler's [`http`](crate::Handler::http) sees a request. Off by default: they tell anyone
    /// who can reach the port how busy the server is.
    #[cfg(feature = "metrics")]
    pub metrics: bool,
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
            max_memory: 1 << 30,
            close_timeout: Duration::from_secs(5),
            max_pending: 1024,
            backlog: 1024,
            allowed_origins: None,
            remote_queue: 65_536,
            deflate: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "metrics")]
            metrics: false,
        }
    }
}

impl Config {
    /// Sets [`Config::max_users`].
    pub fn max_users(mut self, max_users: usize) -> Config {
        self.max_users = max_users;
        self
    }

    /// Sets [`Config::max_message`].
    pub fn max_message(mut self, max_message: usize) -> Config {
        self.max_message = max_message;
        self
    }

    /// Sets [`Config::max_head`].
    pub fn max_head(mut self, max_head: usize) -> Config {
        self.max_head = max_head;
        self
    }

    /// Sets [`Config::max_buffered`].
    pub fn max_buffered(mut self, max_buffered: usize) -> Config {
        self.max_buffered = max_buffered;
        self
    }

    /// Sets [`Config::handshake_timeout`].
    pub fn handshake_timeout(mut self, handshake_timeout: Duration) -> Config {
        self.handshake_timeout = handshake_timeout;
        self
    }

    /// Sets [`Config::idle_timeout`].
    pub fn idle_timeout(mut self, idle_timeout: Option<Duration>) -> Config {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets [`Config::message_timeout`].
    pub fn message_timeout(mut self, message_timeout: Option<Duration>) -> Config {
        self.message_timeout = message_timeout;
        self
    }

    /// Sets [`Config::close_timeout`].
    pub fn close_timeout(mut self, close_timeout: Duration) -> Config {
        self.close_timeout = close_timeout;
        self
    }

    /// Sets [`Config::max_pending`].
    pub fn max_pending(mut self, max_pending: usize) -> Config {
        self.max_pending = max_pending;
        self
    }

    /// Sets [`Config::backlog`].
    pub fn backlog(mut self, backlog: u32) -> Config {
        self.backlog = backlog;
        self
    }

    /// Sets [`Config::allowed_origins`].
    pub fn allowed_origins(mut self, allowed_origins: Option<Vec<String>>) -> Config {
        self.allowed_origins = allowed_origins;
        self
    }

    /// Sets [`Config::remote_queue`].
    pub fn remote_queue(mut self, remote_queue: usize) -> Config {
        self.remote_queue = remote_queue;
        self
    }

    /// Sets [`Config::max_memory`].
    pub fn max_memory(mut self, max_memory: usize) -> Config {
        self.max_memory = max_memory;
        self
    }

    /// Sets [`Config::deflate`].
    pub fn deflate(mut self, deflate: Option<crate::deflate::Deflate>) -> Config {
        self.deflate = deflate;
        self
    }

    /// Sets [`Config::metrics`].
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, metrics: bool) -> Config {
        self.metrics = metrics;
        self
    }

    /// Sets [`Config::tls`].
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: Option<crate::Tls>) -> Config {
        self.tls = tls;
        self
    }
}

/// What the overflow policy and the loop did, logged as it happens and when the server stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Connections dropped because their outbound buffer overflowed.
    pub dropped_slow: u64,
    /// Connections closed because the loop held more than its share of `max_memory` and they held the most.
    pub over_budget: u64,
    /// Connections closed right after `accept` because `max_pending` were already waiting.
    pub shed: u64,
    /// The most bytes any one connection had queued.
    pub peak_buffered: usize,
}
