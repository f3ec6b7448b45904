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
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str =
    "usage: tokio-tungstenite-echo --port P [--host 127.0.0.1] [--mode echo|broadcast] [--threads N]";

/// Every open connection's outbound queue, for broadcast mode.
#[derive(Default)]
struct Hub {
    next_id: u64,
    queues: HashMap<u64, mpsc::UnboundedSender<Message>>,
}

fn main() {
    let hub = Arc::new(Mutex::new(Hub::default()));
    wsloop_peers::run_peer_server("tokio-tungstenite", USAGE, move |stream, broadcast| {
        let hub = hub.clone();
        async move {
            if broadcast {
                relay(stream, hub).await;
            } else {
                echo(stream).await;
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
