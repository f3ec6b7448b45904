//! The reader: the streams this node's connections hold, read after the last entry delivered, into the loops.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::streams::StreamReadReply;
use redis::{Connection, Value};

use super::{connect, lock, parse, read_tail, stream_key, Backoff, Parsed, Shared};
use crate::bus::Bus;

/// The reader's state: the streams it reads, where it is in each, and the last entry it delivered of each node.
pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) bus: Arc<Bus>,
    pub(super) client: redis::Client,
    /// Stream key to the id of the last entry delivered (or `0-0`).
    pub(super) streams: HashMap<String, String>,
    /// (stream key, node) to the sequence number of the last entry of that node delivered from that stream.
    pub(super) delivered: HashMap<(String, u64), u64>,
    /// The `run_id` of the Redis process last read from: a new one means Redis restarted.
    pub(super) run_id: Option<String>,
}

/// Entries asked for per stream and call: a batch this full means the node is behind.
const READ_COUNT: usize = 512;

impl Reader {
    pub(super) fn run(&mut self) {
        let mut conn: Option<Connection> = None;
        let mut backoff = Backoff::new();
        let mut since_down: Option<Instant> = None;
        while !self.shared.is_stopped.load(Ordering::Acquire) {
            if conn.is_none() {
                match connect(&self.client, Duration::from_secs(3)) {
                    Ok(mut c) => {
                        if since_down.take().is_some() {
                            info!("Redis reader: Redis is back; reading on after the last entries delivered");
                        }
                        if let Err(e) = self.check_restart(&mut c) {
                            debug!("Redis reader: {e}");
                            backoff.wait(&self.shared);
                            continue;
                        }
                        conn = Some(c);
                        backoff = Backoff::new();
                    }
                    Err(e) => {
                        if since_down.is_none() {
                            warn!("Redis reader: cannot reach Redis ({e}); retrying with backoff");
                            since_down = Some(Instant::now());
                        }
                        backoff.wait(&self.shared);
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            self.follow_topics();
            self.bus.wait_for_room(&self.shared.is_stopped);
            if let Err(e) = self.read(c) {
                warn!("Redis reader: {e}; reconnecting");
                since_down = Some(Instant::now());
                conn = None;
                backoff.wait(&self.shared);
            }
        }
    }

    /// Starts reading the streams of topics a connection of this node now holds (from their end: what was
    /// published before anyone here subscribed is not delivered), and stops reading those nobody holds.
    fn follow_topics(&mut self) {
        let wanted: std::collections::HashSet<String> = lock(&self.shared.held)
            .keys()
            .map(|t| stream_key(Some(t)))
            .collect();
        let broadcast = stream_key(None);
        self.streams
            .retain(|key, _| *key == broadcast || wanted.contains(key));
        // What was delivered from a stream no longer followed is forgotten: followed again, it starts afresh.
        let streams = &self.streams;
        self.delivered
            .retain(|(key, _), _| streams.contains_key(key));
        let mut starts = lock(&self.shared.starts);
        starts.retain(|topic, start| {
            let key = stream_key(Some(topic));
            if !wanted.contains(&key) {
                return false; // released again before it was followed
            }
            debug!("Redis reader: following {key} after {start}");
            self.streams.insert(key, std::mem::take(start));
            false
        });
    }

    /// On every (re)connection: if Redis restarted (a new `run_id`), each stream it no longer has, or whose newest
    /// entry is older than the last one delivered here, lost its entries (Redis restarted without its data). Such a
    /// stream is read again from its start: what is written from now on is new, and anything delivered already
    /// is dropped by the sequence numbers.
    fn check_restart(&mut self, conn: &mut Connection) -> redis::RedisResult<()> {
        let now = run_id(conn)?;
        let before = self.run_id.replace(now.clone());
        if before.is_none_or(|before| before == now) {
            return Ok(());
        }
        warn!("Redis reader: Redis restarted (run_id {now}); checking the streams");
        for (key, last) in &mut self.streams {
            if last == "0-0" {
                continue;
            }
            let (newest, _) = read_tail(conn, key, 0)?;
            if newest == "0-0" || id_after(last, &newest) {
                warn!("Redis reader: stream {key} lost its entries (last delivered {last}, Redis has {newest}); reading it from its start");
                *last = "0-0".to_string();
            }
        }
        Ok(())
    }

    fn read(&mut self, conn: &mut Connection) -> redis::RedisResult<()> {
        let keys: Vec<String> = self.streams.keys().cloned().collect();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS");
        for key in &keys {
            cmd.arg(key);
        }
        for key in &keys {
            cmd.arg(&self.streams[key]);
        }
        let reply: Option<StreamReadReply> = cmd.query(conn)?;
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(last) = self.streams.get(&stream.key).cloned() else {
                continue;
            };
            // A node behind the trim is behind by at least `maxlen` entries: its next read is that long (or full).
            let behind = READ_COUNT.min(self.shared.config.maxlen.max(1));
            if stream.ids.len() >= behind && last != "0-0" {
                self.check_trim(conn, &stream.key, &last)?;
            }
            for entry in &stream.ids {
                match parse(&entry.map) {
                    Some(p) => self.deliver(&stream.key, p),
                    None => warn!(
                        "Redis reader: entry {} of {} is not one of ours; skipped",
                        entry.id, stream.key
                    ),
                }
            }
            if let Some(newest) = stream.ids.last() {
                self.streams.insert(stream.key, newest.id.clone());
            }
        }
        Ok(())
    }

    /// A long batch: if the stream's oldest entry is newer than the last one delivered, the trim (`maxlen`) went
    /// past this node. It says so and reads on from what is there rather than stalling. (A trim that stopped right
    /// after the last entry delivered looks the same, and is reported too: the log errs on the side of saying so.)
    fn check_trim(&self, conn: &mut Connection, key: &str, last: &str) -> redis::RedisResult<()> {
        let oldest: Vec<(String, HashMap<String, Value>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query(conn)?;
        if let Some((first, _)) = oldest.first() {
            if id_after(first, last) {
                warn!("Redis reader: this node fell behind the trim of {key} (last delivered {last}, oldest kept {first}); skipping ahead");
            }
        }
        Ok(())
    }

    fn deliver(&mut self, key: &str, p: Parsed) {
        let last = self.delivered.entry((key.to_string(), p.node)).or_insert(0);
        if p.seq <= *last {
            return; // written twice (a retried batch), or read twice after an outage
        }
        *last = p.seq;
        self.bus.deliver(p.topic, p.opcode, p.payload);
    }
}

/// The id of the Redis process: `INFO server` says `run_id:...`, new at every start.
pub(super) fn run_id(conn: &mut Connection) -> redis::RedisResult<String> {
    let info: String = redis::cmd("INFO").arg("server").query(conn)?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// True if stream id `a` comes after `b` (`MS-SEQ`).
pub(super) fn id_after(a: &str, b: &str) -> bool {
    let split = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    split(a) > split(b)
}
