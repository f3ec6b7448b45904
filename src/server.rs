//! The poll loop: `start_server`, `add_accept`, `upgrade`, `close`, and what happens on each readiness event.
//!
//! In the PHP tutorial this is the class with `start_server()`, `add_accept()`, `upgrade()` and `close()`, and its
//! `while(TRUE)` around `socket_select`. Here one [`mio::Poll`] watches the listener (token [`LISTENER`]) and every
//! accepted socket (token = its key in the connection slab). Only this module and `connection.rs` touch sockets.
//! The loop's steps are here, in the PHP file's order; what is written out (queues, broadcast, slow readers) is in
//! `server/outbound.rs`, the deadlines in `server/timers.rs`, the settings in `server/config.rs`, the memory budget
//! in `server/budget.rs`.
//!
//! Unlike `socket_select`, mio is edge-triggered: it reports a socket when it *becomes* ready, not while it stays
//! ready. So the loop accepts until `WouldBlock`, reads until `WouldBlock`, and keeps whatever a write could not
//! take in the connection's buffer until the next `WRITABLE` event. And unlike the PHP loop, nothing sleeps: the
//! poll timeout is the nearest connection deadline.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::accept::{Accept, Context};
use crate::bus::Bus;
use crate::close::{Closed, ClosedBy, End};
use crate::connection::{AnyData, Chunk, Closing, ConnId, Connection};
use crate::deflate::Session;
use crate::error::{interrupted, would_block, Error, FrameError, HandshakeError};
use crate::frame::{self, Limits, OpCode};
use crate::handler::{Action, Handle, Handler};
use crate::handshake::{self, HttpResponse};
use crate::inbound::Input;
use crate::message::Event;
use crate::metrics::{close_slot, Figures};
use crate::remote::Remote;
use crate::topics::Topics;
use crate::Status;

mod budget;
mod config;
mod deflate;
mod inbox;
mod inspect;
mod outbound;
#[cfg(feature = "metrics")]
mod stats;
mod timers;

pub use config::{Config, Stats};
use outbound::trace_frame;
pub use timers::TimerId;
pub(crate) use timers::Timers;

/// The listening socket's token. Connection tokens are slab keys, which never come near it.
pub(crate) const LISTENER: Token = Token(usize::MAX - 1);
/// The token of the waker through which other threads and loops reach this loop ([`Remote`]).
pub(crate) const WAKER: Token = Token(usize::MAX);

/// How long accepting pauses when the process is out of file descriptors (or the kernel out of buffers).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Failed accepts in a row that are taken for the failing connections' own before accepting pauses.
const ACCEPT_RETRIES: u32 = 8;
/// The shared read buffer: complete frames are decoded straight out of it, without a per-connection copy.
const READ_CHUNK: usize = 64 * 1024;
/// A frame that still lacks this many bytes has them read straight into its connection's buffer, not copied there.
const READ_BEHIND_FROM: usize = 8 * 1024;
/// Reads per readiness event before other connections get their turn (the rest is read on the next turn).
const READS_PER_TURN: usize = 16;

/// The WebSocket server: a listener, a poll, and the pool of connections.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Connection>,
    config: Config,
    limits: Limits,
    /// permessage-deflate's streams for the sides that start every message afresh, one set per loop.
    streams: deflate::Streams,
    /// Deadlines: the connections' and the application's timers.
    timers: Timers,
    /// Who holds which topic, on this loop.
    topics: Topics,
    /// What this loop shares with other threads and loops: inboxes, the publish order, the user count.
    bus: Arc<Bus>,
    /// Which loop of the server this is (0 when it runs alone).
    loop_index: usize,
    /// Commands taken from this loop's inbox, being carried out.
    inbox: VecDeque<Action>,
    /// Publishes of this turn (and what a callback asked for after one), for the bus: with several loops they are
    /// delivered here when they come back round it, in the one order.
    outbox: Vec<Action>,
    scratch: Vec<u8>,
    actions: Vec<Action>,
    dirty: Vec<usize>,
    /// Emptied buffers of `actions` and `dirty`, kept so that each turn does not allocate them anew.
    spare_actions: Vec<Action>,
    spare_dirty: Vec<usize>,
    more_to_read: Vec<usize>,
    /// `apply_actions` is running: actions asked for meanwhile join its queue instead of starting another loop.
    is_applying: bool,
    /// Handshaked connections of this loop (the whole server's count is the bus's).
    users: usize,
    /// Publishes a relay refused from this loop's callbacks (see `Server::close_callback`).
    refused: u64,
    now: Instant,
    accept_paused_until: Option<Instant>,
    stopping_since: Option<Instant>,
    stats: Stats,
    /// What this loop's connections hold, against its share of `Config::max_memory`.
    memory: budget::Memory,
    /// This loop's figures, shared with whoever reads them (`GET /metrics`, `GET /stats`); only this loop writes.
    fig: Arc<Figures>,
    /// What inspected connections' wires carried, for `Handler::inspect` (`server/inspect.rs`).
    inspector: inspect::Inspector,
    /// Stats sockets (`GET /stats`) of this loop (`server/stats.rs`).
    #[cfg(feature = "metrics")]
    viewers: Vec<usize>,
    /// When the figures next go to the stats sockets (`None` while nobody watches).
    #[cfg(feature = "metrics")]
    stats_due: Option<Instant>,
    /// The turn histogram as last pushed, for the 99th percentile of the second since.
    #[cfg(feature = "metrics")]
    last_turns: [u64; crate::metrics::TURN_BOUNDS_NS.len() + 1],
}

impl Server {
    /// Mirrors `start_server()` in the PHP chatroom: bind, listen, then loop forever calling the user's handler.
    pub fn start_server<A: ToSocketAddrs, H: Handler>(
        addr: A,
        config: Config,
        handler: H,
    ) -> Result<(), Error> {
        Server::bind(addr, config)?.run(handler)
    }

    /// The first half of `start_server()`: create the listening socket and the poll, and register the listener.
    ///
    /// Like the PHP version (`SO_REUSEADDR`, then `socket_listen` with `maxuser` as the backlog), the listener
    /// reuses its address, so a restart does not wait for old connections in `TIME_WAIT`, and listens with
    /// [`Config::backlog`].
    pub fn bind<A: ToSocketAddrs>(addr: A, config: Config) -> Result<Server, Error> {
        let addr = resolve(addr)?;
        let (poll, listener, waker) = open(addr, config.backlog, false)?;
        let bus = Arc::new(Bus::new(vec![waker], config.remote_queue));
        Ok(Server::new(poll, listener, config, bus, 0, 1))
    }

    /// One loop of `loops` of a server: its poll and listener, and the bus it shares with the others.
    pub(crate) fn new(
        poll: Poll,
        listener: TcpListener,
        config: Config,
        bus: Arc<Bus>,
        loop_index: usize,
        loops: usize,
    ) -> Server {
        let memory = budget::Memory::new(config.max_memory / loops.max(1));
        let fig = bus.figures()[loop_index].clone();
        let limits = Limits {
            max_payload: config.max_message as u64,
            require_mask: true,
            deflate: false,
        };
        Server {
            poll,
            listener,
            conns: Slab::new(),
            config,
            limits,
            streams: deflate::Streams::default(),
            timers: Timers::new(loop_index),
            topics: Topics::default(),
            bus,
            loop_index,
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            actions: Vec::new(),
            dirty: Vec::new(),
            spare_actions: Vec::new(),
            spare_dirty: Vec::new(),
            more_to_read: Vec::new(),
            is_applying: false,
            users: 0,
            refused: 0,
            now: Instant::now(),
            accept_paused_until: None,
            stopping_since: None,
            stats: Stats::default(),
            memory,
            fig,
            inspector: inspect::Inspector::default(),
            #[cfg(feature = "metrics")]
            viewers: Vec::new(),
            #[cfg(feature = "metrics")]
            stats_due: None,
            #[cfg(feature = "metrics")]
            last_turns: Default::default(),
        }
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that reaches the loop from any thread: send, publish, broadcast, close, and stop the server.
    pub fn remote(&self) -> Remote {
        Remote::new(self.bus.clone())
    }

    /// The bus this loop shares with the others.
    pub(crate) fn bus(&self) -> Arc<Bus> {
        self.bus.clone()
    }

    /// What callbacks act through: this loop's pool, its queue of actions, its topics and timers.
    fn handle(&mut self) -> Handle<'_> {
        Handle {
            conns: &mut self.conns,
            actions: &mut self.actions,
            topics: &mut self.topics,
            timers: &mut self.timers,
            bus: &self.bus,
            refused: &mut self.refused,
            stats: self.stats,
            now: self.now,
        }
    }

    /// The second half of `start_server()`: the PHP `while(TRUE)` around `socket_select`. Returns after a stop.
    pub fn run<H: Handler>(mut self, mut handler: H) -> Result<(), Error> {
        let mut events = Events::with_capacity(1024);
        // However `run` ends (a stop, an error, a panic in a callback), the other loops stop too and every `Remote`
        // call from now on says `Stopped`.
        let _stop_all = StopOnExit(self.bus.clone());
        info!("listening on {}", self.local_addr()?);
        loop {
            // Unlike the PHP loop's sleep(1), wait exactly until something happens or the nearest deadline.
            let timeout = if self.more_to_read.is_empty() {
                self.next_timeout()
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if interrupted(&e) {
                    continue;
                }
                return Err(e.into());
            }
            self.now = Instant::now();
            for key in mem::take(&mut self.more_to_read) {
                self.on_readable(&mut handler, key, true);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.add_accept(),
                    WAKER => self.on_wake(&mut handler),
                    Token(key) => {
                        // A readable socket is, as in the PHP loop, either upgraded or decoded (or closed on EOF).
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(
                                &mut handler,
                                key,
                                event.is_read_closed() || event.is_error(),
                            );
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            self.fire_timers(&mut handler);
            self.settle(&mut handler);
            self.end_turn(&mut handler);
            if self.stopping_since.is_some() && self.conns.is_empty() {
                break;
            }
        }
        info!(
            "stopped: {} accepted, {} handshakes, {} dropped as too slow, {} closed over the memory budget, \
             {} closed at accept (max_pending), peak of {} bytes queued for one connection",
            self.stats.accepted,
            self.stats.handshakes,
            self.stats.dropped_slow,
            self.stats.over_budget,
            self.stats.shed,
            self.stats.peak_buffered
        );
        Ok(())
    }

    /// The end of a turn: what inspected connections' wires carried goes to `Handler::inspect`, the figures to the
    /// stats sockets if a second has passed, and the turn is counted.
    fn end_turn<H: Handler>(&mut self, handler: &mut H) {
        if self.inspector.is_waiting() {
            self.report_inspected(handler);
            self.settle(handler);
        }
        #[cfg(feature = "metrics")]
        if self.stats_due.is_some() {
            self.push_stats();
            // `settle`, not only the writes: a close these writes cause (the budget) may publish a "leave".
            self.settle(handler);
        }
        let fig = &self.fig;
        fig.connections.set(self.conns.len() as u64);
        fig.users.set(self.users as u64);
        fig.held.set(self.memory.held as u64);
        fig.queued.set(self.memory.out as u64);
        fig.turn(self.now.elapsed());
    }

    /// Mirrors `add_accept()` in the PHP chatroom: accept the new socket and add it to the pool, not handshaked.
    ///
    /// Unlike the PHP version, which accepted one socket per `socket_select`, this accepts until `WouldBlock`:
    /// the listener is reported once however many connections wait in the backlog.
    fn add_accept(&mut self) {
        if self.stopping_since.is_some() || self.accept_paused_until.is_some() {
            return;
        }
        let mut failures_in_a_row = 0;
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(e) if failures_in_a_row < ACCEPT_RETRIES => {
                    // The error may be the one connection's, which failed while it waited (ECONNABORTED; on Linux
                    // also EPROTO and the network errors that accept(2) lists): the next may be fine.
                    debug!("accept failed ({e}); trying the next connection");
                    failures_in_a_row += 1;
                    continue;
                }
                Err(e) => {
                    // The same failure again and again is the process's own: out of file descriptors or memory
                    // (EMFILE, ENFILE, ENOBUFS). Retrying at once would spin. Serve the connections we have and
                    // try again shortly; the waiting clients stay in the kernel's backlog meanwhile.
                    warn!("accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
                    return;
                }
            };
            failures_in_a_row = 0;
            // Stats sockets are neither users nor waiting for a handshake.
            #[cfg(feature = "metrics")]
            let viewers = self.viewers.len();
            #[cfg(not(feature = "metrics"))]
            let viewers = 0;
            if self.conns.len() - self.users - viewers >= self.config.max_pending {
                self.stats.shed += 1;
                self.fig.shed.add(1);
                debug!(
                    "{peer} closed at once: {} connections already wait to complete a handshake",
                    self.config.max_pending
                );
                continue; // dropping `stream` closes it
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("could not register a connection from {peer}: {e}");
                continue;
            }
            // Frames are written whole, often one per write: Nagle's algorithm would only delay them.
            let _ = stream.set_nodelay(true);
            let Some(id) = ConnId::new(self.bus.next_serial(), key, self.loop_index) else {
                warn!("{peer} closed at once: no connection id left on this loop");
                continue;
            };
            #[allow(unused_mut)]
            let mut conn = Connection::new(stream, id, peer, self.config.max_message, self.now);
            #[cfg(feature = "tls")]
            if let Some(tls) = &self.config.tls {
                match crate::tls::Session::new(tls) {
                    Ok(session) => conn.tls = Some(Box::new(session)),
                    Err(e) => {
                        warn!("{peer} closed at once: no TLS session ({e})");
                        continue;
                    }
                }
            }
            entry.insert(conn);
            self.stats.accepted += 1;
            self.fig.accepted.add(1);
            self.arm(key, self.now + self.config.handshake_timeout);
            debug!("{id} accepted from {peer}");
        }
    }

    /// A readable socket: read until `WouldBlock`, handing each batch of bytes to [`Server::receive`].
    ///
    /// `to_the_end` says the peer's FIN (or an error) has been reported: then reading goes on until it is seen,
    /// even after a short read.
    fn on_readable<H: Handler>(&mut self, handler: &mut H, key: usize, to_the_end: bool) {
        let mut scratch = mem::take(&mut self.scratch);
        for turn in 0..READS_PER_TURN {
            let behind = self
                .conns
                .get(key)
                .and_then(|conn| self.read_behind_size(conn));
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            if conn.is_read_eof {
                // The peer's FIN was read on an earlier wake-up: nothing more will come, and reading it again must
                // not start closing again (and push its timeout back).
                break;
            }
            let read = match behind {
                Some(max) => conn.read_behind(max).map(|(n, room)| (n, n == room)),
                None => conn.read_available(&mut scratch, to_the_end),
            };
            let (n, may_have_more) = match read {
                Ok((0, _)) => {
                    // The PHP loop's "nothing read means close()": the peer sent its FIN. A peer may half-close
                    // right after its last request (a close frame, a plain GET), so what is queued for it is still
                    // written out (within the close timeout); then the connection closes, with nothing more to
                    // wait for from the peer.
                    if !conn.has_unsent() || conn.is_write_shut {
                        self.close(handler, key, End::DROPPED);
                    } else {
                        conn.is_read_eof = true;
                        self.begin_close(handler, key, Closing::Done, End::DROPPED);
                    }
                    break;
                }
                Ok(read) => read,
                Err(e) if would_block(&e) => break,
                #[cfg(feature = "tls")]
                Err(e) if crate::tls::failure(&e).is_some() => {
                    // Not TLS, or not TLS this server can speak: rustls sent the alert that fits.
                    self.fig.tls_failed.add(1);
                    warn!("{} from {}: {e}; closed", conn.id, conn.peer);
                    self.close(handler, key, End::DROPPED);
                    break;
                }
                Err(e) => {
                    debug!("{} read failed: {e}", conn.id);
                    self.close(handler, key, End::DROPPED);
                    break;
                }
            };
            conn.last_seen = self.now;
            conn.is_awaiting_pong = false;
            self.fig.bytes_in.add(n as u64);
            // Once our last frame is queued or sent, what the peer still sends is read and dropped.
            let is_draining = conn.closing == Some(Closing::Done);
            // Bytes read behind the buffer are where `receive` would have joined them to.
            let fresh = if behind.is_some() {
                &mut [][..]
            } else {
                &mut scratch[..n]
            };
            if !is_draining && !self.receive(handler, key, fresh) {
                break;
            }
            if !may_have_more && !to_the_end {
                // A short read emptied the socket's receive queue: anything arriving later raises a new edge,
                // so the read that would only say `WouldBlock` can be skipped. Not so for a FIN that came with
                // the data: no new edge will announce it, so then the loop reads on until it sees `Ok(0)`.
                break;
            }
            if turn + 1 == READS_PER_TURN && !self.more_to_read.contains(&key) {
                // Fairness: this peer may have more waiting; come back to it after the others had their turn.
                self.more_to_read.push(key);
            }
        }
        self.scratch = scratch;
    }

    /// How much to read straight into the connection's read buffer, behind a long frame that is still arriving
    /// there ([`Connection::read_behind`]): its bytes would otherwise be read into `scratch` and copied. `None` for
    /// anything else (a short frame, a request head, a connection whose reads are dropped): those are read into
    /// `scratch`, where complete frames are decoded without a copy.
    fn read_behind_size(&self, conn: &Connection) -> Option<usize> {
        if !conn.is_handshaked || conn.closing == Some(Closing::Done) || conn.is_tls() {
            // (With TLS, what is read is the session's plaintext: there is no socket read to save.)
            return None;
        }
        conn.inbound
            .behind_size(&self.limits, READ_BEHIND_FROM, READ_CHUNK)
    }

    /// New bytes for a connection: join them to what was left over, consume what is complete, keep the rest.
    /// Returns false if the connection is gone.
    fn receive<H: Handler>(&mut self, handler: &mut H, key: usize, fresh: &mut [u8]) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let id = conn.id;
        // Out of the pool while it is decoded, so that the callbacks its messages reach can have the whole loop.
        let mut inbound = mem::take(&mut conn.inbound);
        inbound.feed(fresh, |input| self.consume(handler, key, input));
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == id) else {
            return false;
        };
        if conn.closing == Some(Closing::Done) {
            // Nothing more will be decoded; what was left over is dropped.
            inbound.reset();
        }
        conn.inbound = inbound;
        self.watch_message(key);
        // The memory budget: a message arriving may have grown (or ended). For a short message decoded from
        // `scratch`, nothing changed, and this is one compare.
        if self.count_inbound(key) {
            self.enforce_budget(handler);
        }
        true
    }

    /// Starts the message timeout when a message is left partly here (each complete message resets it).
    fn watch_message(&mut self, key: usize) {
        let (Some(limit), Some(conn)) = (self.config.message_timeout, self.conns.get_mut(key))
        else {
            return;
        };
        let is_partial = conn.is_open() && conn.inbound.is_partial();
        if !is_partial {
            conn.message_since = None;
        } else if conn.message_since.is_none() {
            conn.message_since = Some(self.now);
            let due = self.now + limit;
            if conn.deadline.is_none_or(|at| due < at) {
                self.arm(key, due);
            }
        }
    }

    /// Mirrors `decode()` in the PHP chatroom, and the `isHand` branch before it: decodes what `input` holds
    /// completely, the handshake if the connection has none yet, then frames. Returns the bytes used.
    ///
    /// Unlike the PHP version, which took each read as exactly one unfragmented frame, this loops over as many
    /// frames as arrived, keeps a partial one for the next read, and joins fragments into messages.
    fn consume<H: Handler>(&mut self, handler: &mut H, key: usize, input: &mut Input<'_>) {
        if !self.conns[key].is_handshaked {
            match self.upgrade(handler, key, input.rest()) {
                Some(head_len) if self.conns[key].is_handshaked => input.skip_head(head_len),
                Some(_) => return input.skip_all(),
                None => return,
            }
        }
        // RFC 7692 §6: with permessage-deflate, RSV1 marks a compressed message.
        let limits = Limits {
            deflate: self.conns[key].deflate.is_some(),
            ..self.limits
        };
        loop {
            let conn = &self.conns[key];
            if conn.closing == Some(Closing::Done) {
                break;
            }
            if log::log_enabled!(log::Level::Trace) {
                trace_frame(conn.id, "<", input.rest());
            }
            let is_inspected = conn.is_inspected;
            if is_inspected {
                self.inspector.arriving(key, input.rest());
            }
            // A frame still arriving is unmasked as far as it came, and fails fast on invalid text (§8.1).
            match input.next_event(&limits, || self.inflate_for(key)) {
                Ok(Status::Partial) => break,
                Ok(Status::Complete(event)) => {
                    if is_inspected {
                        self.inspector.decoded(key);
                    }
                    if let Some(event) = event {
                        self.on_event(handler, key, event);
                    }
                }
                Err(e) => {
                    if is_inspected {
                        self.inspector.decoded(key);
                    }
                    self.fail(handler, key, e);
                }
            }
        }
        // Nothing more will be decoded from a connection that is done: what had arrived of a message goes now.
        // (What had arrived of a message on a connection that is done goes in `receive`, with the rest.)
        input.release();
    }

    /// Mirrors `decode()`'s caller in the PHP loop: one decoded event, handed to the user or answered.
    fn on_event<H: Handler>(&mut self, handler: &mut H, key: usize, event: Event<'_>) {
        let conn = &mut self.conns[key];
        let id = conn.id;
        match event {
            // After our close frame, data that still arrives is dropped (§7.1.2).
            Event::Message(_) | Event::Ping(_) if conn.closing.is_some() => {}
            // A stats socket only listens: what it sends is not for the handler.
            Event::Message(_) | Event::Pong(_) if conn.is_viewer => {}
            Event::Message(msg) => {
                conn.message_since = None;
                self.fig.messages_in.add(1);
                handler.send(&mut self.handle(), id, msg);
                self.apply_actions(handler);
            }
            Event::Ping(payload) => {
                // §5.5.2: answer a ping with a pong carrying the same payload, as soon as possible. A peer that
                // pings without reading gets its pongs replaced by newer ones, not queued without bound (§5.5.3).
                let mut pong = Vec::with_capacity(2 + payload.len());
                frame::encode(&mut pong, true, OpCode::Pong, payload);
                trace_frame(id, ">", &pong);
                if conn.is_inspected && !self.inspector.is_reporting() {
                    self.inspector.sent(key, &Chunk::owned(pong.clone()));
                }
                conn.push_pong(pong);
                self.mark_dirty(key);
            }
            // Proof of life (`last_seen` is already updated), and the application's round trip if it pinged.
            Event::Pong(_) if conn.closing.is_some() => {}
            Event::Pong(payload) => {
                handler.pong(&mut self.handle(), id, payload);
                self.apply_actions(handler);
            }
            Event::Close(close) => match conn.closing {
                None => {
                    // §5.5.1: answer with a close frame echoing the status code, after everything already queued.
                    let code = close.map(|(code, _)| code);
                    debug!("{id} sent close {code:?}");
                    self.fig.closes_in[close_slot(code)].add(1);
                    self.queue_close(key, code, "");
                    let end = End {
                        by: ClosedBy::Peer,
                        code,
                        reason: close.map_or("", |(_, reason)| reason),
                    };
                    self.begin_close(handler, key, Closing::Done, end);
                }
                Some(_) => {
                    // The peer answered our close: §7.1.1, the server closes the TCP connection first.
                    self.fig.closes_in[close_slot(close.map(|(code, _)| code))].add(1);
                    conn.closing = Some(Closing::Done);
                    self.mark_dirty(key);
                }
            },
        }
    }

    /// Mirrors `upgrade()` in the PHP chatroom: answer the handshake and mark the connection handshaked.
    ///
    /// Unlike the PHP version, which trusted one 1024-byte read to hold the whole request, this waits for the blank
    /// line (`None` until then), checks every requirement of RFC 6455 §4.2.1 and refuses a bad request with a
    /// status and a one-line reason. Returns the length of the request head.
    fn upgrade<H: Handler>(&mut self, handler: &mut H, key: usize, input: &[u8]) -> Option<usize> {
        let (req, head_len) = match handshake::parse_request(input, self.config.max_head) {
            Ok(Status::Partial) => return None,
            Ok(Status::Complete(parsed)) => parsed,
            Err(e) => {
                self.refuse(key, &e);
                return Some(0);
            }
        };
        if !req.is_websocket() {
            // Plain HTTP: the user's page (the chatroom's HTML), or 426 telling the client what this server is.
            if req.method != "GET" {
                self.refuse(key, &HandshakeError::NotGet);
                return Some(0);
            }
            #[cfg(feature = "metrics")]
            if let Some(page) = self.metrics_page(&req) {
                self.finish_http(key, page.into_bytes());
                return Some(0);
            }
            match handler.http(&req) {
                Some(response) if let Err(why) = response.check() => {
                    error!(
                        "{} {} {}: the handler's response is not valid HTTP ({why}); answered 500 instead",
                        self.conns[key].id, req.method, req.target
                    );
                    self.finish_http(key, response.into_bytes());
                }
                Some(response) => {
                    debug!(
                        "{} {} {} -> {}",
                        self.conns[key].id, req.method, req.target, response.status
                    );
                    self.finish_http(key, response.into_bytes());
                }
                None => self.refuse(key, &HandshakeError::NotWebSocket),
            }
            return Some(0);
        }
        let ws_key = match handshake::validate(&req) {
            Ok(ws_key) => ws_key,
            Err(e) => {
                self.refuse(key, &e);
                return Some(0);
            }
        };
        if let Some(allowed) = &self.config.allowed_origins {
            let origin = req.header("Origin").unwrap_or_default();
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
                self.refuse(key, &HandshakeError::OriginNotAllowed);
                return Some(0);
            }
        }
        #[cfg(feature = "metrics")]
        if self.is_stats_socket(&req) {
            if let Err(e) = self.add_viewer(key, ws_key) {
                self.refuse(key, &e);
                return Some(0);
            }
            return Some(head_len);
        }
        if self.bus.users() >= self.config.max_users || self.stopping_since.is_some() {
            self.refuse(key, &HandshakeError::TooManyUsers);
            return Some(0);
        }
        let Accept {
            protocol,
            data,
            inspect,
        } = match handler.accept(&req) {
            Ok(accept) => accept,
            Err(refusal) => {
                self.refuse_as(key, &req, refusal);
                return Some(0);
            }
        };
        // §4.2.2: the server picks one of the protocols the client offered, or none.
        if let Some(protocol) = protocol
            .as_deref()
            .filter(|&chosen| !req.protocols().any(|offered| offered == chosen))
        {
            error!(
                "{} the handler chose subprotocol {protocol:?}, which the client did not offer",
                self.conns[key].id
            );
            self.refuse(key, &HandshakeError::Refused(500));
            return Some(0);
        }
        // `max_users` counts the connections of every loop; the place is taken only once all else is accepted (the
        // check above spares the application's `accept` a request that would be refused anyway; this one is exact).
        if !self.bus.try_join(self.config.max_users) {
            self.refuse(key, &HandshakeError::TooManyUsers);
            return Some(0);
        }
        // RFC 7692: the first permessage-deflate offer the settings can honour, or none (declined by silence). An
        // inspected connection is shown RFC 6455's frames as they are: no compression.
        let deflate = self
            .config
            .deflate
            .as_ref()
            .filter(|_| !inspect)
            .and_then(|settings| {
                crate::deflate::negotiate(req.headers_named("Sec-WebSocket-Extensions"), settings)
            });
        let answer = deflate.as_ref().map(|(_, answer)| answer.as_str());
        let response = handshake::switching_protocols(ws_key, protocol.as_deref(), answer);
        if inspect {
            let seen = crate::inspect::Handshake::new(&input[..head_len], ws_key, &response);
            self.inspector.start(key, seen);
            self.conns[key].is_inspected = true;
        }
        let conn = &mut self.conns[key];
        // A control chunk: nothing may jump ahead of the 101 or discard it (the queue is empty, so it is first).
        conn.push_control(response);
        let is_compressed = deflate.is_some();
        if let Some((params, answer)) = deflate {
            debug!("{} permessage-deflate: {answer}", conn.id);
            conn.deflate = Some(Box::new(Session::new(params)));
        }
        conn.data = data.map(Box::new);
        conn.is_handshaked = true;
        let (id, peer) = (conn.id, conn.peer);
        debug!("{id} handshake done: {} {}", req.method, req.target);
        self.users += 1;
        self.stats.handshakes += 1;
        self.fig.handshakes.add(1);
        self.mark_dirty(key);
        match self.config.idle_timeout {
            Some(idle) => self.arm(key, self.now + idle),
            None => self.conns[key].deadline = None,
        }
        // The PHP `add` callback, called right after the upgrade as in the original.
        let context = Context::new(&req, protocol.as_deref(), peer, is_compressed);
        handler.add(&mut self.handle(), id, &context);
        self.apply_actions(handler);
        Some(head_len)
    }

    /// Answers a handshake that failed a check, then closes.
    fn refuse(&mut self, key: usize, error: &HandshakeError) {
        let conn = &self.conns[key];
        warn!(
            "{} handshake from {} refused: {} {error}",
            conn.id,
            conn.peer,
            error.status()
        );
        self.fig.refused(error.status());
        self.finish_http(key, handshake::reject(error));
    }

    /// Answers a handshake the application refused with its response (only a client or server error status is a
    /// refusal: anything else, or a response that is not valid HTTP, is answered with 500).
    fn refuse_as(&mut self, key: usize, req: &handshake::Request<'_>, response: HttpResponse) {
        let id = self.conns[key].id;
        if let Err(why) = response.check() {
            error!(
                "{id} {}: the handler's refusal is not valid HTTP ({why}); answered 500 instead",
                req.target
            );
            return self.refuse(key, &HandshakeError::Refused(500));
        }
        if !(400..=599).contains(&response.status) {
            error!(
                "{id} {}: the handler refused with status {}, which is not an error; answered 500 instead",
                req.target, response.status
            );
            return self.refuse(key, &HandshakeError::Refused(500));
        }
        warn!(
            "{id} handshake from {} refused by the application: {} {}",
            self.conns[key].peer, response.status, req.target
        );
        self.fig.refused(response.status);
        self.finish_http(key, response.into_bytes());
    }

    /// Queues a last HTTP response; the connection closes once it is written.
    fn finish_http(&mut self, key: usize, response: Vec<u8>) {
        let conn = &mut self.conns[key];
        conn.push(Chunk::owned(response));
        conn.closing = Some(Closing::Done);
        self.arm(key, self.now + self.config.close_timeout);
        self.mark_dirty(key);
    }

    /// Fails the connection (RFC 6455 §7.1.7): close frame with the error's code, then the TCP connection goes.
    fn fail<H: Handler>(&mut self, handler: &mut H, key: usize, error: FrameError) {
        let conn = &self.conns[key];
        let code = error.close_code();
        warn!(
            "{} from {}: {error}; closing with {code}",
            conn.id, conn.peer
        );
        let reason = error.to_string();
        if conn.closing.is_none() {
            self.queue_close(key, Some(code), &reason);
        }
        let by = match error {
            FrameError::MessageTimeout(_) => ClosedBy::Timeout,
            _ => ClosedBy::Error,
        };
        let end = End {
            by,
            code: Some(code),
            reason: &reason,
        };
        self.begin_close(handler, key, Closing::Done, end);
    }

    /// Starts the closing handshake from this side: a close frame with `end`'s code and reason behind what is queued,
    /// then [`Server::begin_close`].
    pub(super) fn close_with<H: Handler>(
        &mut self,
        handler: &mut H,
        key: usize,
        closing: Closing,
        end: End<'_>,
    ) {
        self.queue_close(key, end.code, end.reason);
        self.begin_close(handler, key, closing, end);
    }

    /// The connection stops carrying messages: arm the close timeout and, if it was open, call the `close` callback.
    fn begin_close<H: Handler>(
        &mut self,
        handler: &mut H,
        key: usize,
        closing: Closing,
        end: End<'_>,
    ) {
        let conn = &mut self.conns[key];
        let was_open = conn.is_open();
        let is_viewer = conn.is_viewer;
        conn.closing = Some(closing);
        let id = conn.id;
        let data = conn.data.take().map(|data| *data);
        self.arm(key, self.now + self.config.close_timeout);
        self.mark_dirty(key);
        if is_viewer {
            #[cfg(feature = "metrics")]
            self.forget_viewer(key);
        } else if was_open {
            self.leave(key);
            self.close_callback(handler, id, end, data);
        }
    }

    /// Mirrors `close()` in the PHP chatroom: close the socket and remove it from the pool, then, if it was still
    /// open, call the user's `close` callback (a connection that closed cleanly had it called when closing began).
    fn close<H: Handler>(&mut self, handler: &mut H, key: usize, end: End<'_>) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        conn.say_goodbye();
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.uncount(conn.held_in, conn.counted_out());
        debug!("{} closed ({} bytes left unsent)", conn.id, conn.buffered());
        if conn.is_inspected {
            self.inspector.forget(key);
        }
        if conn.is_viewer {
            #[cfg(feature = "metrics")]
            self.forget_viewer(key);
        } else if conn.is_open() {
            self.leave(key);
            self.close_callback(handler, conn.id, end, conn.data.take().map(|data| *data));
        }
    }

    /// The PHP `close` callback. Where nodes are joined through Redis, the user's presence is removed after it, and
    /// only if what it published (a "leave", say) was taken: otherwise the presence stays, so that the user's
    /// departure is still announced, by another node, when this one goes.
    fn close_callback<H: Handler>(
        &mut self,
        handler: &mut H,
        id: ConnId,
        end: End<'_>,
        data: Option<AnyData>,
    ) {
        let refused = self.refused;
        let closed = Closed::new(end.code, end.reason, end.by, data);
        handler.close(&mut self.handle(), id, closed);
        self.apply_actions(handler);
        if let (Some(relay), true) = (self.bus.relay(), self.refused == refused) {
            relay.presence(id.get(), None);
        }
    }

    /// An open connection stops carrying messages: it no longer counts as a user, and its subscriptions end
    /// (before its `close` callback runs, so a publish from there does not reach it).
    fn leave(&mut self, key: usize) {
        self.users -= 1;
        self.bus.leave();
        match self.bus.relay() {
            None => self.topics.leave(key, |_| {}),
            Some(relay) => self.topics.leave(key, |emptied| relay.release(emptied)),
        };
    }

    /// A stop was asked for: no more accepts or handshakes, close 1001 to every open connection, and drop those
    /// still in their handshake; `run` returns once all are gone (or the close timeout has passed).
    fn begin_stop<H: Handler>(&mut self, handler: &mut H) {
        if self.stopping_since.is_some() {
            return;
        }
        info!(
            "stopping: closing {} connections with 1001",
            self.conns.len()
        );
        self.stopping_since = Some(self.now);
        let _ = self.poll.registry().deregister(&mut self.listener);
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.is_open() {
                self.close_with(handler, key, Closing::Sent, End::SHUTDOWN);
            } else if !conn.is_handshaked {
                self.close(handler, key, End::SHUTDOWN);
            }
        }
    }
}

/// Stops every loop of the server when one `run` ends, however it ends.
pub(crate) struct StopOnExit(pub(crate) Arc<Bus>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The first address `addr` resolves to.
pub(crate) fn resolve<A: ToSocketAddrs>(addr: A) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind to"))
}

/// The poll of one loop, its listener registered, and the waker through which other threads reach it.
pub(crate) fn open(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
) -> io::Result<(Poll, TcpListener, Waker)> {
    let poll = Poll::new()?;
    let mut listener = listen(addr, backlog, reuse_port)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    Ok((poll, listener, waker))
}

/// `socket_create` + `SO_REUSEADDR` + `socket_bind` + `socket_listen` of the PHP `start_server()`.
///
/// Neither std nor mio lets the backlog be chosen (both use 128, which a burst of connections overflows: the kernel
/// then drops SYNs and clients wait a second or more to retry), so the socket is built with `socket2`.
fn listen(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    // Several loops: each has a listener of its own on the same port, and the kernel spreads connections over them.
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    if reuse_port {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "several loops need SO_REUSEPORT",
        ));
    }
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}
