//! The pure codec, without a network: decode (masked, as a server reads; and unmasked), encode and `apply_mask`,
//! for payloads of 0, 125, 126 bytes, 64 KiB and 1 MiB; and a long text frame arriving over many reads, the
//! fail-fast UTF-8 probe running after each. `cargo bench --bench frame`.
//!
//! Decoding unmasks in place, so each iteration starts from a fresh copy of the masked input; the copy is made in
//! `iter_batched`'s setup, outside the timed part. The comparison with other libraries is in `peers/benches`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
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

criterion_group!(benches, decode, encode, apply_mask, partial_text);
criterion_main!(benches);
