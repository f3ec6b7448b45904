//! From frames to messages: fragments joined, UTF-8 checked, control frames and close codes validated.
//!
//! In the PHP tutorial `decode()` returned the text of one frame and hoped it was a whole message. Here the
//! [`Assembler`] takes decoded frames one at a time and yields an [`Event`]: a complete message, a ping, a pong or a
//! close. A message that fits in one frame is handed out without a copy; fragments are joined in a buffer that is
//! checked against the size limit before it grows. Text is validated as it arrives, so invalid UTF-8 fails on the
//! fragment that carries it (RFC 6455 §8.1), not at the end. Nothing in this module touches a socket.

use crate::error::FrameError;
use crate::frame::{self, Frame, Header, OpCode};
use crate::utf8::{self, Verdict};

/// A complete data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The opcode this message is sent with.
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        }
    }
}

/// What one frame amounts to, once assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text or binary message.
    Message(Message<'a>),
    /// A ping: the server answers it with a pong carrying the same payload (§5.5.2).
    Ping(&'a [u8]),
    /// A pong: proof of life, nothing to answer (§5.5.3).
    Pong(&'a [u8]),
    /// A close frame, with its code and reason if it had any (§5.5.1).
    Close(Option<(u16, &'a str)>),
}

/// Joins fragments into messages and checks every frame against the message-level rules.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The largest message, counted over all its fragments (§10.4).
    max_message: usize,
    /// The data type of the fragmented message in progress, if any.
    open: Option<OpCode>,
    /// The fragments so far of a binary message.
    buf: Vec<u8>,
    /// The fragments so far of a text message, as whole characters checked on arrival.
    text: String,
    /// A character cut by the end of a text fragment, until the next one finishes it.
    utf8: Utf8Stream,
}

impl Assembler {
    /// An assembler that accepts messages of up to `max_message` bytes.
    pub fn new(max_message: usize) -> Assembler {
        Assembler {
            max_message,
            ..Assembler::default()
        }
    }

    /// True while a fragmented message has started and not yet finished.
    pub fn is_in_message(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one decoded frame. `Ok(None)` means a fragment was stored and the message is not complete yet.
    #[inline]
    pub fn push<'a>(&'a mut self, frame: Frame<'a>) -> Result<Option<Event<'a>>, FrameError> {
        match frame.opcode {
            OpCode::Ping => Ok(Some(Event::Ping(frame.payload))),
            OpCode::Pong => Ok(Some(Event::Pong(frame.payload))),
            OpCode::Close => parse_close(frame.payload).map(|close| Some(Event::Close(close))),
            OpCode::Text | OpCode::Binary => {
                // §5.4: a fragmented message's frames may only be interleaved with control frames.
                if self.open.is_some() {
                    return Err(FrameError::ExpectedContinuation);
                }
                self.check_size(0, frame.payload.len())?;
                if frame.fin {
                    // The common case: a whole message in one frame, handed out without a copy.
                    // A text frame that `frame::decode` checked while unmasking it carries its text: used when it is
                    // this very payload (a `Frame` built by hand may say otherwise).
                    if let Some(text) = frame.text.filter(|text| {
                        frame.opcode == OpCode::Text && std::ptr::eq(text.as_bytes(), frame.payload)
                    }) {
                        return Ok(Some(Event::Message(Message::Text(text))));
                    }
                    return single_frame(frame.opcode, frame.payload)
                        .map(|m| Some(Event::Message(m)));
                }
                self.start(frame.opcode);
                self.append(frame.payload)?;
                Ok(None)
            }
            OpCode::Continuation => {
                if self.open.is_none() {
                    return Err(FrameError::UnexpectedContinuation);
                }
                self.check_size(self.len(), frame.payload.len())?;
                self.append(frame.payload)?;
                if !frame.fin {
                    return Ok(None);
                }
                self.finish().map(|m| Some(Event::Message(m)))
            }
        }
    }

    /// Fail-fast for a frame that is still arriving: checks what its header and the bytes so far already show.
    ///
    /// `header` is the decoded header of the frame at the front of the buffer, `masked` the payload bytes of it
    /// that have arrived so far, still masked. A continuation whose announced length takes the message over the
    /// limit fails before its payload is buffered; text fails on its first invalid UTF-8 byte (Autobahn's 6.4.x
    /// cases send invalid text in slow pieces of one frame and expect the close right away). The checks run in the
    /// order [`Assembler::push`] runs them, so the error does not depend on how the bytes were cut into reads.
    /// `probe` remembers how far earlier calls got, so each byte is looked at once.
    pub fn check_partial(
        &self,
        header: &Header,
        masked: &[u8],
        probe: &mut Probe,
    ) -> Result<(), FrameError> {
        if header.opcode == OpCode::Continuation && self.open.is_some() {
            let announced = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            self.check_size(self.len(), announced)?;
        }
        let is_text = match header.opcode {
            OpCode::Text => !self.is_in_message(),
            OpCode::Continuation => self.open == Some(OpCode::Text),
            _ => false,
        };
        if !is_text {
            return Ok(());
        }
        if probe.checked == 0 {
            probe.utf8 = if header.opcode == OpCode::Continuation {
                self.utf8
            } else {
                Utf8Stream::default()
            };
        }
        let fresh = masked.get(probe.checked..).unwrap_or_default();
        match header.masking_key {
            Some(key) => probe.utf8.push_masked(fresh, key, probe.checked)?,
            None => probe.utf8.push(fresh)?,
        }
        probe.checked += fresh.len();
        Ok(())
    }

    /// Frees the fragment buffer once its message has been delivered, so an idle connection holds none.
    pub fn release(&mut self) {
        if self.open.is_none() {
            self.buf = Vec::new();
            self.text = String::new();
        }
    }

    /// The bytes of the message in progress so far.
    fn len(&self) -> usize {
        self.buf.len() + self.text.len() + self.utf8.pending()
    }

    fn check_size(&self, have: usize, more: usize) -> Result<(), FrameError> {
        let size = have.saturating_add(more);
        if size > self.max_message {
            return Err(FrameError::MessageTooBig {
                size: size as u64,
                max: self.max_message as u64,
            });
        }
        Ok(())
    }

    fn start(&mut self, opcode: OpCode) {
        self.open = Some(opcode);
        self.buf.clear();
        self.text.clear();
        self.utf8 = Utf8Stream::default();
    }

    fn append(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        if self.open == Some(OpCode::Text) {
            // §8.1 fail fast: an invalid sequence fails on the fragment that carries it. The characters are checked
            // once, here, on their way into the text, which is then whole and valid when the last fragment comes.
            let text = &mut self.text;
            return self.utf8.push_with(payload, |whole| text.push_str(whole));
        }
        self.buf.extend_from_slice(payload);
        Ok(())
    }

    fn finish(&mut self) -> Result<Message<'_>, FrameError> {
        if self.open.take() == Some(OpCode::Text) {
            self.utf8.finish()?;
            return Ok(Message::Text(&self.text));
        }
        Ok(Message::Binary(&self.buf))
    }
}

fn single_frame(opcode: OpCode, payload: &[u8]) -> Result<Message<'_>, FrameError> {
    if opcode == OpCode::Text {
        text(payload).map(Message::Text)
    } else {
        Ok(Message::Binary(payload))
    }
}

/// §8.1: text must be valid UTF-8 (checked 32 bytes a step where the CPU allows; see [`crate::utf8`]).
fn text(bytes: &[u8]) -> Result<&str, FrameError> {
    utf8::to_str(bytes).ok_or(FrameError::InvalidUtf8)
}

/// How far [`Assembler::check_partial`] got into the frame that is still arriving. Reset it when a frame completes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Probe {
    checked: usize,
    utf8: Utf8Stream,
}

/// Incremental UTF-8 validation: at most three bytes of an incomplete character are carried between pieces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Stream {
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Stream {
    /// Checks the next piece; fails as soon as the bytes so far cannot be the start of valid UTF-8.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.push_with(bytes, |_| {})
    }

    /// [`Utf8Stream::push`], handing each run of whole characters to `whole` as it is found valid: the character
    /// that an earlier piece began and this one finishes, then this piece's own up to a character it leaves cut.
    pub fn push_with(
        &mut self,
        mut bytes: &[u8],
        mut whole: impl FnMut(&str),
    ) -> Result<(), FrameError> {
        if self.carry_len > 0 {
            // Complete the character that the previous piece left open, one byte at a time.
            while self.carry_len < 4 {
                let Some((&b, rest)) = bytes.split_first() else {
                    return Ok(());
                };
                self.carry[usize::from(self.carry_len)] = b;
                self.carry_len += 1;
                bytes = rest;
                match std::str::from_utf8(&self.carry[..usize::from(self.carry_len)]) {
                    Ok(finished) => {
                        whole(finished);
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(FrameError::InvalidUtf8),
                    Err(_) => {}
                }
            }
            self.carry_len = 0;
        }
        let Some((valid, cut)) = utf8::split_complete(bytes) else {
            return Err(FrameError::InvalidUtf8);
        };
        whole(valid);
        // An incomplete character at the very end: keep it for the next piece.
        self.carry[..cut.len()].copy_from_slice(cut);
        self.carry_len = cut.len() as u8;
        Ok(())
    }

    /// The bytes of a character cut off at the end of the last piece, kept for the next.
    fn pending(&self) -> usize {
        usize::from(self.carry_len)
    }

    /// [`Utf8Stream::push`] for bytes that are still masked: `masked` lies `offset` bytes into a frame's payload
    /// masked with `key`. Read where they lie, unmasked in registers ([`utf8::check_masked`]), not copied out.
    pub fn push_masked(
        &mut self,
        masked: &[u8],
        key: [u8; 4],
        offset: usize,
    ) -> Result<(), FrameError> {
        let unmask = |i: usize| masked[i] ^ key[(offset + i) % 4];
        // A character the previous piece left open is finished byte by byte (three at most).
        let mut done = 0;
        while self.carry_len > 0 && done < masked.len() {
            self.push(&[unmask(done)])?;
            done += 1;
        }
        let rest = &masked[done..];
        match utf8::check_masked(rest, key, offset + done) {
            Some(Verdict::Valid) => Ok(()),
            Some(Verdict::Invalid) => Err(FrameError::InvalidUtf8),
            Some(Verdict::Incomplete(at)) => {
                for i in done + at..masked.len() {
                    self.carry[usize::from(self.carry_len)] = unmask(i);
                    self.carry_len += 1;
                }
                Ok(())
            }
            // No vector path for these bytes: unmask them into a copy, a piece at a time.
            None => {
                let mut copy = [0u8; 256];
                let mut at = offset + done;
                for piece in rest.chunks(copy.len()) {
                    let copy = &mut copy[..piece.len()];
                    copy.copy_from_slice(piece);
                    frame::apply_mask(copy, key, at);
                    self.push(copy)?;
                    at += piece.len();
                }
                Ok(())
            }
        }
    }

    /// Fails if the text ended in the middle of a character.
    pub fn finish(&mut self) -> Result<(), FrameError> {
        let incomplete = self.carry_len > 0;
        *self = Utf8Stream::default();
        if incomplete {
            Err(FrameError::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

/// §5.5.1 and §7.4: an empty close payload, or a valid code and a UTF-8 reason.
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(FrameError::BadCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// §7.4.1-§7.4.2: codes a peer may send. 1004-1006 and 1015 are reserved or never sent on the wire; 1012-1014
/// (service restart, try again later, bad gateway) were registered with IANA after the RFC (§11.7) and are sent by
/// servers and proxies; the rest of 1000-2999 is unassigned; 3000-4999 are for libraries and applications.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Frame<'_> {
        Frame {
            fin,
            rsv: 0,
            opcode,
            payload,
            text: None,
        }
    }

    fn text(event: Option<Event<'_>>) -> String {
        match event {
            Some(Event::Message(Message::Text(t))) => t.to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    #[test]
    fn rfc_fragmented_hello_joins_into_one_message() {
        let mut a = Assembler::new(1024);
        assert_eq!(a.push(frame(false, OpCode::Text, b"Hel")), Ok(None));
        assert!(a.is_in_message());
        assert_eq!(
            text(a.push(frame(true, OpCode::Continuation, b"lo")).unwrap()),
            "Hello"
        );
        assert!(!a.is_in_message());
    }

    #[test]
    fn control_frames_may_interleave_fragments() {
        let mut a = Assembler::new(1024);
        a.push(frame(false, OpCode::Binary, b"ab")).unwrap();
        assert_eq!(
            a.push(frame(true, OpCode::Ping, b"p")),
            Ok(Some(Event::Ping(b"p")))
        );
        assert_eq!(
            a.push(frame(true, OpCode::Pong, b"q")),
            Ok(Some(Event::Pong(b"q")))
        );
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"cd")),
            Ok(Some(Event::Message(Message::Binary(b"abcd"))))
        );
    }

    #[test]
    fn a_single_frame_message_is_not_copied() {
        let mut a = Assembler::new(1024);
        let payload = b"zero copy".to_vec();
        let event = a.push(frame(true, OpCode::Binary, &payload)).unwrap();
        let Some(Event::Message(Message::Binary(bytes))) = event else {
            panic!()
        };
        assert_eq!(bytes.as_ptr(), payload.as_ptr());
    }

    #[test]
    fn size_limit_is_inclusive_and_counts_all_fragments() {
        let mut a = Assembler::new(10);
        assert!(a.push(frame(true, OpCode::Binary, &[0; 10])).is_ok());
        assert_eq!(
            a.push(frame(true, OpCode::Binary, &[0; 11])),
            Err(FrameError::MessageTooBig { size: 11, max: 10 })
        );
        let mut a = Assembler::new(10);
        a.push(frame(false, OpCode::Binary, &[0; 6])).unwrap();
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, &[0; 5])),
            Err(FrameError::MessageTooBig { size: 11, max: 10 })
        );
    }

    #[test]
    fn fragment_order_errors() {
        let mut a = Assembler::new(100);
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"x")),
            Err(FrameError::UnexpectedContinuation)
        );
        a.push(frame(false, OpCode::Text, b"x")).unwrap();
        assert_eq!(
            a.push(frame(true, OpCode::Text, b"y")),
            Err(FrameError::ExpectedContinuation)
        );
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_carries_it() {
        let mut a = Assembler::new(100);
        a.push(frame(false, OpCode::Text, b"ok ")).unwrap();
        // 0xF4 0x90 starts a code point above U+10FFFF: invalid at once, although the message goes on.
        assert_eq!(
            a.push(frame(false, OpCode::Continuation, &[0xf4, 0x90])),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn a_character_split_across_fragments_is_valid() {
        let euro = "€".as_bytes(); // e2 82 ac
        let mut a = Assembler::new(100);
        a.push(frame(false, OpCode::Text, &euro[..1])).unwrap();
        a.push(frame(false, OpCode::Continuation, &euro[1..2]))
            .unwrap();
        assert_eq!(
            text(
                a.push(frame(true, OpCode::Continuation, &euro[2..]))
                    .unwrap()
            ),
            "€"
        );
    }

    #[test]
    fn fragmented_text_is_assembled_exactly_at_every_pair_of_cuts() {
        utf8::scalar_only::and_vector(
            fragmented_text_is_assembled_exactly_at_every_pair_of_cuts_on_this_path,
        );
    }

    fn fragmented_text_is_assembled_exactly_at_every_pair_of_cuts_on_this_path() {
        // Characters of one to four bytes, cut anywhere into three fragments: the text is checked once, fragment by
        // fragment, and must come out whole; with one byte broken it must fail on the fragment that carries it.
        let sample = "κόσμε €𝄞 ok, and long enough for 32-byte steps 😀".repeat(2);
        let sample = sample.as_bytes();
        let mut broken = sample.to_vec();
        broken[71] = 0xff;
        for first in 0..=sample.len() {
            for second in first..=sample.len() {
                let cuts = [
                    (false, OpCode::Text, 0, first),
                    (false, OpCode::Continuation, first, second),
                ];
                let mut a = Assembler::new(1000);
                for (fin, op, from, to) in cuts {
                    assert!(a.push(frame(fin, op, &sample[from..to])).unwrap().is_none());
                }
                let last = a.push(frame(true, OpCode::Continuation, &sample[second..]));
                assert_eq!(
                    text(last.unwrap()).as_bytes(),
                    sample,
                    "cut at {first}, {second}"
                );

                let mut a = Assembler::new(1000);
                let results: Vec<bool> = [
                    (false, OpCode::Text, 0, first),
                    (false, OpCode::Continuation, first, second),
                    (true, OpCode::Continuation, second, broken.len()),
                ]
                .into_iter()
                .map(|(fin, op, from, to)| a.push(frame(fin, op, &broken[from..to])).is_ok())
                .collect();
                let carrier = if 71 < first {
                    0
                } else if 71 < second {
                    1
                } else {
                    2
                };
                // 0xff is invalid wherever it stands, so the fragment holding it is the first to fail.
                assert!(
                    results[..carrier].iter().all(|&ok| ok),
                    "cut at {first}, {second}"
                );
                assert!(!results[carrier], "cut at {first}, {second}");
            }
        }
    }

    #[test]
    fn text_ending_inside_a_character_is_invalid() {
        let mut a = Assembler::new(100);
        a.push(frame(false, OpCode::Text, b"a")).unwrap();
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, &[0xe2, 0x82])),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(
            Assembler::new(9).push(frame(true, OpCode::Text, &[0xe2])),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn utf8_stream_agrees_with_std_for_every_split() {
        utf8::scalar_only::and_vector(utf8_stream_agrees_with_std_for_every_split_on_this_path);
    }

    fn utf8_stream_agrees_with_std_for_every_split_on_this_path() {
        // Long enough to be masked and checked in several 256-byte pieces where there is no vector path.
        let long = "κόσμε €𝄞 ok, long enough for 32-byte steps ".repeat(14);
        let mut long_invalid = long.clone().into_bytes();
        long_invalid[77] = 0xff;
        let mut invalid_late = long.clone().into_bytes();
        invalid_late[600] = 0xc0;
        let samples: &[&[u8]] = &[
            &invalid_late,
            "κόσμε €𝄞 ok".as_bytes(),
            long.as_bytes(),
            &long_invalid,
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
                0x65,
            ],
            &[0xf0, 0x9f, 0x98, 0x80, 0xc0, 0xaf],
            &[0xf8, 0x88, 0x80, 0x80, 0x80],
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for cut in 0..=sample.len() {
                let mut s = Utf8Stream::default();
                let ok = s
                    .push(&sample[..cut])
                    .and_then(|_| s.push(&sample[cut..]))
                    .and_then(|_| s.finish());
                assert_eq!(ok.is_ok(), expected, "{sample:x?} cut at {cut}");
                // The same, still masked, read where it lies.
                let key = [0x37, 0xfa, 0x21, 0x3d];
                let mut masked = sample.to_vec();
                frame::apply_mask(&mut masked, key, 0);
                let mut s = Utf8Stream::default();
                let ok = s
                    .push_masked(&masked[..cut], key, 0)
                    .and_then(|_| s.push_masked(&masked[cut..], key, cut))
                    .and_then(|_| s.finish());
                assert_eq!(ok.is_ok(), expected, "masked {sample:x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn masked_utf8_stream_agrees_with_std_for_every_three_pieces() {
        // Three pieces: a character may be carried over two cuts (a 4-byte one split 1 + 1 + 2), each piece masked
        // from its own offset.
        let long = "κόσμε 𝄞😀 €, long enough for the 32-byte steps of the vector path. ".repeat(2);
        let mut broken = long.clone().into_bytes();
        broken[70] = 0xc0;
        let samples: [&[u8]; 3] = ["a𝄞😀b €".as_bytes(), long.as_bytes(), &broken];
        let key = [0x37, 0xfa, 0x21, 0x3d];
        utf8::scalar_only::and_vector(|| {
            for sample in samples {
                let expected = std::str::from_utf8(sample).is_ok();
                let mut masked = sample.to_vec();
                frame::apply_mask(&mut masked, key, 0);
                for first in 0..=sample.len() {
                    for second in first..=sample.len() {
                        let mut s = Utf8Stream::default();
                        let ok = s
                            .push_masked(&masked[..first], key, 0)
                            .and_then(|_| s.push_masked(&masked[first..second], key, first))
                            .and_then(|_| s.push_masked(&masked[second..], key, second))
                            .and_then(|_| s.finish());
                        assert_eq!(
                            ok.is_ok(),
                            expected,
                            "{sample:x?} cut at {first} and {second}"
                        );
                    }
                }
            }
        });
    }

    #[test]
    fn partial_frame_probe_fails_fast_and_only_for_text() {
        let a = Assembler::new(1 << 20);
        let mut bytes = Vec::new();
        let mut payload = b"hello ".to_vec();
        payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]); // above U+10FFFF
        payload.extend_from_slice(&[b'x'; 100]);
        frame::encode_masked(&mut bytes, true, OpCode::Text, &payload, [1, 2, 3, 4]);
        let crate::Status::Complete(header) =
            frame::decode_header(&bytes, &frame::Limits::default()).unwrap()
        else {
            panic!()
        };
        let body = &bytes[header.header_len..];
        let mut probe = Probe::default();
        assert_eq!(a.check_partial(&header, &body[..6], &mut probe), Ok(()));
        assert_eq!(
            a.check_partial(&header, &body[..7], &mut probe),
            Ok(()),
            "0xf4 alone could still be valid"
        );
        assert_eq!(
            a.check_partial(&header, &body[..8], &mut probe),
            Err(FrameError::InvalidUtf8)
        );

        let binary = Header {
            opcode: OpCode::Binary,
            ..header
        };
        assert_eq!(
            a.check_partial(&binary, body, &mut Probe::default()),
            Ok(())
        );
    }

    type CloseRow = (
        &'static [u8],
        Result<Option<(u16, &'static str)>, FrameError>,
    );

    /// One row per close-frame rule: payload, and the error if any.
    #[test]
    fn close_payload_rules() {
        let table: &[CloseRow] = &[
            (b"", Ok(None)),
            (&[0x03], Err(FrameError::CloseTooShort)),
            (&[0x03, 0xe8], Ok(Some((1000, "")))),
            (&[0x03, 0xe8, b'b', b'y', b'e'], Ok(Some((1000, "bye")))),
            (&[0x03, 0xe8, 0xff], Err(FrameError::InvalidUtf8)),
            (&[0x03, 0xed], Err(FrameError::BadCloseCode(1005))),
            (&[0x03, 0xee], Err(FrameError::BadCloseCode(1006))),
            (&[0x03, 0xf7], Err(FrameError::BadCloseCode(1015))),
            (&[0x03, 0xe7], Err(FrameError::BadCloseCode(999))),
            (&[0x0b, 0xb8], Ok(Some((3000, "")))),
            (&[0x13, 0x87], Ok(Some((4999, "")))),
            (&[0x13, 0x88], Err(FrameError::BadCloseCode(5000))),
        ];
        for (payload, expected) in table {
            assert_eq!(&parse_close(payload), expected, "{payload:x?}");
        }
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert!(is_valid_close_code(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!is_valid_close_code(code), "{code}");
        }
    }
}
