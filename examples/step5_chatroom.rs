//! Step 5 of the book (`book/`, chapter 5): the chatroom, with PHP's function table `add` / `send` / `close`.
//!
//! Step 4's handshake and codec, in a loop of its own that, like the PHP class, calls the application's functions:
//! `add` when a client has been handshaked, `send` for each text message it sends, `close` when it has gone. The
//! chatroom's three functions broadcast `#ID joined`, `#ID: TEXT` and `#ID left` to everyone. Run it with
//!
//! ```text
//! cargo run --example step5_chatroom            # 127.0.0.1:8080; -- --port 9000 for another port, 0 for any
//! ```
//!
//! and in two browser tabs' consoles: `ws = new WebSocket('ws://127.0.0.1:8080'); ws.onmessage = e =>
//! console.log(e.data)`, then `ws.send('hello')` in one of them.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

// ANCHOR: reuse
// Step 4, as it is: step 3's handshake and step 4's frame codec. (Its own `main` is not used here.)
#[allow(dead_code)]
#[path = "step4_frames.rs"]
mod step4;
use step4::{decode, encode, upgrade, Client, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};
// ANCHOR_END: reuse

const LISTENER: Token = Token(usize::MAX);

// ANCHOR: functions
/// PHP `$this->function`: what the application does when a client joins, sends a message, and leaves. As in the
/// PHP, `send` is called for each message *received*, and answers through the server it is handed.
struct Functions {
    add: fn(&mut Server, usize),
    send: fn(&mut Server, usize, &str),
    close: fn(&mut Server, usize),
}

/// The chatroom: the whole application is these three functions.
fn add(server: &mut Server, id: usize) {
    server.broadcast(&format!("#{id} joined"));
}

fn send(server: &mut Server, id: usize, text: &str) {
    server.broadcast(&format!("#{id}: {text}"));
}

fn close(server: &mut Server, id: usize) {
    server.broadcast(&format!("#{id} left"));
}

fn main() -> io::Result<()> {
    let mut listener = TcpListener::bind(step4::address())?;
    println!("listening on {}", listener.local_addr()?);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let functions = Functions { add, send, close };
    let (clients, failed) = (HashMap::new(), Vec::new());
    let mut server = Server {
        listener,
        poll,
        clients,
        next_id: 0,
        functions,
        failed,
    };
    server.run()
}
// ANCHOR_END: functions

// ANCHOR: server
/// The PHP class, as in step 2, with the function table, and the clients a write failed for.
struct Server {
    listener: TcpListener,
    poll: Poll,
    clients: HashMap<usize, Client>,
    next_id: usize,
    functions: Functions,
    /// Clients whose socket did not take a whole frame: closed at the end of the loop's turn, not in the middle
    /// of a broadcast.
    failed: Vec<usize>,
}
// ANCHOR_END: server

impl Server {
    /// Step 2's loop, closing the clients a write failed for after each turn.
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.add_accept(),
                    Token(id) => self.on_readable(id),
                }
            }
            while let Some(id) = self.failed.pop() {
                self.close(id);
            }
        }
    }

    /// Step 2's `add_accept`.
    fn add_accept(&mut self) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    return;
                }
            };
            let (id, registry) = (self.next_id, self.poll.registry());
            self.next_id += 1;
            if let Err(e) = registry.register(&mut stream, Token(id), Interest::READABLE) {
                eprintln!("#{id} from {peer} not registered: {e}");
                continue;
            }
            println!("#{id} accepted from {peer}");
            let (buf, is_handshaked) = (Vec::new(), false);
            self.clients.insert(
                id,
                Client {
                    stream,
                    buf,
                    is_handshaked,
                },
            );
        }
    }

    /// Step 2's `on_readable`, with this server's `on_data`.
    fn on_readable(&mut self, id: usize) {
        let mut chunk = [0u8; 1024];
        loop {
            let Some(client) = self.clients.get_mut(&id) else {
                return;
            };
            match client.stream.read(&mut chunk) {
                Ok(0) => return self.close(id),
                Ok(n) => client.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(id),
            }
            if !self.on_data(id) {
                return self.close(id);
            }
        }
    }

    // ANCHOR: on_data
    /// PHP: `upgrade()` then the `add` function; afterwards `decode()` and the `send` function for each message.
    /// Returns false when the connection is to be closed.
    fn on_data(&mut self, id: usize) -> bool {
        let Some(client) = self.clients.get_mut(&id) else {
            return false;
        };
        if !client.is_handshaked {
            if !upgrade(client, id) {
                return false;
            }
            if !client.is_handshaked {
                return true; // the rest of the request head is still on its way
            }
            (self.functions.add)(self, id);
        }
        // Every whole frame in the buffer, as in step 4.
        while let Some(client) = self.clients.get_mut(&id) {
            let frame = match decode(&client.buf) {
                Ok(None) => return true,
                Ok(Some((frame, used))) => {
                    client.buf.drain(..used);
                    frame
                }
                Err(code) => return close_with(client, id, code),
            };
            match frame.opcode {
                OP_TEXT if frame.fin => match String::from_utf8(frame.payload) {
                    Ok(text) => (self.functions.send)(self, id, &text),
                    // §8.1: a text message must be UTF-8; 1007 (§7.4.1) says it was not.
                    Err(_) => return close_with(client, id, 1007),
                },
                OP_PING => {
                    let pong = encode(true, OP_PONG, &frame.payload);
                    if client.stream.write_all(&pong).is_err() {
                        return false;
                    }
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let code = frame.payload.get(..2).unwrap_or_default();
                    let _ = client.stream.write_all(&encode(true, OP_CLOSE, code));
                    return false;
                }
                // Binary data, and text in fragments: not for this chatroom (chapter 6 joins fragments). 1003:
                // "a type of data it cannot accept".
                _ => return close_with(client, id, 1003),
            }
        }
        false
    }
    // ANCHOR_END: on_data

    // ANCHOR: broadcast
    /// Sends `text` to every handshaked client, the sender too. The frame is encoded once, for everyone.
    fn broadcast(&mut self, text: &str) {
        println!("to everyone: {text}");
        let frame = encode(true, OP_TEXT, text.as_bytes());
        for (&id, client) in &mut self.clients {
            // Simplified: a client whose socket cannot take the whole frame now is closed (chapter 6 keeps the
            // rest for it, up to a limit).
            if client.is_handshaked && client.stream.write_all(&frame).is_err() {
                self.failed.push(id);
            }
        }
    }

    /// PHP `close()`: unset the client, then call the `close` function, if the client had joined.
    fn close(&mut self, id: usize) {
        let Some(mut client) = self.clients.remove(&id) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut client.stream);
        println!("#{id} closed");
        if client.is_handshaked {
            (self.functions.close)(self, id);
        }
    }
    // ANCHOR_END: broadcast
}

/// Tells a client which rule it broke (a close frame with `code`), then lets the caller close the connection.
fn close_with(client: &mut Client, id: usize, code: u16) -> bool {
    println!("#{id} is closed with {code}");
    let _ = client
        .stream
        .write_all(&encode(true, OP_CLOSE, &code.to_be_bytes()));
    false
}
