//! The pure codec, without a network: decode (masked, as a server reads; and unmasked), encode and `apply_mask`,
//! for payloads of 0, 125, 126 bytes, 64 KiB and 1 MiB; and a long text frame arriving over many reads, the
//! fail-fast UTF-8 probe running after each. `cargo bench --bench frame`.
//!
//! Decoding unmasks in place, so each iteration starts from a fresh copy of the masked input; the copy is made in
//! `iter_batched`'s setup, outside the timed part. The comparison with other libraries is in `peers/benches`.
//!
//! permessage-deflate (`cargo bench --bench frame -- deflate`): the group `deflate` times wsloop's `Compressor`
//! and `Inflater` on chat-like JSON (one message of about 200 B, 16 KiB and 1 MiB of a chat history) beside a
//! plain raw-deflate round trip of the same bytes through flate2 (its default miniz_oxide engine) and through
//! zlib-rs itself (wsloop's engine, without wsloop's wrapping: the floor). Then, unless the filter names some
//! other group, a table is printed (no criterion there: the median of 5 timed batches per row) of compressed size
//! and time per message at zlib levels 1, 6 and 9, memory levels 1, 8 and 9, several windows, and message sizes
//! that are candidates for the threshold below which a message goes out uncompressed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use wsloop::deflate::{Compressor, Deflate, Inflater};
use wsloop::frame::{self, Limits, OpCode};
use wsloop::message::{Assembler, Event, Probe};
use wsloop::Status;

const SIZES: [usize; 5] = [0, 125, 126, 64 << 10, 1 << 20];
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for len in SIZES {
        group.throughput(Throughput::Bytes(len.max(1) as u64));
        let mut masked = Vec::new();
        frame::encode_masked(&mut masked, true, OpCode::Binary, &payload(len), MASK);
        let server = Limits {
            max_payload: 1 << 30,
            require_mask: true,
            deflate: false,
        };
        group.bench_with_input(BenchmarkId::new("masked", len), &masked, |b, input| {
            b.iter_batched_ref(
                || input.clone(),
                |buf| match frame::decode(black_box(buf), &server) {
                    Ok(Status::Complete((f, used))) => black_box((f.payload.len(), used)),
                    other => panic!("{other:?}"),
                },
                BatchSize::LargeInput,
            )
        });
        let mut plain = Vec::new();
        frame::encode(&mut plain, true, OpCode::Binary, &payload(len));
        let client = Limits {
            max_payload: 1 << 30,
            require_mask: false,
            deflate: false,
        };
        group.bench_with_input(BenchmarkId::new("unmasked", len), &plain, |b, input| {
            let mut buf = input.clone();
            b.iter(|| match frame::decode(black_box(&mut buf), &client) {
                Ok(Status::Complete((f, used))) => black_box((f.payload.len(), used)),
                other => panic!("{other:?}"),
            })
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for len in SIZES {
        group.throughput(Throughput::Bytes(len.max(1) as u64));
        let data = payload(len);
        let mut out = Vec::with_capacity(len + frame::MAX_HEADER_LEN);
        group.bench_with_input(BenchmarkId::from_parameter(len), &data, |b, data| {
            b.iter(|| {
                out.clear();
                frame::encode(&mut out, true, OpCode::Binary, black_box(data));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn apply_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_mask");
    for len in SIZES {
        group.throughput(Throughput::Bytes(len.max(1) as u64));
        let mut data = payload(len);
        group.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| frame::apply_mask(black_box(&mut data), MASK, 0))
        });
    }
    group.finish();
}

/// A 1 MiB text frame of mixed UTF-8 arriving in 64 KiB reads, as the server meets it: after each read the probe
/// unmasks the bytes that came and checks them (`Probe::decode_trusting`); once the frame is whole, only its last
/// bytes are unmasked and checked.
fn partial_text(c: &mut Criterion) {
    let mut group = c.benchmark_group("partial_text");
    let mut text = "wsloop says héllo, wörld ✓ ".repeat(40_000);
    let mut end = 1 << 20;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    let mut masked = Vec::new();
    frame::encode_masked(&mut masked, true, OpCode::Text, text.as_bytes(), MASK);
    let server = Limits {
        max_payload: 1 << 30,
        require_mask: true,
        deflate: false,
    };
    const READ: usize = 64 << 10;
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("1MiB_in_64KiB_reads", |b| {
        b.iter_batched_ref(
            || masked.clone(),
            |buf| {
                let mut assembler = Assembler::new(1 << 30);
                let mut probe = Probe::default();
                // SAFETY: the buffer only grows, one read at a time, as the server's does.
                for have in (READ..buf.len()).step_by(READ) {
                    let arrived = black_box(&mut buf[..have]);
                    match unsafe { probe.decode_trusting(arrived, &server, &assembler) } {
                        Ok(Status::Partial) => {}
                        other => panic!("{other:?}"),
                    }
                }
                let Ok(Status::Complete((frame, _))) =
                    (unsafe { probe.decode_trusting(buf, &server, &assembler) })
                else {
                    panic!("a whole frame")
                };
                match assembler.push(frame) {
                    Ok(Some(Event::Message(msg))) => black_box(msg.as_bytes().len()),
                    other => panic!("{other:?}"),
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Words for the chat-like text, the same as the load generator's.
#[path = "../peers/src/words.rs"]
mod words;
use words::WORDS;

/// A small xorshift generator: the same "random" chat on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One chatroom message (the chatroom example's own shape) of exactly `size` bytes, its text words picked by
/// `rng`; below the envelope's length (about 55 bytes) the message is cut short, which keeps its bytes' mix.
fn chat_message(rng: &mut Rng, size: usize) -> Vec<u8> {
    let id = 1 + rng.below(999);
    let mut json = format!(r#"{{"type":"message","id":{id},"name":"user{id}","text":""#);
    let end = r#""}"#;
    while json.len() + end.len() < size {
        if !json.ends_with('"') {
            json.push(' ');
        }
        json.push_str(WORDS[rng.below(WORDS.len())]);
    }
    let mut bytes = json.into_bytes();
    bytes.truncate(size.saturating_sub(end.len()).max(size.min(2)));
    if size >= end.len() {
        bytes.extend_from_slice(end.as_bytes());
    }
    bytes.truncate(size);
    bytes
}

/// `size` bytes of a chat history: `{"type":"history","events":[...]}` of messages of 20 to 300 bytes, cut to the
/// size (the cut end does not matter to deflate).
fn chat_history(size: usize) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = br#"{"type":"history","events":["#.to_vec();
    while out.len() < size {
        let len = 60 + rng.below(240);
        out.extend_from_slice(&chat_message(&mut rng, len));
        out.push(b',');
    }
    out.truncate(size);
    out
}

/// zlib's level and memory level of the default settings, which every comparison in the `deflate` group uses.
fn default_settings() -> (u8, u8) {
    let d = Deflate::default();
    (d.level, d.mem_level)
}

/// wsloop's compressor and inflater on chat JSON, beside flate2 and zlib-rs doing a raw deflate round trip of the
/// same bytes with a sync flush (no context takeover: every stream reset after its message, as the loop's is).
fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    let (level, mem_level) = default_settings();
    let inputs = [
        ("chat200", chat_message(&mut Rng(42), 200)),
        ("chat16KiB", chat_history(16 << 10)),
        ("chat1MiB", chat_history(1 << 20)),
    ];
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut compressor = Compressor::new(15, mem_level, level, false);
        let mut compressed = Vec::new();
        compressor.compress(input, &mut compressed);
        let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 64);
        group.bench_with_input(
            BenchmarkId::new("wsloop_compress", name),
            input,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    compressor.compress(black_box(input), &mut out);
                    black_box(out.len())
                })
            },
        );
        // Every contender's round trip is checked once before anything is timed.
        let mut inflater = Inflater::new(15, false);
        let mut plain = Vec::with_capacity(input.len());
        inflater
            .inflate(&compressed, true, &mut |piece| {
                plain.extend_from_slice(piece);
                Ok(())
            })
            .expect("inflates");
        assert!(plain == *input, "{name}: wsloop's round trip differs");
        group.bench_with_input(
            BenchmarkId::new("wsloop_inflate", name),
            &compressed,
            |b, compressed| {
                b.iter(|| {
                    plain.clear();
                    inflater
                        .inflate(black_box(compressed), true, &mut |piece| {
                            plain.extend_from_slice(piece);
                            Ok(())
                        })
                        .expect("inflates");
                    black_box(plain.len())
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("wsloop_round_trip", name),
            input,
            |b, input| {
                b.iter(|| {
                    out.clear();
                    compressor.compress(black_box(input), &mut out);
                    plain.clear();
                    inflater
                        .inflate(&out, true, &mut |piece| {
                            plain.extend_from_slice(piece);
                            Ok(())
                        })
                        .expect("inflates");
                    black_box(plain.len())
                })
            },
        );

        let mut flate = Flate2::new(level);
        flate.compress(input, &mut out);
        let flate_compressed = out.clone();
        flate.inflate(&flate_compressed, &mut plain);
        assert!(plain == *input, "{name}: flate2's round trip differs");
        group.bench_with_input(
            BenchmarkId::new("flate2_compress", name),
            input,
            |b, input| b.iter(|| black_box(flate.compress(black_box(input), &mut out))),
        );
        group.bench_with_input(
            BenchmarkId::new("flate2_inflate", name),
            &flate_compressed,
            |b, compressed| b.iter(|| black_box(flate.inflate(black_box(compressed), &mut plain))),
        );
        group.bench_with_input(
            BenchmarkId::new("flate2_round_trip", name),
            input,
            |b, input| {
                b.iter(|| {
                    flate.compress(black_box(input), &mut out);
                    black_box(flate.inflate(&out, &mut plain))
                })
            },
        );

        let mut raw = ZlibRs::new(level, mem_level, input.len());
        group.bench_with_input(
            BenchmarkId::new("zlib_rs_compress", name),
            input,
            |b, input| b.iter(|| black_box(raw.compress(black_box(input)).len())),
        );
        group.bench_with_input(
            BenchmarkId::new("zlib_rs_inflate", name),
            &compressed,
            |b, compressed| b.iter(|| black_box(raw.inflate(black_box(compressed)).len())),
        );
        assert!(
            raw.inflate(&compressed) == input.as_slice(),
            "{name}: zlib-rs's round trip differs"
        );
        group.bench_with_input(
            BenchmarkId::new("zlib_rs_round_trip", name),
            input,
            |b, input| {
                b.iter(|| {
                    let made = raw.compress(black_box(input)).len();
                    black_box(raw.inflate_own(made).len())
                })
            },
        );
        eprintln!(
            "deflate {name}: {} B compress to {} B with wsloop, {} B with flate2 (miniz_oxide), level {level}",
            input.len(),
            compressed.len(),
            flate_compressed.len()
        );
    }
    group.finish();
    if table_wanted() {
        deflate_side_by_side();
        deflate_table();
    }
}

/// The §7.2.1 tail a sync flush ends with, which the sender drops and the receiver puts back.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// flate2's raw deflate and inflate, reset after each message, with a sync flush: the round trip a permessage-deflate
/// implementation on flate2 would make.
struct Flate2 {
    compress: flate2::Compress,
    decompress: flate2::Decompress,
}

impl Flate2 {
    fn new(level: u8) -> Flate2 {
        Flate2 {
            compress: flate2::Compress::new(flate2::Compression::new(u32::from(level)), false),
            decompress: flate2::Decompress::new(false),
        }
    }

    /// Compresses `input` into `out` (replacing what it held), the tail dropped.
    fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        out.clear();
        out.reserve(input.len() + input.len() / 64 + 64);
        let mut rest = input;
        loop {
            let before = self.compress.total_in();
            self.compress
                .compress_vec(rest, out, flate2::FlushCompress::Sync)
                .expect("deflate");
            rest = &rest[(self.compress.total_in() - before) as usize..];
            if out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity());
        }
        if out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        self.compress.reset();
        out.len()
    }

    /// Inflates a message with its tail put back into `out` (replacing what it held).
    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        out.clear();
        for piece in [input, &TAIL] {
            let mut rest = piece;
            loop {
                if out.len() == out.capacity() {
                    out.reserve(out.capacity().max(4096));
                }
                let before = self.decompress.total_in();
                self.decompress
                    .decompress_vec(rest, out, flate2::FlushDecompress::Sync)
                    .expect("inflate");
                rest = &rest[(self.decompress.total_in() - before) as usize..];
                if rest.is_empty() && out.len() < out.capacity() {
                    break;
                }
            }
        }
        self.decompress.reset(false);
        out.len()
    }
}

/// zlib-rs called directly, into buffers made once: wsloop's engine without its wrapping, the floor.
struct ZlibRs {
    deflate: zlib_rs::Deflate,
    inflate: zlib_rs::Inflate,
    compressed: Vec<u8>,
    plain: Vec<u8>,
}

impl ZlibRs {
    fn new(level: u8, mem_level: u8, size: usize) -> ZlibRs {
        let config = zlib_rs::DeflateConfig {
            level: i32::from(level),
            method: zlib_rs::Method::Deflated,
            window_bits: -15,
            mem_level: i32::from(mem_level),
            strategy: zlib_rs::Strategy::Default,
        };
        ZlibRs {
            deflate: zlib_rs::Deflate::new_with_config(config),
            inflate: zlib_rs::Inflate::new(false, 15),
            compressed: vec![0; size + size / 64 + 64],
            plain: vec![0; size + 64],
        }
    }

    fn compress(&mut self, input: &[u8]) -> &[u8] {
        self.deflate
            .compress(
                input,
                &mut self.compressed,
                zlib_rs::DeflateFlush::SyncFlush,
            )
            .expect("deflate");
        let mut made = self.deflate.total_out() as usize;
        assert_eq!(
            self.deflate.total_in() as usize,
            input.len(),
            "one call takes it all"
        );
        if self.compressed[..made].ends_with(&TAIL) {
            made -= TAIL.len();
        }
        self.deflate.reset();
        &self.compressed[..made]
    }

    /// Inflates a message, then its tail (two calls, as a message and its tail are two slices).
    fn inflate(&mut self, input: &[u8]) -> &[u8] {
        let mut made = 0;
        for piece in [input, &TAIL] {
            self.inflate
                .decompress(
                    piece,
                    &mut self.plain[made..],
                    zlib_rs::InflateFlush::SyncFlush,
                )
                .expect("inflate");
            made = self.inflate.total_out() as usize;
        }
        self.inflate.reset(false);
        &self.plain[..made]
    }

    /// Inflates the first `len` bytes of its own compressed buffer, with the tail put back after them.
    fn inflate_own(&mut self, len: usize) -> &[u8] {
        self.compressed[len..len + TAIL.len()].copy_from_slice(&TAIL);
        self.inflate
            .decompress(
                &self.compressed[..len + TAIL.len()],
                &mut self.plain,
                zlib_rs::InflateFlush::SyncFlush,
            )
            .expect("inflate");
        let made = self.inflate.total_out() as usize;
        self.inflate.reset(false);
        &self.plain[..made]
    }
}

/// Whether the table is wanted: no filter, or one that names `deflate` (criterion's filters are the arguments not
/// starting with `-`; `--bench` is cargo's).
fn table_wanted() -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| "deflate_table".contains(f.as_str()))
}

/// The median over 5 batches of the time per call of `f`, each batch about 40 ms.
fn time_per_call(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(10) {
        f();
        calls += 1;
    }
    let per_batch = (calls * 4).max(1);
    let mut batches: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed() / per_batch
        })
        .collect();
    batches.sort();
    batches[2]
}

/// What one setting does to a set of messages: mean compressed size, and time per message to compress and to
/// inflate.
struct Row {
    plain: f64,
    compressed: f64,
    smaller: usize,
    compress: Duration,
    inflate: Duration,
}

/// Compresses `messages` in turn (timed as it goes round them again and again) and inflates them; with
/// `takeover` through one stream each that keeps its context, so each message refers back to the ones before
/// it (the set should be larger than the window several times over, so that no message meets itself again).
fn measure(messages: &[Vec<u8>], window_bits: u8, mem_level: u8, level: u8, takeover: bool) -> Row {
    let mut compressor = Compressor::new(window_bits, mem_level, level, takeover);
    let mut inflater = Inflater::new(window_bits, takeover);
    let compressed: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let mut out = Vec::new();
            compressor.compress(m, &mut out);
            out
        })
        .collect();
    let mut out = Vec::with_capacity(messages.iter().map(Vec::len).max().unwrap_or(0) * 2 + 64);
    let mut i = 0;
    let compress = time_per_call(|| {
        out.clear();
        compressor.compress(black_box(&messages[i % messages.len()]), &mut out);
        i += 1;
    });
    let mut plain = Vec::with_capacity(out.capacity());
    // In order from the first: with context, each refers to the ones before it.
    i = 0;
    let inflate = time_per_call(|| {
        plain.clear();
        inflater
            .inflate(
                black_box(&compressed[i % compressed.len()]),
                true,
                &mut |piece| {
                    plain.extend_from_slice(piece);
                    Ok(())
                },
            )
            .expect("inflates");
        i += 1;
    });
    let n = messages.len() as f64;
    Row {
        plain: messages.iter().map(Vec::len).sum::<usize>() as f64 / n,
        compressed: compressed.iter().map(Vec::len).sum::<usize>() as f64 / n,
        smaller: compressed
            .iter()
            .zip(messages)
            .filter(|(c, m)| c.len() < m.len())
            .count(),
        compress,
        inflate,
    }
}

fn print_row(label: &str, row: &Row, count: usize) {
    println!(
        "{label:<34} {:>8.0} {:>10.1} {:>6.3} {:>7}/{count:<3} {:>10.2} {:>10.2} {:>10.1}",
        row.plain,
        row.compressed,
        row.compressed / row.plain,
        row.smaller,
        row.compress.as_secs_f64() * 1e6,
        row.inflate.as_secs_f64() * 1e6,
        (row.plain - row.compressed) / (row.compress + row.inflate).as_secs_f64().max(1e-12) / 1e6,
    );
}

/// Batches of each contender in turn, `rounds` times, so that a slow moment of the machine lands on all of them:
/// per contender the median time per call, and its ratio to the first contender's, the median over the rounds
/// with the lowest and highest.
fn side_by_side(label: &str, contenders: &mut [(&str, &mut dyn FnMut())], rounds: usize) {
    let calls: Vec<u32> = contenders
        .iter_mut()
        .map(|(_, f)| {
            let start = Instant::now();
            let mut calls = 0u32;
            while start.elapsed() < Duration::from_millis(5) {
                f();
                calls += 1;
            }
            (calls * 3).max(1)
        })
        .collect();
    let mut times = vec![Vec::with_capacity(rounds); contenders.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in contenders.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..calls[i] {
                f();
            }
            times[i].push(start.elapsed().as_secs_f64() / f64::from(calls[i]));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for (i, (name, _)) in contenders.iter().enumerate() {
        let ratios: Vec<f64> = times[i]
            .iter()
            .zip(&times[0])
            .map(|(t, first)| t / first)
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        println!(
            "{label:<12} {name:<18} {:>12.2} {:>8.2} ({lo:.2}-{hi:.2})",
            median(times[i].clone()) * 1e6,
            median(ratios)
        );
    }
}

/// wsloop, zlib-rs called directly and flate2 on the same messages, their batches interleaved (the criterion group
/// runs each contender's samples one after the other, so a busy moment of this shared machine can favour one).
fn deflate_side_by_side() {
    let (level, mem_level) = default_settings();
    println!("\n-- side by side: level {level}, memory level {mem_level}, window 15; 11 rounds of interleaved batches");
    println!("   (us per call: the median; ratio: this contender's time over wsloop's in the same round, median (range))");
    println!(
        "{:<12} {:<18} {:>12} {:>8}",
        "input", "contender", "us per call", "ratio"
    );
    for (name, input) in [
        ("chat200", chat_message(&mut Rng(42), 200)),
        ("chat16KiB", chat_history(16 << 10)),
        ("chat1MiB", chat_history(1 << 20)),
    ] {
        let rounds = if input.len() > 1 << 16 { 5 } else { 11 };
        let mut compressor = Compressor::new(15, mem_level, level, false);
        let mut compressed = Vec::new();
        compressor.compress(&input, &mut compressed);
        let (mut raw, mut flate) = (
            ZlibRs::new(level, mem_level, input.len()),
            Flate2::new(level),
        );
        let (mut out, mut out2, mut out3) = (Vec::new(), Vec::new(), Vec::new());
        side_by_side(
            name,
            &mut [
                ("wsloop_compress", &mut || {
                    out.clear();
                    compressor.compress(black_box(&input), &mut out);
                }),
                ("zlib_rs_compress", &mut || {
                    black_box(raw.compress(black_box(&input)).len());
                }),
                ("flate2_compress", &mut || {
                    black_box(flate.compress(black_box(&input), &mut out2));
                }),
            ],
            rounds,
        );
        let mut flate_compressed = Vec::new();
        flate.compress(&input, &mut flate_compressed);
        let mut inflater = Inflater::new(15, false);
        side_by_side(
            name,
            &mut [
                ("wsloop_inflate", &mut || {
                    out.clear();
                    inflater
                        .inflate(black_box(&compressed), true, &mut |piece| {
                            out.extend_from_slice(piece);
                            Ok(())
                        })
                        .expect("inflates");
                }),
                ("zlib_rs_inflate", &mut || {
                    black_box(raw.inflate(black_box(&compressed)).len());
                }),
                ("flate2_inflate", &mut || {
                    black_box(flate.inflate(black_box(&flate_compressed), &mut out3));
                }),
            ],
            rounds,
        );
    }
}

/// The table for choosing the defaults: chat messages (64 different ones per size, 16 for 16 KiB) compressed
/// without context takeover, as the loop's shared stream does.
fn deflate_table() {
    let set = |size: usize, count: usize| -> Vec<Vec<u8>> {
        if size > 4096 {
            let history = chat_history(size * count);
            return history.chunks(size).map(<[u8]>::to_vec).collect();
        }
        let mut rng = Rng(size as u64 * 7919 + 1);
        (0..count).map(|_| chat_message(&mut rng, size)).collect()
    };
    let header = || {
        println!(
            "{:<34} {:>8} {:>10} {:>6} {:>11} {:>10} {:>10} {:>10}",
            "", "plain B", "deflated B", "ratio", "smaller", "comp us", "infl us", "saved B/us"
        )
    };
    println!(
        "\n== deflate table: chat JSON, no context takeover, the median of 5 batches per figure"
    );
    println!("   (saved B/us: bytes saved per microsecond of compressing and inflating together)");
    println!("\n-- levels and memory levels (window 15)");
    header();
    for size in [200, 1024, 16 << 10] {
        let count = if size > 4096 { 16 } else { 64 };
        let messages = set(size, count);
        for level in [1, 6, 9] {
            for mem_level in [1, 8, 9] {
                let row = measure(&messages, 15, mem_level, level, false);
                print_row(
                    &format!("{size} B level {level} mem {mem_level}"),
                    &row,
                    count,
                );
            }
        }
    }
    println!("\n-- every level (memory level 8, window 15)");
    header();
    for size in [200, 1024, 16 << 10] {
        let count = if size > 4096 { 16 } else { 64 };
        let messages = set(size, count);
        for level in 1..=9 {
            let row = measure(&messages, 15, 8, level, false);
            print_row(&format!("{size} B level {level}"), &row, count);
        }
    }
    println!(
        "\n-- windows (level 6, memory level 8; the dedicated presets pair 9 with 1 ... 15 with 8)"
    );
    header();
    for size in [200, 1024, 16 << 10] {
        let count = if size > 4096 { 16 } else { 64 };
        let messages = set(size, count);
        for bits in [9, 10, 12, 15] {
            let row = measure(&messages, bits, 8, 6, false);
            print_row(&format!("{size} B window {bits}"), &row, count);
        }
    }
    let (level, mem_level) = default_settings();
    println!("\n-- threshold candidates (level {level}, memory level {mem_level}, window 15)");
    header();
    for size in [24, 32, 48, 64, 80, 96, 128, 160, 200, 256, 384, 512, 1024] {
        let messages = set(size, 64);
        for level in [1, level] {
            let row = measure(&messages, 15, mem_level, level, false);
            print_row(&format!("{size} B level {level}"), &row, 64);
        }
    }
    println!("\n-- context takeover, as the dedicated presets keep it (window and memory level of 3, 32 and 256 KiB),");
    println!("   different messages (128 KiB of them) in turn through one stream; \"fresh\": each afresh, for comparison");
    header();
    for size in [200, 1024] {
        let count = (128 << 10) / size + 1;
        let messages = set(size, count);
        for (kib, bits, mem) in [(3, 9, 1), (32, 12, 5), (256, 15, 8)] {
            for level in [1, 6, 9] {
                let row = measure(&messages, bits, mem, level, true);
                print_row(&format!("{size} B {kib} KiB level {level}"), &row, count);
            }
        }
        let row = measure(&messages, 15, 8, 6, false);
        print_row(&format!("{size} B fresh level 6"), &row, count);
    }
}

criterion_group!(benches, decode, encode, apply_mask, partial_text, deflate);
criterion_main!(benches);
