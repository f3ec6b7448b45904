//! The end of a connection: the close code a server may send ([`CloseCode`]), and what the `close` callback learns
//! ([`Closed`]: the code, the reason, who closed, and the connection's data).
//!
//! The PHP tutorial's `close()` only unset the socket; its callback learned nothing. Here a [`CloseCode`] is a type
//! that holds only codes RFC 6455 §7.4 lets an endpoint put on the wire, so [`Handle::close`](crate::Handle::close)
//! cannot be given 1005, 1006 or 1015 (which only report) or an unassigned number.

use std::any::Any;
use std::fmt;

/// A close code that may be sent in a close frame (RFC 6455 §7.4): one of the RFC's and IANA's registered codes
/// (1000-1003, 1007-1014), a library's or framework's (3000-3999) or the application's own (4000-4999).
///
/// ```
/// use wsloop::CloseCode;
/// assert_eq!(CloseCode::NORMAL.get(), 1000);
/// assert_eq!(CloseCode::application(4001).map(CloseCode::get), Some(4001));
/// assert_eq!(CloseCode::application(1000), None); // not the application's range
/// assert_eq!(CloseCode::new(1006), None); // reports a dropped connection; never sent
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure; the purpose of the connection is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: going away: the server is shutting down, or a browser leaves the page.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a type of data the endpoint does not accept (binary in a text chat, say).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1007: data that does not match the message's type: text that is not UTF-8, or a compressed message that
    /// does not inflate.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a policy violation, when no other code fits (here: a reader too slow for what it is sent, or a
    /// message too slow to arrive).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: sent by a client: the server did not agree to an extension it needs.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later: the server is overloaded (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway or proxy got an invalid answer from upstream (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);

    /// Any code that may be sent in a close frame, or `None` for one that may not (below 1000, 1004-1006, 1015,
    /// unassigned numbers, 5000 and above).
    pub fn new(code: u16) -> Option<CloseCode> {
        crate::message::is_valid_close_code(code).then_some(CloseCode(code))
    }

    /// A code of the application's own range, 4000-4999 (`None` for any other number): the range RFC 6455 §7.4.2
    /// leaves to private agreement between an application's server and its clients.
    pub fn application(code: u16) -> Option<CloseCode> {
        (4000..=4999).contains(&code).then_some(CloseCode(code))
    }

    /// The number on the wire.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who (or what) ended a connection, as the `close` callback learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClosedBy {
    /// The peer sent a close frame (its code and reason are in [`Closed`]).
    Peer,
    /// The application asked for it: [`Handle::close`](crate::Handle::close) or
    /// [`Remote::close`](crate::Remote::close).
    Application,
    /// The server is stopping (close 1001).
    Shutdown,
    /// The peer broke the protocol or a limit: the code says which (1002, 1007, 1009, ...; see the README).
    Error,
    /// The peer did not keep up with what it is sent (close 1008, `Config::max_buffered`).
    SlowReader,
    /// The server's memory budget (`Config::max_memory`) was reached, and this connection held the most: close
    /// 1009 if what it held was a message arriving, 1008 if it was what it had not read.
    OverBudget,
    /// A timeout: a message still arriving after `Config::message_timeout` (close 1008), or no answer to the idle
    /// ping (the connection is dropped, no code).
    Timeout,
    /// The connection went without a closing handshake: the peer hung up, or the socket failed (no code).
    Dropped,
}

/// What the `close` callback learns: the close code and reason, who closed, and the connection's data.
#[derive(Debug)]
#[non_exhaustive]
pub struct Closed<'a> {
    /// The code of the closing handshake: the peer's if it closed, the server's if it did. `None` if the peer's
    /// close frame had no code (reported as 1005 elsewhere) or the connection went without one (1006).
    pub code: Option<CloseCode>,
    /// The reason of the close frame (the peer's, or the one the server sent), `""` if there was none.
    pub reason: &'a str,
    /// Who closed.
    pub by: ClosedBy,
    data: Option<Box<dyn Any + Send>>,
}

impl<'a> Closed<'a> {
    pub(crate) fn new(
        code: Option<u16>,
        reason: &'a str,
        by: ClosedBy,
        data: Option<Box<dyn Any + Send>>,
    ) -> Closed<'a> {
        Closed {
            code: code.and_then(CloseCode::new),
            reason,
            by,
            data,
        }
    }

    /// The code as the RFC's reporting numbers say it: the code, or 1005 for a close frame without one, or 1006 for
    /// a connection that went without a closing handshake.
    pub fn status(&self) -> u16 {
        match (self.code, self.by) {
            (Some(code), _) => code.get(),
            (None, ClosedBy::Peer) => crate::error::close_code::NO_STATUS,
            (None, _) => crate::error::close_code::ABNORMAL,
        }
    }

    /// The connection's data (set by [`Accept::data`](crate::Accept::data) or
    /// [`Handle::set_data`](crate::Handle::set_data)), if it has data of type `T`.
    pub fn data<T: Any>(&self) -> Option<&T> {
        self.data.as_ref()?.downcast_ref()
    }

    /// Takes the connection's data out, if it is of type `T`: the connection is gone, so its data is the
    /// callback's to keep or drop.
    pub fn take_data<T: Any>(&mut self) -> Option<T> {
        match self.data.take()?.downcast::<T>() {
            Ok(data) => Some(*data),
            Err(other) => {
                self.data = Some(other);
                None
            }
        }
    }
}

/// How a connection ended, as the loop passes it on to the `close` callback.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End<'a> {
    pub by: ClosedBy,
    /// The code on the wire, `None` for none.
    pub code: Option<u16>,
    pub reason: &'a str,
}

impl End<'static> {
    /// The connection went without a closing handshake.
    pub const DROPPED: End<'static> = End {
        by: ClosedBy::Dropped,
        code: None,
        reason: "",
    };
    /// The server is stopping.
    pub const SHUTDOWN: End<'static> = End {
        by: ClosedBy::Shutdown,
        code: Some(crate::error::close_code::GOING_AWAY),
        reason: "server shutting down",
    };
}
