//! A connection's context, end to end over real sockets with a real client (tungstenite): what `accept` refuses
//! and how, the request `add` sees, the data a connection carries from `accept` to `close`, and what `close` learns
//! (code, reason, who closed) for every way a connection ends.

mod common;
#[allow(dead_code)]
#[path = "../examples/rooms.rs"]
mod rooms;

use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::protocol::CloseFrame;
use wsloop::frame::OpCode;
use wsloop::handshake::{HttpResponse, Request};
use wsloop::{
    Accept, CloseCode, Closed, ClosedBy, Config, ConnId, Context, Handle, Handler, Message,
};

/// Connects with a tungstenite client to `path` (with its query) on `addr`.
fn client_at(addr: std::net::SocketAddr, path: &str) -> Client {
    let stream = connect_raw(addr);
    let (ws, response) =
        tungstenite::client(format!("ws://{addr}{path}"), stream).expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// A handshake request for `path` on a raw socket, and the response: (status, head, body).
fn refused(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = connect_raw(addr);
    let request = request(addr).replacen("GET / ", &format!("GET {path} "), 1);
    stream.write_all(request.as_bytes()).unwrap();
    let response = read_response(&mut stream);
    assert_closed(&mut stream);
    response
}

#[test]
fn the_readme_rooms_example_authenticates_and_keeps_its_users_apart() {
    let server = start(
        Config::default(),
        rooms::Rooms {
            tokens: rooms::demo_tokens(),
        },
    );
    let addr = server.addr;

    let (status, head, body) = refused(addr, "/room/lobby");
    assert_eq!(status, 401, "{head}");
    assert!(
        head.contains("\r\nWWW-Authenticate: Bearer realm=\"rooms\"\r\n"),
        "{head}"
    );
    assert_eq!(body, "401 Unauthorized\n");
    assert_eq!(refused(addr, "/room/lobby?token=wrong").0, 401);
    assert_eq!(refused(addr, "/elsewhere?token=ada-secret").0, 404);

    let mut ada = client_at(addr, "/room/lobby?token=ada-secret");
    assert_eq!(text(&mut ada), "Ada joined lobby from 127.0.0.1");
    let mut grace = client_at(addr, "/room/lobby?token=grace%2Dsecret"); // percent-encoded
    assert_eq!(text(&mut grace), "Grace joined lobby from 127.0.0.1");
    assert_eq!(text(&mut ada), "Grace joined lobby from 127.0.0.1");
    let mut elsewhere = client_at(addr, "/room/kitchen?token=grace-secret");
    assert_eq!(text(&mut elsewhere), "Grace joined kitchen from 127.0.0.1");

    say(&mut ada, "hello");
    assert_eq!(text(&mut ada), "Ada: hello");
    assert_eq!(text(&mut grace), "Ada: hello");
    ada.close(Some(CloseFrame {
        code: WsCloseCode::from(4001),
        reason: "gone for lunch".into(),
    }))
    .unwrap();
    assert_eq!(text(&mut grace), "Ada left (Peer, 4001)");
    // Nothing of the lobby reached the kitchen.
    say(&mut elsewhere, "anyone?");
    assert_eq!(text(&mut elsewhere), "Grace: anyone?");
}

/// What `Recorder` saw: the context of each `add`, and each `close`.
#[derive(Debug, PartialEq)]
enum Seen {
    Added {
        path: String,
        query: Option<String>,
        protocol: Option<String>,
        header: Option<String>,
        is_loopback: bool,
        data: Option<String>,
    },
    Closed {
        code: Option<u16>,
        status: u16,
        reason: String,
        by: ClosedBy,
        data: Option<String>,
    },
}

/// Accepts with the query as its data (a string), offers `chat` if asked; on messages: `rename:X` sets the data to
/// X, `close:CODE:REASON` closes with that application code; everything else echoes.
struct Recorder(Sender<Seen>);

impl Handler for Recorder {
    fn accept(&mut self, req: &Request<'_>) -> Result<Accept, HttpResponse> {
        match req.path() {
            "/busy" => {
                Err(HttpResponse::new(429, "text/plain", "slow down\n").header("Retry-After", "7"))
            }
            "/not-an-error" => Err(HttpResponse::error(200)),
            "/smuggler" => Err(HttpResponse::error(403).header("X-A", "1\r\nSet-Cookie: stolen=1")),
            "/own-header" => Err(HttpResponse::error(403).header("Content-Length", "0")),
            _ => {
                let accept = Accept::new().data(req.query().unwrap_or_default().to_string());
                Ok(match req.protocols().find(|p| *p == "chat") {
                    Some(chat) => accept.protocol(chat),
                    None => accept,
                })
            }
        }
    }

    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, conn: &Context<'_>) {
        let _ = self.0.send(Seen::Added {
            path: conn.path().to_string(),
            query: conn.query().map(str::to_string),
            protocol: conn.protocol().map(str::to_string),
            header: conn.header("X-Test").map(str::to_string),
            is_loopback: conn.peer().ip().is_loopback(),
            data: ws.data::<String>(id).cloned(),
        });
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return ws.send(id, msg);
        };
        if let Some(name) = text.strip_prefix("rename:") {
            assert!(ws.set_data(id, name.to_string()));
            let changed = ws.data_mut::<String>(id).map(|d| d.push('!')).is_some();
            ws.send(id, format!("renamed:{changed}"));
        } else if let Some(rest) = text.strip_prefix("close:") {
            let (code, reason) = rest.split_once(':').unwrap();
            let code = CloseCode::application(code.parse().unwrap()).expect("4000-4999");
            ws.close(id, code, reason);
        } else {
            ws.send(id, text);
        }
    }

    fn close(&mut self, _: &mut Handle<'_>, _: ConnId, mut closed: Closed<'_>) {
        assert_eq!(
            closed.data::<u32>(),
            None,
            "data of another type is not found"
        );
        let _ = self.0.send(Seen::Closed {
            code: closed.code.map(CloseCode::get),
            status: closed.status(),
            reason: closed.reason.to_string(),
            by: closed.by,
            data: closed.take_data::<String>(),
        });
    }
}

fn recorder(config: Config) -> (TestServer, Receiver<Seen>) {
    let (seen, events) = mpsc::channel();
    (start(config, Recorder(seen)), events)
}

fn next(events: &Receiver<Seen>) -> Seen {
    events.recv_timeout(TIMEOUT).expect("a callback")
}

/// The `close` callback's report: (code, status, reason, by, data).
fn next_closed(events: &Receiver<Seen>) -> (Option<u16>, u16, String, ClosedBy, Option<String>) {
    match next(events) {
        Seen::Closed {
            code,
            status,
            reason,
            by,
            data,
        } => (code, status, reason, by, data),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[test]
fn add_sees_the_request_the_protocol_the_peer_and_the_data_from_accept() {
    let (server, events) = recorder(Config::default());
    let addr = server.addr;
    let request = tungstenite::http::Request::builder()
        .uri(format!("ws://{addr}/room/7?user=ada&x=%20"))
        .header("Host", addr.to_string())
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .header("Sec-WebSocket-Protocol", "other, chat")
        .header("X-Test", "yes")
        .body(())
        .unwrap();
    let (mut ws, response) = tungstenite::client(request, connect_raw(addr)).expect("handshake");
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "chat"
    );
    assert_eq!(
        next(&events),
        Seen::Added {
            path: "/room/7".into(),
            query: Some("user=ada&x=%20".into()),
            protocol: Some("chat".into()),
            header: Some("yes".into()),
            is_loopback: true,
            data: Some("user=ada&x=%20".into()),
        }
    );
    // The data can be replaced and changed in place, and comes back to `close`.
    assert_eq!(ask(&mut ws, "rename:grace"), "renamed:true");
    ws.close(None).unwrap();
    let (code, status, reason, by, data) = next_closed(&events);
    assert_eq!((code, status, reason.as_str()), (None, 1005, ""));
    assert_eq!((by, data.as_deref()), (ClosedBy::Peer, Some("grace!")));
}

#[test]
fn close_learns_the_code_the_reason_and_who_closed() {
    let (server, events) =
        recorder(Config::default().message_timeout(Some(Duration::from_millis(300))));
    let addr = server.addr;

    // The peer, with a code and a reason.
    let mut ws = client_at(addr, "/?a");
    next(&events);
    ws.close(Some(CloseFrame {
        code: WsCloseCode::Away,
        reason: "tab closed".into(),
    }))
    .unwrap();
    let closed = next_closed(&events);
    assert_eq!(
        closed,
        (
            Some(1001),
            1001,
            "tab closed".into(),
            ClosedBy::Peer,
            Some("a".into())
        )
    );

    // The application, with its own code: the peer gets it too.
    let mut ws = client_at(addr, "/?b");
    next(&events);
    say(&mut ws, "close:4002:as asked");
    match ws.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (4002, "as asked")
            )
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let closed = next_closed(&events);
    assert_eq!(
        closed,
        (
            Some(4002),
            4002,
            "as asked".into(),
            ClosedBy::Application,
            Some("b".into())
        )
    );

    // A protocol error: an unmasked frame gets 1002, and the callback learns why.
    let mut raw = handshaken_at(addr, "/?c");
    next(&events);
    raw.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_close(&mut raw), Some(1002));
    let (code, _, reason, by, data) = next_closed(&events);
    assert_eq!(
        (code, by, data.as_deref()),
        (Some(1002), ClosedBy::Error, Some("c"))
    );
    assert!(reason.contains("mask"), "{reason}");

    // A message still arriving after the message timeout: 1008, a timeout.
    let mut raw = handshaken_at(addr, "/?d");
    next(&events);
    raw.write_all(&masked(false, OpCode::Text, b"half a mess"))
        .unwrap();
    assert_eq!(read_close(&mut raw), Some(1008));
    let (code, _, _, by, _) = next_closed(&events);
    assert_eq!((code, by), (Some(1008), ClosedBy::Timeout));

    // Dropped without a closing handshake: no code, 1006.
    let raw = handshaken_at(addr, "/?e");
    next(&events);
    drop(raw);
    let closed = next_closed(&events);
    assert_eq!(
        closed,
        (
            None,
            1006,
            String::new(),
            ClosedBy::Dropped,
            Some("e".into())
        )
    );

    // The server stopping: 1001 to everyone, a shutdown.
    let _ws = client_at(addr, "/?f");
    next(&events);
    server.stop();
    let closed = next_closed(&events);
    assert_eq!(
        closed,
        (
            Some(1001),
            1001,
            "server shutting down".into(),
            ClosedBy::Shutdown,
            Some("f".into())
        )
    );
}

/// A raw handshaked connection to `path`.
fn handshaken_at(addr: std::net::SocketAddr, path: &str) -> std::net::TcpStream {
    let mut stream = connect_raw(addr);
    let request = request(addr).replacen("GET / ", &format!("GET {path} "), 1);
    stream.write_all(request.as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101, "{head}");
    stream
}

#[test]
fn a_refusal_carries_the_applications_headers_and_body_and_never_a_bad_one() {
    let (server, events) = recorder(Config::default());
    let addr = server.addr;
    let (status, head, body) = refused(addr, "/busy");
    assert_eq!((status, body.as_str()), (429, "slow down\n"), "{head}");
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nRetry-After: 7\r\n"), "{head}");
    // Not an error status, a header that would smuggle another, one the server writes itself: each is the
    // application's bug, answered 500 with nothing of what it asked for.
    for path in ["/not-an-error", "/smuggler", "/own-header"] {
        let (status, head, _) = refused(addr, path);
        assert_eq!(status, 500, "{path}: {head}");
        assert!(
            !head.contains("Set-Cookie") && !head.contains("X-A"),
            "{head}"
        );
    }
    // None of them reached `add`, and the server still serves.
    let mut ws = client_at(addr, "/?after");
    assert!(matches!(next(&events), Seen::Added { data: Some(d), .. } if d == "after"));
    assert_eq!(ask(&mut ws, "still here"), "still here");
}
