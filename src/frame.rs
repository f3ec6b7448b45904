//! The frame codec: decode one frame from bytes, encode one into a `Vec`, unmask in place.
//!
//! In the PHP tutorial this is `decode()` (and the `frame()`/`encode()` helpers of its successors). Unlike the PHP
//! version, which assumed a whole unfragmented frame in each 1024-byte read, this is a push parser: give it whatever
//! bytes have arrived and it answers `Partial` (nothing consumed, wait for more), `Complete` with the frame and the
//! number of bytes it used, or a [`FrameError`]. Nothing in this module touches a socket.
//!
//! The frame layout (RFC 6455 §5.2):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```
//!
//! ```
//! use wsloop::frame::{self, Limits, OpCode};
//! use wsloop::Status;
//! // RFC 6455 §5.7: a masked "Hello". 0x81 = FIN + text, 0x85 = MASK + length 5, then the masking key.
//! let mut bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
//! let Ok(Status::Complete((frame, used))) = frame::decode(&mut bytes, &Limits::default()) else { panic!() };
//! assert_eq!((frame.fin, frame.opcode, frame.payload, used), (true, OpCode::Text, &b"Hello"[..], 11));
//! ```

use std::fmt;

use crate::error::FrameError;
use crate::utf8;
use crate::Status;

/// §5.5: control frames carry at most 125 bytes of payload.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// §5.2: a 7-bit length of 126 means a 16-bit length follows.
pub const LEN16_MARKER: u8 = 126;
/// §5.2: a 7-bit length of 127 means a 64-bit length follows.
pub const LEN64_MARKER: u8 = 127;
/// The longest header: 2 bytes, an 8-byte length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

internal! {
    /// A payload the application hands over ([`crate::Outgoing`]) of at least this many bytes is written from its
    /// own buffer, its header beside it in one `writev`, instead of being copied behind the header. Below it, copying
    /// the payload costs less than one more buffer for the kernel to walk.
    pub const WRITEV_MIN: usize = 1024;
}

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
/// RFC 7692 §6: RSV1 (in [`Header::rsv`]'s low three bits) marks the first frame of a compressed message.
pub const RSV1_COMPRESSED: u8 = 0b100;
const OPCODE: u8 = 0x0f;
const MASK: u8 = 0x80;
const PAYLOAD_LEN: u8 = 0x7f;

/// The frame opcodes RFC 6455 §5.2 defines; the others are reserved and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: text (UTF-8).
    Text,
    /// 0x2: binary.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for a reserved one.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        match value {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// §5.5: close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// What the decoder enforces while reading a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest payload a single frame may announce (checked before any of it is buffered).
    pub max_payload: u64,
    /// §5.1: frames from a client must be masked. A client-side decoder sets this to `false`.
    pub require_mask: bool,
    /// permessage-deflate was negotiated: RSV1 may mark the first frame of a compressed message (RFC 7692 §6).
    pub deflate: bool,
}

impl Default for Limits {
    /// 16 MiB frames, masking required (a server reading a client).
    fn default() -> Self {
        Limits {
            max_payload: 16 << 20,
            require_mask: true,
            deflate: false,
        }
    }
}

/// A frame header, decoded and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits: 0, or [`RSV1_COMPRESSED`] on the first frame of a compressed message.
    pub rsv: u8,
    /// What the payload is.
    pub opcode: OpCode,
    /// The key the payload is masked with, if the MASK bit is set.
    pub masking_key: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Header length in bytes (2 to 14).
    pub header_len: usize,
}

impl Header {
    /// The whole frame's length, header and payload; `None` if it does not fit in memory on this platform.
    pub fn frame_len(&self) -> Option<usize> {
        usize::try_from(self.payload_len)
            .ok()?
            .checked_add(self.header_len)
    }
}

/// One decoded frame; its payload is already unmasked and borrows the input buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Last frame of a message.
    pub fin: bool,
    /// RSV1-3 as the low three bits.
    pub rsv: u8,
    /// What the payload is.
    pub opcode: OpCode,
    /// The unmasked payload.
    pub payload: &'a [u8],
    /// For a masked text frame that is a whole message (FIN set): the payload as text, if it is valid UTF-8,
    /// checked in the same pass that unmasked it (see `utf8::unmask_text`); the same bytes as `payload`. `None`
    /// for any other frame, and for invalid text: the assembler then checks the payload itself (and fails it with
    /// close code 1007).
    pub text: Option<&'a str>,
}

/// Reads and checks a frame header. `Partial` if `buf` does not yet hold all of it.
///
/// Checks are made as soon as the bytes they need are there, so a bad first byte fails at once, and a payload
/// length over `limits.max_payload` fails before a single payload byte is buffered.
#[inline]
pub fn decode_header(buf: &[u8], limits: &Limits) -> Result<Status<Header>, FrameError> {
    let (b0, b1) = match buf {
        [b0, b1, ..] => (*b0, *b1),
        [b0] => {
            check_first_byte(*b0, limits)?;
            return Ok(Status::Partial);
        }
        [] => return Ok(Status::Partial),
    };
    let opcode = check_first_byte(b0, limits)?;
    let fin = b0 & FIN != 0;
    let masked = b1 & MASK != 0;
    // RFC 6455 §5.1: the server MUST close the connection on an unmasked frame.
    if limits.require_mask && !masked {
        return Err(FrameError::UnmaskedFrame);
    }
    let (payload_len, len_bytes) = match b1 & PAYLOAD_LEN {
        LEN16_MARKER => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
            None => return Ok(Status::Partial),
        },
        LEN64_MARKER => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 8),
            None => return Ok(Status::Partial),
        },
        short => (u64::from(short), 0),
    };
    if opcode.is_control() {
        // §5.5: control frames MUST NOT be fragmented and carry at most 125 bytes.
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::ControlTooLong(payload_len));
        }
    }
    // §5.2: "the most significant bit MUST be 0".
    if payload_len >> 63 != 0 {
        return Err(FrameError::BadLength(payload_len));
    }
    if payload_len > limits.max_payload {
        return Err(FrameError::MessageTooBig {
            size: payload_len,
            max: limits.max_payload,
        });
    }
    let key_at = 2 + len_bytes;
    let (masking_key, header_len) = if masked {
        match buf.get(key_at..key_at + 4) {
            Some(k) => (Some([k[0], k[1], k[2], k[3]]), key_at + 4),
            None => return Ok(Status::Partial),
        }
    } else {
        (None, key_at)
    };
    Ok(Status::Complete(Header {
        fin,
        rsv: (b0 & RSV) >> 4,
        opcode,
        masking_key,
        payload_len,
        header_len,
    }))
}

/// §5.2: RSV1-3 must be 0 unless an extension gives them a meaning, and the opcode must be a defined one. RFC 7692
/// §6 gives RSV1 one: a compressed message, marked on its first frame only, never on a control frame or a
/// continuation (§6.1).
#[inline]
fn check_first_byte(b0: u8, limits: &Limits) -> Result<OpCode, FrameError> {
    if b0 & RSV != 0 {
        check_rsv(b0, limits)?;
    }
    OpCode::from_u8(b0 & OPCODE).ok_or(FrameError::UnknownOpcode(b0 & OPCODE))
}

/// A reserved bit is set: fine only for RSV1 alone, on a text or binary frame, with permessage-deflate. Out of line,
/// so that the common frame pays one test for all of this.
#[cold]
#[inline(never)]
fn check_rsv(b0: u8, limits: &Limits) -> Result<(), FrameError> {
    let rsv = (b0 & RSV) >> 4;
    let is_data_start = matches!(
        OpCode::from_u8(b0 & OPCODE),
        Some(OpCode::Text | OpCode::Binary)
    );
    if rsv == RSV1_COMPRESSED && limits.deflate && is_data_start {
        return Ok(());
    }
    Err(FrameError::ReservedBits(rsv))
}

/// Decodes one frame from the front of `buf`, unmasking its payload in place.
///
/// Returns `Partial` (nothing consumed) until the whole frame is there, then the frame and the bytes it used.
#[inline]
pub fn decode<'a>(
    buf: &'a mut [u8],
    limits: &Limits,
) -> Result<Status<(Frame<'a>, usize)>, FrameError> {
    match decode_header(buf, limits)? {
        Status::Complete(header) => Ok(decode_body(buf, &header, 0)),
        Status::Partial => Ok(Status::Partial),
    }
}

/// The frame that `header` (read from the front of `buf`) begins, once `buf` holds all of it; `Partial` until then.
/// Its payload is unmasked in place, all but the first `unmasked` bytes, which were unmasked already as they
/// arrived (`message::Probe`).
#[inline]
pub fn decode_body<'a>(
    buf: &'a mut [u8],
    header: &Header,
    unmasked: usize,
) -> Status<(Frame<'a>, usize)> {
    // payload_len <= max_payload, which the caller sized to fit in memory; a length that does not fit in usize
    // on this platform can only be Partial forever, which the limit prevents.
    let Some(total) = header.frame_len() else {
        return Status::Partial;
    };
    let Some(frame) = buf.get_mut(..total) else {
        return Status::Partial;
    };
    let payload = &mut frame[header.header_len..];
    let (payload, text) = match header.masking_key {
        // Invalid text is left to the assembler, which says what is wrong with it.
        // (A compressed payload is not text until it is inflated.)
        Some(key)
            if unmasked == 0 && header.opcode == OpCode::Text && header.fin && header.rsv == 0 =>
        {
            utf8::unmask_text(payload, key)
        }
        Some(key) => {
            let still_masked = payload.get_mut(unmasked..).unwrap_or_default();
            apply_mask(still_masked, key, unmasked);
            (&*payload, None)
        }
        None => (&*payload, None),
    };
    Status::Complete((
        Frame {
            fin: header.fin,
            rsv: header.rsv,
            opcode: header.opcode,
            payload,
            text,
        },
        total,
    ))
}

/// Payloads from this length on are unmasked 64 bytes a step; shorter ones 8 bytes a step.
const WIDE_MASK_FROM: usize = 512;
/// A long payload is unmasked from its first 32-byte boundary on, so no vector load or store straddles two cache
/// lines (a frame's payload starts wherever its 2 to 14 header bytes end).
const WIDE_ALIGN: usize = 32;

/// XORs `buf` with the masking key (§5.3), starting `offset` bytes into the key's cycle. Its own inverse.
///
/// A short payload goes 8 bytes at a time as one 64-bit word, then byte by byte. A long one is brought to a 32-byte
/// boundary that way, then goes 64 bytes at a time against a pre-rotated 64-byte copy of the key, which the
/// compiler turns into vector XORs (on x86-64, 32-byte AVX2 ones when the CPU has them). The key is rotated by
/// however many bytes each step has done, so it stays in phase from one to the next.
#[inline]
pub fn apply_mask(buf: &mut [u8], masking_key: [u8; 4], offset: usize) {
    let key = rotate(masking_key, offset);
    // Building the 64-byte key costs about as much as masking a short payload word by word; only long ones pay.
    if buf.len() < WIDE_MASK_FROM {
        mask_words(buf, key);
    } else {
        mask_long(buf, key);
    }
}

/// The key as it stands `offset` bytes into its cycle.
#[inline]
pub(crate) fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    u32::from_be_bytes(key)
        .rotate_left(8 * (offset % 4) as u32)
        .to_be_bytes()
}

/// Word by word up to the first 32-byte boundary, then 64 bytes a step. Kept out of line: a short payload's path
/// through [`apply_mask`] stays small enough to inline into the decoder.
#[inline(never)]
fn mask_long(buf: &mut [u8], key: [u8; 4]) {
    let lead = buf.as_ptr().align_offset(WIDE_ALIGN).min(buf.len());
    let (head, body) = buf.split_at_mut(lead);
    mask_words(head, key);
    mask_wide(body, rotate(key, lead));
}

/// 8 bytes at a time as one 64-bit word, then byte by byte.
#[inline]
fn mask_words(buf: &mut [u8], key: [u8; 4]) {
    let key_word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = buf.chunks_exact_mut(8);
    for word in &mut words {
        let bytes: [u8; 8] = (&*word)
            .try_into()
            .expect("chunks_exact_mut(8) yields 8 bytes");
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ key_word).to_ne_bytes());
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// 64 bytes at a time, with the widest vectors the CPU has.
fn mask_wide(buf: &mut [u8], key: [u8; 4]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `mask_wide_avx2` requires AVX2 and nothing else, and the CPU has just been found to have it.
        return unsafe { mask_wide_avx2(buf, key) };
    }
    mask_wide_portable(buf, key);
}

/// The same loop compiled for AVX2: 32-byte XORs instead of SSE2's 16-byte ones. Measured side by side on a
/// 32-byte-aligned 1 MiB payload: 7.8 µs against 11.5 µs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn mask_wide_avx2(buf: &mut [u8], key: [u8; 4]) {
    mask_wide_portable(buf, key);
}

#[inline(always)]
fn mask_wide_portable(buf: &mut [u8], key: [u8; 4]) {
    let mut wide = [0u8; 64];
    for (i, w) in wide.iter_mut().enumerate() {
        *w = key[i & 3];
    }
    let mut chunks = buf.chunks_exact_mut(64);
    for chunk in &mut chunks {
        for (byte, k) in chunk.iter_mut().zip(wide.iter()) {
            *byte ^= k;
        }
    }
    mask_words(chunks.into_remainder(), key);
}

/// The header length for a payload of `payload_len` bytes, with or without a masking key.
pub fn header_len(payload_len: usize, masked: bool) -> usize {
    let len_bytes = match payload_len {
        0..=125 => 0,
        126..=0xffff => 2,
        _ => 8,
    };
    2 + len_bytes + if masked { 4 } else { 0 }
}

internal! {
    /// A frame header on its own, for a payload written from where it already is (one `writev` of the header and the
    /// payload) instead of being copied behind it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Head {
        bytes: [u8; MAX_HEADER_LEN],
        len: u8,
    }
}

impl Head {
    /// No header at all: what goes before bytes that are already a whole frame (or an HTTP response).
    pub const NONE: Head = Head {
        bytes: [0; MAX_HEADER_LEN],
        len: 0,
    };

    /// The header of an unmasked (server to client) frame carrying `payload_len` bytes.
    pub fn new(fin: bool, opcode: OpCode, payload_len: usize) -> Head {
        Head::build(fin, opcode, payload_len, None)
    }

    /// The header of a whole compressed message (RFC 7692 §6: RSV1 set on its one frame).
    pub fn compressed(opcode: OpCode, payload_len: usize) -> Head {
        let mut head = Head::build(true, opcode, payload_len, None);
        head.bytes[0] |= RSV1_COMPRESSED << 4;
        head
    }

    fn build(fin: bool, opcode: OpCode, payload_len: usize, masking_key: Option<[u8; 4]>) -> Head {
        let mut head = [0u8; MAX_HEADER_LEN];
        head[0] = if fin { FIN } else { 0 } | opcode.as_u8();
        let mask_bit = if masking_key.is_some() { MASK } else { 0 };
        // §5.2: the minimal number of bytes MUST be used to encode the length.
        let mut n = match payload_len {
            0..=125 => {
                head[1] = mask_bit | payload_len as u8;
                2
            }
            126..=0xffff => {
                head[1] = mask_bit | LEN16_MARKER;
                head[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
                4
            }
            _ => {
                head[1] = mask_bit | LEN64_MARKER;
                head[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
                10
            }
        };
        if let Some(key) = masking_key {
            head[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        Head {
            bytes: head,
            len: n as u8,
        }
    }

    /// The header's bytes: 2 to 10 for an unmasked frame, none for [`Head::NONE`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

fn put_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    masking_key: Option<[u8; 4]>,
) {
    out.extend_from_slice(Head::build(fin, opcode, payload_len, masking_key).as_bytes());
}

/// Appends an unmasked frame (server to client, §5.1: a server MUST NOT mask) to `out`.
///
/// ```
/// let mut out = Vec::new();
/// wsloop::frame::encode(&mut out, true, wsloop::frame::OpCode::Text, b"Hello");
/// assert_eq!(out, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']); // RFC 6455 §5.7
/// ```
#[inline]
pub fn encode(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8]) {
    out.reserve(header_len(payload.len(), false) + payload.len());
    put_header(out, fin, opcode, payload.len(), None);
    out.extend_from_slice(payload);
}

/// Appends a masked frame (client to server) to `out`: for clients, tests and load generators.
pub fn encode_masked(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    masking_key: [u8; 4],
) {
    out.reserve(header_len(payload.len(), true) + payload.len());
    put_header(out, fin, opcode, payload.len(), Some(masking_key));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], masking_key, 0);
}

impl fmt::Display for Header {
    /// The header as the RFC's diagram names its fields, for `trace` logging.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FIN={} RSV={:03b} opcode={:?}({:#x}) MASK={} payload_len={}",
            u8::from(self.fin),
            self.rsv,
            self.opcode,
            self.opcode.as_u8(),
            u8::from(self.masking_key.is_some()),
            self.payload_len
        )?;
        if let Some(k) = self.masking_key {
            write!(
                f,
                " masking_key={:02x}{:02x}{:02x}{:02x}",
                k[0], k[1], k[2], k[3]
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASKED_HELLO: [u8; 11] = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];

    fn complete(buf: &mut [u8], limits: &Limits) -> (bool, OpCode, Vec<u8>, usize) {
        match decode(buf, limits) {
            Ok(Status::Complete((f, used))) => (f.fin, f.opcode, f.payload.to_vec(), used),
            other => panic!("expected a complete frame, got {other:?}"),
        }
    }

    fn client() -> Limits {
        Limits::default()
    }

    fn unmasked_ok() -> Limits {
        Limits {
            require_mask: false,
            ..Limits::default()
        }
    }

    #[test]
    fn rfc_masked_hello_decodes() {
        let mut buf = MASKED_HELLO;
        assert_eq!(
            complete(&mut buf, &client()),
            (true, OpCode::Text, b"Hello".to_vec(), 11)
        );
    }

    #[test]
    fn a_masked_whole_text_frame_carries_its_payload_as_text() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let limits = Limits::default();
        for text in [
            "Hello",
            "wsloop says héllo, wörld ✓ and more, past 35 bytes",
            &"😀 ".repeat(40),
        ] {
            let mut buf = Vec::new();
            encode_masked(&mut buf, true, OpCode::Text, text.as_bytes(), key);
            let Ok(Status::Complete((frame, _))) = decode(&mut buf, &limits) else {
                panic!("a complete frame")
            };
            assert_eq!(frame.text, Some(text));
            assert!(std::ptr::eq(frame.text.unwrap().as_bytes(), frame.payload));
        }
        // Not for invalid text, a fragment, or another opcode: those go to the assembler as bytes.
        let cases: [(bool, OpCode, &[u8]); 3] = [
            (
                true,
                OpCode::Text,
                b"valid until here: \xff \xed\xa0\x80 and then some more",
            ),
            (
                false,
                OpCode::Text,
                "a first fragment, complete in itself, of 40+ bytes".as_bytes(),
            ),
            (
                true,
                OpCode::Binary,
                "binary that happens to be text, of 40 bytes or more".as_bytes(),
            ),
        ];
        for (fin, opcode, payload) in cases {
            let mut buf = Vec::new();
            encode_masked(&mut buf, fin, opcode, payload, key);
            let Ok(Status::Complete((frame, _))) = decode(&mut buf, &limits) else {
                panic!("a complete frame")
            };
            assert_eq!((frame.payload, frame.text), (payload, None));
        }
    }

    #[test]
    fn rfc_unmasked_hello_decodes_when_masking_is_not_required() {
        let mut buf = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            complete(&mut buf, &unmasked_ok()),
            (true, OpCode::Text, b"Hello".to_vec(), 7)
        );
    }

    #[test]
    fn rfc_fragments_decode_with_fin_only_on_the_last() {
        let mut first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let mut last = [0x80, 0x02, 0x6c, 0x6f];
        assert_eq!(
            complete(&mut first, &unmasked_ok()),
            (false, OpCode::Text, b"Hel".to_vec(), 5)
        );
        assert_eq!(
            complete(&mut last, &unmasked_ok()),
            (true, OpCode::Continuation, b"lo".to_vec(), 4)
        );
    }

    #[test]
    fn rfc_ping_decodes() {
        let mut buf = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            complete(&mut buf, &unmasked_ok()),
            (true, OpCode::Ping, b"Hello".to_vec(), 7)
        );
    }

    #[test]
    fn rfc_256_byte_and_64_kib_length_forms() {
        let mut out = Vec::new();
        encode(&mut out, true, OpCode::Binary, &[7u8; 256]);
        assert_eq!(out[..4], [0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(complete(&mut out, &unmasked_ok()).2.len(), 256);

        let mut out = Vec::new();
        encode(&mut out, true, OpCode::Binary, &vec![7u8; 65536]);
        assert_eq!(
            out[..10],
            [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(complete(&mut out, &unmasked_ok()).2.len(), 65536);
    }

    #[test]
    fn encode_uses_the_minimal_length_form_at_each_boundary() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            encode(&mut out, true, OpCode::Binary, &vec![0u8; len]);
            assert_eq!(out.len(), header + len, "payload of {len}");
            assert_eq!(header_len(len, false), header);
            assert_eq!(header_len(len, true), header + 4);
        }
    }

    #[test]
    fn masked_encode_round_trips_through_decode() {
        for len in [0usize, 1, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut out = Vec::new();
            encode_masked(&mut out, false, OpCode::Binary, &payload, [1, 2, 3, 4]);
            let total = out.len();
            assert_eq!(
                complete(&mut out, &client()),
                (false, OpCode::Binary, payload, total)
            );
        }
    }

    #[test]
    fn every_strict_prefix_is_partial() {
        let mut full = Vec::new();
        encode_masked(&mut full, true, OpCode::Text, &[b'x'; 300], [9, 8, 7, 6]);
        for cut in 0..full.len() {
            let mut prefix = full[..cut].to_vec();
            assert_eq!(
                decode(&mut prefix, &client()),
                Ok(Status::Partial),
                "prefix of {cut} bytes"
            );
            assert_eq!(
                prefix,
                full[..cut],
                "a partial decode must not touch the bytes"
            );
        }
        assert_eq!(complete(&mut full.clone(), &client()).3, full.len());
    }

    #[test]
    fn trailing_bytes_are_left_for_the_next_frame() {
        let mut two = MASKED_HELLO.to_vec();
        two.extend_from_slice(&MASKED_HELLO);
        let (_, _, payload, used) = complete(&mut two, &client());
        assert_eq!((payload.as_slice(), used), (&b"Hello"[..], 11));
        assert_eq!(complete(&mut two[used..], &client()).2, b"Hello");
    }

    #[test]
    fn with_deflate_rsv1_marks_only_a_data_frame_that_starts_a_message() {
        let deflate = Limits {
            deflate: true,
            ..Limits::default()
        };
        // RFC 7692 §7.2.3.1's compressed "Hello" (c1 = FIN + RSV1 + text), masked with a zero key.
        let mut hello = [
            0xc1, 0x87, 0, 0, 0, 0, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
        ];
        match decode(&mut hello, &deflate) {
            Ok(Status::Complete((f, 13))) => {
                assert_eq!(
                    (f.rsv, f.opcode, f.text),
                    (RSV1_COMPRESSED, OpCode::Text, None)
                );
            }
            other => panic!("{other:?}"),
        }
        let binary = [0xc2, 0x80, 0, 0, 0, 0];
        assert!(matches!(
            decode(&mut binary.clone(), &deflate),
            Ok(Status::Complete(_))
        ));
        assert_eq!(
            decode(&mut binary.clone(), &client()),
            Err(FrameError::ReservedBits(4))
        );
        // §6.1: never on a continuation or a control frame; RSV2 and RSV3 stay reserved.
        for b0 in [0xc0, 0xc9, 0xca, 0xc8, 0xe1, 0xd1, 0xa1] {
            let mut frame = [b0, 0x80, 0, 0, 0, 0];
            let err = decode(&mut frame, &deflate).unwrap_err();
            assert!(
                matches!(err, FrameError::ReservedBits(_)),
                "{b0:#x}: {err:?}"
            );
            assert_eq!(
                decode_header(&[b0], &deflate).unwrap_err(),
                err,
                "seen from the first byte alone"
            );
        }
    }

    /// One row per contract line: input bytes and the error, with its close code.
    #[test]
    fn invalid_frames_give_the_right_error_and_close_code() {
        let table: &[(&str, &[u8], FrameError, u16)] = &[
            (
                "unmasked client frame",
                &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'],
                FrameError::UnmaskedFrame,
                1002,
            ),
            (
                "RSV1 set",
                &[0xc1, 0x80, 0, 0, 0, 0],
                FrameError::ReservedBits(4),
                1002,
            ),
            (
                "RSV3 set, seen from the first byte alone",
                &[0x91],
                FrameError::ReservedBits(1),
                1002,
            ),
            (
                "opcode 3",
                &[0x83, 0x80, 0, 0, 0, 0],
                FrameError::UnknownOpcode(3),
                1002,
            ),
            (
                "opcode 0xB",
                &[0x8b, 0x80, 0, 0, 0, 0],
                FrameError::UnknownOpcode(0xb),
                1002,
            ),
            (
                "ping without FIN",
                &[0x09, 0x80, 0, 0, 0, 0],
                FrameError::FragmentedControl,
                1002,
            ),
            (
                "ping of 126 bytes",
                &[0x89, 0xfe, 0x00, 0x7e],
                FrameError::ControlTooLong(126),
                1002,
            ),
            (
                "64-bit length with the top bit",
                &[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],
                FrameError::BadLength(1 << 63),
                1002,
            ),
            (
                "length over the limit",
                &[0x82, 0xff, 0, 0, 0, 0, 0x01, 0, 0, 1],
                FrameError::MessageTooBig {
                    size: (16 << 20) + 1,
                    max: 16 << 20,
                },
                1009,
            ),
        ];
        for (name, bytes, error, code) in table {
            let mut buf = bytes.to_vec();
            assert_eq!(decode(&mut buf, &client()).as_ref(), Err(error), "{name}");
            assert_eq!(error.close_code(), *code, "{name}");
        }
    }

    fn mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(i + offset) % 4];
        }
    }

    #[test]
    fn fast_mask_matches_the_bytewise_definition() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        // Every start modulo the 32-byte boundary, so the wide path meets every lead-in length.
        let data: Vec<u8> = (0..1100).map(|i| (i * 7 + 3) as u8).collect();
        for len in (0..=64).chain([127, 128, 129, 200, 511, 512, 513, 575, 577, 1000, 1031]) {
            for start in 0..40 {
                for offset in 0..4 {
                    let (mut fast, mut slow) = (data.clone(), data.clone());
                    apply_mask(&mut fast[start..start + len], key, offset);
                    mask_bytewise(&mut slow[start..start + len], key, offset);
                    assert_eq!(fast, slow, "len {len} start {start} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn the_portable_wide_loop_matches_too_where_the_cpu_would_take_another() {
        let key = [0x01, 0x80, 0xfe, 0x5a];
        for len in [0, 1, 63, 64, 65, 127, 128, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let (mut fast, mut slow) = (data.clone(), data);
            mask_wide_portable(&mut fast, key);
            mask_bytewise(&mut slow, key, 0);
            assert_eq!(fast, slow, "len {len}");
        }
    }

    #[test]
    fn a_head_is_the_header_encode_writes() {
        assert_eq!(
            Head::new(true, OpCode::Binary, 300).as_bytes(),
            [0x82, 126, 0x01, 0x2c]
        );
        for len in [0, 125, 126, 0xffff, 0x10000] {
            let mut out = Vec::new();
            encode(&mut out, false, OpCode::Text, &vec![0; len]);
            let head = Head::new(false, OpCode::Text, len);
            assert_eq!(head.as_bytes(), &out[..out.len() - len], "len {len}");
            assert_eq!(head.as_bytes().len(), header_len(len, false));
        }
        assert_eq!(Head::compressed(OpCode::Text, 5).as_bytes(), [0xc1, 5]);
        assert_eq!(Head::NONE.as_bytes(), []);
    }

    #[test]
    fn header_display_names_the_rfc_fields() {
        let buf = MASKED_HELLO;
        let Ok(Status::Complete(h)) = decode_header(&buf, &client()) else {
            panic!()
        };
        assert_eq!(
            h.to_string(),
            "FIN=1 RSV=000 opcode=Text(0x1) MASK=1 payload_len=5 masking_key=37fa213d"
        );
    }
}
