//! Step 6 of the book (`book/`, chapters 6 and 7): step 5's chatroom on the wsloop library.
//!
//! The same three functions, as methods of a `Handler`; the loop, the handshake, the codec and everything chapter 6
//! adds (partial writes, fragments, UTF-8 as it arrives, the closing handshake, limits and timeouts) are the
//! library's. It says the same things as step 5, so the book's tests run the same chat against both. Run it with
//!
//! ```text
//! cargo run --example step6_wsloop              # 127.0.0.1:8080; -- --port 9000 for another port, 0 for any
//! ```
//!
//! and try it as step 5: `ws = new WebSocket('ws://127.0.0.1:8080'); ws.onmessage = e => console.log(e.data)`.

use wsloop::{CloseCode, Closed, Config, ConnId, Context, Handle, Handler, Message, Server};

// ANCHOR: chatroom
/// PHP's function table, as a trait: `add`, `send` (for each message received) and `close`.
struct Chatroom;

impl Handler for Chatroom {
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, _request: &Context<'_>) {
        ws.broadcast(format!("{id} joined")); // a ConnId prints as #ID
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        match msg {
            Message::Text(text) => {
                ws.broadcast(format!("{id}: {text}"));
            }
            Message::Binary(_) => ws.close(id, CloseCode::UNSUPPORTED_DATA, "text only"),
        }
    }

    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, _closed: Closed<'_>) {
        ws.broadcast(format!("{id} left"));
    }
}

fn main() -> Result<(), wsloop::Error> {
    let server = Server::bind(address(), Config::default())?;
    println!("listening on {}", server.local_addr()?);
    server.run(Chatroom)
}
// ANCHOR_END: chatroom

/// 127.0.0.1 and the port given as `--port N`: 8080 by default, as in the PHP article (0 lets the system choose).
fn address() -> std::net::SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    let port = match args.windows(2).find(|pair| pair[0] == "--port") {
        Some(pair) => pair[1]
            .parse()
            .expect("--port takes a number from 0 to 65535"),
        None => 8080,
    };
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}
