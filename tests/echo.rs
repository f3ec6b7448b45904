//! A real client (tungstenite) against the echo server over loopback: every size class, fragments, ping, close.

mod common;

use common::{client, echo};
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::Message;

#[test]
fn text_and_binary_come_back_unchanged() {
    let server = echo();
    let mut ws = client(server.addr);
    ws.send(Message::text("hello, wsloop")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hello, wsloop"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    ws.send(Message::text("κόσμε 🦀")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("κόσμε 🦀"));
}

#[test]
fn every_length_form_round_trips() {
    let server = echo();
    let mut ws = client(server.addr);
    // 0, the 7-bit maximum, the first 16-bit length, the 16-bit maximum, the first 64-bit length, and 5 MiB.
    for len in [0usize, 125, 126, 65535, 65536, 5 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(payload.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(payload),
            "binary of {len} bytes"
        );
        let text = "x".repeat(len);
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::text(text),
            "text of {len} bytes"
        );
    }
}

#[test]
fn a_16_mib_message_is_accepted_at_the_default_limit() {
    let server = echo();
    let mut ws = client(server.addr);
    let payload = vec![7u8; 16 << 20];
    ws.send(Message::binary(payload.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(payload));
}

fn raw_frame(fin: bool, opcode: TOpCode, payload: &[u8]) -> Frame {
    let header = FrameHeader {
        is_final: fin,
        opcode,
        ..FrameHeader::default()
    };
    Frame::from_payload(header, payload.to_vec().into())
}

#[test]
fn fragments_with_a_ping_between_them_are_joined() {
    let server = echo();
    let mut ws = client(server.addr);
    ws.write(Message::Frame(raw_frame(
        false,
        TOpCode::Data(Data::Text),
        b"frag",
    )))
    .unwrap();
    ws.write(Message::Ping(b"in between".to_vec().into()))
        .unwrap();
    ws.write(Message::Frame(raw_frame(
        false,
        TOpCode::Data(Data::Continue),
        b"ment",
    )))
    .unwrap();
    ws.write(Message::Frame(raw_frame(
        true,
        TOpCode::Data(Data::Continue),
        b"ed",
    )))
    .unwrap();
    ws.flush().unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(b"in between".to_vec().into())
    );
    assert_eq!(ws.read().unwrap(), Message::text("fragmented"));
}

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    let server = echo();
    let mut ws = client(server.addr);
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );
}

#[test]
fn close_handshake_echoes_the_code_and_ends_cleanly() {
    let server = echo();
    let mut ws = client(server.addr);
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4321.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4321),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    // tungstenite reports the end of a clean close handshake as ConnectionClosed.
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected a clean close, got {other:?}"),
    }
}

#[test]
fn many_clients_are_served_independently() {
    let server = echo();
    let mut clients: Vec<_> = (0..50).map(|_| client(server.addr)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("client {i}"))).unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(ws.read().unwrap(), Message::text(format!("client {i}")));
    }
}

#[test]
fn stop_sends_1001_to_every_client() {
    let server = echo();
    let (mut a, mut b) = (client(server.addr), client(server.addr));
    a.send(Message::text("warm up")).unwrap();
    a.read().unwrap();
    b.send(Message::text("warm up")).unwrap();
    b.read().unwrap();
    let stopper = std::thread::spawn(move || server.stop());
    for mut ws in [a, b] {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
        // Answer the close and hang up, as a polite client does, so the server can finish at once.
        let _ = ws.flush();
    }
    stopper.join().unwrap();
}

/// Replies with an owned copy of each message, then broadcasts another owned copy: the path on which a payload the
/// application hands over is written from its own buffer, never copied behind its header.
struct HandOver;

impl wsloop::Handler for HandOver {
    fn send(&mut self, ws: &mut wsloop::Handle<'_>, id: wsloop::ConnId, msg: wsloop::Message<'_>) {
        match msg {
            wsloop::Message::Text(text) => {
                ws.send(id, text.to_string());
                ws.broadcast(text.to_uppercase());
            }
            wsloop::Message::Binary(bytes) => {
                ws.send(id, bytes.to_vec());
                ws.broadcast(bytes.iter().map(|b| b ^ 0xff).collect::<Vec<u8>>());
            }
        }
    }
}

#[test]
fn owned_messages_handed_over_arrive_whole_on_either_side_of_the_writev_threshold() {
    let server = common::start(wsloop::Config::default(), HandOver);
    let mut sender = client(server.addr);
    let mut other = client(server.addr);
    let min = wsloop::frame::WRITEV_MIN;
    for len in [0, 1, min - 1, min, min + 1, 65_536, 3 << 20] {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let flipped: Vec<u8> = bytes.iter().map(|b| b ^ 0xff).collect();
        sender.send(Message::binary(bytes.clone())).unwrap();
        assert_eq!(
            sender.read().unwrap(),
            Message::binary(bytes),
            "echo of {len} bytes"
        );
        assert_eq!(sender.read().unwrap(), Message::binary(flipped.clone()));
        assert_eq!(
            other.read().unwrap(),
            Message::binary(flipped),
            "broadcast of {len} bytes"
        );

        // Exactly `len` bytes of text, two-byte characters in it.
        let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
        sender.send(Message::text(text.clone())).unwrap();
        assert_eq!(sender.read().unwrap(), Message::text(text.clone()));
        assert_eq!(sender.read().unwrap(), Message::text(text.to_uppercase()));
        assert_eq!(other.read().unwrap(), Message::text(text.to_uppercase()));
    }
    server.stop();
}
