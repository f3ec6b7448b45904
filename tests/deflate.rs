//! permessage-deflate (RFC 7692) over real sockets: the offer and answer in a real handshake, compressed round trips
//! at every window, fragments with pings between them, the close codes, a publish to receivers that each agreed to
//! something else, and context takeover on the client's side.
//!
//! The client is the hand-written one of `tests/common/deflate.rs`: its compression and inflation are flate2's
//! (miniz_oxide), not the server's zlib-rs, and its [`scan`] reads the server's compressed frames to measure their
//! back-references. So these tests catch:
//!
//! - a stream only zlib-rs would read, either way (flate2 inflates what the server sends; the server inflates what
//!   flate2 sends);
//! - contexts out of step: the client keeps its inflater between messages exactly when the answer lets the server
//!   keep its compressor, and starts afresh otherwise, so a server that kept a context it said it would not (or
//!   reset one it said it would keep) fails to inflate here; a repeated message must shrink with takeover and come
//!   out byte for byte the same without it;
//! - a server that compresses with a larger window than it agreed to (`scan`: no distance over `2^bits`), or refers
//!   to an earlier message without context takeover;
//! - RSV1 where the rules say: clear below the threshold and for a receiver without the extension, set with
//!   takeover, set only on a frame that got shorter otherwise.
//!
//! What they cannot catch: the client cannot compress with a window under 32 KiB (miniz_oxide), so for a client
//! window below 15 it never refers back further than the window and never across messages; a server inflater that
//! kept too small a window would go unnoticed here below 15 bits. Memory (the bomb, with a counting allocator) is in
//! `tests/deflate_memory.rs`, a binary of its own.

mod common;

use std::net::SocketAddr;

use common::deflate::{chat_binary, chat_text, noise, scan, Agreed, Incoming, Peer, Received};
use common::{start, start_loops, Echo, Rooms, TestServer};
use wsloop::deflate::Deflate;
use wsloop::frame::OpCode;
use wsloop::Config;

/// What browsers send.
const BROWSER: &str = "permessage-deflate; client_max_window_bits";
/// The answer to an offer without parameters under the default settings.
const NO_TAKEOVER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn config(deflate: Option<Deflate>) -> Config {
    Config::default().deflate(deflate)
}

fn echo_with(deflate: Option<Deflate>) -> TestServer {
    start(config(deflate), Echo)
}

fn dedicated(kib: u32) -> Deflate {
    Deflate::dedicated(kib).expect("a preset size")
}

/// Checks a message that came back against the one sent and the rules for this connection: the same bytes and
/// type; RSV1 clear below the threshold, set at or above it when the server keeps its context, and otherwise set
/// only on a frame that is shorter than the message (always, for 16 KiB of chat or more); a compressed frame reads
/// as deflate with no distance over the agreed window and, without server context takeover, none before the start
/// of the message.
fn check(peer: &Peer, settings: &Deflate, got: &Received, opcode: OpCode, sent: &[u8], what: &str) {
    assert_eq!(got.opcode, opcode, "{what}");
    assert!(
        got.data == sent,
        "{what}: {} bytes came back as {} different ones",
        sent.len(),
        got.data.len()
    );
    let Some(agreed) = peer.agreed else {
        assert!(!got.compressed, "{what}: RSV1 without the extension");
        return;
    };
    let takeover = !agreed.server_no_context_takeover;
    if sent.len() < settings.threshold {
        assert!(
            !got.compressed,
            "{what}: {} bytes, below the threshold",
            sent.len()
        );
    } else if takeover {
        assert!(
            got.compressed,
            "{what}: {} bytes, with takeover",
            sent.len()
        );
    } else if got.compressed {
        assert!(
            got.wire.len() < sent.len(),
            "{what}: sent compressed though {} bytes took {}",
            sent.len(),
            got.wire.len()
        );
    } else {
        assert!(
            sent.len() < 16 << 10,
            "{what}: {} bytes of chat sent plain",
            sent.len()
        );
    }
    if got.compressed {
        let seen = scan(&got.wire).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(seen.len, sent.len(), "{what}: the scan's length");
        let window = 1usize << agreed.server_max_window_bits;
        assert!(
            seen.longest <= window,
            "{what}: a distance of {} in a {window}-byte window",
            seen.longest
        );
        if !takeover {
            assert_eq!(
                seen.before_start, 0,
                "{what}: a reference before the message without context takeover"
            );
        }
    }
}

/// Reads the next message and checks it against the one sent.
fn expect(
    peer: &mut Peer,
    settings: &Deflate,
    opcode: OpCode,
    sent: &[u8],
    what: &str,
) -> Received {
    let got = peer.message();
    check(peer, settings, &got, opcode, sent, what);
    got
}

/// Sends `payload` compressed (or not) and checks what comes back.
fn round_trip(
    peer: &mut Peer,
    settings: &Deflate,
    opcode: OpCode,
    payload: &[u8],
    compressed: bool,
    what: &str,
) -> Received {
    peer.send(opcode, payload, compressed);
    expect(peer, settings, opcode, payload, what)
}

/// A client with the browser's offer, which keeps its context where the answer allows it.
fn witness(addr: SocketAddr) -> Peer {
    let mut peer = Peer::connect(addr, Some(BROWSER));
    peer.keep_context = !peer.agreed.expect("deflate").client_no_context_takeover;
    peer
}

/// One compressed round trip of chat on `peer`: the server still inflates and compresses for it.
fn still_inflates(peer: &mut Peer, what: &str) {
    let text = chat_text(2000, 77);
    peer.send(OpCode::Text, text.as_bytes(), true);
    let got = peer.message();
    assert!(got.data == text.as_bytes() && got.compressed, "{what}");
}

/// A server and its settings.
type Server = (TestServer, Deflate);

#[test]
fn each_offer_gets_its_answer_in_a_real_handshake() {
    // Each server with its settings (those of `none` only say how to check a message it sends plain).
    let default = (echo_with(Some(Deflate::default())), Deflate::default());
    let none = (echo_with(None), Deflate::default());
    let small = (echo_with(Some(dedicated(3))), dedicated(3));
    let keep = (echo_with(Some(dedicated(256))), dedicated(256));
    #[rustfmt::skip]
    let table: &[(&str, &Server, &[&str], Option<&str>)] = &[
        ("the browser's offer", &default, &[BROWSER], Some(NO_TAKEOVER)),
        ("both windows named", &default, &["permessage-deflate; server_max_window_bits=10; client_max_window_bits=12"],
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12")),
        ("an unknown parameter declines the first of two offers", &default,
            &["permessage-deflate; foo, permessage-deflate; server_max_window_bits=11"],
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11")),
        ("offers in two header lines", &default, &["permessage-deflate; foo=1", "permessage-deflate; server_max_window_bits=8"],
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=8")),
        ("a malformed header declines the extension", &default, &["permessage-deflate; server_max_window_bits=\"10"], None),
        ("a malformed second header declines the extension", &default, &[BROWSER, "permessage-deflate;;"], None),
        ("no offer", &default, &[], None),
        ("another extension only", &default, &["x-webkit-deflate-frame"], None),
        ("settings None decline the browser's offer", &none, &[BROWSER], None),
        ("dedicated(3) limits both windows to 9 bits", &small, &[BROWSER],
            Some("permessage-deflate; server_max_window_bits=9; client_max_window_bits=9")),
        ("dedicated(3) names no client window to an offer without the parameter", &small, &["permessage-deflate"],
            Some("permessage-deflate; server_max_window_bits=9")),
        ("dedicated(256) keeps both contexts", &keep, &[BROWSER], Some("permessage-deflate")),
        ("dedicated(256) echoes an offered server_no_context_takeover", &keep, &["permessage-deflate; server_no_context_takeover"],
            Some("permessage-deflate; server_no_context_takeover")),
    ];
    for (rule, (server, settings), offers, expected) in table {
        let mut peer = Peer::connect_with(server.addr, offers);
        assert_eq!(peer.answer.as_deref(), *expected, "{rule}: {offers:?}");
        // The connection then works as the answer says: compressed both ways if it was accepted, plain otherwise.
        let text = chat_text(300, 1);
        let compressed = peer.agreed.is_some();
        let got = round_trip(
            &mut peer,
            settings,
            OpCode::Text,
            text.as_bytes(),
            compressed,
            rule,
        );
        assert_eq!(got.compressed, compressed, "{rule}: 300 bytes of chat");
    }
}

/// Whether a compressor with a window of `bits` can refer to the whole of the message before, `len` bytes long:
/// zlib reaches back as far as its window less its 262-byte lookahead (none at 8 bits: Huffman codes alone).
/// The same message twice in a row: with the server's context kept (and the message within its window) the second
/// comes out much smaller than the first; without it, byte for byte the same.
fn check_repeat(agreed: &Agreed, len: usize, first: &Received, second: &Received, what: &str) {
    if !agreed.server_no_context_takeover && within_reach(len, agreed.server_max_window_bits) {
        assert!(
            second.wire.len() * 2 < first.wire.len(),
            "{what}: with takeover, {} bytes then {}",
            first.wire.len(),
            second.wire.len()
        );
    } else if agreed.server_no_context_takeover {
        assert_eq!(first.wire, second.wire, "{what}: each starts afresh");
    }
}

fn within_reach(len: usize, bits: u8) -> bool {
    bits > 8 && len + 262 <= 1 << bits
}

/// Message sizes: empty, one byte, around the default threshold (64), a few packets, 16 KiB (the server's inflate
/// piece), 1 MiB.
const SIZES: [usize; 7] = [0, 1, 63, 64, 200, 16 << 10, 1 << 20];

/// Round trips of every size, text and binary, on one connection per server window 8..=15 and client window
/// (none offered, offered without a value, 9), each message compressed by the client (1 MiB only with a 15-bit
/// client window), and a plain one after each size; then the same 200-byte message twice, which must shrink the
/// second time if the server keeps its context (and its window reaches back over it) and come out the same if not.
fn round_trips_at_every_window(settings: Deflate) {
    let server = echo_with(Some(settings));
    for server_bits in 8..=15u8 {
        for client in [None, Some(""), Some("=9")] {
            let mut offer = format!("permessage-deflate; server_max_window_bits={server_bits}");
            if let Some(value) = client {
                offer.push_str(&format!("; client_max_window_bits{value}"));
            }
            let mut peer = Peer::connect(server.addr, Some(&offer));
            let agreed = peer.agreed.unwrap_or_else(|| panic!("{offer}: declined"));
            let client_bits = match client {
                None => 15,
                Some("") => settings.client_max_window_bits,
                Some(_) => settings.client_max_window_bits.min(9),
            };
            assert_eq!(
                (agreed.server_max_window_bits, agreed.client_max_window_bits),
                (
                    server_bits.min(settings.server_max_window_bits),
                    client_bits
                ),
                "{offer}: {:?}",
                peer.answer
            );
            assert_eq!(
                agreed.server_no_context_takeover,
                !settings.server_context_takeover
            );
            assert_eq!(
                agreed.client_no_context_takeover,
                !settings.client_context_takeover
            );
            peer.keep_context = !agreed.client_no_context_takeover;
            for (i, &len) in SIZES.iter().enumerate() {
                // Below 15 bits the client restarts its compressor every 2^bits bytes (see tests/common/deflate.rs):
                // thousands of restarts for 1 MiB, and nothing 16 KiB does not show already.
                if len > 16 << 10 && peer.client_window() < 15 {
                    continue;
                }
                for binary in [false, true] {
                    let seed = (i * 2 + usize::from(binary)) as u64;
                    let (opcode, payload) = if binary {
                        (OpCode::Binary, chat_binary(len, seed))
                    } else {
                        (OpCode::Text, chat_text(len, seed).into_bytes())
                    };
                    let what = format!("{offer} ({:?}): {len} bytes of {opcode:?}", peer.answer);
                    round_trip(&mut peer, &settings, opcode, &payload, true, &what);
                }
                // A message the client sends plain, between compressed ones: no context moves for it.
                let plain = chat_text(300, 100 + i as u64);
                let what = format!("{offer}: plain 300 bytes after {len}");
                round_trip(
                    &mut peer,
                    &settings,
                    OpCode::Text,
                    plain.as_bytes(),
                    false,
                    &what,
                );
            }
            let again = chat_text(200, 999);
            let what = format!("{offer}: 200 bytes, then the same again");
            let first = round_trip(
                &mut peer,
                &settings,
                OpCode::Text,
                again.as_bytes(),
                true,
                &what,
            );
            let second = round_trip(
                &mut peer,
                &settings,
                OpCode::Text,
                again.as_bytes(),
                true,
                &what,
            );
            check_repeat(&agreed, again.len(), &first, &second, &what);
        }
    }
}

#[test]
fn every_size_round_trips_at_every_window_with_the_default_settings() {
    round_trips_at_every_window(Deflate::default());
}

#[test]
fn every_size_round_trips_at_every_window_with_dedicated_3() {
    round_trips_at_every_window(dedicated(3));
}

#[test]
fn every_size_round_trips_at_every_window_with_dedicated_256() {
    round_trips_at_every_window(dedicated(256));
}

#[test]
fn a_message_shorter_than_the_threshold_goes_plain_and_one_as_long_goes_compressed() {
    for base in [Deflate::default(), dedicated(256)] {
        let settings = Deflate {
            threshold: 100,
            ..base
        };
        let server = echo_with(Some(settings));
        let mut peer = witness(server.addr);
        for (len, compressed) in [
            (99, false),
            (100, true),
            (99, false),
            (100, true),
            (101, true),
        ] {
            // "abab...": shrinks to a few bytes, so only the threshold decides.
            let payload: Vec<u8> = b"ab".iter().copied().cycle().take(len).collect();
            let what = format!("threshold 100, {len} bytes, {:?}", peer.answer);
            let got = round_trip(&mut peer, &settings, OpCode::Binary, &payload, true, &what);
            assert_eq!(got.compressed, compressed, "{what}");
        }
    }
}

#[test]
fn a_message_that_does_not_shrink_goes_plain_unless_the_server_keeps_its_context() {
    for (settings, compressed) in [(Deflate::default(), false), (dedicated(256), true)] {
        let server = echo_with(Some(settings));
        let mut peer = witness(server.addr);
        let what = format!("1000 bytes of noise, {:?}", peer.answer);
        let got = round_trip(
            &mut peer,
            &settings,
            OpCode::Binary,
            &noise(1000, 5),
            true,
            &what,
        );
        assert_eq!(got.compressed, compressed, "{what}");
        // With takeover the noise went into the server's context (and the client's): the next message still reads.
        let text = chat_text(5000, 6);
        round_trip(
            &mut peer,
            &settings,
            OpCode::Text,
            text.as_bytes(),
            true,
            &what,
        );
    }
}

#[test]
fn an_empty_message_compressed_between_two_others_keeps_both_contexts_in_step() {
    // With threshold 0 every message is compressed, the empty one too. zlib makes no bytes at all for empty input
    // on a stream that already ended in a sync flush; sent as an empty RSV1 payload, that reads as a cut stored
    // block to the client, whose next message then fails. The server sends the single byte 00 (§7.2.3.6).
    for settings in [
        Deflate {
            threshold: 0,
            ..dedicated(256)
        },
        Deflate {
            threshold: 0,
            ..Deflate::default()
        },
    ] {
        let server = echo_with(Some(settings));
        let mut peer = witness(server.addr);
        let what = format!("{:?}", peer.answer);
        let text = chat_text(300, 8);
        for message in [
            text.as_bytes(),
            b"",
            text.as_bytes(),
            b"",
            b"",
            text.as_bytes(),
        ] {
            let got = round_trip(&mut peer, &settings, OpCode::Text, message, true, &what);
            // Without takeover the one byte 00 is no smaller than nothing, so an empty message goes plain.
            let plain_is_fine = message.is_empty() && !settings.server_context_takeover;
            assert!(
                got.compressed || plain_is_fine,
                "{what}: compressed at threshold 0"
            );
        }
    }
}

#[test]
fn a_compressed_message_in_fragments_with_pings_between_them_comes_back_whole() {
    for settings in [Deflate::default(), dedicated(256), dedicated(3)] {
        let server = echo_with(Some(settings));
        // No client window offered: 15 bits, so the client keeps its context where the settings allow it.
        let mut peer = Peer::connect(server.addr, Some("permessage-deflate"));
        peer.keep_context = !peer.agreed.unwrap().client_no_context_takeover;
        let splits: [&[usize]; 3] = [&[1], &[3], &[1, 7, 2, 50, 13, 400]];
        for (n, split) in splits.iter().enumerate() {
            for round in 0..2u64 {
                let text = chat_text(3000, n as u64 * 10 + round);
                let wire = peer.compress(text.as_bytes());
                let frames = peer.frames(OpCode::Text, &wire, true, split);
                let what = format!("{:?}, fragments of {split:?}, round {round}", peer.answer);
                assert!(
                    frames.len() > 3,
                    "{what}: {} bytes in {} frames",
                    wire.len(),
                    frames.len()
                );
                for (i, frame) in frames.iter().enumerate() {
                    peer.write(frame);
                    if i + 1 == frames.len() {
                        break;
                    }
                    let ping = format!("ping {i}");
                    let ping_frame = peer.frame(true, OpCode::Ping, 0, ping.as_bytes());
                    peer.write(&ping_frame);
                    match peer.read() {
                        Incoming::Pong(payload) => assert_eq!(payload, ping.as_bytes(), "{what}"),
                        other => panic!("{what}: expected the pong to ping {i}, got {other:?}"),
                    }
                }
                let got = peer.message();
                check(&peer, &settings, &got, OpCode::Text, text.as_bytes(), &what);
            }
        }
        // A message whose last fragment is empty: the tail goes after it, and the contexts stay in step.
        let text = chat_text(3000, 50);
        let wire = peer.compress(text.as_bytes());
        let mut bytes = peer.frame(false, OpCode::Text, 0x40, &wire);
        bytes.extend(peer.frame(true, OpCode::Continuation, 0, &[]));
        peer.write(&bytes);
        let what = format!("{:?}: an empty last fragment", peer.answer);
        expect(&mut peer, &settings, OpCode::Text, text.as_bytes(), &what);
        // §7.2.3.6: an empty message may be compressed to the single byte 00.
        let bytes = peer.frame(true, OpCode::Binary, 0x40, &[0x00]);
        peer.write(&bytes);
        let what = format!("{:?}: an empty message as 00", peer.answer);
        expect(&mut peer, &settings, OpCode::Binary, b"", &what);
        let text = chat_text(3000, 50);
        let what = format!("{:?}: the same 3000 bytes after them", peer.answer);
        round_trip(
            &mut peer,
            &settings,
            OpCode::Text,
            text.as_bytes(),
            true,
            &what,
        );
        // 1 MiB of binary in uneven fragments, the last far longer than the server's read chunk.
        let payload = chat_binary(1 << 20, 42);
        let wire = peer.compress(&payload);
        let what = format!("{:?}: 1 MiB in uneven fragments", peer.answer);
        for frame in peer.frames(OpCode::Binary, &wire, true, &[7000, 1, 5000, 1 << 20]) {
            peer.write(&frame);
        }
        let got = peer.message();
        check(&peer, &settings, &got, OpCode::Binary, &payload, &what);
    }
}

/// A ping and its pong: the server has read everything `peer` sent before it.
fn sync(peer: &mut Peer, what: &str) {
    let ping = peer.frame(true, OpCode::Ping, 0, b"sync");
    peer.write(&ping);
    match peer.read() {
        Incoming::Pong(payload) => assert_eq!(payload, b"sync", "{what}"),
        other => panic!("{what}: expected a pong, got {other:?}"),
    }
}

#[test]
fn compressed_messages_in_fragments_from_clients_on_one_loop_do_not_mix() {
    // Two clients send compressed messages in fragments, by turns, while a third sends whole compressed messages
    // between each of their fragments (on one loop, each fragment read before the next is sent): a message in
    // fragments must keep its inflater to itself until its last frame, whether it is the loop's or its own.
    for settings in [Deflate::default(), dedicated(256)] {
        let server = echo_with(Some(settings));
        let [mut a, mut b, mut c] = [0, 1, 2].map(|_| {
            let mut peer = Peer::connect(server.addr, Some("permessage-deflate"));
            peer.keep_context = !peer.agreed.unwrap().client_no_context_takeover;
            peer
        });
        let text_a = chat_text(5000, 1);
        let binary_b = chat_binary(5000, 2);
        let wire_a = a.compress(text_a.as_bytes());
        let wire_b = b.compress(&binary_b);
        let frames_a = a.frames(OpCode::Text, &wire_a, true, &[100]);
        let frames_b = b.frames(OpCode::Binary, &wire_b, true, &[150]);
        let what = format!("{:?}", a.answer);
        assert!(frames_a.len() > 3 && frames_b.len() > 3, "{what}");
        for i in 0..frames_a.len().max(frames_b.len()) {
            for (peer, frames) in [(&mut a, &frames_a), (&mut b, &frames_b)] {
                if let Some(frame) = frames.get(i) {
                    peer.write(frame);
                    if i + 1 < frames.len() {
                        sync(peer, &what);
                    }
                }
            }
            let whole = chat_text(1000, 10 + i as u64);
            round_trip(
                &mut c,
                &settings,
                OpCode::Text,
                whole.as_bytes(),
                true,
                &what,
            );
        }
        expect(&mut a, &settings, OpCode::Text, text_a.as_bytes(), &what);
        expect(&mut b, &settings, OpCode::Binary, &binary_b, &what);
    }
}

/// How one row of a close-code table makes the bytes it sends.
type Frames = fn(&mut Peer) -> Vec<u8>;

fn compressed_frame(peer: &mut Peer, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let wire = peer.compress(payload);
    peer.frames(opcode, &wire, true, &[]).concat()
}

#[test]
fn rsv_bits_the_extension_does_not_allow_are_closed_with_1002() {
    let with = echo_with(Some(Deflate::default()));
    let without = echo_with(None);
    #[rustfmt::skip]
    let table: &[(&str, &TestServer, Option<&str>, Frames)] = &[
        ("RSV1 on the continuation of a compressed message", &with, Some(BROWSER), |peer| {
            let wire = peer.compress(chat_text(500, 1).as_bytes());
            let mut bytes = peer.frame(false, OpCode::Text, 0x40, &wire[..10]);
            bytes.extend(peer.frame(true, OpCode::Continuation, 0x40, &wire[10..]));
            bytes
        }),
        ("RSV1 on the continuation of a plain message", &with, Some(BROWSER), |peer| {
            let mut bytes = peer.frame(false, OpCode::Text, 0, b"plain ");
            let wire = peer.compress(b"and compressed");
            bytes.extend(peer.frame(true, OpCode::Continuation, 0x40, &wire));
            bytes
        }),
        ("RSV1 on a ping", &with, Some(BROWSER), |peer| peer.frame(true, OpCode::Ping, 0x40, b"ping")),
        ("RSV1 on a ping between fragments", &with, Some(BROWSER), |peer| {
            let wire = peer.compress(chat_text(500, 1).as_bytes());
            let mut bytes = peer.frame(false, OpCode::Text, 0x40, &wire[..10]);
            bytes.extend(peer.frame(true, OpCode::Ping, 0x40, b"ping"));
            bytes
        }),
        ("RSV1 on a pong", &with, Some(BROWSER), |peer| peer.frame(true, OpCode::Pong, 0x40, b"pong")),
        ("RSV1 on a close", &with, Some(BROWSER), |peer| peer.frame(true, OpCode::Close, 0x40, &1000u16.to_be_bytes())),
        ("RSV2 on a text frame", &with, Some(BROWSER), |peer| peer.frame(true, OpCode::Text, 0x20, b"rsv2")),
        ("RSV3 on a binary frame", &with, Some(BROWSER), |peer| peer.frame(true, OpCode::Binary, 0x10, b"rsv3")),
        ("RSV1 and RSV2 on a text frame", &with, Some(BROWSER), |peer| {
            let wire = peer.compress(b"hello hello hello");
            peer.frame(true, OpCode::Text, 0x60, &wire)
        }),
        ("RSV1 from a client that did not offer", &with, None, |peer| compressed_frame(peer, OpCode::Text, b"hello hello")),
        ("RSV1 after a declined (malformed) offer", &with, Some("permessage-deflate;;"), |peer| {
            compressed_frame(peer, OpCode::Text, b"hello hello")
        }),
        ("RSV1 on a server without the extension", &without, Some(BROWSER), |peer| {
            compressed_frame(peer, OpCode::Binary, b"hello hello")
        }),
    ];
    for (rule, server, offer, frames) in table {
        let mut peer = Peer::connect(server.addr, *offer);
        let bytes = frames(&mut peer);
        peer.write(&bytes);
        assert_eq!(peer.close_code(), Some(1002), "{rule}");
        common::assert_closed(&mut peer.stream);
    }
    let mut after = witness(with.addr);
    still_inflates(&mut after, "after the 1002s");
}

#[test]
fn compressed_payloads_that_do_not_inflate_or_are_not_utf_8_are_closed_with_1007() {
    let server = echo_with(Some(Deflate::default()));
    #[rustfmt::skip]
    let table: &[(&str, Frames)] = &[
        ("block type 3", |peer| peer.frame(true, OpCode::Binary, 0x40, &[0xff, 0xff, 0xff])),
        ("a valid start, then garbage", |peer| {
            let mut wire = peer.compress(chat_text(4000, 3).as_bytes());
            wire.truncate(wire.len() / 2);
            wire.extend_from_slice(&[0xff; 16]);
            peer.frame(true, OpCode::Text, 0x40, &wire)
        }),
        ("garbage in the second fragment", |peer| {
            let wire = peer.compress(chat_text(4000, 3).as_bytes());
            let mut bytes = peer.frame(false, OpCode::Binary, 0x40, &wire[..wire.len() / 2]);
            bytes.extend(peer.frame(true, OpCode::Continuation, 0, &[0xff; 16]));
            bytes
        }),
        ("a stored block whose length does not match its complement", |peer| {
            peer.frame(true, OpCode::Binary, 0x40, &[0x00, 0x05, 0x00, 0x05, 0x00, b'h', b'e', b'l', b'l', b'o'])
        }),
        ("a reference before the start of the message, without client context takeover", |peer| {
            // The client keeps its context though the answer said client_no_context_takeover: the second message
            // refers to the first, which the server's fresh inflater never saw.
            let text = chat_text(400, 8);
            peer.keep_context = true;
            let _ = peer.compress(text.as_bytes());
            compressed_frame(peer, OpCode::Text, text.as_bytes())
        }),
        ("invalid UTF-8 in compressed text", |peer| compressed_frame(peer, OpCode::Text, b"hello \xff world, hello")),
        ("an overlong encoding after the first 16 KiB piece", |peer| {
            let mut text = chat_text(40 << 10, 4).into_bytes();
            text.extend_from_slice(b"\xc0\xaf and more text after it");
            compressed_frame(peer, OpCode::Text, &text)
        }),
        ("text that ends inside a character", |peer| {
            let mut text = chat_text(1000, 5).into_bytes();
            text.extend_from_slice(&"日".as_bytes()[..2]);
            compressed_frame(peer, OpCode::Text, &text)
        }),
        ("a surrogate in compressed text in one-byte fragments", |peer| {
            let mut text = chat_text(300, 6).into_bytes();
            text.extend_from_slice(b"\xed\xa0\x80");
            text.extend(chat_text(300, 7).into_bytes());
            let wire = peer.compress(&text);
            peer.frames(OpCode::Text, &wire, true, &[1]).concat()
        }),
    ];
    // A witness on the same loop: after each failure its messages still inflate, so the loop's shared inflater was
    // left ready for the next message.
    let mut other = witness(server.addr);
    for (rule, frames) in table {
        let mut peer = witness(server.addr);
        let bytes = frames(&mut peer);
        peer.write(&bytes);
        assert_eq!(peer.close_code(), Some(1007), "{rule}");
        common::assert_closed(&mut peer.stream);
        still_inflates(&mut other, rule);
    }
}

#[test]
fn a_message_that_inflates_past_max_message_is_closed_with_1009_at_one_byte_over() {
    const MAX: usize = 64 << 10;
    for settings in [Deflate::default(), dedicated(256)] {
        let server = start(
            Config::default().max_message(MAX).deflate(Some(settings)),
            Echo,
        );
        let mut other = witness(server.addr);
        // Exactly max_message inflated: accepted, in one frame and in fragments.
        let mut peer = witness(server.addr);
        let zeros = vec![0u8; MAX];
        round_trip(
            &mut peer,
            &settings,
            OpCode::Binary,
            &zeros,
            true,
            "exactly max_message",
        );
        let wire = peer.compress(&zeros);
        for frame in peer.frames(OpCode::Binary, &wire, true, &[5]) {
            peer.write(&frame);
        }
        assert!(
            peer.message().data == zeros,
            "exactly max_message in fragments"
        );
        // One byte over, and a small bomb (16 MiB of zeros in about 16 KiB), each in one frame and in fragments.
        let over = vec![0u8; MAX + 1];
        let bomb = vec![0u8; 16 << 20];
        for (what, payload, opcode) in [
            ("one byte over", &over, OpCode::Binary),
            ("a bomb", &bomb, OpCode::Binary),
            ("a text bomb", &bomb, OpCode::Text),
        ] {
            for split in [&[][..], &[100]] {
                let what = format!("{what}, fragments {split:?}, {:?}", settings);
                let mut peer = witness(server.addr);
                let wire = peer.compress(payload);
                assert!(
                    wire.len() < MAX / 2,
                    "{what}: {} bytes compressed",
                    wire.len()
                );
                let bytes = peer.frames(opcode, &wire, true, split).concat();
                peer.write(&bytes);
                assert_eq!(peer.close_code(), Some(1009), "{what}");
                still_inflates(&mut other, &what);
            }
        }
    }
}

/// The same message twice in a row from a client that keeps its compressor: the second time it is a reference to
/// the first, a few bytes. Returns (first, second) as sent.
fn same_twice(peer: &mut Peer, settings: &Deflate, text: &str) -> (usize, usize) {
    let [first, second] = ["first of two", "second of two"].map(|what| {
        let wire = peer.compress(text.as_bytes());
        let bytes = peer.frames(OpCode::Text, &wire, true, &[]).concat();
        peer.write(&bytes);
        let got = peer.message();
        check(peer, settings, &got, OpCode::Text, text.as_bytes(), what);
        wire.len()
    });
    (first, second)
}

#[test]
fn a_client_that_keeps_its_context_is_understood_when_the_settings_allow_it() {
    let settings = Deflate {
        client_context_takeover: true,
        ..Deflate::default()
    };
    let server = echo_with(Some(settings));
    let mut peer = Peer::connect(server.addr, Some("permessage-deflate"));
    assert_eq!(
        peer.answer.as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    peer.keep_context = true;
    // The client really refers back: otherwise this test would show nothing.
    let (first, second) = same_twice(&mut peer, &settings, &chat_text(500, 1));
    assert!(second * 4 < first, "{first} then {second} bytes");
    for i in 0..30u64 {
        let (opcode, payload) = match i % 3 {
            0 => (OpCode::Binary, chat_binary(300 + i as usize * 50, i % 4)),
            _ => (
                OpCode::Text,
                chat_text(300 + i as usize * 50, i % 4).into_bytes(),
            ),
        };
        // Every fifth goes plain: it must not enter either context.
        round_trip(
            &mut peer,
            &settings,
            opcode,
            &payload,
            i % 5 != 4,
            &format!("message {i}"),
        );
    }
}

#[test]
fn a_client_told_not_to_keep_its_context_starts_each_message_afresh_and_is_understood() {
    let settings = Deflate::default();
    let server = echo_with(Some(settings));
    let mut peer = Peer::connect(server.addr, Some(BROWSER));
    assert_eq!(peer.answer.as_deref(), Some(NO_TAKEOVER));
    peer.keep_context = false;
    let (first, second) = same_twice(&mut peer, &settings, &chat_text(500, 1));
    assert_eq!(first, second, "a fresh compressor each time");
    for i in 0..30u64 {
        let text = chat_text(300 + i as usize * 50, i % 4);
        round_trip(
            &mut peer,
            &settings,
            OpCode::Text,
            text.as_bytes(),
            true,
            &format!("message {i}"),
        );
    }
}

#[test]
fn a_client_context_is_its_own_and_never_another_connections() {
    // The loop's shared inflater (clients without takeover) and each connection's own (with it) both: a client
    // whose message refers to what another client sent before must fail, not be read with the other's history.
    let takeover = Deflate {
        client_context_takeover: true,
        ..Deflate::default()
    };
    for settings in [Deflate::default(), takeover] {
        let server = echo_with(Some(settings));
        let text = chat_text(400, 8);
        let mut first = Peer::connect(server.addr, Some("permessage-deflate"));
        round_trip(
            &mut first,
            &settings,
            OpCode::Text,
            text.as_bytes(),
            true,
            "the first client",
        );
        let mut second = Peer::connect(server.addr, Some("permessage-deflate"));
        second.keep_context = true;
        let _ = second.compress(text.as_bytes());
        let bytes = compressed_frame(&mut second, OpCode::Text, text.as_bytes());
        second.write(&bytes);
        assert_eq!(second.close_code(), Some(1007), "{:?}", second.answer);
        still_inflates(&mut first, "the first client afterwards");
    }
}

/// Receivers of a publish: a name and the offer each connects with (`None`: no extension).
type Receivers<'a> = &'a [(&'a str, Option<&'a str>)];

/// Everyone subscribes to "news"; then messages go round, broadcast (`all:`) and published (`pub:news:`) by turns,
/// each sent by the next receiver in turn (compressed if it can), and every receiver must get every one, in order,
/// decoded, by the rules of its own connection. Among them: around the threshold, a large one, and the same
/// message twice in a row (which a receiver whose server keeps its context gets much smaller the second time, and
/// one without gets byte for byte the same).
fn publish_to_a_mix(
    server: &TestServer,
    loops: usize,
    settings: &Deflate,
    receivers: Receivers<'_>,
) {
    // Connects and returns the peer with the loop it landed on (from its greeting, hello:ID:LOOP:COUNT).
    let join = |name: &str, offer: Option<&str>| {
        let mut peer = Peer::connect(server.addr, offer);
        assert_eq!(
            peer.agreed.is_some(),
            offer.is_some(),
            "{name}: {:?}",
            peer.answer
        );
        peer.keep_context = peer.agreed.is_some_and(|a| !a.client_no_context_takeover);
        let hello = String::from_utf8(peer.message().data).unwrap();
        let fields: Vec<&str> = hello.split(':').collect();
        assert_eq!(fields[0], "hello", "{name}");
        let loop_index: usize = fields[2].parse().unwrap();
        (peer, loop_index)
    };
    let mut on_loop = vec![false; loops];
    let mut peers: Vec<(&str, Peer)> = Vec::new();
    for &(name, offer) in receivers {
        let (peer, loop_index) = join(name, offer);
        on_loop[loop_index] = true;
        peers.push((name, peer));
    }
    // Every loop gets a receiver with the extension (the kernel spreads connections by a hash): a publish from
    // one loop is compressed on another for its own receivers.
    for _ in 0..200 {
        let Some(missing) = on_loop.iter().position(|&seen| !seen) else {
            break;
        };
        let (peer, loop_index) = join("extra", Some(BROWSER));
        if loop_index == missing {
            on_loop[missing] = true;
            peers.push(("extra on the loop no one else was on", peer));
        }
    }
    assert!(
        on_loop.iter().all(|&seen| seen),
        "200 connections did not reach every loop"
    );
    for (name, peer) in &mut peers {
        let compressed = peer.agreed.is_some();
        peer.send(OpCode::Text, b"sub:news", compressed);
        // sub:news:true:N, N counting this loop's subscribers only.
        let reply = peer.message();
        assert!(reply.data.starts_with(b"sub:news:true:"), "{name}");
    }
    // (length of the whole message, seed of its text)
    let bodies: [(usize, u64); 13] = [
        (300, 1),
        (300, 1),
        (150, 8),
        (150, 8),
        (40, 2),
        (5000, 3),
        (100 << 10, 4),
        (2000, 5),
        (2000, 5),
        (settings.threshold - 1, 6),
        (settings.threshold, 6),
        (settings.threshold + 1, 6),
        (700, 7),
    ];
    let mut previous: Vec<Option<Received>> = vec![None; peers.len()];
    for (k, &(len, seed)) in bodies.iter().enumerate() {
        // Broadcast and publish by turns, a repeated message the same way both times.
        let command = if seed % 2 == 0 { "all:" } else { "pub:news:" };
        let text = format!("{command}{}", chat_text(len - command.len(), seed));
        let sender = k % peers.len();
        let (_, peer) = &mut peers[sender];
        let compressed = peer.agreed.is_some();
        peer.send(OpCode::Text, text.as_bytes(), compressed);
        let repeat = k > 0 && bodies[k - 1] == bodies[k];
        for (i, (name, peer)) in peers.iter_mut().enumerate() {
            let what = format!(
                "{name} ({:?}), message {k}: {} bytes",
                peer.answer,
                text.len()
            );
            let got = peer.message();
            check(peer, settings, &got, OpCode::Text, text.as_bytes(), &what);
            if let (true, Some(agreed), Some(before)) = (repeat, peer.agreed, &previous[i]) {
                check_repeat(&agreed, text.len(), before, &got, &what);
            }
            previous[i] = Some(got);
        }
    }
    // Nothing else was waiting for anyone.
    for (name, peer) in &mut peers {
        peer.send(OpCode::Text, b"echo:end", false);
        assert_eq!(peer.message().data, b"echo:end", "{name}");
    }
}

#[test]
fn a_publish_reaches_a_mix_of_receivers_each_in_the_compression_it_agreed_to() {
    // Takeover allowed, so that receivers may have it or not, each at its own window.
    let settings = Deflate {
        server_context_takeover: true,
        client_context_takeover: true,
        ..Deflate::default()
    };
    let server = start(config(Some(settings)), Rooms::default());
    #[rustfmt::skip]
    let receivers: Receivers<'_> = &[
        ("no extension", None),
        ("no takeover, 15 bits", Some(NO_TAKEOVER)),
        ("no takeover, 15 bits, again", Some(BROWSER_NO_TAKEOVER)),
        ("no takeover, 9 bits", Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")),
        ("no takeover, 8 bits", Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=8")),
        ("takeover, 15 bits", Some("permessage-deflate")),
        ("takeover, 10 bits", Some("permessage-deflate; server_max_window_bits=10")),
        ("takeover, 8 bits", Some("permessage-deflate; server_max_window_bits=8")),
        ("another without the extension", None),
    ];
    publish_to_a_mix(&server, 1, &settings, receivers);
}

/// The browser's offer, asking for no context takeover on both sides.
const BROWSER_NO_TAKEOVER: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits";

#[test]
fn a_publish_reaches_a_mix_of_receivers_on_a_dedicated_3_server_over_two_loops() {
    let settings = dedicated(3);
    let server = start_loops(config(Some(settings)), 2, |_| Rooms::default());
    #[rustfmt::skip]
    let receivers: Receivers<'_> = &[
        ("no extension", None),
        ("the browser: takeover, 9 bits", Some(BROWSER)),
        ("takeover, 9 bits, again", Some("permessage-deflate")),
        ("no takeover, 9 bits", Some("permessage-deflate; server_no_context_takeover")),
        ("no takeover, 9 bits, again", Some(NO_TAKEOVER)),
        ("takeover, 8 bits", Some("permessage-deflate; server_max_window_bits=8")),
        ("no takeover, 8 bits", Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=8")),
        ("another without the extension", None),
    ];
    publish_to_a_mix(&server, 2, &settings, receivers);
}
