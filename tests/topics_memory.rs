//! 10,000 topics created and emptied leave no memory behind: once by unsubscribing, once by closing.
//!
//! The server runs in this process, and a counting global allocator keeps the live bytes of the whole process.
//! That is why this test is a binary of its own, with one test in it: any other test running beside it would move
//! the count.
//!
//! **Why the bound can fail.** The check is that live bytes come back to within [`SLACK`] (16 KiB) of where they
//! were before the topics existed. 10,000 topics that each left 16 bytes behind would leave 160,000 bytes, ten
//! times the slack; even 2 bytes a topic (20,000) is over it. Maps that kept their room once emptied would keep far
//! more: a `HashMap` with room for 10,000 topics holds 16,384 buckets of at least 24 bytes each (a name and a set),
//! about 400 KB. And to show that the count sees the server's allocations at all, the test first checks that the
//! 10,000 subscriptions raised live bytes by more than ten times the slack.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{ask, client, close_and_wait, next_close, start, text, Event};
use wsloop::{Closed, Config, ConnId, Context, Handle, Handler, Message};

/// Counts the bytes allocated and not yet freed, by every thread of the process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to `System` unchanged; the counter is only bookkeeping beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Topics in each round.
const TOPICS: usize = 10_000;
/// How far above the baseline live bytes may stay once the topics are gone (see the module doc).
const SLACK: isize = 16 << 10;

fn live() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// Subscribes (`subs:PREFIX`) or unsubscribes (`unsubs:PREFIX`) its sender to `PREFIX-0` .. `PREFIX-9999` in one
/// callback, and answers with how many calls returned true; so the traffic is one small message whatever the count.
/// On `add` it reports the id, on `close` how many hold `PREFIX-0` for the prefixes it saw.
struct Bulk {
    events: mpsc::Sender<Event>,
    prefixes: Vec<String>,
}

impl Handler for Bulk {
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, _: &Context<'_>) {
        ws.send(id, "hello");
        let _ = self.events.send(Event::Added(id));
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let reply = match text.split_once(':') {
            Some(("subs", prefix)) => {
                if !self.prefixes.iter().any(|p| p == prefix) {
                    self.prefixes.push(prefix.to_string());
                }
                let ok = (0..TOPICS)
                    .filter(|i| ws.subscribe(id, &format!("{prefix}-{i}")))
                    .count();
                format!("subs:{ok}:{}", ws.subscribers(&format!("{prefix}-0")))
            }
            Some(("unsubs", prefix)) => {
                let ok = (0..TOPICS)
                    .filter(|i| ws.unsubscribe(id, &format!("{prefix}-{i}")))
                    .count();
                format!("unsubs:{ok}:{}", ws.subscribers(&format!("{prefix}-0")))
            }
            _ => text.to_string(),
        };
        ws.send(id, reply);
    }

    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, closed: Closed<'_>) {
        let code = closed.status();
        let subscribers = self
            .prefixes
            .iter()
            .map(|p| (p.clone(), ws.subscribers(&format!("{p}-0"))))
            .collect();
        let _ = self.events.send(Event::Closed {
            id,
            code,
            subscribers,
        });
    }
}

/// Waits (bounded) for live bytes to come back to within [`SLACK`] of `baseline`; frees that follow a reply (a
/// written frame's buffer) may trail it a little.
fn assert_back_to(baseline: isize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let extra = live() - baseline;
        if extra <= SLACK {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {extra} bytes more than before the topics ({} a topic), over the {SLACK} allowed",
            extra / TOPICS as isize
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ten_thousand_topics_created_and_emptied_leave_no_memory_behind() {
    let (events, reports) = mpsc::channel();
    let bulk = Bulk {
        events,
        prefixes: Vec::with_capacity(8),
    };
    let server = start(Config::default(), bulk);
    let (mut a, _) = join_bulk(server.addr, &reports);

    // Warm up every path once, small, so that buffers that are kept on purpose (the pool's slots, the maps' first
    // few buckets, the clients' read buffers) are in the baseline: a round through unsubscribing and a connection
    // that subscribes and closes.
    for prefix in ["warm", "gone"] {
        assert_eq!(
            ask(&mut a, &format!("subs:{prefix}")),
            format!("subs:{TOPICS}:1")
        );
        assert_eq!(
            ask(&mut a, &format!("unsubs:{prefix}")),
            format!("unsubs:{TOPICS}:0")
        );
    }
    let (mut b, _) = join_bulk(server.addr, &reports);
    assert_eq!(ask(&mut b, "subs:warm"), format!("subs:{TOPICS}:1"));
    close_and_wait(b);
    next_close(&reports);
    // A round trip through the loop: by its answer, the loop is done with the closed connection.
    assert_eq!(ask(&mut a, "sync"), "sync");

    // Round one: subscribe and unsubscribe.
    let baseline = live();
    assert_eq!(ask(&mut a, "subs:one"), format!("subs:{TOPICS}:1"));
    let held = live() - baseline;
    assert!(
        held > 10 * SLACK,
        "10,000 topics should take memory the count can see; they took {held} bytes"
    );
    assert_eq!(ask(&mut a, "unsubs:one"), format!("unsubs:{TOPICS}:0"));
    assert_back_to(baseline, "after unsubscribing from 10,000 topics");

    // Round two: subscribe, then close. The close callback already sees the topics empty.
    let baseline = live();
    let (mut b, b_id) = join_bulk(server.addr, &reports);
    assert_eq!(ask(&mut b, "subs:two"), format!("subs:{TOPICS}:1"));
    close_and_wait(b);
    let (id, _, subscribers) = next_close(&reports);
    assert_eq!(id, b_id);
    assert!(
        subscribers.iter().all(|(_, n)| *n == 0),
        "in the close callback: {subscribers:?}"
    );
    assert_eq!(ask(&mut a, "sync"), "sync");
    assert_back_to(baseline, "after a connection holding 10,000 topics closed");
}

/// Connects a client to the [`Bulk`] server and waits for its `add`.
fn join_bulk(
    addr: std::net::SocketAddr,
    reports: &mpsc::Receiver<Event>,
) -> (common::Client, ConnId) {
    let mut ws = client(addr);
    assert_eq!(text(&mut ws), "hello");
    match reports.recv_timeout(common::TIMEOUT) {
        Ok(Event::Added(id)) => (ws, id),
        other => panic!("expected an add, got {other:?}"),
    }
}
