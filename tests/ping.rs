//! The application's pings and the peers' pongs: `Handle::ping` and `Handler::pong`, over a real socket with
//! tungstenite, which answers every ping with a pong carrying its payload as RFC 6455 §5.5.3 says.

mod common;

use common::deflate::{Incoming, Peer};
use common::{ask, client, start, text};
use wsloop::deflate::Deflate;
use wsloop::frame::OpCode;
use wsloop::{Config, ConnId, Handle, Handler, Message};

/// `ping:PAYLOAD` pings the sender with PAYLOAD and answers `sent` (or `refused` when it is too long); every pong
/// is told to its sender as `pong:PAYLOAD`.
struct Pinger;

impl Handler for Pinger {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(command) = msg else { return };
        if let Some(payload) = command.strip_prefix("ping:") {
            let answer = if ws.ping(id, payload.as_bytes()) {
                "sent"
            } else {
                "refused"
            };
            ws.send(id, answer);
        }
    }

    fn pong(&mut self, ws: &mut Handle<'_>, id: ConnId, payload: &[u8]) {
        ws.send(id, format!("pong:{}", String::from_utf8_lossy(payload)));
    }
}

#[test]
fn a_ping_from_the_application_comes_back_to_pong_with_its_payload() {
    let server = start(Config::default(), Pinger);
    let mut ws = client(server.addr);
    for payload in ["", "t1", &"x".repeat(125)] {
        assert_eq!(ask(&mut ws, &format!("ping:{payload}")), "sent");
        // Reading lets tungstenite see the ping and queue its pong, which it writes with its next read.
        assert_eq!(text(&mut ws), format!("pong:{payload}"));
    }
}

#[test]
fn with_permessage_deflate_the_application_s_ping_still_goes_out_as_a_plain_control_frame() {
    // RFC 7692 §6: control frames are never compressed, even where every message is (threshold 0). The client
    // reads RSV1 on a ping as the protocol error it is, and fails the test.
    let settings = Deflate {
        threshold: 0,
        ..Deflate::default()
    };
    let server = start(Config::default().deflate(Some(settings)), Pinger);
    let mut peer = Peer::connect(server.addr, Some("permessage-deflate"));
    assert!(peer.agreed.is_some(), "negotiated: {:?}", peer.answer);
    // A payload that shrinks well: compressed, it would be sent so.
    let sent = "plain please ".repeat(9);
    peer.send(OpCode::Text, format!("ping:{sent}").as_bytes(), true);
    let mut seen = (false, false);
    while seen != (true, true) {
        match peer.read() {
            Incoming::Ping(payload) => {
                assert_eq!(payload, sent.as_bytes());
                seen.0 = true;
            }
            Incoming::Message(answer) => {
                assert_eq!(answer.data, b"sent");
                seen.1 = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_ping_payload_over_125_bytes_is_refused_and_nothing_is_sent() {
    let server = start(Config::default(), Pinger);
    let mut ws = client(server.addr);
    assert_eq!(
        ask(&mut ws, &format!("ping:{}", "x".repeat(126))),
        "refused"
    );
    // The connection is still fine, and no pong is on its way: the next answer is the next command's.
    assert_eq!(ask(&mut ws, "ping:after"), "sent");
    assert_eq!(text(&mut ws), "pong:after");
}
