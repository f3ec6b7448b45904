//! Load generator for WebSocket servers on this machine: echo, broadcast and idle-memory runs.
//!
//! ```text
//! loadgen echo      --port P --conns 100 --size 20 [--secs 5] [--warmup 1] [--opcode text|binary] [--server-pid PID]
//! loadgen broadcast --port P --conns 100 --size 20 [--secs 5] [--warmup 1] [--max-rounds 100000] [--server-pid PID]
//! loadgen idle      --port P --conns 10000 --server-pid PID [--size 20]
//! loadgen chat      --port P --conns 1000 [--size 20] [--secs 5] [--warmup 1] [--server-pid PID]
//!                   (against `cargo run --example chatroom`: one sender, every user receives)
//! loadgen probe     --port P [--timeout 10]     (exit 0 once the port accepts TCP connections)
//! loadgen free-port                             (print a free loopback port)
//! ```
//!
//! One thread, one mio poll, nonblocking sockets: the generator needs one core, leaving the other
//! to a single-threaded server. Each run prints its own CPU use so that a saturated generator is
//! visible, and with `--server-pid` the server's CPU time per message (from `/proc/PID/stat`),
//! a figure that does not depend on who was the bottleneck. The last line is machine-readable:
//! `RESULT key=value ...`. Any failed connection, wrong echo or timeout exits with status 1.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use wsloop_peers::client::{encode_masked, Client, Phase, OP_BINARY, OP_TEXT};
use wsloop_peers::{
    own_cpu_seconds, process_cpu_split, process_rss_bytes, raise_nofile_limit, sample_payload,
    Flags,
};

const USAGE: &str =
    "usage: loadgen echo|broadcast|idle|chat --port P --conns N [--size S] [--secs D] [--warmup W]
         [--opcode text|binary] [--max-rounds R] [--server-pid PID] [--host 127.0.0.1]
       loadgen probe --port P [--timeout SECS]
       loadgen free-port";
const FLAGS: &[&str] = &[
    "host",
    "port",
    "conns",
    "size",
    "secs",
    "warmup",
    "opcode",
    "max-rounds",
    "server-pid",
    "timeout",
];
/// Connects and handshakes in flight at once while opening connections.
const MAX_IN_FLIGHT: usize = 256;
/// How long any one step (opening all connections, one round, the last echoes) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let flags = Flags::parse(args, FLAGS, USAGE);
    let result = match mode.as_str() {
        "echo" => echo(&flags),
        "broadcast" => broadcast(&flags),
        "idle" => idle(&flags),
        "chat" => chat(&flags),
        "probe" => probe(&flags),
        "free-port" => free_port(),
        _ => wsloop_peers::usage_exit(
            USAGE,
            "first argument: echo, broadcast, idle, chat, probe or free-port",
        ),
    };
    if let Err(e) = result {
        eprintln!("loadgen {mode}: error: {e}");
        std::process::exit(1);
    }
}

/// What a run does with each received message; an error fails the run.
type OnMessage<'a> = dyn FnMut(&mut Client, u8, &[u8]) -> io::Result<()> + 'a;

/// The connections and the poll they are registered with; a connection's token is its index.
struct Pool {
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
}

impl Pool {
    /// Opens `n` connections to `addr` and completes every handshake; a message before any was
    /// sent is an error.
    fn open(addr: SocketAddr, n: usize) -> Result<Pool, String> {
        Pool::open_with(addr, n, &mut |_, _, _| {
            Err(io::Error::other("message before any was sent"))
        })
    }

    /// Opens `n` connections, handing what arrives meanwhile (a chat's join notices) to `early`.
    fn open_with(addr: SocketAddr, n: usize, early: &mut OnMessage<'_>) -> Result<Pool, String> {
        // A plain blocking connect first, so that an absent server is one clear error.
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("cannot connect to {addr}: {e} (is the server running?)"))?;
        let mut pool = Pool {
            poll: Poll::new().map_err(str_err)?,
            events: Events::with_capacity(1024),
            clients: vec![],
        };
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut open = 0;
        while open < n {
            while pool.clients.len() < n && pool.clients.len() - open < MAX_IN_FLIGHT {
                let token = Token(pool.clients.len());
                let mut client =
                    Client::connect(addr).map_err(|e| format!("connect #{}: {e}", token.0))?;
                let interest = Interest::READABLE | Interest::WRITABLE;
                pool.poll
                    .registry()
                    .register(&mut client.stream, token, interest)
                    .map_err(str_err)?;
                pool.clients.push(client);
            }
            pool.turn(deadline, early)?;
            open = pool
                .clients
                .iter()
                .filter(|c| c.phase == Phase::Open)
                .count();
            if Instant::now() > deadline {
                return Err(format!(
                    "only {open} of {n} connections handshaked within {STEP_TIMEOUT:?}"
                ));
            }
        }
        Ok(pool)
    }

    /// One poll turn (at most 50 ms): completes connects, flushes writes, and hands each received
    /// message to `on_message`. The first error fails the whole run.
    fn turn(&mut self, deadline: Instant, on_message: &mut OnMessage<'_>) -> Result<(), String> {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(50));
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(str_err(e))
            };
        }
        for event in self.events.iter() {
            let id = event.token().0;
            let client = &mut self.clients[id];
            let result = if event.is_writable() || client.phase == Phase::Connecting {
                client.on_writable()
            } else {
                Ok(())
            };
            let result = result.and_then(|()| {
                if event.is_readable() {
                    client.on_readable(|c, op, payload| on_message(c, op, payload))
                } else {
                    Ok(())
                }
            });
            result.map_err(|e| format!("connection #{id}: {e}"))?;
        }
        Ok(())
    }

    /// Sends a close frame on every connection and gives the server a moment to answer.
    fn close(mut self) {
        for client in &mut self.clients {
            let _ = client.send_close();
        }
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            let _ = self
                .poll
                .poll(&mut self.events, Some(Duration::from_millis(50)));
        }
    }
}

/// CPU use over a measured window, ours and (if its pid is known) the server's.
struct CpuWindow {
    start: Instant,
    own: f64,
    server_pid: Option<u32>,
    server: Option<(f64, f64)>,
}

/// The server's CPU seconds over a window: in its own code, and in all (its own code plus the kernel).
#[derive(Clone, Copy)]
struct ServerCpu {
    user: f64,
    total: f64,
}

impl CpuWindow {
    fn start(server_pid: Option<u32>) -> CpuWindow {
        let server = server_pid.and_then(process_cpu_split);
        CpuWindow {
            start: Instant::now(),
            own: own_cpu_seconds(),
            server_pid,
            server,
        }
    }

    /// Ends the window: wall seconds, our CPU seconds, the server's CPU seconds.
    fn end(&self) -> (f64, f64, Option<ServerCpu>) {
        let wall = self.start.elapsed().as_secs_f64();
        let own = own_cpu_seconds() - self.own;
        let server = match (self.server, self.server_pid.and_then(process_cpu_split)) {
            (Some((u0, s0)), Some((u1, s1))) => Some(ServerCpu {
                user: u1 - u0,
                total: (u1 + s1) - (u0 + s0),
            }),
            _ => None,
        };
        (wall, own, server)
    }
}

struct Common {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    opcode: u8,
    warmup: Duration,
    secs: Duration,
    server_pid: Option<u32>,
}

impl Common {
    /// The payload every connection sends, and its masked frame, encoded once.
    fn message(&self) -> (Vec<u8>, Vec<u8>) {
        let payload = sample_payload(self.size, self.opcode == OP_TEXT);
        let mut frame = Vec::with_capacity(self.size + 14);
        encode_masked(
            &mut frame,
            true,
            self.opcode,
            &payload,
            [0x37, 0xfa, 0x21, 0x3d],
        );
        (payload, frame)
    }
}

fn common(flags: &Flags) -> Common {
    let opcode = match flags.opt("opcode").unwrap_or("text") {
        "text" => OP_TEXT,
        "binary" => OP_BINARY,
        other => wsloop_peers::usage_exit(USAGE, &format!("unknown opcode {other:?}")),
    };
    let c = Common {
        addr: flags.loopback_addr(9001),
        conns: flags.get("conns", 100usize).max(1),
        size: flags.get("size", 20),
        opcode,
        warmup: Duration::from_secs_f64(flags.get("warmup", 1.0)),
        secs: Duration::from_secs_f64(flags.get("secs", 5.0f64).clamp(0.1, 600.0)),
        server_pid: flags
            .opt("server-pid")
            .map(|_| flags.get("server-pid", 0u32)),
    };
    let limit = raise_nofile_limit(c.conns as u64 + 256);
    if limit < c.conns as u64 + 16 {
        wsloop_peers::usage_exit(
            USAGE,
            &format!(
                "open-files limit {limit} is too low for {} connections",
                c.conns
            ),
        );
    }
    c
}

fn echo(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let (expected, frame) = c.message();
    let mut pool = Pool::open(c.addr, c.conns)?;

    let start = Instant::now();
    let (measure_from, stop_at) = (start + c.warmup, start + c.warmup + c.secs);
    let mut window: Option<CpuWindow> = None;
    let mut latencies: Vec<u64> = Vec::with_capacity(1 << 20);
    let mut outstanding = 0usize;
    for client in &mut pool.clients {
        client.sent_at = Instant::now();
        client.send(&frame).map_err(str_err)?;
        outstanding += 1;
    }
    let mut measured = None;
    loop {
        let now = Instant::now();
        if window.is_none() && now >= measure_from {
            window = Some(CpuWindow::start(c.server_pid));
        }
        if now >= stop_at && measured.is_none() {
            measured = Some(
                window
                    .as_ref()
                    .expect("window starts before it stops")
                    .end(),
            );
        }
        if now >= stop_at && outstanding == 0 {
            break;
        }
        if now >= stop_at + STEP_TIMEOUT {
            return Err(format!("{outstanding} echoes never came back"));
        }
        let counting = window.is_some() && now < stop_at;
        pool.turn(stop_at + STEP_TIMEOUT, &mut |client, op, got| {
            if op != c.opcode || got != expected.as_slice() {
                return Err(io::Error::other("echo differs from the message sent"));
            }
            let now = Instant::now();
            if counting && latencies.len() < 50_000_000 {
                latencies.push((now - client.sent_at).as_nanos() as u64);
            }
            outstanding -= 1;
            if now < stop_at {
                client.sent_at = now;
                client.send(&frame)?;
                outstanding += 1;
            }
            Ok(())
        })?;
    }
    pool.close();

    let (wall, own, server) = measured.expect("measured");
    let msgs = latencies.len();
    latencies.sort_unstable();
    let pct =
        |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(msgs.saturating_sub(1)));
    let us = |v: Option<&u64>| v.map_or(0.0, |&ns| ns as f64 / 1000.0);
    let rate = msgs as f64 / wall;
    println!(
        "echo {} x {} B {}: {msgs} messages in {wall:.2} s = {rate:.0} msgs/s; latency p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        c.conns, c.size, if c.opcode == OP_TEXT { "text" } else { "binary" },
        us(pct(0.50)), us(pct(0.99)), us(latencies.last())
    );
    let cpu = report_cpu(wall, own, server, msgs as f64, "msg");
    println!(
        "RESULT mode=echo conns={} size={} msgs={msgs} secs={wall:.3} msgs_per_s={rate:.0} p50_us={:.1} p99_us={:.1} max_us={:.1} {cpu}",
        c.conns, c.size, us(pct(0.50)), us(pct(0.99)), us(latencies.last())
    );
    Ok(())
}

fn broadcast(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let max_rounds: u64 = flags.get("max-rounds", 100_000);
    let (expected, frame) = c.message();
    let mut pool = Pool::open(c.addr, c.conns)?;
    let n = c.conns;

    let start = Instant::now();
    let measure_from = start + c.warmup;
    let mut window: Option<CpuWindow> = None;
    let mut round_times: Vec<u64> = Vec::new();
    loop {
        // One round: every client sends once, then waits until it has all n messages.
        let round_start = Instant::now();
        for client in &mut pool.clients {
            client.received = 0;
            client.send(&frame).map_err(str_err)?;
        }
        let mut waiting = n;
        while waiting > 0 {
            if round_start.elapsed() > STEP_TIMEOUT {
                return Err(format!(
                    "round timed out: {waiting} of {n} clients still waiting"
                ));
            }
            pool.turn(round_start + STEP_TIMEOUT, &mut |client, op, got| {
                if op != c.opcode || got != expected.as_slice() {
                    return Err(io::Error::other("delivery differs from the message sent"));
                }
                client.received += 1;
                if client.received == n {
                    waiting -= 1;
                } else if client.received > n {
                    return Err(io::Error::other(
                        "more deliveries than clients in one round",
                    ));
                }
                Ok(())
            })?;
        }
        if window.is_some() {
            round_times.push(round_start.elapsed().as_nanos() as u64);
        }
        let now = Instant::now();
        if window.is_none() && now >= measure_from {
            window = Some(CpuWindow::start(c.server_pid));
        } else if window.is_some()
            && (now >= measure_from + c.secs || round_times.len() as u64 >= max_rounds)
        {
            break;
        }
    }
    let (wall, own, server) = window.expect("measured rounds").end();
    pool.close();

    let rounds = round_times.len();
    let deliveries = (rounds * n * n) as f64;
    round_times.sort_unstable();
    let ms = |q: f64| round_times[((rounds as f64 * q) as usize).min(rounds - 1)] as f64 / 1e6;
    println!(
        "broadcast {n} clients x {} B: {rounds} rounds in {wall:.2} s = {:.1} rounds/s, {:.0} deliveries/s; round p50 {:.2} ms, p99 {:.2} ms",
        c.size, rounds as f64 / wall, deliveries / wall, ms(0.5), ms(0.99)
    );
    let cpu = report_cpu(wall, own, server, deliveries, "delivery");
    println!(
        "RESULT mode=broadcast conns={n} size={} rounds={rounds} secs={wall:.3} rounds_per_s={:.2} deliveries_per_s={:.0} round_p50_ms={:.3} round_p99_ms={:.3} {cpu}",
        c.size, rounds as f64 / wall, deliveries / wall, ms(0.5), ms(0.99)
    );
    Ok(())
}

fn idle(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let pid = c
        .server_pid
        .ok_or("idle needs --server-pid to read the server's memory")?;
    let rss = || process_rss_bytes(pid).ok_or(format!("cannot read /proc/{pid}/status"));
    let settle = || std::thread::sleep(Duration::from_millis(500));
    let before = rss()?;
    let mut pool = Pool::open(c.addr, c.conns)?;
    settle();
    let open = rss()?;

    // Then one echo on each, so that buffers allocated on first use are counted too.
    let (expected, frame) = c.message();
    for client in &mut pool.clients {
        client.send(&frame).map_err(str_err)?;
    }
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut waiting = c.conns;
    while waiting > 0 {
        if Instant::now() > deadline {
            return Err(format!("{waiting} of {} echoes never came back", c.conns));
        }
        pool.turn(deadline, &mut |_, op, got| {
            if op != c.opcode || got != expected.as_slice() {
                return Err(io::Error::other("echo differs from the message sent"));
            }
            waiting -= 1;
            Ok(())
        })?;
    }
    settle();
    let used = rss()?;
    pool.close();
    settle();
    let after = rss()?;

    let per = |rss: u64| (rss as f64 - before as f64) / c.conns as f64;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "idle {} connections: server RSS {:.1} MiB before, {:.1} MiB handshaked ({:.0} B/conn), {:.1} MiB after one {} B echo each ({:.0} B/conn), {:.1} MiB after closing",
        c.conns, mib(before), mib(open), per(open), mib(used), c.size, per(used), mib(after)
    );
    println!(
        "RESULT mode=idle conns={} rss_before={before} rss_open={open} rss_used={used} rss_closed={after} bytes_per_conn_open={:.0} bytes_per_conn_used={:.0}",
        c.conns, per(open), per(used)
    );
    Ok(())
}

/// Messages the chat sender may have out (sent, not yet delivered to every user) at once.
const CHAT_WINDOW: usize = 4;
/// Delivery latency histogram: 10 µs buckets up to 10 s.
const LATENCY_BUCKET_US: u64 = 10;
const LATENCY_BUCKETS: usize = 1_000_000;

/// The chatroom example with `conns` users: user 0 sends numbered messages (at most
/// `CHAT_WINDOW` not yet delivered everywhere), every user receives each one as the chatroom's
/// JSON. Reports deliveries/s and the latency of each delivery, send to receipt; checks that every
/// user gets every message, in order.
fn chat(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let n = c.conns;
    let mut pool = Pool::open_with(c.addr, n, &mut |_, _, _| Ok(()))?;
    // The join notices (n² of them) settle first: until nothing has arrived for 300 ms.
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        if Instant::now() > deadline {
            return Err("join notices never settled".into());
        }
        pool.turn(deadline, &mut |_, _, _| {
            quiet_since = Instant::now();
            Ok(())
        })?;
    }
    for client in &mut pool.clients {
        client.received = 0; // from here: the number of the next message this user must see
    }

    let pad = "x".repeat(c.size.saturating_sub(8));
    let start = Instant::now();
    let measure_from = start + c.warmup;
    let mut window: Option<CpuWindow> = None;
    let (mut sent_at, mut missing): (Vec<Instant>, Vec<usize>) = (vec![], vec![]);
    let (mut outstanding, mut first_measured, mut stop_at) = (0usize, None::<usize>, None::<usize>);
    let mut histogram = vec![0u64; LATENCY_BUCKETS];
    let mut deliveries = 0u64;
    loop {
        let now = Instant::now();
        if window.is_none() && now >= measure_from {
            window = Some(CpuWindow::start(c.server_pid));
            first_measured = Some(sent_at.len());
        } else if window.is_some() && stop_at.is_none() && now >= measure_from + c.secs {
            stop_at = Some(sent_at.len());
        }
        if stop_at.is_some() && outstanding == 0 {
            break;
        }
        while stop_at.is_none() && outstanding < CHAT_WINDOW {
            let seq = sent_at.len();
            let text = format!("{seq:08}{pad}");
            let mut frame = Vec::with_capacity(text.len() + 14);
            encode_masked(&mut frame, true, OP_TEXT, text.as_bytes(), [1, 2, 3, 4]);
            pool.clients[0].send(&frame).map_err(str_err)?;
            sent_at.push(Instant::now());
            missing.push(n);
            outstanding += 1;
        }
        let turn_deadline = Instant::now() + STEP_TIMEOUT;
        pool.turn(turn_deadline, &mut |client, op, got| {
            let json = std::str::from_utf8(got).map_err(io::Error::other)?;
            if op != OP_TEXT || !json.contains(r#""type":"message""#) {
                return Ok(()); // a late join notice
            }
            let seq = json
                .split(r#""text":""#)
                .nth(1)
                .and_then(|t| t.get(..8))
                .and_then(|digits| digits.parse::<usize>().ok())
                .ok_or_else(|| io::Error::other(format!("not a numbered message: {json}")))?;
            if seq != client.received {
                return Err(io::Error::other(format!(
                    "message {seq} arrived where {} was due",
                    client.received
                )));
            }
            client.received += 1;
            if first_measured.is_some_and(|first| seq >= first) && stop_at.is_none_or(|s| seq < s) {
                let us = sent_at[seq].elapsed().as_micros() as u64;
                histogram[((us / LATENCY_BUCKET_US) as usize).min(LATENCY_BUCKETS - 1)] += 1;
                deliveries += 1;
            }
            missing[seq] -= 1;
            if missing[seq] == 0 {
                outstanding -= 1;
            }
            Ok(())
        })?;
        if start.elapsed() > c.warmup + c.secs + STEP_TIMEOUT {
            return Err(format!("{outstanding} messages never reached every user"));
        }
    }
    let (wall, own, server) = window.expect("a measured window").end();
    pool.close();

    let messages = stop_at.unwrap_or(0) - first_measured.unwrap_or(0);
    let quantile = |q: f64| {
        let target = (deliveries as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (bucket, count) in histogram.iter().enumerate() {
            seen += count;
            if seen >= target.max(1) {
                return (bucket as u64 + 1) * LATENCY_BUCKET_US;
            }
        }
        LATENCY_BUCKETS as u64 * LATENCY_BUCKET_US
    };
    // The window ends when sending stops; the deliveries of its last messages arrive just after.
    let rate = deliveries as f64 / wall;
    println!(
        "chat {n} users, one sender, {} B text: {messages} messages, {deliveries} deliveries in {wall:.2} s = {rate:.0} deliveries/s; delivery latency p50 {} us, p99 {} us",
        c.size, quantile(0.5), quantile(0.99)
    );
    let cpu = report_cpu(wall, own, server, deliveries as f64, "delivery");
    println!(
        "RESULT mode=chat conns={n} size={} messages={messages} deliveries={deliveries} secs={wall:.3} deliveries_per_s={rate:.0} p50_us={} p99_us={} {cpu}",
        c.size, quantile(0.5), quantile(0.99)
    );
    Ok(())
}

/// Prints CPU use and returns its `key=value` part of the RESULT line.
fn report_cpu(wall: f64, own: f64, server: Option<ServerCpu>, units: f64, unit: &str) -> String {
    let own_pct = 100.0 * own / wall;
    let mut line = format!("loadgen CPU {own_pct:.0}% of one core");
    let mut kv = format!("client_cpu_pct={own_pct:.1}");
    let mut server_pct = None;
    if let Some(s) = server {
        let per = |secs: f64| if units > 0.0 { 1e6 * secs / units } else { 0.0 };
        let pct = 100.0 * s.total / wall;
        server_pct = Some(pct);
        line += &format!(
            "; server CPU {pct:.0}% of one core, {:.3} us per {unit} ({:.3} us of it in the server's own code)",
            per(s.total),
            per(s.user)
        );
        kv += &format!(
            " server_cpu_pct={pct:.1} server_us_per_{unit}={:.4} server_user_us_per_{unit}={:.4}",
            per(s.total),
            per(s.user)
        );
    }
    println!("{line}");
    // A server that was busy all the time was at its own limit, whatever the generator's load; only a
    // server with time to spare while the generator was saturated was held back by the generator.
    if own_pct > 90.0 && server_pct.is_none_or(|pct| pct < 90.0) {
        println!("warning: loadgen used a whole core while the server had time to spare: the rate above is loadgen's limit, not the server's");
    }
    kv
}

fn probe(flags: &Flags) -> Result<(), String> {
    let addr = flags.loopback_addr(9001);
    let deadline =
        Instant::now() + Duration::from_secs_f64(flags.get("timeout", 10.0f64).clamp(0.1, 120.0));
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("{addr} not accepting: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn free_port() -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(str_err)?;
    println!("{}", listener.local_addr().map_err(str_err)?.port());
    Ok(())
}

fn str_err(e: io::Error) -> String {
    e.to_string()
}
