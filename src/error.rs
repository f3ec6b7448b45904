//! Everything that can go wrong, each mapped to what the peer sees on the wire.
//!
//! In the PHP tutorial a bad request or a bad frame simply went unnoticed. Here every RFC 6455 violation has a
//! variant of its own, and the mapping to the wire lives in exactly one place per kind:
//! [`FrameError::close_code`] (the close code sent before the TCP connection is dropped) and
//! [`HandshakeError::status`] (the HTTP status of the rejection).

use std::fmt;
use std::io;
use std::time::Duration;

/// Close codes the server sends (RFC 6455 §7.4.1).
pub(crate) mod close_code {
    /// 1001: the server is going away (shutting down).
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// 1005: no status code was present (never sent on the wire; reported to callbacks).
    pub const NO_STATUS: u16 = 1005;
    /// 1006: the connection was dropped without a close frame (never sent on the wire; reported to callbacks).
    pub const ABNORMAL: u16 = 1006;
    /// 1007: a text message that is not valid UTF-8, or a compressed one that does not inflate.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// 1008: a policy violation (here: a receiver too slow to keep up, or a message too slow to arrive).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// 1009: a message larger than the server accepts.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// A violation of RFC 6455 found while decoding frames or assembling messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// §5.1: a client frame without the MASK bit.
    UnmaskedFrame,
    /// §5.2: RSV1-3 set although no extension was negotiated.
    ReservedBits(u8),
    /// §5.2: an opcode the RFC reserves (3-7, 0xB-0xF).
    UnknownOpcode(u8),
    /// §5.5: a control frame without FIN.
    FragmentedControl,
    /// §5.5: a control frame with more than 125 bytes of payload.
    ControlTooLong(u64),
    /// §5.2: a 64-bit payload length with its most significant bit set.
    BadLength(u64),
    /// §5.4: a continuation frame with no fragmented message in progress.
    UnexpectedContinuation,
    /// §5.4: a new text or binary frame while a fragmented message is still open.
    ExpectedContinuation,
    /// §5.6, §8.1: a text message (or close reason) that is not valid UTF-8.
    InvalidUtf8,
    /// §5.5.1: a close frame with a one-byte payload.
    CloseTooShort,
    /// §7.4: a close code that may not be sent on the wire.
    BadCloseCode(u16),
    /// §10.4: a message larger than the configured limit.
    MessageTooBig {
        /// Bytes the message has (or announces) so far.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// RFC 7692: a compressed message whose payload is not a deflate stream (zlib's word for what is wrong).
    BadCompression(&'static str),
    /// A message was still incomplete this long after its first byte arrived (`Config::message_timeout`).
    MessageTimeout(Duration),
}

impl FrameError {
    /// The close code sent to the peer for this error (RFC 6455 §7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::InvalidUtf8 | FrameError::BadCompression(_) => close_code::INVALID_PAYLOAD,
            FrameError::MessageTooBig { .. } => close_code::MESSAGE_TOO_BIG,
            FrameError::MessageTimeout(_) => close_code::POLICY_VIOLATION,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnmaskedFrame => {
                write!(f, "client frame is not masked (RFC 6455 section 5.1)")
            }
            FrameError::ReservedBits(bits) => {
                write!(
                    f,
                    "reserved bits {bits:#05b} set without an extension (RFC 6455 section 5.2)"
                )
            }
            FrameError::UnknownOpcode(op) => {
                write!(f, "reserved opcode {op:#x} (RFC 6455 section 5.2)")
            }
            FrameError::FragmentedControl => {
                write!(f, "fragmented control frame (RFC 6455 section 5.5)")
            }
            FrameError::ControlTooLong(len) => {
                write!(
                    f,
                    "control frame payload of {len} bytes is over 125 (RFC 6455 section 5.5)"
                )
            }
            FrameError::BadLength(len) => {
                write!(
                    f,
                    "64-bit payload length {len:#x} has its top bit set (RFC 6455 section 5.2)"
                )
            }
            FrameError::UnexpectedContinuation => {
                write!(
                    f,
                    "continuation frame without a message to continue (RFC 6455 section 5.4)"
                )
            }
            FrameError::ExpectedContinuation => {
                write!(
                    f,
                    "new data frame inside a fragmented message (RFC 6455 section 5.4)"
                )
            }
            FrameError::InvalidUtf8 => write!(f, "text is not valid UTF-8 (RFC 6455 section 8.1)"),
            FrameError::CloseTooShort => {
                write!(f, "close frame payload of 1 byte (RFC 6455 section 5.5.1)")
            }
            FrameError::BadCloseCode(code) => {
                write!(f, "close code {code} is not allowed (RFC 6455 section 7.4)")
            }
            FrameError::MessageTooBig { size, max } => {
                write!(
                    f,
                    "message of {size} bytes is over the limit of {max} (RFC 6455 section 10.4)"
                )
            }
            FrameError::MessageTimeout(limit) => {
                write!(f, "message still incomplete {limit:?} after its first byte")
            }
            FrameError::BadCompression(why) => {
                write!(f, "compressed message does not inflate: {why} (RFC 7692)")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Why an opening handshake was refused (RFC 6455 §4.2.1, §4.2.2).
///
/// The `Display` text is the one-line body of the HTTP rejection: it names the check that failed and its section.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request head is not valid HTTP/1.1 syntax.
    Malformed(&'static str),
    /// The request head is larger than the configured limit.
    HeadTooLarge {
        /// The configured maximum in bytes.
        max: usize,
    },
    /// The method is not GET.
    NotGet,
    /// The request is HTTP/1.0.
    NotHttp11,
    /// No `Host` header, or more than one.
    MissingHost,
    /// No `Upgrade` header with the `websocket` token.
    MissingUpgrade,
    /// No `Connection` header with the `upgrade` token.
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key` header (or more than one).
    MissingKey,
    /// A `Sec-WebSocket-Key` that does not base64-decode to 16 bytes.
    BadKey,
    /// No `Sec-WebSocket-Version` header, or more than one.
    MissingVersion,
    /// A `Sec-WebSocket-Version` other than 13.
    UnsupportedVersion,
    /// The `Origin` is not on the configured allow-list.
    OriginNotAllowed,
    /// A plain HTTP request the application does not serve.
    NotWebSocket,
    /// The server already holds its maximum number of users.
    TooManyUsers,
    /// The application refused the handshake with this HTTP status.
    Refused(u16),
}

impl HandshakeError {
    /// The HTTP status of the rejection.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadTooLarge { .. } => 431,
            HandshakeError::UnsupportedVersion | HandshakeError::NotWebSocket => 426,
            HandshakeError::OriginNotAllowed => 403,
            HandshakeError::TooManyUsers => 503,
            HandshakeError::Refused(status) => *status,
            _ => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed(why) => {
                write!(f, "malformed request head: {why} (RFC 7230 section 3)")
            }
            HandshakeError::HeadTooLarge { max } => {
                write!(f, "request head is over {max} bytes (RFC 6585 section 5)")
            }
            HandshakeError::NotGet => write!(
                f,
                "the handshake must be a GET request (RFC 6455 section 4.1)"
            ),
            HandshakeError::NotHttp11 => {
                write!(f, "the handshake must be HTTP/1.1 (RFC 6455 section 4.1)")
            }
            HandshakeError::MissingHost => {
                write!(f, "missing Host, or more than one (RFC 7230 section 5.4)")
            }
            HandshakeError::MissingUpgrade => {
                write!(f, "missing Upgrade: websocket (RFC 6455 section 4.2.1)")
            }
            HandshakeError::MissingConnectionUpgrade => {
                write!(f, "missing Connection: Upgrade (RFC 6455 section 4.2.1)")
            }
            HandshakeError::MissingKey => {
                write!(
                    f,
                    "missing Sec-WebSocket-Key, or more than one (RFC 6455 section 4.2.1)"
                )
            }
            HandshakeError::BadKey => {
                write!(
                    f,
                    "Sec-WebSocket-Key is not 16 bytes in base64 (RFC 6455 section 4.2.1)"
                )
            }
            HandshakeError::MissingVersion => {
                write!(
                    f,
                    "missing Sec-WebSocket-Version, or more than one (RFC 6455 section 4.2.1)"
                )
            }
            HandshakeError::UnsupportedVersion => {
                write!(
                    f,
                    "Sec-WebSocket-Version must be 13 (RFC 6455 section 4.2.2)"
                )
            }
            HandshakeError::OriginNotAllowed => {
                write!(f, "Origin is not allowed here (RFC 6455 section 10.2)")
            }
            HandshakeError::NotWebSocket => {
                write!(
                    f,
                    "this is a WebSocket server: send a WebSocket upgrade (RFC 6455 section 4.1)"
                )
            }
            HandshakeError::TooManyUsers => write!(
                f,
                "too many users, try again later (RFC 6455 section 4.2.2)"
            ),
            HandshakeError::Refused(status) => {
                write!(f, "refused by the application with status {status}")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The crate's error for what can fail outside a single connection: binding, registering, polling.
///
/// A failing *connection* never surfaces here; it is closed and logged, and the loop goes on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while setting up or running the loop.
    Io(io::Error),
    /// Redis could not be used at start (a bad URL, nobody answering): what went wrong, in one line.
    Redis(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Redis(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Redis(_) => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// Why a [`Remote`](crate::Remote) call was refused. Nothing a call hands over is dropped without one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteError {
    /// The loop's queue holds `Config::remote_queue` commands already: it cannot keep up. Try again later.
    Full,
    /// The server has stopped (or is stopping); nothing more will be carried out.
    Stopped,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Full => write!(f, "the loop's queue is full"),
            RemoteError::Stopped => write!(f, "the server has stopped"),
        }
    }
}

impl std::error::Error for RemoteError {}

/// True when an I/O error only means "not now": the socket has nothing more to give or take.
pub(crate) fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// True when a system call was interrupted by a signal and should simply be retried.
pub(crate) fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}
