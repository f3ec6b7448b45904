//! What each fuzz target checks, as plain functions: the targets call them with libFuzzer's input, and
//! `tests/regressions.rs` calls them with the inputs the fuzzers once found, so a crash found here is replayed by
//! `cargo test` forever after. Each function panics if wsloop breaks its contract on `data`.

use wsloop::frame::{self, Limits, OpCode, MAX_CONTROL_PAYLOAD};
use wsloop::handshake::{self, Request};
use wsloop::{HandshakeError, Status};

use crate::reader::read_in_pieces;

/// The limits `frame_decode` tries every input under.
const FRAME_LIMITS: [Limits; 3] = [
    // A server reading a client.
    Limits {
        max_payload: 16 << 20,
        require_mask: true,
        deflate: false,
    },
    // A client reading a server.
    Limits {
        max_payload: 16 << 20,
        require_mask: false,
        deflate: false,
    },
    // A small limit, so the length check is reached by short inputs.
    // permessage-deflate negotiated: RSV1 may mark a data frame.
    Limits {
        max_payload: 200,
        require_mask: false,
        deflate: true,
    },
];

/// `frame::decode` on arbitrary bytes, under three sets of limits.
///
/// Beyond "never panics", each answer is checked against the contract: `Partial` leaves the bytes untouched and so
/// does a shorter prefix; `Complete` uses at most the bytes given, agrees with `decode_header`, respects the limits,
/// and the frame it returns survives `encode_masked` + `decode` unchanged. Then the bytes after the frame are
/// decoded in turn, as the server does with a read that holds several frames.
pub fn frame_decode(data: &[u8]) {
    for limits in &FRAME_LIMITS {
        let mut at = 0;
        while let Some(used) = decode_one(&data[at..], limits) {
            at += used;
        }
    }
}

/// Decodes the frame at the front of `input` and checks the answer; the bytes used if it was complete.
fn decode_one(input: &[u8], limits: &Limits) -> Option<usize> {
    let mut buf = input.to_vec();
    let header = frame::decode_header(&buf, limits);
    let result = frame::decode(&mut buf, limits);
    match (&result, &header) {
        (Err(e), Err(h)) => assert_eq!(e, h, "decode and decode_header disagree"),
        (Err(e), Ok(_)) => panic!("decode failed with {e:?} on a header that decodes"),
        (Ok(_), Err(h)) => panic!("decode succeeded on a header that fails with {h:?}"),
        (Ok(Status::Complete(_)), Ok(Status::Partial)) => {
            panic!("decode completed a frame whose header is partial")
        }
        (Ok(Status::Partial), Ok(_)) => {
            assert_eq!(buf, input, "Partial must leave the bytes untouched");
            for cut in [0, input.len() / 2, input.len().saturating_sub(1)] {
                let mut prefix = input[..cut].to_vec();
                assert_eq!(
                    frame::decode(&mut prefix, limits),
                    Ok(Status::Partial),
                    "a prefix of a partial frame must be partial"
                );
            }
        }
        (Ok(Status::Complete((f, used))), Ok(Status::Complete(h))) => {
            let used = *used;
            assert!(used >= 2 && used <= input.len());
            assert_eq!(used as u64, h.header_len as u64 + h.payload_len);
            assert_eq!(f.payload.len() as u64, h.payload_len);
            assert!(h.payload_len <= limits.max_payload);
            assert!(h.masking_key.is_some() || !limits.require_mask);
            assert_eq!((f.fin, f.rsv, f.opcode), (h.fin, h.rsv, h.opcode));
            // Only permessage-deflate gives a reserved bit a meaning: RSV1, on a data frame that starts a message.
            if limits.deflate && f.rsv != 0 {
                assert_eq!(f.rsv, frame::RSV1_COMPRESSED);
                assert!(matches!(f.opcode, OpCode::Text | OpCode::Binary));
            } else {
                assert_eq!(f.rsv, 0, "no extension is negotiated");
            }
            assert_eq!(OpCode::from_u8(f.opcode.as_u8()), Some(f.opcode));
            if f.opcode.is_control() {
                assert!(f.fin && f.payload.len() <= MAX_CONTROL_PAYLOAD);
            }
            // A peer may use a longer length form than needed, so compare frames, not bytes.
            let mut again = Vec::new();
            frame::encode_masked(
                &mut again,
                f.fin,
                f.opcode,
                f.payload,
                [0xa5, 0x01, 0xff, 0x5a],
            );
            assert_eq!(
                again.len(),
                frame::header_len(f.payload.len(), true) + f.payload.len()
            );
            let expected_len = again.len();
            match frame::decode(&mut again, limits) {
                Ok(Status::Complete((g, n))) => {
                    assert_eq!(n, expected_len);
                    assert_eq!((g.fin, g.opcode, g.payload), (f.fin, f.opcode, f.payload));
                }
                other => panic!("re-encoded frame does not decode: {other:?}"),
            }
            let mut prefix = input[..used - 1].to_vec();
            assert_eq!(
                frame::decode(&mut prefix, limits),
                Ok(Status::Partial),
                "one byte less of a complete frame must be partial"
            );
            return Some(used);
        }
    }
    None
}

/// `handshake::parse_request` and `validate` on arbitrary bytes, with the server's head limit and a small one.
///
/// Beyond "never panics": a complete head is no longer than the input nor the limit, and one byte less of it is
/// `Partial`; a valid handshake gives a 28-character accept value and a well-formed 101; a refusal is a well-formed
/// response with the status its error names.
pub fn handshake_parse(data: &[u8]) {
    for max_head in [8192, 256] {
        match handshake::parse_request(data, max_head) {
            Ok(Status::Partial) => {
                assert!(
                    data.len() <= max_head,
                    "a partial head over the limit must fail"
                );
            }
            Ok(Status::Complete((req, len))) => {
                assert!(len <= data.len() && len <= max_head);
                assert!(
                    data[..len].ends_with(b"\n"),
                    "a head ends with its blank line"
                );
                assert_eq!(
                    handshake::parse_request(&data[..len - 1], max_head),
                    Ok(Status::Partial),
                    "one byte less of a complete head must be partial"
                );
                check_request(&req);
            }
            Err(e) => check_refusal(&e),
        }
    }
}

fn check_request(req: &Request<'_>) {
    let _ = req.is_websocket();
    let protocol = req.protocols().next();
    match handshake::validate(req) {
        Ok(key) => {
            assert_eq!(req.method, "GET");
            assert_eq!(handshake::accept_key(key).len(), 28);
            // Whatever the extension header holds, the offer is answered or declined, never a panic.
            let deflate = wsloop::deflate::negotiate(
                req.headers_named("Sec-WebSocket-Extensions"),
                &wsloop::deflate::Deflate::default(),
            );
            let answer = deflate.as_ref().map(|(_, answer)| answer.as_str());
            let response = handshake::switching_protocols(key, protocol, answer);
            assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(response.ends_with(b"\r\n\r\n"));
        }
        Err(e) => check_refusal(&e),
    }
}

fn check_refusal(e: &HandshakeError) {
    let status = e.status();
    assert!((400..600).contains(&status), "{e:?} maps to {status}");
    let response = handshake::reject(e);
    let head = format!("HTTP/1.1 {status} {}\r\n", handshake::reason_phrase(status));
    assert!(response.starts_with(head.as_bytes()));
    let text = String::from_utf8(response).expect("a refusal is text");
    let (_, body) = text
        .split_once("\r\n\r\n")
        .expect("a refusal has a head and a body");
    assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
}

/// The message limits the `assembler` target chooses from.
const MAX_MESSAGE: [usize; 4] = [16 << 20, 3, 64, 1000];

/// A stream of frames through `frame::decode` and `message::Assembler`, read whole and read in pieces.
///
/// TCP may cut a stream anywhere, so where it was cut must not change what the server makes of it: the same
/// messages, pings, pongs and close, and the same error. The input is laid out as
///
/// ```text
/// byte 0       bit 0: require masking; bits 1-2: the message limit, one of 16 MiB, 3, 64, 1000 bytes;
///              bit 3: permessage-deflate (RSV1 marks a compressed message, inflated into the assembler)
/// byte 1       n = byte % 16, the number of piece sizes that follow
/// bytes 2..2+n the sizes of the first n pieces (0 to 255 bytes); the rest of the stream comes in one last piece
/// the rest     the stream
/// ```
pub fn assembler(data: &[u8]) {
    let [flags, count, rest @ ..] = data else {
        return;
    };
    let count = usize::from(*count % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b)).collect();
    let max_message = MAX_MESSAGE[usize::from(flags >> 1) & 3];
    // As the server does: no single frame may announce more than a whole message may hold.
    let limits = Limits {
        max_payload: max_message as u64,
        require_mask: flags & 1 != 0,
        // permessage-deflate: compressed messages are inflated on their way into the assembler.
        deflate: flags & 8 != 0,
    };

    let whole = read_in_pieces(limits, max_message, stream, &[]);
    let pieces = read_in_pieces(limits, max_message, stream, &sizes);
    let bytewise = read_in_pieces(limits, max_message, stream, &vec![1; stream.len()]);
    for (name, cut) in [("in pieces", &pieces), ("one byte at a time", &bytewise)] {
        assert_eq!(whole.events, cut.events, "read {name}: the events differ");
        assert_eq!(whole.error, cut.error, "read {name}: the errors differ");
        assert_eq!(whole.closed, cut.closed, "read {name}: the close differs");
        if !whole.is_done() {
            assert_eq!(
                whole.pending(),
                cut.pending(),
                "read {name}: the bytes left differ"
            );
        }
    }
}

/// `utf8::check`, `utf8::to_str`, `utf8::split_complete`, `utf8::unmask_and_check` and `utf8::unmask_text` on
/// arbitrary bytes, held to `std::str::from_utf8`.
///
/// The first four bytes are the masking key, the rest the text: what a text frame's payload is, masked with that
/// key, must unmask to the same bytes `frame::apply_mask` gives, and be text exactly when std says so. The vector
/// path reads and writes through raw pointers; this target, built with AddressSanitizer, is what watches its reads
/// and writes stay inside the payload.
pub fn utf8(data: &[u8]) {
    use wsloop::utf8::{self, Verdict};

    let (key, text) = match data {
        [a, b, c, d, text @ ..] => ([*a, *b, *c, *d], text),
        _ => return,
    };
    let expected = match std::str::from_utf8(text) {
        Ok(_) => Verdict::Valid,
        Err(e) if e.error_len().is_none() => Verdict::Incomplete(e.valid_up_to()),
        Err(_) => Verdict::Invalid,
    };
    assert_eq!(utf8::check(text), expected, "check");
    assert_eq!(
        utf8::to_str(text).map(str::as_bytes),
        std::str::from_utf8(text).ok().map(str::as_bytes)
    );

    let split = utf8::split_complete(text).map(|(whole, cut)| (whole.as_bytes(), cut));
    let expected_split = match expected {
        Verdict::Valid => Some((text, &[][..])),
        Verdict::Incomplete(end) => Some(text.split_at(end)),
        Verdict::Invalid => None,
    };
    assert_eq!(split, expected_split, "split_complete");

    // Masked from an offset into the payload (the key turned by it), unmasked and checked in place.
    let offset = usize::from(key[0] % 4);
    let mut masked = text.to_vec();
    frame::apply_mask(&mut masked, key, offset);
    assert_eq!(
        utf8::unmask_and_check(&mut masked, key, offset),
        expected,
        "unmask_and_check"
    );
    assert_eq!(masked, text, "unmask_and_check must unmask like apply_mask");

    let mut masked = text.to_vec();
    frame::apply_mask(&mut masked, key, 0);
    let (unmasked, as_text) = utf8::unmask_text(&mut masked, key);
    assert_eq!(unmasked, text, "unmask_text must unmask like apply_mask");
    assert_eq!(
        as_text.map(str::as_bytes),
        std::str::from_utf8(text).ok().map(str::as_bytes)
    );
}
