//! The echo server: every message comes back to its sender, with the same opcode.
//!
//! This is the server the Autobahn Testsuite and the load tests talk to. Run it with
//!
//! ```text
//! cargo run --release --example echo -- --port 9001 --max-users 10000 [--threads 2] [--deflate] [--max-memory BYTES]
//! ```
//!
//! and try it from another terminal with any WebSocket client, e.g. `python3 -m websockets ws://127.0.0.1:9001/`.
//! `RUST_LOG=wsloop=trace` prints every frame header that goes in and out.

#[path = "common/args.rs"]
mod args;

use wsloop::{Config, ConnId, Handle, Handler, Loops, Message};

/// The whole application: the PHP `send` callback, answering each received message with itself.
struct Echo;

impl Handler for Echo {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        ws.send(id, msg);
    }
}

fn main() {
    args::init_logging();
    let defaults = args::Args::new(9001, 10_000, 16 << 20);
    let args = args::parse("echo", defaults, false);
    // permessage-deflate with `--deflate` (RFC 7692): no context kept on either side, so a connection holds no
    // zlib state between messages (`--deflate-dedicated KIB` keeps it, for comparison).
    let config = Config::default()
        .max_users(args.max_users)
        .max_memory(args.max_memory)
        .deflate(args.deflate())
        .metrics(args.metrics)
        .tls(args.tls("echo"));
    // One loop per thread, each with its own listener on the port (one thread: the PHP loop, on this one).
    let loops =
        Loops::bind((args.host.as_str(), args.port), config, args.threads).unwrap_or_else(|e| {
            eprintln!("echo: cannot listen on {}:{}: {e}", args.host, args.port);
            std::process::exit(1)
        });
    let remote = loops.remote();
    ctrlc::set_handler(move || remote.stop()).expect("no other signal handler is installed");
    println!(
        "echo server on ws{}://{}/ ({} loops)",
        args.s(),
        loops.local_addr().expect("a bound listener has an address"),
        loops.len()
    );
    if let Err(e) = loops.run(|_| Echo) {
        eprintln!("echo: {e}");
        std::process::exit(1);
    }
}
