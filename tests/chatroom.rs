//! The chatroom example, run as a real process: its JSON protocol, its limits, its flags and its shutdown.
//!
//! The example's binary sits next to this test's own binary: `target/<profile>/deps/chatroom-<hash>` runs
//! `target/<profile>/examples/chatroom`. Each test starts its own
//! process on port 0, learns the port from the first line it prints, and kills it when the test ends.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{binary, Example};
use common::{client, connect_raw, read_response, request};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message as WsMessage;

type Client = tungstenite::WebSocket<std::net::TcpStream>;

/// The page the example serves on `GET /`.
const PAGE: &str = include_str!("../examples/chatroom.html");

/// The chatroom example, run as a process (see `common::process`).
struct Chatroom;

impl Chatroom {
    /// Starts the example on port 0 with extra `flags` and waits for its `chatroom on http://ADDR/` line.
    fn start(flags: &[&str]) -> Example {
        Example::start(
            "chatroom",
            flags,
            "chatroom on http://",
            "/ (Ctrl-C to stop)",
        )
    }
}

/// The next JSON event for `ws`, skipping pings and pongs and the periodic user count (its own test reads it).
fn event(ws: &mut Client) -> Value {
    for _ in 0..100 {
        match ws.read().expect("an event") {
            WsMessage::Text(text) => {
                let event: Value = serde_json::from_str(&text).expect("a JSON event");
                if event["type"] != "users" {
                    return event;
                }
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("expected a JSON text message, got {other:?}"),
        }
    }
    panic!("only pings and pongs");
}

fn say(ws: &mut Client, text: &str) {
    ws.send(WsMessage::text(text)).expect("send a text message");
}

/// Connects a client and reads its welcome and its own join event; returns the client and its id.
fn join(addr: SocketAddr, users: u64) -> (Client, u64) {
    let mut ws = client(addr);
    let welcome = event(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let id = welcome["id"].as_u64().expect("a numeric id");
    assert_eq!(welcome["name"], format!("user-{id}"), "{welcome}");
    let mut join = event(&mut ws);
    if join["type"] == "history" {
        join = event(&mut ws);
    }
    assert_eq!(
        join,
        json!({"type": "join", "id": id, "name": format!("user-{id}"), "users": users})
    );
    (ws, id)
}

/// Three clients in the room, each having seen every join; returns them with their ids.
fn three(addr: SocketAddr) -> ([Client; 3], [u64; 3]) {
    let (mut a, ia) = join(addr, 1);
    let (mut b, ib) = join(addr, 2);
    assert_eq!(
        event(&mut a),
        json!({"type": "join", "id": ib, "name": format!("user-{ib}"), "users": 2})
    );
    let (c, ic) = join(addr, 3);
    let joined_c = json!({"type": "join", "id": ic, "name": format!("user-{ic}"), "users": 3});
    assert_eq!(event(&mut a), joined_c);
    assert_eq!(event(&mut b), joined_c);
    let ids = [ia, ib, ic];
    assert!(ia != ib && ib != ic && ia != ic, "ids must differ: {ids:?}");
    ([a, b, c], ids)
}

/// Reads the close frame the server sends; returns its code.
fn close_code(ws: &mut Client) -> u16 {
    for _ in 0..1000 {
        match ws.read() {
            Ok(WsMessage::Close(frame)) => return frame.map_or(1005, |f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
    panic!("no close frame in 1000 messages");
}

/// After its close frame, lets tungstenite answer it and waits for the end of the connection.
fn finish_close(ws: &mut Client) {
    for _ in 0..100 {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return
            }
            Err(e) => panic!("unexpected error while closing: {e}"),
        }
    }
    panic!("the connection did not end");
}

fn leave(id: u64, name: &str, users: u64) -> Value {
    json!({"type": "leave", "id": id, "name": name, "users": users})
}

fn message(id: u64, name: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "name": name, "text": text})
}

#[test]
fn join_message_nick_and_leave_reach_everyone() {
    let room = Chatroom::start(&[]);
    let ([mut a, mut b, mut c], [ia, ib, ic]) = three(room.addr);
    let (na, nc) = (format!("user-{ia}"), format!("user-{ic}"));

    say(&mut a, "hello, room");
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(event(ws), message(ia, &na, "hello, room"));
    }

    say(&mut b, "/nick bob");
    let renamed = json!({"type": "nick", "id": ib, "old": format!("user-{ib}"), "name": "bob"});
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(event(ws), renamed);
    }
    say(&mut b, "hi, I am bob now");
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(event(ws), message(ib, "bob", "hi, I am bob now"));
    }

    // A name of exactly 32 characters (not bytes) is fine; 33 characters or none at all get an error, to the
    // sender only: the next thing the others see is c's message.
    let longest = "é".repeat(32);
    say(&mut c, &format!("/nick {longest}"));
    let renamed = json!({"type": "nick", "id": ic, "old": nc, "name": longest});
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(event(ws), renamed);
    }
    for bad in ["/nick ".to_string(), format!("/nick {}", "x".repeat(33))] {
        say(&mut b, &bad);
        let error = event(&mut b);
        assert_eq!(error["type"], "error", "{bad:?} -> {error}");
        assert!(
            error["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{error}"
        );
    }
    // "/nick" without a space and a name is an ordinary message.
    say(&mut c, "/nickname");
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(event(ws), message(ic, &longest, "/nickname"));
    }

    // c leaves with a closing handshake, b by dropping TCP: the rest hear of each.
    c.close(None).unwrap();
    finish_close(&mut c);
    for ws in [&mut a, &mut b] {
        assert_eq!(event(ws), leave(ic, &longest, 2));
    }
    drop(b);
    assert_eq!(event(&mut a), leave(ib, "bob", 1));

    say(&mut a, "alone");
    assert_eq!(event(&mut a), message(ia, &na, "alone"));
    let printed = room.output();
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("user-{ib}")) && l.contains("joined")),
        "{printed:?}"
    );
}

#[test]
fn awkward_text_comes_back_exactly() {
    let room = Chatroom::start(&[]);
    let ([mut a, mut b, mut c], [ia, _, _]) = three(room.addr);
    let name = format!("user-{ia}");
    let texts = [
        r#"she said "hi" and 'bye'"#,
        r"C:\path\to\file \\ \n is not a newline \u0041",
        "line one\nline two\r\nline three\ttabbed",
        "<script>alert(\"x\")</script><img src=x onerror=alert(1)>",
        "emoji 😀 flag 🇳🇴 family 👩‍👩‍👧 accents é ü ß, CJK 漢字, treble clef 𝄞",
        "{\"type\":\"join\",\"id\":1}",
        "",
        " leading and trailing spaces ",
        "nul \u{0} bell \u{7} del \u{7f}",
    ];
    for text in texts {
        say(&mut a, text);
        for ws in [&mut a, &mut b, &mut c] {
            let got = event(ws);
            assert_eq!(got, message(ia, &name, text), "sent {text:?}");
            assert_eq!(got["text"].as_str(), Some(text));
        }
    }
}

#[test]
fn three_concurrent_senders_are_seen_in_the_same_order() {
    const EACH: usize = 200;
    let room = Chatroom::start(&[]);
    let (clients, ids) = three(room.addr);
    let logs: Vec<Vec<(u64, String)>> = thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(n, mut ws)| {
                s.spawn(move || {
                    for i in 0..EACH {
                        say(&mut ws, &format!("client {n} message {i}"));
                    }
                    (0..3 * EACH)
                        .map(|_| {
                            let e = event(&mut ws);
                            assert_eq!(e["type"], "message", "{e}");
                            (
                                e["id"].as_u64().unwrap(),
                                e["text"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    });
    assert_eq!(logs[0], logs[1], "clients 0 and 1 saw different orders");
    assert_eq!(logs[0], logs[2], "clients 0 and 2 saw different orders");
    for (n, id) in ids.iter().enumerate() {
        let mine: Vec<&str> = logs[0]
            .iter()
            .filter(|(from, _)| from == id)
            .map(|(_, t)| t.as_str())
            .collect();
        let sent: Vec<String> = (0..EACH)
            .map(|i| format!("client {n} message {i}"))
            .collect();
        assert_eq!(
            mine, sent,
            "client {n}'s messages are missing or out of order"
        );
    }
}

#[test]
fn binary_message_closes_with_1003_and_the_others_chat_on() {
    let room = Chatroom::start(&[]);
    let ([mut a, mut b, mut c], [ia, _, ic]) = three(room.addr);
    c.send(WsMessage::binary(vec![0u8, 1, 2, 3])).unwrap();
    assert_eq!(close_code(&mut c), u16::from(CloseCode::Unsupported));
    finish_close(&mut c);
    let name_c = format!("user-{ic}");
    for ws in [&mut a, &mut b] {
        assert_eq!(event(ws), leave(ic, &name_c, 2));
    }
    say(&mut a, "still chatting");
    for ws in [&mut a, &mut b] {
        assert_eq!(
            event(ws),
            message(ia, &format!("user-{ia}"), "still chatting")
        );
    }
}

/// Exactly `max` bytes pass; one more closes the sender with 1009; the others chat on.
fn check_max_message(room: &Example, max: usize) {
    let ([mut a, mut b, mut c], [ia, _, ic]) = three(room.addr);
    let (name_a, name_c) = (format!("user-{ia}"), format!("user-{ic}"));
    // Multi-byte characters count in bytes: "é" is two.
    let at_limit = format!(
        "{}{}",
        "é".repeat((max - 1) / 2),
        "x".repeat(max - (max - 1) / 2 * 2)
    );
    assert_eq!(at_limit.len(), max);
    say(&mut c, &at_limit);
    for ws in [&mut a, &mut b, &mut c] {
        let got = event(ws);
        assert_eq!(got["type"], "message");
        assert_eq!(
            got["text"].as_str(),
            Some(at_limit.as_str()),
            "a message of exactly {max} bytes must pass"
        );
    }
    say(&mut c, &"y".repeat(max + 1));
    assert_eq!(close_code(&mut c), u16::from(CloseCode::Size));
    finish_close(&mut c);
    for ws in [&mut a, &mut b] {
        assert_eq!(event(ws), leave(ic, &name_c, 2));
    }
    say(&mut a, "after the big one");
    for ws in [&mut a, &mut b] {
        assert_eq!(event(ws), message(ia, &name_a, "after the big one"));
    }
}

#[test]
fn default_max_message_is_65536_bytes_inclusive() {
    check_max_message(&Chatroom::start(&[]), 65536);
}

#[test]
fn max_message_flag_sets_the_limit() {
    check_max_message(&Chatroom::start(&["--max-message", "1000"]), 1000);
}

#[test]
fn max_users_refuses_the_next_with_503_until_someone_leaves() {
    let room = Chatroom::start(&["--max-users", "2"]);
    let (mut a, ia) = join(room.addr, 1);
    let (mut b, ib) = join(room.addr, 2);
    assert_eq!(event(&mut a)["id"], ib);

    let mut third = connect_raw(room.addr);
    third.write_all(request(room.addr).as_bytes()).unwrap();
    let (status, head, body) = read_response(&mut third);
    assert_eq!(status, 503, "{head}");
    assert!(
        !body.trim().is_empty() && body.trim_end().lines().count() == 1,
        "one-line body: {body:?}"
    );
    assert!(body.ends_with('\n'), "{body:?}");

    a.close(None).unwrap();
    finish_close(&mut a);
    assert_eq!(event(&mut b), leave(ia, &format!("user-{ia}"), 1));
    let (mut d, id) = join(room.addr, 2);
    assert_eq!(
        event(&mut b),
        json!({"type": "join", "id": id, "name": format!("user-{id}"), "users": 2})
    );
    say(&mut d, "made it");
    for ws in [&mut b, &mut d] {
        assert_eq!(event(ws), message(id, &format!("user-{id}"), "made it"));
    }
}

#[test]
fn get_slash_serves_the_page_and_other_paths_get_404() {
    let room = Chatroom::start(&[]);
    let get = |path: &str| {
        let mut stream = connect_raw(room.addr);
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", room.addr);
        stream.write_all(req.as_bytes()).unwrap();
        read_response(&mut stream)
    };
    let (status, head, body) = get("/");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert_eq!(body, PAGE);
    let (status, head, _) = get("/no-such-page");
    assert_eq!(status, 404, "{head}");
    // The page and the room share the port: a WebSocket still joins.
    join(room.addr, 1);
}

#[test]
fn bad_flag_exits_non_zero_with_usage() {
    for args in [
        &["--no-such-flag"][..],
        &["--port", "not-a-number"],
        &["--max-users"],
    ] {
        let out = Command::new(binary("chatroom"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run the example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} must fail, got {}",
            out.status
        );
        assert!(
            stderr.contains("usage"),
            "{args:?}: no usage on stderr: {stderr:?}"
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?}: nothing on stdout: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// After `signal`, every client gets close 1001, the process prints its goodbye and exits with 0.
fn check_graceful_stop(signal: &str) {
    let mut room = Chatroom::start(&[]);
    let (clients, _) = three(room.addr);
    room.signal(signal);
    for mut ws in clients {
        assert_eq!(close_code(&mut ws), u16::from(CloseCode::Away));
        finish_close(&mut ws);
    }
    let status = room.wait();
    assert_eq!(status.code(), Some(0), "{status}: {:?}", room.output());
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    check_graceful_stop("TERM");
}

#[test]
fn ctrl_c_closes_every_client_with_1001_and_exits_0() {
    check_graceful_stop("INT");
}

#[test]
fn every_few_seconds_each_user_is_told_the_count_again() {
    let room = Chatroom::start(&[]);
    let ([mut a, _b, _c], _) = three(room.addr);
    // The count comes from a repeating timer (every 5 s): wait for it, raw, with a margin for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no user count within 15 s");
        match a.read().expect("a message") {
            WsMessage::Text(text) => {
                let event: Value = serde_json::from_str(&text).expect("JSON");
                if event["type"] == "users" {
                    assert_eq!(event, json!({"type": "users", "users": 3}));
                    break;
                }
                panic!("nothing but the count was due, got {event}");
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[test]
fn a_newcomer_gets_the_last_50_messages_before_the_live_ones() {
    let room = Chatroom::start(&[]);
    let (mut a, ia) = join(room.addr, 1);
    let name = format!("user-{ia}");
    for i in 0..55 {
        say(&mut a, &format!("m{i}"));
        assert_eq!(event(&mut a), message(ia, &name, &format!("m{i}")));
    }
    let mut b = client(room.addr);
    let welcome = event(&mut b);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let history = event(&mut b);
    assert_eq!(history["type"], "history", "{history}");
    let expected: Vec<Value> = (5..55)
        .map(|i| message(ia, &name, &format!("m{i}")))
        .collect();
    assert_eq!(
        history["events"],
        json!(expected),
        "the last 50, oldest first"
    );
    assert_eq!(event(&mut b)["type"], "join");
    say(&mut a, "live");
    assert_eq!(event(&mut b), message(ia, &name, "live"));
}
