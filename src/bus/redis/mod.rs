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

use log::{info, warn};
use redis::{Connection, Value};

use super::{Bus, Relay};

mod heartbeat;
mod reader;
mod writer;

use crate::error::RemoteError;
use crate::frame::OpCode;
use heartbeat::heartbeat_loop;
use reader::{run_id, Reader};
use writer::write_loop;

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
