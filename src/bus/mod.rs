//! The in-process bus: how other threads and other loops reach a loop, and where a publish gets its place in the
//! one order every subscriber sees.
//!
//! The PHP tutorial had one loop and nothing outside it. Here each loop has an inbox: a queue behind a mutex and the
//! loop's `mio::Waker`. A thread (through [`Remote`](crate::Remote)) or another loop pushes a command and wakes the
//! loop if the inbox was empty; the loop takes the whole queue at once when it wakes (or at the end of a turn in
//! which it published) and carries the commands out in the order they were pushed.
//!
//! **One order.** A publish or broadcast is pushed into every loop's inbox under one lock (`order`), the publisher's
//! own loop included, and every loop delivers from its inbox in inbox order. So two publishes reach every inbox in
//! the same order, and every subscriber, on every loop, sees them in that order. The counters shared by all loops
//! (users, connection serials) are atomics here too; nothing here is touched per message unless the message is a
//! publish that crosses loops.
//!
//! **A relay** (`redis/`, behind the cargo feature `redis`) joins the loops of several nodes. With one, a
//! publish is handed to it instead of to the inboxes, and comes back through [`Bus::deliver`] in the relay's order,
//! on every node, the publisher's included.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use log::warn;
use mio::Waker;

use crate::error::RemoteError;
use crate::frame::OpCode;
use crate::handler::{Action, Outgoing};
use crate::metrics::Figures;

#[cfg(feature = "redis")]
pub(crate) mod redis;

/// Where publishes go when the loops of one process are not the whole server.
#[allow(dead_code)] // implemented only with the `redis` feature
pub(crate) trait Relay: Send + Sync {
    /// Takes a publish (`None`: a broadcast) to hand on; `Full` if it cannot keep one more.
    fn publish(
        &self,
        topic: Option<&str>,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), RemoteError>;
    /// A loop of this node now has a subscriber of `topic` (its first).
    fn hold(&self, topic: &str);
    /// A loop of this node no longer has any subscriber of `topic`.
    fn release(&self, topic: &str);
    /// A user's presence value, kept for other nodes to announce its departure if this node dies (`None`: it left).
    fn presence(&self, serial: u64, value: Option<&str>);
    /// Every loop has stopped: write what is kept (the departures of this node's users among it), end the helper
    /// threads, leave the other nodes. Bounded in time.
    fn finish(&self);
}

/// One loop's inbox.
struct Inbox {
    state: Mutex<InboxState>,
    waker: Waker,
}

#[derive(Default)]
struct InboxState {
    queue: VecDeque<Action>,
    /// Set by a stop: the loop shuts down when it sees it, and nothing more is taken from other threads.
    is_stopped: bool,
}

/// What the loops of one server share.
pub(crate) struct Bus {
    inboxes: Vec<Inbox>,
    /// Each loop's figures, which only that loop writes and anyone may read (`metrics/mod.rs`).
    figures: Vec<Arc<Figures>>,
    /// Held while a publish is pushed into every inbox: this is what gives publishes their one order.
    order: Mutex<()>,
    /// Commands from other threads an inbox holds at most (`Config::remote_queue`).
    capacity: usize,
    /// Handshaked connections on every loop (`max_users` is a limit for the whole server).
    users: AtomicUsize,
    /// The last connection serial handed out, so that ids are unique across loops.
    serial: AtomicU64,
    /// Handshaked connections of the other nodes, as the relay last counted them.
    remote_users: AtomicUsize,
    relay: OnceLock<Box<dyn Relay>>,
    /// Set by a stop: from then on every `Remote` call is refused.
    is_stopped: AtomicBool,
}

/// Who pushes: a thread through a `Remote` (bounded: it is told `Full`), or a loop (never refused: a loop cannot
/// wait, and a publish must reach every inbox or none).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Remote,
    Loop(usize),
    /// The relay, delivering: never refused, every loop woken.
    Relay,
}

fn lock(inbox: &Inbox) -> MutexGuard<'_, InboxState> {
    // A panic while holding this lock can only come from a push into a `VecDeque`; the queue is whole either way.
    inbox
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wake(inbox: &Inbox) {
    if let Err(e) = inbox.waker.wake() {
        warn!("could not wake a loop: {e}");
    }
}

impl Bus {
    pub fn new(wakers: Vec<Waker>, capacity: usize) -> Bus {
        Bus {
            figures: wakers.iter().map(|_| Arc::default()).collect(),
            inboxes: wakers
                .into_iter()
                .map(|waker| Inbox {
                    state: Mutex::new(InboxState::default()),
                    waker,
                })
                .collect(),
            order: Mutex::new(()),
            capacity,
            users: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
            remote_users: AtomicUsize::new(0),
            relay: OnceLock::new(),
            is_stopped: AtomicBool::new(false),
        }
    }

    /// Every loop's figures, in loop order.
    pub fn figures(&self) -> &[Arc<Figures>] {
        &self.figures
    }

    /// Joins this bus to other nodes through `relay`, before any loop runs. Connection ids start at `first_serial`.
    #[allow(dead_code)] // only with the `redis` feature
    pub fn set_relay(&self, relay: Box<dyn Relay>, first_serial: u64) {
        self.serial.store(first_serial, Ordering::Relaxed);
        if self.relay.set(relay).is_err() {
            warn!("a relay was set twice; the first stays");
        }
    }

    /// True once the server stops.
    pub fn is_stopped(&self) -> bool {
        self.is_stopped.load(Ordering::Acquire)
    }

    pub fn relay(&self) -> Option<&dyn Relay> {
        self.relay.get().map(|r| &**r)
    }

    /// True when a publish is delivered at once, by the loop that made it: one loop, no relay.
    pub fn is_direct(&self) -> bool {
        self.inboxes.len() == 1 && self.relay.get().is_none()
    }

    /// Hands a publish to the relay if there is one (`Some` with its answer), or says there is none.
    pub fn relay_publish<'m>(
        &self,
        topic: Option<&str>,
        msg: &Outgoing<'m>,
    ) -> Option<Result<(), RemoteError>> {
        let relay = self.relay.get()?;
        let (opcode, payload) = msg.parts();
        Some(relay.publish(topic, opcode, payload))
    }

    /// The relay's reader waits here while a loop is behind on its inbox (more than `remote_queue` commands wait):
    /// then the stream in Redis is the buffer, not this process's memory.
    #[allow(dead_code)] // only with the `redis` feature
    pub fn wait_for_room(&self, stopped: &AtomicBool) {
        while !stopped.load(Ordering::Acquire)
            && self
                .inboxes
                .iter()
                .any(|inbox| lock(inbox).queue.len() > self.capacity)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// A publish came back from the relay: into every loop's inbox, in the relay's order.
    #[allow(dead_code)] // only with the `redis` feature
    pub fn deliver(&self, topic: Option<String>, opcode: OpCode, payload: Vec<u8>) {
        let msg = match opcode {
            OpCode::Text => match String::from_utf8(payload) {
                Ok(text) => Outgoing::Text(text),
                Err(_) => return,
            },
            _ => Outgoing::Binary(payload),
        };
        let _ = self.publish(
            std::iter::once(Action::publish(topic.as_deref(), msg)),
            Source::Relay,
        );
    }

    /// A publish from before this node started, for the handlers alone ([`crate::Handler::published`]).
    #[allow(dead_code)] // only with the `redis` feature
    pub fn replay(&self, topic: Option<String>, opcode: OpCode, payload: Vec<u8>) {
        for to in 0..self.inboxes.len() {
            let action = Action::Replay(topic.clone(), opcode, payload.clone());
            let _ = self.push(to, action, Source::Relay);
        }
    }

    /// A user of a node that died: announced by the first loop's handler ([`crate::Handler::departed`]).
    #[allow(dead_code)] // only with the `redis` feature
    pub fn departed(&self, presence: String) {
        let _ = self.push(0, Action::Departed(presence), Source::Relay);
    }

    /// The other nodes' users, as the relay counted them.
    #[allow(dead_code)] // only with the `redis` feature
    pub fn set_remote_users(&self, n: usize) {
        self.remote_users.store(n, Ordering::Relaxed);
    }

    /// Handshaked connections on every node, as far as this one knows.
    pub fn all_users(&self) -> usize {
        self.users()
            .saturating_add(self.remote_users.load(Ordering::Relaxed))
    }

    /// Pushes a command for one loop.
    pub fn push(&self, to: usize, action: Action, from: Source) -> Result<(), RemoteError> {
        let Some(inbox) = self.inboxes.get(to) else {
            return Ok(()); // an id no loop of this server gave out: as for a connection that is gone
        };
        let mut state = lock(inbox);
        if from == Source::Remote {
            if state.is_stopped {
                return Err(RemoteError::Stopped);
            }
            if state.queue.len() >= self.capacity {
                return Err(RemoteError::Full);
            }
        } else if state.is_stopped {
            return Ok(()); // that loop is shutting down and will not read it
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(action);
        drop(state);
        if was_empty && from != Source::Loop(to) {
            wake(inbox);
        }
        Ok(())
    }

    /// Pushes commands in order, each into the inbox of the loop it is for and a publish or broadcast into every
    /// inbox, all under the order lock. From a thread, all or none: `Full` if any inbox is full.
    pub fn publish(
        &self,
        actions: impl ExactSizeIterator<Item = Action>,
        from: Source,
    ) -> Result<(), RemoteError> {
        let _order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let mut states: Vec<MutexGuard<'_, InboxState>> = self.inboxes.iter().map(lock).collect();
        if from == Source::Remote {
            if states.iter().any(|s| s.is_stopped) {
                return Err(RemoteError::Stopped);
            }
            if states
                .iter()
                .any(|s| s.queue.len() + actions.len() > self.capacity)
            {
                return Err(RemoteError::Full);
            }
        }
        let was_empty: Vec<bool> = states.iter().map(|s| s.queue.is_empty()).collect();
        for action in actions {
            match action {
                Action::Publish(topic, head, bytes) => {
                    for state in states.iter_mut().filter(|s| !s.is_stopped) {
                        state
                            .queue
                            .push_back(Action::Publish(topic.clone(), head, bytes.clone()));
                    }
                }
                Action::Send(id, ..) | Action::Close(id, ..) => {
                    if let Some(state) = states.get_mut(id.loop_index()) {
                        state.queue.push_back(action);
                    }
                }
                Action::Replay(..) | Action::Departed(_) => {
                    if let Some(state) = states.first_mut() {
                        state.queue.push_back(action);
                    }
                }
            }
        }
        let to_wake: Vec<bool> = states
            .iter()
            .zip(&was_empty)
            .map(|(s, &was)| was && !s.queue.is_empty())
            .collect();
        drop(states);
        for (i, inbox) in self.inboxes.iter().enumerate() {
            // The publishing loop takes its own inbox when it is done, without a wake-up.
            if to_wake[i] && from != Source::Loop(i) {
                wake(inbox);
            }
        }
        Ok(())
    }

    /// Takes everything waiting for loop `me` into `into`, in order. Returns true if the server is stopping.
    pub fn take(&self, me: usize, into: &mut VecDeque<Action>) -> bool {
        let Some(inbox) = self.inboxes.get(me) else {
            return true;
        };
        let mut state = lock(inbox);
        if into.is_empty() {
            mem::swap(into, &mut state.queue);
        } else {
            into.append(&mut state.queue);
        }
        state.is_stopped
    }

    /// Stops every loop: each drains what was pushed before, then shuts down. Further pushes from threads fail.
    pub fn stop(&self) {
        // The relay goes on until every loop has stopped: the departures of the last users still go through it.
        self.is_stopped.store(true, Ordering::Release);
        for inbox in &self.inboxes {
            let mut state = lock(inbox);
            if !state.is_stopped {
                state.is_stopped = true;
                drop(state);
                wake(inbox);
            }
        }
    }

    /// Counts one more handshaked connection, unless `max` are already open on all loops together.
    pub fn try_join(&self, max: usize) -> bool {
        self.users
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts one handshaked connection less.
    pub fn leave(&self) {
        self.users.fetch_sub(1, Ordering::AcqRel);
    }

    /// Handshaked connections on all loops.
    pub fn users(&self) -> usize {
        self.users.load(Ordering::Acquire)
    }

    /// The next connection serial: 1, 2, 3... across all loops.
    pub fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed) + 1
    }
}
