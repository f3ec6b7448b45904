//! Echo (or broadcast) server on tokio-tungstenite, the peer that wsloop's examples are loaded against.
//!
//! ```text
//! tokio-tungstenite-echo --port 9001 [--host 127.0.0.1] [--mode echo|broadcast] [--threads 1]
//!                        [--tls-cert cert.pem --tls-key key.pem]
//! ```
//!
//! `echo` sends every message back to its sender with the same opcode; `broadcast` relays every
//! message to every connection, the sender included. `--threads 1` (the default) runs a
//! current-thread runtime, one core like wsloop's single poll loop; more threads use tokio's
//! multi-thread scheduler. The code is the plain, idiomatic use of the library: `accept_async`,
//! then `StreamExt::next` / `SinkExt::send`; for broadcast one unbounded channel per connection
//! feeding a writer task.
//!
//! With `--tls-cert` and `--tls-key` (PEM: the chain, then a PKCS#8, PKCS#1 or SEC1 key) it serves
//! `wss://` through tokio-rustls, configured as wsloop's TLS is: rustls with the `ring` provider, its
//! safe defaults (TLS 1.3 and 1.2), no client certificates, `http/1.1` offered through ALPN. Each
//! connection's TLS handshake (`TlsAcceptor::accept`) comes before the WebSocket one, in the
//! connection's own task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use wsloop_peers::Flags;

const USAGE: &str =
    "usage: tokio-tungstenite-echo --port P [--host 127.0.0.1] [--mode echo|broadcast] [--threads N]
         [--tls-cert FILE --tls-key FILE] (wss://)";

/// Every open connection's outbound queue, for broadcast mode.
#[derive(Default)]
struct Hub {
    next_id: u64,
    queues: HashMap<u64, mpsc::UnboundedSender<Message>>,
}

fn main() {
    let hub = Arc::new(Mutex::new(Hub::default()));
    let extra = ["tls-cert", "tls-key"];
    wsloop_peers::run_peer_server_with("tokio-tungstenite", USAGE, &extra, |flags| {
        let tls = acceptor(flags);
        move |stream, broadcast| {
            let (hub, tls) = (hub.clone(), tls.clone());
            async move {
                match tls {
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            serve(stream, broadcast, hub).await;
                        }
                    }
                    None => serve(stream, broadcast, hub).await,
                }
            }
        }
    });
}

/// The TLS acceptor `--tls-cert` and `--tls-key` ask for, if they do; a file that cannot be used
/// exits with status 1, saying which and why.
fn acceptor(flags: &Flags) -> Option<TlsAcceptor> {
    let (cert, key) = match (flags.opt("tls-cert"), flags.opt("tls-key")) {
        (None, None) => return None,
        (Some(cert), Some(key)) => (cert, key),
        _ => wsloop_peers::usage_exit(USAGE, "--tls-cert and --tls-key go together"),
    };
    let fail = |what: String| -> ! {
        eprintln!("tokio-tungstenite-echo: {what}");
        std::process::exit(1)
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .unwrap_or_else(|e| fail(format!("{cert}: {e}")));
    if chain.is_empty() {
        fail(format!("{cert}: no CERTIFICATE block in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).unwrap_or_else(|e| fail(format!("{key}: {e}")));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .unwrap_or_else(|e| fail(format!("the certificate and key were refused: {e}")));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some(TlsAcceptor::from(Arc::new(config)))
}

/// One connection, plain or through TLS, in the server's mode.
async fn serve<S>(stream: S, broadcast: bool, hub: Arc<Mutex<Hub>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if broadcast {
        relay(stream, hub).await;
    } else {
        echo(stream).await;
    }
}

async fn echo<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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

async fn relay<S>(stream: S, hub: Arc<Mutex<Hub>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
