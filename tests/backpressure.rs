//! What is written out: the order of the 101 and the first frames, a half-closing peer's last reply, and the
//! slow-reader policy (a burst is not a slow reader; a slow reader is dropped exactly once).

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{
    connect_raw, echo, handshaken, masked, read_close, read_frame, read_response, request, TIMEOUT,
};
use wsloop::frame::OpCode;
use wsloop::handshake::{HttpResponse, Request};
use wsloop::{Closed, Config, ConnId, Context, Handle, Handler, Message};

/// A config whose close timeout leaves a large reply to a closing peer all the time a slow machine takes to write it
/// out (the default, 5 s, is plenty for loopback only while nothing else runs).
fn roomy_close() -> Config {
    Config::default().close_timeout(Duration::from_secs(60))
}

#[test]
fn a_close_then_a_half_close_still_gets_the_close_reply() {
    let server = echo();
    let mut stream = handshaken(server.addr);
    stream
        .write_all(&masked(true, OpCode::Close, &1000u16.to_be_bytes()))
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_close(&mut stream), Some(1000));
}

#[test]
fn a_plain_get_then_a_half_close_still_gets_its_response() {
    let server = echo();
    let mut stream = connect_raw(server.addr);
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_response(&mut stream).0, 426);
}

#[test]
fn a_pong_never_jumps_ahead_of_the_101() {
    let server = echo();
    let mut stream = connect_raw(server.addr);
    let mut bytes = request(server.addr).into_bytes();
    bytes.extend(masked(true, OpCode::Ping, b"early"));
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_response(&mut stream).0, 101);
    assert_eq!(
        read_frame(&mut stream).unwrap(),
        (true, OpCode::Pong, b"early".to_vec())
    );
}

/// Greets every newcomer with a message as large as the whole outbound limit.
struct History;

impl Handler for History {
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, _: &Context<'_>) {
        ws.send(
            id,
            Message::Binary(&vec![0; Config::default().max_buffered]),
        );
    }
}

#[test]
fn a_large_greeting_in_add_neither_overflows_nor_loses_the_101() {
    let server = common::start(Config::default(), History);
    let mut stream = connect_raw(server.addr);
    stream.write_all(request(server.addr).as_bytes()).unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 101", "got {first:02x?}");
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).unwrap();
        rest.push(byte[0]);
    }
    let (_, opcode, payload) = read_frame(&mut stream).unwrap();
    assert_eq!(
        (opcode, payload.len()),
        (OpCode::Binary, Config::default().max_buffered)
    );
}

/// Relays every message to everyone, like `examples/broadcast.rs`.
struct Relay;

impl Handler for Relay {
    fn send(&mut self, ws: &mut Handle<'_>, _id: ConnId, msg: Message<'_>) {
        ws.broadcast(msg);
    }
}

#[test]
fn one_message_larger_than_the_limit_then_a_small_one_reach_a_fast_reader() {
    // 5 MiB is over the default 4 MiB outbound limit, and both messages are queued in the same loop turn.
    let server = common::start(Config::default(), Relay);
    let mut reader = handshaken(server.addr);
    let mut sender = handshaken(server.addr);
    let mut bytes = masked(true, OpCode::Binary, &vec![7u8; 5 << 20]);
    bytes.extend(masked(true, OpCode::Binary, b"x"));
    let writer = thread::spawn(move || {
        sender.write_all(&bytes).unwrap();
        sender
    });
    let (_, opcode, payload) = read_frame(&mut reader).unwrap();
    assert_eq!((opcode, payload.len()), (OpCode::Binary, 5 << 20));
    assert_eq!(
        read_frame(&mut reader).unwrap(),
        (true, OpCode::Binary, b"x".to_vec()),
        "the reader was dropped"
    );
    drop(writer.join());
}

/// On "go", floods everyone but the sender; on "stats", answers the number of slow readers dropped; on a close,
/// tells the rest.
#[derive(Default)]
struct Flood {
    ids: Vec<ConnId>,
}

impl Handler for Flood {
    fn add(&mut self, _ws: &mut Handle<'_>, id: ConnId, _: &Context<'_>) {
        self.ids.push(id);
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        if msg == Message::Text("stats") {
            return ws.send(id, Message::Text(&ws.stats().dropped_slow.to_string()));
        }
        // 44 MiB each: more than the kernel buffers for one loopback socket (4 MiB to send, 32 MiB to receive).
        for &other in self.ids.iter().filter(|&&other| other != id) {
            for _ in 0..700 {
                ws.send(other, Message::Binary(&[1; 64 << 10]));
            }
        }
    }

    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, _: Closed<'_>) {
        self.ids.retain(|&other| other != id);
        ws.broadcast(Message::Binary(&[3; 50])); // a "leave" notice, as the chatroom sends
    }
}

#[test]
fn each_slow_reader_is_dropped_once_with_1008() {
    // Each dropped peer's close frame waits behind a full socket until the test reads that peer, one after another:
    // the close timeout must outlast all three.
    let config = roomy_close().max_buffered(64 << 10);
    let server = common::start(config, Flood::default());
    // Three clients that read nothing while they are flooded: each overflows; each drop's close callback
    // broadcasts to the others, which must not drop (or count) them a second time.
    let mut peers: Vec<_> = (0..3).map(|_| handshaken(server.addr)).collect();
    let mut trigger = handshaken(server.addr);
    trigger
        .write_all(&masked(true, OpCode::Text, b"go"))
        .unwrap();
    common::eventually("three slow readers to be dropped", || {
        trigger
            .write_all(&masked(true, OpCode::Text, b"stats"))
            .unwrap();
        loop {
            // Skip the leave notices; the answer is the one text frame.
            let (_, opcode, payload) = read_frame(&mut trigger).unwrap();
            if opcode == OpCode::Text {
                return payload == b"3";
            }
        }
    });
    for peer in &mut peers {
        assert_eq!(read_close(peer), Some(1008));
    }
}

/// A round trip through the loop on another client: once its echo is back, the server has been back to `poll`
/// at least once since this was called, and has handled whatever that turn reported (a FIN, say) before it wrote.
fn a_turn_of_the_loop(other: &mut common::Client) {
    common::say(other, "one turn");
    assert_eq!(common::text(other), "one turn");
}

/// Echoes, and reports each close callback (the server has read the peer's close frame, or dropped the peer).
struct EchoReportingCloses(mpsc::Sender<u16>);

impl Handler for EchoReportingCloses {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        ws.send(id, msg);
    }

    fn close(&mut self, _ws: &mut Handle<'_>, _id: ConnId, closed: Closed<'_>) {
        let _ = self.0.send(closed.status());
    }
}

#[test]
fn a_large_echo_then_a_close_then_a_half_close_gets_the_echo_and_the_close_reply() {
    let (closes, closed) = mpsc::channel();
    let server = common::start(roomy_close(), EchoReportingCloses(closes));
    let mut stream = handshaken(server.addr);
    let mut other = common::client(server.addr);
    let mut bytes = masked(true, OpCode::Binary, &vec![7u8; 8 << 20]);
    bytes.extend(masked(true, OpCode::Close, &1000u16.to_be_bytes()));
    stream.write_all(&bytes).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    // The client reads nothing until the server has read the close frame, and so has the echo queued (far more of
    // it than the sockets hold), and then has had a turn more for the FIN right behind it.
    assert_eq!(
        closed.recv_timeout(TIMEOUT),
        Ok(1000),
        "the server read the close frame"
    );
    a_turn_of_the_loop(&mut other);
    let (_, opcode, payload) = read_frame(&mut stream).expect("the whole echo");
    assert_eq!((opcode, payload.len()), (OpCode::Binary, 8 << 20));
    assert_eq!(read_close(&mut stream), Some(1000));
}

/// Serves a page larger than what one write to a socket takes, and reports each request it answers; echoes.
struct BigPage(mpsc::Sender<()>);

impl Handler for BigPage {
    fn http(&mut self, _req: &Request<'_>) -> Option<HttpResponse> {
        let _ = self.0.send(());
        Some(HttpResponse::new(200, "text/plain", vec![b'a'; 32 << 20]))
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        ws.send(id, msg);
    }
}

#[test]
fn a_plain_get_then_a_half_close_gets_a_large_response_whole() {
    let (requests, requested) = mpsc::channel();
    let server = common::start(roomy_close(), BigPage(requests));
    let mut other = common::client(server.addr);
    let mut stream = connect_raw(server.addr);
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    // The client reads nothing until the server has read the request, and so has the page queued (far more of it
    // than the sockets hold), and then has had a turn more for the FIN right behind it.
    requested
        .recv_timeout(TIMEOUT)
        .expect("the server read the request");
    a_turn_of_the_loop(&mut other);
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert_eq!(all.len() - head_end, 32 << 20, "the body was cut short");
}

/// Echoes everything but the text "all sent", which it reports instead: the server has handled everything its
/// sender sent before it.
struct EchoReportingMarks(mpsc::Sender<()>);

impl Handler for EchoReportingMarks {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        if msg == Message::Text("all sent") {
            let _ = self.0.send(());
        } else {
            ws.send(id, msg);
        }
    }
}

/// A peer that pings without reading, behind an echo its socket cannot take: its pongs are replaced by newer ones
/// instead of piling up (RFC 6455 §5.5.3), so the loop stays quick for everyone else; when it reads at last, it
/// gets the echo, a bounded number of pongs in order, and the answer to its last ping.
#[test]
fn a_ping_flood_from_a_peer_that_does_not_read_stays_bounded_and_the_last_ping_is_answered() {
    const PINGS: u32 = 300_000;
    // How long the flooder waits for the server to get through them all, or for any one frame.
    const PATIENCE: Duration = Duration::from_secs(20);
    let (marks, marked) = mpsc::channel();
    let server = common::start(Config::default(), EchoReportingMarks(marks));
    let mut flooder = handshaken(server.addr);
    flooder.set_read_timeout(Some(PATIENCE)).unwrap();
    let echo_len = 8 << 20;
    flooder
        .write_all(&masked(true, OpCode::Binary, &vec![5u8; echo_len]))
        .unwrap();
    let mut writer = flooder.try_clone().unwrap();
    let pinging = thread::spawn(move || {
        let mut pings: Vec<u8> = (0..PINGS)
            .flat_map(|i| masked(true, OpCode::Ping, &i.to_be_bytes()))
            .collect();
        pings.extend(masked(true, OpCode::Text, b"all sent"));
        writer.write_all(&pings).unwrap();
    });
    // Meanwhile the others are served.
    let mut other = common::client(server.addr);
    other
        .send(tungstenite::Message::text("still quick"))
        .unwrap();
    assert_eq!(
        other.read().unwrap(),
        tungstenite::Message::text("still quick")
    );
    pinging.join().unwrap();
    // The flooder reads nothing until the server has handled every ping: were it still at them, each pong would
    // go out as fast as the flooder reads, and the count of pongs would say nothing.
    marked
        .recv_timeout(PATIENCE)
        .expect("the server handled every ping");

    let (mut echoed, mut pongs) = (false, Vec::new());
    while pongs.last() != Some(&(PINGS - 1)) {
        let (_, opcode, payload) = read_frame(&mut flooder).expect("the last pong");
        match opcode {
            OpCode::Binary => {
                assert_eq!(payload.len(), echo_len);
                echoed = true;
            }
            OpCode::Pong => pongs.push(u32::from_be_bytes(payload[..4].try_into().unwrap())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(echoed, "the echo came");
    assert!(
        pongs.windows(2).all(|w| w[0] < w[1]),
        "pongs answer pings in order"
    );
    assert!(
        pongs.len() < 1000,
        "{} pongs queued for a peer that did not read",
        pongs.len()
    );
}

/// A peer that half-closes, then reads its long reply slowly: the reply gets the close timeout from the FIN and
/// no more, however often the socket wakes the server up meanwhile.
#[test]
fn a_half_closed_peer_that_reads_slowly_is_cut_off_at_the_close_timeout() {
    let config = Config::default()
        .close_timeout(Duration::from_millis(1200))
        .max_message(32 << 20);
    let server = common::start(config, common::Echo);
    let mut stream = handshaken(server.addr);
    socket2::SockRef::from(&stream)
        .set_recv_buffer_size(32 << 10)
        .unwrap();
    let len = 24 << 20;
    stream
        .write_all(&masked(true, OpCode::Binary, &vec![3u8; len]))
        .unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    // 64 KiB every 20 ms: the whole echo would take about 8 s. The close timeout allows 1.2 s, about 4 MB, and
    // what the kernel still holds when the server closes (a few MB) arrives after it.
    let mut received = 0;
    let mut buf = vec![0u8; 64 << 10];
    for _ in 0..1000 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        received < len / 2,
        "{received} bytes went out to a peer that half-closed: the close timeout was pushed back"
    );
}
