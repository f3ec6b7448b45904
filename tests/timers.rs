//! Application timers over a real loop: `Handle::after`, `Handle::every`, `Handle::cancel` and `Handler::timer`.
//!
//! A client sets timers with text commands (a timer can only be set from a callback); the handler reports every
//! call of `timer`, with its token and the moment it ran, through a channel the test reads. "Not early" is checked
//! against a moment taken on the test thread before the command was sent, which is before the loop's own clock for
//! that turn.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use common::{ask, client, start, Client, TestServer, TIMEOUT};
use wsloop::{Config, ConnId, Handle, Handler, Message, TimerId};

/// One call of `Handler::timer`.
#[derive(Debug)]
struct Fired {
    token: u64,
    at: Instant,
    /// `Handle::buffered` of the connection that set the timer with `queue-then-after`, when it fired.
    buffered: Option<usize>,
}

/// The timer application. Commands, each answered to its sender:
///
/// - `after:MS:TOKEN`, `every:MS:TOKEN` set a timer (answer `set:TOKEN`); `cancel:TOKEN` answers
///   `cancel:TOKEN:RESULT`;
/// - `many:N:MS` sets N one-shot timers, tokens 0..N, with delays spread over 0..MS milliseconds;
/// - `chain:MS:TOKEN:NEXT` sets TOKEN, whose callback sets NEXT (after MS again);
/// - `every-n:MS:TOKEN:N`: a repeating timer that cancels itself from its own callback on its Nth call;
/// - `spin:TOKEN`: a zero-delay timer that sets itself again from its own callback, until `unspin` (answered with
///   how many times it ran; spins are not reported one by one);
/// - `queue-then-after:TOKEN` queues a message to its sender, then sets a zero-delay timer; its call reports how
///   many bytes of that message were still unwritten;
/// - anything else comes back as it is.
#[derive(Default)]
struct Clock {
    fired: Option<Sender<Fired>>,
    ids: HashMap<u64, TimerId>,
    chains: HashMap<u64, (Duration, u64)>,
    limits: HashMap<u64, u32>,
    spinning: Option<u64>,
    spins: u64,
    watched: Option<ConnId>,
}

fn number(field: Option<&str>) -> u64 {
    field
        .and_then(|f| f.parse().ok())
        .expect("a number in the command")
}

impl Handler for Clock {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        let mut fields = text.split(':');
        let command = fields.next().unwrap_or_default();
        let reply = match command {
            "after" | "every" | "chain" | "every-n" => {
                let delay = Duration::from_millis(number(fields.next()));
                let token = number(fields.next());
                let timer = if command == "after" || command == "chain" {
                    ws.after(delay, token)
                } else {
                    ws.every(delay, token)
                };
                self.ids.insert(token, timer);
                match command {
                    "chain" => {
                        self.chains.insert(token, (delay, number(fields.next())));
                    }
                    "every-n" => {
                        self.limits.insert(token, number(fields.next()) as u32);
                    }
                    _ => {}
                }
                format!("set:{token}")
            }
            "cancel" => {
                let token = number(fields.next());
                let timer = *self.ids.get(&token).expect("a timer this test set");
                format!("cancel:{token}:{}", ws.cancel(timer))
            }
            "many" => {
                let n = number(fields.next());
                let spread = number(fields.next());
                for token in 0..n {
                    ws.after(Duration::from_millis(delay_of(token, spread)), token);
                }
                format!("many:{n}")
            }
            "spin" => {
                let token = number(fields.next());
                self.spinning = Some(token);
                ws.after(Duration::ZERO, token);
                format!("set:{token}")
            }
            "queue-then-after" => {
                let token = number(fields.next());
                ws.send(id, "queued");
                self.watched = Some(id);
                ws.after(Duration::ZERO, token);
                return;
            }
            "unspin" => {
                self.spinning = None;
                format!("spins:{}", self.spins)
            }
            _ => text.to_string(),
        };
        ws.send(id, reply);
    }

    fn timer(&mut self, ws: &mut Handle<'_>, token: u64) {
        if self.spinning == Some(token) {
            self.spins += 1;
            ws.after(Duration::ZERO, token);
            return;
        }
        if let Some(fired) = &self.fired {
            let _ = fired.send(Fired {
                token,
                at: Instant::now(),
                buffered: self.watched.and_then(|id| ws.buffered(id)),
            });
        }
        if let Some((delay, next)) = self.chains.remove(&token) {
            ws.after(delay, next);
        }
        if let Some(left) = self.limits.get_mut(&token) {
            *left -= 1;
            if *left == 0 {
                let timer = self.ids[&token];
                assert!(ws.cancel(timer), "a repeating timer cancels itself");
                assert!(!ws.cancel(timer), "and only once");
            }
        }
    }
}

/// The delay of timer `token` of `many:N:SPREAD`: spread over `0..spread` ms, in no particular order.
fn delay_of(token: u64, spread: u64) -> u64 {
    token * 7919 % spread
}

fn clock() -> (TestServer, Client, Receiver<Fired>) {
    let (fired, reports) = mpsc::channel();
    let server = start(
        Config::default(),
        Clock {
            fired: Some(fired),
            ..Clock::default()
        },
    );
    let ws = client(server.addr);
    (server, ws, reports)
}

fn next(reports: &Receiver<Fired>) -> Fired {
    reports.recv_timeout(TIMEOUT).expect("a timer fires")
}

/// Sets a sentinel one-shot timer after `ms` and returns every call reported before it (the sentinel excluded).
fn until_sentinel(ws: &mut Client, reports: &Receiver<Fired>, ms: u64) -> Vec<u64> {
    const SENTINEL: u64 = 999_999;
    assert_eq!(
        ask(ws, &format!("after:{ms}:{SENTINEL}")),
        format!("set:{SENTINEL}")
    );
    let mut before = Vec::new();
    for _ in 0..100_000 {
        match next(reports).token {
            SENTINEL => return before,
            token => before.push(token),
        }
    }
    panic!("no sentinel");
}

#[test]
fn after_fires_once_with_its_token_and_not_early() {
    let (_server, mut ws, reports) = clock();
    let t0 = Instant::now();
    assert_eq!(ask(&mut ws, "after:50:42"), "set:42");
    let fired = next(&reports);
    assert_eq!(fired.token, 42);
    assert!(fired.at >= t0 + Duration::from_millis(50), "fired early");
    // Once: nothing more of it before a later timer, and it can no longer be cancelled.
    assert_eq!(until_sentinel(&mut ws, &reports, 150), Vec::<u64>::new());
    assert_eq!(ask(&mut ws, "cancel:42"), "cancel:42:false");
}

#[test]
fn every_fires_again_and_again_until_cancelled() {
    let (_server, mut ws, reports) = clock();
    let t0 = Instant::now();
    assert_eq!(ask(&mut ws, "every:20:7"), "set:7");
    for k in 1..=5 {
        let fired = next(&reports);
        assert_eq!(fired.token, 7);
        assert!(
            fired.at >= t0 + Duration::from_millis(20 * k),
            "call {k} came before {k} periods"
        );
    }
    assert_eq!(ask(&mut ws, "cancel:7"), "cancel:7:true");
    assert_eq!(ask(&mut ws, "cancel:7"), "cancel:7:false");
    // Calls made before the cancel are already in the channel (reported before the answer was sent); none after:
    // in the 200 ms before the sentinel it would have been due ten times.
    while reports.try_recv().is_ok() {}
    assert_eq!(until_sentinel(&mut ws, &reports, 200), Vec::<u64>::new());
}

#[test]
fn a_repeating_timer_can_cancel_itself_from_its_own_callback() {
    let (_server, mut ws, reports) = clock();
    assert_eq!(ask(&mut ws, "every-n:10:8:3"), "set:8");
    // Its three calls first, however late the loop comes to them; then nothing before a later timer, though a
    // fourth call would have been due long before it.
    for _ in 0..3 {
        assert_eq!(next(&reports).token, 8);
    }
    assert_eq!(until_sentinel(&mut ws, &reports, 100), Vec::<u64>::new());
}

#[test]
fn a_cancelled_timer_never_fires() {
    let (_server, mut ws, reports) = clock();
    assert_eq!(ask(&mut ws, "after:100:5"), "set:5");
    assert_eq!(ask(&mut ws, "cancel:5"), "cancel:5:true");
    assert_eq!(ask(&mut ws, "cancel:5"), "cancel:5:false");
    assert_eq!(until_sentinel(&mut ws, &reports, 300), Vec::<u64>::new());
    // The loop serves on.
    assert_eq!(ask(&mut ws, "echo"), "echo");
}

#[test]
fn five_thousand_timers_each_fire_exactly_once_and_none_early() {
    const N: u64 = 5_000;
    const SPREAD: u64 = 500;
    let (_server, mut ws, reports) = clock();
    let t0 = Instant::now();
    assert_eq!(
        ask(&mut ws, &format!("many:{N}:{SPREAD}")),
        format!("many:{N}")
    );
    let mut seen = HashSet::new();
    let mut last_delay = 0;
    for n in 0..N {
        let fired = next(&reports);
        assert!(fired.token < N, "call {n}: token {}", fired.token);
        assert!(
            seen.insert(fired.token),
            "token {} fired twice",
            fired.token
        );
        let delay = delay_of(fired.token, SPREAD);
        assert!(
            fired.at >= t0 + Duration::from_millis(delay),
            "token {} fired early",
            fired.token
        );
        // All were set in one callback, so they come due in the order of their delays.
        assert!(
            delay >= last_delay,
            "token {} ({delay} ms) came after one of {last_delay} ms",
            fired.token
        );
        last_delay = delay;
    }
    // Due in at most 500 ms, all fired once: nothing more comes before a later sentinel.
    assert_eq!(until_sentinel(&mut ws, &reports, 100), Vec::<u64>::new());
}

#[test]
fn a_timer_set_from_inside_timer_fires() {
    let (_server, mut ws, reports) = clock();
    let t0 = Instant::now();
    assert_eq!(ask(&mut ws, "chain:30:1:2"), "set:1");
    let first = next(&reports);
    assert_eq!(first.token, 1);
    let second = next(&reports);
    assert_eq!(second.token, 2);
    assert!(first.at >= t0 + Duration::from_millis(30));
    assert!(
        second.at >= first.at + Duration::from_millis(30),
        "the second was set from the first's callback, 30 ms after it"
    );
}

/// A timer set from `timer` never fires in the turn that set it: a zero-delay timer that sets itself again from its
/// own callback runs again and again, and between its calls the loop still reads and answers its clients. (Were
/// it run in the same turn, the loop would never get back to `poll`, and the echo would time out.)
#[test]
fn a_zero_delay_timer_that_sets_itself_again_does_not_starve_the_loop() {
    let (server, mut ws, _reports) = clock();
    assert_eq!(ask(&mut ws, "spin:3"), "set:3");
    for n in 0..20 {
        assert_eq!(ask(&mut ws, &format!("echo {n}")), format!("echo {n}"));
    }
    let spins = ask(&mut ws, "unspin");
    let spins: u64 = spins
        .strip_prefix("spins:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{spins:?}"));
    assert!(spins >= 2, "the timer ran {spins} times");
    // Stopped, it leaves the loop to its clients, old and new.
    assert_eq!(ask(&mut ws, "done"), "done");
    let mut other = client(server.addr);
    assert_eq!(ask(&mut other, "new"), "new");
}

/// A zero-delay timer set from `send` runs at the soonest on the loop's next turn (the doc of `Handle::after`), so
/// after the turn that set it has written what its callbacks queued: the message queued just before the timer was
/// set is no longer in the connection's buffer when the timer runs.
#[test]
fn a_zero_delay_timer_set_from_send_runs_on_a_later_turn() {
    let (_server, mut ws, reports) = clock();
    common::say(&mut ws, "queue-then-after:9");
    let fired = next(&reports);
    assert_eq!(common::text(&mut ws), "queued");
    assert_eq!(fired.token, 9);
    assert_eq!(
        fired.buffered,
        Some(0),
        "the timer ran before the turn that set it had written the message queued before it"
    );
}
