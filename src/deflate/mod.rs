//! permessage-deflate (RFC 7692): the offer and answer, and each message compressed or inflated whole.
//!
//! The PHP tutorial had no compression; every browser offers it on every WebSocket it opens. This module is pure,
//! like the codec: [`offer`] reads the client's `Sec-WebSocket-Extensions` and writes the answer, [`codec`] wraps
//! zlib-rs's deflate and inflate streams for one message at a time. Nothing here touches a socket; the loop decides
//! which stream a connection uses (its own, or one shared by its loop) and when.
//!
//! The rule that keeps memory small: a side without context takeover holds no zlib state between messages. By
//! default neither side keeps one, so an idle connection with the extension costs nothing more than one without,
//! and a publish is compressed once for every receiver that negotiated the same window.

pub mod codec;
pub mod offer;

pub use codec::{Compressor, Inflater};
pub use offer::{negotiate, Params};

/// The extension's name in `Sec-WebSocket-Extensions` (RFC 7692 §7).
pub const EXTENSION: &str = "permessage-deflate";

/// RFC 7692 §7.1.2: the LZ77 window sizes a peer may name, as base-2 logarithms.
pub const MIN_WINDOW_BITS: u8 = 8;
/// The largest window, and the one a side uses when nothing was negotiated.
pub const MAX_WINDOW_BITS: u8 = 15;

/// The server's permessage-deflate settings ([`crate::Config::deflate`]; `None` declines every offer).
///
/// Memory per connection ([`Deflate::bytes_per_connection`]): a side without context takeover holds nothing between
/// messages (its stream is its loop's, reset after each message). A side that keeps its context owns a stream,
/// made with its first compressed message: zlib-rs's compressor holds a fixed 128 KiB hash table, 4 bytes per
/// window position and 7 per entry of its `mem_level` buffer (134 KiB at window 9 and level 1, 371 KiB at 15 and 8),
/// its inflater 46 KiB whatever the window (stock zlib's formula, which uWebSockets' preset names follow, would
/// give 3 KiB and 256 KiB for those two compressors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// Keep the compression context from one message to the next: better ratios on small similar messages, at the
    /// cost of one compressor per connection, and of compressing a publish once per receiver. `false` answers
    /// `server_no_context_takeover` and compresses with one stream per loop.
    pub server_context_takeover: bool,
    /// The largest window the server compresses with, 9 to 15 (a client that asks for less gets what it asked;
    /// one that asks for 8 gets a stream with no back-references at all, which any window can read).
    pub server_max_window_bits: u8,
    /// zlib's `memLevel` for the compressor, 1 to 9: the size of its buffer of literals and matches (in zlib-rs the
    /// hash table is fixed), memory for ratio on long messages.
    pub mem_level: u8,
    /// zlib's compression level, 0 (stored) to 9 (smallest, slowest).
    pub level: u8,
    /// Let clients keep their context: `false` answers `client_no_context_takeover`, so the server needs no
    /// inflater per connection (only a message in several frames borrows one until its last frame).
    pub client_context_takeover: bool,
    /// The window the server asks clients to compress with, 8 to 15, when their offer lets it ask
    /// (`client_max_window_bits`). (zlib-rs's inflater holds a 32 KiB window whatever this says.)
    pub client_max_window_bits: u8,
    /// Messages shorter than this many bytes go out uncompressed (RSV1 clear): below it, deflate's own overhead
    /// and the time it takes outweigh what it saves.
    pub threshold: usize,
}

impl Default for Deflate {
    /// No context takeover on either side (no zlib state per connection, and a publish compressed once for every
    /// receiver), the full window, zlib's default memory level, level 3 and a threshold of 128 bytes. On chat-like
    /// JSON without context, levels 2 to 9 give the same size within 1% for 200 B and 1 KiB messages, level 1 a
    /// fifth more bytes; for 16 KiB level 3 is 1.5 to 1.9 times as fast as 6 for 2% more. Below 128 bytes a
    /// message saves at most 19%, for about as much CPU as the rest of an echo. The README has the measurements.
    fn default() -> Deflate {
        Deflate {
            server_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            mem_level: 8,
            level: 3,
            client_context_takeover: false,
            client_max_window_bits: MAX_WINDOW_BITS,
            threshold: 128,
        }
    }
}

impl Deflate {
    /// The memory presets, named as uWebSockets names its own (`DEDICATED_COMPRESSOR_3KB` to `_256KB`) after stock
    /// zlib's size for a window and memory level: `kib` is one of 3, 4, 8, 16, 32, 64, 128 or 256, for 9 and 1 up to
    /// 15 and 8. Each connection keeps its own compressor, and clients are asked to keep theirs with the same
    /// window. What a connection really holds with zlib-rs is [`Deflate::bytes_per_connection`]: 180 KiB for 3, 417
    /// KiB for 256 (its hash table alone is 128 KiB). They compress at level 1: with the context kept, it makes a
    /// 200 B chat message smaller than a fresh stream does at level 6, 6 to 14 times as fast as level 6 would.
    /// `None` for another size.
    pub fn dedicated(kib: u32) -> Option<Deflate> {
        let (window_bits, mem_level) = match kib {
            3 => (9, 1),
            4 => (9, 2),
            8 => (10, 3),
            16 => (11, 4),
            32 => (12, 5),
            64 => (13, 6),
            128 => (14, 7),
            256 => (15, 8),
            _ => return None,
        };
        Some(Deflate {
            server_context_takeover: true,
            server_max_window_bits: window_bits,
            mem_level,
            client_context_takeover: true,
            client_max_window_bits: window_bits,
            level: 1,
            ..Deflate::default()
        })
    }
}

impl Deflate {
    /// At most how many bytes one connection's own streams hold under these settings, once each side that keeps its
    /// context has made its stream (0 with no context takeover on either side): zlib-rs's compressor is 128 KiB of
    /// hash table, 4 bytes per position of the window, 7 per entry of the `mem_level` buffer and 3 KiB of state;
    /// its inflater 46 KiB (a 32 KiB window whatever the bits, and its state); plus up to 1 KiB of the compressor's
    /// output buffer. A client may still decline to keep its context, and then its connection holds no inflater.
    ///
    /// Not counted: a connection in the middle of a compressed message in several frames borrows an inflater of
    /// its own (46 KiB) until the last frame, as it may hold up to `max_message` of a plain message in the making.
    pub fn bytes_per_connection(&self) -> usize {
        let window = usize::from(self.server_max_window_bits.clamp(9, MAX_WINDOW_BITS));
        let mem_level = usize::from(self.mem_level.clamp(1, 9));
        let compressor = (128 << 10) + (4 << window) + (7 << (mem_level + 6)) + 3200;
        let inflater = 47_552;
        usize::from(self.server_context_takeover) * compressor
            + usize::from(self.client_context_takeover) * inflater
    }
}

/// What one connection holds for the extension: what was agreed, and the streams it keeps because a side keeps its
/// context (each made when its first compressed message comes, so an idle connection holds neither).
#[derive(Debug)]
pub(crate) struct Session {
    pub params: Params,
    /// The server's compressor for this connection, when it keeps its context (no `server_no_context_takeover`).
    pub compressor: Option<Box<Compressor>>,
    /// The inflater for this connection's client, when the client keeps its context.
    pub inflater: Option<Box<Inflater>>,
}

impl Session {
    pub fn new(params: Params) -> Session {
        Session {
            params,
            compressor: None,
            inflater: None,
        }
    }

    /// The connection's own inflater if its client keeps its context (made on first use), or `None`: the loop's
    /// shared one will do.
    pub fn own_inflater(&mut self) -> Option<&mut Inflater> {
        if self.params.client_no_context_takeover {
            return None;
        }
        let bits = self.params.client_max_window_bits;
        Some(
            self.inflater
                .get_or_insert_with(|| Box::new(Inflater::new(bits, true))),
        )
    }

    /// The connection's own compressor if the server keeps its context with it (made on first use), or `None`:
    /// every message to it starts afresh, and the loop's shared compressor for its window will do.
    pub fn own_compressor(&mut self, settings: &Deflate) -> Option<&mut Compressor> {
        if self.params.server_no_context_takeover {
            return None;
        }
        let bits = self.params.server_max_window_bits;
        Some(self.compressor.get_or_insert_with(|| {
            Box::new(Compressor::new(
                bits,
                settings.mem_level,
                settings.level,
                true,
            ))
        }))
    }
}
