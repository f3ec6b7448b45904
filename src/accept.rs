//! The start of a connection: what [`Handler::accept`](crate::Handler::accept) answers ([`Accept`]), and what
//! [`Handler::add`](crate::Handler::add) learns ([`Context`]: the request, the chosen subprotocol, the peer).
//!
//! The PHP tutorial's `upgrade()` accepted every handshake and its `add` callback got only the socket. A chat with
//! logins needs more: the room in the path, a token in the query or a cookie, and a place to keep who the user is.
//! `accept` reads the request and may refuse it (with any HTTP response) or accept it with data of the
//! application's own type; `add` sees the same request once the connection is open; every later callback reaches
//! the data through [`Handle::data`](crate::Handle::data), and `close` gets it back ([`Closed`](crate::Closed)).

use std::any::Any;
use std::net::SocketAddr;

use crate::handshake::Request;

/// A handshake accepted by [`Handler::accept`](crate::Handler::accept): with a subprotocol, and with data of the
/// application's own type that stays with the connection.
///
/// ```
/// use wsloop::Accept;
/// struct User { name: String }
/// let accept = Accept::new().protocol("chat").data(User { name: "ada".into() });
/// # let _ = accept;
/// ```
#[derive(Debug, Default)]
pub struct Accept {
    pub(crate) protocol: Option<String>,
    pub(crate) data: Option<Box<dyn Any + Send>>,
    pub(crate) inspect: bool,
}

impl Accept {
    /// Accepts the handshake as it is: no subprotocol, no data.
    pub fn new() -> Accept {
        Accept::default()
    }

    /// Accepts it with subprotocol `protocol`, which must be one of the request's
    /// [`protocols`](Request::protocols) (RFC 6455 §4.2.2; any other is the application's bug, answered with 500).
    pub fn protocol(mut self, protocol: impl Into<String>) -> Accept {
        self.protocol = Some(protocol.into());
        self
    }

    /// Keeps `data` with the connection: later callbacks reach it with [`Handle::data`](crate::Handle::data) and
    /// [`Handle::data_mut`](crate::Handle::data_mut), and the `close` callback gets it back. It costs the
    /// connection one allocation of its size; a connection without data holds nothing for it.
    pub fn data<T: Any + Send>(mut self, data: T) -> Accept {
        self.data = Some(Box::new(data));
        self
    }

    /// Inspects the connection: its handshake and the start of every frame it sends and is sent reach
    /// [`Handler::inspect`](crate::Handler::inspect), for the application to show to that same connection (the
    /// chatroom's `/inspect` page). It gets no permessage-deflate, so that its frames are RFC 6455's own. See
    /// [`inspect`](crate::inspect) for the bounds.
    pub fn inspect(mut self) -> Accept {
        self.inspect = true;
        self
    }
}

/// What [`Handler::add`](crate::Handler::add) learns about the connection it was just given: the request it came
/// with (path, query, headers), the subprotocol the server chose, and the peer's address.
///
/// It lives for the callback only, as the request's bytes do: keep what later callbacks need in the connection's
/// data ([`Accept::data`], [`Handle::set_data`](crate::Handle::set_data)).
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    request: &'a Request<'a>,
    protocol: Option<&'a str>,
    peer: SocketAddr,
    deflate: bool,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        request: &'a Request<'a>,
        protocol: Option<&'a str>,
        peer: SocketAddr,
        deflate: bool,
    ) -> Context<'a> {
        Context {
            request,
            protocol,
            peer,
            deflate,
        }
    }

    /// The whole request head (method, target, every header).
    pub fn request(&self) -> &'a Request<'a> {
        self.request
    }

    /// The path of the request target, without its query: `/room/42` for `GET /room/42?token=abc`.
    pub fn path(&self) -> &'a str {
        self.request.path()
    }

    /// The query of the request target, without the `?`, if it has one.
    pub fn query(&self) -> Option<&'a str> {
        self.request.query()
    }

    /// The first header named `name` (case-insensitive), if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.request.header(name)
    }

    /// The subprotocol the server answered with (see [`Accept::protocol`]), if any.
    pub fn protocol(&self) -> Option<&'a str> {
        self.protocol
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// True if the connection agreed to permessage-deflate.
    pub fn is_compressed(&self) -> bool {
        self.deflate
    }
}
