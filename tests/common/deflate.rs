//! A permessage-deflate (RFC 7692) client for the integration tests, written by hand over a `TcpStream`.
//!
//! It does its own handshake with whatever `Sec-WebSocket-Extensions` offer a test chooses and keeps the server's
//! answer. Frames go through `wsloop::frame` (`encode_masked`, `decode`), but compression and inflation are done
//! with **flate2** on its default miniz_oxide backend, never with wsloop's codec (zlib-rs): the two sides are
//! independent deflate implementations, so a stream only one of them would accept fails a test.
//!
//! Beside it, [`scan`] reads a raw deflate stream without producing its bytes, only to see the back-references in
//! it: the longest distance (the server must stay within the window it agreed to, §7.1.2.1) and how far one reaches
//! before the start of its message (it must not, without context takeover, §7.1.1.1). Neither flate2 nor zlib-rs can
//! tell: both read any window with a 32 KiB one, so a server that ignored `server_max_window_bits` would round-trip
//! perfectly.
//!
//! What this client cannot do: miniz_oxide always compresses with a 32 KiB window. For a client window below 15 bits
//! the client restarts its compressor every `2^bits` input bytes (a sync flush ends each piece on a byte boundary,
//! and the next piece goes on in the same stream with nothing to refer back to), so its references never reach
//! farther than the window; it then never keeps its context between messages, which the RFC allows.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

use flate2::{
    Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status as ZStatus,
};
use wsloop::frame::{self, Limits, OpCode};
use wsloop::Status;

use super::{connect_raw, read_response, request};

/// RFC 7692 §7.2.1: the tail of a sync flush, removed by the sender and put back by the receiver.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// RSV1 in the first byte of a frame: a compressed message (§6).
pub const RSV1: u8 = 0x40;

/// What the server's answer agreed to, read from the header by this file's own small parser (not offer.rs's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: u8,
    pub client_max_window_bits: u8,
}

impl Agreed {
    /// Reads an answer: exactly one `permessage-deflate` element, each parameter at most once with a valid value.
    pub fn parse(answer: &str) -> Agreed {
        let mut parts = answer.split(';').map(str::trim);
        assert_eq!(
            parts.next(),
            Some("permessage-deflate"),
            "answer {answer:?}"
        );
        assert!(!answer.contains(','), "one extension in {answer:?}");
        let mut agreed = Agreed {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        };
        let mut seen = Vec::new();
        for part in parts {
            let (name, value) = match part.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim())),
                None => (part, None),
            };
            assert!(!seen.contains(&name), "{name} twice in {answer:?}");
            seen.push(name);
            let bits = || -> u8 {
                let bits: u8 = value
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} needs a value in {answer:?}"));
                assert!((8..=15).contains(&bits), "{answer:?}");
                bits
            };
            match name {
                "server_no_context_takeover" if value.is_none() => {
                    agreed.server_no_context_takeover = true
                }
                "client_no_context_takeover" if value.is_none() => {
                    agreed.client_no_context_takeover = true
                }
                "server_max_window_bits" => agreed.server_max_window_bits = bits(),
                "client_max_window_bits" => agreed.client_max_window_bits = bits(),
                _ => panic!("unexpected parameter {part:?} in {answer:?}"),
            }
        }
        agreed
    }
}

/// A handshake with these `Sec-WebSocket-Extensions` header values (one header line each): the stream, the status,
/// and the answer's `Sec-WebSocket-Extensions` value if it had one (it must not have two).
pub fn handshake(addr: SocketAddr, offers: &[&str]) -> (TcpStream, u16, Option<String>) {
    let mut stream = connect_raw(addr);
    let base = request(addr);
    let mut req = base.strip_suffix("\r\n").unwrap().to_string();
    for offer in offers {
        req.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut stream);
    let answers: Vec<&str> = head
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim())
        })
        .collect();
    assert!(answers.len() <= 1, "two extension headers in {head}");
    (stream, status, answers.first().map(|a| a.to_string()))
}

/// One frame as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    /// RSV1-3 as the low three bits (`0b100`: RSV1).
    pub rsv: u8,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

/// A data message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub opcode: OpCode,
    /// RSV1 was set: the payload came compressed.
    pub compressed: bool,
    /// The payload as it came on the wire (compressed or not).
    pub wire: Vec<u8>,
    /// The message itself (inflated if it was compressed).
    pub data: Vec<u8>,
}

/// What the server sent next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Message(Received),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>),
}

/// The hand-written client.
pub struct Peer {
    pub stream: TcpStream,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub answer: Option<String>,
    pub agreed: Option<Agreed>,
    /// Keep the compressor from one message to the next (client context takeover). Set by a test, and only used
    /// with a 15-bit client window. A test may set it against the answer's `client_no_context_takeover` on purpose.
    pub keep_context: bool,
    compressor: Compress,
    decompressor: Decompress,
    read_buf: Vec<u8>,
    masks: u32,
}

impl Peer {
    /// Connects with one `Sec-WebSocket-Extensions` header (or none) and expects 101.
    pub fn connect(addr: SocketAddr, offer: Option<&str>) -> Peer {
        Peer::connect_with(addr, offer.as_slice())
    }

    /// Connects with these `Sec-WebSocket-Extensions` headers and expects 101.
    pub fn connect_with(addr: SocketAddr, offers: &[&str]) -> Peer {
        let (stream, status, answer) = handshake(addr, offers);
        assert_eq!(status, 101, "offers {offers:?}");
        let agreed = answer.as_deref().map(Agreed::parse);
        Peer {
            stream,
            answer,
            agreed,
            keep_context: false,
            compressor: Compress::new(Compression::new(6), false),
            decompressor: Decompress::new(false),
            read_buf: Vec::new(),
            masks: 0x5eed_0001,
        }
    }

    /// The window the client may compress with: 15 unless the answer limited it.
    pub fn client_window(&self) -> u8 {
        self.agreed.map_or(15, |a| a.client_max_window_bits)
    }

    /// `payload` compressed as the client sends it: sync flush, tail removed (§7.2.1).
    pub fn compress(&mut self, payload: &[u8]) -> Vec<u8> {
        let bits = self.client_window();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        if bits >= 15 {
            if !self.keep_context {
                self.compressor.reset();
            }
            deflate_sync(&mut self.compressor, payload, &mut out);
        } else {
            // See the module doc: restarting every 2^bits bytes keeps every reference inside the window.
            let mut pieces = payload.chunks(1 << bits).peekable();
            if pieces.peek().is_none() {
                self.compressor.reset();
                deflate_sync(&mut self.compressor, &[], &mut out);
            }
            for piece in pieces {
                self.compressor.reset();
                deflate_sync(&mut self.compressor, piece, &mut out);
            }
        }
        assert!(out.ends_with(&TAIL), "a sync flush ends with 00 00 ff ff");
        out.truncate(out.len() - TAIL.len());
        out
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.masks = self
            .masks
            .wrapping_mul(0x9e37_79b9)
            .wrapping_add(0x7f4a_7c15);
        self.masks.to_be_bytes()
    }

    /// One masked frame, `rsv` (0x40 for RSV1, 0x20, 0x10) or-ed into its first byte.
    pub fn frame(&mut self, fin: bool, opcode: OpCode, rsv: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mask = self.next_mask();
        frame::encode_masked(&mut out, fin, opcode, payload, mask);
        out[0] |= rsv;
        out
    }

    /// The frames of one message whose wire payload is `wire` (already compressed if `compressed`): cut into pieces
    /// of the sizes in `split` (taken in turn, again and again; empty: one frame), RSV1 on the first frame only.
    pub fn frames(
        &mut self,
        opcode: OpCode,
        wire: &[u8],
        compressed: bool,
        split: &[usize],
    ) -> Vec<Vec<u8>> {
        let mut pieces = Vec::new();
        let mut rest = wire;
        let mut sizes = split.iter().copied().cycle();
        while !split.is_empty() && !rest.is_empty() {
            let n = sizes.next().unwrap().clamp(1, rest.len());
            pieces.push(&rest[..n]);
            rest = &rest[n..];
        }
        if pieces.is_empty() {
            pieces.push(rest);
        }
        let last = pieces.len() - 1;
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let (opcode, rsv) = match i {
                    0 => (opcode, if compressed { RSV1 } else { 0 }),
                    _ => (OpCode::Continuation, 0),
                };
                self.frame(i == last, opcode, rsv, piece)
            })
            .collect()
    }

    /// Sends one message in one frame, compressed (RSV1) or not.
    pub fn send(&mut self, opcode: OpCode, payload: &[u8], compressed: bool) {
        let wire = if compressed {
            self.compress(payload)
        } else {
            payload.to_vec()
        };
        for frame in self.frames(opcode, &wire, compressed, &[]) {
            self.stream.write_all(&frame).expect("send a frame");
        }
    }

    /// Writes bytes as they are.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// The next frame from the server.
    pub fn read_frame(&mut self) -> io::Result<RawFrame> {
        // A client-side decoder: server frames are unmasked (checked below), RSV1 allowed so that this client can
        // see and report it itself on a connection without the extension.
        let limits = Limits {
            max_payload: 1 << 40,
            require_mask: false,
            deflate: true,
        };
        loop {
            if let Ok(Status::Complete(header)) = frame::decode_header(&self.read_buf, &limits) {
                assert_eq!(header.masking_key, None, "server frames must not be masked");
            }
            match frame::decode(&mut self.read_buf, &limits) {
                Ok(Status::Complete((frame, used))) => {
                    let raw = RawFrame {
                        fin: frame.fin,
                        rsv: frame.rsv,
                        opcode: frame.opcode,
                        payload: frame.payload.to_vec(),
                    };
                    self.read_buf.drain(..used);
                    return Ok(raw);
                }
                Ok(Status::Partial) => {}
                Err(e) => panic!("the server sent a frame the client cannot decode: {e}"),
            }
            let mut chunk = [0u8; 64 << 10];
            match self.stream.read(&mut chunk)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.read_buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// What the server sent next: a whole data message (inflated if RSV1 was set), a ping, a pong or a close.
    pub fn read(&mut self) -> Incoming {
        let mut message: Option<(OpCode, bool, Vec<u8>)> = None;
        loop {
            let frame = self.read_frame().expect("a frame from the server");
            assert!(
                frame.rsv == 0 || frame.rsv == 0b100,
                "RSV2/RSV3 from the server: {frame:?}"
            );
            if frame.rsv != 0 {
                assert!(
                    self.agreed.is_some(),
                    "RSV1 on a connection without permessage-deflate"
                );
                assert!(
                    matches!(frame.opcode, OpCode::Text | OpCode::Binary),
                    "RSV1 on a {:?} frame",
                    frame.opcode
                );
            }
            match frame.opcode {
                OpCode::Ping => return Incoming::Ping(frame.payload),
                OpCode::Pong => return Incoming::Pong(frame.payload),
                OpCode::Close => {
                    let code = frame
                        .payload
                        .get(..2)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]));
                    return Incoming::Close(code);
                }
                OpCode::Text | OpCode::Binary => {
                    assert!(message.is_none(), "a new message inside another");
                    message = Some((frame.opcode, frame.rsv != 0, frame.payload));
                }
                OpCode::Continuation => {
                    let (_, _, wire) = message
                        .as_mut()
                        .expect("a continuation continues a message");
                    wire.extend_from_slice(&frame.payload);
                }
            }
            if frame.fin {
                let (opcode, compressed, wire) = message.take().unwrap();
                let data = if compressed {
                    self.inflate(&wire)
                        .unwrap_or_else(|e| panic!("the server's message does not inflate: {e}"))
                } else {
                    wire.clone()
                };
                if opcode == OpCode::Text {
                    assert!(
                        std::str::from_utf8(&data).is_ok(),
                        "the server sent text that is not UTF-8"
                    );
                }
                return Incoming::Message(Received {
                    opcode,
                    compressed,
                    wire,
                    data,
                });
            }
        }
    }

    /// The next data message, past pongs (and the pings an idle timeout might send); a close fails the test.
    pub fn message(&mut self) -> Received {
        loop {
            match self.read() {
                Incoming::Message(message) => return message,
                Incoming::Ping(_) | Incoming::Pong(_) => continue,
                Incoming::Close(code) => panic!("expected a message, got close {code:?}"),
            }
        }
    }

    /// Reads until the server's close frame; its code. Data before it is skipped.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            let frame = self.read_frame().expect("a close frame");
            if frame.opcode == OpCode::Close {
                return frame
                    .payload
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]));
            }
        }
    }

    /// Inflates one compressed message from the server (tail put back), keeping the inflater's window for the
    /// next one unless the server starts each message afresh (`server_no_context_takeover`): then it starts
    /// afresh too, so a reference to an earlier message fails here.
    pub fn inflate(&mut self, wire: &[u8]) -> Result<Vec<u8>, String> {
        let takeover = self.agreed.is_some_and(|a| !a.server_no_context_takeover);
        if !takeover {
            self.decompressor.reset(false);
        }
        inflate_sync(&mut self.decompressor, wire)
    }
}

/// Compresses `input` into `out` with a sync flush, however many calls it takes.
pub fn deflate_sync(compressor: &mut Compress, mut input: &[u8], out: &mut Vec<u8>) {
    loop {
        out.reserve(input.len() / 2 + 1024);
        let before = compressor.total_in();
        compressor
            .compress_vec(input, out, FlushCompress::Sync)
            .expect("flate2 compresses");
        input = &input[(compressor.total_in() - before) as usize..];
        // Done once the input is in and the flush left room to spare (zlib's rule for a sync flush).
        if input.is_empty() && out.len() < out.capacity() {
            return;
        }
    }
}

/// Inflates one message (`wire` and the tail) with `decompressor`, as it stands.
pub fn inflate_sync(decompressor: &mut Decompress, wire: &[u8]) -> Result<Vec<u8>, String> {
    let mut input = wire.to_vec();
    input.extend_from_slice(&TAIL);
    let mut rest = &input[..];
    let mut out = Vec::with_capacity(wire.len() * 4 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 << 10));
        }
        let (was_in, was_out) = (decompressor.total_in(), decompressor.total_out());
        let status = decompressor
            .decompress_vec(rest, &mut out, FlushDecompress::Sync)
            .map_err(|e| format!("flate2: {e}"))?;
        let used = (decompressor.total_in() - was_in) as usize;
        let made = (decompressor.total_out() - was_out) as usize;
        rest = &rest[used..];
        if status == ZStatus::StreamEnd {
            // §7.2.3.4: a final block ends the stream; what follows starts a new one.
            decompressor.reset(false);
            if rest.is_empty() {
                return Ok(out);
            }
            continue;
        }
        if rest.is_empty() && out.len() < out.capacity() {
            return Ok(out);
        }
        if used == 0 && made == 0 && out.len() < out.capacity() {
            return Err(format!(
                "inflate made no progress with {} bytes left",
                rest.len()
            ));
        }
    }
}

/// What [`scan`] saw in one compressed message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Bytes the message inflates to.
    pub len: usize,
    /// Back-references (length/distance pairs).
    pub matches: usize,
    /// The longest distance of any of them.
    pub longest: usize,
    /// How far the farthest one reaches before the start of its message (0: none does).
    pub before_start: usize,
}

/// Reads the raw deflate stream of one message (its tail put back) block by block, as RFC 1951 §3.2 describes,
/// counting the bytes it inflates to and measuring every back-reference. An independent reader written only for
/// this, after Mark Adler's puff.c: it checks the code structure too and fails on anything malformed.
pub fn scan(wire: &[u8]) -> Result<Scan, String> {
    let mut data = wire.to_vec();
    data.extend_from_slice(&TAIL);
    let mut bits = Bits { data: &data, at: 0 };
    let mut scan = Scan::default();
    while bits.at < data.len() * 8 {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => {
                bits.at = bits.at.div_ceil(8) * 8;
                let len = bits.take(16)?;
                let nlen = bits.take(16)?;
                if len != !nlen & 0xffff {
                    return Err(format!("stored block length {len} does not match {nlen}"));
                }
                bits.at += len as usize * 8;
                if bits.at > data.len() * 8 {
                    return Err("stored block past the end".into());
                }
                scan.len += len as usize;
            }
            1 => {
                let (lit, dist) = fixed();
                codes(&mut bits, &lit, &dist, &mut scan)?;
            }
            2 => {
                let (lit, dist) = dynamic(&mut bits)?;
                codes(&mut bits, &lit, &dist, &mut scan)?;
            }
            _ => return Err("block type 3".into()),
        }
        if last {
            // A final block ends the stream (§7.2.3.4 allows it); a new one would start at the next byte.
            bits.at = bits.at.div_ceil(8) * 8;
        }
    }
    Ok(scan)
}

/// Bits read least significant first (RFC 1951 §3.1.1).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: u32) -> Result<u32, String> {
        let mut value = 0;
        for i in 0..n {
            let byte = *self
                .data
                .get(self.at / 8)
                .ok_or("the stream ends in the middle of a block")?;
            value |= u32::from((byte >> (self.at % 8)) & 1) << i;
            self.at += 1;
        }
        Ok(value)
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Huffman {
    count: [u16; 16],
    symbol: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Result<Huffman, String> {
        let mut count = [0u16; 16];
        for &len in lengths {
            count[usize::from(len)] += 1;
        }
        let mut left: i32 = 1;
        for &n in &count[1..] {
            left = (left << 1) - i32::from(n);
            if left < 0 {
                return Err("over-subscribed Huffman code".into());
            }
        }
        let mut offset = [0u16; 16];
        for len in 1..15 {
            offset[len + 1] = offset[len] + count[len];
        }
        let mut symbol = vec![0; lengths.len()];
        for (sym, &len) in lengths.iter().enumerate() {
            if len != 0 {
                symbol[usize::from(offset[usize::from(len)])] = sym as u16;
                offset[usize::from(len)] += 1;
            }
        }
        Ok(Huffman { count, symbol })
    }

    fn decode(&self, bits: &mut Bits<'_>) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.take(1)? as i32;
            let count = i32::from(self.count[len]);
            if code - count < first {
                return Ok(self.symbol[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("no such Huffman code".into())
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// RFC 1951 §3.2.6: the fixed codes.
fn fixed() -> (Huffman, Huffman) {
    let mut lengths = [0u8; 288];
    for (sym, len) in lengths.iter_mut().enumerate() {
        *len = match sym {
            0..=143 => 8,
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    let lit = Huffman::new(&lengths).unwrap();
    let dist = Huffman::new(&[5; 30]).unwrap();
    (lit, dist)
}

/// RFC 1951 §3.2.7: the codes a dynamic block describes in its header.
fn dynamic(bits: &mut Bits<'_>) -> Result<(Huffman, Huffman), String> {
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let nlen = bits.take(5)? as usize + 257;
    let ndist = bits.take(5)? as usize + 1;
    let ncode = bits.take(4)? as usize + 4;
    if nlen > 286 || ndist > 30 {
        return Err(format!("{nlen} length codes, {ndist} distance codes"));
    }
    let mut code_lengths = [0u8; 19];
    for &at in &ORDER[..ncode] {
        code_lengths[at] = bits.take(3)? as u8;
    }
    let lencode = Huffman::new(&code_lengths)?;
    let mut lengths = vec![0u8; nlen + ndist];
    let mut i = 0;
    while i < lengths.len() {
        let sym = lencode.decode(bits)?;
        let (value, repeat) = match sym {
            0..=15 => (sym as u8, 1),
            16 => {
                let previous = *lengths[..i].last().ok_or("repeat with nothing before")?;
                (previous, 3 + bits.take(2)? as usize)
            }
            17 => (0, 3 + bits.take(3)? as usize),
            _ => (0, 11 + bits.take(7)? as usize),
        };
        if i + repeat > lengths.len() {
            return Err("code lengths run past their count".into());
        }
        lengths[i..i + repeat].fill(value);
        i += repeat;
    }
    if lengths[256] == 0 {
        return Err("no end-of-block code".into());
    }
    Ok((
        Huffman::new(&lengths[..nlen])?,
        Huffman::new(&lengths[nlen..])?,
    ))
}

/// The literals and length/distance pairs of one block, up to its end-of-block code.
fn codes(
    bits: &mut Bits<'_>,
    lit: &Huffman,
    dist: &Huffman,
    scan: &mut Scan,
) -> Result<(), String> {
    loop {
        let sym = usize::from(lit.decode(bits)?);
        match sym {
            0..=255 => scan.len += 1,
            256 => return Ok(()),
            _ => {
                let at = sym - 257;
                if at >= 29 {
                    return Err(format!("length symbol {sym}"));
                }
                let len =
                    usize::from(LENGTH_BASE[at]) + bits.take(u32::from(LENGTH_EXTRA[at]))? as usize;
                let dsym = usize::from(dist.decode(bits)?);
                if dsym >= 30 {
                    return Err(format!("distance symbol {dsym}"));
                }
                let distance =
                    usize::from(DIST_BASE[dsym]) + bits.take(u32::from(DIST_EXTRA[dsym]))? as usize;
                scan.matches += 1;
                scan.longest = scan.longest.max(distance);
                scan.before_start = scan.before_start.max(distance.saturating_sub(scan.len));
                scan.len += len;
            }
        }
    }
}

/// xorshift64 (Marsaglia 2003).
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// What chat messages say: ASCII and two-, three- and four-byte UTF-8, so that characters fall across every
/// boundary (frames, the server's 16 KiB inflate pieces).
const WORDS: [&str; 10] = [
    "hello",
    "how are you?",
    "naïve café",
    "日本語のテキスト",
    "party 🎉🎉",
    "price: 12 €",
    "ok",
    "see you tomorrow",
    "Grüße aus Köln",
    "ça va très bien",
];

/// Chat-like JSON of exactly `len` bytes, similar from one seed to the next (compressible, and more so with
/// context takeover), valid UTF-8 with multi-byte characters.
pub fn chat_text(len: usize, seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut text = String::with_capacity(len + 64);
    let mut n = 0u64;
    while text.len() < len {
        let r = xorshift(&mut state) as usize;
        text.push_str(&format!(
            r#"{{"id":{},"u":"user{}","t":"{}"}},"#,
            seed * 1000 + n,
            r % 7,
            WORDS[(r >> 8) % WORDS.len()]
        ));
        n += 1;
    }
    let mut cut = len;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    while text.len() < len {
        text.push(' ');
    }
    text
}

/// Binary of exactly `len` bytes with the same repetitions as [`chat_text`] (so as compressible), mostly bytes
/// over 0x7f: not text.
pub fn chat_binary(len: usize, seed: u64) -> Vec<u8> {
    chat_text(len, seed).bytes().map(|b| b ^ 0xa5).collect()
}

/// `len` bytes that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len).map(|_| xorshift(&mut state) as u8).collect()
}
