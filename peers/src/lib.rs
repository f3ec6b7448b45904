//! Small helpers shared by the peer servers and the load generator.
//!
//! This crate measures wsloop against other Rust WebSocket libraries; it is not part of wsloop and
//! wsloop never depends on it. Nothing here is clever: flag parsing, the open-files limit, and
//! reading another process's CPU time and memory from `/proc`.

pub mod client;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// `--name value` flags; a flag given twice keeps the last value.
pub struct Flags {
    values: HashMap<String, String>,
    usage: &'static str,
}

impl Flags {
    /// Parses `--name value` pairs, accepting only the names in `known`; anything else prints
    /// `usage` and exits with status 2.
    pub fn parse(args: impl Iterator<Item = String>, known: &[&str], usage: &'static str) -> Flags {
        let mut values = HashMap::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let name = match arg.strip_prefix("--") {
                Some(name) if known.contains(&name) => name.to_string(),
                _ => usage_exit(usage, &format!("unknown argument {arg:?}")),
            };
            let value = match args.next() {
                Some(v) => v,
                None => usage_exit(usage, &format!("--{name} needs a value")),
            };
            values.insert(name, value);
        }
        Flags { values, usage }
    }

    /// The value of `--name`, parsed, or `default` when absent; a bad value exits with status 2.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.values.get(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                usage_exit(self.usage, &format!("bad value {v:?} for --{name}"))
            }),
        }
    }

    /// The raw value of `--name`, if given.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `--host` (default 127.0.0.1) and `--port` as a socket address; refuses anything but loopback,
    /// because these tools exist to load a server on this machine.
    pub fn loopback_addr(&self, default_port: u16) -> SocketAddr {
        let host: IpAddr = self.get("host", IpAddr::from([127, 0, 0, 1]));
        if !host.is_loopback() {
            usage_exit(
                self.usage,
                "--host must be a loopback address (127.0.0.0/8 or ::1)",
            );
        }
        SocketAddr::new(host, self.get("port", default_port))
    }
}

/// A payload of exactly `size` bytes: text mixing ASCII with two- and three-byte UTF-8 (so that
/// validation does real work), or binary bytes.
pub fn sample_payload(size: usize, text: bool) -> Vec<u8> {
    if !text {
        return (0..size).map(|i| (i * 7 + 3) as u8).collect();
    }
    let pattern = "wsloop says héllo, wörld ✓ ".as_bytes();
    let mut bytes: Vec<u8> = pattern.iter().copied().cycle().take(size).collect();
    // Cut back to a character boundary, then pad with ASCII to the exact length.
    while std::str::from_utf8(&bytes).is_err() {
        bytes.pop();
    }
    bytes.resize(size, b'.');
    bytes
}

/// Words for [`chat_json`] (shared with the frame bench).
#[path = "words.rs"]
mod words;
use words::WORDS;

/// A chatroom message of exactly `size` bytes in the chatroom example's own JSON,
/// `{"type":"message","id":42,"name":"user42","text":"..."}`, its words picked by `seed` (the same
/// words as the frame bench's chat messages). Below the envelope's length (about 55 bytes) it is
/// cut short; it is always ASCII, so any cut is valid UTF-8.
pub fn chat_json(size: usize, seed: u64) -> Vec<u8> {
    chat_json_with_id(size, seed, None)
}

/// [`chat_json`] from user `id` (one picked by `seed` when `None`).
pub fn chat_json_with_id(size: usize, seed: u64, id: Option<usize>) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut below = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let id = id.unwrap_or_else(|| 1 + below(999));
    let mut json = format!(r#"{{"type":"message","id":{id},"name":"user{id}","text":""#);
    let end = r#""}"#;
    while json.len() + end.len() < size {
        if !json.ends_with('"') {
            json.push(' ');
        }
        json.push_str(WORDS[below(WORDS.len())]);
    }
    let mut bytes = json.into_bytes();
    // The last word may go past the end: cut it, and close the text and the object again.
    if bytes.len() + end.len() > size && size >= 56 {
        bytes.truncate(size - end.len());
    }
    bytes.extend_from_slice(end.as_bytes());
    bytes.truncate(size);
    bytes
}

/// Prints `why` and the usage text, then exits with status 2.
pub fn usage_exit(usage: &str, why: &str) -> ! {
    eprintln!("error: {why}\n{usage}");
    std::process::exit(2)
}

/// Raises the soft open-files limit to `want` (and the hard limit too, when allowed), so that
/// thousands of sockets fit. Returns the soft limit in force afterwards.
pub fn raise_nofile_limit(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur >= want {
            return lim.rlim_cur;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max.max(want),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        // Not allowed to raise the hard limit: take what it permits.
        let capped = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &capped) == 0 {
            lim.rlim_max
        } else {
            lim.rlim_cur
        }
    }
}

/// CPU seconds (user + system) this process has used so far, all threads included.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds (utime + stime, all threads) of process `pid`, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    process_cpu_split(pid).map(|(user, system)| user + system)
}

/// CPU seconds of process `pid` (all threads) spent in its own code and in the kernel, from
/// `/proc/PID/stat`. A server's kernel time is mostly the TCP stack, alike for every server doing the
/// same reads and writes; its user time is the part its own code decides.
pub fn process_cpu_split(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields after its last ')'
    // start at field 3 (state), so utime and stime (fields 14 and 15) are at indices 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime as f64 / ticks, stime as f64 / ticks))
}

/// Resident memory of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The peer servers' shared `main`: parses `--host --port --mode echo|broadcast --threads`, raises the open-files
/// limit, and on a tokio runtime of `--threads` threads (current-thread for 1, like wsloop's single loop) accepts
/// connections forever, spawning `serve(stream, broadcast)` for each.
#[cfg(feature = "peers")]
pub fn run_peer_server<S, F>(name: &str, usage: &'static str, serve: S)
where
    S: Fn(tokio::net::TcpStream, bool) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    run_peer_server_with(name, usage, &[], |_| serve)
}

/// [`run_peer_server`] for a server with flags of its own (`extra`, e.g. `tls-cert`): `make` gets
/// all the flags and returns the `serve` to spawn for each connection. With `--tls-cert` given the
/// server announces itself as `wss://`.
#[cfg(feature = "peers")]
pub fn run_peer_server_with<M, S, F>(name: &str, usage: &'static str, extra: &[&str], make: M)
where
    M: FnOnce(&Flags) -> S,
    S: Fn(tokio::net::TcpStream, bool) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut known = vec!["host", "port", "mode", "threads"];
    known.extend_from_slice(extra);
    let flags = Flags::parse(std::env::args().skip(1), &known, usage);
    let scheme = if flags.opt("tls-cert").is_some() {
        "wss"
    } else {
        "ws"
    };
    let serve = make(&flags);
    let addr = flags.loopback_addr(9001);
    let broadcast = match flags.opt("mode").unwrap_or("echo") {
        "echo" => false,
        "broadcast" => true,
        other => usage_exit(usage, &format!("unknown mode {other:?}")),
    };
    let threads: usize = flags.get("threads", 1);
    raise_nofile_limit(65_536);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_io()
            .build()
    }
    .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| {
                eprintln!("cannot listen on {addr}: {e}");
                std::process::exit(1)
            });
        eprintln!(
            "{name} {} server on {scheme}://{addr}",
            if broadcast { "broadcast" } else { "echo" }
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream, broadcast));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable_through_proc() {
        let pid = std::process::id();
        assert!(process_rss_bytes(pid).unwrap() > 0);
        assert!(process_cpu_seconds(pid).unwrap() >= 0.0);
        assert!(own_cpu_seconds() >= 0.0);
    }

    #[test]
    fn sample_text_is_utf8_of_the_exact_size() {
        for size in [0, 1, 13, 125, 4096, 65_536] {
            let text = sample_payload(size, true);
            assert_eq!(text.len(), size);
            assert!(std::str::from_utf8(&text).is_ok());
        }
    }

    #[test]
    fn chat_json_is_a_chat_message_of_the_exact_size() {
        for size in [10, 64, 200, 1024, 16_384] {
            let json = chat_json(size, 42);
            assert_eq!(json.len(), size);
            assert!(json.starts_with(br#"{"type":"message""#[..size.min(17)].as_ref()));
            if size >= 64 {
                assert!(json.ends_with(br#""}"#));
            }
        }
    }

    #[test]
    fn flags_parse_known_names() {
        let args = ["--port", "9001", "--mode", "echo"].map(String::from);
        let flags = Flags::parse(args.into_iter(), &["port", "mode", "host"], "usage");
        assert_eq!(flags.get("port", 0u16), 9001);
        assert_eq!(flags.opt("mode"), Some("echo"));
        assert_eq!(flags.loopback_addr(1).to_string(), "127.0.0.1:9001");
    }
}
