//! The loop's figures: what it accepted, refused, received, sent and closed, and how long its turns take.
//!
//! The PHP loop counted nothing. Here each loop keeps its own [`Figures`], which only that loop writes: a count goes
//! up with a plain load and store (no lock, no read-modify-write instruction, nothing another core waits for), and
//! any thread may read it at any time. `GET /metrics` (cargo feature `metrics`, [`Config::metrics`]) renders every
//! loop's figures in the Prometheus text format (`render.rs`), and `GET /stats` draws them live (`stats.rs`).
//!
//! [`Config::metrics`]: crate::Config

// Without the `metrics` feature the loops still count (it costs next to nothing, and keeps one code path), but
// nothing reads the counts.
#![cfg_attr(
    not(feature = "metrics"),
    allow(dead_code, reason = "read only by GET /metrics and GET /stats")
)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[cfg(feature = "metrics")]
pub(crate) mod render;
#[cfg(feature = "metrics")]
pub(crate) mod stats;

/// A number only one thread writes: a plain load and store, which other threads may read at any time.
#[derive(Debug, Default)]
pub(crate) struct Tally(AtomicU64);

impl Tally {
    /// Adds `n`. Only the loop that owns these figures calls it, so no read-modify-write is needed.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The lowest HTTP status a refusal can have; refusals are counted per status from here to 599.
pub(crate) const FIRST_REFUSAL: u16 = 400;
const REFUSALS: usize = 200;

/// Close codes are counted one by one from 1000 to 1015 (RFC 6455 §7.4.1; 1005 stands for a close frame without a
/// code), then as registered (3000-3999), private (4000-4999) and anything else: a peer choosing codes cannot make
/// the label set grow past these 19 values.
pub(crate) const CLOSE_SLOTS: usize = 19;

/// The label of each close-code slot.
pub(crate) fn close_label(slot: usize) -> String {
    match slot {
        0..=15 => (1000 + slot).to_string(),
        16 => "3xxx".into(),
        17 => "4xxx".into(),
        _ => "other".into(),
    }
}

/// The slot a close code is counted in; `None` (a close frame without a code) counts as 1005, as §7.1.5 names it.
#[inline]
pub(crate) fn close_slot(code: Option<u16>) -> usize {
    match code.unwrap_or(1005) {
        code @ 1000..=1015 => usize::from(code - 1000),
        3000..=3999 => 16,
        4000..=4999 => 17,
        _ => 18,
    }
}

/// The upper bounds of the loop-turn histogram's buckets, in nanoseconds: 10 µs to 1 s (a turn longer than a second
/// falls in the `+Inf` bucket alone).
pub(crate) const TURN_BOUNDS_NS: [u64; 15] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// One loop's figures. Counters only grow; the gauges (`connections`, `users`, `queued`, `held`) are set at the end
/// of each turn. Aligned to a cache line of its own, so that loops writing theirs do not slow each other.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Figures {
    pub accepted: Tally,
    pub shed: Tally,
    pub handshakes: Tally,
    pub refused: [Tally; REFUSALS],
    pub messages_in: Tally,
    pub messages_out: Tally,
    pub bytes_in: Tally,
    pub bytes_out: Tally,
    pub closes_in: [Tally; CLOSE_SLOTS],
    pub closes_out: [Tally; CLOSE_SLOTS],
    pub dropped_slow: Tally,
    pub over_budget: Tally,
    pub tls_failed: Tally,
    pub connections: Tally,
    pub users: Tally,
    pub queued: Tally,
    pub held: Tally,
    /// Turns per bucket of [`TURN_BOUNDS_NS`], the last one for longer turns (not cumulative).
    pub turns: [Tally; TURN_BOUNDS_NS.len() + 1],
    /// Every turn's time added up, in nanoseconds.
    pub turn_ns: Tally,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            accepted: Tally::default(),
            shed: Tally::default(),
            handshakes: Tally::default(),
            refused: std::array::from_fn(|_| Tally::default()),
            messages_in: Tally::default(),
            messages_out: Tally::default(),
            bytes_in: Tally::default(),
            bytes_out: Tally::default(),
            closes_in: Default::default(),
            closes_out: Default::default(),
            dropped_slow: Tally::default(),
            over_budget: Tally::default(),
            tls_failed: Tally::default(),
            connections: Tally::default(),
            users: Tally::default(),
            queued: Tally::default(),
            held: Tally::default(),
            turns: Default::default(),
            turn_ns: Tally::default(),
        }
    }
}

impl Figures {
    /// A handshake refused with `status` (a status outside 400-599 is counted as 500, which is what was sent).
    pub fn refused(&self, status: u16) {
        let slot = status
            .checked_sub(FIRST_REFUSAL)
            .map(usize::from)
            .filter(|&slot| slot < REFUSALS)
            .unwrap_or(100);
        self.refused[slot].add(1);
    }

    /// One turn of the loop took `took` (the time from the poll's return to the end of the turn's writes).
    #[inline]
    pub fn turn(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = TURN_BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(TURN_BOUNDS_NS.len());
        self.turns[bucket].add(1);
        self.turn_ns.add(ns);
    }
}

/// Every loop's figures added up, at one moment: what the stats page shows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Sum {
    pub connections: u64,
    pub users: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub queued: u64,
    pub dropped_slow: u64,
    pub turns: [u64; TURN_BOUNDS_NS.len() + 1],
}

impl Sum {
    pub fn of<'a>(loops: impl IntoIterator<Item = &'a Figures>) -> Sum {
        let mut sum = Sum::default();
        for f in loops {
            sum.connections += f.connections.get();
            sum.users += f.users.get();
            sum.messages_in += f.messages_in.get();
            sum.messages_out += f.messages_out.get();
            sum.bytes_in += f.bytes_in.get();
            sum.bytes_out += f.bytes_out.get();
            sum.queued += f.queued.get();
            sum.dropped_slow += f.dropped_slow.get();
            for (to, from) in sum.turns.iter_mut().zip(&f.turns) {
                *to += from.get();
            }
        }
        sum
    }
}

/// The 99th percentile of the turns counted between two readings of the histogram, as the upper bound of the bucket
/// it falls in, in seconds (`None` if no turn was counted; `f64::INFINITY` if it is past the last bound).
pub(crate) fn p99(before: &[u64], after: &[u64]) -> Option<f64> {
    let counts: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The smallest bucket below whose bound at least 99% of the turns fall.
    let need = total - total / 100;
    let mut seen = 0;
    for (i, count) in counts.iter().enumerate() {
        seen += count;
        if seen >= need {
            return Some(
                TURN_BOUNDS_NS
                    .get(i)
                    .map_or(f64::INFINITY, |&ns| ns as f64 / 1e9),
            );
        }
    }
    Some(f64::INFINITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_fall_in_a_fixed_set_of_slots() {
        assert_eq!(close_slot(Some(1000)), 0);
        assert_eq!(close_label(close_slot(Some(1009))), "1009");
        assert_eq!(close_label(close_slot(None)), "1005");
        assert_eq!(close_label(close_slot(Some(3001))), "3xxx");
        assert_eq!(close_label(close_slot(Some(4999))), "4xxx");
        assert_eq!(close_label(close_slot(Some(2000))), "other");
        assert!((0..=u16::MAX).all(|code| close_slot(Some(code)) < CLOSE_SLOTS));
    }

    #[test]
    fn refusals_are_counted_by_status() {
        let f = Figures::default();
        f.refused(400);
        f.refused(599);
        f.refused(200); // not a refusal status: counted as the 500 that was sent instead
        assert_eq!(f.refused[0].get(), 1);
        assert_eq!(f.refused[199].get(), 1);
        assert_eq!(f.refused[100].get(), 1);
    }

    #[test]
    fn turns_land_in_the_bucket_of_their_bound() {
        let f = Figures::default();
        f.turn(Duration::from_micros(10)); // on the first bound: in its bucket
        f.turn(Duration::from_micros(11));
        f.turn(Duration::from_secs(2));
        assert_eq!(f.turns[0].get(), 1);
        assert_eq!(f.turns[1].get(), 1);
        assert_eq!(f.turns[TURN_BOUNDS_NS.len()].get(), 1);
        assert_eq!(f.turn_ns.get(), 2_000_021_000);
    }

    #[test]
    fn the_p99_is_the_bound_of_the_bucket_where_99_percent_are_reached() {
        let mut after = [0u64; TURN_BOUNDS_NS.len() + 1];
        assert_eq!(p99(&after, &after), None);
        after[0] = 990;
        after[3] = 10;
        // 990 of 1000 turns took 10 µs or less: the 99th percentile is within the first bucket.
        assert_eq!(p99(&[0; 16], &after), Some(10e-6));
        after[3] = 11;
        assert_eq!(p99(&[0; 16], &after), Some(100e-6));
        let before = after;
        after[TURN_BOUNDS_NS.len()] += 5;
        assert_eq!(p99(&before, &after), Some(f64::INFINITY));
    }

    #[test]
    fn a_tally_read_from_another_thread_sees_the_writes() {
        let f = std::sync::Arc::new(Figures::default());
        let writer = f.clone();
        std::thread::spawn(move || (0..1000).for_each(|_| writer.messages_in.add(2)))
            .join()
            .unwrap();
        assert_eq!(f.messages_in.get(), 2000);
    }
}
