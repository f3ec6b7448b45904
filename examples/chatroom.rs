//! The chatroom of the PHP tutorial, made real: a browser page and a broadcast room on one port.
//!
//! ```text
//! cargo run --example chatroom -- --port 8080 --max-users 100 --max-message 65536 --threads 1 [--max-memory BYTES]
//! cargo run --example chatroom --features redis -- --redis redis://127.0.0.1:6379 --port 8081
//! ```
//!
//! Then open <http://127.0.0.1:8080> in two browser windows and chat. Type `/nick NAME` to rename yourself.
//! <http://127.0.0.1:8080/inspect> is the protocol inspector: chat there and see each frame your browser sent, byte
//! for byte (masked, then unmasked), the frame the server sent back, and the handshake's arithmetic, each step linked
//! to the source that does it (served at `/source/...`). <http://127.0.0.1:8080/stats> draws the server's figures
//! live, and `/metrics` serves them to Prometheus (`--no-metrics` turns both off).
//! Every event goes to the clients as a JSON text message with a `type`: `join`, `message`, `nick` or `leave`;
//! a newcomer first gets `welcome` (its own id and name) and `history` (the last 50 messages); every few seconds
//! `users` repeats the count (a timer). With `--threads N` the room runs on N loops, and with `--redis URL` on
//! every node that uses that Redis: every user still sees every event in one and the same order.
//! A binary message is refused with close 1003; a message over `--max-message` bytes with close 1009.
//! Ctrl-C stops the server gracefully: every client gets close 1001 first.

#[path = "common/args.rs"]
mod args;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};
use wsloop::handshake::{HttpResponse, Request};
use wsloop::inspect::{Seen, Wire};
use wsloop::{
    Accept, CloseCode, Closed, Config, ConnId, Context, Handle, Handler, Loops, Message, TimerId,
};

/// The page every browser gets on `GET /`: plain HTML, CSS and JavaScript, no CDN.
const PAGE: &str = include_str!("chatroom.html");
/// The protocol inspector, on `GET /inspect`; its WebSocket, to `/inspect`, is a chat user whose wire it shows.
const INSPECT_PAGE: &str = include_str!("inspect.html");
/// The files the inspector's steps link to, served as they are on `GET /source/<path>`, so that the page leads into
/// the code that did each step.
const SOURCES: [(&str, &str); 7] = [
    ("src/server.rs", include_str!("../src/server.rs")),
    ("src/handshake.rs", include_str!("../src/handshake.rs")),
    ("src/frame.rs", include_str!("../src/frame.rs")),
    ("src/message.rs", include_str!("../src/message.rs")),
    ("src/inbound.rs", include_str!("../src/inbound.rs")),
    ("src/inspect.rs", include_str!("../src/inspect.rs")),
    (
        "src/server/outbound.rs",
        include_str!("../src/server/outbound.rs"),
    ),
];
/// Longest nickname, in characters.
const MAX_NICK: usize = 32;
/// Messages a newcomer is shown from before it came.
const HISTORY: usize = 50;
/// How often each loop tells its users how many are online. With several loops two joins can cross on their way
/// to a page, which then shows the count of the one that came first; this puts it right.
const USERS_EVERY: Duration = Duration::from_secs(5);

/// The room as one loop sees it: who is here, the last messages, and the timer that repeats the user count. Each
/// user's name is kept as the connection's own data (`ws.set_data`), and handed back to `close` when it leaves.
#[derive(Default)]
struct Chatroom {
    users: HashSet<ConnId>,
    history: VecDeque<String>,
    users_timer: Option<TimerId>,
}

/// The PHP function table: `add`, `send`, `close` (plus serving the page, a timer, and what other nodes tell).
impl Handler for Chatroom {
    fn http(&mut self, req: &Request<'_>) -> Option<HttpResponse> {
        let source = req.path().strip_prefix("/source/").and_then(|path| {
            SOURCES
                .iter()
                .find(|(name, _)| *name == path)
                .map(|(_, text)| *text)
        });
        Some(match (req.path(), source) {
            ("/" | "/index.html", _) => HttpResponse::new(200, "text/html; charset=utf-8", PAGE),
            ("/inspect", _) => HttpResponse::new(200, "text/html; charset=utf-8", INSPECT_PAGE),
            (_, Some(text)) => HttpResponse::new(200, "text/plain; charset=utf-8", text),
            _ => HttpResponse::new(404, "text/plain; charset=utf-8", "not found\n"),
        })
    }

    /// A WebSocket to `/inspect` is the inspector page's: a user like any other, whose wire is shown to it.
    fn accept(&mut self, req: &Request<'_>) -> Result<Accept, HttpResponse> {
        Ok(match req.path() {
            "/inspect" => Accept::new().inspect(),
            _ => Accept::new(),
        })
    }

    /// What crossed an inspector's wire, back to that inspector alone, as JSON the page decodes and draws.
    fn inspect(&mut self, ws: &mut Handle<'_>, id: ConnId, seen: &Seen) {
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let wire = |seen: &str, wire: &Wire| json!({"type": "inspect", "seen": seen, "hex": hex(&wire.bytes), "frame_len": wire.frame_len});
        let record = match seen {
            Seen::Handshake(hs) => json!({
                "type": "inspect",
                "seen": "handshake",
                "request": text(&hs.request),
                "key": hs.key,
                "concatenated": hs.concatenated,
                "sha1": hex(&hs.sha1),
                "accept": hs.accept,
                "response": text(&hs.response),
            }),
            Seen::Received(frame) => wire("received", frame),
            Seen::Sent(frame) => wire("sent", frame),
            _ => return,
        };
        ws.send(id, record.to_string());
    }

    /// A newcomer: a name, who they are and what they missed, then everyone (the newcomer too) hears of them.
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, _conn: &Context<'_>) {
        let name = format!("user-{}", id.get());
        println!("+ {name} joined ({} online)", ws.count());
        ws.send(
            id,
            json!({"type": "welcome", "id": id.get(), "name": name}).to_string(),
        );
        if !self.history.is_empty() {
            let events = Vec::from(self.history.clone()).join(",");
            ws.send(id, format!(r#"{{"type":"history","events":[{events}]}}"#));
        }
        ws.set_presence(id, &json!({"id": id.get(), "name": name}).to_string());
        let join = json!({"type": "join", "id": id.get(), "name": name, "users": ws.count()});
        ws.set_data(id, name);
        self.users.insert(id);
        ws.broadcast(join.to_string());
        if self.users_timer.is_none() {
            self.users_timer = Some(ws.every(USERS_EVERY, 0));
        }
    }

    /// A message from `id` (the PHP `send` callback runs for each *received* message).
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return ws.close(
                id,
                CloseCode::UNSUPPORTED_DATA,
                "this chat accepts text only",
            );
        };
        let name = ws.data::<String>(id).cloned().unwrap_or_default();
        let event = match text.strip_prefix("/nick ").map(str::trim) {
            // No control characters: names are printed on the operator's terminal.
            Some(new)
                if (1..=MAX_NICK).contains(&new.chars().count())
                    && !new.chars().any(char::is_control) =>
            {
                println!("~ {name} is now {new}");
                ws.set_data(id, new.to_string());
                ws.set_presence(id, &json!({"id": id.get(), "name": new}).to_string());
                json!({"type": "nick", "id": id.get(), "old": name, "name": new})
            }
            Some(_) => {
                let error = format!(
                    "a nickname has 1 to {MAX_NICK} characters, none of them control characters"
                );
                return ws.send(id, json!({"type": "error", "text": error}).to_string());
            }
            None => json!({"type": "message", "id": id.get(), "name": name, "text": text}),
        };
        if !ws.broadcast(event.to_string()) {
            // Only with --redis, while Redis is away and this node already keeps as many messages as it may.
            let error = "the chat cannot take more messages right now; try again in a moment";
            ws.send(id, json!({"type": "error", "text": error}).to_string());
        }
    }

    /// Someone left, for whatever reason: tell the others.
    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, mut closed: Closed<'_>) {
        let Some(name) = closed.take_data::<String>() else {
            return;
        };
        self.users.remove(&id);
        println!(
            "- {name} left: {:?}, code {} ({} online)",
            closed.by,
            closed.status(),
            ws.count()
        );
        let leave = json!({"type": "leave", "id": id.get(), "name": name, "users": ws.count()});
        ws.broadcast(leave.to_string());
        if let (true, Some(timer)) = (self.users.is_empty(), self.users_timer.take()) {
            ws.cancel(timer);
        }
    }

    /// Every event this loop delivered, from any loop or node: the chat messages are the history.
    fn published(&mut self, _topic: Option<&str>, msg: Message<'_>) {
        let Message::Text(text) = msg else { return };
        if serde_json::from_str::<Value>(text).is_ok_and(|e| e["type"] == "message") {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(text.to_string());
        }
    }

    /// A user of another node that died (`--redis`): this node tells everyone, once.
    fn departed(&mut self, ws: &mut Handle<'_>, presence: &str) {
        let Ok(user) = serde_json::from_str::<Value>(presence) else {
            return;
        };
        println!(
            "- {} left with its node ({} online)",
            user["name"],
            ws.count()
        );
        let leave =
            json!({"type": "leave", "id": user["id"], "name": user["name"], "users": ws.count()});
        ws.broadcast(leave.to_string());
    }

    /// The timer set in `add`: the whole server's user count, to this loop's users.
    fn timer(&mut self, ws: &mut Handle<'_>, _token: u64) {
        let users = json!({"type": "users", "users": ws.count()}).to_string();
        for &id in &self.users {
            ws.send(id, users.as_str());
        }
    }
}

fn main() {
    args::init_logging();
    let defaults = args::Args {
        deflate: true,
        metrics: true,
        ..args::Args::new(8080, 100, 65536)
    };
    let args = args::parse("chatroom", defaults, true);
    // Every browser offers permessage-deflate (RFC 7692); chat's JSON shrinks well. `--no-deflate` declines it.
    let config = Config::default()
        .max_users(args.max_users)
        .max_memory(args.max_memory)
        .max_message(args.max_message)
        .deflate(args.deflate())
        .metrics(args.metrics)
        .tls(args.tls("chatroom"));
    // One loop per thread, each with its own listener on the port (one thread: the PHP loop, on this one).
    let loops =
        Loops::bind((args.host.as_str(), args.port), config, args.threads).unwrap_or_else(|e| {
            eprintln!(
                "chatroom: cannot listen on {}:{}: {e}",
                args.host, args.port
            );
            std::process::exit(1)
        });
    let loops = match &args.redis {
        None => loops,
        Some(_) => join_nodes(loops, &args),
    };
    let remote = loops.remote();
    ctrlc::set_handler(move || remote.stop()).expect("no other signal handler is installed");
    let addr = loops.local_addr().expect("a bound listener has an address");
    println!("chatroom on http{}://{addr}/ (Ctrl-C to stop)", args.s());
    println!(
        "  the protocol inspector: http{}://{addr}/inspect",
        args.s()
    );
    if args.metrics {
        println!(
            "  live figures: http{s}://{addr}/stats, Prometheus: http{s}://{addr}/metrics",
            s = args.s()
        );
    }
    // Each loop gets a room of its own: its handler sees its own connections; what it broadcasts reaches all.
    if let Err(e) = loops.run(|_| Chatroom::default()) {
        eprintln!("chatroom: {e}");
        std::process::exit(1);
    }
    println!("chatroom stopped");
}

/// `--redis URL`: this node and every other that uses that Redis are one chat.
#[cfg(feature = "redis")]
fn join_nodes(loops: Loops, args: &args::Args) -> Loops {
    let mut redis = wsloop::RedisConfig::new(args.redis.clone().unwrap_or_default());
    redis.maxlen = args.redis_maxlen.unwrap_or(redis.maxlen);
    redis.pending = args.redis_pending.unwrap_or(redis.pending);
    loops.redis(redis).unwrap_or_else(|e| {
        eprintln!("chatroom: {e}");
        std::process::exit(1)
    })
}

#[cfg(not(feature = "redis"))]
fn join_nodes(_: Loops, _: &args::Args) -> Loops {
    eprintln!("chatroom: --redis needs the redis feature: cargo run --example chatroom --features redis -- ...");
    std::process::exit(1)
}
