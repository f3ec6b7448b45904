//! Several loops on one port (`wsloop::Loops`): the chatroom example run with `--threads`, and servers in this
//! process, whose [`Rooms`] greeting tells each client its loop.
//!
//! Which loop served a chatroom client cannot be asked over the wire, so the test asks the kernel: a loop writes to
//! its own clients' sockets only, so the threads of the process that wrote at least a thousand messages' worth of
//! bytes (`wchar` in `/proc/PID/task/TID/io`) are the loops that had clients. With `--threads 1` that is exactly
//! one thread, which shows the measure can tell. Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::mpsc;
use std::thread;

use common::process::{written_by_thread, Example};
use common::{
    ask, client, close_and_wait, connect_raw, eventually, hello, on_every_loop, read_response,
    request, say, start_loops, text, Client, Rooms,
};
use serde_json::{json, Value};
use tungstenite::Message as WsMessage;
use wsloop::Config;

/// The chatroom example on `threads` loops.
fn chatroom(threads: usize) -> Example {
    let threads = threads.to_string();
    Example::start(
        "chatroom",
        &["--threads", &threads],
        "chatroom on http://",
        "/ (Ctrl-C to stop)",
    )
}

/// The next chat event. The periodic user count may come in between (every 5 s, from each loop's timer): it is
/// skipped, but must say a count in `users`.
fn event(ws: &mut Client, users: RangeInclusive<u64>) -> Value {
    for _ in 0..100 {
        match ws.read().expect("an event") {
            WsMessage::Text(text) => {
                let event: Value = serde_json::from_str(&text).expect("a JSON event");
                if event["type"] != "users" {
                    return event;
                }
                let count = event["users"].as_u64().expect("a count");
                assert!(users.contains(&count), "{event}, expected {users:?}");
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("expected a JSON text message, got {other:?}"),
        }
    }
    panic!("no chat event in 100 messages");
}

fn joined(id: u64, users: u64) -> Value {
    json!({"type": "join", "id": id, "name": format!("user-{id}"), "users": users})
}

/// Joins `n` clients one at a time: each gets its welcome (and the history, if any) and its own join with the count right, and every client
/// already in the room sees that join before the next one connects.
fn join_one_at_a_time(addr: SocketAddr, n: u64) -> Vec<(Client, u64)> {
    let mut clients: Vec<(Client, u64)> = Vec::new();
    for users in 1..=n {
        let mut ws = client(addr);
        let welcome = event(&mut ws, users - 1..=users);
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let id = welcome["id"].as_u64().expect("an id");
        let mut join = event(&mut ws, users - 1..=users);
        // After messages, a newcomer gets the room's last ones first.
        if join["type"] == "history" {
            join = event(&mut ws, users - 1..=users);
        }
        assert_eq!(join, joined(id, users));
        for (other, other_id) in &mut clients {
            assert_eq!(
                event(other, users - 1..=users),
                joined(id, users),
                "as seen by user-{other_id}"
            );
        }
        clients.push((ws, id));
    }
    let ids: HashSet<u64> = clients.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), clients.len(), "ids must differ");
    clients
}

#[test]
fn chatroom_on_four_loops_counts_users_right_on_every_join_and_leave() {
    let room = chatroom(4);
    let mut clients = join_one_at_a_time(room.addr, 10);
    // Leaves, one at a time, alternately with a closing handshake and by dropping TCP.
    while let Some((ws, id)) = clients.pop() {
        if clients.len().is_multiple_of(2) {
            close_and_wait(ws);
        } else {
            drop(ws);
        }
        let users = clients.len() as u64;
        let left = json!({"type": "leave", "id": id, "name": format!("user-{id}"), "users": users});
        for (other, other_id) in &mut clients {
            assert_eq!(
                event(other, users..=users + 1),
                left,
                "as seen by user-{other_id}"
            );
        }
    }
    // An empty room fills again from one.
    join_one_at_a_time(room.addr, 1);
}

/// Ten clients of the chatroom on `threads` loops send 100 messages each at once; all ten see the same 1,000 in the
/// same order, each sender's in its own order. Returns how many threads of the process served them.
fn ten_clients_chat(threads: usize) -> usize {
    const CLIENTS: u64 = 10;
    const EACH: usize = 100;
    let room = chatroom(threads);
    let clients = join_one_at_a_time(room.addr, CLIENTS);
    let ids: Vec<u64> = clients.iter().map(|(_, id)| *id).collect();
    let before = written_by_thread(room.pid());
    let logs: Vec<(Vec<(u64, String)>, usize)> = thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(n, (mut ws, _))| {
                s.spawn(move || {
                    for i in 0..EACH {
                        say(&mut ws, &format!("client {n} message {i}"));
                    }
                    let mut shortest = usize::MAX;
                    let log = (0..CLIENTS as usize * EACH)
                        .map(|_| {
                            let e = event(&mut ws, CLIENTS..=CLIENTS);
                            assert_eq!(e["type"], "message", "{e}");
                            shortest = shortest.min(e.to_string().len());
                            (
                                e["id"].as_u64().unwrap(),
                                e["text"].as_str().unwrap().to_string(),
                            )
                        })
                        .collect();
                    (log, shortest)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    });
    let after = written_by_thread(room.pid());
    for (n, (log, _)) in logs.iter().enumerate() {
        assert_eq!(log, &logs[0].0, "clients 0 and {n} saw different orders");
    }
    for (n, id) in ids.iter().enumerate() {
        let mine: Vec<&str> = logs[0]
            .0
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

    // A loop with even one client wrote that client its 1,000 messages; a loop without any wrote nothing to a
    // socket (waking another loop writes 8 bytes to that loop's eventfd, and only loops with clients publish).
    let shortest = logs.iter().map(|(_, s)| *s).min().unwrap();
    let enough = (CLIENTS as usize * EACH * shortest) as u64;
    let served: Vec<&(u32, String, u64)> = after
        .iter()
        .filter(|(tid, _, wchar)| {
            let was = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0, |(_, _, w)| *w);
            wchar - was >= enough
        })
        .collect();
    eprintln!(
        "{threads} loops: threads that wrote at least {enough} bytes: {served:?} (before: {before:?}, after: \
         {after:?})"
    );
    served.len()
}

#[test]
fn chatroom_on_four_loops_ten_clients_see_the_same_thousand_messages_served_by_several_loops() {
    let served = ten_clients_chat(4);
    // Ten clients all on one of four loops: one chance in 4^9 (about 262,000).
    assert!(
        (2..=4).contains(&served),
        "{served} threads served the clients"
    );
}

#[test]
fn chatroom_on_one_loop_is_served_by_one_thread() {
    assert_eq!(ten_clients_chat(1), 1);
}

// -------------------------------------------------------------------------------------------------------------
// Servers in this process: `Rooms` on N loops.

fn rooms(loops: usize, config: Config) -> (common::TestServer, mpsc::Receiver<common::Event>) {
    let (events, reports) = mpsc::channel();
    let server = start_loops(config, loops, move |_| {
        Rooms::reporting(events.clone(), &[])
    });
    (server, reports)
}

/// Forty clients joined one at a time: their ids differ, they are spread over more than one loop, and each one's
/// `count()` at its `add` is the whole server's count (a loop's own count would be smaller).
fn check_ids_and_count(loops: usize) {
    const CLIENTS: usize = 40;
    let (server, _reports) = rooms(loops, Config::default());
    let mut clients = Vec::new();
    let mut ids = HashSet::new();
    let mut used = HashSet::new();
    for n in 1..=CLIENTS {
        let mut ws = client(server.addr);
        let (id, loop_index, count) = hello(&mut ws);
        assert!(ids.insert(id), "id {id} given twice");
        assert!(loop_index < loops, "loop {loop_index} of {loops}");
        assert_eq!(
            count, n,
            "count() in the add of client {n} (loop {loop_index})"
        );
        used.insert(loop_index);
        clients.push((ws, loop_index));
    }
    // Forty clients on one loop of two: one chance in 2^39.
    assert!(used.len() > 1, "every client went to one loop: {used:?}");
    // Asked on any loop, the count is everyone's.
    for (ws, loop_index) in &mut clients {
        assert_eq!(
            ask(ws, "users"),
            format!("users:{CLIENTS}"),
            "asked on loop {loop_index}"
        );
    }
    // And it drops as they leave, on every loop.
    let (mut last, _) = clients.pop().unwrap();
    drop(clients);
    eventually("the count to drop to 1", || {
        ask(&mut last, "users") == "users:1"
    });
}

#[test]
fn ids_are_unique_and_count_is_the_whole_servers_on_two_loops() {
    check_ids_and_count(2);
}

#[test]
fn ids_are_unique_and_count_is_the_whole_servers_on_four_loops() {
    check_ids_and_count(4);
}

/// A handshake attempt: its HTTP status.
fn try_handshake(addr: SocketAddr) -> (u16, std::net::TcpStream) {
    let mut stream = connect_raw(addr);
    stream.write_all(request(addr).as_bytes()).unwrap();
    let (status, _, _) = read_response(&mut stream);
    (status, stream)
}

/// `max_users` 3 on N loops: three get in, wherever they land, and every attempt after them gets 503, whichever
/// loop it lands on; once one leaves, one more gets in.
fn check_max_users(loops: usize) {
    const MAX: usize = 3;
    let config = Config::default().max_users(MAX);
    let (server, _reports) = rooms(loops, config);
    let mut admitted: Vec<Client> = (0..MAX)
        .map(|_| {
            let mut ws = client(server.addr);
            hello(&mut ws);
            ws
        })
        .collect();
    // Eight attempts: were the limit a loop's own, the ones landing on a loop with room would get 101.
    for attempt in 0..8 {
        let (status, _) = try_handshake(server.addr);
        assert_eq!(status, 503, "attempt {attempt} past max_users");
    }
    assert_eq!(ask(&mut admitted[0], "users"), format!("users:{MAX}"));
    drop(admitted.pop());
    // The leave reaches the shared count as soon as the loop sees the EOF: then one more gets in.
    let mut newcomer = None;
    eventually("a place to free up", || {
        let (status, stream) = try_handshake(server.addr);
        assert!(status == 503 || status == 101, "{status}");
        if status == 101 {
            newcomer = Some(stream);
        }
        status == 101
    });
    assert_eq!(ask(&mut admitted[0], "users"), format!("users:{MAX}"));
    for attempt in 0..8 {
        let (status, _) = try_handshake(server.addr);
        assert_eq!(status, 503, "attempt {attempt} after the newcomer");
    }
    drop(newcomer);
}

#[test]
fn max_users_is_for_the_whole_server_on_two_loops() {
    check_max_users(2);
}

#[test]
fn max_users_is_for_the_whole_server_on_four_loops() {
    check_max_users(4);
}

/// Two clients on every loop, all subscribed to `t`; the first of each loop publishes and broadcasts 100 messages,
/// all at once. Every client sees every message, all in one and the same order, each publisher's in its own.
fn check_one_order(loops: usize) {
    const EACH: usize = 100;
    let (server, reports) = rooms(loops, Config::default());
    let by_loop = on_every_loop(&server, &reports, loops, 2);
    let mut clients = Vec::new();
    for (loop_index, pair) in by_loop.into_iter().enumerate() {
        for (n, (mut ws, _)) in pair.into_iter().enumerate() {
            assert!(ask(&mut ws, "sub:t").starts_with("sub:t:true:"));
            clients.push((ws, loop_index, n == 0));
        }
    }
    let logs: Vec<Vec<String>> = thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .map(|(mut ws, loop_index, is_publisher)| {
                s.spawn(move || {
                    if is_publisher {
                        for i in 0..EACH {
                            // Publishes and broadcasts share the one order.
                            let command = if i % 2 == 0 { "pub:t" } else { "all" };
                            say(&mut ws, &format!("{command}:loop {loop_index} message {i}"));
                        }
                    }
                    (0..loops * EACH).map(|_| text(&mut ws)).collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread"))
            .collect()
    });
    for (n, log) in logs.iter().enumerate() {
        assert_eq!(log, &logs[0], "clients 0 and {n} saw different orders");
    }
    for loop_index in 0..loops {
        let suffix = format!(":loop {loop_index} message ");
        let mine: Vec<usize> = logs[0]
            .iter()
            .filter_map(|m| m.split_once(&suffix).map(|(_, i)| i.parse().unwrap()))
            .collect();
        assert_eq!(
            mine,
            (0..EACH).collect::<Vec<_>>(),
            "loop {loop_index}'s publisher"
        );
    }
}

#[test]
fn publishes_from_every_loop_are_seen_in_one_order_on_two_loops() {
    check_one_order(2);
}

#[test]
fn publishes_from_every_loop_are_seen_in_one_order_on_four_loops() {
    check_one_order(4);
}
