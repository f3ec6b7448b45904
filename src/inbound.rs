//! One connection's inbound side, in one room: the bytes of a request head or frame that has not fully arrived, the
//! [`Probe`] that has unmasked and checked part of that frame, and the [`Assembler`] that joins fragments.
//!
//! The PHP `decode()` took each read as one whole frame. Here a frame may arrive in any number of reads, and the
//! part that came is unmasked and checked as it comes, so that a long text message is read once, not twice. That
//! shortcut is `unsafe` ([`Probe::decode_trusting`] trusts bytes it checked before) and sound only while these
//! rules hold, which this type keeps and nothing outside it can break (its fields are private):
//!
//! - The bytes of a frame left partial are kept whole at the front of `buf`; later bytes are only added behind them
//!   ([`Inbound::feed`], [`Inbound::read_behind`]), and bytes leave only from the front, whole frames (or a request
//!   head) at a time.
//! - `buf` is empty exactly when no frame is left partial, so fresh bytes can be decoded where they were read (the
//!   loop's shared buffer) without a copy: the probe is then idle.
//! - Whenever bytes are dropped before their frame is whole ([`Inbound::reset`], [`Input::skip_all`]), the probe
//!   starts over.
//!
//! It is pure (no sockets): the fuzz targets drive this very code with reads of random sizes (`fuzz/src/reader.rs`).
//!
//! Not part of the API: public only with the cargo feature `internals`, for the benches and the fuzz targets, under
//! no semver promise.

use std::io;
use std::mem::{self, MaybeUninit};

use crate::frame::{self, Limits};
use crate::message::{Assembler, Event, Inflate, Probe};
use crate::{FrameError, Status};

/// Room offered behind a long frame when the buffer has less spare (see [`Inbound::read_behind`]).
const MIN_READ_BEHIND: usize = 4096;

/// A source of bytes that can write them into memory not yet initialized: a socket's `recv`.
///
/// # Safety
///
/// `recv` returns how many bytes it wrote at the front of `buf`, never more than `buf.len()`, and every one of
/// them is initialized: [`Inbound::read_behind`] takes them for part of its buffer.
pub unsafe trait Recv {
    /// Reads once into `buf`, as `read` does; `Ok(0)` is the end of the stream.
    fn recv(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize>;
}

// SAFETY: forwards to `R`, which keeps the promise.
unsafe impl<R: Recv + ?Sized> Recv for &mut R {
    fn recv(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        (**self).recv(buf)
    }
}

/// Bytes from a slice, as a socket would hand them over (for tests and the fuzz target).
// SAFETY: `recv` copies `n <= buf.len()` bytes to the front of `buf` and returns `n`.
unsafe impl Recv for &[u8] {
    fn recv(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let n = self.len().min(buf.len());
        for (to, &from) in buf.iter_mut().zip(&self[..n]) {
            to.write(from);
        }
        *self = &self[n..];
        Ok(n)
    }
}

/// A connection's bytes that have not made a whole frame yet, and the state of its message in progress.
#[derive(Debug, Default)]
pub struct Inbound {
    /// Bytes of a request head or frame that has not fully arrived. Empty and unallocated whenever nothing is left
    /// over: complete frames are decoded straight from the bytes as they were read.
    buf: Vec<u8>,
    /// Fail-fast unmasking and UTF-8 state for the frame at the front of `buf`.
    probe: Probe,
    /// Fragments to messages.
    assembler: Assembler,
}

impl Inbound {
    /// Nothing received yet; messages of up to `max_message` bytes.
    pub fn new(max_message: usize) -> Inbound {
        Inbound {
            assembler: Assembler::new(max_message),
            ..Inbound::default()
        }
    }

    /// True while part of a frame or of a fragmented message has arrived and not the rest.
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty() || self.assembler.is_in_message()
    }

    /// Bytes of a request head or frame that has not fully arrived.
    #[cfg_attr(
        not(feature = "internals"),
        allow(
            dead_code,
            reason = "for the fuzz targets, which compare it across ways of reading"
        )
    )]
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The memory what has arrived takes: the buffer's capacity and the fragments' ([`Assembler::held`]). What the
    /// server's memory budget counts of a message arriving.
    #[inline]
    pub fn held(&self) -> usize {
        self.buf.capacity() + self.assembler.held()
    }

    /// Drops whatever arrived of a frame and of a message, and the buffers that held it: for a message that took
    /// too long, or a connection that will decode nothing more.
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.probe = Probe::default();
        self.assembler.clear();
    }

    /// How much to read straight behind a long frame that is still arriving ([`Inbound::read_behind`]), rather than
    /// into a shared buffer and then copied here: `None` unless the frame at the front still lacks at least `from`
    /// bytes; at most `max`.
    pub fn behind_size(&self, limits: &Limits, from: usize, max: usize) -> Option<usize> {
        if self.buf.is_empty() {
            return None;
        }
        let Ok(Status::Complete(header)) = frame::decode_header(&self.buf, limits) else {
            return None;
        };
        let missing = header.frame_len()?.checked_sub(self.buf.len())?;
        (missing >= from).then_some(missing.min(max))
    }

    /// Reads once from `source`, at most `max` bytes, straight into the room behind what the buffer holds. Returns
    /// the bytes read and the room offered.
    ///
    /// The room is what the buffer has spare; only when less than 4 KiB is left does it grow, by as much as it
    /// holds (at least 4 KiB, at most `max`), and then by `Vec`'s doubling. So a peer that announces a long frame
    /// and sends it a byte at a time costs neither a reallocation per byte nor more than about twice what it has
    /// sent.
    pub fn read_behind(&mut self, mut source: impl Recv, max: usize) -> io::Result<(usize, usize)> {
        let held = self.buf.len();
        if self.buf.capacity() - held < MIN_READ_BEHIND {
            self.buf.reserve(max.min(held.max(MIN_READ_BEHIND)));
        }
        let spare = self.buf.spare_capacity_mut();
        let want = spare.len().min(max);
        let n = source.recv(&mut spare[..want])?;
        assert!(n <= want, "a source read more than it was offered");
        // SAFETY: `Recv` promises that the `n` bytes at the start of the spare capacity are initialized, so the
        // first `held + n` bytes are, within capacity. Bytes added behind a partial frame are what the probe expects.
        unsafe { self.buf.set_len(held + n) };
        Ok((n, want))
    }

    /// New bytes: joined to what was left over and handed to `consume` as an [`Input`], the rest kept for the next
    /// read. When nothing was left over (the common case), `fresh` is decoded where it is, without a copy.
    ///
    /// Bytes read behind the buffer ([`Inbound::read_behind`]) are fed with an empty `fresh`.
    ///
    /// The probe is out of `self` while `consume` runs and goes back only once the buffer matches it again: if
    /// `consume` panics, the inbound side is left with an idle probe, which trusts nothing (what had arrived is
    /// garbage then, but never taken for checked text).
    pub fn feed<R>(&mut self, fresh: &mut [u8], consume: impl FnOnce(&mut Input<'_>) -> R) -> R {
        let mut probe = mem::take(&mut self.probe);
        let answer = if self.buf.is_empty() {
            // Nothing left partial, so the probe has seen no frame of these bytes' (see the module's rules).
            if !probe.is_idle() {
                probe = Probe::default();
            }
            let mut input = Input::new(fresh, &mut probe, &mut self.assembler);
            let answer = consume(&mut input);
            let used = input.used;
            self.buf.extend_from_slice(&fresh[used..]);
            answer
        } else {
            self.buf.extend_from_slice(fresh);
            let mut input = Input::new(&mut self.buf, &mut probe, &mut self.assembler);
            let answer = consume(&mut input);
            let used = input.used;
            self.buf.drain(..used);
            if self.buf.is_empty() {
                self.buf = Vec::new(); // nothing left over: an idle connection holds no buffer
            }
            answer
        };
        self.probe = probe;
        answer
    }
}

/// The bytes of one [`Inbound::feed`]: decoded front to back, as a request head or as frames.
#[derive(Debug)]
pub struct Input<'a> {
    bytes: &'a mut [u8],
    used: usize,
    probe: &'a mut Probe,
    assembler: &'a mut Assembler,
}

impl<'a> Input<'a> {
    fn new(bytes: &'a mut [u8], probe: &'a mut Probe, assembler: &'a mut Assembler) -> Input<'a> {
        Input {
            bytes,
            used: 0,
            probe,
            assembler,
        }
    }

    /// The bytes not used yet.
    pub fn rest(&self) -> &[u8] {
        &self.bytes[self.used..]
    }

    /// The request head of `len` bytes at the front was answered: they are used. Only before any frame (the probe has
    /// seen none).
    pub fn skip_head(&mut self, len: usize) {
        assert!(self.probe.is_idle(), "a head comes before any frame");
        self.used += len.min(self.bytes.len() - self.used);
    }

    /// Every byte is used (dropped): the connection will decode nothing more. What was seen of a frame is
    /// forgotten.
    pub fn skip_all(&mut self) {
        self.used = self.bytes.len();
        *self.probe = Probe::default();
    }

    /// Decodes the next frame and hands it to the assembler: `Partial` when the rest is not a whole frame (what came
    /// of it is unmasked and checked already), `Complete(Some(event))` for a message or control frame to act on,
    /// `Complete(None)` for a fragment the assembler kept. With permessage-deflate (`limits.deflate`), a compressed
    /// message is inflated on its way in, with the stream `inflate` lends (called only for one).
    #[inline]
    pub fn next_event<'i>(
        &mut self,
        limits: &Limits,
        inflate: impl FnOnce() -> Option<Inflate<'i>>,
    ) -> Result<Status<Option<Event<'_>>>, FrameError> {
        let rest = &mut self.bytes[self.used..];
        // SAFETY: the frame the probe has seen part of is the one at the front of `rest`, its bytes as the probe left
        // them: `Inbound` keeps a partial frame's bytes whole at the front of its buffer, adds only behind them, and
        // starts the probe over whenever it drops them (the module's rules); `used` moves past whole frames only.
        let decoded = unsafe { self.probe.decode_trusting(rest, limits, self.assembler) }?;
        let Status::Complete((frame, n)) = decoded else {
            return Ok(Status::Partial);
        };
        self.used += n;
        // With permessage-deflate, a compressed message is inflated on its way into the assembler (RFC 7692 §6.2).
        // Without it, the plain path alone: the frame bench's (a branch to the compressed path, even one never
        // taken, costs a small frame a quarter of its time there).
        let event = if limits.deflate {
            let compressed = frame.rsv != 0 || self.assembler.is_compressed();
            let inflate = if compressed { inflate() } else { None };
            self.assembler.push_with(frame, inflate)?
        } else {
            self.assembler.push(frame)?
        };
        Ok(Status::Complete(event))
    }

    /// Frees the fragments' state once their message is delivered (see [`Assembler::release`]). A connection that
    /// will decode nothing more drops the rest with [`Inbound::reset`].
    pub fn release(&mut self) {
        self.assembler.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;
    use crate::message::Message;

    fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode_masked(&mut out, fin, opcode, payload, [1, 2, 3, 4]);
        out
    }

    /// Feeds `bytes` in pieces of the given sizes, some through `read_behind`, and collects the messages.
    fn messages(bytes: &[u8], pieces: &[usize], behind: bool) -> Result<Vec<String>, FrameError> {
        let limits = Limits {
            max_payload: 1 << 20,
            require_mask: true,
            deflate: false,
        };
        let mut inbound = Inbound::new(1 << 20);
        let mut out = Vec::new();
        let mut at = 0;
        for &size in pieces.iter().cycle() {
            if at == bytes.len() {
                break;
            }
            let piece = &bytes[at..(at + size.max(1)).min(bytes.len())];
            at += piece.len();
            let mut fresh = piece.to_vec();
            let fresh: &mut [u8] = if behind && inbound.behind_size(&limits, 1, 64).is_some() {
                let mut source = piece;
                let (n, _) = inbound.read_behind(&mut source, piece.len()).unwrap();
                at -= piece.len() - n;
                &mut []
            } else {
                &mut fresh
            };
            inbound.feed(fresh, |input| -> Result<(), FrameError> {
                while let Status::Complete(event) = input.next_event(&limits, || None)? {
                    if let Some(Event::Message(msg)) = event {
                        out.push(match msg {
                            Message::Text(text) => text.to_string(),
                            Message::Binary(bytes) => format!("{bytes:?}"),
                        });
                    }
                }
                input.release();
                Ok(())
            })?;
        }
        assert!(!inbound.is_partial(), "everything arrived");
        Ok(out)
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let long = "é".repeat(3000);
        let mut bytes = masked(true, OpCode::Text, b"hello");
        bytes.extend(masked(false, OpCode::Text, long.as_bytes()));
        bytes.extend(masked(true, OpCode::Ping, b"p"));
        bytes.extend(masked(true, OpCode::Continuation, "ü".as_bytes()));
        let whole = messages(&bytes, &[bytes.len()], false).unwrap();
        assert_eq!(whole, ["hello".to_string(), format!("{long}ü")]);
        for pieces in [&[1][..], &[7, 3], &[100, 1, 1000], &[4096]] {
            for behind in [false, true] {
                assert_eq!(
                    messages(&bytes, pieces, behind).unwrap(),
                    whole,
                    "{pieces:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_text_fails_as_soon_as_it_arrives() {
        let mut text = vec![b'a'; 1000];
        text[10] = 0xff;
        let bytes = masked(true, OpCode::Text, &text);
        // The error comes before the frame is whole: with the first 20 bytes.
        let limits = Limits {
            max_payload: 1 << 20,
            require_mask: true,
            deflate: false,
        };
        let mut inbound = Inbound::new(1 << 20);
        let answer = inbound.feed(&mut bytes[..20].to_vec(), |input| {
            input
                .next_event(&limits, || None)
                .map(|s| matches!(s, Status::Partial))
        });
        assert_eq!(answer, Err(FrameError::InvalidUtf8));
    }

    /// A long frame trickled behind what the shared buffer left: the buffer grows a few times, not once per piece,
    /// and never holds much more than twice what came; then a bulk arrives in rooms of up to 64 KiB.
    #[test]
    fn reading_behind_a_trickled_frame_costs_neither_memory_nor_copies() {
        let mut inbound = Inbound::new(1 << 20);
        inbound.feed(&mut b"0123456789".to_vec(), |_| {}); // nothing used: all of it left over
        let mut sent = b"0123456789".to_vec();
        let mut grew = 0;
        let mut read = |inbound: &mut Inbound, mut source: &[u8]| {
            while !source.is_empty() {
                let capacity = inbound.buf.capacity();
                let (n, room) = inbound.read_behind(&mut source, 64 << 10).unwrap();
                assert!(n > 0 && room <= 64 << 10);
                grew += usize::from(inbound.buf.capacity() != capacity);
                let held = inbound.buf.len();
                let capacity = inbound.buf.capacity();
                assert!(
                    capacity <= 2 * held + 2 * MIN_READ_BEHIND,
                    "{capacity} bytes of room for {held}"
                );
            }
        };
        for i in 0..660u32 {
            let piece: Vec<u8> = (0..61).map(|j| ((i * 61 + j) % 251) as u8).collect();
            read(&mut inbound, &piece);
            sent.extend_from_slice(&piece);
        }
        let bulk: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        read(&mut inbound, &bulk);
        sent.extend_from_slice(&bulk);
        assert!(grew <= 16, "grew {grew} times");
        assert_eq!(inbound.buf, sent);
    }

    /// A `consume` that panics halfway through a text frame leaves no trust behind: the next frame at the front
    /// (here the same invalid one again, or a fresh one) is checked in full, never taken for text checked before.
    #[test]
    fn a_panic_in_consume_leaves_a_probe_that_trusts_nothing() {
        let limits = Limits {
            max_payload: 1 << 20,
            require_mask: true,
            deflate: false,
        };
        let mut bad = vec![0xffu8; 40];
        bad.extend_from_slice(&[b'a'; 20]);
        let bad = masked(true, OpCode::Text, &bad);
        let long = masked(true, OpCode::Text, &[b'b'; 200]);
        let is_text = |inbound: &mut Inbound, fresh: &mut [u8]| {
            inbound.feed(fresh, |input| match input.next_event(&limits, || None) {
                Ok(Status::Complete(Some(Event::Message(Message::Text(text))))) => {
                    Some(std::str::from_utf8(text.as_bytes()).is_ok())
                }
                _ => None,
            })
        };
        for left_over in [false, true] {
            let mut inbound = Inbound::new(1 << 20);
            let mut fresh = if left_over {
                inbound.feed(&mut bad[..1].to_vec(), |_| {});
                bad[1..].to_vec()
            } else {
                Vec::new()
            };
            fresh.extend_from_slice(&long[..60]);
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inbound.feed(&mut fresh, |input| {
                    if left_over {
                        assert!(input.next_event(&limits, || None).is_err(), "invalid text");
                    }
                    assert!(matches!(
                        input.next_event(&limits, || None),
                        Ok(Status::Partial)
                    ));
                    panic!("a callback failed halfway through a text frame");
                })
            }));
            assert!(panicked.is_err());
            assert!(inbound.probe.is_idle(), "left_over {left_over}");
            let next = if left_over {
                &mut [][..]
            } else {
                &mut bad.clone()[..]
            };
            assert_ne!(
                is_text(&mut inbound, next),
                Some(false),
                "left_over {left_over}"
            );
        }
    }

    #[test]
    fn reset_forgets_a_partial_frame_and_its_buffer() {
        let bytes = masked(true, OpCode::Binary, &[7; 100]);
        let limits = Limits {
            max_payload: 1 << 20,
            require_mask: true,
            deflate: false,
        };
        let mut inbound = Inbound::new(1 << 20);
        inbound.feed(&mut bytes[..50].to_vec(), |input| {
            assert!(matches!(
                input.next_event(&limits, || None),
                Ok(Status::Partial)
            ));
        });
        assert!(inbound.is_partial() && inbound.buf.len() == 50);
        inbound.reset();
        assert!(!inbound.is_partial() && inbound.buf.capacity() == 0 && inbound.probe.is_idle());
    }
}
