//! The writer: publishes and presence updates, in order, in batches; kept while Redis cannot be reached.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use redis::{Connection, Value};

use super::{connect, lock, presence_key, stream_key, Backoff, Entry, Shared};
use crate::frame::OpCode;

/// The writer: entries in order, in batches; a batch that fails is kept and written again once Redis is back.
pub(super) fn write_loop(shared: &Shared, client: &redis::Client) {
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
