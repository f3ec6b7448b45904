//! The broadcast server: every message goes, unchanged and with its opcode, to every connected client — the
//! sender included. The chatroom's core without JSON, for load tests of fan-out.
//!
//! ```text
//! cargo run --release --example broadcast -- --port 9002 --max-users 10000 [--threads 2] [--max-memory BYTES]
//! ```
//!
//! Connect two clients (e.g. `python3 -m websockets ws://127.0.0.1:9002/` in two terminals) and type in one.
//!
//! Topics, for load tests of rooms: the text `sub:TOPIC` subscribes its sender to `TOPIC` (answered with
//! `subscribed:TOPIC`); a text starting with `pub:TOPIC:` is published to `TOPIC`'s subscribers, and one starting
//! with `each:TOPIC:` is sent to them one by one instead (to this loop's subscribers), to compare the two.

#[path = "common/args.rs"]
mod args;

use std::collections::HashMap;

use wsloop::{Closed, Config, ConnId, Handle, Handler, Loops, Message};

/// The PHP `send` callback of a room without names: relay each received message to everyone (or to a topic).
#[derive(Default)]
struct Broadcast {
    /// Who subscribed to what, kept here too for `each:`, which sends to them one by one.
    subscribers: HashMap<String, Vec<ConnId>>,
}

impl Handler for Broadcast {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let command = match msg {
            Message::Text(text) => text.split_once(':').filter(|(c, _)| c.len() <= 4),
            Message::Binary(_) => None,
        };
        match command {
            Some(("sub", topic)) => {
                if ws.subscribe(id, topic) {
                    self.subscribers
                        .entry(topic.to_string())
                        .or_default()
                        .push(id);
                }
                ws.send(id, format!("subscribed:{topic}"));
            }
            Some(("pub", rest)) => {
                let topic = rest.split(':').next().unwrap_or_default();
                ws.publish(topic, msg);
            }
            Some(("each", rest)) => {
                let topic = rest.split(':').next().unwrap_or_default();
                for &to in self.subscribers.get(topic).into_iter().flatten() {
                    ws.send(to, msg);
                }
            }
            _ => {
                ws.broadcast(msg);
            }
        }
    }

    fn close(&mut self, _ws: &mut Handle<'_>, id: ConnId, _closed: Closed<'_>) {
        self.subscribers.retain(|_, ids| {
            ids.retain(|&i| i != id);
            !ids.is_empty()
        });
    }
}

fn main() {
    args::init_logging();
    let defaults = args::Args::new(9002, 10_000, 16 << 20);
    let args = args::parse("broadcast", defaults, false);
    // permessage-deflate with `--deflate` (RFC 7692): no context kept on either side, so a connection holds no
    // zlib state between messages (`--deflate-dedicated KIB` keeps it, for comparison).
    let config = Config::default()
        .max_users(args.max_users)
        .max_memory(args.max_memory)
        .deflate(args.deflate())
        .metrics(args.metrics)
        .tls(args.tls("broadcast"));
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
        "broadcast server on ws{}://{}/ ({} loops)",
        args.s(),
        loops.local_addr().expect("a bound listener has an address"),
        loops.len()
    );
    if let Err(e) = loops.run(|_| Broadcast::default()) {
        eprintln!("broadcast: {e}");
        std::process::exit(1);
    }
}
