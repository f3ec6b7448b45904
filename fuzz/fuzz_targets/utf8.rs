//! UTF-8 validation, plain and fused with unmasking, against the standard library. The checks are in `src/checks.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsloop_fuzz::checks::utf8(data));
