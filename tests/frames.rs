//! Frames over raw sockets: dribbled, batched, and one test row per bad frame with the close code it earns.

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::{assert_closed, echo, handshaken, masked, read_close, read_frame, still_serves};
use wsloop::frame::OpCode;

#[test]
fn a_frame_dribbled_one_byte_at_a_time_is_reassembled() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let payload = "dribbled ".repeat(30); // 270 bytes: the 16-bit length form
    for byte in masked(true, OpCode::Text, payload.as_bytes()) {
        stream.write_all(&[byte]).unwrap();
        thread::sleep(Duration::from_micros(100));
    }
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Text, payload.into_bytes())
    );
}

/// Long frames arrive over many reads; once a frame lacks 8 KiB or more, the server reads its bytes straight into
/// the connection's buffer. Pieces of uneven sizes, cut inside characters, with the next frames right behind the
/// long one in the same write, must come back whole and in order.
#[test]
fn long_frames_arriving_in_pieces_come_back_whole_with_the_frames_behind_them() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let text = "wsloop reads behind: héllo ✓ 😀 ".repeat(12_000); // ~430 KB of mixed UTF-8
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut bytes = masked(true, OpCode::Text, text.as_bytes());
    bytes.extend(masked(true, OpCode::Binary, &binary));
    bytes.extend(masked(true, OpCode::Text, b"short, right behind"));
    let mut at = 0;
    for size in [1, 3, 9_000, 100, 70_000, 5, 123_457].iter().cycle() {
        let end = (at + size).min(bytes.len());
        stream.write_all(&bytes[at..end]).unwrap();
        at = end;
        if at == bytes.len() {
            break;
        }
        thread::sleep(Duration::from_micros(300));
    }
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Text, text.into_bytes())
    );
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Binary, binary)
    );
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Text, b"short, right behind".to_vec())
    );
}

/// Invalid UTF-8 deep inside a long text frame that is read behind the buffer still fails with 1007, as soon as
/// it has arrived.
#[test]
fn invalid_text_deep_in_a_long_frame_read_in_pieces_closes_with_1007() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let mut payload = "ok ✓ ".repeat(40_000).into_bytes();
    payload[150_001] = 0xFF;
    let bytes = masked(true, OpCode::Text, &payload);
    // Up to a little past the bad byte, in 20 KB pieces; the rest never comes.
    for piece in bytes[..160_000].chunks(20_000) {
        stream.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_close(&mut stream), Some(1007));
    still_serves(server.addr);
}

#[test]
fn many_frames_in_one_write_are_all_answered_in_order() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(masked(true, OpCode::Binary, format!("{i}").as_bytes()));
    }
    stream.write_all(&batch).unwrap();
    for i in 0..1000 {
        assert_eq!(
            read_frame(&mut stream).unwrap().2,
            format!("{i}").as_bytes()
        );
    }
}

#[test]
fn control_frames_interleaved_with_fragments() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let mut bytes = masked(false, OpCode::Binary, b"one ");
    bytes.extend(masked(true, OpCode::Ping, b"p1"));
    bytes.extend(masked(false, OpCode::Continuation, b"two "));
    bytes.extend(masked(true, OpCode::Pong, b"unsolicited"));
    bytes.extend(masked(true, OpCode::Continuation, b"three"));
    stream.write_all(&bytes).unwrap();
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Pong, b"p1".to_vec())
    );
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Binary, b"one two three".to_vec())
    );
}

#[test]
fn close_is_echoed_then_the_server_closes_tcp_first() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    stream
        .write_all(&masked(true, OpCode::Close, &close))
        .unwrap();
    assert_eq!(read_close(&mut stream), Some(1000));
    assert_closed(&mut stream);
}

#[test]
fn an_empty_close_is_answered_with_an_empty_close() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    stream.write_all(&masked(true, OpCode::Close, b"")).unwrap();
    assert_eq!(read_close(&mut stream), None);
    assert_closed(&mut stream);
}

#[test]
fn messages_queued_before_a_close_are_delivered_before_it() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let mut bytes = masked(true, OpCode::Text, b"last words");
    bytes.extend(masked(true, OpCode::Close, &1000u16.to_be_bytes()));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_frame(&mut stream).unwrap().2, b"last words");
    assert_eq!(read_close(&mut stream), Some(1000));
}

fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![first, payload.len() as u8];
    v.extend_from_slice(payload);
    v
}

fn with_first_byte(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = masked(true, OpCode::Text, payload);
    v[0] = first;
    v
}

/// One row per contract line: the bytes sent after the handshake, and the close code the server must answer with.
#[test]
fn each_bad_frame_gets_its_close_code_and_the_server_still_serves() {
    let server = echo();
    let mut too_long_ping = masked(true, OpCode::Ping, &[0; 125]);
    too_long_ping[1] = 0x80 | 126; // claim a 16-bit length ...
    too_long_ping.splice(2..2, [0, 126]); // ... of 126 bytes
    let mut huge = vec![0x82, 0xff];
    huge.extend_from_slice(&(17u64 << 20).to_be_bytes()); // 17 MiB announced: over the 16 MiB default
    huge.extend_from_slice(&[1, 2, 3, 4]);
    let mut top_bit = vec![0x82, 0xff];
    top_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top_bit.extend_from_slice(&[1, 2, 3, 4]);
    let mut fragment_then_text = masked(false, OpCode::Text, b"a");
    fragment_then_text.extend(masked(true, OpCode::Text, b"b"));
    let table: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked client frame", unmasked(0x81, b"hello"), 1002),
        (
            "RSV1 without an extension",
            with_first_byte(0xc1, b"x"),
            1002,
        ),
        ("RSV2", with_first_byte(0xa1, b"x"), 1002),
        ("reserved data opcode 3", with_first_byte(0x83, b"x"), 1002),
        (
            "reserved control opcode 0xB",
            with_first_byte(0x8b, b"x"),
            1002,
        ),
        ("fragmented ping", masked(false, OpCode::Ping, b"x"), 1002),
        ("ping over 125 bytes", too_long_ping, 1002),
        (
            "continuation with nothing to continue",
            masked(true, OpCode::Continuation, b"x"),
            1002,
        ),
        (
            "new message inside a fragmented one",
            fragment_then_text,
            1002,
        ),
        ("64-bit length with its top bit set", top_bit, 1002),
        ("message over the size limit", huge, 1009),
        (
            "invalid UTF-8 text",
            masked(true, OpCode::Text, &[0xce, 0xba, 0xff]),
            1007,
        ),
        (
            "text ending mid-character",
            masked(true, OpCode::Text, &[0xe2, 0x82]),
            1007,
        ),
        (
            "one-byte close payload",
            masked(true, OpCode::Close, &[3]),
            1002,
        ),
        (
            "close code 1005 on the wire",
            masked(true, OpCode::Close, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "close code 999",
            masked(true, OpCode::Close, &999u16.to_be_bytes()),
            1002,
        ),
        (
            "close reason not UTF-8",
            masked(true, OpCode::Close, &[0x03, 0xe8, 0xff, 0xfe]),
            1007,
        ),
    ];
    for (name, bytes, code) in table {
        let mut stream = handshaken(server.addr);
        stream.write_all(&bytes).unwrap();
        assert_eq!(read_close(&mut stream), Some(code), "{name}");
        assert_closed(&mut stream);
    }
    still_serves(server.addr);
}

#[test]
fn invalid_utf8_fails_fast_inside_a_frame_that_is_still_arriving() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    let mut payload = b"valid so far ".to_vec();
    payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]); // above U+10FFFF
    payload.extend_from_slice(&[b'x'; 4000]);
    let frame = masked(true, OpCode::Text, &payload);
    // Send only the header and the bad prefix: the rest of the frame never comes.
    stream.write_all(&frame[..8 + 17]).unwrap();
    assert_eq!(read_close(&mut stream), Some(1007));
}

#[test]
fn a_client_vanishing_mid_frame_does_not_disturb_others() {
    let server = echo();
    let mut other = handshaken(server.addr);
    for _ in 0..20 {
        let mut stream = handshaken(server.addr);
        let frame = masked(true, OpCode::Binary, &[9; 1000]);
        stream.write_all(&frame[..500]).unwrap();
        drop(stream);
    }
    other
        .write_all(&masked(true, OpCode::Text, b"unaffected"))
        .unwrap();
    assert_eq!(read_frame(&mut other).unwrap().2, b"unaffected");
}

/// Sends up to 64 MiB of messages to be echoed without reading a single echo (stopping early once the server hangs
/// up): once the kernel's buffers are full, the echoes queue up in the server, and past `max_buffered` the server
/// must give up on the peer instead of queueing forever.
fn flood_without_reading(stream: &mut std::net::TcpStream) {
    let message = masked(true, OpCode::Binary, &[b'p'; 125]);
    let batch: Vec<u8> = message
        .iter()
        .copied()
        .cycle()
        .take(message.len() * 1000)
        .collect();
    for _ in 0..500 {
        if stream.write_all(&batch).is_err() {
            break;
        }
    }
}

/// Echoes, except that "stats" is answered with the server's counters.
struct EchoWithStats;

impl wsloop::Handler for EchoWithStats {
    fn send(&mut self, ws: &mut wsloop::Handle<'_>, id: wsloop::ConnId, msg: wsloop::Message<'_>) {
        if msg == wsloop::Message::Text("stats") {
            let s = ws.stats();
            let text = format!("{} {} {}", s.accepted, s.handshakes, s.dropped_slow);
            return ws.send(id, wsloop::Message::Text(&text));
        }
        ws.send(id, msg);
    }
}

#[test]
fn stats_count_what_the_overflow_policy_did() {
    let config = wsloop::Config::default().max_buffered(16 << 10);
    let server = common::start(config, EchoWithStats);
    let mut flooder = handshaken(server.addr);
    flood_without_reading(&mut flooder);
    assert_eq!(read_close(&mut flooder), Some(1008));
    let mut asker = handshaken(server.addr);
    asker
        .write_all(&masked(true, OpCode::Text, b"stats"))
        .unwrap();
    // Two connections accepted and handshaked; one dropped as too slow.
    assert_eq!(read_frame(&mut asker).unwrap().2, b"2 2 1");
}

/// Echoes, but naps in the callback when told to, so that a test can pile data up in the server's socket.
struct Napper;

impl wsloop::Handler for Napper {
    fn send(&mut self, ws: &mut wsloop::Handle<'_>, id: wsloop::ConnId, msg: wsloop::Message<'_>) {
        if msg == wsloop::Message::Text("nap") {
            thread::sleep(Duration::from_millis(300));
        }
        ws.send(id, msg);
    }
}

#[test]
fn a_failed_peer_that_keeps_sending_is_drained_and_closed_when_it_hangs_up() {
    let config = wsloop::Config::default().close_timeout(Duration::from_secs(60));
    let server = common::start(config, Napper);
    let mut stream = handshaken(server.addr);
    // While the server naps: a protocol error (an unmasked frame), then 16 MiB more, then our FIN. The server
    // answers 1002 and then has far more to read and drop than one turn of reads takes, with the FIN behind it.
    let mut bytes = masked(true, OpCode::Text, b"nap");
    bytes.extend(unmasked(0x81, b"hello"));
    bytes.extend(std::iter::repeat_n(0u8, 16 << 20));
    let mut writer = stream.try_clone().unwrap();
    let writing = thread::spawn(move || {
        let _ = writer.write_all(&bytes);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    assert_eq!(read_frame(&mut stream).unwrap().2, b"nap");
    assert_eq!(read_close(&mut stream), Some(1002));
    writing.join().unwrap();
    assert_closed(&mut stream);
    // The server must see the FIN behind all that data and close at once, not wait out the 60 s close timeout:
    // stopping the server waits until every connection is gone.
    let started = std::time::Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the connection lingered {:?}",
        started.elapsed()
    );
}
