//! From frames to messages: fragments joined, UTF-8 checked, control frames and close codes validated.
//!
//! In the PHP tutorial `decode()` returned the text of one frame and hoped it was a whole message. Here the
//! [`Assembler`] takes decoded frames one at a time and yields an [`Event`]: a complete message, a ping, a pong or a
//! close. A message that fits in one frame is handed out without a copy; fragments are joined in a buffer that is
//! checked against the size limit before it grows. Text is validated as it arrives, so invalid UTF-8 fails on the
//! fragment that carries it (RFC 6455 §8.1), not at the end. Nothing in this module touches a socket.

use crate::deflate::Inflater;
use crate::error::FrameError;
use crate::frame::{self, Frame, Header, Limits, OpCode, RSV1_COMPRESSED};
use crate::utf8;
use crate::Status;

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
///
/// A message in one frame needs no state at all, so the state of a fragmented one is boxed: allocated when such a
/// message starts and freed by [`Assembler::release`] once it is delivered. An idle connection holds two words.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The largest message, counted over all its fragments (§10.4); for a compressed one, inflated.
    max_message: usize,
    /// The fragmented (or compressed) message in progress, or just delivered and not yet released.
    partial: Option<Box<Partial>>,
}

/// The inflater a compressed message goes through ([`Assembler::push_with`]).
#[derive(Debug)]
pub enum Inflate<'i> {
    /// The connection's own, for a client that keeps its compression context from one message to the next
    /// (RFC 7692 §7.1.1.2): every compressed message goes through it.
    Own(&'i mut Inflater),
    /// Its loop's, shared by connections whose clients start every message afresh: borrowed for a compressed
    /// message in one frame, and left ready for the next message whatever happens to this one.
    Shared(&'i mut Inflater),
}

/// The state of a fragmented message.
#[derive(Debug, Default)]
struct Partial {
    /// The data type of the message while it is in progress; `None` once delivered.
    open: Option<OpCode>,
    /// The fragments so far of a binary message.
    buf: Vec<u8>,
    /// The fragments so far of a text message, as whole characters checked on arrival.
    text: String,
    /// A character cut by the end of a text fragment, until the next one finishes it.
    utf8: Utf8Stream,
    /// The message is compressed (RSV1 on its first frame, RFC 7692 §6): its fragments are inflated as they come.
    is_compressed: bool,
    /// An inflater borrowed for a compressed message in several frames, when the connection has none of its own.
    inflater: Option<Box<Inflater>>,
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
        self.open().is_some()
    }

    /// The memory the fragments of the message in progress take: their buffers' capacity. Zero unless a fragmented
    /// (or compressed) message is in progress or was just delivered and not yet released. What the server's memory
    /// budget counts of the assembler ([`Config::max_memory`](crate::Config::max_memory)).
    #[inline]
    pub fn held(&self) -> usize {
        self.partial.as_ref().map_or(0, |partial| {
            partial.buf.capacity() + partial.text.capacity()
        })
    }

    /// The data type of the fragmented message in progress, if any.
    #[inline]
    fn open(&self) -> Option<OpCode> {
        self.partial.as_ref().and_then(|partial| partial.open)
    }

    /// True while the message in progress is a compressed one (RFC 7692).
    #[inline]
    pub fn is_compressed(&self) -> bool {
        self.partial
            .as_ref()
            .is_some_and(|partial| partial.open.is_some() && partial.is_compressed)
    }

    /// Takes one decoded frame. `Ok(None)` means a fragment was stored and the message is not complete yet.
    ///
    /// A frame of a compressed message (RFC 7692) needs an inflater: give it through [`Assembler::push_with`].
    /// Here it is taken for a plain one.
    #[inline]
    pub fn push<'a>(&'a mut self, frame: Frame<'a>) -> Result<Option<Event<'a>>, FrameError> {
        match frame.opcode {
            OpCode::Ping => Ok(Some(Event::Ping(frame.payload))),
            OpCode::Pong => Ok(Some(Event::Pong(frame.payload))),
            OpCode::Close => parse_close(frame.payload).map(|close| Some(Event::Close(close))),
            OpCode::Text | OpCode::Binary => {
                self.check_order(frame.opcode)?;
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
                self.check_order(frame.opcode)?;
                self.check_size(self.len(), frame.payload.len())?;
                self.append(frame.payload)?;
                if !frame.fin {
                    return Ok(None);
                }
                self.finish().map(|m| Some(Event::Message(m)))
            }
        }
    }

    /// [`Assembler::push`] for a connection with permessage-deflate: a frame of a compressed message (RSV1 on its
    /// first frame) is inflated through `inflate` (or, with `None`, an inflater made for the message); any other
    /// frame goes to `push`.
    #[inline]
    pub fn push_with<'a>(
        &'a mut self,
        frame: Frame<'a>,
        inflate: Option<Inflate<'_>>,
    ) -> Result<Option<Event<'a>>, FrameError> {
        let is_data = !frame.opcode.is_control();
        if is_data && (frame.rsv != 0 || self.is_compressed()) {
            return self.push_compressed(frame, inflate);
        }
        self.push(frame)
    }

    /// A frame of a compressed message: inflated as it comes, each piece counted against the limit and checked as
    /// text before it is kept, so neither a bomb nor invalid UTF-8 gets further than its first piece (§8.1).
    #[inline(never)]
    fn push_compressed<'a>(
        &'a mut self,
        frame: Frame<'a>,
        inflate: Option<Inflate<'_>>,
    ) -> Result<Option<Event<'a>>, FrameError> {
        self.check_order(frame.opcode)?;
        if frame.opcode != OpCode::Continuation {
            self.start(frame.opcode);
        }
        let max = self.max_message;
        let partial = self
            .partial
            .as_deref_mut()
            .ok_or(FrameError::UnexpectedContinuation)?;
        partial.is_compressed = true;
        // Whose inflater: the connection's own; else the loop's for a message in one frame; else one made for
        // this message, kept in its state until its last frame.
        let mut borrowed: Option<Box<Inflater>> = None;
        let is_whole = frame.fin && frame.opcode != OpCode::Continuation;
        let inflater: &mut Inflater = match inflate {
            Some(Inflate::Own(own)) => own,
            Some(Inflate::Shared(shared)) if is_whole => shared,
            _ => borrowed.insert(
                partial
                    .inflater
                    .take()
                    .unwrap_or_else(|| Box::new(Inflater::new(15, false))),
            ),
        };
        let result = inflater.inflate(frame.payload, frame.fin, &mut |piece| {
            partial.keep(piece, max)
        });
        if result.is_err() {
            inflater.reset(); // a shared one serves the next message of another connection
        }
        result?;
        if !frame.fin {
            partial.inflater = borrowed;
            return Ok(None);
        }
        self.finish().map(|m| Some(Event::Message(m)))
    }

    /// Fail-fast for a frame that is still arriving: checks what its header already shows (the message's size
    /// limit), and says whether its payload is text to be checked as it comes (`utf8` set up for it on the `first`
    /// call for the frame: a continuation goes on from where the message's text stands). A continuation whose
    /// announced length takes the message over the limit fails before its payload is buffered; text fails on its
    /// first invalid UTF-8 byte (Autobahn's 6.4.x cases send invalid text in slow pieces of one frame and expect the
    /// close right away). The checks run in the order [`Assembler::push`] runs them, so the error does not depend on
    /// how the bytes were cut into reads. A frame out of order is left to `push`: it is neither counted nor text.
    fn check_partial(
        &self,
        header: &Header,
        first: bool,
        utf8: &mut Utf8Stream,
    ) -> Result<bool, FrameError> {
        let announced = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
        // A compressed payload says nothing of the message's size or text until it is inflated, whole.
        if self.is_compressed() || header.rsv == RSV1_COMPRESSED {
            return Ok(false);
        }
        let is_text = match header.opcode {
            OpCode::Continuation if self.open().is_some() => {
                self.check_size(self.len(), announced)?;
                self.open() == Some(OpCode::Text)
            }
            // Only where the frame limit is above the message limit (never in the server) does this catch more.
            OpCode::Text | OpCode::Binary if self.open().is_none() => {
                self.check_size(0, announced)?;
                header.opcode == OpCode::Text
            }
            _ => false,
        };
        if is_text && first {
            *utf8 = match &self.partial {
                Some(partial) if header.opcode == OpCode::Continuation => partial.utf8,
                _ => Utf8Stream::default(),
            };
        }
        Ok(is_text)
    }

    /// Frees the fragments' state and buffers once their message has been delivered, so an idle connection holds
    /// none.
    #[inline]
    pub fn release(&mut self) {
        if self.partial.is_some() && self.open().is_none() {
            self.partial = None;
        }
    }

    /// Drops the message in progress, if any, and its buffers: for a connection that will decode nothing more (a
    /// message refused for its size would otherwise hold up to the limit until the connection is gone).
    pub fn clear(&mut self) {
        self.partial = None;
    }

    /// The bytes of the message in progress so far.
    fn len(&self) -> usize {
        self.partial.as_ref().map_or(0, |partial| {
            partial.buf.len() + partial.text.len() + partial.utf8.pending()
        })
    }

    /// §5.4: a fragmented message's frames may only be interleaved with control frames; a continuation continues
    /// one. A frame out of that order is a protocol error whatever else is wrong with it (its length, say).
    pub fn check_order(&self, opcode: OpCode) -> Result<(), FrameError> {
        match opcode {
            OpCode::Text | OpCode::Binary if self.open().is_some() => {
                Err(FrameError::ExpectedContinuation)
            }
            OpCode::Continuation if self.open().is_none() => {
                Err(FrameError::UnexpectedContinuation)
            }
            _ => Ok(()),
        }
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

    /// Starts a fragmented message: its state is allocated here, or reused if the one before it in the same read
    /// has not been released yet.
    fn start(&mut self, opcode: OpCode) {
        let partial = self.partial.get_or_insert_with(Box::default);
        partial.open = Some(opcode);
        partial.buf.clear();
        partial.text.clear();
        partial.utf8 = Utf8Stream::default();
        partial.is_compressed = false;
        partial.inflater = None;
    }

    /// Only called with a message open (after `start`, or for a continuation that `check_order` let through).
    fn append(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let Some(partial) = self.partial.as_deref_mut() else {
            return Err(FrameError::UnexpectedContinuation);
        };
        if partial.open == Some(OpCode::Text) {
            // §8.1 fail fast: an invalid sequence fails on the fragment that carries it. The characters are checked
            // once, here, on their way into the text, which is then whole and valid when the last fragment comes.
            let text = &mut partial.text;
            return partial
                .utf8
                .push_with(payload, |whole| text.push_str(whole));
        }
        partial.buf.extend_from_slice(payload);
        Ok(())
    }

    fn finish(&mut self) -> Result<Message<'_>, FrameError> {
        let Some(partial) = self.partial.as_deref_mut() else {
            return Err(FrameError::UnexpectedContinuation);
        };
        if partial.open.take() == Some(OpCode::Text) {
            partial.utf8.finish()?;
            return Ok(Message::Text(&partial.text));
        }
        Ok(Message::Binary(&partial.buf))
    }
}

impl Partial {
    /// Keeps one inflated piece of a compressed message, once it is known to fit under `max` bytes and, for text,
    /// to go on as valid UTF-8. Storage grows by doubling but never past `max`, so a message refused for its size
    /// has not been given more memory than the limit.
    fn keep(&mut self, piece: &[u8], max: usize) -> Result<(), FrameError> {
        let have = self.buf.len() + self.text.len() + self.utf8.pending();
        let size = have.saturating_add(piece.len());
        if size > max {
            return Err(FrameError::MessageTooBig {
                size: size as u64,
                max: max as u64,
            });
        }
        let grow = |capacity: usize, len: usize| {
            let wanted = capacity.saturating_mul(2).max(len + piece.len()).min(max);
            wanted.saturating_sub(len)
        };
        if self.open == Some(OpCode::Text) {
            if self.text.capacity() < self.text.len() + piece.len() {
                self.text
                    .reserve_exact(grow(self.text.capacity(), self.text.len()));
            }
            let text = &mut self.text;
            return self.utf8.push_with(piece, |whole| text.push_str(whole));
        }
        if self.buf.capacity() < self.buf.len() + piece.len() {
            self.buf
                .reserve_exact(grow(self.buf.capacity(), self.buf.len()));
        }
        self.buf.extend_from_slice(piece);
        Ok(())
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

internal! {
    /// The frame at the front of a connection's bytes while it is still arriving: how much of its payload has been
    /// unmasked in place, and where the check of its text stands. The server decodes every frame with
    /// [`Probe::decode_trusting`].
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Probe {
        unmasked: usize,
        utf8: Utf8Stream,
        /// The frame is a whole text message, and its first `unmasked` payload bytes were checked as they came.
        is_checked_text: bool,
    }
}

impl Probe {
    /// Decodes the frame at the front of `buf` as [`frame::decode`] does, but for a frame that is not whole yet
    /// does what can be done already: the payload bytes that came since the last call are unmasked in place while
    /// they are still in the cache, and checked for what they show ([`Assembler`]'s size limit for a continuation,
    /// fail-fast UTF-8 for text). When the frame is whole, only the rest is unmasked, and the probe starts over.
    ///
    /// Call it with the same frame at the front of `buf` until it is whole (earlier bytes as this left them), and
    /// with `assembler` as it stands before that frame.
    #[cfg_attr(
        not(feature = "internals"),
        allow(
            dead_code,
            reason = "the server decodes with `decode_trusting`; this safe form is for the tests and for benches and \
                      fuzz targets that cannot make its promise"
        )
    )]
    #[inline]
    pub fn decode<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
        assembler: &Assembler,
    ) -> Result<Status<(Frame<'a>, usize)>, FrameError> {
        self.decode_with(buf, limits, assembler, false)
    }

    /// [`Probe::decode`], except that a text message in one frame whose text was checked as it arrived is not
    /// checked again, whole, when it is complete: only the bytes that came last are, so each byte is read once.
    ///
    /// # Safety
    ///
    /// A probe is for one frame at a time. The frame at the front of `buf` must be the one earlier calls saw part of
    /// (if any did since the probe was made or last completed a frame), and the bytes they saw must be the same bytes
    /// now, as those calls left them. They may have been copied or moved elsewhere, and more bytes added behind
    /// them, but none may have changed: they were found to be UTF-8, and the message's text is made of them without
    /// a second look. A caller that drops a frame before it is whole starts over with a new probe.
    #[inline]
    pub unsafe fn decode_trusting<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
        assembler: &Assembler,
    ) -> Result<Status<(Frame<'a>, usize)>, FrameError> {
        self.decode_with(buf, limits, assembler, true)
    }

    /// True when no part of a frame has been seen since the probe was made or last completed a frame.
    pub fn is_idle(&self) -> bool {
        self.unmasked == 0 && !self.is_checked_text
    }

    /// Both of the above; `trust` says whether the caller made the promise of [`Probe::decode_trusting`].
    #[inline(always)]
    fn decode_with<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
        assembler: &Assembler,
        trust: bool,
    ) -> Result<Status<(Frame<'a>, usize)>, FrameError> {
        let header = match frame::decode_header(buf, limits) {
            Ok(Status::Complete(header)) => header,
            Ok(Status::Partial) => return Ok(Status::Partial),
            // The header alone cannot tell a frame out of order, so it may report a length over the limit first:
            // the protocol error comes first, as it does in `Assembler::push`.
            Err(e @ FrameError::MessageTooBig { .. }) => {
                let order = buf
                    .first()
                    .and_then(|&b0| OpCode::from_u8(b0 & 0x0F))
                    .map_or(Ok(()), |opcode| assembler.check_order(opcode));
                return Err(order.err().unwrap_or(e));
            }
            Err(e) => return Err(e),
        };
        if header.frame_len().is_some_and(|len| len <= buf.len()) {
            if self.is_idle() {
                // The common case, a frame that came whole: nothing to finish, nothing to start over.
                return Ok(frame::decode_body(buf, &header, 0));
            }
            return Ok(std::mem::take(self).finish(buf, &header, trust));
        }
        let payload = buf.get_mut(header.header_len..).unwrap_or_default();
        self.arrived(&header, payload, assembler)?;
        Ok(Status::Partial)
    }

    /// More of the frame's payload has arrived (`payload` is all of it so far): unmask the new bytes, check them.
    #[inline(never)]
    fn arrived(
        &mut self,
        header: &Header,
        payload: &mut [u8],
        assembler: &Assembler,
    ) -> Result<(), FrameError> {
        let (first, offset) = (self.unmasked == 0, self.unmasked);
        let is_text = assembler.check_partial(header, first, &mut self.utf8)?;
        let fresh = payload.get_mut(offset..).unwrap_or_default();
        self.unmasked += fresh.len();
        // Once a piece was not checked as text, or failed, no later one makes the frame's text trusted.
        let was_checked = first || self.is_checked_text;
        self.is_checked_text = false;
        // Text is unmasked in the pass that checks it; either way every fresh byte is unmasked, even when the text is
        // found invalid. (A length over the limit failed above, before any was unmasked or counted.)
        match (header.masking_key, is_text) {
            (Some(key), true) => self.utf8.push_unmasking(fresh, key, offset)?,
            (None, true) => self.utf8.push(fresh)?,
            (Some(key), false) => frame::apply_mask(fresh, key, offset),
            (None, false) => {}
        }
        self.is_checked_text =
            was_checked && is_text && header.opcode == OpCode::Text && header.fin;
        Ok(())
    }

    /// The frame this probe saw arrive, now that `buf` holds all of it: the rest unmasked, and under the promise of
    /// [`Probe::decode_trusting`] (`trust`), its text checked only where the probe had not.
    #[inline(never)]
    fn finish<'a>(
        self,
        buf: &'a mut [u8],
        header: &Header,
        trust: bool,
    ) -> Status<(Frame<'a>, usize)> {
        let mut status = frame::decode_body(buf, header, self.unmasked);
        if let Status::Complete((frame, _)) = &mut status {
            if trust && self.is_checked_text {
                frame.text = self.finish_text(frame.payload);
            }
        }
        status
    }

    /// The whole payload of a text message as text, if the bytes after the first `unmasked`, which were checked as
    /// they came, finish it as valid UTF-8. Called only under the promise of [`Probe::decode_trusting`].
    fn finish_text(mut self, payload: &[u8]) -> Option<&str> {
        let rest = payload.get(self.unmasked..)?;
        self.utf8.push(rest).ok()?;
        self.utf8.finish().ok()?;
        // SAFETY: the first `unmasked` bytes were checked as they arrived, by this `utf8` (which kept a character
        // they cut off), and are unchanged since (the caller's promise); the rest carried that check to the end of
        // the payload without an error or a character left open. So the whole payload is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(payload) })
    }
}

internal! {
    /// Incremental UTF-8 validation: at most three bytes of an incomplete character are carried between pieces.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct Utf8Stream {
        carry: [u8; 4],
        carry_len: u8,
    }
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
        bytes: &[u8],
        mut whole: impl FnMut(&str),
    ) -> Result<(), FrameError> {
        let taken = self.finish_carry(bytes, &mut whole)?;
        if self.carry_len > 0 {
            return Ok(());
        }
        let Some((valid, cut)) = utf8::split_complete(&bytes[taken..]) else {
            return Err(FrameError::InvalidUtf8);
        };
        whole(valid);
        self.carry_from(cut);
        Ok(())
    }

    /// [`Utf8Stream::push`] for bytes that are still masked: `masked` lies `offset` bytes into a payload masked with
    /// `key`. They are unmasked in place in the same pass that checks them (see [`utf8::unmask_and_check`]), every
    /// one of them whatever the outcome.
    pub fn push_unmasking(
        &mut self,
        masked: &mut [u8],
        key: [u8; 4],
        offset: usize,
    ) -> Result<(), FrameError> {
        // The character an earlier piece left open needs at most three more bytes: they are unmasked first.
        let head = if self.carry_len > 0 {
            masked.len().min(3)
        } else {
            0
        };
        let mut first = [0u8; 3];
        first[..head].copy_from_slice(&masked[..head]);
        frame::apply_mask(&mut first[..head], key, offset);
        let taken = match self.finish_carry(&first[..head], &mut |_| {}) {
            Ok(taken) => taken,
            Err(e) => {
                frame::apply_mask(masked, key, offset);
                return Err(e);
            }
        };
        let (done, rest) = masked.split_at_mut(taken);
        done.copy_from_slice(&first[..taken]);
        if self.carry_len > 0 {
            return Ok(());
        }
        match utf8::unmask_and_check(rest, key, offset + taken) {
            utf8::Verdict::Valid => Ok(()),
            utf8::Verdict::Incomplete(end) => {
                self.carry_from(&rest[end..]);
                Ok(())
            }
            utf8::Verdict::Invalid => Err(FrameError::InvalidUtf8),
        }
    }

    /// Completes the character that the previous piece left open, one byte of `bytes` at a time, and hands it to
    /// `whole`; returns how many bytes it took. If `bytes` ran out first, the character is still open.
    fn finish_carry(
        &mut self,
        bytes: &[u8],
        whole: &mut impl FnMut(&str),
    ) -> Result<usize, FrameError> {
        if self.carry_len == 0 {
            return Ok(0);
        }
        for (taken, &b) in bytes.iter().enumerate() {
            if usize::from(self.carry_len) == self.carry.len() {
                // Cannot happen: four bytes that begin validly are a whole character. Said, not assumed.
                return Err(FrameError::InvalidUtf8);
            }
            self.carry[usize::from(self.carry_len)] = b;
            self.carry_len += 1;
            match std::str::from_utf8(&self.carry[..usize::from(self.carry_len)]) {
                Ok(finished) => {
                    whole(finished);
                    self.carry_len = 0;
                    return Ok(taken + 1);
                }
                Err(e) if e.error_len().is_some() => return Err(FrameError::InvalidUtf8),
                Err(_) => {}
            }
        }
        Ok(bytes.len())
    }

    /// Keeps `cut`, the one to three bytes of a character that the piece began and did not finish.
    fn carry_from(&mut self, cut: &[u8]) {
        self.carry[..cut.len()].copy_from_slice(cut);
        self.carry_len = cut.len() as u8;
    }

    /// The bytes of a character cut off at the end of the last piece, kept for the next.
    fn pending(&self) -> usize {
        usize::from(self.carry_len)
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
    fn fragment_state_exists_only_while_a_fragmented_message_does() {
        let mut a = Assembler::new(1024);
        a.push(frame(true, OpCode::Text, b"whole")).unwrap();
        assert!(a.partial.is_none(), "a message in one frame needs no state");
        assert_eq!(a.held(), 0);
        a.push(frame(false, OpCode::Text, b"h\xc3")).unwrap();
        a.release();
        assert!(a.partial.is_some(), "kept while the message is open");
        assert!(
            a.held() >= 1,
            "the memory budget sees what the fragments hold"
        );
        assert_eq!(
            a.push(frame(true, OpCode::Continuation, b"\xa9!")),
            Ok(Some(Event::Message(Message::Text("hé!"))))
        );
        a.release();
        assert!(a.partial.is_none(), "freed once the message is delivered");
        assert_eq!(a.held(), 0);
        a.push(frame(false, OpCode::Binary, &[7; 300])).unwrap();
        assert!(a.held() >= 300);
        a.clear();
        assert_eq!(a.held(), 0, "a message dropped holds nothing");
        assert_eq!(std::mem::size_of::<Assembler>(), 16);
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
            }
        }
    }

    /// A masked text frame of `text` arriving in reads that end after `cuts` payload bytes, decoded by the probe as
    /// the server decodes (`trusting`: without a second check of the text): the text it comes to, or the first
    /// error.
    fn through_probe(text: &[u8], cuts: &[usize], trusting: bool) -> Result<String, FrameError> {
        let mut bytes = Vec::new();
        frame::encode_masked(
            &mut bytes,
            true,
            OpCode::Text,
            text,
            [0x37, 0xfa, 0x21, 0x3d],
        );
        let (total, header_len) = (bytes.len(), bytes.len() - text.len());
        let (limits, mut assembler, mut probe) =
            (Limits::default(), Assembler::new(1 << 20), Probe::default());
        for end in cuts.iter().map(|cut| header_len + cut).chain([total]) {
            let arrived = &mut bytes[..end];
            let decoded = if trusting {
                // SAFETY: `bytes` does not change; each read only shows more of it.
                unsafe { probe.decode_trusting(arrived, &limits, &assembler) }
            } else {
                probe.decode(arrived, &limits, &assembler)
            };
            if let Status::Complete((frame, used)) = decoded? {
                assert_eq!(used, total);
                return match assembler.push(frame)? {
                    Some(Event::Message(Message::Text(text))) => Ok(text.to_string()),
                    other => panic!("{other:?}"),
                };
            }
        }
        panic!("the whole frame was not decoded")
    }

    #[test]
    fn a_text_frame_unmasked_as_it_arrives_agrees_with_std_for_every_three_pieces() {
        // Three reads: a character may be carried over two cuts (a 4-byte one split 1 + 1 + 2); each piece is
        // unmasked from its own offset into the key, and the text comes out whole or fails where std says.
        let long = "κόσμε 𝄞😀 €, long enough for the 32-byte steps of the vector path. ".repeat(2);
        let mut broken = long.clone().into_bytes();
        broken[70] = 0xc0;
        let samples: [&[u8]; 3] = ["a𝄞😀b €".as_bytes(), long.as_bytes(), &broken];
        utf8::scalar_only::and_vector(|| {
            for sample in samples {
                let expected = std::str::from_utf8(sample)
                    .map(str::to_string)
                    .map_err(|_| FrameError::InvalidUtf8);
                for first in 0..=sample.len() {
                    for second in first..=sample.len() {
                        for trusting in [false, true] {
                            assert_eq!(
                                through_probe(sample, &[first, second], trusting),
                                expected,
                                "{sample:x?} cut at {first} and {second}, trusting: {trusting}"
                            );
                        }
                    }
                }
            }
        });
    }

    #[test]
    fn a_message_over_the_limit_fails_for_its_size_however_it_arrives() {
        // Frames may be longer than messages here (a library user's choice; the server sets both alike): invalid text
        // in a frame over the message limit is too big whether it comes whole or in pieces, as `push` says.
        let limits = Limits {
            max_payload: 1000,
            require_mask: true,
            deflate: false,
        };
        let mut text = vec![0xff];
        text.extend_from_slice(&[b'a'; 19]);
        let mut bytes = Vec::new();
        frame::encode_masked(&mut bytes, true, OpCode::Text, &text, [1, 2, 3, 4]);
        let too_big = Err(FrameError::MessageTooBig { size: 20, max: 10 });
        for end in [bytes.len() - 10, bytes.len()] {
            let mut assembler = Assembler::new(10);
            let mut arrived = bytes[..end].to_vec();
            let outcome = match Probe::default().decode(&mut arrived, &limits, &assembler) {
                Ok(Status::Complete((frame, _))) => assembler.push(frame).map(|_| ()),
                other => other.map(|_| ()),
            };
            assert_eq!(outcome, too_big, "{end} of {} bytes", bytes.len());
        }
    }

    #[test]
    fn push_unmasking_agrees_with_push_and_unmasks_every_byte_whatever_it_finds() {
        let long = "κόσμε 𝄞😀 €, long enough for the 32-byte steps of the vector path. ".repeat(2);
        let mut late_error = long.clone().into_bytes();
        late_error[90] = 0xff;
        let mut cut_then_bad = long.clone().into_bytes();
        cut_then_bad[1] = b'!'; // `κ` (two bytes) loses its continuation byte
        let samples: [&[u8]; 5] = [
            long.as_bytes(),
            &late_error,
            &cut_then_bad,
            "a𝄞😀b".as_bytes(),
            &[0xf0, 0x9d, 0x84, 0x41, 0x41],
        ];
        let key = [0x37, 0xfa, 0x21, 0x3d];
        utf8::scalar_only::and_vector(|| {
            for sample in samples {
                for cut in 0..=sample.len() {
                    let mut masked = sample.to_vec();
                    frame::apply_mask(&mut masked, key, 0);
                    let (mut plain, mut unmasking) = (Utf8Stream::default(), Utf8Stream::default());
                    let (a, b) = masked.split_at_mut(cut);
                    let first = (
                        plain.push(&sample[..cut]),
                        unmasking.push_unmasking(a, key, 0),
                    );
                    let second = (
                        plain.push(&sample[cut..]),
                        unmasking.push_unmasking(b, key, cut),
                    );
                    assert_eq!(first.0, first.1, "{sample:x?} cut at {cut}");
                    if first.0.is_ok() {
                        assert_eq!(second.0, second.1, "{sample:x?} cut at {cut}");
                        assert_eq!(
                            plain.finish(),
                            unmasking.finish(),
                            "{sample:x?} cut at {cut}"
                        );
                    }
                    assert!(
                        masked == sample,
                        "{sample:x?} cut at {cut}: not all unmasked"
                    );
                }
            }
        });
    }

    #[test]
    fn text_that_failed_a_check_is_never_trusted_later() {
        // A caller that reads on after the error: the bytes that failed stay failed, however the frame ends.
        let mut text = b"valid so far, then ".to_vec();
        text.push(0xff);
        text.extend_from_slice(&[b'z'; 40]);
        let mut bytes = Vec::new();
        frame::encode_masked(&mut bytes, true, OpCode::Text, &text, [5, 6, 7, 8]);
        let header_len = bytes.len() - text.len();
        let (assembler, limits, mut probe) =
            (Assembler::new(1 << 20), Limits::default(), Probe::default());
        // SAFETY: `bytes` does not change; each call only shows more of it.
        let first =
            unsafe { probe.decode_trusting(&mut bytes[..header_len + 25], &limits, &assembler) };
        assert_eq!(first.err(), Some(FrameError::InvalidUtf8));
        let more =
            unsafe { probe.decode_trusting(&mut bytes[..header_len + 40], &limits, &assembler) };
        assert!(matches!(more, Ok(Status::Partial)));
        let Ok(Status::Complete((frame, _))) =
            (unsafe { probe.decode_trusting(&mut bytes, &limits, &assembler) })
        else {
            panic!("a whole frame")
        };
        assert_eq!(frame.text, None, "its text is not trusted");
        let mut assembler = assembler;
        assert_eq!(assembler.push(frame), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn the_probe_fails_fast_on_text_and_only_on_text() {
        let mut payload = b"hello ".to_vec();
        payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]); // above U+10FFFF
        payload.extend_from_slice(&[b'x'; 100]);
        for (opcode, fails) in [(OpCode::Text, true), (OpCode::Binary, false)] {
            let mut bytes = Vec::new();
            frame::encode_masked(&mut bytes, true, opcode, &payload, [1, 2, 3, 4]);
            let header_len = bytes.len() - payload.len();
            let (a, limits, mut probe) =
                (Assembler::new(1 << 20), Limits::default(), Probe::default());
            let mut read = |payload_bytes: usize| {
                probe
                    .decode(&mut bytes[..header_len + payload_bytes], &limits, &a)
                    .map(|status| matches!(status, Status::Partial))
            };
            assert_eq!(read(6), Ok(true));
            assert_eq!(read(7), Ok(true), "0xf4 alone could still be valid");
            let expected = if fails {
                Err(FrameError::InvalidUtf8)
            } else {
                Ok(true)
            };
            assert_eq!(read(8), expected, "{opcode:?}");
        }
    }

    #[test]
    fn a_frame_out_of_order_is_a_protocol_error_even_when_it_is_also_too_long() {
        let limits = Limits {
            max_payload: 10,
            require_mask: true,
            deflate: false,
        };
        let header_of = |opcode| {
            let mut bytes = Vec::new();
            frame::encode_masked(&mut bytes, true, opcode, &[b'x'; 11], [1, 2, 3, 4]);
            bytes
        };
        let decode = |assembler: &Assembler, opcode| {
            Probe::default()
                .decode(&mut header_of(opcode), &limits, assembler)
                .err()
        };
        let too_big = Some(FrameError::MessageTooBig { size: 11, max: 10 });
        let (idle, mut open) = (Assembler::new(10), Assembler::new(10));
        open.push(frame(false, OpCode::Text, b"ab")).unwrap();
        // In order, the length is what is wrong (1009); out of order, the order is (1002), as `push` would say.
        assert_eq!(decode(&idle, OpCode::Binary), too_big);
        assert_eq!(decode(&open, OpCode::Continuation), too_big);
        assert_eq!(
            decode(&open, OpCode::Binary),
            Some(FrameError::ExpectedContinuation)
        );
        assert_eq!(
            decode(&idle, OpCode::Continuation),
            Some(FrameError::UnexpectedContinuation)
        );
    }

    #[test]
    fn a_binary_frame_unmasked_as_it_arrives_is_unmasked_exactly_once() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut bytes = Vec::new();
        frame::encode_masked(&mut bytes, true, OpCode::Binary, &payload, [9, 8, 7, 6]);
        let (a, limits, mut probe) = (Assembler::new(1 << 20), Limits::default(), Probe::default());
        // Reads of every length from 1 to 80 bytes, each one's bytes unmasked from where the last left off.
        let (mut end, mut step) = (0, 1);
        let frame = loop {
            end = (end + step).min(bytes.len());
            step = step % 80 + 1;
            match probe.decode(&mut bytes[..end], &limits, &a) {
                Ok(Status::Partial) => continue,
                Ok(Status::Complete((frame, _))) => break frame,
                Err(e) => panic!("{e}"),
            }
        };
        assert!(frame.payload == payload, "the payload differs");
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
