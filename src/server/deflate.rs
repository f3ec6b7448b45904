//! permessage-deflate in the loop: which stream a connection's message goes through, and the compressed frame
//! each receiver gets.
//!
//! The PHP tutorial had nothing of the kind. Here a side that starts every message afresh (the default on both)
//! borrows its loop's stream for the one message and holds nothing after it; a side that keeps its context owns
//! its stream ([`Session`]). A publish is compressed once per window for every receiver that starts afresh, and
//! only the receivers whose server side keeps a context get a compression of their own.

use std::sync::Arc;

use super::Server;
use crate::connection::{Bytes, Chunk};
use crate::deflate::{Compressor, Deflate, Inflater, Session, MIN_WINDOW_BITS};
use crate::frame::{self, Head, OpCode};
use crate::message::Inflate;

/// Window sizes a receiver may have agreed to: 8 to 15 bits.
const WINDOWS: usize = 8;

/// The loop's streams for the sides that start every message afresh, each made when first needed.
#[derive(Debug, Default)]
pub(super) struct Streams {
    /// One compressor per window size.
    compressors: [Option<Box<Compressor>>; WINDOWS],
    /// One inflater: a 15-bit window reads what any smaller one wrote.
    inflater: Option<Box<Inflater>>,
}

impl Streams {
    fn compressor(&mut self, bits: u8, settings: &Deflate) -> &mut Compressor {
        let slot = usize::from(bits.clamp(MIN_WINDOW_BITS, 15) - MIN_WINDOW_BITS);
        self.compressors[slot].get_or_insert_with(|| {
            Box::new(Compressor::new(
                bits,
                settings.mem_level,
                settings.level,
                false,
            ))
        })
    }
}

/// A compressed frame: its header (RSV1 set) and its payload, shared by every receiver of the same window.
type Frame = (Head, Arc<Vec<u8>>);

/// The frames one publish becomes on this loop: its plain frame, and its compressed one per window, each made the
/// first time a receiver needs it.
pub(super) struct Variants<'m> {
    head: Head,
    bytes: &'m Arc<Vec<u8>>,
    /// The compressed frame per window; `Some(None)` once it was found not to be worth sending compressed.
    by_window: [Option<Option<Frame>>; WINDOWS],
}

impl<'m> Variants<'m> {
    pub(super) fn new(head: Head, bytes: &'m Arc<Vec<u8>>) -> Variants<'m> {
        Variants {
            head,
            bytes,
            by_window: Default::default(),
        }
    }

    fn plain(&self) -> Chunk {
        Chunk::data(self.head, Bytes::Shared(self.bytes.clone()))
    }

    /// The chunk for one receiver: the plain frame, or the compressed one its session agreed to.
    pub(super) fn chunk(
        &mut self,
        session: Option<&mut Session>,
        streams: &mut Streams,
        settings: Option<&Deflate>,
    ) -> Chunk {
        let (Some(session), Some(settings)) = (session, settings) else {
            return self.plain();
        };
        let Some((opcode, payload)) = frame_parts(&self.head, self.bytes) else {
            return self.plain();
        };
        if payload.len() < settings.threshold {
            return self.plain();
        }
        if let Some(own) = session.own_compressor(settings) {
            return compressed(own, opcode, payload, false)
                .unwrap_or_else(|| Chunk::data(self.head, Bytes::Shared(self.bytes.clone())));
        }
        let bits = session.params.server_max_window_bits;
        let slot = usize::from(bits.clamp(MIN_WINDOW_BITS, 15) - MIN_WINDOW_BITS);
        let made = self.by_window[slot].get_or_insert_with(|| {
            let mut out = Vec::new();
            streams
                .compressor(bits, settings)
                .compress(payload, &mut out);
            (out.len() < payload.len())
                .then(|| (Head::compressed(opcode, out.len()), Arc::new(out)))
        });
        match made {
            Some((head, bytes)) => Chunk::data(*head, Bytes::Shared(bytes.clone())),
            None => self.plain(),
        }
    }
}

/// One message compressed into a chunk of its own; `None` when it did not get smaller and `may_skip` (a stream
/// that starts afresh each message may send it plain instead; one that keeps its context has already taken it in,
/// and the receiver's must too).
fn compressed(
    compressor: &mut Compressor,
    opcode: OpCode,
    payload: &[u8],
    may_skip: bool,
) -> Option<Chunk> {
    let mut out = Vec::new();
    compressor.compress(payload, &mut out);
    if may_skip && out.len() >= payload.len() {
        return None;
    }
    Some(Chunk::data(
        Head::compressed(opcode, out.len()),
        Bytes::Owned(out),
    ))
}

impl Server {
    /// The inflater a compressed frame from connection `key` goes through: its own if its client keeps its context,
    /// else the loop's. `None` for a connection without the extension.
    pub(super) fn inflate_for(&mut self, key: usize) -> Option<Inflate<'_>> {
        let session = self.conns.get_mut(key)?.deflate.as_deref_mut()?;
        if !session.params.client_no_context_takeover {
            return session.own_inflater().map(Inflate::Own);
        }
        let shared = self
            .streams
            .inflater
            .get_or_insert_with(|| Box::new(Inflater::new(15, false)));
        Some(Inflate::Shared(shared))
    }

    /// A data frame for one connection, compressed if it agreed to permessage-deflate and the message is long
    /// enough to be worth it.
    pub(super) fn chunk_for(&mut self, key: usize, head: Head, bytes: Bytes) -> Chunk {
        let (Some(settings), Some(conn)) = (self.config.deflate, self.conns.get_mut(key)) else {
            return Chunk::data(head, bytes);
        };
        let Some(session) = conn.deflate.as_deref_mut() else {
            return Chunk::data(head, bytes);
        };
        let made = match frame_parts(&head, bytes.as_slice()) {
            // RFC 7692 §6: only data messages are compressed, never a control frame (an application's ping).
            Some((opcode, payload))
                if !opcode.is_control() && payload.len() >= settings.threshold =>
            {
                match session.own_compressor(&settings) {
                    Some(own) => compressed(own, opcode, payload, false),
                    None => {
                        let bits = session.params.server_max_window_bits;
                        compressed(
                            self.streams.compressor(bits, &settings),
                            opcode,
                            payload,
                            true,
                        )
                    }
                }
            }
            _ => None,
        };
        made.unwrap_or_else(|| Chunk::data(head, bytes))
    }
}

/// The opcode and payload of a queued frame: after its separate header, or inside the bytes when they are the whole
/// frame (a server frame has no mask: §5.2's 7-bit length, or a marker for a 16- or 64-bit one after it).
pub(super) fn frame_parts<'a>(head: &Head, bytes: &'a [u8]) -> Option<(OpCode, &'a [u8])> {
    let whole = head.as_bytes();
    let first = *whole.first().or(bytes.first())?;
    let opcode = OpCode::from_u8(first & 0x0f)?;
    if !whole.is_empty() {
        return Some((opcode, bytes));
    }
    let header = match bytes.get(1)? & 0x7f {
        frame::LEN16_MARKER => 4,
        frame::LEN64_MARKER => 10,
        _ => 2,
    };
    Some((opcode, bytes.get(header..)?))
}
