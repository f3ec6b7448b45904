//! The server's read path, without a socket: bytes arrive in pieces and go into the server's own
//! `inbound::Inbound` (the buffer of a partial frame, its `message::Probe` and the `message::Assembler`), through
//! `feed` or `read_behind` as the poll loop sends them, and are decoded by `Input::next_event`, the code
//! `Server::consume` runs. So the fuzz targets and `tests/properties.rs` exercise the real read path, not a model.
//! Events are copied out as owned values, so two runs of the same bytes cut at
//! different places can be compared.

use wsloop::frame::Limits;
use wsloop::inbound::Inbound;
use wsloop::message::{Event, Message};
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

/// One connection's read side: the server's own [`Inbound`], fed as the poll loop feeds it.
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    inbound: Inbound,
    /// Pieces fed so far: every other one that may go behind a long frame does ([`Inbound::read_behind`]).
    pieces: usize,
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
            inbound: Inbound::new(max_message),
            pieces: 0,
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
        self.inbound.pending()
    }

    /// The next piece of the stream arrives: decode every complete frame, as `Server::receive` and
    /// `Server::consume` do (the server reads into its shared buffer, or straight behind a long frame still arriving:
    /// here every other piece that could goes that way, whatever its length, so both paths meet every split).
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pieces += 1;
        let mut rest = bytes;
        while !self.is_done() && !rest.is_empty() {
            let behind = self.pieces.is_multiple_of(2);
            let mut copy;
            let fresh: &mut [u8] = match self.inbound.behind_size(&self.limits, 1, rest.len()) {
                Some(max) if behind => {
                    let (n, room) = self
                        .inbound
                        .read_behind(&mut rest, max)
                        .expect("a slice reads");
                    assert!(
                        n > 0 && n <= room && room <= max,
                        "read {n} of {room}, at most {max}"
                    );
                    &mut []
                }
                _ => {
                    copy = rest.to_vec();
                    rest = &[];
                    &mut copy
                }
            };
            self.decode(fresh);
        }
    }

    fn decode(&mut self, fresh: &mut [u8]) {
        let (limits, events, error, closed) = (
            &self.limits,
            &mut self.events,
            &mut self.error,
            &mut self.closed,
        );
        self.inbound.feed(fresh, |input| {
            while error.is_none() && !*closed {
                let available = input.rest().len();
                // As the server does: a connection with permessage-deflate inflates compressed messages (here with
                // no stream to lend, which the assembler answers with its error).
                match input.next_event(limits, || None) {
                    Ok(Status::Partial) => break,
                    Ok(Status::Complete(event)) => {
                        let event = event.map(Owned::from);
                        let used = available - input.rest().len();
                        assert!(
                            used >= 2 && used <= available,
                            "used {used} of {available} bytes"
                        );
                        if let Some(event) = event {
                            *closed = matches!(event, Owned::Close(_));
                            events.push(event);
                        }
                    }
                    Err(e) => *error = Some(e),
                }
            }
            input.release();
        });
        if self.is_done() {
            // A stream that ended decodes nothing more: what came after is dropped, as the server drops it.
            self.inbound.reset();
        }
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
