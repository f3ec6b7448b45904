//! The Redis relay (cargo feature `redis`): nodes joined through Redis Streams.
//!
//! The PHP chatroom was one process; so is a wsloop server until its users outgrow one machine. Then each node
//! runs its loops as before, and the bus hands every publish and broadcast to Redis instead of to its own inboxes:
//! an `XADD` to the topic's stream. Each node reads the streams its connections hold with `XREAD BLOCK`, after the
//! last entry it delivered, and pushes what it reads into its loops' inboxes in stream order, its own publishes
//! included when they come back. So every node, and every user, sees one order per topic.
//!
//! Three helper threads talk to Redis; a loop never waits on it:
//! - the **writer** takes publishes (and presence updates) from a bounded queue and writes them in order, keeping
//!   them while Redis cannot be reached, up to [`RedisConfig::pending`] publishes (one more is refused, and the
//!   application is told); on reconnecting it writes them, retrying a batch whose answer was lost;
//! - the **reader** reads the streams and delivers; every entry carries its node and that node's sequence number,
//!   so an entry written twice (a retried batch) is delivered once;
//! - the **heartbeat** renews this node's lease, sums the other nodes' user counts, and announces the users of a
//!   node whose lease ran out (killed, or cut off), each once, through [`Handler::departed`](crate::Handler::departed)
//!   on one surviving node.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use redis::streams::StreamReadReply;
use redis::{Connection, Value};

use super::{Bus, Relay};
use crate::error::RemoteError;
use crate::frame::OpCode;

/// Where a node finds Redis, and how it uses it. Every field but `url` has a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Entries each stream keeps, about (`XADD ... MAXLEN ~`): how far behind a node may fall before it skips.
    pub maxlen: usize,
    /// Publishes this node keeps, in order, while Redis cannot be reached; one more is refused.
    pub pending: usize,
    /// A node whose lease has not been renewed for this long is taken for dead, and its users leave. The lease is
    /// renewed every third of it.
    pub lease: Duration,
    /// The last broadcasts a node starting up hands to its handlers ([`Handler::published`](crate::Handler::published)),
    /// so that it knows the recent history before any user arrives.
    pub replay: usize,
}

impl RedisConfig {
    /// The defaults, with `url`.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            maxlen: 100_000,
            pending: 10_000,
            lease: Duration::from_secs(6),
            replay: 50,
        }
    }
}

/// The stream of broadcasts, and of each topic. The braces are a Redis Cluster hash tag: a topic's stream lives on
/// the shard its name hashes to, so a cluster spreads topics over its shards.
fn stream_key(topic: Option<&str>) -> String {
    match topic {
        None => "wsloop:{*}:broadcast".to_string(),
        Some(topic) => format!("wsloop:{{{topic}}}:topic"),
    }
}

const NODES: &str = "wsloop:nodes";

fn lease_key(node: u64) -> String {
    format!("wsloop:node:{node:016x}")
}

fn presence_key(node: u64) -> String {
    format!("wsloop:presence:{node:016x}")
}

/// What the writer writes, in order.
enum Entry {
    Publish {
        seq: u64,
        topic: Option<String>,
        opcode: OpCode,
        payload: Vec<u8>,
    },
    /// A user's presence value (`None`: the user left).
    Presence { serial: u64, value: Option<String> },
    /// A topic this node starts to hold: the writer notes where its stream ends, in this node's own order of
    /// writes, and the reader follows it from there. So nothing published after the subscribe, by this node or
    /// by one whose publish Redis took after that point, is missed.
    Hold(String),
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Publishes in `entries` or being written: what counts against `pending`.
    publishes: usize,
    last_seq: u64,
}

/// What the loops (through the bus) and the helper threads share.
struct Shared {
    config: RedisConfig,
    node: u64,
    queue: Mutex<Queue>,
    wake_writer: Condvar,
    /// Topics held by a connection of this node, with how many loops hold each.
    held: Mutex<HashMap<String, usize>>,
    /// Where the reader starts each newly held topic's stream, as the writer found it.
    starts: Mutex<HashMap<String, String>>,
    /// This node's users' presence values, by connection serial: what Redis should hold, so that the heartbeat can
    /// write it again into a Redis that lost it.
    presence: Mutex<HashMap<u64, String>>,
    is_stopped: AtomicBool,
}

/// The Redis side of the bus.
pub(crate) struct RedisRelay {
    shared: Arc<Shared>,
    client: redis::Client,
    threads: Mutex<Vec<thread::JoinHandle<()>>>,
}

/// How long a stopping node waits for its writer to write what it keeps, and its other threads to end.
const FINISH_WAIT: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A node id no other node picks: drawn from the process's random hash keys, the time and the process id.
fn random_node() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Connects with timeouts, so that a Redis that stops answering fails a call instead of hanging a thread.
fn connect(client: &redis::Client, read_timeout: Duration) -> redis::RedisResult<Connection> {
    let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(read_timeout))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(conn)
}

/// Waits before the next attempt to reach Redis: 100 ms, doubling up to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }
    fn wait(&mut self, shared: &Shared) {
        let until = Instant::now() + self.0;
        while Instant::now() < until && !shared.is_stopped.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(20));
        }
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

impl RedisRelay {
    /// Checks that Redis answers at `config.url`, reads what a node replays at start, and starts the helper threads
    /// (which end in `finish`, once every loop has stopped).
    pub(crate) fn start(mut config: RedisConfig, bus: &Arc<Bus>) -> Result<RedisRelay, String> {
        // A lease renewed every third of it needs some length; and a stream keeps at least one entry.
        config.lease = config.lease.max(Duration::from_millis(300));
        config.maxlen = config.maxlen.max(1);
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("bad Redis URL {:?}: {e}", config.url))?;
        let mut conn = connect(&client, Duration::from_secs(2))
            .map_err(|e| format!("cannot reach Redis at {}: {e}", config.url))?;
        redis::cmd("PING")
            .query::<String>(&mut conn)
            .map_err(|e| format!("Redis at {} does not answer PING: {e}", config.url))?;
        let node = random_node();
        let redis_client = client.clone();
        let shared = Arc::new(Shared {
            config,
            node,
            queue: Mutex::new(Queue::default()),
            wake_writer: Condvar::new(),
            held: Mutex::new(HashMap::new()),
            starts: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            is_stopped: AtomicBool::new(false),
        });
        // The broadcast stream is always read: from just before the entries a starting node replays.
        let key = stream_key(None);
        let (start, replay) = read_tail(&mut conn, &key, shared.config.replay)
            .map_err(|e| format!("cannot read {key} from Redis: {e}"))?;
        for (topic, opcode, payload) in replay {
            bus.replay(topic, opcode, payload);
        }
        info!(
            "node {node:016x} joined through Redis at {}",
            shared.config.url
        );
        let mut reader = Reader {
            shared: shared.clone(),
            bus: bus.clone(),
            client: client.clone(),
            streams: HashMap::from([(key, start)]),
            delivered: HashMap::new(),
            run_id: run_id(&mut conn).ok(),
        };
        let threads = [
            ("wsloop-redis-writer", {
                let shared = shared.clone();
                let client = client.clone();
                Box::new(move || write_loop(&shared, &client)) as Box<dyn FnOnce() + Send>
            }),
            ("wsloop-redis-reader", Box::new(move || reader.run())),
            ("wsloop-redis-heartbeat", {
                let shared = shared.clone();
                let bus = bus.clone();
                Box::new(move || heartbeat_loop(&shared, &bus, &client))
            }),
        ];
        let mut handles = Vec::new();
        for (name, run) in threads {
            let handle = thread::Builder::new()
                .name(name.to_string())
                .spawn(run)
                .map_err(|e| format!("cannot start a thread: {e}"))?;
            handles.push(handle);
        }
        Ok(RedisRelay {
            shared,
            client: redis_client,
            threads: Mutex::new(handles),
        })
    }

    /// This node's id in Redis.
    pub(crate) fn node(&self) -> u64 {
        self.shared.node
    }

    fn push(&self, entry: Entry) {
        lock(&self.shared.queue).entries.push_back(entry);
        self.shared.wake_writer.notify_one();
    }
}

impl Relay for RedisRelay {
    fn publish(
        &self,
        topic: Option<&str>,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<(), RemoteError> {
        if self.shared.is_stopped.load(Ordering::Acquire) {
            return Err(RemoteError::Stopped);
        }
        let mut queue = lock(&self.shared.queue);
        if queue.publishes >= self.shared.config.pending {
            return Err(RemoteError::Full);
        }
        queue.publishes += 1;
        queue.last_seq += 1;
        let seq = queue.last_seq;
        queue.entries.push_back(Entry::Publish {
            seq,
            topic: topic.map(str::to_string),
            opcode,
            payload: payload.to_vec(),
        });
        drop(queue);
        self.shared.wake_writer.notify_one();
        Ok(())
    }

    fn hold(&self, topic: &str) {
        let mut held = lock(&self.shared.held);
        let loops = held.entry(topic.to_string()).or_default();
        *loops += 1;
        if *loops == 1 {
            drop(held);
            self.push(Entry::Hold(topic.to_string()));
        }
    }

    fn release(&self, topic: &str) {
        let mut held = lock(&self.shared.held);
        if let Some(n) = held.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                held.remove(topic);
            }
        }
    }

    fn presence(&self, serial: u64, value: Option<&str>) {
        {
            let mut presence = lock(&self.shared.presence);
            match value {
                Some(value) => presence.insert(serial, value.to_string()),
                None => presence.remove(&serial),
            };
        }
        self.push(Entry::Presence {
            serial,
            value: value.map(str::to_string),
        });
    }

    fn finish(&self) {
        self.shared.is_stopped.store(true, Ordering::Release);
        self.shared.wake_writer.notify_all();
        let deadline = Instant::now() + FINISH_WAIT;
        let threads = std::mem::take(&mut *lock(&self.threads));
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let unwritten = lock(&self.shared.queue).publishes;
        if unwritten > 0 {
            warn!("stopping with {unwritten} publishes Redis did not take");
            return; // this node's users stay in Redis, and another node announces their departure
        }
        // Everything was written, the users' departures included: nobody needs to reap this node.
        let cleaned = connect(&self.client, Duration::from_secs(2)).and_then(|mut c| {
            redis::pipe()
                .cmd("DEL")
                .arg(lease_key(self.shared.node))
                .arg(presence_key(self.shared.node))
                .ignore()
                .cmd("SREM")
                .arg(NODES)
                .arg(format!("{:x}", self.shared.node))
                .ignore()
                .query::<()>(&mut c)
        });
        match cleaned {
            Ok(()) => info!("node {:016x} left Redis", self.shared.node),
            Err(e) => warn!(
                "could not leave Redis cleanly ({e}); another node will announce this node's users"
            ),
        }
    }
}

/// The last `n` entries of a stream, oldest first, and the id to read on from (the last of them, or `0-0`).
#[allow(clippy::type_complexity)]
fn read_tail(
    conn: &mut Connection,
    key: &str,
    n: usize,
) -> redis::RedisResult<(String, Vec<(Option<String>, OpCode, Vec<u8>)>)> {
    let newest: Vec<(String, HashMap<String, Value>)> = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(n.max(1))
        .query(conn)?;
    let start = newest
        .first()
        .map_or_else(|| "0-0".to_string(), |(id, _)| id.clone());
    let replay = newest
        .into_iter()
        .take(n)
        .rev()
        .filter_map(|(_, fields)| parse(&fields).map(|p| (p.topic, p.opcode, p.payload)))
        .collect();
    Ok((start, replay))
}

/// One entry as the writer wrote it.
struct Parsed {
    node: u64,
    seq: u64,
    topic: Option<String>,
    opcode: OpCode,
    payload: Vec<u8>,
}

fn field(fields: &HashMap<String, Value>, name: &str) -> Option<Vec<u8>> {
    match fields.get(name)? {
        Value::BulkString(bytes) => Some(bytes.clone()),
        _ => None,
    }
}

fn number(fields: &HashMap<String, Value>, name: &str) -> Option<u64> {
    let bytes = field(fields, name)?;
    u64::from_str_radix(std::str::from_utf8(&bytes).ok()?, 16).ok()
}

/// Reads an entry; `None` for one this relay did not write (it is skipped, and logged by the caller).
fn parse(fields: &HashMap<String, Value>) -> Option<Parsed> {
    let opcode = match field(fields, "o")?.as_slice() {
        b"t" => OpCode::Text,
        b"b" => OpCode::Binary,
        _ => return None,
    };
    let payload = field(fields, "d")?;
    if opcode == OpCode::Text && std::str::from_utf8(&payload).is_err() {
        return None; // never send a client text that is not UTF-8, whoever wrote it
    }
    let topic = match field(fields, "t") {
        Some(t) => Some(String::from_utf8(t).ok()?),
        None => None,
    };
    Some(Parsed {
        node: number(fields, "n")?,
        seq: number(fields, "s")?,
        topic,
        opcode,
        payload,
    })
}

/// The writer: entries in order, in batches; a batch that fails is kept and written again once Redis is back.
fn write_loop(shared: &Shared, client: &redis::Client) {
    let mut conn: Option<Connection> = None;
    let mut backoff = Backoff::new();
    let mut batch: Vec<Entry> = Vec::new();
    let mut since_down: Option<Instant> = None;
    let mut refusals = 0;
    loop {
        if batch.is_empty() {
            let mut queue = lock(&shared.queue);
            while queue.entries.is_empty() && !shared.is_stopped.load(Ordering::Acquire) {
                queue = shared
                    .wake_writer
                    .wait_timeout(queue, Duration::from_millis(500))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if queue.entries.is_empty() {
                return; // stopped, and everything accepted was written
            }
            let n = queue.entries.len().min(512);
            batch.extend(queue.entries.drain(..n));
        }
        if conn.is_none() {
            match connect(client, Duration::from_secs(2)) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    if since_down.is_none() {
                        warn!("Redis writer: cannot reach Redis ({e}); keeping publishes, retrying with backoff");
                        since_down = Some(Instant::now());
                    }
                    if shared.is_stopped.load(Ordering::Acquire) {
                        warn!(
                            "Redis writer: stopping with {} entries unwritten",
                            batch.len()
                        );
                        return;
                    }
                    backoff.wait(shared);
                    continue;
                }
            }
        }
        let mut pipe = redis::pipe();
        for entry in &batch {
            add_to(&mut pipe, shared, entry);
        }
        // Only a `Hold`'s XREVRANGE is answered (the rest is ignored): one answer per hold, in order.
        match pipe.query::<Vec<Vec<(String, HashMap<String, Value>)>>>(
            conn.as_mut().expect("connected above"),
        ) {
            Ok(tails) => {
                refusals = 0;
                let holds = batch.iter().filter_map(|e| match e {
                    Entry::Hold(topic) => Some(topic),
                    _ => None,
                });
                let mut starts = lock(&shared.starts);
                for (topic, tail) in holds.zip(tails) {
                    let start = tail.first().map_or("0-0".to_string(), |(id, _)| id.clone());
                    starts.insert(topic.clone(), start);
                }
                drop(starts);
                let published = batch
                    .iter()
                    .filter(|e| matches!(e, Entry::Publish { .. }))
                    .count();
                lock(&shared.queue).publishes -= published;
                batch.clear();
                backoff = Backoff::new();
                if let Some(since) = since_down.take() {
                    info!(
                        "Redis writer: Redis is back after {:.1} s; writing what was kept",
                        since.elapsed().as_secs_f64()
                    );
                }
            }
            Err(e) if !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped()) => {
                // Redis answered, and refused (out of memory, a key of another type): writing the same batch
                // again would stall this node for good. It is tried a few times, then dropped, loudly.
                refusals += 1;
                if refusals < 3 {
                    warn!("Redis writer: Redis refused a batch ({e}); trying it again");
                    backoff.wait(shared);
                    continue;
                }
                let published = batch
                    .iter()
                    .filter(|e| matches!(e, Entry::Publish { .. }))
                    .count();
                error!("Redis writer: Redis refused a batch 3 times ({e}); dropping its {published} publishes");
                lock(&shared.queue).publishes -= published;
                batch.clear();
                refusals = 0;
            }
            Err(e) => {
                // The batch stays, in order, and is written again: the reader drops any entry written twice.
                if since_down.is_none() {
                    warn!(
                        "Redis writer: {e}; keeping {} entries, retrying with backoff",
                        batch.len()
                    );
                    since_down = Some(Instant::now());
                }
                conn = None;
                if shared.is_stopped.load(Ordering::Acquire) {
                    return;
                }
                backoff.wait(shared);
            }
        }
    }
}

fn add_to(pipe: &mut redis::Pipeline, shared: &Shared, entry: &Entry) {
    match entry {
        Entry::Publish {
            seq,
            topic,
            opcode,
            payload,
        } => {
            let cmd = pipe
                .cmd("XADD")
                .arg(stream_key(topic.as_deref()))
                .arg("MAXLEN")
                .arg("~")
                .arg(shared.config.maxlen)
                .arg("*")
                .arg("n")
                .arg(format!("{:x}", shared.node))
                .arg("s")
                .arg(format!("{seq:x}"))
                .arg("o")
                .arg(if *opcode == OpCode::Text { "t" } else { "b" });
            if let Some(topic) = topic {
                cmd.arg("t").arg(topic);
            }
            cmd.arg("d").arg(payload.as_slice()).ignore();
        }
        Entry::Presence {
            serial,
            value: Some(value),
        } => {
            pipe.cmd("HSET")
                .arg(presence_key(shared.node))
                .arg(serial)
                .arg(value)
                .ignore();
        }
        Entry::Hold(topic) => {
            pipe.cmd("XREVRANGE")
                .arg(stream_key(Some(topic)))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        Entry::Presence {
            serial,
            value: None,
        } => {
            pipe.cmd("HDEL")
                .arg(presence_key(shared.node))
                .arg(serial)
                .ignore();
        }
    }
}

/// The reader's state: the streams it reads, where it is in each, and the last entry it delivered of each node.
struct Reader {
    shared: Arc<Shared>,
    bus: Arc<Bus>,
    client: redis::Client,
    /// Stream key to the id of the last entry delivered (or `0-0`).
    streams: HashMap<String, String>,
    /// (stream key, node) to the sequence number of the last entry of that node delivered from that stream.
    delivered: HashMap<(String, u64), u64>,
    /// The `run_id` of the Redis process last read from: a new one means Redis restarted.
    run_id: Option<String>,
}

/// Entries asked for per stream and call: a batch this full means the node is behind.
const READ_COUNT: usize = 512;

impl Reader {
    fn run(&mut self) {
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
fn run_id(conn: &mut Connection) -> redis::RedisResult<String> {
    let info: String = redis::cmd("INFO").arg("server").query(conn)?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// True if stream id `a` comes after `b` (`MS-SEQ`).
fn id_after(a: &str, b: &str) -> bool {
    let split = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    split(a) > split(b)
}

/// The heartbeat: renew this node's lease (its user count), sum the others', and announce the users of a node
/// whose lease ran out.
fn heartbeat_loop(shared: &Shared, bus: &Bus, client: &redis::Client) {
    // A third of the lease, and at most a second: the other nodes' user count is as fresh as this.
    let every = (shared.config.lease / 3).min(Duration::from_secs(1));
    let mut conn: Option<Connection> = None;
    // A node judges others only after holding a lease of its own for a whole lease: after an outage every node
    // needs that long to renew, and none may be taken for dead meanwhile.
    let mut judging_from: Option<Instant> = None;
    let mut presence_off = 0;
    while !shared.is_stopped.load(Ordering::Acquire) {
        if conn.is_none() {
            conn = connect(client, Duration::from_secs(2)).ok();
            judging_from = None;
        }
        if let Some(c) = conn.as_mut() {
            let judge = *judging_from.get_or_insert_with(|| Instant::now() + shared.config.lease);
            // A node that is stopping judges no one: what it announced would go to loops that are closing.
            let is_judging = Instant::now() >= judge && !bus.is_stopped();
            match beat(shared, bus, c, is_judging, &mut presence_off) {
                Ok(()) => {}
                Err(e) => {
                    debug!("Redis heartbeat: {e}");
                    conn = None;
                }
            }
        }
        let until = Instant::now() + every;
        while Instant::now() < until && !shared.is_stopped.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One heartbeat: renew the lease, count the other nodes' users, reap the dead.
fn beat(
    shared: &Shared,
    bus: &Bus,
    conn: &mut Connection,
    judge: bool,
    presence_off: &mut u32,
) -> redis::RedisResult<()> {
    let me = format!("{:x}", shared.node);
    redis::pipe()
        .cmd("SET")
        .arg(lease_key(shared.node))
        .arg(bus.users())
        .arg("PX")
        .arg(shared.config.lease.as_millis() as u64)
        .ignore()
        .cmd("SADD")
        .arg(NODES)
        .arg(&me)
        .ignore()
        .query::<()>(conn)?;
    restore_presence(shared, conn, presence_off)?;
    let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(NODES).query(conn)?;
    let mut others: usize = 0;
    let mut dead = Vec::new();
    for name in nodes.into_iter().filter(|n| *n != me) {
        let Ok(node) = u64::from_str_radix(&name, 16) else {
            continue;
        };
        let users: Option<usize> = redis::cmd("GET").arg(lease_key(node)).query(conn)?;
        match users {
            Some(n) => others = others.saturating_add(n),
            None if judge => dead.push((node, name)),
            None => {}
        }
    }
    // The count first, so that the departures announced next say how many are left.
    bus.set_remote_users(others);
    for (node, name) in dead {
        reap(bus, conn, node, &name)?;
    }
    Ok(())
}

/// A Redis that restarted without its data (or lost this node's presence some other way) holds fewer users of
/// this node than it has: write them all again, so that they still leave if this node dies. A count that differs
/// for one beat may be the writer's queue catching up; only one that differs on two beats in a row is mended, or at
/// once when Redis holds none.
fn restore_presence(
    shared: &Shared,
    conn: &mut Connection,
    off: &mut u32,
) -> redis::RedisResult<()> {
    let key = presence_key(shared.node);
    let held: usize = redis::cmd("HLEN").arg(&key).query(conn)?;
    if held == lock(&shared.presence).len() {
        *off = 0;
        return Ok(());
    }
    *off += 1;
    if *off < 2 && held > 0 {
        return Ok(()); // an empty hash (a Redis that lost its data) is mended at once
    }
    *off = 0;
    let presence = lock(&shared.presence).clone();
    info!(
        "Redis holds {held} of this node's {} users' presence; writing them again",
        presence.len()
    );
    let mut pipe = redis::pipe();
    pipe.atomic().cmd("DEL").arg(&key).ignore();
    for (serial, value) in &presence {
        pipe.cmd("HSET").arg(&key).arg(serial).arg(value).ignore();
    }
    pipe.query(conn)
}

/// A node's lease ran out: its users' presence is taken from Redis and its name struck off in one transaction, so
/// that of all the nodes that find it dead at once, one gets the users, and announces each departure once.
fn reap(bus: &Bus, conn: &mut Connection, node: u64, name: &str) -> redis::RedisResult<()> {
    let (users,): (HashMap<String, String>,) = redis::pipe()
        .atomic()
        .cmd("HGETALL")
        .arg(presence_key(node))
        .cmd("DEL")
        .arg(presence_key(node))
        .ignore()
        .cmd("SREM")
        .arg(NODES)
        .arg(name)
        .ignore()
        .query(conn)?;
    if !users.is_empty() {
        warn!(
            "node {name} stopped renewing its lease; announcing its {} users' departure",
            users.len()
        );
    }
    for value in users.into_values() {
        bus.departed(value);
    }
    Ok(())
}
