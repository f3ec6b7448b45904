//! The protocol inspector: for a connection that asked for it, what crossed the wire, byte for byte.
//!
//! Browsers' developer tools show each message's payload, never the frame around it. A connection accepted with
//! [`Accept::inspect`](crate::Accept::inspect) has its handshake and the start of each frame, both ways, handed to
//! [`Handler::inspect`](crate::Handler::inspect) as a [`Seen`]: the request head as it arrived and the response as
//! it went, with the accept key's arithmetic; each frame the peer sent as it arrived, still masked; each frame the
//! server queued for it. The application shows them to that same connection (the chatroom's `/inspect` page does),
//! and to no other: nothing here is ever seen by another connection's callbacks.
//!
//! Bounded: a frame is kept only up to its header and its first [`MIRROR_PAYLOAD`] bytes of payload, and at most
//! [`MAX_PENDING`] records wait for the callback (older ones are dropped past that). An inspected connection gets no
//! permessage-deflate, so that what it sees is RFC 6455's frames themselves.

use std::collections::VecDeque;

use crate::frame::{self, Limits};
use crate::Status;

/// Payload bytes kept of each frame: a long message shows its header and this much of its start.
pub const MIRROR_PAYLOAD: usize = 64;
/// Records waiting for [`Handler::inspect`](crate::Handler::inspect) at most, per connection.
pub const MAX_PENDING: usize = 64;

/// Something that crossed the wire of an inspected connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Seen {
    /// The opening handshake: the PHP `upgrade()`, step by step.
    Handshake(Handshake),
    /// A frame from the peer, as it arrived: still masked.
    Received(Wire),
    /// A frame the server queued for the peer (what the inspector's own callback sends is not shown).
    Sent(Wire),
}

/// The opening handshake of an inspected connection (RFC 6455 §4.2.2, §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Handshake {
    /// The request head, as it arrived (up to and including the blank line).
    pub request: Vec<u8>,
    /// The request's `Sec-WebSocket-Key`.
    pub key: String,
    /// `key` followed by the GUID ([`ACCEPT_GUID`](crate::handshake::ACCEPT_GUID)): what is hashed.
    pub concatenated: String,
    /// The SHA-1 of `concatenated`.
    pub sha1: [u8; 20],
    /// The base64 of `sha1`: the response's `Sec-WebSocket-Accept`.
    pub accept: String,
    /// The response, as it went out.
    pub response: Vec<u8>,
}

impl Handshake {
    pub(crate) fn new(request: &[u8], key: &str, response: &[u8]) -> Handshake {
        let concatenated = format!("{key}{}", crate::handshake::ACCEPT_GUID);
        let sha1 = sha1_smol::Sha1::from(concatenated.as_bytes())
            .digest()
            .bytes();
        Handshake {
            request: request.to_vec(),
            key: key.to_string(),
            concatenated,
            sha1,
            accept: crate::handshake::accept_key(key),
            response: response.to_vec(),
        }
    }
}

/// The start of one frame as it was on the wire: its header and the first [`MIRROR_PAYLOAD`] bytes of its payload
/// (all of it if it is shorter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Wire {
    /// The bytes kept, from the frame's first.
    pub bytes: Vec<u8>,
    /// The whole frame's length on the wire, header included: more than `bytes.len()` if it was cut.
    pub frame_len: u64,
}

impl Wire {
    /// Keeps the start of a frame whose bytes are `parts` one after the other (a header and a payload kept apart,
    /// or the whole frame in the first).
    pub(crate) fn of(parts: [&[u8]; 2], frame_len: u64, header_len: usize) -> Wire {
        // Never past the frame's end: what follows it (the next frame, read with it) is not part of it.
        let keep = kept(frame_len, header_len);
        let mut bytes = Vec::with_capacity(keep);
        for part in parts {
            let room = keep.saturating_sub(bytes.len());
            bytes.extend_from_slice(&part[..part.len().min(room)]);
        }
        Wire { bytes, frame_len }
    }
}

/// How much of a frame a record keeps: its header and the first `MIRROR_PAYLOAD` bytes of its payload, at most the
/// whole frame.
fn kept(frame_len: u64, header_len: usize) -> usize {
    usize::try_from(frame_len).map_or(usize::MAX, |len| len.min(header_len + MIRROR_PAYLOAD))
}

/// Any frame's header, read only to find where it ends: no limit, a mask or none, any RSV bit.
const ANY: Limits = Limits {
    max_payload: u64::MAX >> 1,
    require_mask: false,
    deflate: true,
};

/// One inspected connection's records waiting for the callback, and where its inbound frames stand.
#[derive(Debug, Default)]
pub(crate) struct Inspect {
    pub pending: VecDeque<Seen>,
    /// The frame at the front of what arrives has been recorded already (it is still arriving).
    mid_frame: bool,
    /// The record of the frame at the front while less of it has arrived than a record keeps, and how much it keeps.
    starting: Option<(Wire, usize)>,
    /// Records dropped because `MAX_PENDING` were waiting.
    pub dropped: u64,
}

impl Inspect {
    pub fn push(&mut self, seen: Seen) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back(seen);
    }

    /// Bytes at the front of a connection's input, before they are decoded: a frame whose header is whole is recorded
    /// as it arrived, masked, once its first bytes are in (or it ends, or fails).
    ///
    /// A frame left partial is unmasked in place as far as it came, so a later call takes only the bytes behind those
    /// it saw before: they are still as they arrived.
    pub fn arriving(&mut self, rest: &[u8]) {
        if self.mid_frame {
            return;
        }
        let (mut wire, keep) = match self.starting.take() {
            Some(started) => started,
            None => {
                let Ok(Status::Complete(header)) = frame::decode_header(rest, &ANY) else {
                    return;
                };
                let frame_len = header.header_len as u64 + header.payload_len;
                let keep = kept(frame_len, header.header_len);
                let wire = Wire {
                    bytes: Vec::with_capacity(keep),
                    frame_len,
                };
                (wire, keep)
            }
        };
        let seen = wire.bytes.len();
        wire.bytes
            .extend_from_slice(rest.get(seen..rest.len().min(keep)).unwrap_or_default());
        if wire.bytes.len() == keep {
            self.push(Seen::Received(wire));
            self.mid_frame = true;
        } else {
            self.starting = Some((wire, keep));
        }
    }

    /// The frame at the front was decoded whole (or dropped, or failed): the next one is new.
    pub fn decoded(&mut self) {
        if let Some((wire, _)) = self.starting.take() {
            self.push(Seen::Received(wire));
        }
        self.mid_frame = false;
    }

    /// A frame queued for the peer, in its parts.
    pub fn sent(&mut self, parts: [&[u8]; 2]) {
        let frame_len = (parts[0].len() + parts[1].len()) as u64;
        let header_len = match (parts[0].len(), parts[1].len()) {
            // A header kept apart from its payload.
            (head, body) if head > 0 && head <= frame::MAX_HEADER_LEN && body > 0 => head,
            _ => {
                let whole = if parts[0].is_empty() {
                    parts[1]
                } else {
                    parts[0]
                };
                match frame::decode_header(whole, &ANY) {
                    Ok(Status::Complete(header)) => header.header_len,
                    _ => whole.len().min(2),
                }
            }
        };
        self.push(Seen::Sent(Wire::of(parts, frame_len, header_len)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    #[test]
    fn a_frame_arriving_is_recorded_once_masked_and_cut_after_its_first_bytes() {
        let payload = vec![b'x'; 1000];
        let mut wire = Vec::new();
        frame::encode_masked(&mut wire, true, OpCode::Text, &payload, [1, 2, 3, 4]);
        let mut inspect = Inspect::default();
        inspect.arriving(&wire[..1]); // not even a header yet: nothing
        assert!(inspect.pending.is_empty());
        inspect.arriving(&wire[..100]);
        inspect.arriving(&wire[..500]); // the same frame, more of it: not again
        inspect.decoded();
        let Some(Seen::Received(seen)) = inspect.pending.pop_front() else {
            panic!("one frame recorded")
        };
        assert!(inspect.pending.is_empty());
        assert_eq!(seen.frame_len, wire.len() as u64);
        // 2 bytes, 2 of length (126 form), 4 of key, then the first payload bytes, still masked.
        assert_eq!(seen.bytes, wire[..8 + MIRROR_PAYLOAD]);
        assert_ne!(seen.bytes[8], b'x');
    }

    #[test]
    fn a_frame_is_recorded_as_it_arrived_across_reads_and_without_the_next_one() {
        let mut wire = Vec::new();
        frame::encode_masked(&mut wire, true, OpCode::Text, b"hello", [1, 2, 3, 4]);
        let mut inspect = Inspect::default();
        let mut buf = wire[..6].to_vec(); // the header alone
        inspect.arriving(&buf);
        assert!(inspect.pending.is_empty(), "not before its payload");
        buf.extend_from_slice(&wire[6..8]);
        inspect.arriving(&buf);
        // The decoder unmasks in place what it saw: the record keeps what was on the wire.
        for (i, byte) in buf[6..].iter_mut().enumerate() {
            *byte ^= [1, 2, 3, 4][i % 4];
        }
        buf.extend_from_slice(&wire[8..]);
        let next = [0x81, 0x80, 9, 9, 9, 9];
        buf.extend_from_slice(&next);
        inspect.arriving(&buf);
        inspect.decoded();
        assert_eq!(
            inspect.pending.pop_front(),
            Some(Seen::Received(Wire {
                bytes: wire.clone(),
                frame_len: wire.len() as u64
            }))
        );
        // A frame that fails before its first bytes are in is still recorded, as far as it came.
        let cut = [0x81, 0x8a, 9, 9, 9, 9]; // 10 bytes announced, none arrived
        inspect.arriving(&cut);
        assert!(inspect.pending.is_empty());
        inspect.decoded();
        assert_eq!(
            inspect.pending.pop_front(),
            Some(Seen::Received(Wire {
                bytes: cut.to_vec(),
                frame_len: 16
            }))
        );
    }

    #[test]
    fn a_frame_arriving_in_pieces_is_recorded_with_the_bytes_that_came_later_still_masked() {
        let payload = vec![b'y'; 130];
        let mut wire = Vec::new();
        frame::encode_masked(&mut wire, true, OpCode::Text, &payload, [9, 8, 7, 6]);
        // What the decoder does between looks: the bytes seen so far are unmasked in place.
        let mut buf = wire[..11].to_vec();
        let mut inspect = Inspect::default();
        inspect.arriving(&buf);
        assert!(inspect.pending.is_empty(), "not yet all it keeps");
        frame::apply_mask(&mut buf[8..], [9, 8, 7, 6], 0);
        buf.extend_from_slice(&wire[11..40]);
        inspect.arriving(&buf);
        assert!(inspect.pending.is_empty());
        buf.extend_from_slice(&wire[40..]);
        inspect.arriving(&buf);
        let Some(Seen::Received(seen)) = inspect.pending.pop_front() else {
            panic!("recorded once it had its first 64 bytes")
        };
        assert_eq!(seen.bytes, wire[..8 + MIRROR_PAYLOAD]);
        inspect.decoded();
        assert!(inspect.pending.is_empty(), "recorded once");
        // A short frame cut short, then whole: recorded at its end, whole.
        let mut short = Vec::new();
        frame::encode_masked(&mut short, true, OpCode::Text, b"abc", [1, 1, 1, 1]);
        inspect.arriving(&short[..7]);
        assert!(inspect.pending.is_empty());
        inspect.arriving(&short);
        assert_eq!(
            inspect.pending.pop_front(),
            Some(Seen::Received(Wire {
                bytes: short.clone(),
                frame_len: 9
            }))
        );
    }

    #[test]
    fn a_frame_sent_is_recorded_from_its_parts() {
        let mut whole = Vec::new();
        frame::encode(&mut whole, true, OpCode::Text, b"hi");
        let mut inspect = Inspect::default();
        inspect.sent([&whole, &[]]);
        let head = crate::frame::Head::new(true, OpCode::Binary, 3000);
        let body = vec![7u8; 3000];
        inspect.sent([head.as_bytes(), &body]);
        let seen: Vec<_> = inspect.pending.drain(..).collect();
        assert_eq!(
            seen[0],
            Seen::Sent(Wire {
                bytes: whole.clone(),
                frame_len: 4
            })
        );
        let Seen::Sent(long) = &seen[1] else { panic!() };
        assert_eq!(long.frame_len, 4 + 3000);
        assert_eq!(long.bytes.len(), 4 + MIRROR_PAYLOAD);
        assert_eq!(&long.bytes[..4], head.as_bytes());
    }

    #[test]
    fn records_waiting_are_bounded() {
        let mut inspect = Inspect::default();
        for _ in 0..MAX_PENDING + 5 {
            inspect.sent([b"\x81\x00", &[]]);
        }
        assert_eq!(inspect.pending.len(), MAX_PENDING);
        assert_eq!(inspect.dropped, 5);
    }

    #[test]
    fn the_handshake_shows_the_rfc_example() {
        let seen = Handshake::new(
            b"GET / HTTP/1.1\r\n\r\n",
            "dGhlIHNhbXBsZSBub25jZQ==",
            b"HTTP/1.1 101\r\n\r\n",
        );
        assert_eq!(
            seen.concatenated,
            "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        );
        let hex: String = seen.sha1.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "b37a4f2cc0624f1690f64606cf385945b2bec4ea");
        assert_eq!(seen.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
