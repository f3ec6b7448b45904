//! One nonblocking WebSocket client connection, as lean as the load generator needs it.
//!
//! It connects, sends a fixed upgrade request, checks the `101` answer, then sends pre-encoded
//! masked frames and parses the server's unmasked ones. It answers pings, treats a close or an
//! unexpected frame as an error, and never copies a received payload: a message is handed to the
//! caller as a slice of the read buffer. Buffers start small and grow only as traffic demands, so
//! 10,000 idle connections cost the load generator little memory.
//!
//! permessage-deflate (RFC 7692), when the caller offers it: the answer is read from the `101`, a
//! message with RSV1 set is inflated before it is handed out, and [`deflate_message`] compresses a
//! payload once for frames the caller then sends with RSV1 ([`encode_masked_ext`]). Messages the
//! server compressed without context takeover are independent, so they go through one inflater
//! shared by every connection, and a message whose compressed bytes were inflated before (the last
//! few thousand are kept) is handed the same plain bytes without inflating again (identical input,
//! no context: identical output; the bytes are compared in full). A broadcast compressed once is
//! so inflated once, not once per receiver, which keeps the generator's CPU far below the
//! server's. With server context takeover each connection inflates every message with its own.
//!
//! wss://, when the caller gives a [`TlsClient`]: the connection's bytes go through a rustls
//! [`ClientConnection`], a session that does no I/O of its own. What the socket has is handed to it
//! (`read_tls`, until the socket says `WouldBlock`: the poll is edge-triggered), it decrypts
//! (`process_new_packets`), and its plaintext lands in the same read buffer a plain connection reads
//! into; what is sent is encrypted (`writer`) and its records written as far as the socket takes
//! them (`write_tls`), the rest on the next writable event. A plain connection has no session and
//! takes the same path as before, one branch on the way.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use mio::net::TcpStream;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// RFC 6455 §1.3's sample key and the accept value a server must derive from it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
const MAX_RESPONSE_HEAD: usize = 8192;
const INITIAL_BUF: usize = 4096;
const MAX_READ_CHUNK: usize = 256 * 1024;

/// Opcodes the client deals in (RFC 6455 §5.2).
pub const OP_TEXT: u8 = 0x1;
/// Binary data frame.
pub const OP_BINARY: u8 = 0x2;
/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// What the browser offers: permessage-deflate, letting the server choose the client's window.
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";
/// RFC 7692 §7.2.1: the tail of a sync flush, dropped by the sender and put back by the receiver.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The most an inflated message may grow to (a bomb from a broken server fails the run instead).
const MAX_INFLATED: usize = 64 << 20;

/// What the server's `Sec-WebSocket-Extensions` answer agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The server compresses every message afresh.
    pub server_no_context_takeover: bool,
    /// We must compress every message afresh (we always do).
    pub client_no_context_takeover: bool,
    /// The server's window (15 unless the answer says).
    pub server_max_window_bits: u8,
    /// The window our compressed messages may use (15 unless the answer says).
    pub client_max_window_bits: u8,
}

/// Reads a `Sec-WebSocket-Extensions` answer: exactly one permessage-deflate with known parameters.
pub fn parse_answer(value: &str) -> Result<Agreed, String> {
    let mut agreed = Agreed {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    let mut parts = value.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
        || value.contains(',')
    {
        return Err(format!("unexpected extensions answer {value:?}"));
    }
    for param in parts {
        let (name, bits) = match param.split_once('=') {
            Some((name, v)) => (name.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let bits = || -> Result<u8, String> {
            bits.and_then(|b| b.parse().ok())
                .filter(|b| (8..=15).contains(b))
                .ok_or_else(|| format!("bad {name} in {value:?}"))
        };
        match name {
            "server_no_context_takeover" => agreed.server_no_context_takeover = true,
            "client_no_context_takeover" => agreed.client_no_context_takeover = true,
            "server_max_window_bits" => agreed.server_max_window_bits = bits()?,
            "client_max_window_bits" => agreed.client_max_window_bits = bits()?,
            _ => return Err(format!("unknown parameter {name:?} in {value:?}")),
        }
    }
    Ok(agreed)
}

/// `payload` compressed as one message without context (RFC 7692 §7.2.1): raw deflate with a sync
/// flush, its tail dropped, with a window of `window_bits` (9 to 15: an answer of 8 is compressed
/// with 9, which zlib cannot go below) at zlib `level`.
pub fn deflate_message(payload: &[u8], window_bits: u8, level: u32) -> Vec<u8> {
    let mut compress =
        Compress::new_with_window_bits(Compression::new(level), false, window_bits.clamp(9, 15));
    let mut out = Vec::with_capacity(payload.len() + 64);
    let mut rest = payload;
    loop {
        let before = compress.total_in();
        compress
            .compress_vec(rest, &mut out, FlushCompress::Sync)
            .expect("raw deflate of a buffer");
        rest = &rest[(compress.total_in() - before) as usize..];
        if rest.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    out
}

/// The inflater every connection without server context takeover shares, and the messages it
/// inflated: (compressed, plain) by a quick key of the compressed bytes. The load generator is one
/// thread.
struct Shared {
    inflater: Decompress,
    seen: HashMap<[u64; 3], Vec<Inflated>>,
    kept: usize,
}

/// A message inflated before: its compressed bytes and its plain ones.
type Inflated = (Vec<u8>, Vec<u8>);

/// Inflated messages kept in [`Shared`] before it starts afresh.
const MAX_KEPT: usize = 4096;

/// A quick key for compressed bytes: their length and their first and last 8 bytes (the bytes
/// themselves are compared in full before a kept message is handed out).
fn quick_key(bytes: &[u8]) -> [u64; 3] {
    let word = |at: usize| {
        let mut w = [0u8; 8];
        let part = &bytes[at.min(bytes.len())..(at + 8).min(bytes.len())];
        w[..part.len()].copy_from_slice(part);
        u64::from_le_bytes(w)
    };
    [
        bytes.len() as u64,
        word(0),
        word(bytes.len().saturating_sub(8)),
    ]
}

thread_local! {
    static SHARED: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Inflates one whole compressed message (its tail put back) into `out`, replacing what it held.
fn inflate_into(inflater: &mut Decompress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    for piece in [input, &TAIL] {
        let mut rest = piece;
        loop {
            if out.capacity() - out.len() < 1024 {
                if out.len() >= MAX_INFLATED {
                    return Err(protocol("an inflated message above 64 MiB"));
                }
                out.reserve(out.capacity().max(4096));
            }
            let before = inflater.total_in();
            let status = inflater
                .decompress_vec(rest, out, FlushDecompress::Sync)
                .map_err(|e| protocol(&format!("bad compressed message: {e}")))?;
            rest = &rest[(inflater.total_in() - before) as usize..];
            if status == flate2::Status::StreamEnd {
                // A final block ends the stream (§7.2.3.3); what follows starts a new one.
                inflater.reset(false);
                continue;
            }
            if rest.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
    }
    Ok(())
}

/// What one connection has received: all its data messages, those that came compressed, and
/// their payload bytes on the wire and once inflated.
#[derive(Debug, Default, Clone, Copy)]
pub struct Received {
    /// Data messages.
    pub messages: u64,
    /// Of them, compressed (RSV1).
    pub compressed: u64,
    /// Their payload bytes as they came.
    pub wire_bytes: u64,
    /// Their payload bytes once inflated.
    pub plain_bytes: u64,
}

impl std::ops::AddAssign for Received {
    fn add_assign(&mut self, other: Received) {
        self.messages += other.messages;
        self.compressed += other.compressed;
        self.wire_bytes += other.wire_bytes;
        self.plain_bytes += other.plain_bytes;
    }
}

/// The TLS side of `wss://` connections: one configuration shared by all of them, trusting only the
/// certificates of one PEM file (a server certificate made for the run), and verifying the server's
/// certificate against the IP address the connection goes to (its `subjectAltName` must hold it).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Trusts the certificates in the PEM file `ca` (a self-signed server certificate must be an end
    /// entity: `basicConstraints` absent or `CA:FALSE`). With `resume`, sessions are resumed from
    /// tickets as rustls does by default; without it every connection makes a full handshake.
    pub fn from_ca_file(ca: &str, resume: bool) -> Result<TlsClient, String> {
        let pem = std::fs::read(ca).map_err(|e| format!("{ca}: cannot read it: {e}"))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{ca}: not valid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("{ca}: certificate refused: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("{ca}: no CERTIFICATE block in it"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resume {
            config.resumption = Resumption::disabled();
        }
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    fn session(&self, addr: SocketAddr) -> io::Result<Box<ClientConnection>> {
        let name = ServerName::IpAddress(addr.ip().into());
        let mut session =
            ClientConnection::new(self.config.clone(), name).map_err(io::Error::other)?;
        // The load generator sends what a run decides and never more than a few messages per
        // connection at once: no limit, so that a write is never taken in part.
        session.set_buffer_limit(None);
        Ok(Box::new(session))
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, waiting for `101`.
    Handshaking,
    /// Frames flow.
    Open,
}

/// A client connection and its buffers.
pub struct Client {
    /// The socket, registered with the caller's poll.
    pub stream: TcpStream,
    /// Connect, handshake or open.
    pub phase: Phase,
    /// When the message now awaited was sent (echo latency).
    pub sent_at: Instant,
    /// Messages received since the caller last reset it (broadcast rounds).
    pub received: usize,
    /// The caller's own mark for this connection (the load generator's pool: its index).
    pub tag: usize,
    /// permessage-deflate as the server answered the offer (`None`: not offered, or declined).
    pub deflate: Option<Agreed>,
    /// What this connection has received so far.
    pub stats: Received,
    /// Our close frame has been sent, and the server's answering close has arrived (see
    /// [`Client::send_close`]): the connection is done.
    pub closed: bool,
    /// Our close frame has been sent: a close from the server is its answer, not an error.
    close_sent: bool,
    /// The TLS session of a `wss://` connection.
    tls: Option<Box<ClientConnection>>,
    offered: bool,
    /// This connection's own inflater, when the server keeps its context, made on first use.
    inflater: Option<Box<Decompress>>,
    /// The inflated message being handed out.
    plain: Vec<u8>,
    request: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    out_pos: usize,
}

impl Client {
    /// Starts a nonblocking connect to `addr`.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Client::connect_offering(addr, None)
    }

    /// [`Client::connect_offering`], through TLS when `tls` is given (`wss://`).
    pub fn connect_with(
        addr: SocketAddr,
        extensions: Option<&str>,
        tls: Option<&TlsClient>,
    ) -> io::Result<Client> {
        let mut client = Client::connect_offering(addr, extensions)?;
        if let Some(tls) = tls {
            client.tls = Some(tls.session(addr)?);
        }
        Ok(client)
    }

    /// Starts a nonblocking connect to `addr` whose upgrade request offers `extensions` (the value
    /// of `Sec-WebSocket-Extensions`, e.g. [`DEFLATE_OFFER`]).
    pub fn connect_offering(addr: SocketAddr, extensions: Option<&str>) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        let offer = extensions.map_or(String::new(), |e| {
            format!("Sec-WebSocket-Extensions: {e}\r\n")
        });
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        Ok(Client {
            stream,
            phase: Phase::Connecting,
            sent_at: Instant::now(),
            received: 0,
            tag: 0,
            deflate: None,
            stats: Received::default(),
            closed: false,
            close_sent: false,
            tls: None,
            offered: extensions.is_some(),
            inflater: None,
            plain: Vec::new(),
            request: request.into_bytes(),
            buf: Vec::new(),
            start: 0,
            end: 0,
            out: Vec::new(),
            out_pos: 0,
        })
    }

    /// Handles a writable event: finishes the connect (and sends the upgrade request), or
    /// flushes queued bytes.
    pub fn on_writable(&mut self) -> io::Result<()> {
        if self.phase == Phase::Connecting {
            if let Some(e) = self.stream.take_error()? {
                return Err(e);
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                // Not connected yet: the event was early. Wait for the next one.
                Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
            let _ = self.stream.set_nodelay(true);
            self.phase = Phase::Handshaking;
            self.buf = vec![0; INITIAL_BUF];
            let request = std::mem::take(&mut self.request);
            // With TLS the session keeps the request until its handshake is done, then sends it.
            return self.send(&request);
        }
        self.flush()
    }

    /// Sends `bytes` now, keeping whatever the socket does not take for the next writable event.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.writer().write_all(bytes)?;
            return self.flush_tls();
        }
        if self.out_pos < self.out.len() {
            self.out.extend_from_slice(bytes);
            return self.flush();
        }
        let written = match self.stream.write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written < bytes.len() {
            self.out.clear();
            self.out.extend_from_slice(&bytes[written..]);
            self.out_pos = 0;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.tls.is_some() {
            return self.flush_tls();
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Ok(())
    }

    /// Writes the session's records until none are left or the socket is full (the rest waits for
    /// the next writable event).
    fn flush_tls(&mut self) -> io::Result<()> {
        let Client { tls, stream, .. } = self;
        let tls = tls.as_mut().expect("a TLS connection");
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Handles a readable event: reads what the socket holds, finishes the handshake if due, and
    /// calls `on_message(client, opcode, payload)` for each complete data message; an error
    /// it returns ends the read.
    pub fn on_readable(
        &mut self,
        mut on_message: impl FnMut(&mut Client, u8, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.phase == Phase::Connecting {
            return Ok(());
        }
        loop {
            let drained = self.fill()?;
            if self.phase == Phase::Handshaking && !self.finish_handshake()? {
                if drained {
                    return Ok(());
                }
                continue;
            }
            self.parse_frames(&mut on_message)?;
            if drained || self.closed {
                return Ok(());
            }
        }
    }

    /// Reads once into the buffer's free space; returns true when the socket is drained.
    ///
    /// A read that returns less than was asked for means the socket is empty (epoll(7) allows this
    /// for stream sockets even when edge-triggered), so we skip the extra read that would only say
    /// `WouldBlock`: the load generator must spend less CPU than the server it measures.
    fn fill(&mut self) -> io::Result<bool> {
        self.make_room();
        if self.tls.is_some() {
            return self.fill_tls();
        }
        let want = self.buf.len() - self.end;
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "server closed the connection",
            )),
            Ok(n) => {
                self.end += n;
                // A full read hints at more traffic than the buffer holds: let it grow.
                if n == want && self.buf.len() < MAX_READ_CHUNK {
                    let grown = self.buf.len() * 2;
                    self.buf.resize(grown, 0);
                }
                Ok(n < want)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(true),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The buffer's free space at its end, never empty: what was handed out is dropped from the
    /// front, and a full buffer grows.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < self.buf.len() / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).max(INITIAL_BUF);
            self.buf.resize(grown, 0);
        }
    }

    /// [`Client::fill`] through the TLS session: plaintext the session holds already goes into the
    /// buffer first (returning false: there may be more); only when it holds none is the socket read,
    /// the records decrypted and the session's own answers (the handshake's, and the request it kept
    /// meanwhile) written. Returns true once the socket says `WouldBlock`, the one sure sign on an
    /// edge-triggered poll that it is empty (the session reads into buffers of its own sizing, so a
    /// short read proves nothing here).
    fn fill_tls(&mut self) -> io::Result<bool> {
        let Client {
            tls,
            stream,
            buf,
            end,
            ..
        } = self;
        let tls = tls.as_mut().expect("a TLS connection");
        loop {
            let want = buf.len() - *end;
            match tls.reader().read(&mut buf[*end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "server ended the TLS session",
                    ))
                }
                Ok(n) => {
                    *end += n;
                    if n == want && buf.len() < MAX_READ_CHUNK {
                        let grown = buf.len() * 2;
                        buf.resize(grown, 0);
                    }
                    return Ok(false);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            match tls.read_tls(stream) {
                Ok(0) => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
            if tls.wants_write() {
                self.flush_tls()?;
                return Ok(false);
            }
        }
    }

    /// Looks for the end of the `101` response; returns true once the connection is open.
    fn finish_handshake(&mut self) -> io::Result<bool> {
        let head = &self.buf[self.start..self.end];
        let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if head.len() > MAX_RESPONSE_HEAD {
                return Err(protocol("response head too long"));
            }
            return Ok(false);
        };
        let text = String::from_utf8_lossy(&head[..end]);
        let status = text.lines().next().unwrap_or("").to_string();
        if !status.starts_with("HTTP/1.1 101") {
            return Err(protocol(&format!("upgrade refused: {status:?}")));
        }
        if !text.contains(ACCEPT) {
            return Err(protocol("wrong Sec-WebSocket-Accept"));
        }
        for line in text.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("sec-websocket-extensions") {
                if !self.offered || self.deflate.is_some() {
                    return Err(protocol(&format!("extensions not offered: {line:?}")));
                }
                self.deflate = Some(parse_answer(value.trim()).map_err(|e| protocol(&e))?);
            }
        }
        self.start += end + 4;
        self.phase = Phase::Open;
        Ok(true)
    }

    fn parse_frames(
        &mut self,
        on_message: &mut impl FnMut(&mut Client, u8, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        loop {
            let avail = &self.buf[self.start..self.end];
            let Some((fin, rsv, opcode, header, len)) = parse_header(avail)? else {
                return Ok(());
            };
            let total = header + len;
            if avail.len() < total {
                if total > self.buf.len() {
                    // Make room for the whole frame so that the next reads can complete it.
                    let mut grown = vec![0; total.next_power_of_two()];
                    grown[..avail.len()].copy_from_slice(avail);
                    self.end = avail.len();
                    self.start = 0;
                    self.buf = grown;
                }
                return Ok(());
            }
            let (from, to) = (self.start + header, self.start + total);
            self.start += total;
            let compressed = rsv == RSV1 && matches!(opcode, OP_TEXT | OP_BINARY);
            if rsv != 0 && !(compressed && self.deflate.is_some()) {
                return Err(protocol(&format!(
                    "reserved bits {rsv:#x} on opcode {opcode:#x} without an extension for them"
                )));
            }
            match opcode {
                OP_TEXT | OP_BINARY if fin => {
                    self.stats.messages += 1;
                    self.stats.wire_bytes += len as u64;
                    // Hand out the payload while the buffer is briefly moved out of `self`.
                    let buf = std::mem::take(&mut self.buf);
                    let handled = if compressed {
                        self.stats.compressed += 1;
                        self.inflate_and_hand_out(opcode, &buf[from..to], on_message)
                    } else {
                        self.stats.plain_bytes += len as u64;
                        on_message(self, opcode, &buf[from..to])
                    };
                    self.buf = buf;
                    handled?;
                }
                OP_PING => {
                    let payload = self.buf[from..to].to_vec();
                    let mut pong = Vec::with_capacity(payload.len() + 6);
                    encode_masked(&mut pong, true, OP_PONG, &payload, [1, 2, 3, 4]);
                    self.send(&pong)?;
                }
                OP_PONG => {}
                // The answer to ours: the closing handshake is complete.
                OP_CLOSE if self.close_sent => {
                    self.closed = true;
                    return Ok(());
                }
                OP_CLOSE => return Err(protocol("server sent a close frame")),
                _ => {
                    return Err(protocol(&format!(
                        "unexpected frame: opcode {opcode:#x}, fin {fin}"
                    )))
                }
            }
        }
    }

    /// Inflates a compressed message and hands it out: through this connection's own inflater if
    /// the server keeps its context, else through the shared one (or, when its compressed bytes are
    /// those of the message the shared one inflated last, as that message's plain bytes).
    fn inflate_and_hand_out(
        &mut self,
        opcode: u8,
        payload: &[u8],
        on_message: &mut impl FnMut(&mut Client, u8, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let agreed = self.deflate.expect("checked by the caller");
        let mut plain = std::mem::take(&mut self.plain);
        if agreed.server_no_context_takeover {
            SHARED.with(|shared| -> io::Result<()> {
                let mut shared = shared.borrow_mut();
                let shared = shared.get_or_insert_with(|| Shared {
                    inflater: Decompress::new(false),
                    seen: HashMap::new(),
                    kept: 0,
                });
                let key = quick_key(payload);
                let kept = shared
                    .seen
                    .get(&key)
                    .and_then(|list| list.iter().find(|(c, _)| c == payload));
                if let Some((_, known)) = kept {
                    plain.clear();
                    plain.extend_from_slice(known);
                    return Ok(());
                }
                let inflated = inflate_into(&mut shared.inflater, payload, &mut plain);
                shared.inflater.reset(false);
                inflated?;
                if shared.kept >= MAX_KEPT {
                    shared.seen.clear();
                    shared.kept = 0;
                }
                shared.kept += 1;
                let entry = (payload.to_vec(), plain.clone());
                shared.seen.entry(key).or_default().push(entry);
                Ok(())
            })?;
        } else {
            let window = agreed.server_max_window_bits.clamp(9, 15);
            let inflater = self
                .inflater
                .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, window)));
            inflate_into(inflater, payload, &mut plain)?;
        }
        self.stats.plain_bytes += plain.len() as u64;
        let handled = on_message(self, opcode, &plain);
        self.plain = plain;
        handled
    }

    /// Bytes read but not yet handed out as a whole frame (the start of one still arriving).
    pub fn pending_bytes(&self) -> usize {
        self.end - self.start
    }

    /// Starts a clean close: a masked close frame with code 1000. The server's answering close then
    /// sets [`Client::closed`] instead of failing the read.
    pub fn send_close(&mut self) -> io::Result<()> {
        self.close_sent = true;
        let mut frame = Vec::with_capacity(8);
        encode_masked(
            &mut frame,
            true,
            OP_CLOSE,
            &1000u16.to_be_bytes(),
            [9, 8, 7, 6],
        );
        self.send(&frame)
    }
}

/// RSV1 in the first byte's reserved bits (`(b0 >> 4) & 7`): permessage-deflate's "compressed".
const RSV1: u8 = 0x4;

/// The header of the frame at the start of `buf`: (fin, reserved bits RSV1-RSV3 as `0..=7`, opcode,
/// header length, payload length), or `None` if incomplete. Server frames must not be masked (RFC
/// 6455 §5.1).
#[allow(clippy::type_complexity)]
fn parse_header(buf: &[u8]) -> io::Result<Option<(bool, u8, u8, usize, usize)>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err(protocol("server frame is masked"));
    }
    let (header, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, u16::from_be_bytes([b[0], b[1]]) as usize),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => (
                10,
                u64::from_be_bytes(b.try_into().expect("8 bytes")) as usize,
            ),
            None => return Ok(None),
        },
        n => (2, n as usize),
    };
    Ok(Some((
        b0 & 0x80 != 0,
        (b0 >> 4) & 0x7,
        b0 & 0x0f,
        header,
        len,
    )))
}

/// Appends one client frame: header, masking key, masked payload (RFC 6455 §5.2-5.3).
pub fn encode_masked(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    payload: &[u8],
    masking_key: [u8; 4],
) {
    encode_masked_ext(out, fin, false, opcode, payload, masking_key)
}

/// [`encode_masked`] with RSV1 set when `compressed` (a payload from [`deflate_message`]).
pub fn encode_masked_ext(
    out: &mut Vec<u8>,
    fin: bool,
    compressed: bool,
    opcode: u8,
    payload: &[u8],
    masking_key: [u8; 4],
) {
    out.push(if fin { 0x80 } else { 0 } | if compressed { 0x40 } else { 0 } | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&masking_key);
    out.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ masking_key[i % 4]),
    );
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_hello_matches_rfc_6455_section_5_7() {
        let mut out = Vec::new();
        encode_masked(&mut out, true, OP_TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn headers_parse_in_all_three_length_forms() {
        assert_eq!(
            parse_header(&[0x81, 0x05]).unwrap(),
            Some((true, 0, 1, 2, 5))
        );
        assert_eq!(
            parse_header(&[0x82, 0x7e, 0x01, 0x00]).unwrap(),
            Some((true, 0, 2, 4, 256))
        );
        let long = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(parse_header(&long).unwrap(), Some((true, 0, 2, 10, 65536)));
        assert_eq!(parse_header(&[0x82, 0x7e, 0x01]).unwrap(), None);
        assert!(parse_header(&[0x81, 0x85]).is_err());
        assert_eq!(
            parse_header(&[0xc1, 0x07]).unwrap(),
            Some((true, RSV1, 1, 2, 7))
        );
    }

    #[test]
    fn rfc_7692_hello_compresses_and_inflates() {
        // §7.2.3.1: "Hello" without context is f2 48 cd c9 c9 07 00.
        let hello = deflate_message(b"Hello", 15, 6);
        assert_eq!(hello, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let mut out = Vec::new();
        inflate_into(&mut Decompress::new(false), &hello, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        let mut frame = Vec::new();
        encode_masked_ext(&mut frame, true, true, OP_TEXT, &hello, [0; 4]);
        assert_eq!(frame[..2], [0xc1, 0x87]);
    }

    #[test]
    fn a_small_window_compresses_what_a_small_window_inflates() {
        let text: Vec<u8> = (0..4000).map(|i| b"abcdefghij"[(i * i) % 10]).collect();
        let made = deflate_message(&text, 9, 6);
        let mut out = Vec::new();
        inflate_into(
            &mut Decompress::new_with_window_bits(false, 9),
            &made,
            &mut out,
        )
        .unwrap();
        assert!(out == text);
    }

    #[test]
    fn answers_parse() {
        let agreed = parse_answer(
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
        )
        .unwrap();
        assert!(agreed.server_no_context_takeover && !agreed.client_no_context_takeover);
        assert_eq!(
            (agreed.server_max_window_bits, agreed.client_max_window_bits),
            (15, 9)
        );
        assert!(parse_answer("permessage-deflate; x_y").is_err());
        assert!(parse_answer("x-webkit-deflate-frame").is_err());
    }
}
