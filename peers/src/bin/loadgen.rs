//! Load generator for WebSocket servers on this machine: echo, broadcast and idle-memory runs.
//!
//! ```text
//! loadgen echo      --port P --conns 100 --size 20 [--secs 5] [--warmup 1] [--opcode text|binary] [--server-pid PID]
//! loadgen broadcast --port P --conns 100 --size 20 [--secs 5] [--warmup 1] [--max-rounds 100000] [--server-pid PID]
//!                   [--senders N] (every round N of the clients send, all unless it says fewer)
//! loadgen idle      --port P --conns 10000 --server-pid PID [--size 20]
//! loadgen chat      --port P --conns 1000 [--size 20] [--secs 5] [--warmup 1] [--server-pid PID]
//!                   [--ports P1,P2,..] [--server-pids PID1,PID2,..] [--redis-pid PID]
//!                   [--senders 1|N|all] [--window 4] [--messages M]
//!                   (against `cargo run --example chatroom`: every user receives every message; with
//!                   --ports the users are spread over several chatroom nodes joined through Redis)
//! loadgen topic     --port P --conns 1000 --subscribers 10 --mode pub|each [--senders 1] [--window 16]
//!                   [--size 32] [--secs 5] [--warmup 1] [--server-pid PID]
//!                   (against `cargo run --example broadcast`: a topic that a few of many connections hold)
//! loadgen handshakes --port P [--secs 5] [--warmup 1] [--conns-parallel 16] [--size 20]
//!                   [--server-pid PID]
//!                   (new connections, N in flight, each: TLS if asked, the upgrade, one echo, close)
//! loadgen probe     --port P [--timeout 10]     (exit 0 once the port accepts TCP connections)
//! loadgen free-port                             (print a free loopback port)
//! ```
//!
//! Every run mode but probe takes `--deflate on` (offer permessage-deflate as a browser does,
//! `permessage-deflate; client_max_window_bits`, and fail unless the server accepts it) and
//! `--payload json` (echo, broadcast and idle send a chat message of the chatroom's JSON, `--size`
//! bytes, instead of the sample text). With `--deflate on`, echo, broadcast and idle send their
//! one payload compressed once up front (level 6, the window the server answered; RSV1 set: with
//! no context kept on our side every message is independent), chat and topic send theirs plain,
//! and every mode inflates what arrives compressed (all of it: see `client.rs` for why that stays
//! cheap) and checks it as it checks a plain message. The RESULT line then also says how many
//! messages came compressed and their payload bytes on the wire and inflated.
//!
//! Every run mode but probe also takes `--tls-ca FILE`: every connection is then `wss://`, a rustls
//! client session that trusts the certificates in that PEM file (a server certificate made for the
//! run, with the address the run goes to, 127.0.0.1, in its `subjectAltName`). Each connection
//! makes a full handshake (TLS 1.3 unless the server offers only 1.2) unless `--tls-resume on` lets
//! it resume a session from a ticket an earlier connection got. The RESULT lines of echo,
//! broadcast, idle and handshakes then say `tls=1`.
//! A plain connection has no session: its reads and writes are those of before, one branch added.
//!
//! handshakes: as many new connections as the server takes, `--conns-parallel` of them in flight
//! at once, each making the TCP connect, the TLS handshake (with `--tls-ca`), the WebSocket
//! upgrade, one echo of a `--size` B text message and the closing handshake (our close, the
//! server's answer), then dropped. Counted are the connections that completed all of it within
//! the measured window: handshakes per second, the time each took (p50, p99) and, with
//! `--server-pid`, the server's CPU per handshake.
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
use wsloop_peers::client::{
    deflate_message, encode_masked, encode_masked_ext, Client, Phase, Received, TlsClient,
    DEFLATE_OFFER, OP_BINARY, OP_TEXT,
};
use wsloop_peers::{
    chat_json, chat_json_with_id, own_cpu_seconds, process_cpu_split, process_rss_bytes,
    raise_nofile_limit, sample_payload, Flags,
};

const USAGE: &str =
    "usage: loadgen echo|broadcast|idle|chat --port P --conns N [--size S] [--secs D] [--warmup W]
         [--opcode text|binary] [--max-rounds R] [--server-pid PID] [--host 127.0.0.1]
         [--senders N] (broadcast: N of the clients send each round; all unless given)
       loadgen chat --ports P1,P2,... --conns N [--senders 1|N|all] [--window M] [--messages K]
         [--server-pids PID1,PID2,...] [--redis-pid PID] [--size S] [--secs D] [--warmup W]
       loadgen topic --port P --conns N --subscribers K --mode pub|each [--senders J] [--window M]
         [--size S] [--secs D] [--warmup W] [--server-pid PID]
       loadgen handshakes --port P [--secs D] [--warmup W] [--conns-parallel N] [--size S]
         [--server-pid PID]
       loadgen probe --port P [--timeout SECS]
       loadgen free-port
       every mode but probe: [--deflate on|off] [--payload sample|json]
         [--tls-ca FILE] [--tls-resume on|off] (wss://, trusting the certificates in FILE)";
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
    "subscribers",
    "senders",
    "window",
    "mode",
    "ports",
    "server-pids",
    "redis-pid",
    "messages",
    "deflate",
    "payload",
    "tls-ca",
    "tls-resume",
    "conns-parallel",
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
        "topic" => topic(&flags),
        "handshakes" => handshakes(&flags),
        "probe" => probe(&flags),
        "free-port" => free_port(),
        _ => wsloop_peers::usage_exit(
            USAGE,
            "first argument: echo, broadcast, idle, chat, topic, handshakes, probe or free-port",
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
    /// sent is an error. `offer`: the extensions every upgrade request offers, which the server
    /// must accept on every connection. `tls`: every connection is `wss://`.
    fn open(
        addr: SocketAddr,
        n: usize,
        offer: Option<&str>,
        tls: Option<&TlsClient>,
    ) -> Result<Pool, String> {
        Pool::open_with(&[addr], n, offer, tls, &mut |_, _, _| {
            Err(io::Error::other("message before any was sent"))
        })
    }

    /// Opens `n` connections, connection `i` to `addrs[i % addrs.len()]`, handing what arrives
    /// meanwhile (a chat's join notices) to `early`.
    fn open_with(
        addrs: &[SocketAddr],
        n: usize,
        offer: Option<&str>,
        tls: Option<&TlsClient>,
        early: &mut OnMessage<'_>,
    ) -> Result<Pool, String> {
        // A plain blocking connect first, so that an absent server is one clear error.
        for addr in addrs {
            TcpStream::connect_timeout(addr, Duration::from_secs(2))
                .map_err(|e| format!("cannot connect to {addr}: {e} (is the server running?)"))?;
        }
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
                let addr = addrs[token.0 % addrs.len()];
                let mut client = Client::connect_with(addr, offer, tls)
                    .map_err(|e| format!("connect #{} to {addr}: {e}", token.0))?;
                client.tag = token.0;
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
        if offer.is_some() {
            let first = pool.clients[0].deflate;
            if first.is_none() {
                return Err(
                    "the server declined permessage-deflate (is it started with --deflate?)".into(),
                );
            }
            if let Some(other) = pool.clients.iter().find(|c| c.deflate != first) {
                return Err(format!(
                    "connections agreed differently: {first:?} on #0, {:?} on #{}",
                    other.deflate, other.tag
                ));
            }
        }
        Ok(pool)
    }

    /// The window our compressed messages may use, if permessage-deflate was agreed.
    fn client_window(&self) -> Option<u8> {
        self.clients
            .first()?
            .deflate
            .map(|a| a.client_max_window_bits)
    }

    /// What every connection has received so far, summed.
    fn received(&self) -> Received {
        let mut sum = Received::default();
        for client in &self.clients {
            sum += client.stats;
        }
        sum
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

/// CPU use over a measured window: ours, the server's (if its pid is known; with several server
/// processes, such as chatroom nodes, each one's and their sum) and, for a chat across nodes, Redis's.
struct CpuWindow {
    start: Instant,
    own: f64,
    server_pids: Vec<u32>,
    servers: Vec<Option<(f64, f64)>>,
    redis_pid: Option<u32>,
    redis: Option<(f64, f64)>,
}

/// A process's CPU seconds over a window: in its own code, and in all (its own code plus the kernel).
#[derive(Clone, Copy)]
struct ServerCpu {
    user: f64,
    total: f64,
}

impl ServerCpu {
    /// From `process_cpu_split` at the start and at the end of the window.
    fn between(from: Option<(f64, f64)>, to: Option<(f64, f64)>) -> Option<ServerCpu> {
        let ((u0, s0), (u1, s1)) = (from?, to?);
        Some(ServerCpu {
            user: u1 - u0,
            total: (u1 + s1) - (u0 + s0),
        })
    }
}

/// What a window measured.
struct Measured {
    wall: f64,
    own: f64,
    /// Each server process's CPU, in the order of their pids.
    servers: Vec<Option<ServerCpu>>,
    /// The sum over the server processes (none if one could not be read, or none was given).
    total: Option<ServerCpu>,
    redis: Option<ServerCpu>,
}

impl CpuWindow {
    fn start(server_pid: Option<u32>) -> CpuWindow {
        CpuWindow::start_many(server_pid.as_slice(), None)
    }

    fn start_many(server_pids: &[u32], redis_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            start: Instant::now(),
            own: own_cpu_seconds(),
            server_pids: server_pids.to_vec(),
            servers: server_pids.iter().map(|&p| process_cpu_split(p)).collect(),
            redis_pid,
            redis: redis_pid.and_then(process_cpu_split),
        }
    }

    /// Ends the window: wall seconds, our CPU seconds, the server's CPU seconds.
    fn end(&self) -> (f64, f64, Option<ServerCpu>) {
        let m = self.end_many();
        (m.wall, m.own, m.total)
    }

    fn end_many(&self) -> Measured {
        let wall = self.start.elapsed().as_secs_f64();
        let own = own_cpu_seconds() - self.own;
        let servers: Vec<Option<ServerCpu>> = self
            .server_pids
            .iter()
            .zip(&self.servers)
            .map(|(&pid, &from)| ServerCpu::between(from, process_cpu_split(pid)))
            .collect();
        let total = servers.iter().try_fold(None, |sum: Option<ServerCpu>, s| {
            let s = (*s)?;
            Some(Some(match sum {
                None => s,
                Some(t) => ServerCpu {
                    user: t.user + s.user,
                    total: t.total + s.total,
                },
            }))
        });
        let redis = ServerCpu::between(self.redis, self.redis_pid.and_then(process_cpu_split));
        Measured {
            wall,
            own,
            servers,
            total: total.flatten(),
            redis,
        }
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
    /// `--deflate on`: offer permessage-deflate (and send compressed where the mode does).
    deflate: bool,
    /// `--payload json`: the chatroom's JSON instead of the sample text.
    json: bool,
    /// `--tls-ca FILE`: every connection is `wss://`, trusting the certificates in FILE.
    tls: Option<TlsClient>,
}

/// zlib's level for the messages the load generator compresses (once each).
const CLIENT_LEVEL: u32 = 6;

impl Common {
    /// The extensions to offer.
    fn offer(&self) -> Option<&'static str> {
        self.deflate.then_some(DEFLATE_OFFER)
    }

    /// `--tls-ca`'s client configuration, if given.
    fn tls(&self) -> Option<&TlsClient> {
        self.tls.as_ref()
    }

    /// The RESULT line's word on TLS: ` tls=1` for wss:// runs, nothing for plain ones.
    fn tls_kv(&self) -> &'static str {
        if self.tls.is_some() {
            " tls=1"
        } else {
            ""
        }
    }

    /// The payload every connection sends, and its masked frame, encoded once: compressed (RSV1,
    /// with the window the server answered) when `pool` agreed to permessage-deflate.
    fn message(&self, pool: &Pool) -> (Vec<u8>, Vec<u8>) {
        let payload = if self.json {
            chat_json(self.size, 42)
        } else {
            sample_payload(self.size, self.opcode == OP_TEXT)
        };
        self.frame(pool, payload)
    }

    /// `payload` and its frame.
    fn frame(&self, pool: &Pool, payload: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let mut frame = Vec::with_capacity(self.size + 14);
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        match pool.client_window() {
            Some(bits) => {
                let compressed = deflate_message(&payload, bits, CLIENT_LEVEL);
                encode_masked_ext(&mut frame, true, true, self.opcode, &compressed, mask)
            }
            None => encode_masked(&mut frame, true, self.opcode, &payload, mask),
        }
        (payload, frame)
    }
}

/// The user id of a chat message from [`chat_json_with_id`] (the digits after `"id":`).
fn json_id(json: &[u8]) -> Option<usize> {
    let rest = json.strip_prefix(br#"{"type":"message","id":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// What every connection received, and the size of the frames sent (the mean, when connections
/// send different ones), as `key=value`s for the RESULT line and a line for people, printed by
/// [`Wire::print`]: how many messages came compressed, their payload bytes on the wire and inflated
/// per message. Empty without permessage-deflate.
struct Wire {
    kv: String,
    line: Option<String>,
}

impl Wire {
    fn print(&self) {
        if let Some(line) = &self.line {
            println!("{line}");
        }
    }
}

fn wire_report(pool: &Pool, sent_frame_bytes: Option<f64>) -> Wire {
    let Some(agreed) = pool.clients.first().and_then(|c| c.deflate) else {
        return Wire {
            kv: String::new(),
            line: None,
        };
    };
    let r = pool.received();
    let per = |bytes: u64| bytes as f64 / r.messages.max(1) as f64;
    let line = format!(
        "permessage-deflate {agreed:?}: {} of {} messages received compressed, {:.1} B per message on the wire for {:.1} B inflated{}",
        r.compressed,
        r.messages,
        per(r.wire_bytes),
        per(r.plain_bytes),
        sent_frame_bytes.map_or(String::new(), |f| format!("; sent as {f:.1} B frames")),
    );
    let kv = format!(
        " deflate=1 received={} received_compressed={} wire_bytes_per_msg={:.1} plain_bytes_per_msg={:.1}{}",
        r.messages,
        r.compressed,
        per(r.wire_bytes),
        per(r.plain_bytes),
        sent_frame_bytes.map_or(String::new(), |f| format!(" sent_frame_bytes={f:.1}")),
    );
    Wire {
        kv,
        line: Some(line),
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
        deflate: match flags.opt("deflate").unwrap_or("off") {
            "on" => true,
            "off" => false,
            other => {
                wsloop_peers::usage_exit(USAGE, &format!("--deflate is on or off, not {other:?}"))
            }
        },
        json: match flags.opt("payload").unwrap_or("sample") {
            "json" => true,
            "sample" => false,
            other => wsloop_peers::usage_exit(
                USAGE,
                &format!("--payload is sample or json, not {other:?}"),
            ),
        },
        tls: flags.opt("tls-ca").map(|ca| {
            let resume = match flags.opt("tls-resume").unwrap_or("off") {
                "on" => true,
                "off" => false,
                other => wsloop_peers::usage_exit(
                    USAGE,
                    &format!("--tls-resume is on or off, not {other:?}"),
                ),
            };
            TlsClient::from_ca_file(ca, resume).unwrap_or_else(|e| {
                eprintln!("loadgen: --tls-ca {e}");
                std::process::exit(2)
            })
        }),
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
    let mut pool = Pool::open(c.addr, c.conns, c.offer(), c.tls())?;
    let (expected, frame) = c.message(&pool);

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
    let wire = wire_report(&pool, Some(frame.len() as f64));
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
    wire.print();
    let wire_kv = &wire.kv;
    println!(
        "RESULT mode=echo conns={} size={} msgs={msgs} secs={wall:.3} msgs_per_s={rate:.0} p50_us={:.1} p99_us={:.1} max_us={:.1} {cpu}{wire_kv}{}",
        c.conns, c.size, us(pct(0.50)), us(pct(0.99)), us(latencies.last()), c.tls_kv()
    );
    Ok(())
}

/// Every round, `--senders` of the clients (all of them unless it says fewer, spread over the
/// connections) each send one message, and every client must receive all of them before the next
/// round starts: `conns` x `senders` deliveries a round (N² with every client sending).
fn broadcast(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let max_rounds: u64 = flags.get("max-rounds", 100_000);
    let mut pool = Pool::open(c.addr, c.conns, c.offer(), c.tls())?;
    let n = c.conns;
    let senders = flags.get("senders", n).clamp(1, n);
    let sender_conn = |j: usize| j * n / senders;
    // With --payload json each sender sends messages of its own, from its own user id, cycling
    // through enough of them that a sender's message comes back only after more than 128 KiB of
    // others (4 of the largest deflate window): a server that keeps a compression context per
    // receiver then meets what it would in a chat, messages alike in shape but never one that is
    // still in its window. Without it every client sends the one sample payload.
    let cycle = if c.json {
        (4 * 32_768usize).div_ceil(senders * c.size.max(1)).max(1)
    } else {
        1
    };
    let messages: Vec<Vec<(Vec<u8>, Vec<u8>)>> = if c.json {
        (0..senders)
            .map(|j| {
                (0..cycle)
                    .map(|k| {
                        let payload =
                            chat_json_with_id(c.size, (j * cycle + k) as u64, Some(j + 1));
                        c.frame(&pool, payload)
                    })
                    .collect()
            })
            .collect()
    } else {
        vec![vec![c.message(&pool)]]
    };
    let expected = |round: usize, got: &[u8]| -> &[u8] {
        let by_sender = match messages.len() {
            1 => &messages[0],
            _ => match json_id(got).and_then(|id| messages.get(id.wrapping_sub(1))) {
                Some(by_sender) => by_sender,
                None => return &[],
            },
        };
        &by_sender[round % by_sender.len()].0
    };

    let start = Instant::now();
    let measure_from = start + c.warmup;
    let mut window: Option<CpuWindow> = None;
    let mut round_times: Vec<u64> = Vec::new();
    for round in 0.. {
        // One round: every sender sends once, then every client waits until it has them all.
        let round_start = Instant::now();
        for client in &mut pool.clients {
            client.received = 0;
        }
        for j in 0..senders {
            let by_sender = &messages[j % messages.len()];
            let frame = &by_sender[round % by_sender.len()].1;
            pool.clients[sender_conn(j)].send(frame).map_err(str_err)?;
        }
        let mut waiting = n;
        while waiting > 0 {
            if round_start.elapsed() > STEP_TIMEOUT {
                return Err(format!(
                    "round timed out: {waiting} of {n} clients still waiting"
                ));
            }
            pool.turn(round_start + STEP_TIMEOUT, &mut |client, op, got| {
                if op != c.opcode || got != expected(round, got) {
                    return Err(io::Error::other("delivery differs from the message sent"));
                }
                client.received += 1;
                if client.received == senders {
                    waiting -= 1;
                } else if client.received > senders {
                    return Err(io::Error::other(
                        "more deliveries than senders in one round",
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
    let frames: Vec<usize> = messages.iter().flatten().map(|(_, f)| f.len()).collect();
    let mean = frames.iter().sum::<usize>() as f64 / frames.len() as f64;
    let wire = wire_report(&pool, Some(mean));
    pool.close();

    let rounds = round_times.len();
    let deliveries = (rounds * n * senders) as f64;
    round_times.sort_unstable();
    let ms = |q: f64| round_times[((rounds as f64 * q) as usize).min(rounds - 1)] as f64 / 1e6;
    let who = if senders == n {
        String::new()
    } else {
        format!(" ({senders} of them sending each round)")
    };
    println!(
        "broadcast {n} clients{who} x {} B: {rounds} rounds in {wall:.2} s = {:.1} rounds/s, {:.0} deliveries/s; round p50 {:.2} ms, p99 {:.2} ms",
        c.size, rounds as f64 / wall, deliveries / wall, ms(0.5), ms(0.99)
    );
    let cpu = report_cpu(wall, own, server, deliveries, "delivery");
    wire.print();
    let wire_kv = &wire.kv;
    println!(
        "RESULT mode=broadcast conns={n} senders={senders} size={} rounds={rounds} secs={wall:.3} rounds_per_s={:.2} deliveries_per_s={:.0} round_p50_ms={:.3} round_p99_ms={:.3} {cpu}{wire_kv}{}",
        c.size, rounds as f64 / wall, deliveries / wall, ms(0.5), ms(0.99), c.tls_kv()
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
    let mut pool = Pool::open(c.addr, c.conns, c.offer(), c.tls())?;
    settle();
    let open = rss()?;

    // Then one echo on each, so that buffers allocated on first use are counted too (with
    // permessage-deflate: a compressed message each way, so that a connection's own streams are
    // made, if it keeps any).
    let (expected, frame) = c.message(&pool);
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
    let wire = wire_report(&pool, Some(frame.len() as f64));
    let compressed = pool.received().compressed;
    if c.deflate && compressed < c.conns as u64 {
        println!(
            "warning: only {compressed} of {} echoes came back compressed (below the server's threshold?)",
            c.conns
        );
    }
    pool.close();
    settle();
    let after = rss()?;

    let per = |rss: u64| (rss as f64 - before as f64) / c.conns as f64;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "idle {} connections: server RSS {:.1} MiB before, {:.1} MiB handshaked ({:.0} B/conn), {:.1} MiB after one {} B echo each ({:.0} B/conn), {:.1} MiB after closing",
        c.conns, mib(before), mib(open), per(open), mib(used), c.size, per(used), mib(after)
    );
    wire.print();
    let wire_kv = &wire.kv;
    println!(
        "RESULT mode=idle conns={} size={} rss_before={before} rss_open={open} rss_used={used} rss_closed={after} bytes_per_conn_open={:.0} bytes_per_conn_used={:.0}{wire_kv}{}",
        c.conns, c.size, per(open), per(used), c.tls_kv()
    );
    Ok(())
}

/// Messages the chat senders may have out (sent, not yet delivered to every user) at once, unless
/// `--window` says otherwise.
const CHAT_WINDOW: usize = 4;
/// Delivery latency histogram: 10 µs buckets up to 10 s.
const LATENCY_BUCKET_US: u64 = 10;
const LATENCY_BUCKETS: usize = 1_000_000;

/// A chat run's books: what was sent, what each user has yet to see, and the one order every user
/// must see the messages in.
struct ChatBooks {
    users: usize,
    senders: usize,
    /// The text of each message: its number, padded with 'x' to the size.
    pad: String,
    sent_at: Vec<Instant>,
    /// Per message, the users that have yet to receive it.
    missing: Vec<u32>,
    /// Messages not yet received by every user.
    outstanding: usize,
    /// The messages in the order the first user to reach each position saw them; every user's k-th
    /// message must be `order[k]`.
    order: Vec<u32>,
    /// Per sender, the last of its messages placed in `order` (a sender's messages keep their order).
    last_in_order: Vec<Option<u32>>,
    first_measured: Option<usize>,
    stop_at: Option<usize>,
    histogram: Vec<u64>,
    deliveries: u64,
}

impl ChatBooks {
    fn text(&self, seq: usize) -> String {
        format!("{seq:08}{}", self.pad)
    }

    /// One message received by `client` (user `client.tag`; `client.received` is how many chat
    /// messages it has seen so far). Anything but a chat message (a late join, a leave, the user
    /// count) is let through.
    fn receive(&mut self, client: &mut Client, op: u8, got: &[u8]) -> io::Result<()> {
        let json = std::str::from_utf8(got).map_err(io::Error::other)?;
        if op != OP_TEXT
            || json.contains(r#""type":"history""#)
            || !json.contains(r#""type":"message""#)
        {
            return Ok(());
        }
        let text = json
            .split(r#""text":""#)
            .nth(1)
            .and_then(|t| t.split('"').next())
            .ok_or_else(|| io::Error::other(format!("a message without text: {json}")))?;
        let seq = text
            .get(..8)
            .and_then(|digits| digits.parse::<usize>().ok())
            .filter(|&seq| seq < self.sent_at.len() && text == self.text(seq))
            .ok_or_else(|| io::Error::other(format!("not a message that was sent: {json}")))?;
        let user = client.tag;
        let position = client.received;
        if position == self.order.len() {
            let sender = seq % self.senders;
            if self.last_in_order[sender].is_some_and(|last| last as usize >= seq) {
                return Err(io::Error::other(format!(
                    "user {user}: message {seq} of sender {sender} came after a later one of the same sender"
                )));
            }
            self.last_in_order[sender] = Some(seq as u32);
            self.order.push(seq as u32);
        } else if self.order[position] as usize != seq {
            return Err(io::Error::other(format!(
                "user {user}: message {seq} arrived as its message #{position}, where another user had message {}",
                self.order[position]
            )));
        }
        client.received += 1;
        if self.missing[seq] == 0 {
            return Err(io::Error::other(format!(
                "message {seq} delivered more than {} times",
                self.users
            )));
        }
        self.missing[seq] -= 1;
        if self.missing[seq] == 0 {
            self.outstanding -= 1;
        }
        if self.first_measured.is_some_and(|first| seq >= first)
            && self.stop_at.is_none_or(|s| seq < s)
        {
            let us = self.sent_at[seq].elapsed().as_micros() as u64;
            self.histogram[((us / LATENCY_BUCKET_US) as usize).min(LATENCY_BUCKETS - 1)] += 1;
            self.deliveries += 1;
        }
        Ok(())
    }
}

/// A comma-separated list of numbers (`--ports 9001,9002`).
fn number_list<T: std::str::FromStr>(flags: &Flags, name: &str) -> Option<Vec<T>> {
    let list = flags.opt(name)?;
    let parsed: Option<Vec<T>> = list.split(',').map(|v| v.trim().parse().ok()).collect();
    match parsed {
        Some(values) if !values.is_empty() => Some(values),
        _ => wsloop_peers::usage_exit(USAGE, &format!("bad value {list:?} for --{name}")),
    }
}

/// The chatroom example with `conns` users, spread over the nodes of `--ports` (user i on node
/// i mod k; one node: `--port`). `--senders` of them (1, a number, or `all`) send numbered
/// messages in turn, at most `--window` of them not yet delivered to every user; every user receives
/// each one as the chatroom's JSON. Every user must receive every message, byte for byte, and all in
/// one and the same order (each sender's in the order sent); anything else fails the run. Reports
/// deliveries/s and the latency of each delivery, send to receipt; with `--server-pids` the nodes'
/// CPU per delivery and per message, with `--redis-pid` Redis's CPU per message. `--messages M`
/// stops after M messages (or `--secs`, whichever comes first).
fn chat(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let n = c.conns;
    let addrs: Vec<SocketAddr> = match number_list::<u16>(flags, "ports") {
        Some(ports) => ports
            .iter()
            .map(|&p| SocketAddr::new(c.addr.ip(), p))
            .collect(),
        None => vec![c.addr],
    };
    let nodes = addrs.len();
    let server_pids: Vec<u32> =
        number_list(flags, "server-pids").unwrap_or_else(|| c.server_pid.into_iter().collect());
    let redis_pid = flags.opt("redis-pid").map(|_| flags.get("redis-pid", 0u32));
    let senders = match flags.opt("senders") {
        Some("all") => n,
        _ => flags.get("senders", 1usize).clamp(1, n),
    };
    let window = flags.get("window", CHAT_WINDOW).clamp(1, 1 << 16);
    let max_messages = flags
        .opt("messages")
        .map(|_| flags.get("messages", 0usize).clamp(1, 99_999_999));
    // Sender j is user j * n / senders: one sender is user 0, on the first node; all: every user.
    let sender_conn = |j: usize| j * n / senders;

    let mut pool = Pool::open_with(&addrs, n, c.offer(), c.tls(), &mut |_, _, _| Ok(()))?;
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
        client.received = 0; // from here: the chat messages this user has seen
    }

    let mut books = ChatBooks {
        users: n,
        senders,
        pad: "x".repeat(c.size.saturating_sub(8)),
        sent_at: vec![],
        missing: vec![],
        outstanding: 0,
        order: vec![],
        last_in_order: vec![None; senders],
        first_measured: None,
        stop_at: None,
        histogram: vec![0u64; LATENCY_BUCKETS],
        deliveries: 0,
    };
    let start = Instant::now();
    let measure_from = start + c.warmup;
    let mut cpu: Option<CpuWindow> = None;
    let mut frame = Vec::with_capacity(c.size + 14);
    loop {
        let now = Instant::now();
        let sent = books.sent_at.len();
        if cpu.is_none() && (now >= measure_from || max_messages == Some(sent)) {
            cpu = Some(CpuWindow::start_many(&server_pids, redis_pid));
            books.first_measured = Some(sent);
        }
        if cpu.is_some()
            && books.stop_at.is_none()
            && (now >= measure_from + c.secs || max_messages == Some(sent))
        {
            books.stop_at = Some(sent);
        }
        if books.stop_at.is_some() && books.outstanding == 0 {
            break;
        }
        while books.stop_at.is_none()
            && books.outstanding < window
            && max_messages.is_none_or(|m| books.sent_at.len() < m)
        {
            let seq = books.sent_at.len();
            frame.clear();
            encode_masked(
                &mut frame,
                true,
                OP_TEXT,
                books.text(seq).as_bytes(),
                [1, 2, 3, 4],
            );
            pool.clients[sender_conn(seq % senders)]
                .send(&frame)
                .map_err(str_err)?;
            books.sent_at.push(Instant::now());
            books.missing.push(n as u32);
            books.outstanding += 1;
        }
        let turn_deadline = Instant::now() + STEP_TIMEOUT;
        pool.turn(turn_deadline, &mut |client, op, got| {
            books.receive(client, op, got)
        })?;
        if start.elapsed() > c.warmup + c.secs + STEP_TIMEOUT {
            return Err(format!(
                "{} messages never reached every user",
                books.outstanding
            ));
        }
    }
    let m = cpu.expect("a measured window").end_many();
    // A quiet moment: a message delivered once more than it should be fails the run.
    let until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < until {
        pool.turn(until, &mut |client, op, got| books.receive(client, op, got))?;
    }
    let wire = wire_report(&pool, None);
    pool.close();

    let (first, stop) = (
        books.first_measured.unwrap_or(0),
        books.stop_at.unwrap_or(0),
    );
    let messages = stop - first;
    let deliveries = books.deliveries;
    let quantile = |q: f64| quantile_us(&books.histogram, deliveries, q);
    // The window ends when sending stops; the deliveries of its last messages arrive just after.
    let wall = m.wall;
    let rate = deliveries as f64 / wall;
    let who = if senders == 1 {
        "one sender".to_string()
    } else {
        format!("{senders} senders in turn")
    };
    println!(
        "chat {n} users on {nodes} node(s), {who}, at most {window} in flight, {} B text: {messages} messages, {deliveries} deliveries in {wall:.2} s = {rate:.0} deliveries/s; delivery latency p50 {} us, p99 {} us; all {} messages seen in one order by every user",
        c.size, quantile(0.5), quantile(0.99), books.order.len()
    );
    let mut cpu = report_cpu(wall, m.own, m.total, deliveries as f64, "delivery");
    if m.servers.len() > 1 {
        let each: Vec<String> = m
            .servers
            .iter()
            .map(|s| s.map_or("?".into(), |s| format!("{:.0}%", 100.0 * s.total / wall)))
            .collect();
        println!("nodes' CPU, each: {}", each.join(", "));
        cpu += &format!(" node_cpu_pcts={}", each.join(",").replace('%', ""));
    }
    let per_msg = |secs: f64| {
        if messages > 0 {
            1e6 * secs / messages as f64
        } else {
            0.0
        }
    };
    if let Some(s) = m.total {
        println!(
            "server CPU per chat message: {:.1} us (all nodes)",
            per_msg(s.total)
        );
        cpu += &format!(" server_us_per_msg={:.3}", per_msg(s.total));
    }
    if let Some(r) = m.redis {
        println!(
            "redis-server CPU {:.0}% of one core, {:.2} us per chat message ({:.2} us of it in its own code)",
            100.0 * r.total / wall,
            per_msg(r.total),
            per_msg(r.user)
        );
        cpu += &format!(
            " redis_cpu_pct={:.1} redis_us_per_msg={:.3} redis_user_us_per_msg={:.3}",
            100.0 * r.total / wall,
            per_msg(r.total),
            per_msg(r.user)
        );
    }
    wire.print();
    let wire_kv = &wire.kv;
    println!(
        "RESULT mode=chat nodes={nodes} conns={n} senders={senders} window={window} size={} messages={messages} deliveries={deliveries} secs={wall:.3} deliveries_per_s={rate:.0} p50_us={} p99_us={} {cpu}{wire_kv}",
        c.size, quantile(0.5), quantile(0.99)
    );
    Ok(())
}

/// What a connection does in a topic run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Holds the topic: the k-th subscriber.
    Subscriber(usize),
    /// Sends the numbered messages (never subscribed): the j-th sender.
    Sender(usize),
    /// Neither: must receive nothing at all.
    Quiet,
}

/// The topic of `loadgen topic`.
const TOPIC: &str = "room";

/// A topic that `--subscribers` of `--conns` connections hold, against the broadcast example. The
/// subscribers (spread over the connections, so over the server's loops too) send `sub:room` and wait
/// for `subscribed:room`; then `--senders` other connections each send numbered messages,
/// `pub:room:...` (the server publishes each to the topic) or `each:room:...` (the application sends
/// it to each subscriber with `send`), with at most `--window` of each sender's messages not yet
/// delivered to every subscriber. Every subscriber must receive every message, byte for byte and in
/// each sender's order; every other connection (the senders included) must receive nothing, and any
/// data byte that reaches one fails the run. Reports deliveries/s, the latency of each delivery (send
/// to receipt) and the server's CPU per delivery.
fn topic(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let n = c.conns;
    if n < 2 {
        wsloop_peers::usage_exit(USAGE, "topic needs at least 2 connections");
    }
    let subs = flags.get("subscribers", 10usize).clamp(1, n - 1);
    let senders = flags.get("senders", 1usize).clamp(1, (n - subs).min(999));
    let window = flags.get("window", 16usize).clamp(1, 1 << 16);
    let via = match flags.opt("mode").unwrap_or("pub") {
        via @ ("pub" | "each") => via,
        other => wsloop_peers::usage_exit(USAGE, &format!("--mode is pub or each, not {other:?}")),
    };
    // "pub:room:SSS:NNNNNNNNNN:" (sender, sequence number), padded with 'x' to the size.
    let prefix = format!("{via}:{TOPIC}:");
    let size = flags.get("size", 32usize).max(prefix.len() + 15);
    let write_text = |out: &mut Vec<u8>, sender: usize, seq: usize| {
        out.clear();
        out.extend_from_slice(format!("{prefix}{sender:03}:{seq:010}:").as_bytes());
        out.resize(size, b'x');
    };

    let mut roles = vec![Role::Quiet; n];
    for k in 0..subs {
        roles[k * n / subs] = Role::Subscriber(k);
    }
    let mut sender_conns = Vec::with_capacity(senders);
    for i in (0..n).rev() {
        if sender_conns.len() == senders {
            break;
        }
        if roles[i] == Role::Quiet {
            roles[i] = Role::Sender(sender_conns.len());
            sender_conns.push(i);
        }
    }
    let is_quiet = |tag: usize| !matches!(roles[tag], Role::Subscriber(_));
    let (mut stray_msgs, mut stray_bytes) = (0u64, 0usize);

    let mut pool = Pool::open(c.addr, n, c.offer(), c.tls())?;
    let mut frame = Vec::with_capacity(size + 14);
    encode_masked(
        &mut frame,
        true,
        OP_TEXT,
        format!("sub:{TOPIC}").as_bytes(),
        [5, 6, 7, 8],
    );
    for (i, role) in roles.iter().enumerate() {
        if let Role::Subscriber(_) = role {
            pool.clients[i].send(&frame).map_err(str_err)?;
        }
    }
    let ack = format!("subscribed:{TOPIC}");
    let mut acked = vec![false; subs];
    let mut waiting = subs;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while waiting > 0 {
        if Instant::now() > deadline {
            return Err(format!("{waiting} of {subs} subscriptions never answered"));
        }
        pool.turn(deadline, &mut |client, op, got| {
            match roles[client.tag] {
                Role::Subscriber(k) if !acked[k] && op == OP_TEXT && got == ack.as_bytes() => {
                    acked[k] = true;
                    waiting -= 1;
                }
                Role::Subscriber(_) => {
                    return Err(io::Error::other(format!(
                        "while subscribing: {:?}",
                        String::from_utf8_lossy(got)
                    )))
                }
                _ => (stray_msgs, stray_bytes) = (stray_msgs + 1, stray_bytes + got.len()),
            }
            Ok(())
        })?;
    }

    let start = Instant::now();
    let measure_from = start + c.warmup;
    let mut cpu: Option<CpuWindow> = None;
    // Per sender: each message's send time and how many subscribers have yet to receive it.
    let mut sent: Vec<Vec<(Instant, usize)>> = vec![Vec::new(); senders];
    let mut outstanding = vec![0usize; senders];
    // Per subscriber and sender: the sequence number due next.
    let mut due = vec![vec![0usize; senders]; subs];
    let (mut first_measured, mut stop_at) = (None::<Vec<usize>>, None::<Vec<usize>>);
    let mut histogram = vec![0u64; LATENCY_BUCKETS];
    let mut deliveries = 0u64;
    let (mut text, mut expected) = (Vec::with_capacity(size), Vec::with_capacity(size));
    loop {
        let now = Instant::now();
        let counts = |sent: &[Vec<(Instant, usize)>]| sent.iter().map(Vec::len).collect();
        if cpu.is_none() && now >= measure_from {
            cpu = Some(CpuWindow::start(c.server_pid));
            first_measured = Some(counts(&sent));
        } else if cpu.is_some() && stop_at.is_none() && now >= measure_from + c.secs {
            stop_at = Some(counts(&sent));
        }
        if stop_at.is_some() && outstanding.iter().all(|&o| o == 0) {
            break;
        }
        if stop_at.is_none() {
            for (j, &conn) in sender_conns.iter().enumerate() {
                while outstanding[j] < window {
                    write_text(&mut text, j, sent[j].len());
                    frame.clear();
                    encode_masked(&mut frame, true, OP_TEXT, &text, [1, 2, 3, 4]);
                    pool.clients[conn].send(&frame).map_err(str_err)?;
                    sent[j].push((Instant::now(), subs));
                    outstanding[j] += 1;
                }
            }
        }
        let turn_deadline = Instant::now() + STEP_TIMEOUT;
        pool.turn(turn_deadline, &mut |client, op, got| {
            let Role::Subscriber(k) = roles[client.tag] else {
                (stray_msgs, stray_bytes) = (stray_msgs + 1, stray_bytes + got.len());
                return Ok(());
            };
            let numbers = got
                .strip_prefix(prefix.as_bytes())
                .and_then(|rest| std::str::from_utf8(rest.get(..14)?).ok())
                .and_then(|ns| Some((ns[..3].parse::<usize>().ok()?, ns[4..].parse().ok()?)));
            let Some((j, seq)) = numbers.filter(|&(j, _)| op == OP_TEXT && j < senders) else {
                return Err(io::Error::other(format!(
                    "not a numbered message: {:?}",
                    String::from_utf8_lossy(got)
                )));
            };
            if seq != due[k][j] {
                return Err(io::Error::other(format!(
                    "message {seq} of sender {j} arrived where {} was due",
                    due[k][j]
                )));
            }
            write_text(&mut expected, j, seq);
            let Some((at, missing)) = sent[j].get_mut(seq).filter(|_| got == expected) else {
                return Err(io::Error::other(format!(
                    "delivery differs from message {seq} of sender {j}"
                )));
            };
            due[k][j] += 1;
            *missing -= 1;
            if *missing == 0 {
                outstanding[j] -= 1;
            }
            let measured = first_measured.as_ref().is_some_and(|first| seq >= first[j])
                && stop_at.as_ref().is_none_or(|stop| seq < stop[j]);
            if measured {
                let us = at.elapsed().as_micros() as u64;
                histogram[((us / LATENCY_BUCKET_US) as usize).min(LATENCY_BUCKETS - 1)] += 1;
                deliveries += 1;
            }
            Ok(())
        })?;
        if start.elapsed() > c.warmup + c.secs + STEP_TIMEOUT {
            let left: usize = outstanding.iter().sum();
            return Err(format!("{left} messages never reached every subscriber"));
        }
    }
    let (wall, own, server) = cpu.expect("a measured window").end();

    // A quiet moment in which nothing may arrive anywhere (a late extra delivery to a subscriber fails
    // its order check), then whatever a connection without the topic holds unread counts as received.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        pool.turn(until, &mut |client, op, got| {
            if is_quiet(client.tag) {
                (stray_msgs, stray_bytes) = (stray_msgs + 1, stray_bytes + got.len());
                return Ok(());
            }
            Err(io::Error::other(format!(
                "a delivery after every message had arrived (opcode {op}, {} B)",
                got.len()
            )))
        })?;
    }
    stray_bytes += pool
        .clients
        .iter()
        .filter(|client| is_quiet(client.tag))
        .map(Client::pending_bytes)
        .sum::<usize>();
    let wire = wire_report(&pool, None);
    pool.close();
    let others = n - subs;
    if stray_bytes > 0 {
        return Err(format!(
            "{stray_msgs} messages ({stray_bytes} bytes of payload or unread frames) reached the {others} connections that hold no subscription"
        ));
    }

    let messages: usize = match (&first_measured, &stop_at) {
        (Some(first), Some(stop)) => stop.iter().zip(first).map(|(s, f)| s - f).sum(),
        _ => 0,
    };
    let (p50, p99) = (
        quantile_us(&histogram, deliveries, 0.5),
        quantile_us(&histogram, deliveries, 0.99),
    );
    let rate = deliveries as f64 / wall;
    println!(
        "topic {via}: {subs} of {n} connections subscribed, {senders} sender(s) with at most {window} messages in flight each, {size} B text: {messages} messages, {deliveries} deliveries in {wall:.2} s = {rate:.0} deliveries/s; delivery latency p50 {p50} us, p99 {p99} us; {stray_bytes} bytes to the other {others} connections"
    );
    let cpu = report_cpu(wall, own, server, deliveries as f64, "delivery");
    wire.print();
    let wire_kv = &wire.kv;
    println!(
        "RESULT mode=topic via={via} conns={n} subscribers={subs} senders={senders} window={window} size={size} messages={messages} deliveries={deliveries} secs={wall:.3} deliveries_per_s={rate:.0} p50_us={p50} p99_us={p99} stray_bytes={stray_bytes} {cpu}{wire_kv}"
    );
    Ok(())
}

/// The `q` quantile of `count` latencies in the histogram, in µs (the top of its bucket).
fn quantile_us(histogram: &[u64], count: u64, q: f64) -> u64 {
    let target = ((count as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (bucket, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= target {
            return (bucket as u64 + 1) * LATENCY_BUCKET_US;
        }
    }
    histogram.len() as u64 * LATENCY_BUCKET_US
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

/// Where a connection of a handshakes run is: the upgrade (TLS first, if asked) is under way, its
/// echo is awaited, or its close is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Upgrading,
    Echoing,
    Closing,
}

/// One connection of a handshakes run: the client, its step and when it was started.
struct Attempt {
    client: Client,
    step: Step,
    started: Instant,
}

/// New connections, `--conns-parallel` in flight, each doing the whole life of a short WebSocket
/// connection: connect, TLS (with `--tls-ca`), upgrade, one echo, close. Each that completes makes
/// room for the next, in the same slot (and token).
fn handshakes(flags: &Flags) -> Result<(), String> {
    let c = common(flags);
    let parallel: usize = flags.get("conns-parallel", 16usize).clamp(1, 4096);
    let payload = sample_payload(c.size, true);
    let mut frame = Vec::with_capacity(c.size + 14);
    encode_masked(
        &mut frame,
        true,
        OP_TEXT,
        &payload,
        [0x37, 0xfa, 0x21, 0x3d],
    );
    // A plain blocking connect first, so that an absent server is one clear error.
    TcpStream::connect_timeout(&c.addr, Duration::from_secs(2))
        .map_err(|e| format!("cannot connect to {}: {e} (is the server running?)", c.addr))?;

    let mut poll = Poll::new().map_err(str_err)?;
    let mut events = Events::with_capacity(1024);
    let start_one = |poll: &Poll, slot: usize| -> Result<Attempt, String> {
        let mut client = Client::connect_with(c.addr, None, c.tls())
            .map_err(|e| format!("connect to {}: {e}", c.addr))?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut client.stream, Token(slot), interest)
            .map_err(str_err)?;
        Ok(Attempt {
            client,
            step: Step::Upgrading,
            started: Instant::now(),
        })
    };
    let mut slots: Vec<Attempt> = Vec::with_capacity(parallel);
    for slot in 0..parallel {
        slots.push(start_one(&poll, slot)?);
    }

    let start = Instant::now();
    let (measure_from, stop_at) = (start + c.warmup, start + c.warmup + c.secs);
    let mut window: Option<CpuWindow> = None;
    let mut durations: Vec<u64> = Vec::with_capacity(1 << 20);
    let mut total = 0u64;
    let mut last_progress = Instant::now();
    let measured = loop {
        let now = Instant::now();
        if window.is_none() && now >= measure_from {
            window = Some(CpuWindow::start(c.server_pid));
        }
        if now >= stop_at {
            break window
                .as_ref()
                .expect("window starts before it stops")
                .end();
        }
        if now > last_progress + STEP_TIMEOUT {
            return Err(format!(
                "no connection completed for {STEP_TIMEOUT:?} ({total} so far)"
            ));
        }
        let wait = stop_at
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        match poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(str_err(e)),
        }
        let counting = window.is_some();
        for event in events.iter() {
            let slot = event.token().0;
            let attempt = &mut slots[slot];
            let client = &mut attempt.client;
            let mut result = if event.is_writable() || client.phase == Phase::Connecting {
                client.on_writable()
            } else {
                Ok(())
            };
            let step = &mut attempt.step;
            if result.is_ok() && event.is_readable() {
                result = client.on_readable(|client, op, got| {
                    if *step != Step::Echoing || op != OP_TEXT || got != payload.as_slice() {
                        return Err(io::Error::other("a message other than the echo awaited"));
                    }
                    *step = Step::Closing;
                    client.send_close()
                });
            }
            // The upgrade's answer came: the one message.
            if result.is_ok() && *step == Step::Upgrading && client.phase == Phase::Open {
                *step = Step::Echoing;
                result = client.send(&frame);
            }
            result.map_err(|e| format!("connection #{total} (slot {slot}): {e}"))?;
            if client.closed {
                let now = Instant::now();
                if counting && now < stop_at {
                    durations.push((now - attempt.started).as_nanos() as u64);
                }
                total += 1;
                last_progress = now;
                // Out of the poll before its token goes to the next one; dropped by the replacing.
                let _ = poll.registry().deregister(&mut attempt.client.stream);
                *attempt = start_one(&poll, slot)?;
            }
        }
    };
    let (wall, own, server) = measured;
    let count = durations.len();
    durations.sort_unstable();
    let pct = |q: f64| {
        durations
            .get(((count as f64 * q) as usize).min(count.saturating_sub(1)))
            .map_or(0.0, |&ns| ns as f64 / 1000.0)
    };
    let rate = count as f64 / wall;
    let tls = if c.tls.is_some() { "wss" } else { "ws" };
    println!(
        "handshakes ({tls}, {parallel} in flight, one {} B echo each): {count} in {wall:.2} s = {rate:.0} per s; each took p50 {:.0} us, p99 {:.0} us",
        c.size, pct(0.5), pct(0.99)
    );
    let cpu = report_cpu(wall, own, server, count as f64, "handshake");
    println!(
        "RESULT mode=handshakes parallel={parallel} size={} handshakes={count} secs={wall:.3} handshakes_per_s={rate:.0} p50_us={:.1} p99_us={:.1} {cpu}{}",
        c.size, pct(0.5), pct(0.99), c.tls_kv()
    );
    Ok(())
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
