//! The outbound side of the loop: what callbacks ask for, queued per connection and written out.
//!
//! In the PHP tutorial this was one `socket_write` per message, assumed to take everything. Unlike it, a write
//! here may be partial, so output waits in a bounded per-connection queue until `WRITABLE`; a broadcast frame is
//! encoded once and shared by every queue; and a receiver too slow to keep up is dropped (close 1008) rather than
//! allowed to grow the server's memory or hold up the others.

use std::mem;
use std::sync::Arc;

use log::{debug, trace, warn};

use super::deflate::Variants;
use super::Server;
use crate::close::{ClosedBy, End};
use crate::connection::{Chunk, Closing, ConnId};
use crate::error::close_code;
use crate::frame::{self, Head, Limits, OpCode};
use crate::handler::Handler;
use crate::metrics::close_slot;
use crate::Status;

/// §5.5: a close reason must fit in a 125-byte control payload after the 2-byte code.
const MAX_CLOSE_REASON: usize = 123;

impl Server {
    /// Queues a close frame with `code` and `reason` behind everything already queued.
    pub(super) fn queue_close(&mut self, key: usize, code: Option<u16>, reason: &str) {
        let mut payload = Vec::with_capacity(2 + reason.len());
        if let Some(code) = code {
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(truncate_utf8(reason, MAX_CLOSE_REASON).as_bytes());
        }
        let mut close = Vec::with_capacity(2 + payload.len());
        frame::encode(&mut close, true, OpCode::Close, &payload);
        let conn = &mut self.conns[key];
        trace_frame(conn.id, ">", &close);
        let chunk = Chunk::owned(close);
        self.fig.closes_out[close_slot(code)].add(1);
        if conn.is_inspected {
            self.inspector.sent(key, &chunk);
        }
        conn.push(chunk);
        self.mark_dirty(key);
    }

    /// Carries out what callbacks asked of their handle, in order. A callback run from here (the `close` of a
    /// connection a callback closed) may ask for more: that is queued behind the rest and carried out by the same
    /// loop, never by a nested one, so a cascade of closes cannot grow the stack.
    pub(super) fn apply_actions<H: Handler>(&mut self, handler: &mut H) {
        if self.is_applying {
            return;
        }
        self.is_applying = true;
        while !self.actions.is_empty() {
            let mut batch = mem::replace(&mut self.actions, mem::take(&mut self.spare_actions));
            for action in batch.drain(..) {
                self.carry_out(handler, action, false);
            }
            self.spare_actions = batch;
        }
        self.is_applying = false;
    }

    /// Queues one shared frame for every subscriber of `topic` on this loop; no other connection is looked at.
    pub(super) fn publish_here(&mut self, topic: &str, head: Head, bytes: &Arc<Vec<u8>>) {
        if log::log_enabled!(log::Level::Trace) {
            trace!(
                "publish to {} subscribers of {topic:?}:",
                self.topics.count(topic)
            );
            trace_frame(self.conn_id_none(), ">", first(&head, bytes));
        }
        let mut variants = Variants::new(head, bytes);
        let settings = self.config.deflate;
        let mut sent = 0;
        for key in self.topics.subscribers(topic) {
            // Subscriptions end when a connection stops being open, so every subscriber is open.
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let chunk = variants.chunk(
                conn.deflate.as_deref_mut(),
                &mut self.streams,
                settings.as_ref(),
            );
            sent += 1;
            if conn.is_inspected {
                self.inspector.sent(key, &chunk);
            }
            conn.push(chunk);
            self.stats.peak_buffered = self.stats.peak_buffered.max(conn.buffered());
            if !conn.is_dirty {
                conn.is_dirty = true;
                self.dirty.push(key);
            }
        }
        self.fig.messages_out.add(sent);
    }

    /// Queues one shared frame for every open connection: made once, its bytes shared by every queue.
    pub(super) fn broadcast(&mut self, head: Head, bytes: &Arc<Vec<u8>>) {
        if log::log_enabled!(log::Level::Trace) {
            trace!("broadcast to {} connections:", self.users);
            trace_frame(self.conn_id_none(), ">", first(&head, bytes));
        }
        let mut variants = Variants::new(head, bytes);
        let settings = self.config.deflate;
        let mut sent = 0;
        // Stats sockets are the loop's own, not users: a broadcast does not reach them.
        for (key, conn) in self
            .conns
            .iter_mut()
            .filter(|(_, c)| c.is_open() && !c.is_viewer)
        {
            let chunk = variants.chunk(
                conn.deflate.as_deref_mut(),
                &mut self.streams,
                settings.as_ref(),
            );
            sent += 1;
            if conn.is_inspected {
                self.inspector.sent(key, &chunk);
            }
            conn.push(chunk);
            self.stats.peak_buffered = self.stats.peak_buffered.max(conn.buffered());
            if !conn.is_dirty {
                conn.is_dirty = true;
                self.dirty.push(key);
            }
        }
        self.fig.messages_out.add(sent);
    }

    /// Queues a data frame for one connection.
    pub(super) fn queue_data(&mut self, key: usize, chunk: Chunk) {
        let conn = &mut self.conns[key];
        if conn.is_inspected {
            self.inspector.sent(key, &chunk);
        }
        // A ping the application sent (`Handle::ping`) goes this way too, but it is no message.
        let is_message = chunk
            .parts(0)
            .into_iter()
            .find(|part| !part.is_empty())
            .is_some_and(|part| part[0] & 0x08 == 0);
        self.fig.messages_out.add(u64::from(is_message));
        conn.push(chunk);
        self.stats.peak_buffered = self.stats.peak_buffered.max(conn.buffered());
        self.mark_dirty(key);
    }

    /// A receiver too slow for what it is sent: drop what it has not started to receive and close it with 1008.
    pub(super) fn overflow<H: Handler>(&mut self, handler: &mut H, key: usize) {
        let conn = &mut self.conns[key];
        if !conn.is_open() {
            return;
        }
        let queued = conn.buffered();
        let dropped = conn.discard_unsent();
        self.recount_outbound(key); // so that the memory budget does not close another for what this one held
        let conn = &self.conns[key];
        self.stats.dropped_slow += 1;
        self.fig.dropped_slow.add(1);
        warn!(
            "{} reads too slowly: {queued} bytes queued (limit {}); dropping {dropped} unsent bytes and closing \
             with 1008 ({} connections dropped as too slow so far)",
            conn.id, self.config.max_buffered, self.stats.dropped_slow
        );
        let end = End {
            by: ClosedBy::SlowReader,
            code: Some(close_code::POLICY_VIOLATION),
            reason: "too slow to read what it is sent",
        };
        self.close_with(handler, key, Closing::Done, end);
    }

    /// Writes what each connection touched this turn has queued; finishes closes whose last frame went out.
    ///
    /// This is also where a slow reader is found: the limit applies to what is still queued once the socket has
    /// taken all it can, so a burst queued within one turn does not count against a reader that keeps up. A drop
    /// may queue more for others (a close callback broadcasting a "leave"); those are flushed by the same loop.
    pub(super) fn flush_dirty<H: Handler>(&mut self, handler: &mut H) {
        while !self.dirty.is_empty() {
            let mut batch = mem::replace(&mut self.dirty, mem::take(&mut self.spare_dirty));
            for key in batch.drain(..) {
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                conn.is_dirty = false;
                if conn.is_write_shut {
                    continue;
                }
                let counted = conn.counted_out();
                let before = conn.buffered();
                let written = conn.write_pending();
                // The memory budget counts what is still queued after a write attempt. A short message written at
                // once leaves nothing, as nothing was counted before: one compare.
                let queued = conn.buffered();
                self.fig.bytes_out.add(before.saturating_sub(queued) as u64);
                let is_over_budget = queued != counted && {
                    conn.set_counted_out(queued);
                    self.memory.change_out(counted, queued)
                };
                match written {
                    Ok(true) if conn.closing == Some(Closing::Done) && conn.is_read_eof => {
                        debug!(
                            "{} last bytes written to a peer that already hung up",
                            conn.id
                        );
                        self.close(handler, key, End::DROPPED);
                    }
                    Ok(true) if conn.closing == Some(Closing::Done) => {
                        // §7.1.1: the server closes the TCP connection first. Shut down our side and read until the
                        // peer's FIN (or the close timeout), so our last frame is not lost to a reset. With TLS,
                        // close_notify goes first, and may wait for `WRITABLE`.
                        match conn.shut_write() {
                            Ok(true) => {
                                conn.is_write_shut = true;
                                debug!("{} last frame sent; TCP write side shut down", conn.id);
                            }
                            Ok(false) => {}
                            Err(e) => {
                                debug!("{} write failed: {e}", conn.id);
                                self.close(handler, key, End::DROPPED);
                            }
                        }
                    }
                    Ok(false) if conn.is_open() && conn.backlog() > self.config.max_buffered => {
                        self.overflow(handler, key); // queues the close frame and marks the connection dirty
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!("{} write failed: {e}", conn.id);
                        self.close(handler, key, End::DROPPED);
                    }
                }
                if is_over_budget {
                    self.enforce_budget(handler); // the closes it queues are flushed by this same loop
                }
            }
            self.spare_dirty = batch;
        }
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.is_dirty {
                conn.is_dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// The id logs show for what goes to many connections.
    fn conn_id_none(&self) -> ConnId {
        ConnId::new(0, 0, self.loop_index).expect("loop indexes fit an id")
    }

    /// The slab key of `id` if that connection still exists and is open.
    pub(super) fn open_key(&self, id: ConnId) -> Option<usize> {
        self.conns
            .get(id.key())
            .filter(|c| c.id == id && c.is_open())
            .map(|_| id.key())
    }
}

/// `RUST_LOG=wsloop=trace`: each frame header, annotated as in the RFC's diagram. Costs one branch when disabled.
pub(super) fn trace_frame(id: ConnId, direction: &str, bytes: &[u8]) {
    if log::log_enabled!(log::Level::Trace) {
        let any = Limits {
            max_payload: u64::MAX >> 1,
            require_mask: false,
            deflate: true,
        };
        if let Ok(Status::Complete(header)) = frame::decode_header(bytes, &any) {
            trace!("{id} {direction} {header}");
        }
    }
}

/// Where a frame starts: its separate header, or the bytes if they are the whole frame.
pub(super) fn first<'a>(head: &'a Head, bytes: &'a [u8]) -> &'a [u8] {
    if head.as_bytes().is_empty() {
        bytes
    } else {
        head.as_bytes()
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(super) fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
