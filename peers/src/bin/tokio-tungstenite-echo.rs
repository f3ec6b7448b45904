//! Echo (or broadcast) server on tokio-tungstenite, the peer that wsloop's examples are loaded against.
//!
//! ```text
//! tokio-tungstenite-echo --port 9001 [--host 127.0.0.1] [--mode echo|broadcast] [--threads 1]
//! ```
//!
//! `echo` sends every message back to its sender with the same opcode; `broadcast` relays every
//! message to every connection, the sender included. `--threads 1` (the default) runs a
//! current-thread runtime, one core like wsloop's single poll loop; more threads use tokio's
//! multi-thread scheduler. The code is the plain, idiomatic use of the library: `accept_async`,
//! then `StreamExt::next` / `SinkExt::send`; for broadcast one unbounded channel per connection
//! feeding a writer task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wsloop_peers::{raise_nofile_limit, Flags};

const USAGE: &str =
    "usage: tokio-tungstenite-echo --port P [--host 127.0.0.1] [--mode echo|broadcast] [--threads N]";

/// Every open connection's outbound queue, for broadcast mode.
#[derive(Default)]
struct Hub {
    next_id: u64,
    queues: HashMap<u64, mpsc::UnboundedSender<Message>>,
}

fn main() {
    let flags = Flags::parse(
        std::env::args().skip(1),
        &["host", "port", "mode", "threads"],
        USAGE,
    );
    let addr = flags.loopback_addr(9001);
    let broadcast = match flags.opt("mode").unwrap_or("echo") {
        "echo" => false,
        "broadcast" => true,
        other => wsloop_peers::usage_exit(USAGE, &format!("unknown mode {other:?}")),
    };
    let threads: usize = flags.get("threads", 1);
    raise_nofile_limit(65_536);

    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_io()
            .build()
    }
    .expect("tokio runtime");

    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1)
        });
        eprintln!(
            "tokio-tungstenite {} server on ws://{addr}",
            if broadcast { "broadcast" } else { "echo" }
        );
        let hub = Arc::new(Mutex::new(Hub::default()));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            if broadcast {
                tokio::spawn(relay(stream, hub.clone()));
            } else {
                tokio::spawn(echo(stream));
            }
        }
    });
}

async fn echo(stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
        // Pings are answered and a close is echoed by tungstenite itself; the stream then ends.
    }
}

async fn relay(stream: TcpStream, hub: Arc<Mutex<Hub>>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let id = {
        let mut hub = hub.lock().expect("hub lock");
        hub.next_id += 1;
        let id = hub.next_id;
        hub.queues.insert(id, tx);
        id
    };

    // The writer feeds everything already queued, then flushes once: one write for a burst.
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.feed(msg).await.is_err() {
                return;
            }
            while let Ok(msg) = rx.try_recv() {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    while let Some(Ok(msg)) = source.next().await {
        if msg.is_text() || msg.is_binary() {
            let hub = hub.lock().expect("hub lock");
            for queue in hub.queues.values() {
                // Message payloads are reference-counted `Bytes`: the clone copies no payload.
                let _ = queue.send(msg.clone());
            }
        }
    }
    hub.lock().expect("hub lock").queues.remove(&id);
    writer.abort();
}
