//! The heartbeat: this node's lease and user count, the other nodes' counts, and the users of a node that died.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::Connection;

use super::{connect, lease_key, lock, presence_key, Shared, NODES};
use crate::bus::Bus;

/// The heartbeat: renew this node's lease (its user count), sum the others', and announce the users of a node
/// whose lease ran out.
pub(super) fn heartbeat_loop(shared: &Shared, bus: &Bus, client: &redis::Client) {
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
