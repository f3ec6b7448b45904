//! Step 1 of the book (`book/`, chapter 1): a TCP server that accepts one client at a time and prints what it sends.
//!
//! The PHP chatroom's `socket_create`, `socket_bind`, `socket_listen` and `socket_accept`, with Rust's standard
//! library alone. It reads once from each client (as PHP's `socket_recv` does, at most 1024 bytes), prints what
//! came, sends it back and hangs up. Run it with
//!
//! ```text
//! cargo run --example step1_accept              # 127.0.0.1:8080; -- --port 9000 for another port, 0 for any
//! ```
//!
//! and from another terminal, in bash: `exec 3<>/dev/tcp/127.0.0.1/8080; echo hello >&3; cat <&3`. Or open
//! <http://127.0.0.1:8080/> in a browser and read the request it sent.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

fn main() -> io::Result<()> {
    // ANCHOR: listen
    // PHP: socket_create, socket_set_option(SO_REUSEADDR), socket_bind and socket_listen, in one call. On Unix the
    // standard library sets SO_REUSEADDR itself, so a restarted server need not wait for old connections to end.
    let listener = TcpListener::bind(address())?;
    // The first line says where we listen (with `--port 0`, which port the system chose).
    println!("listening on {}", listener.local_addr()?);
    // ANCHOR_END: listen

    // ANCHOR: accept
    // PHP: the while(TRUE) loop and socket_accept. `incoming()` waits in accept(2) until a client connects.
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => serve(stream),
            // Usually a client that gave up while it waited in the queue: its failure, not the server's.
            Err(e) => eprintln!("accept failed: {e}"),
        }
    }
    // ANCHOR_END: accept
    Ok(())
}

// ANCHOR: serve
/// One client: read once, print what came, send it back, hang up.
fn serve(mut stream: TcpStream) {
    let peer = match stream.peer_addr() {
        Ok(addr) => addr.to_string(),
        Err(_) => "a client".to_string(),
    };
    println!("accepted {peer}");
    // PHP: socket_recv($socket, $data, 1024, 0). This waits until the client sends something or hangs up, and
    // while it waits, nobody else is accepted: that is what chapter 2 is about.
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf) {
        Ok(0) => println!("{peer} hung up without a word"),
        Ok(n) => {
            println!("{peer} sent {n} bytes:");
            println!("{}", String::from_utf8_lossy(&buf[..n]).trim_end());
            if let Err(e) = stream.write_all(&buf[..n]) {
                eprintln!("{peer}: {e}");
            }
        }
        Err(e) => eprintln!("{peer}: {e}"),
    }
    println!("{peer} closed");
    // PHP: socket_close. Here the socket closes when `stream` goes out of scope.
}
// ANCHOR_END: serve

/// 127.0.0.1 and the port given as `--port N`: 8080 by default, as in the PHP article (0 lets the system choose).
fn address() -> SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    let port = match args.windows(2).find(|pair| pair[0] == "--port") {
        Some(pair) => pair[1]
            .parse()
            .expect("--port takes a number from 0 to 65535"),
        None => 8080,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}
