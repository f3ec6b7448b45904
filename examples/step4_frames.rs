//! Step 4 of the book (`book/`, chapter 4): frames, RFC 6455 §5.
//!
//! Step 3's server with a new `on_data`, PHP's `decode()`: after the handshake, a client's buffer is decoded frame
//! by frame (the header's bits, the three length forms, the masking key), whether it holds half a frame or several.
//! Every frame is printed; data frames are echoed, a ping gets a pong and a close a close. Simplified, as chapter 6
//! explains: a frame may carry at most 1 MiB, text is not checked as UTF-8, and fragments are echoed one by one,
//! not joined into messages. Step 5 reuses this file's codec (the items marked `pub`). Run it with
//!
//! ```text
//! cargo run --example step4_frames              # 127.0.0.1:8080; -- --port 9000 for another port, 0 for any
//! ```
//!
//! and in a browser's console: `ws = new WebSocket('ws://127.0.0.1:8080'); ws.onmessage = e => console.log(e.data)`,
//! then `ws.send('Hello')`.

use std::io::{self, Write};

// ANCHOR: reuse
// Step 3, as it is: step 2's loop and the handshake. (Its own `main` is not used here.)
#[allow(dead_code)]
#[path = "step3_handshake.rs"]
mod step3;
pub use step3::{address, start_server, upgrade, Client};
// ANCHOR_END: reuse

// ANCHOR: constants
/// A frame announcing a longer payload is refused with close code 1009 (simplified: see chapter 6).
const MAX_PAYLOAD: usize = 1 << 20;
/// §5.2: the opcodes. 0x3-0x7 and 0xB-0xF are reserved.
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;
// ANCHOR_END: constants

// ANCHOR: decode
/// One frame, unmasked.
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// §5.2: one frame from the front of `buf`. `Ok(None)` while part of it has not arrived (nothing is used);
/// `Ok(Some((frame, used)))` once it has, with the number of bytes it took; `Err(close code)` for a broken rule,
/// found as soon as the header shows it.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, u16> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let (fin, rsv, opcode) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0f);
    let (masked, len7) = (b1 & 0x80 != 0, b1 & 0x7f);
    // No extension was agreed, so the RSV bits are 0; a reserved opcode is an error too.
    let known = matches!(
        opcode,
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
    );
    // §5.5: a control frame (opcode 0x8 and up) is never fragmented and carries at most 125 bytes.
    let bad_control = opcode >= OP_CLOSE && (!fin || len7 > 125);
    // §5.1: "The server MUST close the connection upon receiving a frame that is not masked."
    if rsv != 0 || !known || bad_control || !masked {
        return Err(1002);
    }
    // The length: 0-125 as it is; 126: the next 2 bytes hold it; 127: the next 8. Big-endian.
    let (len, at) = match len7 {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        len => (u64::from(len), 2),
    };
    // Known before any of the payload has come: refuse it now rather than wait for it.
    if len > MAX_PAYLOAD as u64 {
        return Err(1009);
    }
    let len = len as usize;
    let Some(key) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let Some(masked_payload) = buf.get(at + 4..at + 4 + len) else {
        return Ok(None);
    };
    // §5.3: byte i of the payload was XORed with byte i % 4 of the masking key; XOR again to undo it.
    let payload = masked_payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        at + 4 + len,
    )))
}
// ANCHOR_END: decode

// ANCHOR: encode
/// §5.2 from the server's side: FIN and the opcode, the shortest length form, and no mask (a server never masks).
pub fn encode(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    match payload.len() {
        len @ 0..=125 => out.push(len as u8),
        len @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}
// ANCHOR_END: encode

// ANCHOR: on_data
/// Step 4's `on_data`: the handshake as in step 3, then PHP's `decode()`. The buffer may hold part of a frame, a
/// frame, or several: take whole ones while there are some, and leave a part where it is for the next read.
fn on_frames(client: &mut Client, id: usize) -> bool {
    if !client.is_handshaked && !upgrade(client, id) {
        return false;
    }
    while client.is_handshaked {
        match decode(&client.buf) {
            Ok(None) => break,
            Ok(Some((frame, used))) => {
                client.buf.drain(..used);
                if !on_frame(client, id, frame) {
                    return false;
                }
            }
            Err(code) => {
                // §7.1.7: a peer that breaks the protocol is told why (the close code), then dropped.
                println!("#{id} broke the protocol: close {code}");
                let _ = client
                    .stream
                    .write_all(&encode(true, OP_CLOSE, &code.to_be_bytes()));
                return false;
            }
        }
    }
    true
}
// ANCHOR_END: on_data

// ANCHOR: on_frame
/// What one frame asks for. Returns false when the connection is to be closed.
fn on_frame(client: &mut Client, id: usize, frame: Frame) -> bool {
    let (fin, len) = (u8::from(frame.fin), frame.payload.len());
    println!(
        "#{id} frame: FIN={fin} opcode={:#x} payload_len={len}",
        frame.opcode
    );
    let reply = match frame.opcode {
        // §5.5.2: a pong carries the ping's payload back. A pong needs no answer.
        OP_PING => encode(true, OP_PONG, &frame.payload),
        OP_PONG => return true,
        // §5.5.1: answer a close with a close, echoing its code (the first two bytes), then hang up.
        OP_CLOSE => {
            let code = frame.payload.get(..2).unwrap_or_default();
            let _ = client.stream.write_all(&encode(true, OP_CLOSE, code));
            return false;
        }
        // Text, binary or a continuation: back as it came (chapter 6 joins fragments into messages).
        opcode => encode(frame.fin, opcode, &frame.payload),
    };
    client.stream.write_all(&reply).is_ok()
}

fn main() -> io::Result<()> {
    start_server(on_frames)
}
// ANCHOR_END: on_frame
