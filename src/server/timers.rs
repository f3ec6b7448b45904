//! Deadlines. mio has no timers, so each connection keeps one deadline and the poll waits until the nearest.
//!
//! The PHP loop slept a second per turn and had no timeouts at all. Here a binary heap holds (deadline, slab key,
//! connection serial); an entry whose connection is gone or whose deadline has since moved is skipped when it comes
//! up, so arming a new deadline never has to find and remove the old one. The application's timers
//! ([`Handle::after`](crate::Handle::after), [`Handle::every`](crate::Handle::every)) share the heap, under the key
//! [`APP`] and their own id, and are skipped the same way once cancelled.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::mem;
use std::time::{Duration, Instant};

use log::{debug, info};

use super::outbound::trace_frame;
use super::Server;
use crate::close::{ClosedBy, End};
use crate::error::FrameError;
use crate::frame::{self, OpCode};
use crate::handler::Handler;

/// The heap key of an application timer (connection keys are slab keys, which never come near it).
const APP: usize = usize::MAX;

/// Identifies an application timer, to cancel it. It names the loop that set it, so that cancelling it on another
/// loop cancels nothing there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

/// A delay too long for the clock (`Duration::MAX`, say) is taken as this long: for a timer, never.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + delay`, without the overflow panic of `Instant + Duration`.
pub(crate) fn later(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .or_else(|| now.checked_add(NEVER))
        .unwrap_or(now)
}

/// An application timer: when it is next due, how often it repeats, and what it hands to the callback.
struct AppTimer {
    at: Instant,
    period: Option<Duration>,
    token: u64,
}

/// Every deadline of one loop: the connections' and the application's, in one heap.
#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    app: HashMap<u64, AppTimer>,
    last_id: u64,
    /// The loop's index, in the high 16 bits of every id it gives out.
    loop_bits: u64,
    /// Heap entries of cancelled application timers, waiting to come up and be skipped.
    cancelled: usize,
    /// The entries due in this turn, taken off the heap before any is handled (a buffer kept between turns).
    due: Vec<(Instant, usize, u64)>,
}

impl Timers {
    /// The timers of loop `loop_index`.
    pub fn new(loop_index: usize) -> Timers {
        Timers {
            loop_bits: (loop_index as u64 & 0xffff) << 48,
            ..Timers::default()
        }
    }

    /// Sets an application timer, due `delay` after `now`.
    pub fn start(
        &mut self,
        now: Instant,
        delay: Duration,
        period: Option<Duration>,
        token: u64,
    ) -> TimerId {
        let at = later(now, delay);
        self.last_id += 1;
        let id = self.loop_bits | (self.last_id & ((1 << 48) - 1));
        self.app.insert(id, AppTimer { at, period, token });
        self.heap.push(Reverse((at, APP, id)));
        TimerId(id)
    }

    /// Cancels an application timer; its heap entry is skipped when it comes up, unless so many wait to be skipped
    /// that the heap is rebuilt without them (timers of an hour set and cancelled by every connection, say).
    pub fn cancel(&mut self, id: TimerId) -> bool {
        if self.app.remove(&id.0).is_none() {
            return false;
        }
        self.cancelled += 1;
        if self.cancelled > 64 && self.cancelled > 2 * self.app.len() {
            let app = &self.app;
            self.heap
                .retain(|Reverse((_, key, id))| *key != APP || app.contains_key(id));
            self.cancelled = 0;
        }
        if self.app.len() * 4 < self.app.capacity() && self.app.capacity() > 64 {
            self.app.shrink_to(self.app.len() * 2);
        }
        true
    }

    fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }
}

impl Server {
    /// Timers: a slowloris that never finishes its handshake, an idle peer to ping, a close that never completes.
    pub(super) fn on_timeout<H: Handler>(&mut self, handler: &mut H, key: usize) {
        let conn = &mut self.conns[key];
        let id = conn.id;
        if !conn.is_handshaked && conn.closing.is_none() {
            info!(
                "{id} from {} did not complete its handshake in time; dropping it",
                conn.peer
            );
            return self.close(handler, key, End::DROPPED);
        }
        if conn.closing.is_some() {
            debug!("{id} closing handshake timed out");
            return self.close(handler, key, End::DROPPED);
        }
        let message_due = conn.message_since.zip(self.config.message_timeout);
        if let Some((since, limit)) =
            message_due.filter(|&(since, limit)| since + limit <= self.now)
        {
            // What has arrived of the message is dropped at once; the peer gets 1008 and the close timeout.
            debug!("{id} began a message {:?} ago", self.now - since);
            conn.inbound.reset();
            conn.message_since = None;
            self.count_inbound(key); // down, never over the budget
            return self.fail(handler, key, FrameError::MessageTimeout(limit));
        }
        let message_due = message_due.map(|(since, limit)| since + limit);
        let Some(idle) = self.config.idle_timeout else {
            if let Some(due) = message_due {
                self.arm(key, due);
            }
            return;
        };
        // The next deadline is the nearer of the idle timer's and the message timeout's.
        let next = |at: Instant| message_due.map_or(at, |due| due.min(at));
        let quiet_until = conn.last_seen + idle;
        if quiet_until > self.now {
            self.arm(key, next(quiet_until));
        } else if conn.is_awaiting_pong {
            info!("{id} answered no ping in {idle:?}; dropping it");
            let timeout = End {
                by: ClosedBy::Timeout,
                ..End::DROPPED
            };
            self.close(handler, key, timeout);
        } else {
            let mut ping = Vec::new();
            frame::encode(&mut ping, true, OpCode::Ping, b"wsloop");
            trace_frame(id, ">", &ping);
            conn.push_control(ping);
            conn.is_awaiting_pong = true;
            self.arm(key, next(self.now + idle));
            self.mark_dirty(key);
        }
    }

    pub(super) fn fire_timers<H: Handler>(&mut self, handler: &mut H) {
        // What is due is taken off the heap first: a timer set while these run (a timer that sets another, a
        // repeating one) is due in a later turn at the soonest, so no callback can keep this loop here.
        let mut due = mem::take(&mut self.timers.due);
        while let Some(&Reverse(entry)) = self.timers.heap.peek() {
            // Due strictly before this turn's clock: one set during this turn for "now" (a zero delay) waits for
            // the next turn, after this one's writes.
            if entry.0 >= self.now {
                break;
            }
            self.timers.heap.pop();
            due.push(entry);
        }
        for (at, key, serial) in due.drain(..) {
            if key == APP {
                self.fire_app_timer(handler, at, serial);
                continue;
            }
            // Timers are never removed, only superseded: an entry counts only if it is the connection's deadline.
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.id.get() != serial || conn.deadline != Some(at) {
                continue;
            }
            conn.deadline = None;
            self.on_timeout(handler, key);
        }
        self.timers.due = due;
        if self
            .accept_paused_until
            .is_some_and(|until| until <= self.now)
        {
            self.accept_paused_until = None;
            self.add_accept();
        }
        if self
            .stopping_since
            .is_some_and(|since| since + self.config.close_timeout <= self.now)
        {
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                self.close(handler, key, End::SHUTDOWN);
            }
        }
    }

    /// An application timer came up: call the handler unless it was cancelled; set a repeating one again.
    fn fire_app_timer<H: Handler>(&mut self, handler: &mut H, at: Instant, id: u64) {
        let Some(timer) = self.timers.app.get_mut(&id).filter(|t| t.at == at) else {
            return; // cancelled
        };
        let token = timer.token;
        match timer.period {
            Some(period) => {
                // Catch up by skipping, not by firing again and again: the next call is a period after this one,
                // or a period from now if the loop came that late.
                let next = later(at, period);
                timer.at = if next > self.now {
                    next
                } else {
                    later(self.now, period)
                };
                let next = timer.at;
                self.timers.heap.push(Reverse((next, APP, id)));
            }
            None => {
                self.timers.app.remove(&id);
            }
        }
        handler.timer(&mut self.handle(), token);
        self.apply_actions(handler);
    }

    /// How long `poll` may wait: until the nearest deadline, or forever if there is none.
    pub(super) fn next_timeout(&self) -> Option<Duration> {
        let timers = self.timers.next();
        let stop = self
            .stopping_since
            .map(|since| since + self.config.close_timeout);
        #[cfg(feature = "metrics")]
        let stats = self.stats_due;
        #[cfg(not(feature = "metrics"))]
        let stats = None;
        [timers, stop, self.accept_paused_until, stats]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Sets a connection's one deadline; the previous one, if any, is superseded.
    pub(super) fn arm(&mut self, key: usize, at: Instant) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.deadline = Some(at);
            self.timers.heap.push(Reverse((at, key, conn.id.get())));
        }
    }
}
