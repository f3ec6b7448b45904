//! `handshake::parse_request` and `validate` on arbitrary bytes: never panic, and answer with well-formed responses.
//! The checks are in `src/checks.rs`, where `tests/regressions.rs` replays what this target has found.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsloop_fuzz::checks::handshake_parse(data));
