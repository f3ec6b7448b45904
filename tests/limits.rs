//! The server's limits and timeouts, one test per observable rule, over real loopback sockets.
//!
//! Each test sets the one `Config` field it is about (timeouts shortened to a few hundred milliseconds), pushes a
//! client past it, checks what that client sees, and then checks that the server still serves a new client.
//!
//! The tests must hold on a loaded machine, where any thread, the server's or the test's, may be held up for a long
//! moment. So a bound on *how early* something happens is measured from an instant taken before the client did what
//! starts the server's clock (a delay can only make the server later); a bound on *how late* allows [`LATE`]; and
//! where the server must *not* act, the test leaves it far more time than a hold-up takes.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    assert_closed, client, connect_raw, handshaken, masked, read_close, read_frame, read_response,
    request, start, still_serves, Echo, TIMEOUT,
};
use wsloop::frame::OpCode;
use wsloop::handshake::HttpResponse;
use wsloop::handshake::Request;
use wsloop::{Accept, CloseCode, Closed, Config, ConnId, Context, Handle, Handler, Message};

/// A timeout that a test waits out: short, for a quick test. No test needs anything done within it, only after it.
const SHORT: Duration = Duration::from_millis(300);

/// How late the server may act on a [`SHORT`] deadline before a test counts it a failure: far more than a loaded
/// machine holds up a thread, and with [`SHORT`] still under the shortest default timeout (`close_timeout`, 5 s), so
/// that a server that ignored the setting is still caught.
const LATE: Duration = Duration::from_secs(3);

/// Waits until the server ends `stream`: EOF or a reset, with any frames before it skipped. Fails after `within`.
fn wait_for_drop(stream: &mut TcpStream, within: Duration) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("unexpected read error: {e}"),
        }
    }
    panic!("the server did not drop the connection within {within:?}");
}

/// A request head padded with an `X-Padding` header to exactly `len` bytes.
fn request_of_len(addr: SocketAddr, len: usize) -> String {
    let base = request(addr);
    let empty = base.len() + "X-Padding: \r\n".len();
    assert!(len >= empty, "a head of {len} bytes is too short to pad");
    let head = base.strip_suffix("\r\n").unwrap();
    format!("{head}X-Padding: {}\r\n\r\n", "p".repeat(len - empty))
}

/// A raw handshake with extra header lines; returns the response.
fn handshake_with(addr: SocketAddr, path: &str, extra: &str) -> (TcpStream, (u16, String, String)) {
    let mut stream = connect_raw(addr);
    let req = request(addr).replacen("GET / ", &format!("GET {path} "), 1);
    let req = format!("{}{extra}\r\n", req.strip_suffix("\r\n").unwrap());
    stream.write_all(req.as_bytes()).unwrap();
    let response = read_response(&mut stream);
    (stream, response)
}

/// The value of header `name` in a response head.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn assert_one_line_body(body: &str) {
    assert!(
        body.ends_with('\n') && body.trim_end().lines().count() == 1 && !body.trim().is_empty(),
        "{body:?}"
    );
}

#[test]
fn max_users_refuses_one_more_with_503_and_frees_the_place_on_leave() {
    let server = start(Config::default().max_users(2), Echo);
    let mut a = client(server.addr);
    let _b = client(server.addr);

    let mut third = connect_raw(server.addr);
    third.write_all(request(server.addr).as_bytes()).unwrap();
    let (status, head, body) = read_response(&mut third);
    assert_eq!(status, 503, "{head}");
    assert_one_line_body(&body);
    assert_closed(&mut third);

    // a leaves with a closing handshake; once its close is answered, its place is free.
    a.close(None).unwrap();
    loop {
        match a.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
    still_serves(server.addr);
}

#[test]
fn max_message_counts_every_fragment_and_the_next_byte_gets_1009() {
    let server = start(Config::default().max_message(1000), Echo);

    // 400 + 400 + 200 = exactly 1000 bytes: echoed whole.
    let mut ws = handshaken(server.addr);
    let mut input = masked(false, OpCode::Text, &[b'a'; 400]);
    input.extend(masked(false, OpCode::Continuation, &[b'b'; 400]));
    input.extend(masked(true, OpCode::Continuation, &[b'c'; 200]));
    ws.write_all(&input).unwrap();
    let (fin, opcode, payload) = read_frame(&mut ws).unwrap();
    assert!(fin);
    assert_eq!(opcode, OpCode::Text);
    assert_eq!(payload.len(), 1000);
    assert!(payload[..400].iter().all(|&b| b == b'a') && payload[800..].iter().all(|&b| b == b'c'));

    // 400 + 400 + 201 = 1001 bytes: close 1009, though every frame alone is small.
    let mut input = masked(false, OpCode::Text, &[b'a'; 400]);
    input.extend(masked(false, OpCode::Continuation, &[b'b'; 400]));
    input.extend(masked(true, OpCode::Continuation, &[b'c'; 201]));
    ws.write_all(&input).unwrap();
    assert_eq!(read_close(&mut ws), Some(1009));
    assert_closed(&mut ws);

    // The limit is enforced as soon as a fragment's header shows it: the last fragment need not arrive.
    let mut ws = handshaken(server.addr);
    let mut input = masked(false, OpCode::Binary, &[1; 600]);
    input.extend(masked(false, OpCode::Continuation, &[2; 401]));
    ws.write_all(&input).unwrap();
    assert_eq!(read_close(&mut ws), Some(1009));
    assert_closed(&mut ws);

    still_serves(server.addr);
}

#[test]
fn max_message_fails_as_soon_as_a_header_shows_the_message_is_too_big() {
    let server = start(Config::default().max_message(1000), Echo);
    // Only the header of a frame announcing 1001 bytes: the limit is known, the payload need not arrive.
    let mut ws = handshaken(server.addr);
    ws.write_all(&masked(true, OpCode::Binary, &[1; 1001])[..8])
        .unwrap();
    assert_eq!(read_close(&mut ws), Some(1009));
    assert_closed(&mut ws);

    // The same over fragments: 600 bytes in, then the header of a continuation announcing 401 more.
    let mut ws = handshaken(server.addr);
    let mut input = masked(false, OpCode::Binary, &[1; 600]);
    input.extend_from_slice(&masked(false, OpCode::Continuation, &[2; 401])[..8]);
    ws.write_all(&input).unwrap();
    assert_eq!(read_close(&mut ws), Some(1009));
    assert_closed(&mut ws);

    still_serves(server.addr);
}

#[test]
fn a_frame_out_of_order_gets_1002_even_when_it_also_announces_too_many_bytes() {
    let server = start(Config::default().max_message(1000), Echo);
    // A new binary message while a text message is open (§5.4): a protocol error, whatever its length.
    let mut ws = handshaken(server.addr);
    let mut input = masked(false, OpCode::Text, b"open");
    input.extend_from_slice(&masked(true, OpCode::Binary, &[1; 1001])[..8]);
    ws.write_all(&input).unwrap();
    assert_eq!(read_close(&mut ws), Some(1002));
    assert_closed(&mut ws);

    // A continuation with no message to continue.
    let mut ws = handshaken(server.addr);
    ws.write_all(&masked(true, OpCode::Continuation, &[2; 1001])[..8])
        .unwrap();
    assert_eq!(read_close(&mut ws), Some(1002));
    assert_closed(&mut ws);

    still_serves(server.addr);
}

#[test]
fn head_over_max_head_gets_431() {
    let server = start(Config::default(), Echo);
    let max_head = Config::default().max_head;
    assert_eq!(max_head, 8192);

    // Exactly at the limit is fine.
    let mut at_limit = connect_raw(server.addr);
    at_limit
        .write_all(request_of_len(server.addr, max_head).as_bytes())
        .unwrap();
    let (status, head, _) = read_response(&mut at_limit);
    assert_eq!(status, 101, "a head of exactly {max_head} bytes: {head}");

    // One byte more, complete.
    let mut over = connect_raw(server.addr);
    over.write_all(request_of_len(server.addr, max_head + 1).as_bytes())
        .unwrap();
    let (status, head, body) = read_response(&mut over);
    assert_eq!(status, 431, "{head}");
    assert_one_line_body(&body);
    assert_closed(&mut over);

    still_serves(server.addr);
}

#[test]
fn handshake_timeout_drops_silent_and_dribbling_connections() {
    let server = start(
        Config::default()
            .handshake_timeout(SHORT)
            .idle_timeout(None),
        Echo,
    );
    // A connection that completed its handshake is not subject to the handshake timeout.
    let mut settled = handshaken(server.addr);

    // Each clock starts before the connection is made: the server's own clock for it cannot start earlier.
    let began = Instant::now();
    let mut silent = connect_raw(server.addr);
    wait_for_drop(&mut silent, SHORT + LATE);
    let waited = began.elapsed();
    assert!(waited >= SHORT, "dropped too early, after {waited:?}");

    // A slowloris: a byte of a never-ending head every 20 ms, kept up for longer than the test waits. The timeout
    // counts from the connection, so the trickle does not extend it: were it counted from the last byte, the
    // connection would outlive the wait.
    let began = Instant::now();
    let mut dribbler = connect_raw(server.addr);
    dribbler
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    dribbler.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
    let mut dropped = false;
    for _ in 0..500 {
        if dribbler.write_all(b"a").is_err() {
            dropped = true;
            break;
        }
        match dribbler.read(&mut [0u8; 64]) {
            Ok(0) => {
                dropped = true;
                break;
            }
            Ok(n) => panic!("the server answered {n} bytes to an unfinished head"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                dropped = true;
                break;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("unexpected read error: {e}"),
        }
        if began.elapsed() > SHORT + LATE {
            break;
        }
    }
    let waited = began.elapsed();
    assert!(
        dropped,
        "the trickle kept the connection alive for {waited:?}"
    );
    assert!(waited >= SHORT, "dropped too early, after {waited:?}");

    settled
        .write_all(&masked(
            true,
            OpCode::Text,
            b"long after the handshake timeout",
        ))
        .unwrap();
    assert_eq!(
        read_frame(&mut settled).unwrap(),
        (
            true,
            OpCode::Text,
            b"long after the handshake timeout".to_vec()
        )
    );

    still_serves(server.addr);
}

/// The idle timeout of the heartbeat test. It is also the time a peer has to answer a ping, so it is not [`SHORT`]:
/// a peer that answers at once must never be dropped because its thread was held up.
const IDLE: Duration = Duration::from_secs(1);

/// Reads server frames until `count` pings have come, answering each with a pong at once. Fails if anything else
/// comes, or nothing within `TIMEOUT`, or the server drops the peer.
fn answer_pings(ws: &mut TcpStream, count: usize) {
    for n in 1..=count {
        match read_frame(ws) {
            Ok((_, OpCode::Ping, payload)) => {
                ws.write_all(&masked(true, OpCode::Pong, &payload)).unwrap()
            }
            Ok(other) => panic!("expected only pings, got {other:?}"),
            Err(e) => panic!("no ping {n} for a peer that answers its pings: {e}"),
        }
    }
}

#[test]
fn idle_timeout_pings_quiet_peers_and_drops_those_that_never_answer() {
    let server = start(Config::default().idle_timeout(Some(IDLE)), Echo);
    let mut answers = handshaken(server.addr);
    // The server's idle clock for this peer starts when it reads the handshake, after this instant.
    let connecting = Instant::now();
    let mut mute = handshaken(server.addr);

    thread::scope(|s| {
        s.spawn(|| {
            let (_, opcode, _) = read_frame(&mut mute).expect("a ping");
            assert_eq!(opcode, OpCode::Ping);
            let pinged = connecting.elapsed();
            assert!(pinged >= IDLE, "pinged after only {pinged:?}");
            // Never answer: the server must give up on this peer, but not before as long again after its ping,
            // which it sent no sooner than IDLE after `connecting`.
            wait_for_drop(&mut mute, TIMEOUT);
            let dropped = connecting.elapsed();
            assert!(
                dropped >= 2 * IDLE,
                "dropped after {dropped:?}: less than {IDLE:?} after the ping"
            );
        });
        // A second ping comes only if the answer to the first counted: otherwise the server drops this peer
        // when the second would be due.
        answer_pings(&mut answers, 2);
    });

    // The peer that answered is still connected and served.
    answers
        .write_all(&masked(true, OpCode::Text, b"still here"))
        .unwrap();
    let mut echoed = false;
    for _ in 0..10 {
        let (_, opcode, payload) = read_frame(&mut answers).unwrap();
        match opcode {
            OpCode::Ping => answers
                .write_all(&masked(true, OpCode::Pong, &payload))
                .unwrap(),
            OpCode::Text => {
                assert_eq!(payload, b"still here");
                echoed = true;
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(echoed, "only pings came back, no echo");
    still_serves(server.addr);
}

/// Echoes, except that "close me" makes the server start a closing handshake with 1000. Records close callbacks.
#[derive(Default, Clone)]
struct Closer {
    closed: Arc<Mutex<Vec<(u64, u16)>>>,
}

impl Handler for Closer {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        match msg {
            Message::Text("close me") => ws.close(id, CloseCode::NORMAL, "as you asked"),
            msg => ws.send(id, msg),
        }
    }

    fn close(&mut self, _: &mut Handle<'_>, id: ConnId, closed: Closed<'_>) {
        let code = closed.status();
        self.closed.lock().unwrap().push((id.get(), code));
    }
}

#[test]
fn close_timeout_drops_a_peer_that_never_answers_the_close() {
    let closer = Closer::default();
    let server = start(Config::default().close_timeout(SHORT), closer.clone());
    // A drop later than SHORT + LATE is one after the default close timeout: the setting was not used.
    assert!(SHORT + LATE < Config::default().close_timeout);
    let mut ws = handshaken(server.addr);
    // The server starts its clock when it reads "close me", after this instant.
    let asked = Instant::now();
    ws.write_all(&masked(true, OpCode::Text, b"close me"))
        .unwrap();
    assert_eq!(read_close(&mut ws), Some(1000));
    // No close frame back: the server waits close_timeout, then drops the socket.
    wait_for_drop(&mut ws, SHORT + LATE);
    let waited = asked.elapsed();
    assert!(waited >= SHORT, "dropped after only {waited:?}");
    assert_eq!(
        closer.closed.lock().unwrap().len(),
        1,
        "the close callback runs once"
    );

    // A peer that keeps sending data instead of a close gets no more time: its frames are dropped unanswered
    // (RFC 6455 §7.1.2) and the same timeout ends it.
    let mut chatter = handshaken(server.addr);
    chatter
        .write_all(&masked(true, OpCode::Text, b"close me"))
        .unwrap();
    assert_eq!(read_close(&mut chatter), Some(1000));
    let sent = Instant::now();
    chatter
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut dropped = false;
    while sent.elapsed() < SHORT + LATE {
        if chatter
            .write_all(&masked(true, OpCode::Text, b"la la la"))
            .is_err()
        {
            dropped = true;
            break;
        }
        match chatter.read(&mut [0u8; 64]) {
            Ok(0) => dropped = true,
            Ok(n) => panic!("{n} bytes sent after the close frame"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => dropped = true,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("unexpected read error: {e}"),
        }
        if dropped {
            break;
        }
    }
    let waited = sent.elapsed();
    assert!(
        dropped && waited < SHORT + LATE,
        "the chatter kept it alive for {waited:?}"
    );
    still_serves(server.addr);
}

#[test]
fn stop_waits_no_longer_than_close_timeout_for_a_peer_that_never_answers() {
    let server = start(Config::default().close_timeout(SHORT), Echo);
    let mut mute = handshaken(server.addr);
    let began = Instant::now();
    server.stop(); // sends 1001 and returns once `run` has returned
    let waited = began.elapsed();
    assert!(waited < SHORT + LATE, "stopping took {waited:?}");
    assert_eq!(read_close(&mut mute), Some(1001));
    wait_for_drop(&mut mute, TIMEOUT);
}

#[test]
fn allowed_origins_refuse_others_with_403() {
    let origins = Some(vec![
        "http://good.example".to_string(),
        "https://also.example:8443".to_string(),
    ]);
    let server = start(Config::default().allowed_origins(origins), Echo);
    for origin in [
        "Origin: http://good.example",
        "Origin: HTTP://GOOD.EXAMPLE",
        "Origin: https://also.example:8443",
    ] {
        let (_, (status, head, _)) = handshake_with(server.addr, "/", &format!("{origin}\r\n"));
        assert_eq!(status, 101, "{origin}: {head}");
    }
    for extra in [
        "Origin: http://evil.example\r\n",
        "Origin: http://good.example.evil.example\r\n",
        "Origin: http://good.example:8080\r\n",
        "Origin: null\r\n",
        "",
    ] {
        let (mut stream, (status, head, body)) = handshake_with(server.addr, "/", extra);
        assert_eq!(status, 403, "{extra:?}: {head}");
        assert_one_line_body(&body);
        assert_closed(&mut stream);
    }
    let stream = connect_raw(server.addr);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/",
        server.addr
    ))
    .unwrap();
    req.headers_mut()
        .insert("Origin", "http://good.example".parse().unwrap());
    let (mut ws, _) = tungstenite::client(req, stream).expect("a listed origin is accepted");
    ws.send(tungstenite::Message::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hi"));
}

/// Accepts `chat.v2` if offered, refuses `/private` with 403 and `/gone` with 410, accepts the rest plainly; on
/// `/careless` it picks a protocol nobody offered, with a header smuggled into it.
struct Picky;

impl Handler for Picky {
    fn accept(&mut self, req: &Request<'_>) -> Result<Accept, HttpResponse> {
        match req.path() {
            "/private" => Err(HttpResponse::error(403)),
            "/gone" => Err(HttpResponse::error(410)),
            "/careless" => Ok(Accept::new().protocol("chat.v9\r\nX-Injected: yes")),
            _ => Ok(match req.protocols().find(|p| *p == "chat.v2") {
                Some(protocol) => Accept::new().protocol(protocol),
                None => Accept::new(),
            }),
        }
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        ws.send(id, msg);
    }
}

#[test]
fn accept_selects_a_subprotocol_or_refuses_with_a_status() {
    let server = start(Config::default(), Picky);
    let (_, (status, head, _)) = handshake_with(
        server.addr,
        "/",
        "Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n",
    );
    assert_eq!(status, 101, "{head}");
    assert_eq!(
        header(&head, "Sec-WebSocket-Protocol"),
        Some("chat.v2"),
        "{head}"
    );

    let (_, (status, head, _)) =
        handshake_with(server.addr, "/", "Sec-WebSocket-Protocol: chat.v1\r\n");
    assert_eq!(status, 101, "{head}");
    assert_eq!(
        header(&head, "Sec-WebSocket-Protocol"),
        None,
        "no protocol chosen, none named: {head}"
    );

    for (path, expected) in [("/private", 403), ("/gone", 410), ("/careless", 500)] {
        let (mut stream, (status, head, body)) = handshake_with(server.addr, path, "");
        assert_eq!(status, expected, "{path}: {head}");
        assert_one_line_body(&body);
        assert_closed(&mut stream);
    }

    // A real client that asks for the protocol gets it and can talk.
    let stream = connect_raw(server.addr);
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/",
        server.addr
    ))
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "chat.v2".parse().unwrap());
    let (mut ws, response) =
        tungstenite::client(req, stream).expect("handshake with a subprotocol");
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "chat.v2");
    ws.send(tungstenite::Message::text("v2")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("v2"));
    still_serves(server.addr);
}

/// What the ticker saw: connections in the order they joined, close callbacks, and `buffered` per connection.
#[derive(Default)]
struct Seen {
    joined: Vec<ConnId>,
    closed: Vec<(ConnId, u16)>,
    peak_buffered: HashMap<ConnId, usize>,
}

/// On "tick N", broadcasts one message of `size` bytes that starts with "N|", after noting how much every other
/// connection has waiting; on "buffered", tells the sender the largest amount seen for the first connection.
/// Anything else is echoed.
#[derive(Clone)]
struct Ticker {
    size: usize,
    seen: Arc<Mutex<Seen>>,
}

impl Ticker {
    fn new(size: usize) -> Ticker {
        Ticker {
            size,
            seen: Arc::default(),
        }
    }
}

impl Handler for Ticker {
    fn add(&mut self, _: &mut Handle<'_>, id: ConnId, _: &Context<'_>) {
        self.seen.lock().unwrap().joined.push(id);
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let mut seen = self.seen.lock().unwrap();
        match msg {
            Message::Text(text) if text.starts_with("tick ") => {
                for other in seen.joined.clone() {
                    let now = ws.buffered(other).unwrap_or(0);
                    let peak = seen.peak_buffered.entry(other).or_default();
                    *peak = (*peak).max(now);
                }
                let mut out = format!("{}|", &text[5..]);
                out.extend(std::iter::repeat_n('x', self.size - out.len()));
                ws.broadcast(Message::Text(&out));
            }
            Message::Text("buffered") => {
                let first = seen.joined[0];
                let peak = seen.peak_buffered.get(&first).copied().unwrap_or(0);
                ws.send(id, Message::Text(&peak.to_string()));
            }
            msg => ws.send(id, msg),
        }
    }

    fn close(&mut self, _: &mut Handle<'_>, id: ConnId, closed: Closed<'_>) {
        let code = closed.status();
        self.seen.lock().unwrap().closed.push((id, code));
    }
}

/// Sends "tick N" and reads back the broadcast "N|xxx...", in lock step, so the fast client's own queue is empty
/// at every turn. Stops when `done` says so or after `max` ticks; returns the ticks sent.
fn tick_until(
    fast: &mut TcpStream,
    size: usize,
    max: usize,
    mut done: impl FnMut() -> bool,
) -> usize {
    for n in 0..max {
        if done() {
            return n;
        }
        fast.write_all(&masked(true, OpCode::Text, format!("tick {n}").as_bytes()))
            .unwrap();
        let (_, opcode, payload) = read_frame(fast).expect("the fast client's broadcast");
        assert_eq!(opcode, OpCode::Text);
        assert_eq!(payload.len(), size);
        let prefix = format!("{n}|");
        assert!(
            payload.starts_with(prefix.as_bytes()),
            "message {n} missing or out of order"
        );
    }
    max
}

#[test]
fn slow_reader_is_dropped_while_a_fast_one_gets_every_message_in_order() {
    const SIZE: usize = 16 << 10;
    const MAX_TICKS: usize = 4000; // 64 MiB: far more than the kernel's socket buffers can hide
    let ticker = Ticker::new(SIZE);
    // No heartbeats: a ping, however late the test runs, is not among the frames it expects.
    let config = Config::default().max_buffered(64 << 10).idle_timeout(None);
    let server = start(config, ticker.clone());
    let mut slow = handshaken(server.addr); // joins first, never reads
    let mut fast = handshaken(server.addr);

    let slow_gone = || {
        let seen = ticker.seen.lock().unwrap();
        seen.closed.iter().any(|(id, _)| *id == seen.joined[0])
    };
    let ticks = tick_until(&mut fast, SIZE, MAX_TICKS, slow_gone);
    assert!(
        ticks < MAX_TICKS,
        "the slow reader was never dropped after {ticks} broadcasts"
    );
    // The fast client goes on receiving after the slow one is gone.
    let more = tick_until(&mut fast, SIZE, ticks + 20, || false);
    assert_eq!(more, ticks + 20);
    {
        let seen = ticker.seen.lock().unwrap();
        assert_eq!(
            seen.closed.len(),
            1,
            "only the slow reader is dropped: {:?}",
            seen.closed
        );
        assert_eq!(seen.closed[0].1, 1008);
    }

    // What the slow reader does get is whole frames, in order, then close 1008 (or just the end of TCP).
    let mut expected = 0;
    for _ in 0..=ticks {
        match read_frame(&mut slow) {
            Ok((_, OpCode::Text, payload)) => {
                assert!(
                    payload.starts_with(format!("{expected}|").as_bytes()),
                    "slow reader: message {expected}"
                );
                assert_eq!(payload.len(), SIZE);
                expected += 1;
            }
            Ok((_, OpCode::Close, payload)) => {
                assert_eq!(payload.get(..2), Some(&1008u16.to_be_bytes()[..]));
                break;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                break
            }
            Err(e) => panic!("slow reader: {e}"),
        }
    }
    assert!(
        expected < ticks,
        "the slow reader got all {ticks} messages, so it was not too slow"
    );
    still_serves(server.addr);
}

#[test]
fn one_message_larger_than_max_buffered_still_goes_to_a_reader_with_an_empty_queue() {
    let server = start(Config::default().max_buffered(64 << 10), Echo);
    let mut ws = client(server.addr);
    let big: Vec<u8> = (0..200 << 10).map(|i: u32| (i % 251) as u8).collect();
    ws.send(tungstenite::Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::binary(big));
}

#[test]
fn buffered_reports_what_a_stalled_reader_has_waiting() {
    const SIZE: usize = 16 << 10;
    let ticker = Ticker::new(SIZE);
    // No heartbeats: a ping, however late the test runs, is not among the frames it expects.
    let config = Config::default().idle_timeout(None);
    let server = start(config, ticker.clone());
    let mut stalled = handshaken(server.addr); // joins first, never reads
    let mut fast = handshaken(server.addr);

    // Once the kernel's buffers are full, what the stalled reader is sent waits in the server's queue.
    let peak = || {
        let seen = ticker.seen.lock().unwrap();
        seen.peak_buffered
            .get(&seen.joined[0])
            .copied()
            .unwrap_or(0)
    };
    let ticks = tick_until(&mut fast, SIZE, 2000, || peak() > SIZE);
    assert!(
        ticks < 2000,
        "buffered() stayed at {} after {ticks} broadcasts of {SIZE} bytes",
        peak()
    );

    // The same figure through the handle, asked by a client.
    fast.write_all(&masked(true, OpCode::Text, b"buffered"))
        .unwrap();
    let (_, _, payload) = read_frame(&mut fast).unwrap();
    let reported: usize = String::from_utf8(payload).unwrap().parse().unwrap();
    assert!(reported > SIZE, "reported {reported}");
    assert!(
        reported <= Config::default().max_buffered,
        "reported {reported}"
    );

    // Under the default limit, the stalled reader is still connected and gets everything once it reads.
    assert!(ticker.seen.lock().unwrap().closed.is_empty());
    for n in 0..ticks {
        let (_, opcode, payload) = read_frame(&mut stalled).unwrap();
        assert_eq!(opcode, OpCode::Text);
        assert!(
            payload.starts_with(format!("{n}|").as_bytes()),
            "stalled reader: message {n}"
        );
    }
    still_serves(server.addr);
}

#[test]
fn max_pending_closes_connections_past_the_limit_of_unfinished_handshakes() {
    let config = Config::default().max_pending(2);
    let server = common::start(config, common::Echo);
    // Two connections that say nothing hold both places.
    let mut quiet: Vec<TcpStream> = (0..2).map(|_| common::connect_raw(server.addr)).collect();
    common::eventually("the third connection to be closed at once", || {
        let mut third = common::connect_raw(server.addr);
        let _ = third.write_all(common::request(server.addr).as_bytes());
        // Closed means EOF or a reset. A read that times out is not a close: the server left it hanging.
        match third.read(&mut [0u8; 1]) {
            Ok(0) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    });
    // Once the quiet ones complete their handshakes, the places are free again.
    for stream in &mut quiet {
        stream
            .write_all(common::request(server.addr).as_bytes())
            .unwrap();
        assert_eq!(common::read_response(stream).0, 101);
    }
    common::still_serves(server.addr);
}

/// Sends `bytes` one at a time, `gap` apart, until they run out, `stop` is set, `TIMEOUT` has passed, or the
/// server stops taking them.
fn trickle(
    mut stream: TcpStream,
    bytes: Vec<u8>,
    gap: Duration,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let began = Instant::now();
        for byte in bytes {
            thread::sleep(gap);
            if stop.load(Ordering::Relaxed) || began.elapsed() > TIMEOUT {
                return;
            }
            if stream.write_all(&[byte]).is_err() {
                return;
            }
        }
    })
}

#[test]
fn message_timeout_closes_a_peer_that_trickles_a_frame_or_its_fragments_with_1008() {
    let config = Config::default().message_timeout(Some(SHORT));
    let server = start(config, Echo);
    let gap = Duration::from_millis(40);
    let stop = Arc::new(AtomicBool::new(false));
    // Both messages begin after this instant, and so does the server's clock for each.
    let started = Instant::now();

    // One large frame: the header and a few bytes, then a byte every 40 ms (never idle, never done: at that pace
    // the frame would take 40 s).
    let mut frame_peer = handshaken(server.addr);
    let frame = masked(true, OpCode::Binary, &[7u8; 1000]);
    frame_peer.write_all(&frame[..20]).unwrap();
    let frame_writer = trickle(
        frame_peer.try_clone().unwrap(),
        frame[20..].to_vec(),
        gap,
        stop.clone(),
    );

    // A fragmented message whose one-byte fragments keep coming and never end.
    let mut fragment_peer = handshaken(server.addr);
    fragment_peer
        .write_all(&masked(false, OpCode::Text, b"start"))
        .unwrap();
    let fragments: Vec<u8> = (0..2000)
        .flat_map(|_| masked(false, OpCode::Continuation, b"x"))
        .collect();
    let fragment_writer = trickle(
        fragment_peer.try_clone().unwrap(),
        fragments,
        gap / 8,
        stop.clone(),
    );

    // Both trickles go on for longer than the wait, so a timeout that each byte or fragment pushed back would
    // never come.
    for peer in [&mut frame_peer, &mut fragment_peer] {
        peer.set_read_timeout(Some(SHORT + LATE)).unwrap();
        assert_eq!(read_close(peer), Some(1008));
        let took = started.elapsed();
        assert!(
            took >= SHORT,
            "closed after {took:?}, before the message timeout of {SHORT:?}"
        );
        assert!(took < SHORT + LATE, "closed only after {took:?}");
    }
    stop.store(true, Ordering::Relaxed);
    frame_writer.join().unwrap();
    fragment_writer.join().unwrap();
    drop((frame_peer, fragment_peer));
    still_serves(server.addr);
    server.stop();
}

/// The message timeout of the test that keeps within it: it must not fire however the test is held up, and the
/// test outlasts it.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);

#[test]
fn message_timeout_counts_from_each_message_not_from_the_first() {
    let config = Config::default().message_timeout(Some(MESSAGE_TIMEOUT));
    let server = start(config, Echo);
    let mut ws = handshaken(server.addr);
    // Each write finishes one message and starts the next, so a message is always partly here, for longer than the
    // timeout in all (the sleeps alone add up to 2.5 s); each single message takes one gap of 50 ms, far inside it.
    let gap = Duration::from_millis(50);
    let count = 50;
    let frames: Vec<Vec<u8>> = (0..count)
        .map(|i| masked(true, OpCode::Text, format!("message {i}").as_bytes()))
        .collect();
    ws.write_all(&frames[0][..4]).unwrap();
    let started = Instant::now();
    for (i, frame) in frames.iter().enumerate() {
        thread::sleep(gap);
        let mut write = frame[4..].to_vec();
        if let Some(next) = frames.get(i + 1) {
            write.extend_from_slice(&next[..4]);
        }
        ws.write_all(&write).unwrap();
    }
    assert!(started.elapsed() > MESSAGE_TIMEOUT);
    ws.set_read_timeout(Some(TIMEOUT)).unwrap();
    for i in 0..count {
        let (fin, opcode, payload) = read_frame(&mut ws).unwrap();
        assert_eq!(
            (fin, opcode, payload),
            (true, OpCode::Text, format!("message {i}").into_bytes())
        );
    }
    drop(ws);
    server.stop();
}
