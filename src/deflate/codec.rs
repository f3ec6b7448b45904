//! One message at a time through zlib-rs: compressed with a sync flush whose 4-byte tail is dropped (RFC 7692
//! §7.2.1), inflated with that tail put back (§7.2.2), and never more output than the caller lets through.
//!
//! Both wrappers are plain values with no socket in sight; whether a connection owns one (context takeover) or
//! borrows its loop's for one message at a time is the loop's business.

use zlib_rs::{DeflateConfig, DeflateFlush, InflateFlush, Method, Status, Strategy};

use crate::error::FrameError;

/// §7.2.1: a sync flush ends with an empty stored block, `00 00 ff ff`; the sender removes it, the receiver appends
/// it again before inflating.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What the inflater hands out at a time: the caller checks each piece (size, UTF-8) before keeping it.
const PIECE: usize = 16 << 10;

/// The compressor's own output buffer is kept between messages up to this size; a larger one is given back.
const SCRATCH_KEPT: usize = 16 << 10;

/// A raw deflate stream for outgoing messages.
pub struct Compressor {
    stream: zlib_rs::Deflate,
    /// Reset after every message: no context takeover (§7.1.1.1).
    is_fresh_each: bool,
    /// Where zlib writes, with room for an incompressible message; what it made is then copied out exactly.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("is_fresh_each", &self.is_fresh_each)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// A compressor for a window of `window_bits` (8 to 15), zlib's `mem_level` (1 to 9) and `level` (0 to 9);
    /// `takeover` keeps the context from one message to the next. Values out of range are brought into it.
    ///
    /// zlib cannot make a raw deflate stream with an 8-bit window (it would quietly use 9, which an 8-bit reader
    /// may fail on). For 8 this compressor uses Huffman codes alone: no back-references at all, so any window
    /// reads it, and the 8-bit request is honoured rather than declined.
    pub fn new(window_bits: u8, mem_level: u8, level: u8, takeover: bool) -> Compressor {
        let (bits, strategy) = match window_bits {
            0..=8 => (9, Strategy::HuffmanOnly),
            bits => (bits.min(15), Strategy::Default),
        };
        let config = DeflateConfig {
            level: i32::from(level.min(9)),
            method: Method::Deflated,
            window_bits: -i32::from(bits), // negative: raw deflate, no zlib header (§7.2.1)
            mem_level: i32::from(mem_level.clamp(1, 9)),
            strategy,
        };
        Compressor {
            stream: zlib_rs::Deflate::new_with_config(config),
            is_fresh_each: !takeover,
            scratch: Vec::new(),
        }
    }

    /// Appends `payload`, compressed, to `out`: deflate blocks ending in a sync flush, the flush's tail removed.
    ///
    /// zlib writes into the compressor's own buffer first, so `out` grows by exactly what was made: a queued frame
    /// holds its compressed size, not the room an incompressible message would have needed.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        if payload.is_empty() {
            // §7.2.3.6: an empty message is the single byte 00 (an empty fixed block, cut before its end). zlib would
            // make nothing at all for it on a stream whose last message already ended in a sync flush, and an empty
            // payload with RSV1 reads as a cut stored block to the next message's inflater. It changes no window.
            out.push(0x00);
            return;
        }
        let scratch = &mut self.scratch;
        scratch.clear();
        let mut input = payload;
        loop {
            // Room for incompressible input (stored blocks add 5 bytes per 16 KiB) and the flush.
            let room = input.len() + input.len() / 64 + 64;
            let at = scratch.len();
            scratch.resize(at + room, 0);
            let (was_in, was_out) = (self.stream.total_in(), self.stream.total_out());
            let status = self
                .stream
                .compress(input, &mut scratch[at..], DeflateFlush::SyncFlush);
            let used = (self.stream.total_in() - was_in) as usize;
            let made = (self.stream.total_out() - was_out) as usize;
            scratch.truncate(at + made);
            input = input.get(used..).unwrap_or_default();
            // A sync flush is complete once it returns with room to spare (zlib's rule for Z_SYNC_FLUSH). An error
            // would come from a stream the constructor made wrongly: nothing a peer controls.
            if status.is_err() || (input.is_empty() && made < room) {
                debug_assert!(status.is_ok(), "deflate failed: {status:?}");
                break;
            }
        }
        let made = scratch.strip_suffix(&TAIL).unwrap_or(scratch);
        out.reserve_exact(made.len());
        out.extend_from_slice(made);
        // A connection's own compressor keeps little: it is there for each of its messages, idle or not.
        let kept = if self.is_fresh_each {
            SCRATCH_KEPT
        } else {
            1 << 10
        };
        if scratch.capacity() > kept {
            *scratch = Vec::new();
        }
        if self.is_fresh_each {
            self.stream.reset();
        }
    }
}

/// A raw inflate stream for incoming messages.
pub struct Inflater {
    stream: zlib_rs::Inflate,
    /// Reset after every message: the client said it starts each one fresh (or was told to, §7.1.1.2).
    is_fresh_each: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("is_fresh_each", &self.is_fresh_each)
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// An inflater for a sender's window of up to `window_bits` (a larger window reads a smaller one's output, so
    /// 8 is read with 9: some zlibs compress with 9 when asked for 8). `takeover` keeps the context between messages.
    pub fn new(window_bits: u8, takeover: bool) -> Inflater {
        Inflater {
            stream: zlib_rs::Inflate::new(false, window_bits.clamp(9, 15)),
            is_fresh_each: !takeover,
        }
    }

    /// Inflates the next piece of one message's compressed payload (`last`: the message's final piece, after
    /// which the tail is put back and the message ends), handing what it makes to `keep` in pieces of at most 16
    /// KiB. `keep` checks each piece before keeping it (the message's size limit, its UTF-8) and an error from it
    /// stops the inflating at once, so a small bomb never inflates further than the limit.
    ///
    /// Data that is not a deflate stream fails with [`FrameError::BadCompression`].
    pub fn inflate(
        &mut self,
        input: &[u8],
        last: bool,
        keep: &mut dyn FnMut(&[u8]) -> Result<(), FrameError>,
    ) -> Result<(), FrameError> {
        let mut out = [0u8; PIECE];
        let tail: &[u8] = if last { &TAIL } else { &[] };
        for piece in [input, tail] {
            let mut rest = piece;
            loop {
                let (was_in, was_out) = (self.stream.total_in(), self.stream.total_out());
                let status = self
                    .stream
                    .decompress(rest, &mut out, InflateFlush::NoFlush)
                    .map_err(|e| FrameError::BadCompression(e.as_str()))?;
                let used = (self.stream.total_in() - was_in) as usize;
                let made = (self.stream.total_out() - was_out) as usize;
                rest = rest.get(used..).unwrap_or_default();
                if made > 0 {
                    keep(&out[..made])?;
                }
                if status == Status::StreamEnd {
                    // §7.2.3.4: a block with BFINAL set ends the stream. What follows it (our tail, at least) starts
                    // a new one.
                    self.stream.reset(false);
                    continue;
                }
                if (rest.is_empty() && made < out.len()) || (used == 0 && made == 0) {
                    break;
                }
            }
        }
        if last && self.is_fresh_each {
            self.stream.reset(false);
        }
        Ok(())
    }

    /// Starts over, as after a message (for a borrowed inflater whose message failed half-way).
    pub fn reset(&mut self) {
        self.stream.reset(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate_all(inflater: &mut Inflater, pieces: &[&[u8]]) -> Result<Vec<u8>, FrameError> {
        let mut got = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            inflater.inflate(piece, i + 1 == pieces.len(), &mut |bytes| {
                got.extend_from_slice(bytes);
                Ok(())
            })?;
        }
        Ok(got)
    }

    fn chat_json(n: usize) -> Vec<u8> {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                r#"{{"type":"message","from":"user{}","text":"hello number {i}, how are you?"}}"#,
                i % 7
            ));
        }
        text.into_bytes()
    }

    #[test]
    fn rfc_7692_hello_compresses_to_the_bytes_of_section_7_2_3_1() {
        // §7.2.3.1: "Hello" compressed without context takeover is f2 48 cd c9 c9 07 00.
        let mut out = Vec::new();
        Compressor::new(15, 8, 6, false).compress(b"Hello", &mut out);
        assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let mut inflater = Inflater::new(15, false);
        assert_eq!(inflate_all(&mut inflater, &[&out]).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_hello_split_into_two_pieces_inflates() {
        // §7.2.3.1 sent as two fragments.
        let mut inflater = Inflater::new(15, false);
        let got = inflate_all(
            &mut inflater,
            &[&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]],
        );
        assert_eq!(got.unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7692_context_takeover_makes_the_second_hello_shorter() {
        // §7.2.3.2: with context takeover the second "Hello" refers back to the first: f2 00 11 00 00.
        let mut compressor = Compressor::new(15, 8, 6, true);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        compressor.compress(b"Hello", &mut first);
        compressor.compress(b"Hello", &mut second);
        assert!(
            second.len() < first.len(),
            "{first:02x?} then {second:02x?}"
        );
        let mut inflater = Inflater::new(15, true);
        assert_eq!(inflate_all(&mut inflater, &[&first]).unwrap(), b"Hello");
        assert_eq!(inflate_all(&mut inflater, &[&second]).unwrap(), b"Hello");
        // The RFC's own bytes for the second message inflate too, after its first.
        let mut inflater = Inflater::new(15, true);
        inflate_all(
            &mut inflater,
            &[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]],
        )
        .unwrap();
        assert_eq!(
            inflate_all(&mut inflater, &[&[0xf2, 0x00, 0x11, 0x00, 0x00]]).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc_7692_a_final_block_and_a_stored_block_inflate() {
        // §7.2.3.4: a block with BFINAL set; §7.2.3.3: "Hello" in a stored block.
        let mut inflater = Inflater::new(15, false);
        assert_eq!(
            inflate_all(
                &mut inflater,
                &[&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]]
            )
            .unwrap(),
            b"Hello"
        );
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate_all(&mut inflater, &[&stored]).unwrap(), b"Hello");
    }

    #[test]
    fn an_empty_message_between_two_others_keeps_a_kept_context_in_step() {
        // zlib makes nothing for empty input after a sync flush; an empty payload would then desync the reader.
        for takeover in [true, false] {
            let mut compressor = Compressor::new(15, 8, 6, takeover);
            let mut inflater = Inflater::new(15, takeover);
            for message in [
                &b"Hello, hello, hello"[..],
                b"",
                b"Hello, hello, hello",
                b"",
                b"",
                b"bye",
            ] {
                let mut out = Vec::new();
                compressor.compress(message, &mut out);
                assert!(!out.is_empty(), "a compressed payload is never empty");
                assert_eq!(
                    inflate_all(&mut inflater, &[&out]).unwrap(),
                    message,
                    "takeover {takeover}"
                );
            }
        }
    }

    #[test]
    fn round_trips_at_every_window_and_memory_level() {
        let text = chat_json(400);
        for bits in 8..=15 {
            for mem_level in [1, 8, 9] {
                for takeover in [false, true] {
                    let mut compressor = Compressor::new(bits, mem_level, 6, takeover);
                    let mut inflater = Inflater::new(bits, takeover);
                    for round in 0..3 {
                        let mut out = Vec::new();
                        compressor.compress(&text, &mut out);
                        // Huffman codes alone (8 bits) save less than back-references do.
                        let most = if bits == 8 {
                            text.len() * 9 / 10
                        } else {
                            text.len() / 2
                        };
                        assert!(
                            out.len() < most,
                            "bits {bits} mem {mem_level}: {} of {}",
                            out.len(),
                            text.len()
                        );
                        let got = inflate_all(&mut inflater, &[&out]).unwrap();
                        assert!(
                            got == text,
                            "bits {bits} mem {mem_level} takeover {takeover} round {round}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_8_bit_window_is_read_by_an_8_bit_inflater() {
        // Huffman codes alone: nothing refers back, so zlib-rs's inflate with an 8-bit window (256 bytes) reads it.
        let text = chat_json(300);
        let mut out = Vec::new();
        Compressor::new(8, 8, 6, true).compress(&text, &mut out);
        let mut strict = zlib_rs::Inflate::new(false, 8);
        out.extend_from_slice(&TAIL);
        let mut got = vec![0; text.len() + 64];
        let status = strict
            .decompress(&out, &mut got, InflateFlush::SyncFlush)
            .unwrap();
        assert_ne!(status, Status::StreamEnd);
        got.truncate(strict.total_out() as usize);
        assert!(got == text);
        assert!(out.len() < text.len(), "Huffman codes still shrink text");
    }

    #[test]
    fn an_empty_message_and_incompressible_bytes_round_trip() {
        let mut noise = Vec::new();
        let mut x = 0x2545_f491_u32;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push(x as u8);
        }
        for payload in [&b""[..], &noise] {
            let mut out = Vec::new();
            Compressor::new(15, 8, 6, false).compress(payload, &mut out);
            let got = inflate_all(&mut Inflater::new(15, false), &[&out]).unwrap();
            assert!(got == payload);
        }
    }

    #[test]
    fn a_bomb_stops_inflating_at_the_first_piece_refused() {
        let zeros = vec![0u8; 64 << 20];
        let mut bomb = Vec::new();
        Compressor::new(15, 9, 9, false).compress(&zeros, &mut bomb);
        assert!(
            bomb.len() < 128 << 10,
            "64 MiB of zeros compress to {} bytes",
            bomb.len()
        );
        let limit = 1 << 20;
        let mut kept = 0;
        let err = Inflater::new(15, false)
            .inflate(&bomb, true, &mut |bytes| {
                if kept + bytes.len() > limit {
                    return Err(FrameError::MessageTooBig {
                        size: (kept + bytes.len()) as u64,
                        max: limit as u64,
                    });
                }
                kept += bytes.len();
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, FrameError::MessageTooBig { .. }));
        assert!(kept <= limit);
    }

    #[test]
    fn data_that_is_not_deflate_fails_with_bad_compression() {
        // 0xff: a block type of 3, which deflate reserves.
        let err = inflate_all(&mut Inflater::new(15, false), &[&[0xff, 0xff, 0xff]]).unwrap_err();
        assert!(matches!(err, FrameError::BadCompression(_)), "{err:?}");
        assert_eq!(err.close_code(), crate::error::close_code::INVALID_PAYLOAD);
    }
}
