//! The chatroom of the PHP tutorial, made real: a browser page and a broadcast room on one port.
//!
//! ```text
//! cargo run --example chatroom -- --port 8080 --max-users 100 --max-message 65536 --threads 1
//! ```
//!
//! Then open <http://127.0.0.1:8080> in two browser windows and chat. Type `/nick NAME` to rename yourself.
//! Every event goes to the clients as a JSON text message with a `type`: `join`, `message`, `nick` or `leave`
//! (and first, to the newcomer alone, `welcome` with its own id and name);
//! and every few seconds `users`, the count again (a timer). With `--threads N` the room runs on N loops: every
//! user, on every loop, still sees every event in one and the same order.
//! A binary message is refused with close 1003; a message over `--max-message` bytes with close 1009.
//! Ctrl-C stops the server gracefully: every client gets close 1001 first.

#[path = "common/args.rs"]
mod args;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use wsloop::handshake::{HttpResponse, Request};
use wsloop::{close_code, Config, ConnId, Handle, Handler, Loops, Message, TimerId};

/// The page every browser gets on `GET /`: plain HTML, CSS and JavaScript, no CDN.
const PAGE: &str = include_str!("chatroom.html");
/// Longest nickname, in characters.
const MAX_NICK: usize = 32;
/// How often each loop tells its users how many are online. With several loops two joins can cross on their way
/// to a page, which then shows the count of the one that came first; this puts it right.
const USERS_EVERY: Duration = Duration::from_secs(5);

/// The room as one loop sees it: who is here, by connection id, and the timer that repeats the user count.
#[derive(Default)]
struct Chatroom {
    names: HashMap<ConnId, String>,
    users_timer: Option<TimerId>,
}

impl Chatroom {
    fn name(&self, id: ConnId) -> String {
        self.names.get(&id).cloned().unwrap_or_default()
    }
}

/// The PHP function table: `add`, `send`, `close` (plus serving the page over plain HTTP).
impl Handler for Chatroom {
    fn http(&mut self, req: &Request<'_>) -> Option<HttpResponse> {
        let path = req.path.split('?').next().unwrap_or_default();
        Some(match path {
            "/" | "/index.html" => HttpResponse::new(200, "text/html; charset=utf-8", PAGE),
            _ => HttpResponse::new(404, "text/plain; charset=utf-8", "not found\n"),
        })
    }

    /// A newcomer: give them a name, tell them who they are, and tell everyone, the newcomer included.
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId) {
        let name = format!("user-{}", id.get());
        println!("+ {name} joined ({} online)", ws.count());
        ws.send(
            id,
            json!({"type": "welcome", "id": id.get(), "name": name}).to_string(),
        );
        let join = json!({"type": "join", "id": id.get(), "name": name, "users": ws.count()});
        self.names.insert(id, name);
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
                close_code::UNSUPPORTED_DATA,
                "this chat accepts text only",
            );
        };
        let name = self.name(id);
        let event = match text.strip_prefix("/nick ").map(str::trim) {
            // No control characters: names are printed on the operator's terminal.
            Some(new)
                if (1..=MAX_NICK).contains(&new.chars().count())
                    && !new.chars().any(char::is_control) =>
            {
                println!("~ {name} is now {new}");
                self.names.insert(id, new.to_string());
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
        ws.broadcast(event.to_string());
    }

    /// Someone left, for whatever reason: tell the others.
    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, code: u16) {
        let Some(name) = self.names.remove(&id) else {
            return;
        };
        println!("- {name} left with code {code} ({} online)", ws.count());
        let leave = json!({"type": "leave", "id": id.get(), "name": name, "users": ws.count()});
        ws.broadcast(leave.to_string());
        if self.names.is_empty() {
            if let Some(timer) = self.users_timer.take() {
                ws.cancel(timer);
            }
        }
    }

    /// The timer set in `add`: the whole server's user count, to this loop's users.
    fn timer(&mut self, ws: &mut Handle<'_>, _token: u64) {
        let users = json!({"type": "users", "users": ws.count()}).to_string();
        for &id in self.names.keys() {
            ws.send(id, users.as_str());
        }
    }
}

fn main() {
    args::init_logging();
    let defaults = args::Args {
        host: "127.0.0.1".into(),
        port: 8080,
        max_users: 100,
        max_message: 65536,
        threads: 1,
    };
    let args = args::parse("chatroom", defaults, true);
    let config = Config {
        max_users: args.max_users,
        max_message: args.max_message,
        ..Config::default()
    };
    // One loop per thread, each with its own listener on the port (one thread: the PHP loop, on this one).
    let loops =
        Loops::bind((args.host.as_str(), args.port), config, args.threads).unwrap_or_else(|e| {
            eprintln!(
                "chatroom: cannot listen on {}:{}: {e}",
                args.host, args.port
            );
            std::process::exit(1)
        });
    let remote = loops.remote();
    ctrlc::set_handler(move || remote.stop()).expect("no other signal handler is installed");
    println!(
        "chatroom on http://{}/ (Ctrl-C to stop)",
        loops.local_addr().expect("a bound listener has an address")
    );
    // Each loop gets a room of its own: its handler sees its own connections; what it broadcasts reaches all.
    if let Err(e) = loops.run(|_| Chatroom::default()) {
        eprintln!("chatroom: {e}");
        std::process::exit(1);
    }
    println!("chatroom stopped");
}
