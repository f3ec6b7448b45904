//! A model of the server's read path, without a socket: bytes arrive in pieces, frames are decoded by
//! `message::Probe` (the partial frame at the end unmasked as far as it came and probed for invalid text), and
//! complete frames go through `message::Assembler`.
//!
//! It follows `Server::consume` step by step, so the fuzz targets and `tests/properties.rs` exercise the codec the
//! way the poll loop drives it. Events are copied out as owned values, so two runs of the same bytes cut at
//! different places can be compared.

use wsloop::frame::Limits;
use wsloop::message::{Assembler, Event, Message, Probe};
use wsloop::{FrameError, Status};

/// An [`Event`] that owns its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// A complete text message.
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping and its payload.
    Ping(Vec<u8>),
    /// A pong and its payload.
    Pong(Vec<u8>),
    /// A close frame, with its code and reason if it had them.
    Close(Option<(u16, String)>),
}

impl From<Event<'_>> for Owned {
    fn from(event: Event<'_>) -> Owned {
        match event {
            Event::Message(Message::Text(text)) => {
                // A text message may have been checked read by read and trusted when whole
                // (`Probe::decode_trusting`): hold it to the standard library once more.
                assert!(
                    std::str::from_utf8(text.as_bytes()).is_ok(),
                    "a text message that is not UTF-8"
                );
                Owned::Text(text.to_string())
            }
            Event::Message(Message::Binary(bytes)) => Owned::Binary(bytes.to_vec()),
            Event::Ping(payload) => Owned::Ping(payload.to_vec()),
            Event::Pong(payload) => Owned::Pong(payload.to_vec()),
            Event::Close(close) => {
                Owned::Close(close.map(|(code, reason)| (code, reason.to_string())))
            }
        }
    }
}

/// One connection's read side: the bytes not yet decoded, the assembler and the probe of a partial text frame.
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    assembler: Assembler,
    probe: Probe,
    pending: Vec<u8>,
    /// Every event so far, in order.
    pub events: Vec<Owned>,
    /// The error that ended the stream, if one did.
    pub error: Option<FrameError>,
    /// True once a close frame arrived: the server reads nothing after it.
    pub closed: bool,
}

impl Reader {
    /// A reader that decodes with `limits` and joins messages of up to `max_message` bytes.
    pub fn new(limits: Limits, max_message: usize) -> Reader {
        Reader {
            limits,
            assembler: Assembler::new(max_message),
            probe: Probe::default(),
            pending: Vec::new(),
            events: Vec::new(),
            error: None,
            closed: false,
        }
    }

    /// True once the stream has ended, by an error or a close frame.
    pub fn is_done(&self) -> bool {
        self.error.is_some() || self.closed
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The next piece of the stream arrives: decode every complete frame in what is buffered.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.is_done() {
            return;
        }
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        while !self.is_done() {
            let rest = &mut self.pending[used..];
            let available = rest.len();
            // As the server does: a frame still arriving is unmasked as far as it came and probed.
            // SAFETY: `pending` is only added to behind (`feed`) and drained of whole frames, so the frame the probe
            // has seen part of is at the front of `rest`, its bytes as the probe left them.
            let decoded = unsafe {
                self.probe
                    .decode_trusting(rest, &self.limits, &self.assembler)
            };
            match decoded {
                Ok(Status::Partial) => break,
                Ok(Status::Complete((frame, n))) => {
                    assert!(n >= 2 && n <= available, "used {n} of {available} bytes");
                    assert!(frame.payload.len() as u64 <= self.limits.max_payload);
                    used += n;
                    // As the server does: a connection with permessage-deflate inflates compressed messages.
                    let pushed = if self.limits.deflate {
                        self.assembler.push_with(frame, None)
                    } else {
                        self.assembler.push(frame)
                    };
                    match pushed {
                        Ok(None) => {}
                        Ok(Some(event)) => {
                            let event = Owned::from(event);
                            self.closed = matches!(event, Owned::Close(_));
                            self.events.push(event);
                        }
                        Err(e) => self.error = Some(e),
                    }
                }
                Err(e) => self.error = Some(e),
            }
        }
        self.assembler.release();
        self.pending.drain(..used);
    }
}

/// Runs `stream` through a fresh reader in pieces of the given sizes (the rest in one last piece).
pub fn read_in_pieces(
    limits: Limits,
    max_message: usize,
    stream: &[u8],
    sizes: &[usize],
) -> Reader {
    let mut reader = Reader::new(limits, max_message);
    let mut rest = stream;
    for &size in sizes {
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        reader.feed(piece);
        rest = tail;
    }
    reader.feed(rest);
    reader
}
