//! `GET /metrics`, the stats page's socket, and the protocol inspector, over real sockets (cargo feature `metrics`,
//! which the crate's own tests turn on). The exposition format itself is also read by Prometheus' own parser, in
//! `scripts/metrics-check.sh`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::{self, OpCode};
use wsloop::handshake::{HttpResponse, Request};
use wsloop::inspect::Seen;
use wsloop::{Accept, Config, ConnId, Context, Handle, Handler, Message};

/// `GET path` on a fresh connection: (status, head, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = connect_raw(addr);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    read_response(&mut stream)
}

/// The samples of `/metrics`, by name and labels as written (`name{loop="0",code="1000"}`).
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, head, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut samples = HashMap::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .expect("a sample is a name and a value");
        assert!(name.starts_with("wsloop_"), "{line}");
        samples.insert(name.to_string(), value.parse().expect("a number"));
    }
    samples
}

/// An echo server that counts `add` calls and broadcasts what starts with `all:`.
struct Counting(mpsc::Sender<ConnId>);

impl Handler for Counting {
    fn add(&mut self, _ws: &mut Handle<'_>, id: ConnId, _conn: &Context<'_>) {
        self.0.send(id).unwrap();
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        match msg {
            Message::Text(text) if text.starts_with("all:") => {
                ws.broadcast(text);
            }
            Message::Text("users") => ws.send(id, ws.count().to_string()),
            msg => ws.send(id, msg),
        }
    }

    fn http(&mut self, _req: &Request<'_>) -> Option<HttpResponse> {
        Some(HttpResponse::new(200, "text/plain", "the handler's page\n"))
    }
}

fn metrics_server() -> (TestServer, mpsc::Receiver<ConnId>) {
    let (added, adds) = mpsc::channel();
    (
        start(Config::default().metrics(true), Counting(added)),
        adds,
    )
}

#[test]
fn the_counters_move_as_connections_and_messages_do() {
    let (server, _adds) = metrics_server();
    let before = scrape(server.addr);
    let handshakes = |m: &HashMap<String, f64>| m[r#"wsloop_handshakes_total{loop="0"}"#];
    assert_eq!(handshakes(&before), 0.0);
    let mut a = client(server.addr);
    let mut b = client(server.addr);
    for i in 0..5 {
        assert_eq!(ask(&mut a, &format!("m{i}")), format!("m{i}"));
    }
    say(&mut b, "all:hi");
    assert_eq!(text(&mut a), "all:hi");
    assert_eq!(text(&mut b), "all:hi");
    let during = scrape(server.addr);
    assert_eq!(handshakes(&during), 2.0);
    assert_eq!(during[r#"wsloop_users{loop="0"}"#], 2.0);
    assert_eq!(during[r#"wsloop_messages_received_total{loop="0"}"#], 6.0);
    // 5 echoes, and the broadcast once per receiver.
    assert_eq!(during[r#"wsloop_messages_sent_total{loop="0"}"#], 7.0);
    assert!(
        during[r#"wsloop_received_bytes_total{loop="0"}"#]
            > before[r#"wsloop_received_bytes_total{loop="0"}"#]
    );
    assert!(during[r#"wsloop_sent_bytes_total{loop="0"}"#] >= (5 * 4 + 2 * 8) as f64);
    a.close(Some(tungstenite::protocol::CloseFrame {
        code: 4321.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    while a.read().is_ok() {}
    // A refusal: a request without its key.
    let mut raw = connect_raw(server.addr);
    write!(raw, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut raw).0, 400);
    eventually("the close and the refusal counted", || {
        let after = scrape(server.addr);
        after.get(r#"wsloop_closes_received_total{loop="0",code="4xxx"}"#) == Some(&1.0)
            && after.get(r#"wsloop_closes_sent_total{loop="0",code="4xxx"}"#) == Some(&1.0)
            && after.get(r#"wsloop_handshakes_refused_total{loop="0",status="400"}"#) == Some(&1.0)
            && after[r#"wsloop_users{loop="0"}"#] == 1.0
    });
    let after = scrape(server.addr);
    let turns = after[r#"wsloop_loop_turn_seconds_count{loop="0"}"#];
    assert!(turns > 10.0, "{turns} turns");
    assert_eq!(
        after[r#"wsloop_loop_turn_seconds_bucket{loop="0",le="+Inf"}"#],
        turns
    );
}

#[test]
fn without_the_setting_the_handler_serves_every_page() {
    let (added, _adds) = mpsc::channel();
    let server = start(Config::default(), Counting(added));
    for path in ["/metrics", "/stats"] {
        let (status, _, body) = get(server.addr, path);
        assert_eq!((status, body.as_str()), (200, "the handler's page\n"));
    }
    let (status, _, body) = get(metrics_server().0.addr, "/stats");
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") || body.contains("<!doctype html"),
        "the stats page"
    );
}

#[test]
fn every_loop_has_its_label() {
    let (added, _adds) = mpsc::channel();
    let server = start_loops(Config::default().metrics(true), 2, move |_| {
        Counting(added.clone())
    });
    let samples = scrape(server.addr);
    for i in 0..2 {
        assert!(samples.contains_key(&format!(
            r#"wsloop_connections_accepted_total{{loop="{i}"}}"#
        )));
    }
}

/// A stats socket at `addr`.
fn viewer(addr: SocketAddr) -> Client {
    let stream = connect_raw(addr);
    let (ws, response) =
        tungstenite::client(format!("ws://{addr}/stats"), stream).expect("stats handshake");
    assert_eq!(response.status(), 101);
    ws
}

#[test]
fn the_stats_socket_gets_the_figures_every_second_and_nothing_else() {
    let (server, adds) = metrics_server();
    let mut watcher = viewer(server.addr);
    let first: serde_json::Value = serde_json::from_str(&text(&mut watcher)).unwrap();
    assert_eq!(first["type"], "stats");
    assert_eq!(first["users"], 0, "a stats socket is not a user");
    let mut a = client(server.addr);
    adds.recv_timeout(TIMEOUT).expect("add for the user");
    assert_eq!(ask(&mut a, "users"), "1");
    say(&mut a, "all:to everyone");
    assert_eq!(text(&mut a), "all:to everyone");
    // What the watcher gets next is the figures again, a second later: not the broadcast.
    let started = Instant::now();
    let next: serde_json::Value = serde_json::from_str(&text(&mut watcher)).unwrap();
    assert_eq!(next["type"], "stats");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(next["users"], 1);
    assert!(next["messages_in"].as_u64().unwrap() >= 2);
    assert!(next["time"].as_u64().unwrap() >= first["time"].as_u64().unwrap() + 500);
    // The handler never heard of the watcher, and what the watcher says goes nowhere.
    assert!(adds.try_recv().is_err());
    say(&mut watcher, "all:from the watcher");
    assert_eq!(
        ask(&mut a, "ping"),
        "ping",
        "the watcher's message was not broadcast"
    );
    drop(watcher);
    still_serves(server.addr);
}

/// Echoes, inspects connections to `/inspect`, and sends each record to the connection it is about, as
/// `seen:KIND:HEX` (the handshake as `seen:handshake:KEY:ACCEPT`).
struct Inspecting;

impl Handler for Inspecting {
    fn accept(&mut self, req: &Request<'_>) -> Result<Accept, HttpResponse> {
        Ok(if req.path() == "/inspect" {
            Accept::new().inspect()
        } else {
            Accept::new()
        })
    }

    fn send(&mut self, ws: &mut Handle<'_>, _id: ConnId, msg: Message<'_>) {
        ws.broadcast(msg);
    }

    fn inspect(&mut self, ws: &mut Handle<'_>, id: ConnId, seen: &Seen) {
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let line = match seen {
            Seen::Handshake(hs) => {
                assert!(hs.request.starts_with(b"GET /inspect HTTP/1.1\r\n"));
                assert!(hs.response.starts_with(b"HTTP/1.1 101"));
                format!("seen:handshake:{}:{}", hs.key, hs.accept)
            }
            Seen::Received(w) => format!("seen:received:{}:{}", hex(&w.bytes), w.frame_len),
            Seen::Sent(w) => format!("seen:sent:{}:{}", hex(&w.bytes), w.frame_len),
            _ => "seen:other".into(),
        };
        ws.send(id, line);
    }
}

/// Reads text frames from a raw connection until one satisfies `want`; returns all read so far.
fn until(stream: &mut std::net::TcpStream, want: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let (_, opcode, payload) = read_frame(stream).expect("a frame");
        assert_eq!(opcode, OpCode::Text);
        let text = String::from_utf8(payload).unwrap();
        let done = want(&text);
        seen.push(text);
        if done {
            return seen;
        }
    }
}

#[test]
fn an_inspected_connection_sees_its_own_frames_as_they_crossed_the_wire() {
    let server = start(Config::default(), Inspecting);
    let addr = server.addr;
    let mut other = client(addr);
    let mut raw = connect_raw(addr);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        raw,
        "GET /inspect HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    .unwrap();
    let (status, head, _) = read_response(&mut raw);
    assert_eq!(status, 101);
    assert!(
        !head.contains("permessage-deflate"),
        "no compression while inspected: {head}"
    );
    let first = until(&mut raw, |t| t.starts_with("seen:handshake"));
    assert_eq!(
        first,
        [format!("seen:handshake:{key}:s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]
    );

    // A frame with a known key: the record is its bytes as sent, still masked.
    let mut hello = Vec::new();
    frame::encode_masked(
        &mut hello,
        true,
        OpCode::Text,
        b"hello inspector",
        [0xa1, 0xb2, 0xc3, 0xd4],
    );
    raw.write_all(&hello).unwrap();
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let got = until(&mut raw, |t| t.starts_with("seen:sent"));
    // The broadcast back to us comes first, then what was received, then what was sent.
    assert_eq!(got[0], "hello inspector");
    assert_eq!(
        got[1],
        format!("seen:received:{}:{}", hex(&hello), hello.len())
    );
    let mut echo = Vec::new();
    frame::encode(&mut echo, true, OpCode::Text, b"hello inspector");
    assert_eq!(got[2], format!("seen:sent:{}:{}", hex(&echo), echo.len()));
    assert_eq!(got.len(), 3, "the records' own frames are not recorded");

    // The other user got the broadcast, and none of the records.
    assert_eq!(text(&mut other), "hello inspector");
    say(&mut other, "from the other");
    let got = until(&mut raw, |t| t.starts_with("seen:sent"));
    assert_eq!(got[0], "from the other");
    assert!(
        !got.iter().any(|t| t.starts_with("seen:received")),
        "{got:?}"
    );
    assert_eq!(
        text(&mut other),
        "from the other",
        "no record reaches another connection"
    );
    nothing_pending_raw(&mut other);
    let got = until(&mut raw, |t| t.starts_with("seen:sent"));
    assert_eq!(got[0], "marker");

    // A long message: its header and its first 64 bytes.
    let long = vec![b'x'; 5000];
    let mut frame_bytes = Vec::new();
    frame::encode_masked(&mut frame_bytes, true, OpCode::Text, &long, [1, 2, 3, 4]);
    raw.write_all(&frame_bytes).unwrap();
    let got = until(&mut raw, |t| t.starts_with("seen:sent"));
    assert_eq!(
        got[1],
        format!(
            "seen:received:{}:{}",
            hex(&frame_bytes[..8 + 64]),
            frame_bytes.len()
        )
    );

    // A frame in two pieces, the first with its header and 5 bytes of payload: the record has its first 64 bytes
    // all the same, as they came, still masked.
    let mut split = Vec::new();
    frame::encode_masked(&mut split, true, OpCode::Text, &[b'z'; 124], [5, 6, 7, 8]);
    raw.write_all(&split[..11]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    raw.write_all(&split[11..]).unwrap();
    let got = until(&mut raw, |t| t.starts_with("seen:sent"));
    let want = format!("seen:received:{}:{}", hex(&split[..6 + 64]), split.len());
    assert_eq!(got[1], want);
}

/// The other client has nothing more waiting (a broadcast marker comes back as the very next message).
fn nothing_pending_raw(ws: &mut Client) {
    say(ws, "marker");
    assert_eq!(text(ws), "marker");
}

/// Opens a raw `/inspect` connection and reads up to its handshake record.
fn inspected(addr: SocketAddr) -> std::net::TcpStream {
    let mut raw = connect_raw(addr);
    write!(
        raw,
        "GET /inspect HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_response(&mut raw).0, 101);
    until(&mut raw, |t| t.starts_with("seen:handshake"));
    raw
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_short_frame_arriving_with_the_next_one_is_recorded_without_the_next_ones_bytes() {
    let server = start(Config::default(), Inspecting);
    let mut raw = inspected(server.addr);
    // Two short frames in one write: they arrive in one read.
    let first = masked(true, OpCode::Text, b"one");
    let second = masked(true, OpCode::Text, b"two");
    raw.write_all(&[first.clone(), second.clone()].concat())
        .unwrap();
    let got = until(&mut raw, |t| t.starts_with("seen:received"));
    assert_eq!(
        got.last().unwrap(),
        &format!("seen:received:{}:{}", hex(&first), first.len()),
        "the record of the first frame holds its own bytes only"
    );
}

#[test]
fn a_frame_whose_header_arrives_alone_is_recorded_with_its_payload() {
    let server = start(Config::default(), Inspecting);
    let mut raw = inspected(server.addr);
    let hello = masked(true, OpCode::Text, b"hello");
    // The header (2 bytes and the 4 of the mask) in one read, the payload in a later one.
    raw.write_all(&hello[..6]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    raw.write_all(&hello[6..]).unwrap();
    let got = until(&mut raw, |t| t.starts_with("seen:received"));
    assert_eq!(
        got.last().unwrap(),
        &format!("seen:received:{}:{}", hex(&hello), hello.len()),
        "the payload, still masked, is part of the record"
    );
    // A longer frame arriving in three pieces: its header and 64 bytes, as they were on the wire.
    let long = masked(true, OpCode::Text, &[b'y'; 300]);
    for piece in [&long[..8], &long[8..40], &long[40..]] {
        raw.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let got = until(&mut raw, |t| t.starts_with("seen:received"));
    assert_eq!(
        got.last().unwrap(),
        &format!("seen:received:{}:{}", hex(&long[..8 + 64]), long.len())
    );
}

#[test]
fn stats_sockets_do_not_take_the_places_of_handshakes_waiting() {
    let (added, adds) = mpsc::channel();
    let server = start(
        Config::default().metrics(true).max_pending(2),
        Counting(added),
    );
    let mut watchers: Vec<Client> = (0..2).map(|_| viewer(server.addr)).collect();
    for w in &mut watchers {
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text(w)).unwrap()["type"],
            "stats"
        );
    }
    // Nobody is waiting for a handshake: a user gets in.
    let stream = connect_raw(server.addr);
    let joined = tungstenite::client(format!("ws://{}/", server.addr), stream);
    assert!(
        joined.is_ok(),
        "a user was shed at accept: {:?}",
        joined.err()
    );
    adds.recv_timeout(TIMEOUT).expect("add for the user");
}

#[test]
fn a_stop_ends_run_though_stats_sockets_do_not_answer_the_close() {
    for threads in [1, 2] {
        let (added, _adds) = mpsc::channel();
        let server = start_loops(
            Config::default()
                .metrics(true)
                .close_timeout(Duration::from_millis(300)),
            threads,
            move |_| Counting(added.clone()),
        );
        // Raw stats sockets that never read nor answer.
        let mut watchers = Vec::new();
        for _ in 0..4 {
            let mut raw = connect_raw(server.addr);
            write!(
                raw,
                "GET /stats HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .unwrap();
            assert_eq!(read_response(&mut raw).0, 101);
            watchers.push(raw);
        }
        std::thread::sleep(Duration::from_millis(1200));
        let started = Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(watchers);
    }
}

/// Answers `ping` with an application ping (`Handle::ping`), and anything else with an echo.
struct Pinging;

impl Handler for Pinging {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        match msg {
            Message::Text("ping") => {
                ws.ping(id, b"rtt");
            }
            msg => ws.send(id, msg),
        }
    }
}

#[test]
fn an_application_ping_is_not_counted_as_a_message_sent() {
    let server = start(Config::default().metrics(true), Pinging);
    let mut ws = client(server.addr);
    say(&mut ws, "ping");
    assert_eq!(ask(&mut ws, "echo"), "echo");
    let samples = scrape(server.addr);
    assert_eq!(samples[r#"wsloop_messages_received_total{loop="0"}"#], 2.0);
    assert_eq!(
        samples[r#"wsloop_messages_sent_total{loop="0"}"#], 1.0,
        "the echo only"
    );
}
