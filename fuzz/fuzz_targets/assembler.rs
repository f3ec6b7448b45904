//! A frame stream through `frame::decode` and `message::Assembler`, whole and cut into pieces: the same outcome.
//! The input layout and the checks are in `src/checks.rs`, where `tests/regressions.rs` replays what this target has
//! found.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsloop_fuzz::checks::assembler(data));
