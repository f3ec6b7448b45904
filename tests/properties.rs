//! Properties of the pure codec, checked on generated inputs with `proptest`: the quick, always-on cousin of the
//! fuzz targets in `fuzz/`, whose checks (`fuzz/src/checks.rs`) it also runs on random bytes.
//!
//! - a masked frame decodes back to what was encoded, for any FIN, opcode, payload and masking key;
//! - `apply_mask` is its own inverse, matches the byte-by-byte definition at every offset, and can be applied in
//!   pieces, which is what probing a half-arrived frame relies on;
//! - arbitrary bytes never make `frame::decode`, `handshake::parse_request` or `message::Assembler` panic;
//! - a valid stream of frames gives the messages it was made of, however TCP cuts it into reads.

#[allow(dead_code)]
#[path = "../fuzz/src/reader.rs"]
mod reader;

#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use reader::{read_in_pieces, Owned};
use wsloop::frame::{self, Frame, Limits, OpCode, MAX_CONTROL_PAYLOAD};
use wsloop::message::Assembler;
use wsloop::Status;

const DATA: [OpCode; 3] = [OpCode::Continuation, OpCode::Text, OpCode::Binary];
const CONTROL: [OpCode; 3] = [OpCode::Close, OpCode::Ping, OpCode::Pong];

/// Mostly short payloads, sometimes one at a boundary of the length forms (§5.2: 7, 16 and 64 bits).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..300),
        1 => (select(vec![125usize, 126, 127, 65535, 65536, 65537]), any::<u8>())
            .prop_map(|(len, seed)| (0..len).map(|i| seed.wrapping_add((i % 251) as u8)).collect()),
    ]
}

/// A frame the decoder must accept: (fin, opcode, payload). Control frames are final and at most 125 bytes.
fn valid_frame() -> impl Strategy<Value = (bool, OpCode, Vec<u8>)> {
    prop_oneof![
        (any::<bool>(), select(DATA.to_vec()), payload()),
        (
            Just(true),
            select(CONTROL.to_vec()),
            vec(any::<u8>(), 0..=MAX_CONTROL_PAYLOAD)
        ),
    ]
}

fn mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(i + offset) % 4];
    }
}

proptest! {
    // Each case takes well under a millisecond, so four times proptest's default still runs in about a second.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn masked_frame_decodes_to_what_was_encoded(
        (fin, opcode, payload) in valid_frame(),
        key in any::<[u8; 4]>(),
    ) {
        let mut wire = Vec::new();
        frame::encode_masked(&mut wire, fin, opcode, &payload, key);
        prop_assert_eq!(wire.len(), frame::header_len(payload.len(), true) + payload.len());
        let total = wire.len();
        let decoded = frame::decode(&mut wire, &Limits::default());
        let Ok(Status::Complete((f, used))) = decoded else {
            return Err(TestCaseError::fail(format!("not complete: {decoded:?}")));
        };
        prop_assert_eq!(used, total);
        prop_assert_eq!((f.fin, f.rsv, f.opcode), (fin, 0, opcode));
        prop_assert!(f.payload == payload.as_slice());
    }

    #[test]
    fn unmasked_frame_decodes_when_masking_is_not_required(
        (fin, opcode, payload) in valid_frame(),
    ) {
        let mut wire = Vec::new();
        frame::encode(&mut wire, fin, opcode, &payload);
        let total = wire.len();
        let client = Limits { require_mask: false, ..Limits::default() };
        let Ok(Status::Complete((f, used))) = frame::decode(&mut wire, &client) else {
            return Err(TestCaseError::fail("an encoded frame must decode"));
        };
        prop_assert_eq!((used, f.fin, f.opcode), (total, fin, opcode));
        prop_assert!(f.payload == payload.as_slice());
    }

    #[test]
    fn every_strict_prefix_of_a_frame_is_partial_and_untouched(
        (fin, opcode, payload) in valid_frame(),
        key in any::<[u8; 4]>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut wire = Vec::new();
        frame::encode_masked(&mut wire, fin, opcode, &payload, key);
        let cut = cut.index(wire.len());
        let mut prefix = wire[..cut].to_vec();
        prop_assert_eq!(frame::decode(&mut prefix, &Limits::default()), Ok(Status::Partial));
        prop_assert_eq!(&prefix[..], &wire[..cut]);
    }

    #[test]
    fn apply_mask_is_an_involution_and_matches_the_bytewise_definition(
        data in vec(any::<u8>(), 0..1500),
        start in 0usize..64,
        key in any::<[u8; 4]>(),
        offset in prop_oneof![0usize..8, any::<usize>()],
    ) {
        // From any start, so that long payloads reach the wide path at every alignment.
        let start = start.min(data.len());
        let mut fast = data.clone();
        frame::apply_mask(&mut fast[start..], key, offset);
        let mut slow = data.clone();
        mask_bytewise(&mut slow[start..], key, offset);
        prop_assert_eq!(&fast, &slow);
        frame::apply_mask(&mut fast[start..], key, offset);
        prop_assert_eq!(fast, data);
    }

    #[test]
    fn apply_mask_in_two_pieces_equals_in_one(
        data in vec(any::<u8>(), 0..1500),
        key in any::<[u8; 4]>(),
        split in any::<prop::sample::Index>(),
    ) {
        let at = split.index(data.len() + 1);
        let mut whole = data.clone();
        frame::apply_mask(&mut whole, key, 0);
        let mut pieces = data;
        let (head, tail) = pieces.split_at_mut(at);
        frame::apply_mask(head, key, 0);
        frame::apply_mask(tail, key, at);
        prop_assert_eq!(pieces, whole);
    }

    #[test]
    fn arbitrary_bytes_keep_the_decoder_contract(bytes in vec(any::<u8>(), 0..200)) {
        checks::frame_decode(&bytes);
    }

    #[test]
    fn arbitrary_frame_headers_keep_the_decoder_contract(
        b0 in any::<u8>(),
        b1 in any::<u8>(),
        rest in vec(any::<u8>(), 0..40),
    ) {
        // The first two bytes decide nearly everything; random ones reach each check far more often.
        let mut bytes = vec![b0, b1];
        bytes.extend(rest);
        checks::frame_decode(&bytes);
    }

    #[test]
    fn arbitrary_bytes_keep_the_handshake_contract(bytes in vec(any::<u8>(), 0..300)) {
        checks::handshake_parse(&bytes);
    }

    #[test]
    fn request_like_heads_keep_the_handshake_contract(head in request_like()) {
        checks::handshake_parse(head.as_bytes());
    }

    #[test]
    fn a_valid_request_in_any_header_order_and_case_is_accepted(
        mut lines in Just(valid_header_lines()).prop_shuffle(),
        upper in vec(any::<bool>(), 5),
        extra in vec(("X-[A-Za-z]{1,8}", "[ -~]{0,16}"), 0..4),
    ) {
        for (line, upper) in lines.iter_mut().zip(upper) {
            let (name, value) = line.split_once(':').unwrap();
            let name = if upper { name.to_ascii_uppercase() } else { name.to_ascii_lowercase() };
            *line = format!("{name}:{value}");
        }
        lines.extend(extra.into_iter().map(|(n, v)| format!("{n}: {v}")));
        let head = format!("GET /chat HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
        let Ok(Status::Complete((req, len))) = wsloop::handshake::parse_request(head.as_bytes(), 8192) else {
            return Err(TestCaseError::fail(format!("not parsed: {head:?}")));
        };
        prop_assert_eq!(len, head.len());
        prop_assert_eq!(wsloop::handshake::validate(&req), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn arbitrary_bytes_read_in_pieces_keep_the_assembler_contract(bytes in vec(any::<u8>(), 0..300)) {
        checks::assembler(&bytes);
    }

    #[test]
    fn arbitrary_frames_never_panic_the_assembler(
        frames in vec((any::<bool>(), select([DATA, CONTROL].concat()), vec(any::<u8>(), 0..20)), 0..20),
        max_message in 0usize..40,
    ) {
        let mut assembler = Assembler::new(max_message);
        for (fin, opcode, payload) in &frames {
            let frame = Frame { fin: *fin, rsv: 0, opcode: *opcode, payload, text: None };
            match assembler.push(frame) {
                Ok(Some(wsloop::message::Event::Message(m))) => {
                    prop_assert!(m.as_bytes().len() <= max_message);
                }
                Ok(_) => {}
                // After an error the server closes the connection: nothing more is pushed.
                Err(_) => break,
            }
        }
    }

    #[test]
    fn a_frame_stream_gives_its_messages_however_it_is_cut(
        (stream, expected) in frame_stream(),
        sizes in vec(0usize..40, 0..40),
    ) {
        let limits = Limits::default();
        let whole = read_in_pieces(limits, 1 << 20, &stream, &[]);
        prop_assert_eq!(&whole.error, &None);
        prop_assert_eq!(whole.pending(), 0);
        prop_assert_eq!(&whole.events, &expected);
        let cut = read_in_pieces(limits, 1 << 20, &stream, &sizes);
        prop_assert_eq!(&cut.error, &None);
        prop_assert_eq!(&cut.events, &expected);
    }
}

/// The five header lines a handshake needs, with the RFC's sample key.
fn valid_header_lines() -> Vec<String> {
    [
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    .map(String::from)
    .to_vec()
}

/// Heads that look like a handshake, made of the names and values the validator looks at, and some noise.
fn request_like() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        select(vec![
            "Host",
            "Upgrade",
            "Connection",
            "Sec-WebSocket-Key",
            "Sec-WebSocket-Version",
            "Sec-WebSocket-Protocol",
            "Origin",
            "upgrade",
            "CONNECTION",
        ])
        .prop_map(String::from),
        "[!-~]{0,10}",
    ];
    let value = prop_oneof![
        select(vec![
            "websocket",
            "Upgrade",
            "keep-alive, Upgrade",
            "dGhlIHNhbXBsZSBub25jZQ==",
            "13",
            "12",
            "chat, superchat",
            "",
            " , ,",
        ])
        .prop_map(String::from),
        "[ -~\u{80}-\u{ff}]{0,20}",
    ];
    let line_end = select(vec!["\r\n", "\n", "\r"]);
    (
        select(vec!["GET", "POST", "get", "", "GET GET"]),
        "[ -~]{0,8}",
        select(vec![
            "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.", "http/1.1",
        ]),
        vec((name, value, line_end.clone()), 0..8),
        line_end,
    )
        .prop_map(|(method, path, version, headers, end)| {
            let mut head = format!("{method} /{path} {version}\r\n");
            for (name, value, eol) in headers {
                head.push_str(&format!("{name}: {value}{eol}"));
            }
            head.push_str(end);
            head
        })
}

/// One item of a generated stream: a data message cut into fragments, or a ping or pong between messages.
#[derive(Debug, Clone)]
enum Item {
    /// A message: text (or binary), its bytes, where it is cut into fragments, and a ping after each fragment or not.
    Message {
        text: bool,
        bytes: Vec<u8>,
        cuts: Vec<prop::sample::Index>,
        pings: Vec<Option<Vec<u8>>>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn item() -> impl Strategy<Value = Item> {
    let control_payload = || vec(any::<u8>(), 0..10);
    prop_oneof![
        4 => (
            prop_oneof![
                any::<String>().prop_map(|s| (true, s.into_bytes())),
                vec(any::<u8>(), 0..60).prop_map(|b| (false, b)),
            ],
            vec(any::<prop::sample::Index>(), 0..4),
            vec(proptest::option::weighted(0.3, control_payload()), 0..4),
        )
            .prop_map(|((text, bytes), cuts, pings)| Item::Message { text, bytes, cuts, pings }),
        1 => control_payload().prop_map(Item::Ping),
        1 => control_payload().prop_map(Item::Pong),
    ]
}

/// A masked frame stream of messages (fragmented anywhere, even inside a UTF-8 character, with pings between the
/// fragments), pings, pongs and a final close, and the events it must give.
fn frame_stream() -> impl Strategy<Value = (Vec<u8>, Vec<Owned>)> {
    (vec(item(), 0..8), any::<[u8; 4]>(), any::<bool>()).prop_map(|(items, key, close)| {
        let mut wire = Vec::new();
        let mut events = Vec::new();
        let mut put = |fin: bool, opcode: OpCode, payload: &[u8]| {
            frame::encode_masked(&mut wire, fin, opcode, payload, key);
        };
        for item in items {
            match item {
                Item::Message {
                    text,
                    bytes,
                    cuts,
                    pings,
                } => {
                    let mut cuts: Vec<usize> =
                        cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                    cuts.sort_unstable();
                    cuts.push(bytes.len());
                    let mut start = 0;
                    for (i, &end) in cuts.iter().enumerate() {
                        let last = i + 1 == cuts.len();
                        let opcode = match (i, text) {
                            (0, true) => OpCode::Text,
                            (0, false) => OpCode::Binary,
                            _ => OpCode::Continuation,
                        };
                        put(last, opcode, &bytes[start..end]);
                        start = end;
                        if let (false, Some(Some(ping))) = (last, pings.get(i)) {
                            put(true, OpCode::Ping, ping);
                            events.push(Owned::Ping(ping.clone()));
                        }
                    }
                    events.push(if text {
                        Owned::Text(String::from_utf8(bytes).expect("generated from a String"))
                    } else {
                        Owned::Binary(bytes)
                    });
                }
                Item::Ping(payload) => {
                    put(true, OpCode::Ping, &payload);
                    events.push(Owned::Ping(payload));
                }
                Item::Pong(payload) => {
                    put(true, OpCode::Pong, &payload);
                    events.push(Owned::Pong(payload));
                }
            }
        }
        if close {
            put(true, OpCode::Close, b"\x03\xe8bye");
            events.push(Owned::Close(Some((1000, "bye".to_string()))));
        }
        (wire, events)
    })
}
