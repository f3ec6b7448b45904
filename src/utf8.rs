//! UTF-8 validation for text messages (RFC 6455 §8.1), fast for the short messages a chat server sees most.
//!
//! On x86-64 with AVX2, text of at least [`MIN_VECTOR_LEN`] bytes is checked 32 bytes a step by the lookup-table
//! method of Keiser and Lemire ("Validating UTF-8 In Less Than One Instruction Per Byte", 2021): every byte is
//! judged together with the three before it, which is all a UTF-8 error ever depends on. The last step reads the
//! final 32 bytes even when they overlap the step before (checking a byte twice gives the same answer twice), so
//! no byte is copied into a padded buffer. Everything else, and every other CPU, goes to `std::str::from_utf8`.
//!
//! Both paths answer the same question the same way; the tests hold them to each other over every pair of bytes and
//! every four-byte window of the edge cases of each byte range, placed at every seam between 32-byte steps.
//!
//! Not part of the API: public only with the cargo feature `internals`, for the benches and the fuzz targets, under
//! no semver promise.

/// What a piece of text is, checked from a character boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid UTF-8 to the last byte.
    Valid,
    /// Not UTF-8, whatever may follow.
    Invalid,
    /// Valid up to the given index; from there on, the first one to three bytes of a character that the next
    /// piece may finish.
    Incomplete(usize),
}

/// The shortest text the vector path takes: its last step starts 32 bytes before the end and looks three bytes
/// further back, which must still be inside the text.
pub const MIN_VECTOR_LEN: usize = 35;

/// Checks `bytes`, which start at a character boundary. A character cut off at the end is [`Verdict::Incomplete`].
#[inline]
pub fn check(bytes: &[u8]) -> Verdict {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= MIN_VECTOR_LEN && has_avx2() {
        // SAFETY: `avx2::has_error` requires AVX2, which the CPU has just been found to have, and at least
        // `MIN_VECTOR_LEN` readable bytes, checked on the line above. Without `UNMASK` it writes nothing (so the
        // pointer's `mut` is never used); a zero key leaves the bytes as they are.
        if unsafe { avx2::has_error::<false>(bytes.as_ptr().cast_mut(), bytes.len(), [0; 4]) } {
            return Verdict::Invalid;
        }
        return last_character(bytes);
    }
    with_std(bytes)
}

/// The whole of `bytes` as text, if it is valid UTF-8.
#[inline]
pub fn to_str(bytes: &[u8]) -> Option<&str> {
    match check(bytes) {
        // SAFETY: `check` found every byte valid: each character complete, none overlong, no surrogate, none
        // above U+10FFFF. The tests hold it to `std::str::from_utf8`.
        Verdict::Valid => Some(unsafe { std::str::from_utf8_unchecked(bytes) }),
        Verdict::Invalid | Verdict::Incomplete(_) => None,
    }
}

/// `bytes` split into its whole characters, as text, and a last character that it begins and does not finish (none
/// to three bytes); `None` if it is not UTF-8, whatever may follow.
#[inline]
pub fn split_complete(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = match check(bytes) {
        Verdict::Valid => bytes.len(),
        Verdict::Incomplete(end) => end,
        Verdict::Invalid => return None,
    };
    let (whole, cut) = bytes.split_at(end);
    // SAFETY: as in `to_str`: `check` found every byte before `end` valid, with `end` on a character boundary.
    Some((unsafe { std::str::from_utf8_unchecked(whole) }, cut))
}

/// Unmasks a frame's payload in place (as [`frame::apply_mask`](crate::frame::apply_mask) does from offset 0) and
/// returns the unmasked bytes, with the same bytes as text if they are valid UTF-8.
#[inline]
pub fn unmask_text(payload: &mut [u8], key: [u8; 4]) -> (&[u8], Option<&str>) {
    let verdict = unmask_and_check(payload, key, 0);
    let payload = &*payload;
    match verdict {
        // SAFETY: `unmask_and_check` found the bytes, as they now are, valid UTF-8 to the last byte.
        Verdict::Valid => (
            payload,
            Some(unsafe { std::str::from_utf8_unchecked(payload) }),
        ),
        Verdict::Invalid | Verdict::Incomplete(_) => (payload, None),
    }
}

/// Unmasks `masked` in place, as [`frame::apply_mask`](crate::frame::apply_mask) does (`masked` lies `offset`
/// bytes into a payload masked with `key`), and says what the unmasked bytes are, as [`check`] would. Every byte is
/// unmasked whatever the verdict.
///
/// The vector path does both in one pass: each 32 bytes are read masked, unmasked in a register, written back and
/// checked there. Unmasking first and checking after would read the bytes twice, and the second read of a short
/// payload would wait for the unmasking's 8-byte writes under each 32-byte read to reach the cache (a
/// store-forwarding stall, measured at about 7 ns on a 125-byte message).
#[inline]
pub fn unmask_and_check(masked: &mut [u8], key: [u8; 4], offset: usize) -> Verdict {
    #[cfg(target_arch = "x86_64")]
    if masked.len() >= MIN_VECTOR_LEN && has_avx2() {
        // The key as it stands at masked[0].
        let key = crate::frame::rotate(key, offset);
        // SAFETY: AVX2 was just detected, and the length is checked on the line above; the pointer comes from a
        // `&mut` of that length, so it may be read and written. With `UNMASK`, every byte is written back unmasked.
        if unsafe { avx2::has_error::<true>(masked.as_mut_ptr(), masked.len(), key) } {
            return Verdict::Invalid;
        }
        return last_character(masked);
    }
    crate::frame::apply_mask(masked, key, offset);
    with_std(masked)
}

/// Whether the vector path may run: the CPU has AVX2, and, in this crate's own tests, the test has not turned the
/// path off on this thread (see [`scalar_only`]) to hold the other path to the same answers.
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    #[cfg(test)]
    if scalar_only::is_on() {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2")
}

/// For tests: the paths that a CPU without AVX2 takes, taken on this one.
#[cfg(test)]
pub(crate) mod scalar_only {
    use std::cell::Cell;

    thread_local!(static ON: Cell<bool> = const { Cell::new(false) });

    pub(crate) fn is_on() -> bool {
        ON.with(Cell::get)
    }

    /// Runs `check` twice on this thread: as this CPU runs it, then with the vector path turned off.
    pub(crate) fn and_vector(check: impl Fn()) {
        check();
        ON.with(|on| on.set(true));
        check();
        ON.with(|on| on.set(false));
    }
}

fn with_std(bytes: &[u8]) -> Verdict {
    match std::str::from_utf8(bytes) {
        Ok(_) => Verdict::Valid,
        Err(e) if e.error_len().is_none() => Verdict::Incomplete(e.valid_up_to()),
        Err(_) => Verdict::Invalid,
    }
}

/// The vector pass judges every byte against the bytes before it, so it cannot see a character that the last
/// bytes begin and do not finish (nor a lead byte that no character may start with, when nothing follows it).
/// That character starts within the last three bytes, at the last byte that is not a continuation byte
/// (`10xxxxxx`); if none of the three is one, the text ended on a complete character. Whatever follows the lead
/// byte has passed the vector pass, so only the count is left to check.
fn last_character(bytes: &[u8]) -> Verdict {
    let from = bytes.len().saturating_sub(3);
    let Some(at) = bytes[from..].iter().rposition(|&b| b & 0xC0 != 0x80) else {
        return Verdict::Valid;
    };
    let start = from + at;
    let needs = match bytes[start] {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return Verdict::Invalid, // C0, C1 and F5..FF start no character
    };
    if bytes.len() - start < needs {
        Verdict::Incomplete(start)
    } else {
        Verdict::Valid
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    // One bit for each way a byte can be wrong given the byte before it. Bytes are looked up by nibble in three
    // tables (the previous byte's high and low nibble, this byte's high nibble); a bit set in all three is an
    // error. OVERLONG_4 and TOO_LARGE_1000 share a bit: both need a second byte 8x, and their lead bytes differ.
    const TOO_SHORT: u8 = 1 << 0; // a lead byte, then no continuation byte
    const TOO_LONG: u8 = 1 << 1; // an ASCII byte, then a continuation byte
    const OVERLONG_3: u8 = 1 << 2; // E0, then 80..9F
    const TOO_LARGE: u8 = 1 << 3; // F4, then 90..BF; F5..FF, then 90..BF
    const SURROGATE: u8 = 1 << 4; // ED, then A0..BF
    const OVERLONG_2: u8 = 1 << 5; // C0 or C1, then a continuation byte
    const OVERLONG_4: u8 = 1 << 6; // F0, then 80..8F
    const TOO_LARGE_1000: u8 = 1 << 6; // F5..FF, then 80..8F
    const TWO_CONTS: u8 = 1 << 7; // two continuation bytes: right only as the 3rd or 4th byte of a character
    /// Set for every low nibble: for these errors, the previous byte's high nibble decides.
    const CARRY: u8 = TOO_SHORT | TOO_LONG | TWO_CONTS;

    /// By the high nibble of the previous byte.
    const PREV_HIGH: [u8; 16] = [
        TOO_LONG,
        TOO_LONG,
        TOO_LONG,
        TOO_LONG,
        TOO_LONG,
        TOO_LONG,
        TOO_LONG,
        TOO_LONG,
        TWO_CONTS,
        TWO_CONTS,
        TWO_CONTS,
        TWO_CONTS,
        TOO_SHORT | OVERLONG_2,
        TOO_SHORT,
        TOO_SHORT | OVERLONG_3 | SURROGATE,
        TOO_SHORT | TOO_LARGE | TOO_LARGE_1000 | OVERLONG_4,
    ];

    /// By the low nibble of the previous byte.
    const PREV_LOW: [u8; 16] = [
        CARRY | OVERLONG_3 | OVERLONG_2 | OVERLONG_4,
        CARRY | OVERLONG_2,
        CARRY,
        CARRY,
        CARRY | TOO_LARGE,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000 | SURROGATE,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
        CARRY | TOO_LARGE | TOO_LARGE_1000,
    ];

    /// By the high nibble of this byte.
    const THIS_HIGH: [u8; 16] = [
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
        TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE_1000 | OVERLONG_4,
        TOO_LONG | OVERLONG_2 | TWO_CONTS | OVERLONG_3 | TOO_LARGE,
        TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
        TOO_LONG | OVERLONG_2 | TWO_CONTS | SURROGATE | TOO_LARGE,
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
        TOO_SHORT,
    ];

    /// The three tables, each in both 16-byte lanes (`vpshufb` looks up within a lane).
    struct Tables {
        prev_high: __m256i,
        prev_low: __m256i,
        this_high: __m256i,
    }

    #[target_feature(enable = "avx2")]
    fn lanes(table: [u8; 16]) -> __m256i {
        let t = table.map(|b| b as i8);
        _mm256_setr_epi8(
            t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
            t[14], t[15], t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11],
            t[12], t[13], t[14], t[15],
        )
    }

    /// True if any of the `len` bytes at `ptr`, XORed with `key` as a frame's payload is unmasked, is not where
    /// valid UTF-8 could have it, judged with the three bytes before it (a character cut off at the very end is
    /// not seen; see `last_character`). With `UNMASK`, the unmasked bytes are also written back: the payload is
    /// unmasked and checked in one pass.
    ///
    /// # Safety
    /// The CPU must have AVX2; `ptr` must be valid for reads of `len` bytes, and for writes too with `UNMASK`;
    /// `len` must be at least `MIN_VECTOR_LEN`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn has_error<const UNMASK: bool>(
        ptr: *mut u8,
        len: usize,
        key: [u8; 4],
    ) -> bool {
        debug_assert!(len >= super::MIN_VECTOR_LEN);
        let tables = Tables {
            prev_high: lanes(PREV_HIGH),
            prev_low: lanes(PREV_LOW),
            this_high: lanes(THIS_HIGH),
        };
        // The key as it stands at each offset modulo 4: byte `i` of the payload is XORed with `key[i % 4]`.
        let key = u32::from_be_bytes(key);
        let keys = [0, 8, 16, 24]
            .map(|bits| _mm256_set1_epi32(i32::from_ne_bytes(key.rotate_left(bits).to_be_bytes())));
        let load = |i: usize| {
            debug_assert!(i + 32 <= len);
            // SAFETY: every caller below passes `i <= len - 32`, so the 32 bytes read are inside the payload;
            // `loadu` has no alignment requirement.
            let masked = unsafe { _mm256_loadu_si256(ptr.add(i).cast()) };
            _mm256_xor_si256(masked, keys[i % 4])
        };
        let store = |i: usize, unmasked: __m256i| {
            debug_assert!(i + 32 <= len);
            if UNMASK {
                // SAFETY: as for `load`; the caller allows writes when it asks for `UNMASK`.
                unsafe { _mm256_storeu_si256(ptr.add(i).cast(), unmasked) };
            }
        };
        // The bytes before a step are read straight from memory, each load unmasked in its register: cheaper than
        // shifting them in from the step before (three shuffles more per step, on the ports the lookups need).
        let judge_at =
            |i: usize, this: __m256i| judge(&tables, this, load(i - 1), load(i - 2), load(i - 3));

        // The first step has no bytes before it: they count as ASCII (zero), shifted in from the left. `vpalignr`
        // shifts within 16-byte lanes, so the lane that straddles the two is built first.
        let first = load(0);
        let joint = _mm256_permute2x128_si256(_mm256_setzero_si256(), first, 0x21);
        let mut errors = judge(
            &tables,
            first,
            _mm256_alignr_epi8(first, joint, 15),
            _mm256_alignr_epi8(first, joint, 14),
            _mm256_alignr_epi8(first, joint, 13),
        );
        // Then whole steps of 32 bytes, and one that ends at the end of the text, overlapping the step before
        // unless the length is a multiple of 32. Every read must see masked bytes, so the last step is read before
        // anything is written, and each step is written back only once the step after it has read the three bytes
        // before it (`pending`). The overlapping last step writes some bytes twice, alike.
        let last = (!len.is_multiple_of(32)).then(|| {
            let start = len - 32; // >= 3: len >= MIN_VECTOR_LEN
            (start, load(start), judge_at(start, load(start)))
        });
        let mut pending = (0, first);
        let mut i = 32;
        // Two steps at a time. Where they and the three bytes before them are ASCII, there is nothing to judge.
        while i + 64 <= len {
            let (this, next, three_back) = (load(i), load(i + 32), load(i - 3));
            let any = _mm256_or_si256(_mm256_or_si256(this, next), three_back);
            if _mm256_movemask_epi8(any) != 0 {
                let both = _mm256_or_si256(judge_at(i, this), judge_at(i + 32, next));
                errors = _mm256_or_si256(errors, both);
            }
            store(pending.0, pending.1);
            store(i, this);
            pending = (i + 32, next);
            i += 64;
        }
        if i + 32 <= len {
            let this = load(i);
            errors = _mm256_or_si256(errors, judge_at(i, this));
            store(pending.0, pending.1);
            pending = (i, this);
        }
        store(pending.0, pending.1);
        if let Some((start, this, step)) = last {
            errors = _mm256_or_si256(errors, step);
            store(start, this);
        }
        _mm256_testz_si256(errors, errors) == 0
    }

    /// The error bits of 32 bytes, given the same 32 bytes shifted by one, two and three (the bytes before each).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn judge(
        tables: &Tables,
        this: __m256i,
        prev1: __m256i,
        prev2: __m256i,
        prev3: __m256i,
    ) -> __m256i {
        let low_nibble = _mm256_set1_epi8(0x0F);
        let high = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16(v, 4), low_nibble);
        let by_prev_high = _mm256_shuffle_epi8(tables.prev_high, high(prev1));
        let by_prev_low = _mm256_shuffle_epi8(tables.prev_low, _mm256_and_si256(prev1, low_nibble));
        let by_this_high = _mm256_shuffle_epi8(tables.this_high, high(this));
        let pairs = _mm256_and_si256(_mm256_and_si256(by_prev_high, by_prev_low), by_this_high);
        // Where two bytes back is E0..FF or three back is F0..FF, this byte must be a continuation byte that
        // follows another one: the 0x80 bit here must meet the TWO_CONTS bit of `pairs`, and XOR leaves neither.
        let third = _mm256_subs_epu8(prev2, _mm256_set1_epi8((0xE0u8 - 0x80) as i8));
        let fourth = _mm256_subs_epu8(prev3, _mm256_set1_epi8((0xF0u8 - 0x80) as i8));
        let must_follow = _mm256_and_si256(
            _mm256_or_si256(third, fourth),
            _mm256_set1_epi8(0x80u8 as i8),
        );
        _mm256_xor_si256(must_follow, pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that stand for the classes UTF-8 tells apart, at the edges of each range.
    const CLASSES: [u8; 17] = [
        0x41, 0x7F, 0x80, 0x8F, 0x90, 0xA0, 0xBF, 0xC1, 0xC2, 0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF1,
        0xF4, 0xF5,
    ];

    fn expect(bytes: &[u8]) -> Verdict {
        with_std(bytes)
    }

    fn agree(bytes: &[u8]) {
        let verdict = expect(bytes);
        assert_eq!(check(bytes), verdict, "on {bytes:02x?}");
        assert_eq!(
            to_str(bytes).is_some(),
            verdict == Verdict::Valid,
            "on {bytes:02x?}"
        );
        let split = split_complete(bytes).map(|(whole, cut)| (whole.as_bytes(), cut));
        let expected_split = match verdict {
            Verdict::Valid => Some((bytes, &[][..])),
            Verdict::Incomplete(end) => Some(bytes.split_at(end)),
            Verdict::Invalid => None,
        };
        assert_eq!(split, expected_split, "split, on {bytes:02x?}");
        // The same bytes as a masked frame's payload, with a key that differs in every byte.
        let key = [0x37, 0xFA, 0x21, 0x3D];
        let mut payload = bytes.to_vec();
        crate::frame::apply_mask(&mut payload, key, 0);
        for offset in [0, 3] {
            let mut masked = bytes.to_vec();
            crate::frame::apply_mask(&mut masked, key, offset);
            assert_eq!(
                unmask_and_check(&mut masked, key, offset),
                verdict,
                "masked from {offset}, on {bytes:02x?}"
            );
            assert_eq!(masked, bytes, "unmasked from {offset}");
        }
        let (unmasked, text) = unmask_text(&mut payload, key);
        assert_eq!(unmasked, bytes, "unmasked");
        assert_eq!(
            text.is_some(),
            verdict == Verdict::Valid,
            "masked, on {bytes:02x?}"
        );
        assert_eq!(text.map(str::as_bytes), text.and(Some(bytes)));
    }

    /// Every placement of every window of `len` bytes drawn from `values`, in ASCII text of `text_len` bytes,
    /// checked against the standard library.
    fn sweep(values: &[u8], len: usize, text_len: usize) {
        let mut text = vec![b'a'; text_len];
        let mut window = vec![0u8; len];
        let combinations = values.len().pow(len as u32);
        for at in 0..=text_len - len {
            for n in 0..combinations {
                let mut rest = n;
                for byte in window.iter_mut() {
                    *byte = values[rest % values.len()];
                    rest /= values.len();
                }
                text[at..at + len].copy_from_slice(&window);
                agree(&text);
            }
            text[at..at + len].fill(b'a');
        }
    }

    #[test]
    fn every_pair_of_bytes_at_every_place() {
        // Each byte is judged with the byte before it by three table lookups: every pair of bytes reaches every
        // entry of every table. Placed everywhere, the pairs straddle each seam between the first step, a double
        // step, a single one and the last one (131 bytes: overlapping the step before, its key turned by 3; 128:
        // none).
        let all: Vec<u8> = (0..=255).collect();
        for text_len in [128, 131] {
            sweep(&all, 2, text_len);
        }
    }

    #[test]
    fn every_four_byte_window_of_classes_at_every_place() {
        // An error depends on a byte and the three before it (two or three back: whether this byte must continue
        // a character). Four bytes of these classes, the edges of each range, cover those rules everywhere.
        for text_len in [128, 131] {
            sweep(&CLASSES, 4, text_len);
        }
    }

    #[test]
    fn every_character_whole_and_cut_at_each_length() {
        // After 40 and after 61 bytes of ASCII: the character in the last step, and across its start.
        for prefix in [40, 61] {
            let mut text = vec![b'x'; prefix];
            for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
                let mut buf = [0u8; 4];
                let encoded = c.encode_utf8(&mut buf).as_bytes();
                text.truncate(prefix);
                text.extend_from_slice(encoded);
                assert_eq!(check(&text), Verdict::Valid, "{c:?}");
                agree(&text);
                for cut in 1..encoded.len() {
                    let cut_off = &text[..prefix + cut];
                    assert_eq!(
                        check(cut_off),
                        Verdict::Incomplete(prefix),
                        "{c:?} cut at {cut}"
                    );
                    agree(cut_off);
                }
            }
        }
    }

    #[test]
    fn every_length_of_mixed_text_with_each_byte_broken() {
        scalar_only::and_vector(every_length_of_mixed_text_with_each_byte_broken_on_this_path);
    }

    fn every_length_of_mixed_text_with_each_byte_broken_on_this_path() {
        let sample = "wsloop says héllo, wörld ✓ 😀 ".repeat(4);
        let sample = sample.as_bytes();
        for len in 0..sample.len() {
            let piece = &sample[..len];
            agree(piece);
            let mut broken = piece.to_vec();
            for i in 0..len {
                for bad in [0x80, 0xC0, 0xFF, b'a'] {
                    let was = broken[i];
                    broken[i] = bad;
                    agree(&broken);
                    broken[i] = was;
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_std_on_any_bytes(bytes in proptest::collection::vec(proptest::sample::select(&CLASSES[..]), 0..300)) {
            agree(&bytes);
        }

        #[test]
        fn agrees_with_std_on_text_with_one_change(
            text in "\\PC{0,120}",
            at in proptest::prelude::any::<proptest::sample::Index>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut bytes = text.into_bytes();
            agree(&bytes);
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = byte;
                agree(&bytes);
            }
        }
    }
}
