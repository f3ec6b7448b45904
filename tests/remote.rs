//! `wsloop::Remote`, the loop seen from other threads: many threads sending at once, a queue that is full, a server
//! that has stopped, publish and broadcast on one loop and on two, and a close with a code and a reason.
//!
//! The ids a `Remote` needs come from the server's own `add` callback, reported through a channel ([`Rooms`]).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{
    ask, close_of, join, nothing_pending, on_every_loop, say, start, start_loops, text, Client,
    Event, Rooms, TestServer, TIMEOUT,
};
use tungstenite::Message as WsMessage;
use wsloop::{
    CloseCode, Closed, Config, ConnId, Context, Handle, Handler, Message, Remote, RemoteError,
};

/// [`Rooms`], plus one command: `block` makes the loop wait inside the callback until the test opens the gate
/// (bounded by `TIMEOUT`), so the test decides exactly when the loop cannot take anything from its queue.
struct Gated {
    rooms: Rooms,
    blocked: Sender<usize>,
    gate: Arc<Mutex<Receiver<()>>>,
}

impl Handler for Gated {
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, conn: &Context<'_>) {
        self.rooms.add(ws, id, conn);
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        if msg == Message::Text("block") {
            self.blocked.send(id.loop_index()).unwrap();
            let opened = self.gate.lock().unwrap().recv_timeout(TIMEOUT);
            assert!(opened.is_ok(), "the test never opened the gate");
            return;
        }
        self.rooms.send(ws, id, msg);
    }

    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, closed: Closed<'_>) {
        self.rooms.close(ws, id, closed);
    }
}

/// The pieces of a gated server: what `Gated` reports, its "I am blocked" signal, and the gate.
struct Gate {
    reports: Receiver<Event>,
    blocked: Receiver<usize>,
    open: Sender<()>,
}

fn gated(config: Config, loops: usize) -> (TestServer, Gate) {
    let (events, reports) = mpsc::channel();
    let (blocked_tx, blocked) = mpsc::channel();
    let (open, gate) = mpsc::channel();
    let gate = Arc::new(Mutex::new(gate));
    let server = start_loops(config, loops, move |_| Gated {
        rooms: Rooms::reporting(events.clone(), &[]),
        blocked: blocked_tx.clone(),
        gate: gate.clone(),
    });
    (
        server,
        Gate {
            reports,
            blocked,
            open,
        },
    )
}

#[test]
fn eight_threads_send_ten_thousand_each_and_every_message_arrives_in_its_threads_order() {
    const THREADS: usize = 8;
    const EACH: usize = 10_000;
    // Small enough that the senders outrun the loop now and then: `Full` is retried, and counted. 80,000 frames
    // may wait for the one client; this test is about the queue, not about slow readers.
    let config = Config::default().remote_queue(1024).max_buffered(256 << 20);
    let (events, reports) = mpsc::channel();
    let server = start(config, Rooms::reporting(events, &[]));
    let (mut ws, id) = join(server.addr, &reports);
    let remote = server.remote();
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    thread::scope(|s| {
        for t in 0..THREADS {
            let remote = remote.clone();
            let (accepted, refused) = (&accepted, &refused);
            s.spawn(move || {
                for seq in 0..EACH {
                    let msg = format!("{t}:{seq}");
                    let mut tries = 0;
                    loop {
                        match remote.send(id, msg.as_str()) {
                            Ok(()) => break,
                            Err(RemoteError::Full) => {
                                tries += 1;
                                assert!(tries < 10_000, "{msg}: the queue stayed full for seconds");
                                refused.fetch_add(1, Ordering::Relaxed);
                                thread::sleep(Duration::from_millis(1));
                            }
                            Err(e) => panic!("{msg}: {e}"),
                        }
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Read while they send: each thread's messages in its order, none lost, none twice.
        let mut next = [0usize; THREADS];
        for n in 0..THREADS * EACH {
            let msg = text(&mut ws);
            let (t, seq) = msg
                .split_once(':')
                .and_then(|(t, seq)| Some((t.parse::<usize>().ok()?, seq.parse::<usize>().ok()?)))
                .unwrap_or_else(|| panic!("message {n}: unexpected {msg:?}"));
            assert!(t < THREADS, "message {n}: {msg:?}");
            assert_eq!(seq, next[t], "message {n}: thread {t} out of order");
            next[t] += 1;
        }
    });
    assert_eq!(accepted.into_inner(), THREADS * EACH);
    // Nothing more was queued behind them.
    remote.send(id, "end").unwrap();
    assert_eq!(text(&mut ws), "end");
    // Not asserted (it depends on the machine's speed), but kept in the output of a failing run.
    eprintln!("Full answered {} times", refused.into_inner());
}

#[test]
fn a_full_queue_says_full_and_everything_accepted_is_delivered() {
    const QUEUE: usize = 8;
    let config = Config::default().remote_queue(QUEUE);
    let (server, gate) = gated(config, 1);
    let (mut ws, id) = join(server.addr, &gate.reports);
    let remote = server.remote();

    say(&mut ws, "block");
    gate.blocked.recv_timeout(TIMEOUT).expect("the loop blocks");
    for i in 0..QUEUE {
        assert_eq!(
            remote.send(id, format!("queued {i}")),
            Ok(()),
            "command {i}"
        );
    }
    assert_eq!(remote.send(id, "one too many"), Err(RemoteError::Full));
    assert_eq!(remote.publish("topic", "x"), Err(RemoteError::Full));
    assert_eq!(remote.broadcast("x"), Err(RemoteError::Full));
    assert_eq!(
        remote.close(id, CloseCode::application(4000).unwrap(), "x"),
        Err(RemoteError::Full)
    );
    // Another clone of the Remote sees the same queue.
    assert_eq!(remote.clone().send(id, "x"), Err(RemoteError::Full));

    gate.open.send(()).unwrap();
    for i in 0..QUEUE {
        assert_eq!(text(&mut ws), format!("queued {i}"));
    }
    // None of the refused ones arrives, and the connection was not closed.
    nothing_pending(&mut ws, "refused");
    // Drained, the queue takes commands again.
    assert_eq!(remote.send(id, "again"), Ok(()));
    assert_eq!(text(&mut ws), "again");
}

#[test]
fn a_publish_is_refused_whole_when_one_loop_of_two_is_full() {
    const QUEUE: usize = 4;
    let config = Config::default().remote_queue(QUEUE);
    let (server, gate) = gated(config, 2);
    let mut clients = on_every_loop(&server, &gate.reports, 2, 1);
    let remote = server.remote();
    for (ws, _) in clients.iter_mut().flatten() {
        assert!(ask(ws, "sub:t").starts_with("sub:t:true:"));
    }
    let (mut stuck, stuck_id) = clients[0].pop().unwrap();
    let (mut free, free_id) = clients[1].pop().unwrap();

    say(&mut stuck, "block");
    assert_eq!(gate.blocked.recv_timeout(TIMEOUT), Ok(0));
    for i in 0..QUEUE {
        assert_eq!(remote.send(stuck_id, format!("queued {i}")), Ok(()));
    }
    // A publish or broadcast goes into every loop's queue or none: loop 1's has room, loop 0's has not.
    assert_eq!(remote.publish("t", "half"), Err(RemoteError::Full));
    assert_eq!(remote.broadcast("half"), Err(RemoteError::Full));
    // A send to loop 1 needs only loop 1's queue.
    assert_eq!(remote.send(free_id, "to loop 1"), Ok(()));
    assert_eq!(text(&mut free), "to loop 1");
    nothing_pending(&mut free, "no half of a publish");

    gate.open.send(()).unwrap();
    for i in 0..QUEUE {
        assert_eq!(text(&mut stuck), format!("queued {i}"));
    }
    nothing_pending(&mut stuck, "refused");
    remote.publish("t", "whole").unwrap();
    assert_eq!(text(&mut stuck), "whole");
    assert_eq!(text(&mut free), "whole");
}

/// Every method of `remote` says `Stopped`.
fn assert_stopped(remote: &Remote, id: ConnId, when: &str) {
    assert_eq!(
        remote.send(id, "x"),
        Err(RemoteError::Stopped),
        "send {when}"
    );
    assert_eq!(
        remote.publish("t", "x"),
        Err(RemoteError::Stopped),
        "publish {when}"
    );
    assert_eq!(
        remote.broadcast("x"),
        Err(RemoteError::Stopped),
        "broadcast {when}"
    );
    assert_eq!(
        remote.close(id, CloseCode::NORMAL, "x"),
        Err(RemoteError::Stopped),
        "close {when}"
    );
    // Stopping again is harmless.
    remote.stop();
}

/// The next close frame's code, skipping anything before it.
fn close_frame(ws: &mut Client) -> (u16, String) {
    for _ in 0..1000 {
        match ws.read().expect("a close frame") {
            WsMessage::Close(Some(frame)) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            WsMessage::Close(None) => return (1005, String::new()),
            _ => continue,
        }
    }
    panic!("no close frame in 1000 messages");
}

fn check_stopped(loops: usize) {
    let (events, reports) = mpsc::channel();
    let server = start_loops(Config::default(), loops, move |_| {
        Rooms::reporting(events.clone(), &[])
    });
    let (mut ws, id) = join(server.addr, &reports);
    let remote = server.remote();
    let before = remote.clone();
    // Still running: every method is accepted.
    assert_eq!(remote.send(id, "running"), Ok(()));
    assert_eq!(text(&mut ws), "running");

    remote.stop();
    assert_stopped(&before, id, "after stop()");
    assert_stopped(&remote, id, "after stop(), the Remote that stopped it");
    assert_eq!(close_frame(&mut ws).0, CloseCode::GOING_AWAY.get());
    drop(ws);
    // `stop` consumes the test server: it returns once `run` has returned.
    server.stop();
    assert_stopped(&before, id, "after run returned");
    assert_stopped(&before.clone(), id, "after run returned, a new clone");
}

#[test]
fn every_method_says_stopped_after_stop_and_after_run_returned() {
    check_stopped(1);
}

#[test]
fn every_method_says_stopped_after_stop_and_after_run_returned_with_two_loops() {
    check_stopped(2);
}

/// On every loop, one subscriber of `news` and one client that is not: one thread publishes, sends and broadcasts
/// in turn, and each client sees what it should, in the order it was issued.
fn check_publish_and_broadcast(loops: usize) {
    let (events, reports) = mpsc::channel();
    let server = start_loops(Config::default(), loops, move |_| {
        Rooms::reporting(events.clone(), &[])
    });
    let clients = on_every_loop(&server, &reports, loops, 2);
    let remote = server.remote();
    let mut subscribers = Vec::new();
    let mut others = Vec::new();
    for mut pair in clients {
        let (other, _) = pair.pop().unwrap();
        let (mut subscriber, id) = pair.pop().unwrap();
        assert_eq!(ask(&mut subscriber, "sub:news"), "sub:news:true:1");
        subscribers.push((subscriber, id));
        others.push(other);
    }
    // Issued from one thread, carried out in that order: the broadcasts bracket each publish, so a publish that
    // reached a non-subscriber would show up between them.
    for round in 0..3 {
        remote.publish("news", format!("p{round}")).unwrap();
        for (_, id) in &subscribers {
            remote.send(*id, format!("s{round}")).unwrap();
        }
        remote.broadcast(format!("b{round}")).unwrap();
    }
    remote.publish("nobody", "unheard").unwrap();
    remote.broadcast("end").unwrap();
    for (ws, id) in &mut subscribers {
        let got: Vec<String> = (0..10).map(|_| text(ws)).collect();
        assert_eq!(
            got,
            ["p0", "s0", "b0", "p1", "s1", "b1", "p2", "s2", "b2", "end"],
            "subscriber {id} on loop {}",
            id.loop_index()
        );
        nothing_pending(ws, "subscriber");
    }
    for ws in &mut others {
        let got: Vec<String> = (0..4).map(|_| text(ws)).collect();
        assert_eq!(got, ["b0", "b1", "b2", "end"]);
        nothing_pending(ws, "not subscribed");
    }
}

#[test]
fn publish_and_broadcast_through_remote_on_one_loop() {
    check_publish_and_broadcast(1);
}

#[test]
fn publish_and_broadcast_through_remote_on_two_loops() {
    check_publish_and_broadcast(2);
}

fn check_close(loops: usize) {
    let (events, reports) = mpsc::channel();
    let server = start_loops(Config::default(), loops, move |_| {
        Rooms::reporting(events.clone(), &[])
    });
    let mut clients: Vec<(Client, ConnId)> = on_every_loop(&server, &reports, loops, 2)
        .into_iter()
        .flatten()
        .collect();
    let remote = server.remote();
    let (mut survivor, _) = clients.pop().unwrap();
    for (n, (mut ws, id)) in clients.into_iter().enumerate() {
        // A code of the application's own range, or one of the RFC's, and a reason.
        let (code, reason) = if n % 2 == 0 {
            (
                CloseCode::application(4000 + n as u16).unwrap(),
                format!("closed from afar, n={n}"),
            )
        } else {
            (CloseCode::NORMAL, "normal".to_string())
        };
        let seen = code.get();
        remote.close(id, code, &reason).unwrap();
        assert_eq!(
            close_frame(&mut ws),
            (seen, reason.clone()),
            "client {id} on loop {}",
            id.loop_index()
        );
        assert_eq!(close_of(&reports, id).0, seen, "in the close callback");
        drop(ws);
        // The connection is gone (or going): a send to it is not an error, and goes nowhere.
        assert_eq!(remote.send(id, "too late"), Ok(()));
        assert_eq!(
            remote.close(id, CloseCode::application(4999).unwrap(), "again"),
            Ok(())
        );
    }
    nothing_pending(&mut survivor, "still served");
}

#[test]
fn close_through_remote_reaches_the_client_with_its_code_and_reason() {
    check_close(1);
}

#[test]
fn close_through_remote_reaches_the_client_with_its_code_and_reason_on_two_loops() {
    check_close(2);
}
