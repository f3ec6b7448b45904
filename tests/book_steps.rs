//! The book's step programs (`examples/step1_accept.rs` to `examples/step6_wsloop.rs`, explained in `book/`), each
//! run as a process and talked to over real sockets, as a reader tries them.
//!
//! Each test starts its step on port 0 (`--port 0`), reads the address from its first line (`listening on ADDR`),
//! and kills it when the test ends (`common::process::Example`). Steps 1 and 2 get raw TCP; from step 3 on, a raw
//! socket sends bytes made by hand and tungstenite plays the browser.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::process::Example;
use common::{
    assert_closed, client, connect_raw, handshaken, masked, read_close, read_frame, read_response,
    request, text, Client, TIMEOUT,
};
use tungstenite::Message as WsMessage;
use wsloop::frame::OpCode;

/// Starts `examples/STEP.rs` on a free port.
fn start(step: &str) -> Example {
    Example::start(step, &[], "listening on ", "")
}

/// Waits (bounded) until `step` has printed a line containing `text`; returns that line.
fn printed(step: &Example, text: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(line) = step.output().into_iter().find(|l| l.contains(text)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "the step never printed {text:?}: {:?}",
            step.output()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Everything until the server closes the connection (bounded by the stream's read timeout).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .expect("the server sends and hangs up");
    all
}

// Step 1: accept, print, send back.

#[test]
fn step1_prints_what_a_client_sends_and_sends_it_back() {
    let step = start("step1_accept");
    let mut stream = connect_raw(step.addr);
    stream.write_all(b"hello, step 1\n").unwrap();
    assert_eq!(read_to_close(&mut stream), b"hello, step 1\n");
    printed(&step, "sent 14 bytes");
    printed(&step, "hello, step 1");
}

#[test]
fn step1_serves_one_client_at_a_time() {
    let step = start("step1_accept");
    let mut first = connect_raw(step.addr);
    printed(&step, "accepted"); // the server now waits for `first` to speak
    let mut second = connect_raw(step.addr);
    second.write_all(b"second\n").unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    match second.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the second client was served while the first was silent: {other:?}"),
    }
    first.write_all(b"first\n").unwrap();
    assert_eq!(read_to_close(&mut first), b"first\n");
    second.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(read_to_close(&mut second), b"second\n");
}

// Step 2: one poll for all.

#[test]
fn step2_serves_a_second_client_while_the_first_is_silent() {
    let step = start("step2_poll");
    let mut first = connect_raw(step.addr);
    let mut second = connect_raw(step.addr);
    let mut reply = [0u8; 7];
    second.write_all(b"second\n").unwrap();
    second.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"second\n");
    first.write_all(b"first\n").unwrap();
    first.read_exact(&mut reply[..6]).unwrap();
    assert_eq!(&reply[..6], b"first\n");
}

#[test]
fn step2_reads_until_would_block() {
    // One write of 10,000 bytes is one readiness event; a loop that read 1024 bytes per event would echo only
    // those, and wait for an event that never comes.
    let step = start("step2_poll");
    let mut stream = connect_raw(step.addr);
    let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&sent).unwrap();
    let mut echoed = vec![0u8; sent.len()];
    stream.read_exact(&mut echoed).unwrap();
    assert!(echoed == sent, "the echo differs from what was sent");
}

#[test]
fn step2_closes_a_client_that_hangs_up() {
    let step = start("step2_poll");
    let stream = connect_raw(step.addr);
    let accepted = printed(&step, "accepted from");
    let id = accepted.split(' ').next().unwrap().to_string(); // "#0"
    drop(stream);
    printed(&step, &format!("{id} closed"));
}

// Step 3: the handshake.

#[test]
fn step3_answers_the_rfc_sample_key_with_the_rfc_accept_value() {
    let step = start("step3_handshake");
    let mut stream = connect_raw(step.addr);
    stream.write_all(request(step.addr).as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101, "{head}");
    // RFC 6455 §1.3: the sample nonce and its accept value.
    assert!(
        head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: Upgrade\r\n"), "{head}");
}

#[test]
fn step3_waits_for_a_head_that_arrives_in_pieces() {
    let step = start("step3_handshake");
    let mut stream = connect_raw(step.addr);
    let request = request(step.addr);
    for piece in request.as_bytes().chunks(17) {
        stream.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101, "{head}");
}

#[test]
fn step3_refuses_bad_requests_and_closes() {
    let step = start("step3_handshake");
    let good = request(step.addr);
    let too_long = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n", "a".repeat(9000));
    let cases: [(&str, String, u16, &str); 7] = [
        ("POST", good.replacen("GET", "POST", 1), 400, "GET"),
        (
            "no Upgrade",
            good.replace("Upgrade: websocket\r\n", ""),
            400,
            "Upgrade",
        ),
        (
            "no key",
            good.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            400,
            "16 bytes",
        ),
        (
            "a key of 3 bytes",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "YWJj"),
            400,
            "16 bytes",
        ),
        (
            "version 8",
            good.replace("Version: 13", "Version: 8"),
            426,
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13",
        ),
        ("not HTTP", "hello\r\n\r\n".to_string(), 400, "GET"),
        ("a head over 8 KiB", too_long, 431, "too long"),
    ];
    for (what, bytes, expected, says) in cases {
        let mut stream = connect_raw(step.addr);
        stream.write_all(bytes.as_bytes()).unwrap();
        let (status, head, body) = read_response(&mut stream);
        assert_eq!(status, expected, "{what}: {head}{body}");
        assert!(
            head.contains(says) || body.contains(says),
            "{what}: {head}{body}"
        );
        assert_closed(&mut stream);
    }
}

#[test]
fn step3_shows_the_bytes_of_a_frame_from_a_real_client() {
    let step = start("step3_handshake");
    let mut ws = client(step.addr);
    ws.send(WsMessage::text("Hello")).unwrap();
    // 0x81: FIN + text; 0x85: MASK + length 5; then a masking key tungstenite chose, and 5 masked bytes.
    printed(&step, "sent 11 bytes: 81 85 ");
}

// Step 4: frames.

#[test]
fn step4_decodes_the_rfc_masked_hello() {
    let step = start("step4_frames");
    let mut stream = handshaken(step.addr);
    // RFC 6455 §5.7: a masked "Hello" from a client, and the unmasked one a server sends.
    stream
        .write_all(&[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ])
        .unwrap();
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    printed(&step, "frame: FIN=1 opcode=0x1 payload_len=5");
}

#[test]
fn step4_takes_three_frames_in_one_read_and_one_frame_in_pieces() {
    let step = start("step4_frames");
    let mut stream = handshaken(step.addr);
    let mut three = masked(true, OpCode::Text, b"one");
    three.extend(masked(true, OpCode::Binary, b"two"));
    three.extend(masked(true, OpCode::Text, b"three"));
    stream.write_all(&three).unwrap();
    for (opcode, payload) in [
        (OpCode::Text, &b"one"[..]),
        (OpCode::Binary, b"two"),
        (OpCode::Text, b"three"),
    ] {
        assert_eq!(
            read_frame(&mut stream).unwrap(),
            (true, opcode, payload.to_vec())
        );
    }
    let frame = masked(true, OpCode::Text, &[b'x'; 300]); // the 16-bit length form
    for byte in &frame {
        stream.write_all(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    // 0x81, then 126 and 300 as 16 bits: 0x01 0x2c.
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(header, [0x81, 0x7e, 0x01, 0x2c]);
    let mut payload = vec![0u8; 300];
    stream.read_exact(&mut payload).unwrap();
    assert!(payload.iter().all(|&b| b == b'x'));
}

#[test]
fn step4_echoes_every_length_form_to_a_real_client() {
    let step = start("step4_frames");
    let mut ws = client(step.addr);
    // (Up to 70,000 bytes: the step writes its echo at once, and drops a client whose socket cannot take it all;
    // chapter 6.)
    for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        ws.send(WsMessage::binary(data.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), WsMessage::binary(data), "{len} bytes");
    }
    ws.send(WsMessage::text("héllo, wörld")).unwrap();
    assert_eq!(text(&mut ws), "héllo, wörld");
}

#[test]
fn step4_answers_a_ping_with_a_pong_and_a_close_with_a_close() {
    let step = start("step4_frames");
    let mut stream = handshaken(step.addr);
    stream
        .write_all(&masked(true, OpCode::Ping, b"are you there"))
        .unwrap();
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Pong, b"are you there".to_vec())
    );
    stream
        .write_all(&masked(true, OpCode::Close, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(read_close(&mut stream), Some(1000));
    assert_closed(&mut stream);
}

#[test]
fn step4_closes_on_frames_that_break_the_rules() {
    let step = start("step4_frames");
    let mut huge = vec![0x82, 0xff]; // binary, masked, a 64-bit length follows:
    huge.extend((1u64 << 40).to_be_bytes()); // 1 TiB, announced
    huge.extend([1, 2, 3, 4]);
    let mut reserved_opcode = masked(true, OpCode::Text, b"x");
    reserved_opcode[0] = 0x83;
    let mut rsv1 = masked(true, OpCode::Text, b"x");
    rsv1[0] |= 0x40;
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("unmasked", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("too long", huge, 1009),
        ("a reserved opcode", reserved_opcode, 1002),
        ("RSV1 without an extension", rsv1, 1002),
        ("a fragmented ping", masked(false, OpCode::Ping, b"x"), 1002),
    ];
    for (what, bytes, code) in cases {
        let mut stream = handshaken(step.addr);
        stream.write_all(&bytes).unwrap();
        assert_eq!(read_close(&mut stream), Some(code), "{what}");
        assert_closed(&mut stream);
    }
}

// Step 5, and step 6 (the same chatroom on the library).

/// A chat client that has joined: its id (`#N`), from the `#N joined` it is sent first.
fn join(step: &Example) -> (Client, String) {
    let mut ws = client(step.addr);
    let joined = text(&mut ws);
    let id = joined
        .strip_suffix(" joined")
        .unwrap_or_else(|| panic!("expected `#N joined`, got {joined:?}"))
        .to_string();
    (ws, id)
}

fn chat(name: &str) {
    let step = start(name);
    let (mut ada, ada_id) = join(&step);
    let (mut bob, bob_id) = join(&step);
    assert_ne!(ada_id, bob_id);
    assert_eq!(text(&mut ada), format!("{bob_id} joined"));
    ada.send(WsMessage::text("hello, Bob")).unwrap();
    assert_eq!(text(&mut ada), format!("{ada_id}: hello, Bob"));
    assert_eq!(text(&mut bob), format!("{ada_id}: hello, Bob"));
    bob.send(WsMessage::text("hi, Ada")).unwrap();
    assert_eq!(text(&mut bob), format!("{bob_id}: hi, Ada"));
    assert_eq!(text(&mut ada), format!("{bob_id}: hi, Ada"));
    common::close_and_wait(bob);
    assert_eq!(text(&mut ada), format!("{bob_id} left"));
}

#[test]
fn step5_broadcasts_joins_messages_and_leaves_to_everyone() {
    chat("step5_chatroom");
}

#[test]
fn step6_the_same_chat_on_the_library() {
    chat("step6_wsloop");
}

fn refuses_what_a_chatroom_cannot_take(name: &str) {
    let step = start(name);
    let cases: [(&str, Vec<u8>, u16); 2] = [
        (
            "text that is not UTF-8",
            masked(true, OpCode::Text, &[0xc3, 0x28]),
            1007,
        ),
        ("binary", masked(true, OpCode::Binary, b"\x00\x01"), 1003),
    ];
    for (what, bytes, code) in cases {
        let mut stream = handshaken(step.addr);
        let (_, opcode, joined) = read_frame(&mut stream).unwrap();
        assert_eq!(opcode, OpCode::Text);
        assert!(joined.ends_with(b" joined"), "{what}");
        stream.write_all(&bytes).unwrap();
        assert_eq!(read_close(&mut stream), Some(code), "{what}");
    }
}

#[test]
fn step5_closes_invalid_utf8_with_1007_and_binary_with_1003() {
    refuses_what_a_chatroom_cannot_take("step5_chatroom");
}

#[test]
fn step6_closes_invalid_utf8_with_1007_and_binary_with_1003() {
    refuses_what_a_chatroom_cannot_take("step6_wsloop");
}
