//! Topics on one loop, over real sockets: `Handle::subscribe`, `unsubscribe`, `publish` and `subscribers`, driven by
//! the [`Rooms`] commands of `tests/common`.
//!
//! That a client got nothing is shown the one way a socket can show it: a marker echoed back to it afterwards is
//! the next thing it reads. Whether 10,000 topics created and emptied leave memory behind is in
//! `tests/topics_memory.rs`, a binary of its own (it counts every allocation of the process).

mod common;

use std::sync::mpsc;

use common::{
    ask, client, close_and_wait, hello, join, next_close, nothing_pending, say, start, text, Rooms,
};
use wsloop::Config;

#[test]
fn a_publish_reaches_exactly_the_subscribers() {
    let server = start(Config::default(), Rooms::default());
    let [mut a, mut b, mut c] = [0, 1, 2].map(|_| {
        let mut ws = client(server.addr);
        hello(&mut ws);
        ws
    });
    assert_eq!(ask(&mut a, "sub:news"), "sub:news:true:1");
    assert_eq!(ask(&mut b, "sub:news"), "sub:news:true:2");
    assert_eq!(
        ask(&mut a, "sub:news"),
        "sub:news:false:2",
        "a second subscribe changes nothing"
    );
    assert_eq!(ask(&mut c, "count:news"), "count:news:2");

    // c is not subscribed: it publishes, a and b get it once, c gets nothing.
    say(&mut c, "pub:news:first");
    assert_eq!(text(&mut a), "pub:news:first");
    assert_eq!(text(&mut b), "pub:news:first");
    for ws in [&mut a, &mut b, &mut c] {
        nothing_pending(ws, "after first");
    }

    // b leaves the topic: the next publish reaches a alone.
    assert_eq!(ask(&mut b, "unsub:news"), "unsub:news:true:1");
    assert_eq!(
        ask(&mut b, "unsub:news"),
        "unsub:news:false:1",
        "a second unsubscribe changes nothing"
    );
    say(&mut c, "pub:news:second");
    assert_eq!(text(&mut a), "pub:news:second");
    for ws in [&mut a, &mut b, &mut c] {
        nothing_pending(ws, "after second");
    }

    // A topic is a name of its own: a publish to "new" or "news!" does not reach "news".
    say(&mut c, "pub:new:x");
    say(&mut c, "pub:news!:x");
    nothing_pending(&mut a, "other topics");
}

#[test]
fn the_publisher_gets_its_own_publish_when_subscribed() {
    let server = start(Config::default(), Rooms::default());
    let mut a = client(server.addr);
    let mut b = client(server.addr);
    hello(&mut a);
    hello(&mut b);
    assert_eq!(ask(&mut a, "sub:room"), "sub:room:true:1");
    say(&mut a, "pub:room:mine");
    assert_eq!(text(&mut a), "pub:room:mine");
    nothing_pending(&mut a, "exactly once");
    nothing_pending(&mut b, "not subscribed");

    // Unsubscribed, it no longer does.
    assert_eq!(ask(&mut a, "unsub:room"), "unsub:room:true:0");
    say(&mut a, "pub:room:not mine");
    nothing_pending(&mut a, "unsubscribed");
}

#[test]
fn a_connection_holds_many_topics_and_each_publish_goes_by_its_own() {
    let server = start(Config::default(), Rooms::default());
    let mut a = client(server.addr);
    let mut b = client(server.addr);
    hello(&mut a);
    hello(&mut b);
    for topic in ["red", "green", "blue"] {
        assert_eq!(
            ask(&mut a, &format!("sub:{topic}")),
            format!("sub:{topic}:true:1")
        );
    }
    assert_eq!(ask(&mut b, "sub:green"), "sub:green:true:2");
    for (n, topic) in ["red", "green", "blue", "green"].into_iter().enumerate() {
        say(&mut b, &format!("pub:{topic}:{n}"));
    }
    for expected in ["pub:red:0", "pub:green:1", "pub:blue:2", "pub:green:3"] {
        assert_eq!(text(&mut a), expected);
    }
    for expected in ["pub:green:1", "pub:green:3"] {
        assert_eq!(text(&mut b), expected);
    }
    nothing_pending(&mut a, "four");
    nothing_pending(&mut b, "two");
}

#[test]
fn a_broadcast_reaches_everyone_subscribed_or_not() {
    let server = start(Config::default(), Rooms::default());
    let mut a = client(server.addr);
    let mut b = client(server.addr);
    hello(&mut a);
    hello(&mut b);
    assert_eq!(ask(&mut a, "sub:news"), "sub:news:true:1");
    say(&mut b, "all:everyone");
    for ws in [&mut a, &mut b] {
        assert_eq!(text(ws), "all:everyone");
        nothing_pending(ws, "once");
    }
}

#[test]
fn a_large_publish_arrives_whole_at_every_subscriber() {
    let server = start(Config::default(), Rooms::default());
    let mut clients: Vec<_> = (0..3)
        .map(|_| {
            let mut ws = client(server.addr);
            hello(&mut ws);
            assert!(ask(&mut ws, "sub:big").starts_with("sub:big:true:"));
            ws
        })
        .collect();
    // Borrowed (copied into one frame) and owned (handed over, written from its own buffer): both arrive whole.
    let body: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for command in ["pub", "own"] {
        let message = format!("{command}:big:{body}");
        say(&mut clients[0], &message);
        for ws in &mut clients {
            assert_eq!(text(ws), message, "{command}");
        }
    }
    for ws in &mut clients {
        nothing_pending(ws, "whole");
    }
}

#[test]
fn a_closed_connection_leaves_its_topics_before_its_close_callback() {
    let (events, reports) = mpsc::channel();
    let server = start(
        Config::default(),
        Rooms::reporting(events, &["room", "side"]),
    );
    let (mut stay, _) = join(server.addr, &reports);
    assert_eq!(ask(&mut stay, "sub:room"), "sub:room:true:1");

    // One leaves with a closing handshake, one by dropping TCP: the close callback sees the topics without it
    // already, and so does everyone after.
    for clean in [true, false] {
        let (mut gone, gone_id) = join(server.addr, &reports);
        assert_eq!(ask(&mut gone, "sub:room"), "sub:room:true:2");
        assert_eq!(ask(&mut gone, "sub:side"), "sub:side:true:1");
        if clean {
            close_and_wait(gone);
        } else {
            drop(gone);
        }
        let (id, code, subscribers) = next_close(&reports);
        assert_eq!(id, gone_id);
        let expected_code = if clean {
            1005 // the peer's close frame had no code
        } else {
            1006 // the connection dropped
        };
        assert_eq!(code, expected_code);
        assert_eq!(
            subscribers,
            [("room".to_string(), 1), ("side".to_string(), 0)],
            "in the close callback (clean close: {clean})"
        );
        assert_eq!(ask(&mut stay, "count:room"), "count:room:1");
        assert_eq!(ask(&mut stay, "count:side"), "count:side:0");
        // A publish to its topics goes on without it.
        say(&mut stay, "pub:room:still here");
        assert_eq!(text(&mut stay), "pub:room:still here");
        say(&mut stay, "pub:side:nobody");
        nothing_pending(&mut stay, "side is empty");
    }
}

#[test]
fn a_publish_to_a_topic_nobody_holds_is_no_error_and_reaches_no_one() {
    let server = start(Config::default(), Rooms::default());
    let mut a = client(server.addr);
    let mut b = client(server.addr);
    hello(&mut a);
    hello(&mut b);
    assert_eq!(ask(&mut b, "sub:elsewhere"), "sub:elsewhere:true:1");
    assert_eq!(ask(&mut a, "count:nobody"), "count:nobody:0");
    assert_eq!(ask(&mut a, "unsub:nobody"), "unsub:nobody:false:0");
    for n in 0..100 {
        say(&mut a, &format!("pub:nobody:{n}"));
    }
    // From another thread too.
    server
        .remote()
        .publish("nobody", "from afar")
        .expect("a publish nobody hears is still accepted");
    nothing_pending(&mut a, "nobody");
    nothing_pending(&mut b, "nobody");
    // A topic that had subscribers and lost them is the same as one that never had any.
    assert_eq!(ask(&mut b, "unsub:elsewhere"), "unsub:elsewhere:true:0");
    say(&mut a, "pub:elsewhere:gone");
    nothing_pending(&mut b, "emptied");
    assert_eq!(ask(&mut a, "count:elsewhere"), "count:elsewhere:0");
}
