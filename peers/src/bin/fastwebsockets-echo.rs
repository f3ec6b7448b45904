//! Echo (or broadcast) server on fastwebsockets, a second peer for wsloop's examples.
//!
//! ```text
//! fastwebsockets-echo --port 9001 [--host 127.0.0.1] [--mode echo|broadcast] [--threads 1]
//! ```
//!
//! Same flags and behaviour as `tokio-tungstenite-echo`. fastwebsockets leaves the HTTP upgrade to
//! the application (its optional `upgrade` feature brings in hyper); here the handshake is parsed
//! by hand with httparse, as wsloop does, so the figures measure the frame layer, not an HTTP
//! server. Messages go through `FragmentCollector`, which joins fragments and checks UTF-8.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use fastwebsockets::{
    FragmentCollector, FragmentCollectorRead, Frame, OpCode, Payload, Role, WebSocket,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const USAGE: &str =
    "usage: fastwebsockets-echo --port P [--host 127.0.0.1] [--mode echo|broadcast] [--threads N]";
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEAD: usize = 8192;

/// One frame to write: data messages share one payload among all receivers.
type Outbound = (OpCode, Bytes);

#[derive(Default)]
struct Hub {
    next_id: u64,
    queues: HashMap<u64, mpsc::UnboundedSender<Outbound>>,
}

fn main() {
    let hub = Arc::new(Mutex::new(Hub::default()));
    wsloop_peers::run_peer_server("fastwebsockets", USAGE, move |stream, broadcast| {
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

/// Reads the request head, answers 101 (or 400 and `None`).
async fn handshake(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let accept = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Complete(used)) if used == head.len() => {
                let key = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                    .map(|h| h.value);
                let upgrade = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("upgrade")
                        && h.value.eq_ignore_ascii_case(b"websocket")
                });
                match key {
                    Some(key) if upgrade && req.method == Some("GET") => break accept_key(key),
                    _ => {}
                }
            }
            _ => {}
        }
        let _ = stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        return None;
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.ok()
}

fn accept_key(key: &[u8]) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1.digest().bytes())
}

async fn echo(mut stream: TcpStream) {
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let mut ws = FragmentCollector::new(WebSocket::after_handshake(stream, Role::Server));
    // Pings are answered and a close is echoed inside read_frame (auto_pong, auto_close).
    while let Ok(frame) = ws.read_frame().await {
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let reply = Frame::new(true, frame.opcode, None, frame.payload);
                if ws.write_frame(reply).await.is_err() {
                    break;
                }
            }
            OpCode::Close => break,
            _ => {}
        }
    }
}

async fn relay(mut stream: TcpStream, hub: Arc<Mutex<Hub>>) {
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let (read, write) = stream.into_split();
    let write = tokio::io::BufWriter::new(write);
    let (read, mut write) = fastwebsockets::after_handshake_split(read, write, Role::Server);
    let mut read = FragmentCollectorRead::new(read);
    let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
    let id = {
        let mut hub = hub.lock().expect("hub lock");
        hub.next_id += 1;
        let id = hub.next_id;
        hub.queues.insert(id, tx.clone());
        id
    };

    // fastwebsockets writes each frame straight to its stream; a BufWriter under it lets a burst
    // of queued frames leave in one write, flushed once the queue is empty (as tungstenite does).
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some((opcode, payload)) = next {
                let frame = Frame::new(true, opcode, None, Payload::Borrowed(&payload));
                if write.write_frame(frame).await.is_err() || opcode == OpCode::Close {
                    let _ = write.flush().await;
                    return;
                }
                next = rx.try_recv().ok();
            }
            if write.flush().await.is_err() {
                return;
            }
        }
    });

    // Replies the protocol obliges (pong, close) go through the same writer queue.
    let mut obligated = |frame: Frame<'_>| {
        let sent = tx.send((frame.opcode, Bytes::copy_from_slice(&frame.payload)));
        std::future::ready(sent.map_err(|_| "writer gone"))
    };
    while let Ok(frame) = read.read_frame(&mut obligated).await {
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                let payload = into_bytes(frame.payload);
                let hub = hub.lock().expect("hub lock");
                for queue in hub.queues.values() {
                    let _ = queue.send((frame.opcode, payload.clone()));
                }
            }
            OpCode::Close => break,
            _ => {}
        }
    }
    hub.lock().expect("hub lock").queues.remove(&id);
    // The writer ends once its queue is drained (an obliged close reply included) and the last
    // sender is gone.
    drop(tx);
    let _ = writer.await;
}

/// The payload as shared `Bytes`, without copying when the library already owns it.
fn into_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(b) => b.freeze(),
        Payload::Owned(v) => Bytes::from(v),
        Payload::Borrowed(s) => Bytes::copy_from_slice(s),
        Payload::BorrowedMut(s) => Bytes::copy_from_slice(s),
    }
}
