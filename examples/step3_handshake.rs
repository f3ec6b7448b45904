//! Step 3 of the book (`book/`, chapter 3): the opening handshake, RFC 6455 §4.
//!
//! Step 2's poll loop with a new `on_data`, PHP's `upgrade()`: a client's request head is collected until its
//! blank line, checked, and answered with `101 Switching Protocols` or a refusal; then the client is handshaked
//! (PHP's `$this->isHand`). Frames are not decoded yet: their bytes are printed in hex, for chapter 4. Steps 4
//! and 5 reuse this file (the items marked `pub`). Run it with
//!
//! ```text
//! cargo run --example step3_handshake           # 127.0.0.1:8080; -- --port 9000 for another port, 0 for any
//! ```
//!
//! and try `curl -i -N -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13'
//! -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' http://127.0.0.1:8080/`, or `new WebSocket('ws://127.0.0.1:8080')`
//! in a browser's console.

use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

// ANCHOR: reuse
// Step 2, as it is: its loop, `start_server`, and its `Client`. (Its own `main` and `echo` are not used here.)
#[allow(dead_code)]
#[path = "step2_poll.rs"]
mod step2;
pub use step2::{address, start_server, Client};
// ANCHOR_END: reuse

/// §1.3: the GUID appended to the client's key before hashing.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A request head longer than this is refused (431) instead of being buffered without end.
const MAX_HEAD: usize = 8 * 1024;

// ANCHOR: upgrade
/// PHP `upgrade()`: once the whole request head has arrived, answer it. Returns false if the connection is to be
/// closed (the request was refused, or the answer could not be written); true while waiting, and once upgraded.
pub fn upgrade(client: &mut Client, id: usize) -> bool {
    // The head ends with an empty line (RFC 7230 §3); until it is here, wait for more, but not forever.
    let end = client.buf.windows(4).position(|w| w == b"\r\n\r\n");
    let response = match end {
        None if client.buf.len() <= MAX_HEAD => return true,
        Some(end) if end <= MAX_HEAD => {
            let head = String::from_utf8_lossy(&client.buf[..end]).into_owned();
            client.buf.drain(..end + 4); // what follows the head stays: it may be the first frame
            match check_request(&head) {
                Ok(key) => switching_protocols(key),
                Err((status, why)) => refusal(status, why),
            }
        }
        _ => refusal(431, "the request head is too long"),
    };
    let status = response.get(9..12).unwrap_or_default(); // "HTTP/1.1 101 ..."
    println!("#{id} handshake: {status}");
    client.is_handshaked = status == "101";
    client.stream.write_all(response.as_bytes()).is_ok() && client.is_handshaked
}
// ANCHOR_END: upgrade

// ANCHOR: check_request
/// RFC 6455 §4.2.1, in its order: what a handshake must hold. Ok(the client's key), or Err(a status and why).
fn check_request(head: &str) -> Result<&str, (u16, &'static str)> {
    let mut lines = head.split("\r\n");
    // 1. An HTTP/1.1 GET: "GET /chat HTTP/1.1".
    let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let ["GET", _target, "HTTP/1.1"] = request_line[..] else {
        return Err((400, "a handshake is an HTTP/1.1 GET request"));
    };
    // "Name: value" lines; names are case-insensitive, and some values are comma-separated lists.
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    let header = |name: &str| {
        let found = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|&(_, value)| value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    // 2. to 4.: a Host, "Upgrade: websocket" and "Connection: Upgrade".
    if header("Host").is_none() {
        return Err((400, "no Host header"));
    }
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        return Err((400, "no Upgrade: websocket and Connection: Upgrade"));
    }
    // 5. A key: 16 bytes in base64. (The PHP version took whatever followed "Sec-WebSocket-Key: ".)
    let key = header("Sec-WebSocket-Key").unwrap_or_default();
    if !BASE64.decode(key).is_ok_and(|bytes| bytes.len() == 16) {
        return Err((400, "Sec-WebSocket-Key must be 16 bytes in base64"));
    }
    // 6. Version 13; §4.2.2 answers another one with 426 and the version we speak.
    match header("Sec-WebSocket-Version") {
        Some("13") => Ok(key),
        Some(_) => Err((426, "only Sec-WebSocket-Version 13 is spoken here")),
        None => Err((400, "no Sec-WebSocket-Version")),
    }
}
// ANCHOR_END: check_request

// ANCHOR: accept_key
/// §4.2.2: the 101 response. Its `Sec-WebSocket-Accept` proves the server read this request: the client's key
/// with the GUID appended, hashed with SHA-1, the 20 bytes of the hash in base64.
fn switching_protocols(key: &str) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID.as_bytes());
    let accept = BASE64.encode(sha1.digest().bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
}
// ANCHOR_END: accept_key

// ANCHOR: refusal
/// A refused request: its status, a line saying why, and the connection closed after it.
fn refusal(status: u16, why: &str) -> String {
    let (reason, extra) = match status {
        // RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
        426 => (
            "Upgrade Required",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        ),
        431 => ("Request Header Fields Too Large", ""),
        _ => ("Bad Request", ""),
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Connection: close\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{why}\n",
        why.len() + 1
    )
}
// ANCHOR_END: refusal

// ANCHOR: main
/// Step 3's `on_data`. PHP: `if (!$this->isHand[$index]) upgrade(...)`. Frames are chapter 4's: for now their
/// bytes are only shown.
fn show_bytes(client: &mut Client, id: usize) -> bool {
    if !client.is_handshaked && !upgrade(client, id) {
        return false;
    }
    if client.is_handshaked && !client.buf.is_empty() {
        let hex: Vec<String> = client.buf.iter().map(|b| format!("{b:02x}")).collect();
        println!("#{id} sent {} bytes: {}", hex.len(), hex.join(" "));
        client.buf.clear();
    }
    true
}

fn main() -> io::Result<()> {
    start_server(show_bytes)
}
// ANCHOR_END: main
