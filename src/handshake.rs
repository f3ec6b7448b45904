//! The opening handshake: parse the request head, check it, compute the accept key, build the responses.
//!
//! In the PHP tutorial this is `upgrade()`: a regular expression found `Sec-WebSocket-Key`, and whatever else the
//! request said was ignored. Here the head is parsed as HTTP/1.1 (with `httparse`), every requirement of RFC 6455
//! §4.2.1 is checked, and a refusal says in one line which check failed. Nothing in this module touches a socket.
//!
//! ```
//! // RFC 6455 §1.3: the sample nonce and its accept value.
//! assert_eq!(wsloop::handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//! ```

use base64::Engine as _;

use crate::error::HandshakeError;
use crate::Status;

/// §1.3: the GUID appended to the client's key before hashing.
pub const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// §4.2.2: the one protocol version this server speaks.
pub const VERSION: &str = "13";
/// At most this many header lines; a longer head is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// A parsed HTTP request head; names and values borrow the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request target as sent, e.g. `/chat?room=1` (see [`Request::path`] and [`Request::query`]).
    pub target: &'a str,
    /// The minor HTTP version: 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Request<'a> {
    /// The path of the request target, without its query: `/room/42` for `/room/42?token=abc`.
    pub fn path(&self) -> &'a str {
        self.target
            .split_once('?')
            .map_or(self.target, |(path, _)| path)
    }

    /// The query of the request target, without the `?`, if it has one: `token=abc` for `/room/42?token=abc`.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The value of the first `name=value` pair of the query named `name`, percent-decoded (`+` read as a space,
    /// as HTML forms write it). `None` if there is none, or its value does not decode to UTF-8. A pair without
    /// `=` has the value `""`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key)? == name).then(|| percent_decode(value))?
        })
    }

    /// The value of the first header named `name` (case-insensitive), if it is there and is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers_named(name).next()
    }

    /// The value of the header named `name` if the request has exactly one, and it is valid UTF-8. `None` if it has
    /// none, or more than one (whatever their bytes), or one that is not text.
    pub fn only_header(&self, name: &str) -> Option<&'a str> {
        let mut named = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        match (named.next(), named.next()) {
            (Some((_, value)), None) => std::str::from_utf8(value).ok().map(str::trim),
            _ => None,
        }
    }

    /// Every value of the headers named `name`, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// True if any comma-separated token of any header named `name` equals `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// §4.1: a request with any WebSocket header is a handshake; one with none is plain HTTP.
    pub fn is_websocket(&self) -> bool {
        self.has_token("Upgrade", "websocket")
            || self.header("Sec-WebSocket-Key").is_some()
            || self.header("Sec-WebSocket-Version").is_some()
    }

    /// The subprotocols the client offers in `Sec-WebSocket-Protocol`, in its order of preference.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers_named("Sec-WebSocket-Protocol")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }
}

/// `%XX` escapes and `+` of a URL query decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = rest
                    .get(..2)
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))?;
                bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                rest = &rest[2..];
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

/// Parses a request head from the front of `buf`: `Partial` until the blank line, then the request and its length.
///
/// A head that is not complete within `max_head` bytes, or has too many lines, fails with 431.
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
) -> Result<Status<(Request<'_>, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Err(HandshakeError::HeadTooLarge { max: max_head })
        }
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::HeadTooLarge { max: max_head })
        }
        Err(e) => return Err(HandshakeError::Malformed(malformed_why(e))),
    };
    if len > max_head {
        return Err(HandshakeError::HeadTooLarge { max: max_head });
    }
    let request = Request {
        method: req.method.unwrap_or_default(),
        target: req.path.unwrap_or_default(),
        minor_version: req.version.unwrap_or_default(),
        headers: req.headers.iter().map(|h| (h.name, h.value)).collect(),
    };
    Ok(Status::Complete((request, len)))
}

fn malformed_why(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// §4.2.1: checks a WebSocket handshake request; on success returns the client's `Sec-WebSocket-Key`.
///
/// The checks run in the order the RFC lists them, and the first failure is the answer.
pub fn validate<'a>(req: &Request<'a>) -> Result<&'a str, HandshakeError> {
    // 1. "An HTTP/1.1 or higher GET request".
    if req.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if req.minor_version < 1 {
        return Err(HandshakeError::NotHttp11);
    }
    // 2. "A |Host| header field" (and only one: RFC 7230 §5.4).
    if req.only_header("Host").is_none_or(str::is_empty) {
        return Err(HandshakeError::MissingHost);
    }
    // 3. "An |Upgrade| header field containing the value "websocket"".
    if !req.has_token("Upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    // 4. "A |Connection| header field that includes the token "Upgrade"".
    if !req.has_token("Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    // 5. "A |Sec-WebSocket-Key| header field with a base64-encoded value that, when decoded, is 16 bytes".
    let key = req
        .only_header("Sec-WebSocket-Key")
        .ok_or(HandshakeError::MissingKey)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| HandshakeError::BadKey)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::BadKey);
    }
    // 6. "A |Sec-WebSocket-Version| header field, with a value of 13".
    match req.only_header("Sec-WebSocket-Version") {
        None => Err(HandshakeError::MissingVersion),
        Some(VERSION) => Ok(key),
        Some(_) => Err(HandshakeError::UnsupportedVersion),
    }
}

/// §4.2.2: `Sec-WebSocket-Accept` = base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

/// The `101 Switching Protocols` response for `key`, with the chosen subprotocol and the accepted extensions (the
/// value of `Sec-WebSocket-Extensions`), if any.
///
/// Extensions the client offered and the server declines are left out (§9.1).
pub fn switching_protocols(key: &str, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        accept_key(key)
    );
    if let Some(protocol) = protocol {
        response.push_str("Sec-WebSocket-Protocol: ");
        response.push_str(protocol);
        response.push_str("\r\n");
    }
    if let Some(extensions) = extensions {
        response.push_str("Sec-WebSocket-Extensions: ");
        response.push_str(extensions);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    response.into_bytes()
}

/// The refusal for `error`: its status, `Connection: close`, and a one-line text body naming the failed check.
pub fn reject(error: &HandshakeError) -> Vec<u8> {
    let mut extra = String::new();
    let mut connection = "close";
    if error.status() == 426 {
        // §4.2.2: tell the client which version we speak; RFC 7230 §6.7: an Upgrade header is named in Connection.
        extra.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        connection = "Upgrade, close";
    }
    if error.status() == 503 {
        extra.push_str("Retry-After: 5\r\n");
    }
    let body = format!("{error}\n");
    HttpResponse::new(
        error.status(),
        "text/plain; charset=utf-8",
        body.into_bytes(),
    )
    .into_bytes_with(connection, &extra)
}

/// A plain HTTP response: the page of [`Handler::http`](crate::Handler::http) (the chatroom serves its HTML with
/// one), or the refusal of [`Handler::accept`](crate::Handler::accept) (a 401 with `WWW-Authenticate`, a 429 with
/// `Retry-After`, and a body saying why).
///
/// The status must be a final one (200-599; a refusal's, 400-599). Every header is checked before it is written: a
/// name must be an HTTP token and not one the server writes itself
/// (`Content-Type`, `Content-Length`, `Connection`, `Transfer-Encoding`), a value (the content type's too) must not
/// hold a CR, LF or other control character, which would end the header and start one the application never meant
/// to send. A response that fails is not written: the peer gets a 500 and the server logs why.
///
/// ```
/// use wsloop::handshake::HttpResponse;
/// let refusal = HttpResponse::error(401).header("WWW-Authenticate", "Bearer realm=\"chat\"");
/// assert!(refusal.is_valid());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: String,
    /// Headers besides the ones the server writes, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Headers the server writes itself, which a response may not set.
const OWN_HEADERS: [&str; 4] = [
    "Content-Type",
    "Content-Length",
    "Connection",
    "Transfer-Encoding",
];

impl HttpResponse {
    /// A response with this status, content type and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A response with this status and its reason phrase as a one-line text body: `403 Forbidden`.
    pub fn error(status: u16) -> HttpResponse {
        let body = format!("{status} {}\n", reason_phrase(status));
        HttpResponse::new(status, "text/plain; charset=utf-8", body)
    }

    /// The response with one more header (checked when it is written; see above).
    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The response as bytes on the wire; the server closes the connection after it. One that is not
    /// [`valid`](HttpResponse::is_valid) becomes a 500.
    pub fn into_bytes(self) -> Vec<u8> {
        if !self.is_valid() {
            // Why goes to the log (the server logs it), not to the peer, which must not see the bad bytes either.
            return HttpResponse::new(
                500,
                "text/plain; charset=utf-8",
                "the application's response is not valid HTTP\n",
            )
            .into_bytes();
        }
        self.into_bytes_with("close", "")
    }

    /// True when every header can be written as it is (see above).
    pub fn is_valid(&self) -> bool {
        self.check().is_ok()
    }

    /// Why the response cannot be written as it is, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        // A final status: the server closes the connection after the response, so no 1xx may stand for it.
        if !(200..=599).contains(&self.status) {
            return Err(format!("status {} is not a final HTTP status", self.status));
        }
        if !is_field_value(&self.content_type) {
            return Err(format!(
                "Content-Type {:?} is not a valid header value",
                self.content_type
            ));
        }
        for (name, value) in &self.headers {
            if !is_token(name) {
                return Err(format!("{name:?} is not a valid header name"));
            }
            if OWN_HEADERS.iter().any(|own| own.eq_ignore_ascii_case(name)) {
                return Err(format!("{name} is written by the server"));
            }
            if !is_field_value(value) {
                return Err(format!("the value of {name} is not a valid header value"));
            }
        }
        Ok(())
    }

    fn into_bytes_with(self, connection: &str, extra_headers: &str) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n{}",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            connection,
            extra_headers
        );
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// RFC 7230 §3.2.6: a token, the form of a header name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 7230 §3.2: a header value of visible ASCII, spaces and tabs (no control character; the obsolete non-ASCII
/// bytes refused too).
fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The standard reason phrase for the statuses a WebSocket server uses.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_response_writes_valid_headers_and_refuses_the_rest() {
        let ok = HttpResponse::error(401)
            .header("WWW-Authenticate", "Bearer realm=\"chat\"")
            .header("Retry-After", "5");
        let bytes = String::from_utf8(ok.into_bytes()).unwrap();
        assert!(
            bytes.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
            "{bytes}"
        );
        assert!(bytes.contains("\r\nWWW-Authenticate: Bearer realm=\"chat\"\r\nRetry-After: 5\r\n\r\n401 Unauthorized\n"));
        for (name, value) in [
            ("Set-Cookie", "a=1\r\nX-Evil: 1"),
            ("X-Evil\r\nA", "1"),
            ("", "1"),
            ("Bad Name", "1"),
            ("content-length", "0"),
            ("Connection", "keep-alive"),
            ("X", "caf\u{e9}"),
        ] {
            let response = HttpResponse::error(403).header(name, value);
            assert!(!response.is_valid(), "{name:?}: {value:?}");
            let bytes = String::from_utf8(response.into_bytes()).unwrap();
            assert!(bytes.starts_with("HTTP/1.1 500 "), "{bytes}");
            assert!(
                !bytes.contains("X-Evil") && !bytes.contains("keep-alive"),
                "{bytes}"
            );
        }
    }

    #[test]
    fn a_response_without_a_final_status_is_never_written() {
        for status in [0, 100, 101, 199, 600, 1000] {
            let response = HttpResponse::new(status, "text/plain", "x");
            assert!(!response.is_valid(), "{status}");
            let bytes = String::from_utf8(response.into_bytes()).unwrap();
            assert!(bytes.starts_with("HTTP/1.1 500 "), "{bytes}");
        }
        assert!(HttpResponse::new(204, "text/plain", "").is_valid());
    }

    #[test]
    fn the_target_splits_into_path_and_query_and_params_decode() {
        let head = "GET /room/42?token=a%2Bb%3D&name=Ada+L&flag&empty=&bad=%zz HTTP/1.1\r\n\r\n";
        let Ok(Status::Complete((req, _))) = parse_request(head.as_bytes(), 1024) else {
            panic!("parses");
        };
        assert_eq!(req.path(), "/room/42");
        assert_eq!(
            req.query(),
            Some("token=a%2Bb%3D&name=Ada+L&flag&empty=&bad=%zz")
        );
        assert_eq!(req.query_param("token").as_deref(), Some("a+b="));
        assert_eq!(req.query_param("name").as_deref(), Some("Ada L"));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("empty").as_deref(), Some(""));
        assert_eq!(req.query_param("bad"), None);
        let head = "GET /?a=%+f&b=%2 HTTP/1.1\r\n\r\n";
        let Ok(Status::Complete((req, _))) = parse_request(head.as_bytes(), 1024) else {
            panic!("parses");
        };
        assert_eq!((req.query_param("a"), req.query_param("b")), (None, None));
        assert_eq!(req.query_param("missing"), None);
    }

    #[test]
    fn a_content_type_that_would_inject_a_header_is_never_written() {
        for bad in [
            "text/html\r\nSet-Cookie: x=1",
            "text/html\nX: y",
            "text/\u{0}html",
            "tëxt/html",
        ] {
            let response = HttpResponse::new(200, bad, "<p>hi</p>");
            assert!(!response.is_valid(), "{bad:?}");
            let bytes = String::from_utf8(response.into_bytes()).unwrap();
            assert!(bytes.starts_with("HTTP/1.1 500 "), "{bytes}");
            assert!(
                !bytes.contains("Set-Cookie") && !bytes.contains("X: y") && !bytes.contains("<p>")
            );
        }
        let good = HttpResponse::new(200, "text/html; charset=utf-8", "<p>hi</p>");
        assert!(good.is_valid());
        let bytes = String::from_utf8(good.into_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"));
        assert!(bytes.ends_with("\r\n\r\n<p>hi</p>"));
    }

    fn parsed(text: &str) -> Request<'_> {
        match parse_request(text.as_bytes(), 8192) {
            Ok(Status::Complete((req, len))) => {
                assert_eq!(len, text.len());
                req
            }
            other => panic!("expected a complete request, got {other:?}"),
        }
    }

    #[test]
    fn rfc_sample_key_gives_the_rfc_accept_value() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_request_is_accepted_with_the_rfc_response() {
        let req = parsed(RFC_REQUEST);
        assert!(req.is_websocket());
        assert_eq!(req.target, "/chat");
        assert_eq!((req.path(), req.query()), ("/chat", None));
        assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        let key = validate(&req).unwrap();
        let response = String::from_utf8(switching_protocols(key, None, None)).unwrap();
        assert_eq!(
            response,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let with_protocol =
            String::from_utf8(switching_protocols(key, Some("chat"), None)).unwrap();
        assert!(with_protocol.ends_with("Sec-WebSocket-Protocol: chat\r\n\r\n"));
    }

    #[test]
    fn every_strict_prefix_of_a_request_is_partial() {
        for cut in 0..RFC_REQUEST.len() {
            assert_eq!(
                parse_request(&RFC_REQUEST.as_bytes()[..cut], 8192),
                Ok(Status::Partial),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn header_tokens_are_case_insensitive_comma_lists() {
        let req = parsed(
            "GET / HTTP/1.1\r\nhost: a\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        );
        assert_eq!(validate(&req), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn plain_http_is_not_a_handshake() {
        let req = parsed("GET / HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n");
        assert!(!req.is_websocket());
    }

    /// One row per check: the request and the status it gets.
    #[test]
    fn each_failed_check_gets_its_status() {
        let good = RFC_REQUEST;
        let table: &[(&str, String, HandshakeError)] = &[
            (
                "POST instead of GET",
                good.replace("GET /chat", "POST /chat"),
                HandshakeError::NotGet,
            ),
            (
                "HTTP/1.0",
                good.replace("HTTP/1.1", "HTTP/1.0"),
                HandshakeError::NotHttp11,
            ),
            (
                "no Host",
                good.replace("Host: server.example.com\r\n", ""),
                HandshakeError::MissingHost,
            ),
            (
                "two Host headers",
                good.replace("Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n"),
                HandshakeError::MissingHost,
            ),
            (
                "Upgrade: h2c",
                good.replace("Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::MissingUpgrade,
            ),
            (
                "Connection: keep-alive",
                good.replace("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                "no key",
                good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::MissingKey,
            ),
            (
                "two keys",
                good.replace(
                    "Origin:",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin:",
                ),
                HandshakeError::MissingKey,
            ),
            (
                "key of 15 bytes",
                good.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"),
                HandshakeError::BadKey,
            ),
            (
                "key not base64",
                good.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="),
                HandshakeError::BadKey,
            ),
            (
                "no version",
                good.replace("Sec-WebSocket-Version: 13\r\n", ""),
                HandshakeError::MissingVersion,
            ),
            (
                "versions 13 and 8",
                good.replace(
                    "Version: 13\r\n",
                    "Version: 13\r\nSec-WebSocket-Version: 8\r\n",
                ),
                HandshakeError::MissingVersion,
            ),
            (
                "version 12",
                good.replace("Version: 13", "Version: 12"),
                HandshakeError::UnsupportedVersion,
            ),
        ];
        for (name, text, error) in table {
            let req = parsed(text);
            assert_eq!(validate(&req).as_ref(), Err(error), "{name}");
        }
        let statuses: Vec<u16> = table.iter().map(|(_, _, e)| e.status()).collect();
        assert_eq!(
            statuses,
            [400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 400, 426]
        );
    }

    #[test]
    fn a_second_key_counts_even_when_it_is_not_text() {
        let head = [
            RFC_REQUEST.trim_end().as_bytes(),
            b"\r\nSec-WebSocket-Key: \xff\xfe\r\n\r\n",
        ]
        .concat();
        let Ok(Status::Complete((req, _))) = parse_request(&head, 8192) else {
            panic!("a complete head")
        };
        assert_eq!(validate(&req), Err(HandshakeError::MissingKey));
    }

    #[test]
    fn version_12_gets_426_with_the_supported_version() {
        let response = String::from_utf8(reject(&HandshakeError::UnsupportedVersion)).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{response}"
        );
        assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        // RFC 7230 §6.7: a response that sends Upgrade names it in Connection too.
        assert!(
            response.contains("\r\nUpgrade: websocket\r\n"),
            "{response}"
        );
        assert!(
            response.contains("\r\nConnection: Upgrade, close\r\n"),
            "{response}"
        );
        assert!(response
            .ends_with("\r\n\r\nSec-WebSocket-Version must be 13 (RFC 6455 section 4.2.2)\n"));
    }

    #[test]
    fn a_rejection_body_names_the_check_and_its_section() {
        let response = String::from_utf8(reject(&HandshakeError::MissingKey)).unwrap();
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(response.contains("Connection: close\r\n"));
        assert!(response
            .ends_with("missing Sec-WebSocket-Key, or more than one (RFC 6455 section 4.2.1)\n"));
    }

    #[test]
    fn an_oversized_head_gets_431() {
        let big = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n", "a".repeat(9000));
        let err = parse_request(big.as_bytes(), 8192).unwrap_err();
        assert_eq!(
            (err.clone(), err.status()),
            (HandshakeError::HeadTooLarge { max: 8192 }, 431)
        );
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let err =
            parse_request(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes(), 8192).unwrap_err();
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn garbage_gets_400() {
        let err = parse_request(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            8192,
        )
        .unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
    }
}
