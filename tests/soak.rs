//! Soak, load and fault tests on loopback: a thousand connect/close cycles, clients that vanish mid-handshake and
//! mid-frame, an accept storm, a process out of file descriptors, ten thousand connections and a long chat with a
//! slow reader.
//!
//! The quick ones run with `cargo test`. The long ones are `#[ignore]`d and run by `scripts/soak.sh`, which builds
//! in release mode and prints their figures:
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Some tests need the server in a process of its own, to give it its own file-descriptor limit or to measure its
//! memory without the clients': they run this test binary again, where [`child_server_process`] serves
//! (`common::process::ChildServer`).
//! Tests here count the process's open files and its memory, so they take turns (see [`serial`]). They read
//! `/proc`, so they are Linux-only.
#![cfg(target_os = "linux")]

mod common;

use std::env;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::process::{announce_child, rss_kib, ChildServer};
use common::{connect_raw, masked, request, still_serves, Echo, TIMEOUT};
use wsloop::frame::{self, Limits, OpCode};
use wsloop::{
    CloseCode, Closed, Config, ConnId, Context, Handle, Handler, Message, Server, Status,
};

/// Names the application a child process serves (`echo` or `broadcast`); unset, [`child_server_process`] returns.
const CHILD_APP: &str = "WSLOOP_SOAK_CHILD";
/// If set in a child, its soft `RLIMIT_NOFILE`.
const CHILD_NOFILE: &str = "WSLOOP_SOAK_NOFILE";

// ---------------------------------------------------------------------------------------------------------------
// The applications.

/// Relays each received message to every connection, the sender included: the chatroom without its JSON.
struct Broadcast;

impl Handler for Broadcast {
    fn send(&mut self, ws: &mut Handle<'_>, _id: ConnId, msg: Message<'_>) {
        ws.broadcast(msg);
    }
}

/// Echo, counting `add` and `close` calls, so a test can check that every connection that opened also closed.
struct CountingEcho {
    adds: Arc<AtomicUsize>,
    closes: Arc<AtomicUsize>,
}

impl Handler for CountingEcho {
    fn add(&mut self, _: &mut Handle<'_>, _: ConnId, _: &Context<'_>) {
        self.adds.fetch_add(1, Ordering::SeqCst);
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        ws.send(id, msg);
    }

    fn close(&mut self, _: &mut Handle<'_>, _: ConnId, _: Closed<'_>) {
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The process: open files, memory, CPU time, limits.

/// The tests count this process's open files and measure its memory, so they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Open file descriptors of a process (`"self"` or a pid), from `/proc/<pid>/fd`.
fn open_fds(pid: &str) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd is readable")
        .count()
}

/// User plus system CPU time of a process, in seconds (fields 14 and 15 of `/proc/<pid>/stat`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis start at field 3.
    let rest = &stat[stat.rfind(')').expect("a (comm) field") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

/// Lets this process (and the children it starts afterwards) open `needed` files: the soft limit goes up to the
/// hard limit, and the hard limit too if it is lower and we may raise it. Err says why not, for a skip message.
fn raise_nofile(needed: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(format!("getrlimit: {}", io::Error::last_os_error()));
        }
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max.max(needed),
            rlim_max: limit.rlim_max.max(needed),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            return Ok(wanted.rlim_cur);
        }
        let soft_to_hard = libc::rlimit {
            rlim_cur: limit.rlim_max,
            ..limit
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft_to_hard) != 0 {
            return Err(format!("setrlimit: {}", io::Error::last_os_error()));
        }
    }
    Err(format!(
        "RLIMIT_NOFILE hard limit is {} and cannot be raised to {needed}; run as root or raise it \
         (`ulimit -Hn {needed}`)",
        limit.rlim_max
    ))
}

/// Sets the soft `RLIMIT_NOFILE` of this process.
fn set_nofile(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in `raise_nofile`.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = soft.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    assert!(ok, "setrlimit: {}", io::Error::last_os_error());
}

/// Makes `close` send a reset instead of a FIN (`SO_LINGER` with a zero timeout).
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is a live socket and the option value is a properly sized `linger`.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// How often the kernel dropped a connection because a listener's accept queue was full (`ListenOverflows` in
/// `/proc/net/netstat`; counts for the whole network namespace).
fn listen_overflows() -> u64 {
    let netstat = fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (tcp_ext.next(), tcp_ext.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "ListenOverflows")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// Polls `check` until it holds or `within` passes; false on timeout.
fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A buffered client, fast enough for thousands of connections and tens of thousands of frames.

struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    /// Connects and completes the opening handshake.
    fn connect(addr: SocketAddr) -> Peer {
        let mut stream = connect_raw(addr);
        stream.write_all(request(addr).as_bytes()).unwrap();
        Peer::handshake(stream)
    }

    /// Reads the 101 response to a request already written to `stream`.
    fn handshake(stream: TcpStream) -> Peer {
        let mut peer = Peer {
            stream,
            buf: Vec::new(),
        };
        let head_end = loop {
            if let Some(at) = peer.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            peer.fill().expect("the handshake response");
        };
        let head = String::from_utf8_lossy(&peer.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        peer.buf.drain(..head_end);
        peer
    }

    /// A second handle on the same connection, for a thread that only writes.
    fn writer(&self) -> Peer {
        Peer {
            stream: self.stream.try_clone().unwrap(),
            buf: Vec::new(),
        }
    }

    /// Reads what the socket has into the buffer.
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }

    /// Reads one (unfragmented) server frame.
    fn read_frame(&mut self) -> io::Result<(OpCode, Vec<u8>)> {
        let server = Limits {
            max_payload: 1 << 40,
            require_mask: false,
            deflate: false,
        };
        loop {
            if let Ok(Status::Complete(h)) = frame::decode_header(&self.buf, &server) {
                let end = h.header_len + h.payload_len as usize;
                if self.buf.len() >= end {
                    assert!(h.fin && h.masking_key.is_none(), "{h:?}");
                    let payload = self.buf[h.header_len..end].to_vec();
                    self.buf.drain(..end);
                    return Ok((h.opcode, payload));
                }
            }
            self.fill()?;
        }
    }

    fn send_text(&mut self, text: &str) {
        self.stream
            .write_all(&masked(true, OpCode::Text, text.as_bytes()))
            .unwrap();
    }
}

/// One chat line: its sender and its number in that sender's sequence, padded with dots to `size` bytes.
fn chat_line(sender: usize, seq: usize, size: usize) -> String {
    let mut line = format!("{sender}:{seq}:");
    line.extend(std::iter::repeat_n('.', size.saturating_sub(line.len())));
    line
}

/// The sender and number of a chat line.
fn parse_chat_line(payload: &[u8]) -> (usize, usize) {
    let text = std::str::from_utf8(payload).expect("a text message");
    let mut parts = text.split(':');
    let sender = parts.next().unwrap().parse().unwrap();
    let seq = parts.next().unwrap().parse().unwrap();
    (sender, seq)
}

// ---------------------------------------------------------------------------------------------------------------
// The server in a child process.

/// The server side of the tests that run this binary again: not a test of its own (ignored, so that no test run
/// takes it for one), and it does nothing unless `WSLOOP_SOAK_CHILD` is set.
///
/// The child serves until its stdin closes (when the test that started it ends, even by a panic) or a few minutes
/// pass (`common::process::announce_child`). It logs `RUST_LOG` to stderr.
#[test]
#[ignore = "the child half of the tests that run a server in a process of its own; they start it themselves"]
fn child_server_process() {
    let Ok(app) = env::var(CHILD_APP) else {
        return;
    };
    if let Ok(soft) = env::var(CHILD_NOFILE) {
        set_nofile(soft.parse().expect("a number of files"));
    }
    let _ = env_logger::Builder::from_default_env().try_init();
    let config = Config::default().max_users(100_000);
    let server = Server::bind("127.0.0.1:0", config).expect("bind 127.0.0.1:0");
    announce_child(&server);
    match app.as_str() {
        "echo" => server.run(Echo),
        "broadcast" => server.run(Broadcast),
        other => panic!("unknown application {other}"),
    }
    .expect("the loop must not fail");
}

/// Starts `app` (`echo` or `broadcast`) in a child process, with a soft file limit of `nofile` if given.
fn start_child(app: &str, nofile: Option<u64>) -> ChildServer {
    let mut vars = vec![(CHILD_APP, app.to_string())];
    if let Some(nofile) = nofile {
        vars.push((CHILD_NOFILE, nofile.to_string()));
    }
    ChildServer::start("child_server_process", &vars)
}

// ---------------------------------------------------------------------------------------------------------------
// Quick tests, run by `cargo test`.

/// The ways a client can leave, in turn.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// Echo one message, then the full closing handshake.
    Clean,
    /// TCP FIN right after the handshake.
    Drop,
    /// TCP reset right after a message.
    Reset,
    /// Half a request head, then FIN.
    MidHandshake,
    /// Half a request head, then a reset.
    MidHandshakeReset,
    /// A frame header and half its payload, then FIN.
    MidFrame,
    /// Connect, send nothing, FIN.
    Silent,
    /// Ask for a 256 KiB echo and leave without reading it: the server's write fails part way.
    WhileWritten,
}

const LEAVES: [Leave; 8] = [
    Leave::Clean,
    Leave::Drop,
    Leave::Reset,
    Leave::MidHandshake,
    Leave::MidHandshakeReset,
    Leave::MidFrame,
    Leave::Silent,
    Leave::WhileWritten,
];

impl Leave {
    fn handshakes(self) -> bool {
        !matches!(
            self,
            Leave::MidHandshake | Leave::MidHandshakeReset | Leave::Silent
        )
    }

    /// One connection that leaves this way.
    fn cycle(self, addr: SocketAddr) {
        let req = request(addr);
        let half_request = &req.as_bytes()[..req.len() / 2];
        match self {
            Leave::Clean => {
                let mut peer = Peer::connect(addr);
                peer.send_text("hello");
                assert_eq!(
                    peer.read_frame().unwrap(),
                    (OpCode::Text, b"hello".to_vec())
                );
                let mut close = Vec::new();
                close.extend_from_slice(&CloseCode::NORMAL.get().to_be_bytes());
                peer.stream
                    .write_all(&masked(true, OpCode::Close, &close))
                    .unwrap();
                assert_eq!(peer.read_frame().unwrap(), (OpCode::Close, close));
                assert!(
                    matches!(peer.read_frame(), Err(e) if e.kind() == io::ErrorKind::UnexpectedEof)
                );
            }
            Leave::Drop => drop(Peer::connect(addr)),
            Leave::Reset => {
                let mut peer = Peer::connect(addr);
                peer.send_text("going");
                reset_on_close(&peer.stream);
            }
            Leave::MidHandshake => connect_raw(addr).write_all(half_request).unwrap(),
            Leave::MidHandshakeReset => {
                let mut stream = connect_raw(addr);
                stream.write_all(half_request).unwrap();
                reset_on_close(&stream);
            }
            Leave::MidFrame => {
                let mut peer = Peer::connect(addr);
                let frame = masked(true, OpCode::Binary, &[7; 1000]);
                peer.stream.write_all(&frame[..500]).unwrap();
            }
            Leave::Silent => drop(connect_raw(addr)),
            Leave::WhileWritten => {
                let mut peer = Peer::connect(addr);
                peer.stream
                    .write_all(&masked(true, OpCode::Binary, &vec![1; 256 << 10]))
                    .unwrap();
                // Wait for the first bytes of the echo, so the server is writing when we go.
                peer.fill().unwrap();
            }
        }
    }
}

#[test]
fn a_thousand_connect_cycles_leave_no_file_descriptor_behind() {
    let _serial = serial();
    const THREADS: usize = 4;
    const CYCLES: usize = 1_000;
    let adds = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(AtomicUsize::new(0));
    let handler = CountingEcho {
        adds: adds.clone(),
        closes: closes.clone(),
    };
    let server = common::start(Config::default(), handler);
    let addr = server.addr;
    still_serves(addr);
    common::eventually("the warm-up client to be closed", || {
        closes.load(Ordering::SeqCst) == 1
    });
    let baseline = open_fds("self");

    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                for i in (t..CYCLES).step_by(THREADS) {
                    LEAVES[i % LEAVES.len()].cycle(addr);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client thread failed");
    }
    let expected = 1
        + (0..CYCLES)
            .filter(|i| LEAVES[i % LEAVES.len()].handshakes())
            .count();
    common::eventually("every handshake to be counted", || {
        adds.load(Ordering::SeqCst) == expected
    });
    let settled = wait_until(TIMEOUT, || {
        open_fds("self") <= baseline && closes.load(Ordering::SeqCst) == expected
    });
    assert!(
        settled,
        "after {CYCLES} cycles: {} open files (baseline {baseline}), {} adds, {} closes",
        open_fds("self"),
        adds.load(Ordering::SeqCst),
        closes.load(Ordering::SeqCst)
    );
    println!(
        "{CYCLES} connect/close cycles ({} ways of leaving) in {:?}; open files back to {baseline}",
        LEAVES.len(),
        started.elapsed()
    );
    still_serves(addr);
}

/// A peer's FIN that arrives together with its last bytes closes the connection at once, whatever those bytes
/// were: not after the handshake timeout (10 s here), and not never (no idle timeout here).
#[test]
fn data_and_fin_together_close_the_connection_at_once() {
    let _serial = serial();
    let config = Config::default().idle_timeout(None);
    let server = common::start(config, Echo);
    let addr = server.addr;
    still_serves(addr);
    thread::sleep(Duration::from_millis(50));
    let req = request(addr);
    let last_bytes: [(&str, Vec<u8>); 4] = [
        (
            "half a request head",
            req.as_bytes()[..req.len() / 2].to_vec(),
        ),
        (
            "half a frame",
            masked(true, OpCode::Binary, &[7; 1000])[..500].to_vec(),
        ),
        ("a whole message", masked(true, OpCode::Text, b"bye")),
        (
            "a close frame",
            masked(true, OpCode::Close, &CloseCode::NORMAL.get().to_be_bytes()),
        ),
    ];
    let mut lingering = Vec::new();
    for (what, bytes) in &last_bytes {
        let before = open_fds("self");
        for _ in 0..20 {
            let mut stream = if what.contains("request") {
                connect_raw(addr)
            } else {
                Peer::connect(addr).stream
            };
            stream.write_all(bytes).unwrap();
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // The server may not have accepted them all yet.
        thread::sleep(Duration::from_millis(200));
        if !wait_until(Duration::from_secs(2), || open_fds("self") <= before) {
            lingering.push(format!("{} of 20 after {what}", open_fds("self") - before));
        }
    }
    assert!(
        lingering.is_empty(),
        "connections still open 2 s after their peer's FIN: {}",
        lingering.join(", ")
    );
}

/// Fills the kernel's accept queue faster than one loop turn drains it: every client is served.
#[test]
fn an_accept_storm_is_served_in_full() {
    let _serial = serial();
    const THREADS: usize = 16;
    const EACH: usize = 64;
    if let Err(why) = raise_nofile(2 * (THREADS * EACH) as u64 + 100) {
        println!("\nskipped: {why}");
        return;
    }
    let server = common::echo();
    let addr = server.addr;
    still_serves(addr);
    thread::sleep(Duration::from_millis(50));
    let baseline = open_fds("self");
    let start = Arc::new(Barrier::new(THREADS));
    let overflows_before = listen_overflows();
    let started = Instant::now();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                let mut slowest = Duration::ZERO;
                let mut streams: Vec<TcpStream> = (0..EACH)
                    .map(|_| {
                        let began = Instant::now();
                        let stream = connect_raw(addr);
                        slowest = slowest.max(began.elapsed());
                        stream
                    })
                    .collect();
                for stream in &mut streams {
                    stream.write_all(request(addr).as_bytes()).unwrap();
                }
                let mut peers: Vec<Peer> = streams.into_iter().map(Peer::handshake).collect();
                for (i, peer) in peers.iter_mut().enumerate() {
                    let text = format!("{t}/{i}");
                    peer.send_text(&text);
                    assert_eq!(
                        peer.read_frame().unwrap(),
                        (OpCode::Text, text.into_bytes())
                    );
                }
                slowest
            })
        })
        .collect();
    let slowest = threads
        .into_iter()
        .map(|thread| thread.join().expect("a storm client failed"))
        .max()
        .unwrap();
    // A client waits a second or more when a full accept queue made the kernel drop its handshake.
    println!(
        "accept storm: {} connections from {THREADS} threads all served in {:.2?}; slowest connect \
         {slowest:.2?}; accept queue overflowed {} times",
        THREADS * EACH,
        started.elapsed(),
        listen_overflows() - overflows_before
    );
    assert!(
        wait_until(TIMEOUT, || open_fds("self") <= baseline),
        "{} open files after the storm, baseline {baseline}",
        open_fds("self")
    );
    still_serves(addr);
}

/// Clients come and go, some with a reset in the middle of what is being sent to them, while two others chat:
/// the two get every message, in order.
#[test]
fn clients_vanishing_during_broadcasts_do_not_disturb_the_others() {
    let _serial = serial();
    const CHURNERS: usize = 2;
    const ROUNDS: usize = 150;
    const LINE: usize = 1024;
    let server = common::start(Config::default(), Broadcast);
    let addr = server.addr;
    let sender = Peer::connect(addr);
    let mut writer = sender.writer();
    let readers: Vec<_> = [sender, Peer::connect(addr)]
        .into_iter()
        .map(|mut peer| {
            thread::spawn(move || {
                for i in 0.. {
                    let (opcode, payload) = peer.read_frame().expect("a broadcast");
                    assert_eq!(opcode, OpCode::Text);
                    if payload == b"end" {
                        return i;
                    }
                    assert_eq!(parse_chat_line(&payload), (0, i), "lost or out of order");
                }
                unreachable!()
            })
        })
        .collect();

    let finished = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..CHURNERS)
        .map(|_| {
            let finished = finished.clone();
            thread::spawn(move || {
                for round in 0..ROUNDS {
                    let mut peer = Peer::connect(addr);
                    // Bounded, since the chat may be over before this client's first broadcast.
                    peer.stream
                        .set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    match round % 3 {
                        0 => reset_on_close(&peer.stream),
                        1 => {
                            let _ = peer.read_frame();
                            reset_on_close(&peer.stream);
                        }
                        _ => {
                            let _ = peer.read_frame();
                            let frame = masked(true, OpCode::Text, b"half a frame");
                            let _ = peer.stream.write_all(&frame[..5]);
                        }
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while finished.load(Ordering::SeqCst) < CHURNERS && Instant::now() < deadline {
        writer.send_text(&chat_line(0, sent, LINE));
        sent += 1;
        if sent % 32 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    writer.send_text("end");
    for churner in churners {
        churner.join().expect("a churning client failed");
    }
    for reader in readers {
        assert_eq!(reader.join().expect("a chatting client failed"), sent);
    }
    println!(
        "{sent} broadcasts of {LINE} bytes in order while {} clients came and went",
        CHURNERS * ROUNDS
    );
    still_serves(addr);
}

/// With a low `RLIMIT_NOFILE`, `accept` fails with EMFILE: the loop logs, backs off without spinning, keeps serving
/// the connections it has and accepts again once descriptors are free.
#[test]
fn out_of_file_descriptors_the_loop_backs_off_and_keeps_serving() {
    let _serial = serial();
    const NOFILE: u64 = 64;
    const EXTRA: usize = 120;
    let mut server = start_child("echo", Some(NOFILE));
    let addr = server.addr;
    let pid = server.pid();
    let mut keeper = Peer::connect(addr);
    keeper.send_text("before");
    assert_eq!(
        keeper.read_frame().unwrap(),
        (OpCode::Text, b"before".to_vec())
    );
    let baseline = open_fds(&pid);

    // More connections than the server has descriptors: the kernel completes them all and queues those the server
    // cannot accept.
    let extra: Vec<TcpStream> = (0..EXTRA)
        .map(|_| {
            let mut stream = connect_raw(addr);
            stream.write_all(request(addr).as_bytes()).unwrap();
            stream
        })
        .collect();
    assert!(
        wait_until(TIMEOUT, || server.log().contains("accept failed")),
        "no accept failure logged; the server's log:\n{}",
        server.log()
    );

    let window = Duration::from_secs(2);
    let cpu_before = cpu_seconds(server.id());
    thread::sleep(window);
    let cpu = (cpu_seconds(server.id()) - cpu_before) / window.as_secs_f64();
    server.assert_running();
    println!(
        "out of descriptors: {} open, server CPU {:.1}% of a core over {window:?}",
        open_fds(&pid),
        cpu * 100.0
    );
    assert!(cpu < 0.25, "the server spins at {:.0}% CPU", cpu * 100.0);

    for i in 0..10 {
        let text = format!("during {i}");
        keeper.send_text(&text);
        assert_eq!(
            keeper.read_frame().unwrap(),
            (OpCode::Text, text.into_bytes())
        );
    }

    // One more client waits in the accept queue. Once the others leave, no new connection arrives to wake the
    // listener: only the loop's retry can accept it.
    let mut waiting = connect_raw(addr);
    waiting.write_all(request(addr).as_bytes()).unwrap();
    drop(extra);
    let mut waiting = Peer::handshake(waiting);
    waiting.send_text("waited");
    assert_eq!(
        waiting.read_frame().unwrap(),
        (OpCode::Text, b"waited".to_vec())
    );
    drop(waiting);
    let recovered = wait_until(TIMEOUT, || open_fds(&pid) <= baseline);
    assert!(
        recovered,
        "{} open files in the server after the extra clients left, {baseline} before",
        open_fds(&pid)
    );
    for _ in 0..3 {
        still_serves(addr);
    }
    keeper.send_text("after");
    assert_eq!(
        keeper.read_frame().unwrap(),
        (OpCode::Text, b"after".to_vec())
    );
    server.assert_running();
}

// ---------------------------------------------------------------------------------------------------------------
// Long tests: `scripts/soak.sh` runs them in release mode.

/// How many connections the big test holds; `WSLOOP_SOAK_CONNS` overrides the 10,000.
fn soak_connections() -> usize {
    env::var("WSLOOP_SOAK_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
#[ignore = "long: run by scripts/soak.sh"]
fn ten_thousand_connections_all_receive_one_broadcast() {
    let _serial = serial();
    const THREADS: usize = 8;
    let conns = soak_connections();
    // The server runs in a child, which inherits the limit: each process holds one end of every connection.
    if let Err(why) = raise_nofile(conns as u64 + 200) {
        println!("\nskipped: {why}");
        return;
    }
    let server = start_child("broadcast", None);
    let addr = server.addr;
    let pid = server.pid();
    thread::sleep(Duration::from_millis(100));
    let rss_before = rss_kib(&pid);
    let fds_before = open_fds(&pid);

    let started = Instant::now();
    let connectors: Vec<_> = (0..THREADS)
        .map(|t| {
            let count = conns / THREADS + usize::from(t < conns % THREADS);
            thread::spawn(move || (0..count).map(|_| Peer::connect(addr)).collect::<Vec<_>>())
        })
        .collect();
    let mut groups: Vec<Vec<Peer>> = connectors
        .into_iter()
        .map(|c| c.join().expect("a connecting thread failed"))
        .collect();
    let connect_time = started.elapsed();
    assert_eq!(open_fds(&pid), fds_before + conns);
    let rss_held = rss_kib(&pid);

    let text = format!("to all {conns}");
    let sent_at = Instant::now();
    groups[0][0].send_text(&text);
    let readers: Vec<_> = groups
        .drain(..)
        .map(|mut peers| {
            let text = text.clone();
            thread::spawn(move || {
                for peer in &mut peers {
                    let frame = peer.read_frame().expect("the broadcast");
                    assert_eq!(frame, (OpCode::Text, text.as_bytes().to_vec()));
                }
                peers
            })
        })
        .collect();
    let peers: Vec<Vec<Peer>> = readers
        .into_iter()
        .map(|r| r.join().expect("a client missed the broadcast"))
        .collect();
    let broadcast_time = sent_at.elapsed();
    let rss_after_broadcast = rss_kib(&pid);

    drop(peers);
    let closed_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || open_fds(&pid) <= fds_before),
        "{} open files in the server after every client left, {fds_before} before",
        open_fds(&pid)
    );
    let close_time = closed_at.elapsed();
    let per_conn = (rss_held.saturating_sub(rss_before) * 1024) as f64 / conns as f64;
    println!("SOAK connections: {conns}");
    println!(
        "SOAK connect+handshake: {connect_time:.2?} ({:.0} per second, {THREADS} client threads)",
        conns as f64 / connect_time.as_secs_f64()
    );
    println!("SOAK broadcast delivered to all: {broadcast_time:.2?}");
    println!("SOAK all closed by the server: {close_time:.2?}");
    println!(
        "SOAK server RSS: {rss_before} KiB idle, {rss_held} KiB holding, {rss_after_broadcast} KiB after the \
         broadcast; {per_conn:.0} bytes per connection"
    );
}

#[test]
#[ignore = "long: run by scripts/soak.sh"]
fn slow_reader_in_a_10000_message_chat_costs_the_others_nothing() {
    let _serial = serial();
    const MESSAGES: usize = 10_000;
    const FAST: usize = 3;
    // 80 MB to each reader: were the slow reader's queue unbounded, memory would grow by most of that.
    const LINE: usize = 8 << 10;
    const MAX_BUFFERED: usize = 64 << 10;
    const WINDOW: usize = MAX_BUFFERED / LINE / 2;
    const MAX_RSS_GROWTH_MIB: f64 = 32.0;
    let config = Config::default().max_buffered(MAX_BUFFERED);
    let server = common::start(config, Broadcast);
    let addr = server.addr;
    let mut slow = Peer::connect(addr);
    let fast: Vec<Peer> = (0..FAST).map(|_| Peer::connect(addr)).collect();
    thread::sleep(Duration::from_millis(100));
    let rss_before = rss_kib("self");

    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let done = done.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib("self"));
                thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    // Senders pace themselves to the readers, as people in a chat do: at most `WINDOW` messages in flight. Unpaced,
    // three writers outrun any reader, and with a limit this small a reader that is merely busy for a moment would
    // be dropped as slow too.
    let sent = Arc::new(AtomicUsize::new(0));
    let received: Arc<[AtomicUsize; FAST]> = Arc::new(Default::default());
    let started = Instant::now();
    let clients: Vec<_> = fast
        .into_iter()
        .enumerate()
        .map(|(sender, mut peer)| {
            let mut writer = peer.writer();
            let (sent, paced_by) = (sent.clone(), received.clone());
            let writing = thread::spawn(move || {
                for seq in (sender..MESSAGES).step_by(FAST) {
                    let slowest = || {
                        paced_by
                            .iter()
                            .map(|r| r.load(Ordering::SeqCst))
                            .min()
                            .unwrap()
                    };
                    while sent.load(Ordering::SeqCst) > slowest() + WINDOW {
                        thread::yield_now();
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    writer.send_text(&chat_line(sender, seq / FAST, LINE));
                }
            });
            let received = received.clone();
            thread::spawn(move || {
                let mut seen = Vec::with_capacity(MESSAGES);
                while seen.len() < MESSAGES {
                    let (opcode, payload) = peer.read_frame().expect("a chat message");
                    assert_eq!(
                        opcode,
                        OpCode::Text,
                        "{:?}",
                        String::from_utf8_lossy(&payload)
                    );
                    assert_eq!(payload.len(), LINE);
                    seen.push(parse_chat_line(&payload));
                    received[sender].fetch_add(1, Ordering::SeqCst);
                }
                writing.join().expect("a sender failed");
                seen
            })
        })
        .collect();
    let seen: Vec<Vec<(usize, usize)>> = clients
        .into_iter()
        .map(|c| c.join().expect("a fast client failed"))
        .collect();
    let chat_time = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let rss_peak = monitor.join().unwrap();
    let growth_mib = rss_peak.saturating_sub(rss_before) as f64 / 1024.0;
    println!(
        "SOAK chat: {MESSAGES} messages of {LINE} bytes from {FAST} senders in {chat_time:.2?}"
    );
    println!(
        "SOAK process RSS: {rss_before} KiB before, peak {rss_peak} KiB during the chat (+{growth_mib:.1} MiB)"
    );
    assert!(
        growth_mib < MAX_RSS_GROWTH_MIB,
        "RSS grew by {growth_mib:.1} MiB"
    );

    // Every fast client saw the same 10,000 lines, each sender's in the order it sent them.
    for other in &seen[1..] {
        assert!(*other == seen[0], "two fast clients saw different orders");
    }
    let mut next = [0; FAST];
    for &(sender, seq) in &seen[0] {
        assert_eq!(seq, next[sender], "sender {sender}: out of order or lost");
        next[sender] += 1;
    }

    // The slow client got an in-order prefix, then close 1008 (or the connection dropped).
    slow.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = 0;
    let close = loop {
        match slow.read_frame() {
            Ok((OpCode::Text, payload)) => {
                assert_eq!(
                    parse_chat_line(&payload),
                    seen[0][got],
                    "slow client, message {got}"
                );
                got += 1;
            }
            Ok((OpCode::Close, payload)) => {
                break Some(u16::from_be_bytes([payload[0], payload[1]]))
            }
            Ok(other) => panic!("unexpected frame {other:?}"),
            Err(e) => {
                let gone = [io::ErrorKind::UnexpectedEof, io::ErrorKind::ConnectionReset];
                assert!(gone.contains(&e.kind()), "the slow client: {e}");
                break None;
            }
        }
    };
    assert!(got < MESSAGES, "the slow client was never dropped");
    assert!(matches!(close, None | Some(1008)), "{close:?}");
    let ending = match close {
        Some(code) => format!("close {code}"),
        None => "a dropped connection".to_string(),
    };
    println!(
        "SOAK slow reader: got {got} messages, then {ending}; max_buffered {MAX_BUFFERED} bytes"
    );
    still_serves(addr);
}
