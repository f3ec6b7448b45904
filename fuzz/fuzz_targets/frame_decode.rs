//! `frame::decode` on arbitrary bytes: never panics, and every answer keeps the decoder's contract.
//! The checks are in `src/checks.rs`, where `tests/regressions.rs` replays what this target has found.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsloop_fuzz::checks::frame_decode(data));
