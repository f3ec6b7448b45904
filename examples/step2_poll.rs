//! Step 2 of the book (`book/`, chapter 2): one `mio::Poll` for the listener and every client, the PHP
//! `socket_select` loop.
//!
//! Step 1 served one client at a time. Here the listener and all clients are registered with one poll, and the
//! loop serves whichever is ready: any number of clients at once, each echoed what it sends. mio is edge-triggered,
//! so a ready socket is accepted from or read until it says `WouldBlock`. Steps 3 and 4 reuse this loop (the items
//! marked `pub`), handing what clients send to their own `on_data`. Run it with
//!
//! ```text
//! cargo run --example step2_poll                # 127.0.0.1:8080; -- --port 9000 for another port, 0 for any
//! ```
//!
//! and connect from two terminals at once: `exec 3<>/dev/tcp/127.0.0.1/8080; echo hello >&3; head -1 <&3`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

// ANCHOR: client
/// The listener's token. A client's token is its number: 0, 1, 2, ... as PHP's `$this->accept[]` numbered them.
const LISTENER: Token = Token(usize::MAX);

/// One client: its socket, what it sent that is not used yet, and PHP's `$this->isHand[$index]` (false until
/// chapter 3 answers its handshake).
pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub is_handshaked: bool,
}

/// What the server does with a client's bytes after each read; false closes the connection. Step 2 sends them
/// back, step 3 answers the handshake, step 4 decodes frames.
pub type OnData = fn(&mut Client, usize) -> bool;
// ANCHOR_END: client

// ANCHOR: server
/// The PHP class: the listening socket, the poll that takes `socket_select`'s place, and the pool of clients.
struct Server {
    listener: TcpListener,
    poll: Poll,
    /// PHP `$this->accept`: the clients, by number.
    clients: HashMap<usize, Client>,
    next_id: usize,
    on_data: OnData,
}

/// PHP `start_server()`: create, bind, listen; register the listener with the poll; loop.
pub fn start_server(on_data: OnData) -> io::Result<()> {
    // mio's listener is non-blocking (`accept` answers `WouldBlock` instead of waiting) and sets SO_REUSEADDR.
    let mut listener = TcpListener::bind(address())?;
    println!("listening on {}", listener.local_addr()?);
    // Registered once: socket_select is handed its array anew on every turn, the poll keeps its list (on Linux,
    // an epoll set in the kernel).
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let clients = HashMap::new();
    let mut server = Server {
        listener,
        poll,
        clients,
        next_id: 0,
        on_data,
    };
    server.run()
}
// ANCHOR_END: server

impl Server {
    // ANCHOR: run
    /// PHP: the while(TRUE) around socket_select.
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            // PHP: socket_select(..., null). Sleep until at least one socket is ready.
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue; // a signal woke us, not a socket
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.add_accept(),
                    Token(id) => self.on_readable(id),
                }
            }
            // No sleep(1) as in the PHP loop: poll() already waits exactly as long as nothing happens.
        }
    }
    // ANCHOR_END: run

    // ANCHOR: add_accept
    /// PHP `add_accept()`: take new sockets into the pool. The listener is reported once however many clients
    /// wait, so accept until `WouldBlock`: a client left in the queue now would wait for the next one to come.
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
                continue; // dropping `stream` closes it
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
    // ANCHOR_END: add_accept

    // ANCHOR: on_readable
    /// A client is readable: read until `WouldBlock`, handing each piece to `on_data`. The poll will not report
    /// these bytes again, so any left unread would wait until the client sends more.
    fn on_readable(&mut self, id: usize) {
        let mut chunk = [0u8; 1024];
        loop {
            let Some(client) = self.clients.get_mut(&id) else {
                return; // closed earlier in this turn
            };
            match client.stream.read(&mut chunk) {
                // PHP: nothing read means the client hung up.
                Ok(0) => return self.close(id),
                Ok(n) => client.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(id),
            }
            if !(self.on_data)(client, id) {
                return self.close(id);
            }
        }
    }
    // ANCHOR_END: on_readable

    // ANCHOR: close
    /// PHP `close()`: unset the client from the pool. Dropping the stream closes the socket, and a closed socket
    /// leaves the poll by itself; deregistering first says so explicitly.
    fn close(&mut self, id: usize) {
        if let Some(mut client) = self.clients.remove(&id) {
            let _ = self.poll.registry().deregister(&mut client.stream);
            println!("#{id} closed");
        }
    }
    // ANCHOR_END: close
}

// ANCHOR: echo
/// Step 2's `on_data`: send back what came.
fn echo(client: &mut Client, id: usize) -> bool {
    println!("#{id} sent {} bytes", client.buf.len());
    // Simplified: if the kernel cannot take all of it at once, the client is dropped (chapter 6 keeps the rest
    // for later instead).
    let sent = client.stream.write_all(&client.buf).is_ok();
    client.buf.clear();
    sent
}

fn main() -> io::Result<()> {
    start_server(echo)
}
// ANCHOR_END: echo

/// 127.0.0.1 and the port given as `--port N`: 8080 by default, as in the PHP article (0 lets the system choose).
pub fn address() -> SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    let port = match args.windows(2).find(|pair| pair[0] == "--port") {
        Some(pair) => pair[1]
            .parse()
            .expect("--port takes a number from 0 to 65535"),
        None => 8080,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}
