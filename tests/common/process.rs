//! Servers in processes of their own.
//!
//! An example run as a real process, as `tests/chatroom.rs` runs it: built next to the test binary, started on port
//! 0, its address read from the first line it prints, its output kept for a failure message, killed on drop.
//!
//! And a server run by the test binary itself, in a child process ([`ChildServer`]), as `tests/soak.rs` and
//! `tests/memory_budget.rs` run one to give it limits of its own or to measure its memory without the clients': the
//! child runs one `#[ignore]`d test of the binary, which serves when an environment variable tells it to.

use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{self, Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wsloop::Server;

use super::TIMEOUT;

/// The example's binary, next to this test's binary: `target/<profile>/deps/NAME-<hash>` runs
/// `target/<profile>/examples/NAME`. A plain `cargo test` builds the examples first, but `cargo test --test NAME`
/// does not; so this asks cargo to build it (a no-op when it is up to date), into the same target directory and
/// profile.
pub fn binary(example: &str) -> PathBuf {
    // Built with the features this test was built with (`cargo test --features redis`), so that one build does
    // not undo another's.
    binary_with(
        example,
        if cfg!(feature = "redis") {
            &["redis"]
        } else {
            &[]
        },
    )
}

/// [`binary`], built with the cargo `features` (such as `redis`), as a test of a feature runs it.
pub fn binary_with(example: &str, features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile directory in {}", exe.display()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--example",
            example,
            "--profile",
            profile,
        ])
        .args(if features.is_empty() {
            Vec::new()
        } else {
            vec!["--features".to_string(), features.join(",")]
        })
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build --example");
    assert!(
        status.success(),
        "cargo build --example {example}: {status}"
    );
    let path = profile_dir
        .join("examples")
        .join(format!("{example}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A running example; killed on drop. Everything it prints is kept, and shown if the test fails.
pub struct Example {
    child: Child,
    pub addr: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
}

impl Example {
    /// Starts `examples/NAME` with `--port 0` and `flags`; its first line must be `PREFIX` then `ADDR` then `SUFFIX`
    /// (the chatroom prints `chatroom on http://ADDR/ (Ctrl-C to stop)`).
    pub fn start(example: &str, flags: &[&str], prefix: &str, suffix: &str) -> Example {
        Example::spawn(&binary(example), flags, prefix, suffix)
    }

    /// [`Example::start`] for a binary already built (see [`binary_with`]).
    pub fn spawn(path: &Path, flags: &[&str], prefix: &str, suffix: &str) -> Example {
        let mut child = Command::new(path)
            .args(["--port", "0"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (first_line, lines) = mpsc::channel();
        // Both pipes are drained for the whole run, so a chatty process never blocks on a full pipe.
        drain(
            child.stdout.take().unwrap(),
            output.clone(),
            Some(first_line),
        );
        drain(child.stderr.take().unwrap(), output.clone(), None);
        let mut example = Example {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            output,
        };
        let line = lines
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("no first line: {:?}", example.output()));
        let addr = line
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        example.addr = addr.parse().expect("an address in the first line");
        example
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed so far, stdout and stderr.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Sends `signal` (`TERM` as a service manager would, `INT` as Ctrl-C does, `KILL`, `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill failed: {status}");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the example did not exit: {:?}",
                self.output()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("example output:\n{}", self.output().join("\n"));
        }
    }
}

/// Reads `pipe` line by line into `output` on a thread; the first line also goes to `first`.
fn drain(
    pipe: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
    first: Option<mpsc::Sender<String>>,
) {
    thread::spawn(move || {
        let mut first = first;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = first.take() {
                let _ = tx.send(line.clone());
            }
            output.lock().unwrap().push(line);
        }
    });
}

/// Bytes each thread of process `pid` has written so far (`wchar` in `/proc/PID/task/TID/io`), by thread id, with
/// the thread's name. Linux only.
pub fn written_by_thread(pid: u32) -> Vec<(u32, String, u64)> {
    let mut threads = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc/PID/task");
    for task in tasks {
        let task = task.expect("a task entry");
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let (Ok(io), Ok(name)) = (
            std::fs::read_to_string(task.path().join("io")),
            std::fs::read_to_string(task.path().join("comm")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let wchar = io
            .lines()
            .find_map(|l| l.strip_prefix("wchar:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("a wchar line");
        threads.push((tid, name.trim().to_string(), wchar));
    }
    threads
}

/// The line a [`ChildServer`] prints once it listens, followed by its address.
const CHILD_LISTENING: &str = "wsloop-child listening on ";
/// A child that is somehow left behind exits after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(300);

/// The child's half of a [`ChildServer`], called by the test it runs, before `server.run`: prints the address for
/// the parent, and ends the process when its stdin closes (when the test that started it ends, even by a panic) or
/// when `CHILD_LIFETIME` passes.
pub fn announce_child(server: &Server) {
    println!(
        "{CHILD_LISTENING}{}",
        server
            .local_addr()
            .expect("a bound listener has an address")
    );
    io::stdout().flush().expect("flush stdout");
    thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        process::exit(0);
    });
    thread::spawn(|| {
        thread::sleep(CHILD_LIFETIME);
        process::exit(3);
    });
}

/// A server in a child process: this test binary run again, for the one test `child_test` (which calls
/// [`announce_child`] and serves), with the variables `vars` set. Logs at `RUST_LOG=wsloop=warn` to its stderr, which
/// is kept ([`ChildServer::log`]). Killed on drop.
pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    _stdin: ChildStdin,
}

impl ChildServer {
    pub fn start(child_test: &str, vars: &[(&str, String)]) -> ChildServer {
        let exe = env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                child_test,
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RUST_LOG", "wsloop=warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in vars {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start the child server");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        // libtest prints around our line; keep reading all of it, so the child never blocks on a full pipe.
        let (found, address) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some((_, addr)) = line.split_once(CHILD_LISTENING) {
                    let _ = found.send(addr.trim().parse::<SocketAddr>().expect("an address"));
                }
            }
        });
        let addr = match address.recv_timeout(TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the child server did not start; its log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        ChildServer {
            child,
            addr,
            log,
            _stdin: stdin,
        }
    }

    /// The process id, for `/proc/<pid>/...`.
    pub fn pid(&self) -> String {
        self.id().to_string()
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the child has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the server exited with {status}; its log:\n{}", self.log());
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`; `"self"` for this one). Linux only.
pub fn rss_kib(pid: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}
