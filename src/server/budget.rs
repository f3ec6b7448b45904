//! The memory budget ([`Config::max_memory`](crate::Config::max_memory)): what the loop's connections hold beyond
//! their fixed size, counted, and the connections holding the most closed when the count passes the loop's share.
//!
//! The PHP loop had no such thing: each client could hold whatever it sent. Here each connection records what it
//! holds in two places, each updated where it changes: `Connection::held_in` (its read buffer and the fragments of
//! its message arriving, by capacity) after `receive`, and its queue's `counted` (what is still queued after a write
//! attempt) after the queue is written. The loop keeps their sum, by the difference at each update, with no atomics
//! (each loop counts its own connections). An update that changes nothing costs one compare, which is what a short
//! message decoded from the shared read buffer and written at once costs: its connection holds nothing either way.
//!
//! Only when the sum passes the budget is the slab walked, to find the largest holders: see [`victims`].

use log::warn;

use super::Server;
use crate::close::{ClosedBy, End};
use crate::connection::Closing;
use crate::error::close_code;
use crate::handler::Handler;

/// A connection holding less than this is never closed for the budget: a small chatter never pays for the others.
pub(crate) const MIN_VICTIM: usize = 64 << 10;

/// The close reason of a connection whose message arriving is dropped for the budget.
const TOO_LARGE: &str = "message too large for the server's memory budget";
/// The close reason of a connection whose queue is dropped for the budget (as for `max_buffered`).
const TOO_SLOW: &str = "too slow to read what it is sent";

/// One loop's count against its share of the budget.
#[derive(Debug)]
pub(crate) struct Memory {
    /// The loop's share of `max_memory`.
    pub limit: usize,
    /// What the loop's connections hold, as last recorded.
    pub held: usize,
    /// The part of `held` that is queued for peers.
    pub out: usize,
    /// A growth past this looks for connections to close: `limit`, or, after a look that could not bring the count
    /// under it (the rest held by connections under `MIN_VICTIM`, or by ones already closing), the count then plus
    /// `MIN_VICTIM`, so that the slab is not walked again for every byte that arrives meanwhile.
    check_above: usize,
}

impl Memory {
    pub fn new(limit: usize) -> Memory {
        Memory {
            limit,
            held: 0,
            out: 0,
            check_above: limit,
        }
    }

    /// One connection's record went from `was` to `now`. True if the count is now over the budget (and due for a
    /// look for connections to close).
    #[inline]
    pub fn change(&mut self, was: usize, now: usize) -> bool {
        if now > was {
            self.held += now - was;
            self.held > self.check_above
        } else {
            self.held -= was - now;
            if self.held <= self.limit {
                self.check_above = self.limit;
            }
            false
        }
    }

    /// A connection's queue went from `was` to `now` bytes ([`Memory::change`], for the outbound side).
    #[inline]
    pub fn change_out(&mut self, was: usize, now: usize) -> bool {
        self.out = self.out + now - was;
        self.change(was, now)
    }

    /// A look for connections to close is over: the next one is due when the count grows past the budget again, or,
    /// if it is still over, by `MIN_VICTIM` more.
    fn looked(&mut self) {
        self.check_above = if self.held > self.limit {
            self.held.saturating_add(MIN_VICTIM)
        } else {
            self.limit
        };
    }
}

/// Which connections to close to bring `held` bytes down to `limit` or under: the largest holders first, and none
/// holding less than `floor`. `holders` lists (slab key, bytes held); it is sorted in place, and the ones chosen are
/// returned from its front. If closing every holder of `floor` or more is not enough, all of them are chosen.
pub(crate) fn victims(
    holders: &mut [(usize, usize)],
    held: usize,
    limit: usize,
    floor: usize,
) -> &[(usize, usize)] {
    // Largest first; between equals, the older slab slot (the order does not matter, only that it is fixed).
    holders.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut left = held;
    let mut chosen = 0;
    for &(_, bytes) in holders.iter() {
        if left <= limit || bytes < floor {
            break;
        }
        left = left.saturating_sub(bytes);
        chosen += 1;
    }
    &holders[..chosen]
}

impl Server {
    /// Records what connection `key` now holds of a message arriving (after `receive`, or after its message was
    /// dropped). True if that took the loop over its budget: the caller then calls [`Server::enforce_budget`].
    #[inline]
    pub(super) fn count_inbound(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let now = conn.inbound.held();
        if now == conn.held_in {
            return false;
        }
        let was = std::mem::replace(&mut conn.held_in, now);
        self.memory.change(was, now)
    }

    /// Records what is queued for connection `key` now that its unsent data was discarded (a count can only go
    /// down there). Only where its queue still exists: a write that empties it takes its count with it, so
    /// `flush_dirty` reads the count before writing.
    pub(super) fn recount_outbound(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (was, now) = (conn.counted_out(), conn.buffered());
        conn.set_counted_out(now);
        self.memory.change_out(was, now);
    }

    /// A connection goes: what it was counted for goes with it.
    pub(super) fn uncount(&mut self, held_in: usize, counted_out: usize) {
        self.memory.change(held_in, 0);
        self.memory.change_out(counted_out, 0);
    }

    /// The loop holds more than its budget: close the connections holding the most until it no longer does (or no
    /// open connection holds `MIN_VICTIM` or more). Walks the slab; it only runs when the count is over the budget.
    #[cold]
    #[inline(never)]
    pub(super) fn enforce_budget<H: Handler>(&mut self, handler: &mut H) {
        // Only open connections are closed for the budget: one already closing lets go of what it holds when its
        // close completes (within `close_timeout`), whatever is done to it now.
        let mut holders: Vec<(usize, usize)> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.is_open())
            .map(|(key, conn)| (key, conn.held_in + conn.counted_out()))
            .filter(|&(_, held)| held >= MIN_VICTIM)
            .collect();
        let chosen = victims(
            &mut holders,
            self.memory.held,
            self.memory.limit,
            MIN_VICTIM,
        )
        .len();
        for &(key, _) in &holders[..chosen] {
            self.close_over_budget(handler, key);
        }
        self.memory.looked();
    }

    /// Closes an open connection for the budget, and lets go of what it held at once: the message arriving is
    /// dropped (close 1009) or, if what it holds is mostly what it has not read, its unsent data (close 1008, as for
    /// a slow reader). Only the part of a frame already going out stays, so that the close frame follows a whole one.
    fn close_over_budget<H: Handler>(&mut self, handler: &mut H, key: usize) {
        let (limit, loop_held) = (self.memory.limit, self.memory.held);
        // The `close` callback of a victim before this one may have closed this one already.
        let Some(conn) = self.conns.get_mut(key).filter(|conn| conn.is_open()) else {
            return;
        };
        let (inbound, outbound) = (conn.held_in, conn.counted_out());
        let is_slow_reader = outbound > inbound;
        // Nothing more of this connection will be decoded: what had arrived of its message goes now.
        conn.inbound.reset();
        conn.message_since = None;
        let (code, reason) = if is_slow_reader {
            conn.discard_unsent();
            (close_code::POLICY_VIOLATION, TOO_SLOW)
        } else {
            (close_code::MESSAGE_TOO_BIG, TOO_LARGE)
        };
        self.recount_outbound(key);
        self.count_inbound(key);
        self.stats.over_budget += 1;
        self.fig.over_budget.add(1);
        let conn = &self.conns[key];
        warn!(
            "{} from {} over the memory budget: it held {} bytes ({inbound} of a message arriving, {outbound} queued \
             for it) of the {loop_held} this loop held, over its {limit}; closing with {code}, {} bytes still held \
             ({} connections closed for the budget so far)",
            conn.id,
            conn.peer,
            inbound + outbound,
            self.memory.held,
            self.stats.over_budget
        );
        let end = End {
            by: ClosedBy::OverBudget,
            code: Some(code),
            reason,
        };
        self.close_with(handler, key, Closing::Done, end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn keys(chosen: &[(usize, usize)]) -> Vec<usize> {
        chosen.iter().map(|&(key, _)| key).collect()
    }

    #[test]
    fn the_largest_holders_go_first_until_the_count_is_back_under_the_budget() {
        let mut holders = [
            (1, 300 * KIB),
            (2, 5000 * KIB),
            (3, 80 * KIB),
            (4, 2000 * KIB),
        ];
        let held = 7380 * KIB;
        // 380 KiB over: the largest alone brings it under.
        assert_eq!(
            keys(victims(&mut holders, held, 7000 * KIB, MIN_VICTIM)),
            [2]
        );
        // 5380 KiB over: the two largest.
        assert_eq!(
            keys(victims(&mut holders, held, 2000 * KIB, MIN_VICTIM)),
            [2, 4]
        );
        // Exactly at the budget is under it.
        assert_eq!(
            keys(victims(&mut holders, held, 380 * KIB, MIN_VICTIM)),
            [2, 4]
        );
        assert_eq!(
            keys(victims(&mut holders, held, 379 * KIB, MIN_VICTIM)),
            [2, 4, 1]
        );
        // Under the budget: nobody.
        assert!(victims(&mut holders, held, held, MIN_VICTIM).is_empty());
    }

    #[test]
    fn a_connection_under_the_floor_is_never_chosen() {
        // Every holder under the floor: nothing can be done, however far over the count is.
        let mut chatters: Vec<(usize, usize)> = (0..1000).map(|key| (key, 63 * KIB)).collect();
        assert!(victims(&mut chatters, 63_000 * KIB, 1000 * KIB, MIN_VICTIM).is_empty());
        // One large holder among them: it goes, and the chatters stay even though the count is still over.
        chatters.push((5000, 10_000 * KIB));
        let chosen = victims(&mut chatters, 73_000 * KIB, 1000 * KIB, MIN_VICTIM);
        assert_eq!(keys(chosen), [5000]);
        // The floor itself may be chosen.
        let mut holders = [(7, MIN_VICTIM), (8, MIN_VICTIM - 1)];
        assert_eq!(
            keys(victims(&mut holders, 2 * MIN_VICTIM, 0, MIN_VICTIM)),
            [7]
        );
    }

    #[test]
    fn between_equal_holders_the_choice_is_fixed() {
        let mut holders = [(9, 100 * KIB), (3, 100 * KIB), (6, 100 * KIB)];
        assert_eq!(
            keys(victims(&mut holders, 300 * KIB, 150 * KIB, MIN_VICTIM)),
            [3, 6]
        );
    }

    #[test]
    fn the_count_looks_again_only_after_real_growth_while_nothing_more_can_be_closed() {
        let mut memory = Memory::new(1000 * KIB);
        assert!(!memory.change(0, 900 * KIB));
        assert!(memory.change(0, 200 * KIB), "1100 KiB is over 1000");
        memory.looked(); // and nothing could be closed
        assert!(
            !memory.change(0, 10 * KIB),
            "not again for every small growth"
        );
        assert!(
            memory.change(0, MIN_VICTIM),
            "but again after the floor's worth more"
        );
        memory.looked();
        assert_eq!(memory.held, 1174 * KIB);
        // Back under the budget, the next growth over it looks at once.
        assert!(!memory.change(1100 * KIB, 0));
        assert_eq!(memory.held, 74 * KIB);
        assert!(
            !memory.change(0, 926 * KIB),
            "exactly at the budget is under it"
        );
        assert!(memory.change(0, 1));
    }
}
