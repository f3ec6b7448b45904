//! One nonblocking WebSocket client connection, as lean as the load generator needs it.
//!
//! It connects, sends a fixed upgrade request, checks the `101` answer, then sends pre-encoded
//! masked frames and parses the server's unmasked ones. It answers pings, treats a close or an
//! unexpected frame as an error, and never copies a received payload: a message is handed to the
//! caller as a slice of the read buffer. Buffers start small and grow only as traffic demands, so
//! 10,000 idle connections cost the load generator little memory.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

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
        let stream = TcpStream::connect(addr)?;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        Ok(Client {
            stream,
            phase: Phase::Connecting,
            sent_at: Instant::now(),
            received: 0,
            tag: 0,
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
            return self.send(&request);
        }
        self.flush()
    }

    /// Sends `bytes` now, keeping whatever the socket does not take for the next writable event.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
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
            if drained {
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
            let Some((fin, opcode, header, len)) = parse_header(avail)? else {
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
            match opcode {
                OP_TEXT | OP_BINARY if fin => {
                    // Hand out the payload while the buffer is briefly moved out of `self`.
                    let buf = std::mem::take(&mut self.buf);
                    let handled = on_message(self, opcode, &buf[from..to]);
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
                OP_CLOSE => return Err(protocol("server sent a close frame")),
                _ => {
                    return Err(protocol(&format!(
                        "unexpected frame: opcode {opcode:#x}, fin {fin}"
                    )))
                }
            }
        }
    }

    /// Bytes read but not yet handed out as a whole frame (the start of one still arriving).
    pub fn pending_bytes(&self) -> usize {
        self.end - self.start
    }

    /// Starts a clean close: a masked close frame with code 1000.
    pub fn send_close(&mut self) -> io::Result<()> {
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

/// The header of the frame at the start of `buf`: (fin, opcode, header length, payload length),
/// or `None` if incomplete. Server frames must not be masked (RFC 6455 §5.1).
fn parse_header(buf: &[u8]) -> io::Result<Option<(bool, u8, usize, usize)>> {
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
    Ok(Some((b0 & 0x80 != 0, b0 & 0x0f, header, len)))
}

/// Appends one client frame: header, masking key, masked payload (RFC 6455 §5.2-5.3).
pub fn encode_masked(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: u8,
    payload: &[u8],
    masking_key: [u8; 4],
) {
    out.push(if fin { 0x80 } else { 0 } | opcode);
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
        assert_eq!(parse_header(&[0x81, 0x05]).unwrap(), Some((true, 1, 2, 5)));
        assert_eq!(
            parse_header(&[0x82, 0x7e, 0x01, 0x00]).unwrap(),
            Some((true, 2, 4, 256))
        );
        let long = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(parse_header(&long).unwrap(), Some((true, 2, 10, 65536)));
        assert_eq!(parse_header(&[0x82, 0x7e, 0x01]).unwrap(), None);
        assert!(parse_header(&[0x81, 0x85]).is_err());
    }
}
