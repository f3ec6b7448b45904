//! The broadcast server: every message goes, unchanged and with its opcode, to every connected client — the
//! sender included. The chatroom's core without JSON, for load tests of fan-out.
//!
//! ```text
//! cargo run --release --example broadcast -- --port 9002 --max-users 10000 [--threads 2]
//! ```
//!
//! Connect two clients (e.g. `python3 -m websockets ws://127.0.0.1:9002/` in two terminals) and type in one.

#[path = "common/args.rs"]
mod args;

use wsloop::{Config, ConnId, Handle, Handler, Loops, Message};

/// The PHP `send` callback of a room without names: relay each received message to everyone.
struct Broadcast;

impl Handler for Broadcast {
    fn send(&mut self, ws: &mut Handle<'_>, _id: ConnId, msg: Message<'_>) {
        ws.broadcast(msg);
    }
}

fn main() {
    args::init_logging();
    let defaults = args::Args {
        host: "127.0.0.1".into(),
        port: 9002,
        max_users: 10_000,
        max_message: 16 << 20,
        threads: 1,
    };
    let args = args::parse("broadcast", defaults, false);
    let config = Config {
        max_users: args.max_users,
        ..Config::default()
    };
    // One loop per thread, each with its own listener on the port (one thread: the PHP loop, on this one).
    let loops =
        Loops::bind((args.host.as_str(), args.port), config, args.threads).unwrap_or_else(|e| {
            eprintln!(
                "broadcast: cannot listen on {}:{}: {e}",
                args.host, args.port
            );
            std::process::exit(1)
        });
    let remote = loops.remote();
    ctrlc::set_handler(move || remote.stop()).expect("no other signal handler is installed");
    println!(
        "broadcast server on ws://{}/ ({} loops)",
        loops.local_addr().expect("a bound listener has an address"),
        loops.len()
    );
    if let Err(e) = loops.run(|_| Broadcast) {
        eprintln!("broadcast: {e}");
        std::process::exit(1);
    }
}
