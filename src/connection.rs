//! One client: its socket, its `is_handshaked` flag, its buffers and its deadline.
//!
//! In the PHP tutorial a client was an entry of `$this->accept` plus a flag in `$this->isHand`. Here it is a
//! [`Connection`] in the server's slab, keyed by its mio token. This module holds data and buffer I/O only:
//! reading what the socket has, writing what is queued. What the bytes mean is decided in `server.rs`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;

use crate::deflate::Session;
use crate::error::{interrupted, would_block};
use crate::frame::Head;
use crate::inbound::{Inbound, Recv};

/// At most this many pongs wait to be written; the pong for one more ping replaces the newest of them (§5.5.3: an
/// endpoint may answer only the most recent of the pings it has not answered yet). A peer that reads as fast as it
/// pings gets a pong for every ping; one that pings without reading costs at most this many.
pub(crate) const MAX_QUEUED_PONGS: usize = 16;

/// Frames at least this long are encoded into a spare buffer ([`spare_buffer`]); shorter ones come from the
/// allocator's per-thread cache, which is as cheap.
const SPARE_MIN: usize = 2048;
/// The largest buffer kept for reuse, and how many are kept: at most 512 KiB per loop.
const SPARE_MAX: usize = 64 << 10;
const SPARE_COUNT: usize = 8;
/// How many emptied queues are kept for reuse, and the most chunks one of them may have room for. A turn of the
/// loop handles at most 1024 events, so as many queues cover every connection it writes to without allocating
/// one; with 40-byte chunks they take at most about 720 KiB per loop (240 KiB as they usually are, with room for
/// 4). A queue that grew larger (a broadcast-heavy turn) is freed instead, as before there were spare queues.
const SPARE_QUEUES: usize = 1024;
const SPARE_QUEUE_ROOM: usize = 16;

/// What the loop keeps for reuse.
struct Spare {
    /// Written-out frame buffers. Without them every echo of a 16 KiB message allocates a buffer and frees it once
    /// written, and the allocator may give the memory back to the kernel and ask for it again (`brk` and page
    /// faults) as its heap top moves around its trim threshold.
    buffers: Vec<Vec<u8>>,
    /// Emptied queues: a connection holds one only while something waits to be written to it. Boxed here too, so
    /// that a queue moves between a connection and this list without being allocated again.
    #[allow(clippy::vec_box)]
    queues: Vec<Box<Outbox>>,
}

thread_local! {
    /// The loop and its callbacks run on one thread, so this is the loop's; nothing here is shared between threads.
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            buffers: Vec::new(),
            queues: Vec::new(),
        })
    };
}

/// An empty buffer for a frame of about `len` bytes: a spare one if `len` is worth it and one is kept.
pub(crate) fn spare_buffer(len: usize) -> Vec<u8> {
    if len >= SPARE_MIN {
        let spare = SPARE
            .try_with(|spare| spare.borrow_mut().buffers.pop())
            .ok()
            .flatten();
        if let Some(buf) = spare {
            return buf;
        }
    }
    Vec::with_capacity(len)
}

/// Keeps a written-out buffer for [`spare_buffer`], if it is of a useful size and fewer than `SPARE_COUNT` are kept;
/// otherwise frees it.
fn recycle(mut buf: Vec<u8>) {
    if (SPARE_MIN..=SPARE_MAX).contains(&buf.capacity()) {
        buf.clear();
        let _ = SPARE.try_with(|spare| {
            let buffers = &mut spare.borrow_mut().buffers;
            if buffers.len() < SPARE_COUNT {
                buffers.push(buf);
            }
        });
    }
}

/// An empty queue: a spare one if one is kept.
fn spare_outbox() -> Box<Outbox> {
    SPARE
        .try_with(|spare| spare.borrow_mut().queues.pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps an emptied queue for [`spare_outbox`], unless it grew large or `SPARE_QUEUES` are kept; otherwise frees it.
fn recycle_outbox(mut out: Box<Outbox>) {
    if out.chunks.capacity() > SPARE_QUEUE_ROOM {
        return;
    }
    out.chunks.clear();
    out.pos = 0;
    out.buffered = 0;
    out.data_queued = 0;
    out.counted = 0;
    let _ = SPARE.try_with(|spare| {
        let queues = &mut spare.borrow_mut().queues;
        if queues.len() < SPARE_QUEUES {
            queues.push(out);
        }
    });
}

/// Identifies one connection for the life of the server: ids are never reused, so a stale id cannot reach a
/// newer client that happens to get the same slab slot. With several loops an id also names the loop that owns the
/// connection, and ids are unique across all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    serial: u64,
    key: u32,
    loop_index: u32,
}

impl ConnId {
    /// `None` if `key` or `loop_index` is past what an id holds (4 billion connections on one loop).
    pub(crate) fn new(serial: u64, key: usize, loop_index: usize) -> Option<ConnId> {
        Some(ConnId {
            serial,
            key: u32::try_from(key).ok()?,
            loop_index: u32::try_from(loop_index).ok()?,
        })
    }

    /// The id as a number: 1 for the first connection the server accepted, 2 for the next, and so on (across
    /// all loops of the server).
    pub fn get(self) -> u64 {
        self.serial
    }

    /// The slab key (and mio token) of the connection in its loop.
    pub(crate) fn key(self) -> usize {
        self.key as usize
    }

    /// Which loop owns the connection: 0 for the first (and, with one loop, the only) one.
    pub fn loop_index(self) -> usize {
        self.loop_index as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.serial)
    }
}

/// Where a connection stands in the closing handshake (RFC 6455 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// We sent a close frame and wait for the peer's (§7.1.2); data frames that still arrive are dropped.
    Sent,
    /// Nothing more will be sent after what is queued: once it is written the server shuts down its side of the
    /// TCP connection first (§7.1.1) and reads until the peer's FIN, so the peer sees our last frame, not a reset.
    Done,
}

/// The bytes of a queued chunk: this connection's alone, or shared (reference-counted) by every receiver of a
/// broadcast.
pub(crate) enum Bytes {
    Owned(Vec<u8>),
    Shared(Arc<Vec<u8>>),
}

impl Bytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Shared(v) => v,
        }
    }
}

/// What a queued chunk is, for where it goes in the queue and whether it may be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A data frame, a close frame or an HTTP response: in order, behind everything queued before it.
    Data,
    /// A ping or the `101` that opens the connection: never dropped, not counted against `max_buffered`, and may go
    /// ahead of queued data frames, though never ahead of another control chunk.
    Control,
    /// A control chunk that answers a ping, and may be replaced by the answer to a later one.
    Pong,
}

/// One frame (or HTTP response) waiting to be written.
///
/// Usually `body` is the whole frame, encoded in one buffer. A large payload the application handed over is not
/// copied behind a header: it is queued as it is, with its frame header in `head`, and both go out in one `writev`.
pub(crate) struct Chunk {
    head: Head,
    body: Bytes,
    kind: Kind,
}

impl Chunk {
    /// A data frame, or a header and the payload it goes before.
    pub fn data(head: Head, body: Bytes) -> Chunk {
        Chunk {
            head,
            body,
            kind: Kind::Data,
        }
    }

    /// A frame or response already encoded in one buffer.
    pub fn owned(frame: Vec<u8>) -> Chunk {
        Chunk::data(Head::NONE, Bytes::Owned(frame))
    }

    fn control(kind: Kind, frame: Vec<u8>) -> Chunk {
        Chunk {
            kind,
            ..Chunk::owned(frame)
        }
    }

    fn is_control(&self) -> bool {
        self.kind != Kind::Data
    }

    pub fn len(&self) -> usize {
        self.head.as_bytes().len() + self.body.as_slice().len()
    }

    /// What is left to write from `pos` on: the rest of the header, then the rest of the body.
    pub fn parts(&self, pos: usize) -> [&[u8]; 2] {
        let (head, body) = (self.head.as_bytes(), self.body.as_slice());
        if pos < head.len() {
            [&head[pos..], body]
        } else {
            [&[], &body[pos - head.len()..]]
        }
    }
}

/// Linux's `IOV_MAX`: the most buffers one `writev` takes.
const MAX_SLICES: usize = 1024;
/// Up to this many buffers, the list for `writev` lives on the stack: 16 chunks, even if every one is a header and
/// a payload kept apart (a broadcast round among a few clients queues about one chunk per client).
const STACK_SLICES: usize = 32;

/// Points `slices` at what is queued, the first chunk from `pos` on, skipping empty parts. Returns how many it set.
fn gather<'a>(out: &'a VecDeque<Chunk>, pos: usize, slices: &mut [IoSlice<'a>]) -> usize {
    let parts = out
        .iter()
        .enumerate()
        .flat_map(|(i, chunk)| chunk.parts(if i == 0 { pos } else { 0 }));
    let mut count = 0;
    for (slot, part) in slices.iter_mut().zip(parts.filter(|p| !p.is_empty())) {
        *slot = IoSlice::new(part);
        count += 1;
    }
    count
}

/// What waits to be written to one peer: the chunks, in order, and what they add up to.
///
/// A connection holds one only while something is queued: an idle connection's queue costs it one word. One that is
/// written out goes back to the loop's spare ones ([`spare_outbox`]) and the next frame for any connection takes it
/// from there, so a connection that is sent messages all the time does not allocate its queue for each.
#[derive(Default)]
struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    pos: usize,
    /// Bytes queued and not yet written.
    buffered: usize,
    /// Full length of every queued data (not `Control`) chunk, the front one included.
    data_queued: usize,
    /// What the loop's memory budget last counted of this queue (`buffered` after the last write attempt). Kept
    /// here, not in the connection: a queue only exists while something is queued, and before then nothing is counted.
    counted: usize,
}

/// The application's data of one connection, of its own type.
pub(crate) type AnyData = Box<dyn std::any::Any + Send>;

/// One client connection, as the PHP version kept it in `$this->accept` and `$this->isHand`.
///
/// A server holds one per client, idle or not, so rarely used state is kept out of line: the queue of what is to be
/// written ([`Outbox`]) and the state of a fragmented message (in [`crate::message::Assembler`]) exist only while they are in use.
pub(crate) struct Connection {
    /// The socket, registered with the poll under this connection's slab key.
    pub stream: TcpStream,
    /// The id handed to callbacks.
    pub id: ConnId,
    /// The peer's address, for logs.
    pub peer: SocketAddr,
    /// The PHP `isHand` flag: false until `upgrade` has answered 101.
    pub is_handshaked: bool,
    /// Set once the connection stops carrying messages.
    pub closing: Option<Closing>,
    /// Our side of the TCP connection is shut down; we only read until the peer's FIN.
    pub is_write_shut: bool,
    /// The peer's FIN has been read: once the queue is written, nothing is left to wait for.
    pub is_read_eof: bool,
    /// What has arrived of a request head, a frame or a message, and not all of it yet.
    pub inbound: Inbound,
    /// What the loop's memory budget last counted of the message arriving ([`Inbound::held`]), as it stood after
    /// the last `receive` (or when the message was dropped).
    pub held_in: usize,
    /// When the timer of this connection fires (handshake, idle or close timeout), if one is armed.
    pub deadline: Option<Instant>,
    /// When the peer last sent anything.
    pub last_seen: Instant,
    /// When the first byte of a message that has not fully arrived came in (`Config::message_timeout`).
    pub message_since: Option<Instant>,
    /// A ping went out for idleness and no frame has come back since.
    pub is_awaiting_pong: bool,
    /// Queued in the server's list of connections to flush.
    pub is_dirty: bool,
    /// Watches the stats page's figures (`GET /stats`): served by the loop itself, never seen by the handler.
    pub is_viewer: bool,
    /// Accepted with [`crate::Accept::inspect`]: what crosses its wire is recorded (in the loop's `inspected`).
    pub is_inspected: bool,
    /// What waits to be written; `None` when nothing does.
    out: Option<Box<Outbox>>,
    /// permessage-deflate, if the handshake agreed to it.
    pub deflate: Option<Box<Session>>,
    /// The application's data for this connection ([`crate::Accept::data`]), if it gave any: boxed twice, so that a
    /// connection without data pays one thin pointer for it, not a fat one.
    pub data: Option<Box<AnyData>>,
    /// With TLS, the session every byte goes through (`wss://`); `None` for a plain connection.
    #[cfg(feature = "tls")]
    pub tls: Option<Box<crate::tls::Session>>,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        id: ConnId,
        peer: SocketAddr,
        max_message: usize,
        now: Instant,
    ) -> Connection {
        Connection {
            stream,
            id,
            peer,
            is_handshaked: false,
            closing: None,
            is_write_shut: false,
            is_read_eof: false,
            inbound: Inbound::new(max_message),
            held_in: 0,
            deadline: None,
            last_seen: now,
            message_since: None,
            is_awaiting_pong: false,
            is_dirty: false,
            is_viewer: false,
            is_inspected: false,
            out: None,
            deflate: None,
            data: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Bytes still to go out: queued, or (with TLS) records waiting in the session.
    pub fn has_unsent(&self) -> bool {
        #[cfg(feature = "tls")]
        if self.tls.as_ref().is_some_and(|t| t.wants_write()) {
            return true;
        }
        self.buffered() > 0
    }

    /// Whether the connection's bytes go through TLS.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Open for messages: handshaked and not closing.
    pub fn is_open(&self) -> bool {
        self.is_handshaked && self.closing.is_none()
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.buffered)
    }

    /// What the loop's memory budget last counted of the queue: what was still queued after the last write attempt
    /// (0 while nothing is queued).
    pub fn counted_out(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.counted)
    }

    /// Records what the memory budget now counts of the queue: `buffered()`, just after a write attempt (or after
    /// unsent data was discarded). With nothing queued there is nothing to record: the queue, and its count, are gone.
    pub fn set_counted_out(&mut self, counted: usize) {
        match self.out.as_deref_mut() {
            Some(out) => out.counted = counted,
            None => debug_assert_eq!(counted, 0, "counted bytes of a queue that does not exist"),
        }
    }

    /// Reads once into `buf`. Unlike the PHP version's single 1024-byte `socket_recv`, the server calls this until
    /// it reports `WouldBlock`: mio reports readiness once per change, so bytes left unread would never be reported
    /// again. Returns the bytes read and whether the socket may hold more (a read that filled `buf`). `Ok((0, _))`
    /// is the peer's FIN (with TLS, its `close_notify`, or a FIN without one).
    ///
    /// With TLS the bytes are the plaintext the session decrypted, and what the session wants to write in answer
    /// (its part of the TLS handshake, an alert) is written at once, as far as the socket takes it. `to_the_end`
    /// says the peer's FIN was reported: a plain read's caller reads on to it; a TLS session must, itself.
    pub fn read_available(
        &mut self,
        buf: &mut [u8],
        to_the_end: bool,
    ) -> io::Result<(usize, bool)> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            let read = tls.read(&self.stream, buf, to_the_end);
            let flush_too = match &read {
                Ok(_) => true,
                Err(e) => crate::error::would_block(e),
            };
            if flush_too {
                tls.flush(&self.stream)?;
            }
            return read;
        }
        // Plain: whether a short read ends the batch is the caller's to judge, knowing `to_the_end`.
        let _ = to_the_end;
        loop {
            match self.stream.read(buf) {
                Err(e) if interrupted(&e) => continue,
                other => return other.map(|n| (n, n == buf.len())),
            }
        }
    }

    /// Shuts down our side of the connection once everything queued is written (§7.1.1: the server closes first).
    /// With TLS, `close_notify` goes first; `Ok(false)` if the socket cannot take it yet (the next `WRITABLE`
    /// finishes it).
    pub fn shut_write(&mut self) -> io::Result<bool> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            if !tls.close_notify(&self.stream)? {
                return Ok(false);
            }
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Ok(true)
    }

    /// A connection about to be dropped without the orderly end of [`Connection::shut_write`] (an error, a
    /// timeout, the peer gone): with TLS, `close_notify` goes out if the socket takes it at once.
    pub fn say_goodbye(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            if !self.is_write_shut {
                let _ = tls.close_notify(&self.stream);
            }
        }
    }

    /// Reads once, at most `max` bytes, straight into the room behind the long frame the inbound side holds
    /// ([`Inbound::read_behind`]): its bytes would otherwise be read into the loop's shared buffer and copied there.
    /// Returns the bytes read and the room offered.
    pub fn read_behind(&mut self, max: usize) -> io::Result<(usize, usize)> {
        self.inbound.read_behind(Socket(&self.stream), max)
    }

    /// The queue, taken from the loop's spare ones if this connection has none.
    fn outbox(&mut self) -> &mut Outbox {
        self.out.get_or_insert_with(spare_outbox)
    }

    /// Queues a data frame (or an HTTP response) behind everything already queued.
    pub fn push(&mut self, chunk: Chunk) {
        let out = self.outbox();
        let len = chunk.len();
        out.buffered += len;
        if !chunk.is_control() {
            out.data_queued += len;
        }
        out.chunks.push_back(chunk);
    }

    /// Data bytes waiting behind the message being written, plus what their queue entries cost: what the
    /// slow-reader limit is about. That message (the first data chunk, even with pongs queued ahead of it) is left
    /// out, so that one message larger than the limit can still go out to a reader that keeps up.
    pub fn backlog(&self) -> usize {
        let Some(out) = self.out.as_deref() else {
            return 0;
        };
        // Only the few control chunks can stand ahead of it, so a short look from the front finds it.
        let going_out = out
            .chunks
            .iter()
            .take(out.controls_end() + 1)
            .find(|chunk| !chunk.is_control())
            .map_or(0, Chunk::len);
        // Each queued frame also costs its queue entry: counting it keeps a flood of empty frames bounded too.
        out.data_queued - going_out + out.chunks.len() * std::mem::size_of::<Chunk>()
    }

    /// Queues a control frame (a ping, the `101`) ahead of queued data frames, but behind other control frames and
    /// behind a frame that is half written.
    pub fn push_control(&mut self, frame: Vec<u8>) {
        let out = self.outbox();
        let at = out.controls_end();
        out.buffered += frame.len();
        out.chunks.insert(at, Chunk::control(Kind::Control, frame));
    }

    /// Queues a pong as [`Connection::push_control`] queues a control frame, so it is never stuck behind megabytes
    /// of data for a slow reader; if [`MAX_QUEUED_PONGS`] are already waiting, it takes the place of the newest.
    pub fn push_pong(&mut self, pong: Vec<u8>) {
        let out = self.outbox();
        let (first, end) = (usize::from(out.pos > 0), out.controls_end());
        let waiting = out
            .chunks
            .range(first..end)
            .filter(|chunk| chunk.kind == Kind::Pong)
            .count();
        if waiting < MAX_QUEUED_PONGS {
            out.buffered += pong.len();
            out.chunks.insert(end, Chunk::control(Kind::Pong, pong));
            return;
        }
        let newest = out
            .chunks
            .range_mut(first..end)
            .rev()
            .find(|chunk| chunk.kind == Kind::Pong)
            .expect("MAX_QUEUED_PONGS pongs are waiting");
        out.buffered = out.buffered - newest.len() + pong.len();
        *newest = Chunk::control(Kind::Pong, pong);
    }

    /// Drops every queued data frame that has not started to go out; returns the bytes dropped.
    /// `Control` chunks (pongs, the `101`) and a half-written front chunk stay.
    pub fn discard_unsent(&mut self) -> usize {
        let Some(out) = self.out.as_deref_mut() else {
            return 0;
        };
        let before = out.buffered;
        let mut index = 0;
        let started = out.pos > 0;
        out.chunks.retain(|chunk| {
            let keep = (index == 0 && started) || chunk.is_control();
            index += 1;
            keep
        });
        out.data_queued = out
            .chunks
            .iter()
            .filter(|c| !c.is_control())
            .map(Chunk::len)
            .sum();
        let queued: usize = out.chunks.iter().map(Chunk::len).sum();
        out.buffered = queued - out.pos;
        before - out.buffered
    }

    /// Writes queued bytes until the queue is empty (`Ok(true)`) or the socket would block (`Ok(false)`).
    ///
    /// Several frames go out in one vectored write. Unlike the PHP version's `socket_write`, a write may be partial:
    /// what is left stays queued, and the server calls this again on the next `WRITABLE` event. Once everything is
    /// written, the queue goes back to the loop's spare ones.
    pub fn write_pending(&mut self) -> io::Result<bool> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            // The queue goes through the session, which encrypts a record's worth at a time; once the queue is
            // empty, what the session still holds must reach the socket too.
            return match write_queue(&mut self.out, |slices| {
                tls.write_vectored(&self.stream, slices)
            })? {
                true => tls.flush(&self.stream),
                false => Ok(false),
            };
        }
        let stream = &mut self.stream;
        write_queue(&mut self.out, |slices| match slices {
            // One buffer (an echo, a chat line): `send` costs the kernel less than `writev`.
            [one] => stream.write(one),
            _ => stream.write_vectored(slices),
        })
    }
}

/// Writes `out` through `send` until it is empty (`Ok(true)`, and the queue goes back to the loop's spare ones) or
/// `send` says `WouldBlock` (`Ok(false)`).
fn write_queue(
    queue: &mut Option<Box<Outbox>>,
    mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<bool> {
    {
        let Some(out) = queue.as_deref_mut() else {
            return Ok(true);
        };
        while !out.chunks.is_empty() {
            // Each chunk is one buffer, or two for a header and a payload kept apart.
            let wanted = (2 * out.chunks.len()).min(MAX_SLICES);
            let result = if let (1, Some(chunk)) = (out.chunks.len(), out.chunks.front()) {
                match chunk.parts(out.pos) {
                    [[], body] => send(&[IoSlice::new(body)]),
                    [head, body] => send(&[IoSlice::new(head), IoSlice::new(body)]),
                }
            } else if wanted <= STACK_SLICES {
                let mut slices = [IoSlice::new(&[]); STACK_SLICES];
                let count = gather(&out.chunks, out.pos, &mut slices);
                send(&slices[..count])
            } else {
                // A broadcast-heavy turn queues many small frames: one writev takes them all, not 32 at a time.
                let mut slices = vec![IoSlice::new(&[]); wanted];
                let count = gather(&out.chunks, out.pos, &mut slices);
                send(&slices[..count])
            };
            let written = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if interrupted(&e) => continue,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            };
            out.advance(written);
        }
    }
    if let Some(out) = queue.take() {
        recycle_outbox(out);
    }
    Ok(true)
}

impl Outbox {
    /// Where the control chunks at the front of the queue end: a chunk that is half written stays first, then come
    /// the control chunks, then the data. Control chunks are few (at most `MAX_QUEUED_PONGS` pongs, a ping, the
    /// `101`), so the walk is short.
    fn controls_end(&self) -> usize {
        let mut at = usize::from(self.pos > 0);
        while self.chunks.get(at).is_some_and(Chunk::is_control) {
            at += 1;
        }
        at.min(self.chunks.len())
    }

    fn advance(&mut self, mut written: usize) {
        self.buffered -= written;
        while let Some(front) = self.chunks.front() {
            let left = front.len() - self.pos;
            if written < left {
                self.pos += written;
                return;
            }
            written -= left;
            self.pos = 0;
            if let Some(done) = self.chunks.pop_front() {
                if !done.is_control() {
                    self.data_queued -= done.len();
                }
                if let Bytes::Owned(buf) = done.body {
                    recycle(buf);
                }
            }
        }
    }
}

/// A connection's socket as a source for [`Inbound::read_behind`].
struct Socket<'a>(&'a TcpStream);

// SAFETY: `recv(2)` writes at most `buf.len()` bytes at the front of `buf` and returns how many (socket2 documents
// the count as bytes initialized there).
unsafe impl Recv for Socket<'_> {
    fn recv(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let stream = self.0;
        // Through `try_io`, as mio asks of I/O it does not do itself (on some platforms a `WouldBlock` must re-arm
        // the readiness it reports).
        loop {
            match stream.try_io(|| socket2::SockRef::from(stream).recv(&mut *buf)) {
                Err(e) if interrupted(&e) => continue,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_holds_no_queue_and_a_busy_one_reuses_one_without_allocating() {
        let (mut conn, _peer) = connection();
        assert!(conn.out.is_none());
        conn.push_control(b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec());
        assert!(conn.write_pending().expect("write"));
        assert!(conn.out.is_none(), "written out, the queue is given back");
        assert_eq!(
            (conn.buffered(), conn.backlog(), conn.discard_unsent()),
            (0, 0, 0)
        );
        // Every message takes the queue the one before it gave back: the same allocation.
        conn.push(Chunk::owned(vec![0x81, 0x01, b'a']));
        let first = std::ptr::from_ref(queue(&conn));
        for _ in 0..100 {
            assert!(conn.write_pending().expect("write"));
            conn.push(Chunk::owned(vec![0x81, 0x01, b'a']));
            assert!(std::ptr::eq(queue(&conn), first));
        }
    }

    /// Guards the idle memory budget: a server holds one `Connection` per client in its slab, busy or idle, so every
    /// byte here is about 10 KB per 10,000 idle connections. Rarely used state belongs out of line (as the queue
    /// and the fragment state are). The figure is 200 bytes where mio's `TcpStream` is a bare 4-byte descriptor
    /// (release builds), 208 with the 16-byte one of debug builds, which adds a selector id; 8 of them are the
    /// pointer to the permessage-deflate session, whatever the session holds, 8 the application's data's, and 8 the
    /// count the loop's memory budget keeps of a message arriving (`held_in`: it must be known without looking at
    /// the buffers it counts, which change before it is updated; the count of the outbound queue lives in the queue).
    /// The `tls` feature adds 8: the pointer to the TLS session, which a plain connection leaves empty.
    #[test]
    fn a_connection_stays_within_the_idle_memory_budget() {
        let plain = if std::mem::size_of::<TcpStream>() > 4 {
            208
        } else {
            200
        };
        let budget = plain + if cfg!(feature = "tls") { 8 } else { 0 };
        let size = std::mem::size_of::<Connection>();
        assert!(size <= budget, "Connection is {size} bytes, over {budget}");
    }

    /// The connection's queue, which a test has given something to write.
    fn queue(conn: &Connection) -> &Outbox {
        conn.out.as_deref().expect("something is queued")
    }

    /// A connection over a real loopback socket (nothing is written unless a test calls `write_pending`).
    fn connection() -> (Connection, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, addr) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("non-blocking");
        let conn = Connection::new(
            TcpStream::from_std(accepted),
            ConnId::new(1, 0, 0).unwrap(),
            addr,
            1 << 20,
            Instant::now(),
        );
        (conn, peer)
    }

    #[test]
    fn a_written_out_frame_buffer_is_reused_and_the_spare_ones_stay_few() {
        let (mut conn, mut peer) = connection();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let mut frame = spare_buffer(16 << 10);
        frame.resize(16 << 10, 0x5a);
        let at = frame.as_ptr();
        conn.push(Chunk::owned(frame));
        assert!(conn
            .write_pending()
            .expect("a loopback socket takes 16 KiB"));
        let next = spare_buffer(16 << 10);
        assert_eq!(next.as_ptr(), at, "the next frame reuses it");
        drop(next);
        // However many are written out at once, only `SPARE_COUNT` are kept, and none too large or too small.
        for len in [100, 1 << 20]
            .into_iter()
            .chain([16 << 10; 2 * SPARE_COUNT])
        {
            conn.push(Chunk::owned(vec![0; len]));
        }
        let mut buf = vec![0; 1 << 16];
        while !conn.write_pending().expect("write") {
            let n = peer.read(&mut buf).expect("read");
            assert!(n > 0, "the socket closed early");
        }
        let kept = SPARE.with(|spare| {
            let spare = spare.borrow();
            let spare = &spare.buffers;
            assert!(spare
                .iter()
                .all(|b| (SPARE_MIN..=SPARE_MAX).contains(&b.capacity())));
            spare.len()
        });
        assert_eq!(kept, SPARE_COUNT);
    }

    #[test]
    fn the_message_going_out_is_not_backlog_even_behind_a_pong() {
        let (mut conn, _peer) = connection();
        let entry = std::mem::size_of::<Chunk>();
        conn.push(Chunk::owned(vec![0; 5 << 20]));
        assert_eq!(conn.backlog(), entry);
        conn.push_pong(vec![0x8a, 0x00]);
        assert!(
            queue(&conn).chunks.front().is_some_and(Chunk::is_control),
            "the pong goes first"
        );
        assert_eq!(
            conn.backlog(),
            2 * entry,
            "the large message is still the one going out"
        );
        conn.push(Chunk::owned(vec![0; 10]));
        assert_eq!(conn.backlog(), 10 + 3 * entry);
        assert_eq!(conn.buffered(), (5 << 20) + 12);
        // Still so behind as many pongs as may wait, and a ping of the server's own.
        for _ in 1..MAX_QUEUED_PONGS {
            conn.push_pong(vec![0x8a, 0x00]);
        }
        conn.push_control(vec![0x89, 0x00]);
        assert_eq!(conn.backlog(), 10 + (MAX_QUEUED_PONGS + 3) * entry);
    }

    #[test]
    fn discarding_keeps_control_frames_and_the_accounting_straight() {
        let (mut conn, _peer) = connection();
        conn.push_control(b"HTTP/1.1 101".to_vec());
        conn.push(Chunk::owned(vec![1; 100]));
        conn.push(Chunk::data(
            Head::NONE,
            Bytes::Shared(Arc::new(vec![2; 50])),
        ));
        conn.push_pong(vec![0x8a, 0x00]);
        assert_eq!(conn.discard_unsent(), 150);
        let entry = std::mem::size_of::<Chunk>();
        assert_eq!((conn.buffered(), conn.backlog()), (14, 2 * entry));
        assert!(conn
            .write_pending()
            .expect("a loopback socket takes 14 bytes"));
        assert_eq!(conn.buffered(), 0);
    }

    #[test]
    fn a_flood_of_empty_frames_counts_against_the_limit() {
        let (mut conn, _peer) = connection();
        for _ in 0..10_000 {
            conn.push(Chunk::data(
                Head::NONE,
                Bytes::Shared(Arc::new(vec![0x82, 0x00])),
            ));
        }
        // 20,000 bytes of frames, but 10,000 queue entries: the limit sees what the queue really costs.
        assert!(conn.backlog() >= 10_000 * std::mem::size_of::<Chunk>());
    }

    #[test]
    fn a_header_and_a_payload_kept_apart_arrive_as_one_frame_in_order() {
        use crate::frame::OpCode;
        use std::io::Read;
        let (mut conn, mut peer) = connection();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        // Larger than the socket buffers, so the writes are partial and resume inside the header-payload pair.
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let shared = Arc::new(vec![0xab; 70_000]);
        conn.push(Chunk::owned(vec![0x81, 0x02, b'h', b'i']));
        conn.push(Chunk::data(
            Head::new(true, OpCode::Binary, payload.len()),
            Bytes::Owned(payload.clone()),
        ));
        conn.push(Chunk::data(
            Head::new(true, OpCode::Binary, shared.len()),
            Bytes::Shared(shared.clone()),
        ));
        conn.push_pong(vec![0x8a, 0x00]);
        let total = conn.buffered();
        assert_eq!(total, 4 + 10 + payload.len() + 10 + shared.len() + 2);
        let mut received = Vec::with_capacity(total);
        let mut buf = vec![0; 1 << 16];
        for _ in 0..100_000 {
            if conn.buffered() > 0 {
                conn.write_pending().expect("write");
            }
            if received.len() == total {
                break;
            }
            let n = peer.read(&mut buf).expect("read");
            assert!(n > 0, "the socket closed early");
            received.extend_from_slice(&buf[..n]);
        }
        assert_eq!(conn.buffered(), 0);
        // Nothing had started to go out when the pong was queued, so it goes first.
        let mut expected = vec![0x8a, 0x00, 0x81, 0x02, b'h', b'i'];
        expected.extend_from_slice(Head::new(true, OpCode::Binary, payload.len()).as_bytes());
        expected.extend_from_slice(&payload);
        expected.extend_from_slice(Head::new(true, OpCode::Binary, shared.len()).as_bytes());
        expected.extend_from_slice(&shared);
        assert!(
            received == expected,
            "the bytes differ from the frames queued"
        );
    }

    #[test]
    fn pongs_for_a_peer_that_does_not_read_are_capped_and_the_newest_ping_is_answered() {
        use crate::frame::{self, OpCode};
        use std::io::Read;
        let (mut conn, mut peer) = connection();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        // A message larger than the socket buffers starts going out; the peer reads nothing yet.
        let payload = vec![0x5a; 8 << 20];
        conn.push(Chunk::data(
            Head::new(true, OpCode::Binary, payload.len()),
            Bytes::Owned(payload.clone()),
        ));
        assert!(!conn.write_pending().expect("write"), "the socket is full");
        let pong = |i: u32| {
            let mut out = Vec::new();
            frame::encode(&mut out, true, OpCode::Pong, &i.to_be_bytes());
            out
        };
        for i in 0..100_000 {
            conn.push_pong(pong(i));
            assert!(
                queue(&conn).chunks.len() <= 1 + MAX_QUEUED_PONGS,
                "after {i} pings"
            );
        }
        let queued: usize = queue(&conn).chunks.iter().map(Chunk::len).sum();
        assert_eq!(conn.buffered(), queued - queue(&conn).pos, "the accounting");

        let mut expected = Head::new(true, OpCode::Binary, payload.len())
            .as_bytes()
            .to_vec();
        expected.extend_from_slice(&payload);
        // The first pongs as they came, then the last ping's in place of the newest of them.
        let answered = (0..MAX_QUEUED_PONGS as u32 - 1).chain([99_999]);
        expected.extend(answered.flat_map(pong));
        let mut received = Vec::with_capacity(expected.len());
        let mut buf = vec![0; 1 << 16];
        while received.len() < expected.len() {
            if conn.buffered() > 0 {
                conn.write_pending().expect("write");
            }
            let n = peer.read(&mut buf).expect("read");
            assert!(n > 0, "the socket closed early");
            received.extend_from_slice(&buf[..n]);
        }
        assert_eq!(conn.buffered(), 0);
        assert!(received == expected, "not the frames expected");
    }
}
