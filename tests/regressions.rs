//! Inputs the fuzzers found, replayed under `cargo test` through the very checks the fuzz targets run.
//!
//! `fuzz/src/checks.rs` holds what each target in `fuzz/` asserts; it depends only on `wsloop`, so it is included
//! here with `#[path]`. When `scripts/fuzz.sh` finds a crash, its input (minimized with `cargo fuzz tmin`) becomes
//! one test below, next to a test over real sockets that shows what a client would have seen.

mod common;

#[allow(dead_code)]
#[path = "../fuzz/src/reader.rs"]
mod reader;

#[allow(dead_code)]
#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::io::Write;

use common::{handshaken, masked, read_close, start, Echo};
use wsloop::frame::{Limits, OpCode};
use wsloop::{Config, FrameError};

/// Found by the `assembler` target in its first second; fixed by checking a continuation's announced size in
/// `Assembler::check_partial`, before its payload arrives, as `push` does. Message limit 3 (flags `0xb2`), no masking, no piece sizes;
/// then a text fragment of 2 bytes (`01 02 00 00`) and a continuation of 2 bytes (`00 02 82 03`) that is both over
/// the limit (4 > 3) and not UTF-8 (`0x82` cannot start a character). Read whole, `Assembler::push` checks the size
/// first: 1009. Read a byte at a time, `Assembler::check_partial` saw `0x82` before the frame was complete: 1007.
#[test]
fn assembler_outcome_does_not_depend_on_where_the_stream_is_cut() {
    checks::assembler(&[0xb2, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x02, 0x82, 0x03]);
}

/// The same input, spelled out with the reader the target uses.
#[test]
fn oversized_invalid_continuation_fails_the_same_whole_or_dribbled() {
    let limits = Limits {
        max_payload: 3,
        require_mask: true,
        deflate: false,
    };
    let mut stream = masked(false, OpCode::Text, b"ab");
    stream.extend(masked(true, OpCode::Continuation, &[0x82, b'x']));
    let whole = reader::read_in_pieces(limits, 3, &stream, &[]);
    let dribbled = reader::read_in_pieces(limits, 3, &stream, &vec![1; stream.len()]);
    assert!(
        matches!(
            whole.error,
            Some(FrameError::MessageTooBig { .. } | FrameError::InvalidUtf8)
        ),
        "{:?}",
        whole.error
    );
    assert_eq!(whole.error, dribbled.error);
}

/// What a client saw: the close code for the same bytes changed with how TCP delivered them.
#[test]
fn close_code_for_the_same_bytes_does_not_depend_on_tcp_segmentation() {
    let config = Config::default().max_message(3);
    let server = start(config, Echo);
    let first = masked(false, OpCode::Text, b"ab");
    let second = masked(true, OpCode::Continuation, &[0x82, b'x']);

    // All at once: one read holds both frames.
    let mut at_once = handshaken(server.addr);
    let mut bytes = first.clone();
    bytes.extend_from_slice(&second);
    at_once.write_all(&bytes).unwrap();
    let whole = read_close(&mut at_once);

    // The second frame's header and its first payload byte only; the last byte never comes.
    let mut dribbled = handshaken(server.addr);
    dribbled.write_all(&first).unwrap();
    dribbled.write_all(&second[..second.len() - 1]).unwrap();
    let partial = read_close(&mut dribbled);

    drop((at_once, dribbled));
    server.stop();
    assert_eq!(
        whole, partial,
        "once 1009 when read whole, 1007 when dribbled"
    );
}

/// The fuzz targets' committed seeds pass the checks too, so a seed that starts failing is caught by `cargo test`
/// and not only by the next fuzzing run.
#[test]
fn every_committed_seed_passes_its_targets_check() {
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 4] = [
        ("frame_decode", checks::frame_decode),
        ("handshake_parse", checks::handshake_parse),
        ("assembler", checks::assembler),
        ("utf8", checks::utf8),
    ];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (target, check) in targets {
        let mut seen = 0;
        for entry in std::fs::read_dir(root.join(target)).expect("the seeds directory") {
            let path = entry.expect("a directory entry").path();
            check(&std::fs::read(&path).expect("a seed"));
            seen += 1;
        }
        assert!(seen > 0, "no seeds for {target}");
    }
}
