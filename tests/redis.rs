//! Nodes joined through Redis (cargo feature `redis`): chatroom processes on one Redis, and two in-process
//! `Loops`. Each test starts its own `redis-server` on a free loopback port (no persistence), killed when the test
//! ends; an outage is a frozen Redis (SIGSTOP, then SIGCONT: it comes back with its data), a restart without data is
//! a new `redis-server` on the same port.
//!
//! Run with `cargo test --features redis --test redis`; a plain `cargo test` skips this file.
#![cfg(feature = "redis")]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::process::{binary_with, Example};
use common::{client, hello, text, Rooms, TIMEOUT};
use serde_json::{json, Value};
use tungstenite::Message as WsMessage;
use wsloop::{Config, Loops, RedisConfig, Remote, RemoteError};

type Client = tungstenite::WebSocket<TcpStream>;

/// The longest wait for a run of events (a read alone is bounded by `TIMEOUT`, but the user count every 5 s keeps
/// a read from timing out).
const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------------------------
// A Redis of the test's own.

/// A `redis-server` on a loopback port, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts one on a free port.
    fn start() -> Redis {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(redis) = Redis::try_start(port) {
                return redis;
            }
        }
        panic!("no redis-server started on five free ports");
    }

    /// Starts one on `port` (a new, empty one where another was killed).
    fn start_on(port: u16) -> Redis {
        for _ in 0..20 {
            if let Some(redis) = Redis::try_start(port) {
                return redis;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {port}");
    }

    fn try_start(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (the Debian package redis-server)");
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if redis.child.try_wait().expect("try_wait").is_some() {
                return None; // the port was taken meanwhile
            }
            if redis.pings() {
                return Some(redis);
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {port} did not answer PING");
    }

    /// True if it answers PING now.
    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Freezes it: connections stay open, nothing is answered.
    fn freeze(&self) {
        signal(self.child.id(), libc::SIGSTOP);
    }

    /// Thaws it: it answers again, with its data.
    fn thaw(&self) {
        signal(self.child.id(), libc::SIGCONT);
    }

    /// Kills it (its data is gone); returns its port.
    fn kill(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started and has not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

// ---------------------------------------------------------------------------------------------------------------
// Chatroom nodes and their clients.

/// The chatroom example built with the `redis` feature (once per test binary).
fn chatroom_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| binary_with("chatroom", &["redis"]))
        .clone()
}

/// A chatroom node on `redis`, with extra `flags`.
fn node(redis: &Redis, flags: &[&str]) -> Example {
    let url = redis.url();
    let mut all = vec!["--redis", url.as_str()];
    all.extend_from_slice(flags);
    Example::spawn(
        &chatroom_binary(),
        &all,
        "chatroom on http://",
        "/ (Ctrl-C to stop)",
    )
}

/// The next JSON event for `ws`, the periodic user count included; pings and pongs skipped.
fn any_event(ws: &mut Client) -> Value {
    for _ in 0..100 {
        match ws.read().expect("an event") {
            WsMessage::Text(text) => return serde_json::from_str(&text).expect("a JSON event"),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("expected a JSON text message, got {other:?}"),
        }
    }
    panic!("only pings and pongs");
}

/// The next JSON event other than the periodic user count. Bounded: the count (every 5 s) keeps each read from
/// timing out, so the whole wait has a deadline here.
fn event(ws: &mut Client) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let event = any_event(ws);
        if event["type"] != "users" {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no event but the count for {LONG:?}"
        );
    }
}

fn say(ws: &mut Client, text: &str) {
    ws.send(WsMessage::text(text)).expect("send a text message");
}

/// A user in the room: the client, its id, and the history it was shown (if any).
struct User {
    ws: Client,
    id: u64,
    history: Option<Value>,
}

/// Connects to a node and reads up to its own `join` (the joins and leaves of others may come first: they travel
/// through Redis, and this node may deliver them after this user arrived).
fn enter(addr: SocketAddr) -> User {
    let mut ws = client(addr);
    let welcome = event(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let id = welcome["id"].as_u64().expect("a numeric id");
    let mut history = None;
    loop {
        let e = event(&mut ws);
        match e["type"].as_str() {
            Some("history") if history.is_none() => history = Some(e),
            Some("join") if e["id"] == id => {
                assert_eq!(e["name"], format!("user-{id}"), "{e}");
                return User { ws, id, history };
            }
            Some("join" | "leave") => continue,
            _ => panic!("user {id}: unexpected {e} before its own join"),
        }
    }
}

/// Reads `ws` up to the message `marker`; returns the events before it (user counts skipped).
fn read_to(ws: &mut Client, marker: &str) -> Vec<Value> {
    let mut before = Vec::new();
    let deadline = Instant::now() + LONG;
    for _ in 0..100_000 {
        assert!(
            Instant::now() < deadline,
            "no {marker:?} within {LONG:?}; before it: {before:?}"
        );
        let e = event(ws);
        if e["type"] == "message" && e["text"] == marker {
            return before;
        }
        before.push(e);
    }
    panic!("no {marker:?} in 100,000 events");
}

/// Lines up every user: the first says `marker`, and everyone reads up to it. From then on every user's events
/// come from the same part of the one order.
fn line_up(users: &mut [User], marker: &str) {
    say(&mut users[0].ws, marker);
    for user in users.iter_mut() {
        read_to(&mut user.ws, marker);
    }
}

/// Message events as (sender id, text).
fn messages(events: &[Value]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["id"].as_u64().expect("an id"),
                e["text"].as_str().expect("a text").to_string(),
            )
        })
        .collect()
}

/// Reads `ws` until it has seen every message in `wanted` (sender id, text); returns all message events read,
/// in order. Anything but messages, joins and leaves fails.
fn read_messages(ws: &mut Client, wanted: &HashSet<(u64, String)>) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    let mut missing = wanted.clone();
    // The periodic user count keeps a read from timing out: the whole wait is bounded here.
    let deadline = Instant::now() + LONG;
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} of {} messages missing after {LONG:?}, such as {:?}; seen {}",
            missing.len(),
            wanted.len(),
            missing.iter().next(),
            seen.len()
        );
        let e = event(ws);
        match e["type"].as_str() {
            Some("message") => {
                let m = messages(std::slice::from_ref(&e)).remove(0);
                missing.remove(&m);
                seen.push(m);
            }
            Some("join" | "leave") => continue,
            _ => panic!("unexpected {e}"),
        }
    }
    seen
}

/// Checks that every log is the same, with no message twice, and that each sender's messages are in the order
/// they were sent.
fn same_order_once_each(logs: &[Vec<(u64, String)>], sent: &HashMap<u64, Vec<String>>) {
    for (n, log) in logs.iter().enumerate() {
        assert_eq!(
            log.len(),
            log.iter().collect::<HashSet<_>>().len(),
            "user {n} saw a message twice"
        );
        assert_eq!(log, &logs[0], "users 0 and {n} saw different orders");
    }
    for (id, texts) in sent {
        let theirs: Vec<&String> = logs[0]
            .iter()
            .filter(|(from, _)| from == id)
            .map(|(_, t)| t)
            .collect();
        let texts: Vec<&String> = texts.iter().collect();
        assert_eq!(theirs, texts, "user {id}'s messages, as sent");
    }
}

fn message(id: u64, text: &str) -> Value {
    json!({"type": "message", "id": id, "name": format!("user-{id}"), "text": text})
}

/// Waits (bounded) until `example` has printed a line containing `needle`.
fn printed(example: &Example, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !example.output().iter().any(|l| l.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} within {within:?}: {:?}",
            example.output()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. One order across nodes.

#[test]
fn three_nodes_give_ten_senders_the_same_1000_messages_in_one_order() {
    const EACH: usize = 100;
    let redis = Redis::start();
    let nodes = [
        node(&redis, &["--threads", "2"]),
        node(&redis, &[]),
        node(&redis, &[]),
    ];
    let mut users: Vec<User> = (0..10).map(|n| enter(nodes[n % 3].addr)).collect();
    line_up(&mut users, "ready");

    let sent: HashMap<u64, Vec<String>> = users
        .iter()
        .map(|u| {
            let texts = (0..EACH).map(|i| format!("{} says {i}", u.id)).collect();
            (u.id, texts)
        })
        .collect();
    let logs: Vec<Vec<(u64, String)>> = thread::scope(|s| {
        let threads: Vec<_> = users
            .iter_mut()
            .map(|user| {
                let mine = &sent[&user.id];
                s.spawn(move || {
                    for text in mine {
                        say(&mut user.ws, text);
                    }
                    (0..10 * EACH)
                        .map(|_| {
                            let e = event(&mut user.ws);
                            assert_eq!(e["type"], "message", "only messages now: {e}");
                            messages(&[e]).remove(0)
                        })
                        .collect()
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a client thread"))
            .collect()
    });
    same_order_once_each(&logs, &sent);

    // Nothing more is on its way: the next message anyone sees is a new one.
    line_up(&mut users, "done");
}

// ---------------------------------------------------------------------------------------------------------------
// 2. History across nodes.

#[test]
fn a_newcomer_on_another_node_gets_the_last_50_messages_in_order() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut sender = enter(a.addr);
    let mut watcher = enter(b.addr);
    line_up(std::slice::from_mut(&mut sender), "warm-up");
    for i in 0..55 {
        say(&mut sender.ws, &format!("m{i}"));
    }
    // B has delivered every one once its own user has seen the last.
    let seen = messages(&read_to(&mut watcher.ws, "m54"));
    assert!(
        seen.ends_with(&[(sender.id, "m53".to_string())]),
        "{seen:?}"
    );
    // A node started now learns the history from Redis (`replay`), before anyone joins it.
    let c = node(&redis, &[]);

    let expected: Vec<Value> = (5..55)
        .map(|i| message(sender.id, &format!("m{i}")))
        .collect();
    let mut newcomers = Vec::new();
    for addr in [b.addr, c.addr] {
        let user = enter(addr);
        let history = user.history.as_ref().expect("a history");
        assert_eq!(
            history["events"],
            json!(expected),
            "the last 50, oldest first, on {addr}"
        );
        newcomers.push(user);
    }
    say(&mut sender.ws, "live");
    for user in &mut newcomers {
        let after: Vec<Value> = read_to(&mut user.ws, "live");
        assert!(
            after.iter().all(|e| e["type"] == "join"),
            "only joins before the live message: {after:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 3 and 6. A node killed.

#[test]
fn a_killed_nodes_users_leave_once_each_and_the_others_chat_on() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let doomed = node(&redis, &[]);
    let mut users: Vec<User> = vec![enter(a.addr), enter(a.addr), enter(b.addr), enter(b.addr)];
    let mut theirs: Vec<User> = (0..3).map(|_| enter(doomed.addr)).collect();
    users.append(&mut theirs);
    line_up(&mut users, "ready");
    // The doomed node's users stay connected until their node dies under them.
    let doomed_users = users.split_off(4);
    let dead: HashSet<u64> = doomed_users.iter().map(|u| u.id).collect();

    // The heartbeat counts the other nodes' users every second: wait for every survivor to know all seven.
    for user in &mut users {
        let deadline = Instant::now() + Duration::from_secs(12);
        while any_event(&mut user.ws) != json!({"type": "users", "users": 7}) {
            assert!(Instant::now() < deadline, "no count of 7 users");
        }
    }

    let killed = Instant::now();
    signal(doomed.pid(), libc::SIGKILL);
    for (n, user) in users.iter_mut().enumerate() {
        let mut left: Vec<Value> = Vec::new();
        while left.len() < dead.len() {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "survivor {n}: only {left:?} within 10 s of the kill"
            );
            let e = event(&mut user.ws);
            match e["type"].as_str() {
                Some("leave") => left.push(e),
                _ => panic!("survivor {n}: only leaves were due, got {e}"),
            }
        }
        let ids: HashSet<u64> = left.iter().map(|e| e["id"].as_u64().unwrap()).collect();
        assert_eq!(
            ids, dead,
            "survivor {n}: one leave per user of the dead node"
        );
        for e in &left {
            assert_eq!(e["name"], format!("user-{}", e["id"]), "{e}");
            assert_eq!(e["users"], 4, "the four survivors are left: {e}");
        }
    }

    // No node announces them again: a heartbeat or two later, the next event after the leaves is a new message.
    thread::sleep(Duration::from_secs(2));
    for from in 0..users.len() {
        let text = format!("still here, from survivor {from}");
        say(&mut users[from].ws, &text);
        let sender = users[from].id;
        for user in &mut users {
            assert_eq!(event(&mut user.ws), message(sender, &text));
        }
    }
    // And the periodic count agrees.
    for user in &mut users {
        assert_eq!(
            any_event(&mut user.ws),
            json!({"type": "users", "users": 4})
        );
    }
    // A newcomer counts the survivors too.
    let newcomer = enter(a.addr);
    for user in &mut users {
        assert_eq!(
            event(&mut user.ws),
            json!({"type": "join", "id": newcomer.id, "name": format!("user-{}", newcomer.id), "users": 5})
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 4. Redis away for a while.

#[test]
fn redis_frozen_for_a_while_loses_nothing_and_refuses_past_pending() {
    let redis = Redis::start();
    let nodes = [
        node(&redis, &[]),
        node(&redis, &[]),
        node(&redis, &["--redis-pending", "5"]),
    ];
    let mut users: Vec<User> = nodes.iter().map(|n| enter(n.addr)).collect();
    line_up(&mut users, "ready");
    // A node counts a publish as kept until its writer has Redis's answer, which can come a moment after its
    // readers delivered it: the limited node starts the outage with nothing kept.
    thread::sleep(Duration::from_millis(500));

    redis.freeze();
    let frozen = Instant::now();
    let mut sent: HashMap<u64, Vec<String>> = HashMap::new();
    for (n, count) in [(0, 20), (1, 20)] {
        let user = &mut users[n];
        let texts: Vec<String> = (0..count)
            .map(|i| format!("{} meanwhile {i}", user.id))
            .collect();
        for text in &texts {
            say(&mut user.ws, text);
        }
        sent.insert(user.id, texts);
    }
    // The node that keeps five: the sixth and later are refused, at once, to their sender alone.
    let limited = &mut users[2];
    let texts: Vec<String> = (0..8)
        .map(|i| format!("{} meanwhile {i}", limited.id))
        .collect();
    for text in &texts {
        say(&mut limited.ws, text);
    }
    for _ in 5..8 {
        let e = event(&mut limited.ws);
        assert_eq!(e["type"], "error", "{e}");
    }
    assert!(!redis.pings(), "Redis is still frozen");
    let refused: Vec<String> = texts[5..].to_vec();
    sent.insert(limited.id, texts[..5].to_vec());

    // A few seconds away (less than the lease: no node is taken for dead), then back with its data.
    thread::sleep(Duration::from_secs(3).saturating_sub(frozen.elapsed()));
    redis.thaw();

    let wanted: HashSet<(u64, String)> = sent
        .iter()
        .flat_map(|(id, texts)| texts.iter().map(|t| (*id, t.clone())))
        .collect();
    let logs: Vec<Vec<(u64, String)>> = users
        .iter_mut()
        .map(|u| read_messages(&mut u.ws, &wanted))
        .collect();
    same_order_once_each(&logs, &sent);
    // What a node kept may reach Redis (and everyone) on its old connection before the node has its answer: the
    // node still counts it as kept until its writer is through, so the limited node would refuse one more until
    // then.
    printed(&nodes[2], "Redis writer: Redis is back", TIMEOUT);
    // Each node says one last thing; its writer keeps order, so once all three are seen nothing older from any
    // node is still on its way. Nothing but the three may come meanwhile: no copy, no refused message.
    let markers: Vec<String> = users.iter().map(|u| format!("{} last", u.id)).collect();
    for (user, marker) in users.iter_mut().zip(&markers) {
        say(&mut user.ws, marker);
    }
    for (n, user) in users.iter_mut().enumerate() {
        let mut missing: HashSet<&String> = markers.iter().collect();
        while !missing.is_empty() {
            let e = event(&mut user.ws);
            assert_eq!(e["type"], "message", "user {n}: no join or leave: {e}");
            let text = e["text"].as_str().unwrap().to_string();
            assert!(
                missing.remove(&text),
                "user {n}: {text:?} came again or was refused (refused: {refused:?})"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Redis restarts without its data.

#[test]
fn redis_restarted_empty_keeps_the_clients_and_replays_nothing() {
    let redis = Redis::start();
    let nodes = [node(&redis, &[]), node(&redis, &[]), node(&redis, &[])];
    let mut users: Vec<User> = nodes.iter().map(|n| enter(n.addr)).collect();
    line_up(&mut users, "ready");
    let mut before = HashSet::new();
    for i in 0..10 {
        let text = format!("before {i}");
        say(&mut users[i % 3].ws, &text);
        before.insert((users[i % 3].id, text));
    }
    // Every one has reached every user before Redis goes.
    for user in users.iter_mut() {
        read_messages(&mut user.ws, &before);
    }

    let port = redis.kill();
    let redis = Redis::start_on(port);
    assert!(redis.pings());

    let mut sent: HashMap<u64, Vec<String>> = HashMap::new();
    for user in users.iter_mut() {
        let texts: Vec<String> = (0..10).map(|i| format!("{} after {i}", user.id)).collect();
        for text in &texts {
            say(&mut user.ws, text);
        }
        sent.insert(user.id, texts);
    }
    let wanted: HashSet<(u64, String)> = sent
        .iter()
        .flat_map(|(id, texts)| texts.iter().map(|t| (*id, t.clone())))
        .collect();
    let logs: Vec<Vec<(u64, String)>> = users
        .iter_mut()
        .map(|u| read_messages(&mut u.ws, &wanted))
        .collect();
    for log in &logs {
        assert!(
            log.iter().all(|(_, t)| t.contains(" after ")),
            "only messages after the restart: {log:?}"
        );
    }
    same_order_once_each(&logs, &sent);
    let markers: Vec<String> = users.iter().map(|u| format!("{} last", u.id)).collect();
    for (user, marker) in users.iter_mut().zip(&markers) {
        say(&mut user.ws, marker);
    }
    for (n, user) in users.iter_mut().enumerate() {
        let mut missing: HashSet<&String> = markers.iter().collect();
        while !missing.is_empty() {
            let e = event(&mut user.ws);
            assert_eq!(e["type"], "message", "user {n}: no join or leave: {e}");
            let text = e["text"].as_str().unwrap().to_string();
            assert!(missing.remove(&text), "user {n}: {text:?} came again");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 7. A node that falls behind the trim.

/// Three nodes on streams of about `maxlen` entries; one frozen (SIGSTOP) while the users of the other two publish
/// `total` messages, then thawed.
struct PastTheTrim {
    _redis: Redis,
    _running: [Example; 2],
    slow: Example,
    /// The running nodes' users.
    users: Vec<User>,
    /// The frozen node's user.
    late: User,
}

fn past_the_trim(maxlen: usize, total: usize) -> PastTheTrim {
    let redis = Redis::start();
    let maxlen = maxlen.to_string();
    let flags = ["--redis-maxlen", maxlen.as_str()];
    let running = [node(&redis, &flags), node(&redis, &flags)];
    let slow = node(&redis, &flags);
    let mut users = vec![
        enter(running[0].addr),
        enter(running[1].addr),
        enter(slow.addr),
    ];
    line_up(&mut users, "ready");
    let late = users.pop().expect("the slow node's user");

    signal(slow.pid(), libc::SIGSTOP);
    let frozen = Instant::now();
    // In rounds of 50 that the two running nodes deliver before the next round: they never fall behind the trim
    // themselves, and the stream passes the frozen node many times over.
    let mut sent: HashMap<u64, Vec<String>> = HashMap::new();
    let mut logs: Vec<Vec<(u64, String)>> = vec![Vec::new(), Vec::new()];
    for round in 0..total / 50 {
        let mut wanted = HashSet::new();
        for user in users.iter_mut() {
            for i in 0..25 {
                let text = format!("{} says {}", user.id, round * 25 + i);
                say(&mut user.ws, &text);
                wanted.insert((user.id, text.clone()));
                sent.entry(user.id).or_default().push(text);
            }
        }
        for (user, log) in users.iter_mut().zip(&mut logs) {
            log.extend(read_messages(&mut user.ws, &wanted));
        }
    }
    // The other nodes did not wait for the frozen one.
    same_order_once_each(&logs, &sent);
    assert_eq!(logs[0].len(), total / 50 * 50);
    let took = frozen.elapsed();
    assert!(took < LONG, "{total} messages took {took:?}");
    signal(slow.pid(), libc::SIGCONT);
    PastTheTrim {
        _redis: redis,
        _running: running,
        slow,
        users,
        late,
    }
}

#[test]
fn a_frozen_node_holds_no_one_back_and_serves_live_messages_when_thawed() {
    const TOTAL: usize = 1000;
    // Held whole: the nodes and Redis live as long as it does.
    let mut trimmed = past_the_trim(100, TOTAL);
    let (users, late) = (&mut trimmed.users, &mut trimmed.late);
    // Reading on from what Redis still has, the slow node serves live messages again: not stalled.
    say(&mut users[0].ws, "live again");
    let caught_up = messages(&read_to(&mut late.ws, "live again"));
    assert!(
        caught_up.len() < TOTAL,
        "the trimmed entries cannot all have come: {}",
        caught_up.len()
    );
    let once: HashSet<&(u64, String)> = caught_up.iter().collect();
    assert_eq!(once.len(), caught_up.len(), "none twice");
    say(&mut late.ws, "me too");
    for user in users.iter_mut() {
        read_to(&mut user.ws, "me too");
    }
}

/// With a stream as long as a read batch (512 entries) or longer, the thawed node's first read is full, and it
/// checks the trim.
#[test]
fn a_node_frozen_past_a_long_trim_says_it_fell_behind() {
    let trimmed = past_the_trim(600, 2000);
    printed(&trimmed.slow, "fell behind the trim", TIMEOUT);
}

/// With a shorter stream (`--redis-maxlen 100`) the thawed node reads fewer than 512 entries at once, never checks
/// the trim, and skips the lost entries without a word.
#[test]
fn a_node_frozen_past_a_short_trim_says_it_fell_behind() {
    let trimmed = past_the_trim(100, 1000);
    printed(&trimmed.slow, "fell behind the trim", TIMEOUT);
}

// ---------------------------------------------------------------------------------------------------------------
// 8. A bad Redis URL.

#[test]
fn a_bad_or_unreachable_redis_url_exits_1_with_one_line() {
    for url in ["redis://127.0.0.1:1", "nope://x"] {
        let mut child = Command::new(chatroom_binary())
            .args(["--port", "0", "--redis", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the chatroom");
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{url}: the chatroom did not exit");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let (mut out, mut err) = (String::new(), String::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let _ = child.wait();
        assert_eq!(status.code(), Some(1), "{url}: {status}, stderr {err:?}");
        assert_eq!(err.lines().count(), 1, "{url}: one line on stderr: {err:?}");
        assert!(err.ends_with('\n') && err.len() > 1, "{url}: {err:?}");
        assert!(out.is_empty(), "{url}: nothing on stdout: {out:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 9. In-process nodes.

/// A `Loops` (one loop, the test application [`Rooms`]) joined to `redis`; stopped and joined on drop.
struct Node {
    addr: SocketAddr,
    remote: Remote,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(redis: &Redis, pending: usize) -> Node {
        let _ = env_logger::builder().is_test(true).try_init();
        let mut config = RedisConfig::new(redis.url());
        config.pending = pending;
        let loops = Loops::bind("127.0.0.1:0", Config::default(), 1)
            .expect("bind 127.0.0.1:0")
            .redis(config)
            .expect("join through Redis");
        let addr = loops.local_addr().expect("local_addr");
        let remote = loops.remote();
        let thread = thread::spawn(move || {
            loops
                .run(|_| Rooms::default())
                .expect("the loop must not fail")
        });
        Node {
            addr,
            remote,
            thread: Some(thread),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.remote.stop();
        if let Some(thread) = self.thread.take() {
            if !thread::panicking() {
                thread.join().expect("the node's thread must not panic");
            }
        }
    }
}

#[test]
fn remote_broadcast_crosses_nodes_and_is_refused_past_pending() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, 3), Node::start(&redis, 100));
    let mut on_b = client(b.addr);
    hello(&mut on_b);
    let mut on_a = client(a.addr);
    hello(&mut on_a);

    a.remote.broadcast("from A").expect("taken");
    assert_eq!(text(&mut on_b), "from A");
    assert_eq!(text(&mut on_a), "from A", "A's own, once it came back");

    redis.freeze();
    // A counts a publish as kept until its writer has Redis's answer for it, which for "from A" may still be on its
    // way (its readers can deliver it first): so two or three more are kept now, never more, then `Full`.
    let mut kept = 0;
    let refused = loop {
        let msg = format!("kept {kept}");
        match a.remote.broadcast(msg.as_str()) {
            Ok(()) => kept += 1,
            Err(e) => break (e, msg),
        }
        assert!(kept <= 3, "more kept than pending allows");
    };
    assert_eq!(refused.0, RemoteError::Full, "past pending");
    assert!(kept >= 2, "only {kept} kept");
    thread::sleep(Duration::from_millis(500));
    redis.thaw();
    for ws in [&mut on_b, &mut on_a] {
        for i in 0..kept {
            assert_eq!(text(ws), format!("kept {i}"));
        }
    }
    // Once written, A takes more again; the refused one never comes.
    let deadline = Instant::now() + TIMEOUT;
    while a.remote.broadcast("after") != Ok(()) {
        assert!(Instant::now() < deadline, "A never took more");
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(text(&mut on_b), "after");
    assert_eq!(text(&mut on_a), "after");
}

/// The users a node stored before Redis restarted empty still leave when that node dies afterwards.
#[test]
fn a_node_killed_after_an_empty_restart_still_has_its_users_leave() {
    let redis = Redis::start();
    let survivor = node(&redis, &[]);
    let doomed = node(&redis, &[]);
    let mut users = vec![enter(survivor.addr), enter(doomed.addr)];
    line_up(&mut users, "ready");
    let theirs = users.pop().expect("the doomed node's user");

    let port = redis.kill();
    let redis = Redis::start_on(port);
    say(&mut users[0].ws, "after the restart");
    read_to(&mut users[0].ws, "after the restart");
    // Every node has renewed its lease on the new Redis.
    thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    signal(doomed.pid(), libc::SIGKILL);
    let deadline = Duration::from_secs(15);
    loop {
        assert!(killed.elapsed() < deadline, "no leave within {deadline:?}");
        let e = any_event(&mut users[0].ws);
        if e["type"] == "leave" {
            assert_eq!(e["id"], theirs.id, "{e}");
            break;
        }
    }
    drop(redis);
}

/// A topic's first subscriber on a node gets what is published to it right after, by itself (the node follows the
/// topic's stream from where it ended when the subscription was made, in the node's own order of writes, not from
/// when its reader got round to it), and then what any node publishes.
#[test]
fn a_publish_right_after_the_first_subscribe_is_not_missed() {
    let redis = Redis::start();
    let (a, b) = (Node::start(&redis, 100), Node::start(&redis, 100));
    let mut on_a = client(a.addr);
    hello(&mut on_a);
    let mut on_b = client(b.addr);
    hello(&mut on_b);
    for round in 0..5 {
        let topic = format!("room{round}");
        // Subscribe and publish at once: the publisher's own publish comes back to it.
        say(&mut on_a, &format!("sub:{topic}"));
        say(&mut on_a, &format!("pub:{topic}:A is in"));
        assert_eq!(text(&mut on_a), format!("sub:{topic}:true:1"));
        assert_eq!(text(&mut on_a), format!("pub:{topic}:A is in"));
        say(&mut on_b, &format!("sub:{topic}"));
        say(&mut on_b, &format!("pub:{topic}:B is in"));
        assert_eq!(text(&mut on_b), format!("sub:{topic}:true:1"));
        assert_eq!(text(&mut on_b), format!("pub:{topic}:B is in"));
        assert_eq!(text(&mut on_a), format!("pub:{topic}:B is in"));
        // Both held now: from each node at once, each subscriber gets both, in one order.
        say(&mut on_a, &format!("pub:{topic}:from A"));
        say(&mut on_b, &format!("pub:{topic}:from B"));
        let seen_a = [text(&mut on_a), text(&mut on_a)];
        let seen_b = [text(&mut on_b), text(&mut on_b)];
        assert_eq!(seen_a, seen_b, "one order for {topic}");
        let mut sorted = seen_a.to_vec();
        sorted.sort();
        assert_eq!(
            sorted,
            [format!("pub:{topic}:from A"), format!("pub:{topic}:from B")]
        );
    }
}
