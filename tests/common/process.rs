//! An example run as a real process, as `tests/chatroom.rs` runs it: built next to the test binary, started on port
//! 0, its address read from the first line it prints, its output kept for a failure message, killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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
