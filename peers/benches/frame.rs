//! Frame decoding and encoding, wsloop beside tungstenite and fastwebsockets, on identical bytes.
//!
//! ```text
//! cd peers && cargo bench --bench frame            # all of it, about four minutes
//! cd peers && cargo bench --bench frame -- decode_text/    # one group
//! ../scripts/bench.sh                               # the same, then a table of medians and ratios
//! ```
//!
//! Every contender starts from the same masked client frames and must do what a server does with
//! them: take the bytes from "the socket", unmask, check, join fragments, validate UTF-8 for text,
//! and hand out each message. The socket is modelled by one copy of the input into the library's
//! own buffer: wsloop's read buffer, 64 KiB a read as its server reads (a frame longer than that
//! is unmasked read by read, as it arrives), or the in-memory stream that tungstenite and
//! fastwebsockets read from, in the pieces they ask for. `memcpy` is that copy alone, all at once:
//! the floor nobody can beat.
//!
//! The groups `in_place_binary` and `in_place_text` time wsloop's decode alone (header parse,
//! unmask, assembly) on frames of 64 KiB and more already in its buffer, beside a memcpy of the
//! same bytes: the work the server does after the socket's copy, which only wsloop's API exposes.
//!
//! Encoding (server to client) hands each frame to a model socket that copies the bytes it is
//! given, as the kernel would (every buffer of a vectored write too). Payloads up to 1 KiB go many
//! frames to a buffer and are reported in frames per second; larger ones one frame to a buffer, in
//! bytes per second. Every contender sends a payload that the caller keeps (fastwebsockets'
//! borrowed payload, tungstenite's shared `Bytes`) or hands over (wsloop's `Handle::send(id, vec)`),
//! so none is made to copy it before encoding. A borrowed `Message` costs wsloop one copy more,
//! that of `frame::encode` (`cargo bench --bench frame -- encode` in the repository root).

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::{
    Message as TMessage, Role as TRole, WebSocket as TWebSocket, WebSocketConfig,
};
use wsloop::frame::{self, Head, Limits, OpCode};
use wsloop::message::{Assembler, Event, Probe};
use wsloop::Status;
use wsloop_peers::client::{encode_masked, OP_BINARY, OP_CONTINUATION, OP_TEXT};
use wsloop_peers::sample_payload;

/// Sizes sent many frames to a buffer (throughput in frames), then one frame to a buffer (bytes).
const SMALL: [usize; 5] = [0, 16, 125, 126, 1024];
const LARGE: [usize; 3] = [64 << 10, 1 << 20, 16 << 20];
const FRAMES_PER_BUFFER: usize = 1000;
/// Every library is allowed the largest message used here, plus room.
const MAX_MESSAGE: usize = 64 << 20;

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// Masked client frames back to back, the input of one timed iteration.
struct Input {
    bytes: Rc<[u8]>,
    messages: usize,
    payload_bytes: usize,
}

/// `count` messages of `size` bytes, each split into frames of at most `fragment` bytes.
fn client_frames(size: usize, count: usize, fragment: usize, text: bool) -> Input {
    frames_of(&sample_payload(size, text), count, fragment, text)
}

/// `count` copies of `payload` as messages, each split into frames of at most `fragment` bytes.
fn frames_of(payload: &[u8], count: usize, fragment: usize, text: bool) -> Input {
    let size = payload.len();
    let opcode = if text { OP_TEXT } else { OP_BINARY };
    let mut bytes = Vec::new();
    let mut key: u32 = 0x37fa_213d;
    for _ in 0..count {
        let pieces: Vec<&[u8]> = if size == 0 {
            vec![&[][..]]
        } else {
            payload.chunks(fragment).collect()
        };
        for (i, piece) in pieces.iter().enumerate() {
            // A new masking key for every frame, as a client must choose (RFC 6455 §5.3).
            key = key.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let op = if i == 0 { opcode } else { OP_CONTINUATION };
            encode_masked(
                &mut bytes,
                i + 1 == pieces.len(),
                op,
                piece,
                key.to_be_bytes(),
            );
        }
    }
    Input {
        bytes: bytes.into(),
        messages: count,
        payload_bytes: size * count,
    }
}

/// A contender: decodes one whole input, returns the payload bytes of the messages it saw.
trait Decoder {
    fn decode_all(&mut self, input: &Input) -> usize;
}

/// The floor: the copy from the socket that every contender makes too.
struct Memcpy(Vec<u8>);

impl Decoder for Memcpy {
    fn decode_all(&mut self, input: &Input) -> usize {
        self.0.clear();
        self.0.extend_from_slice(&input.bytes);
        self.0.len()
    }
}

/// The server's read size (`READ_CHUNK` in wsloop's src/server.rs): what one read takes at most.
const READ: usize = 64 << 10;

/// wsloop as its server drives it: read into the buffer, at most `READ` bytes at a time; after each read, decode
/// every whole frame in place and assemble it, and unmask a frame still arriving as far as it came
/// (`Probe::decode_trusting`), while its bytes are in the cache.
struct Wsloop {
    read_buf: Vec<u8>,
    limits: Limits,
    assembler: Assembler,
    probe: Probe,
}

impl Decoder for Wsloop {
    fn decode_all(&mut self, input: &Input) -> usize {
        self.read_buf.clear();
        let (mut pos, mut seen) = (0, 0);
        for read in input.bytes.chunks(READ) {
            self.read_buf.extend_from_slice(read);
            seen += self.decode_from(&mut pos);
        }
        assert_eq!(pos, self.read_buf.len(), "a frame was left undecoded");
        seen
    }
}

impl Wsloop {
    /// Decodes and assembles every whole frame in the read buffer from `pos` on, moving `pos` past them; the
    /// payload bytes of the messages seen.
    fn decode_from(&mut self, pos: &mut usize) -> usize {
        let mut seen = 0;
        while *pos < self.read_buf.len() {
            let rest = &mut self.read_buf[*pos..];
            // SAFETY: as in the server, the read buffer is only added to behind, so the frame the probe has seen
            // part of is at the front of `rest`, its bytes as the probe left them.
            let decoded = unsafe {
                self.probe
                    .decode_trusting(rest, &self.limits, &self.assembler)
            };
            let (frame, used) = match decoded {
                Ok(Status::Complete(decoded)) => decoded,
                Ok(Status::Partial) => break,
                Err(e) => panic!("wsloop rejected a valid frame: {e}"),
            };
            *pos += used;
            match self.assembler.push(frame) {
                Ok(Some(Event::Message(msg))) => seen += black_box(msg.as_bytes()).len(),
                Ok(None) => continue,
                other => panic!("wsloop: unexpected {other:?}"),
            }
            self.assembler.release();
        }
        seen
    }
}

/// An endless in-memory stream that replays one input over and over; writes are discarded.
struct Replay {
    bytes: Rc<[u8]>,
    pos: usize,
}

impl Replay {
    fn take(&mut self, want: usize) -> &[u8] {
        if self.pos == self.bytes.len() {
            self.pos = 0;
        }
        let n = want.min(self.bytes.len() - self.pos);
        self.pos += n;
        &self.bytes[self.pos - n..self.pos]
    }
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let chunk = self.take(buf.len());
        buf[..chunk.len()].copy_from_slice(chunk);
        Ok(chunk.len())
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let chunk = self.get_mut().take(buf.remaining());
        buf.put_slice(chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn tungstenite_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// tungstenite's blocking `WebSocket` reading messages from the replayed input.
struct Tungstenite(TWebSocket<Replay>);

impl Decoder for Tungstenite {
    fn decode_all(&mut self, input: &Input) -> usize {
        let mut seen = 0;
        for _ in 0..input.messages {
            seen += match self.0.read() {
                Ok(TMessage::Text(text)) => black_box(text).len(),
                Ok(TMessage::Binary(bytes)) => black_box(bytes).len(),
                other => panic!("tungstenite: unexpected {other:?}"),
            };
        }
        seen
    }
}

/// fastwebsockets' `FragmentCollector` on a current-thread runtime, over the replayed input.
struct FastWebSockets {
    runtime: tokio::runtime::Runtime,
    ws: fastwebsockets::FragmentCollector<Replay>,
}

impl Decoder for FastWebSockets {
    fn decode_all(&mut self, input: &Input) -> usize {
        let ws = &mut self.ws;
        self.runtime.block_on(async {
            let mut seen = 0;
            for _ in 0..input.messages {
                let frame = ws
                    .read_frame()
                    .await
                    .expect("fastwebsockets rejected a valid frame");
                seen += black_box(frame.payload).len();
            }
            seen
        })
    }
}

fn contenders(input: &Input) -> Vec<(&'static str, Box<dyn Decoder>)> {
    let replay = || Replay {
        bytes: input.bytes.clone(),
        pos: 0,
    };
    let mut fast =
        fastwebsockets::WebSocket::after_handshake(replay(), fastwebsockets::Role::Server);
    fast.set_max_message_size(MAX_MESSAGE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    vec![
        (
            "memcpy",
            Box::new(Memcpy(Vec::with_capacity(input.bytes.len()))),
        ),
        (
            "wsloop",
            Box::new(Wsloop {
                read_buf: Vec::with_capacity(input.bytes.len()),
                limits: Limits {
                    max_payload: MAX_MESSAGE as u64,
                    require_mask: true,
                    deflate: false,
                },
                assembler: Assembler::new(MAX_MESSAGE),
                probe: Probe::default(),
            }),
        ),
        (
            "tungstenite",
            Box::new(Tungstenite(TWebSocket::from_raw_socket(
                replay(),
                TRole::Server,
                Some(tungstenite_config()),
            ))),
        ),
        (
            "fastwebsockets",
            Box::new(FastWebSockets {
                runtime,
                ws: fastwebsockets::FragmentCollector::new(fast),
            }),
        ),
    ]
}

fn bench_decode(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    input: &Input,
    throughput: Throughput,
) {
    group.throughput(throughput);
    for (name, mut decoder) in contenders(input) {
        // Every contender must see every byte of every message before it is timed.
        let seen = decoder.decode_all(input);
        if name != "memcpy" {
            assert_eq!(seen, input.payload_bytes, "{name} lost payload on {id}");
        }
        group.bench_function(BenchmarkId::new(name, id), |b| {
            b.iter(|| decoder.decode_all(black_box(input)))
        });
    }
}

fn decode(c: &mut Criterion) {
    for text in [false, true] {
        let mut group = c.benchmark_group(if text { "decode_text" } else { "decode_binary" });
        for size in SMALL {
            let input = client_frames(size, FRAMES_PER_BUFFER, usize::MAX, text);
            bench_decode(
                &mut group,
                &label(size),
                &input,
                Throughput::Elements(FRAMES_PER_BUFFER as u64),
            );
        }
        if text {
            // Plain ASCII text, as most chat and JSON traffic is: UTF-8 validation has a fast path for it.
            for size in [1 << 10, 1 << 20] {
                let ascii: Vec<u8> = b"wsloop says hello, world; "
                    .iter()
                    .copied()
                    .cycle()
                    .take(size)
                    .collect();
                let (count, throughput) = if size <= 1024 {
                    (
                        FRAMES_PER_BUFFER,
                        Throughput::Elements(FRAMES_PER_BUFFER as u64),
                    )
                } else {
                    (1, Throughput::Bytes(size as u64))
                };
                let input = frames_of(&ascii, count, usize::MAX, true);
                bench_decode(
                    &mut group,
                    &format!("{}_ascii", label(size)),
                    &input,
                    throughput,
                );
            }
        }
        for size in LARGE {
            if size >= 16 << 20 {
                group
                    .measurement_time(Duration::from_secs(3))
                    .sample_size(10);
            }
            let input = client_frames(size, 1, usize::MAX, text);
            bench_decode(
                &mut group,
                &label(size),
                &input,
                Throughput::Bytes(size as u64),
            );
        }
        group.finish();
    }

    let mut group = c.benchmark_group("decode_fragmented");
    for text in [false, true] {
        let input = client_frames(1 << 20, 1, 4 << 10, text);
        let id = format!("{}_1MiB_in_4KiB", if text { "text" } else { "binary" });
        bench_decode(&mut group, &id, &input, Throughput::Bytes(1 << 20));
    }
    group.finish();
}

/// Decode as the issue defines it (header parse, unmask, message assembly) on bytes that are already where the
/// socket left them, against a memcpy of the same bytes. Before each timed decode the masked input is copied into
/// wsloop's buffer untimed, which leaves it in cache as a kernel's copy would; memcpy is timed by the same loop, so
/// both pay the same clock reads. The peers cannot be measured this way: their read owns the copy.
fn decode_in_place(c: &mut Criterion) {
    for text in [false, true] {
        let mut group = c.benchmark_group(if text {
            "in_place_text"
        } else {
            "in_place_binary"
        });
        let mut inputs: Vec<(String, Input)> = LARGE
            .iter()
            .map(|&size| (label(size), client_frames(size, 1, usize::MAX, text)))
            .collect();
        if text {
            let ascii: Vec<u8> = b"wsloop says hello, world; "
                .iter()
                .copied()
                .cycle()
                .take(1 << 20)
                .collect();
            inputs.push(("1MiB_ascii".into(), frames_of(&ascii, 1, usize::MAX, true)));
        }
        for (id, input) in &inputs {
            if input.payload_bytes >= 16 << 20 {
                group
                    .measurement_time(Duration::from_secs(3))
                    .sample_size(10);
            }
            group.throughput(Throughput::Bytes(input.payload_bytes as u64));
            let mut copy = Vec::with_capacity(input.bytes.len());
            group.bench_function(BenchmarkId::new("memcpy", id), |b| {
                b.iter_custom(|iters| {
                    time_each(
                        iters,
                        &mut copy,
                        |copy| copy.clear(),
                        |copy| {
                            copy.extend_from_slice(black_box(&input.bytes));
                            black_box(copy.len());
                        },
                    )
                })
            });
            let mut wsloop = Wsloop {
                read_buf: input.bytes.to_vec(),
                limits: Limits {
                    max_payload: MAX_MESSAGE as u64,
                    require_mask: true,
                    deflate: false,
                },
                assembler: Assembler::new(MAX_MESSAGE),
                probe: Probe::default(),
            };
            group.bench_function(BenchmarkId::new("wsloop", id), |b| {
                b.iter_custom(|iters| {
                    time_each(
                        iters,
                        &mut wsloop,
                        |w| w.read_buf.copy_from_slice(&input.bytes),
                        |w| {
                            assert_eq!(w.decode_from(&mut 0), input.payload_bytes);
                        },
                    )
                })
            });
        }
        group.finish();
    }
}

/// `iters` rounds of an untimed `prepare` and a timed `work` on the same state; the total time of `work`.
fn time_each<S>(
    iters: u64,
    state: &mut S,
    prepare: impl Fn(&mut S),
    work: impl Fn(&mut S),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        prepare(state);
        let start = Instant::now();
        work(state);
        total += start.elapsed();
    }
    total
}

/// The model socket for encoding: copies what it is given into a reused buffer, as a kernel
/// copies a write into the socket buffer. Every contender of one size writes into the same
/// buffer, so none is favoured by where its memory happens to lie (for 16 MiB, whether it got
/// huge pages moved the results by 10%).
#[derive(Clone)]
struct CopySink(Rc<RefCell<Vec<u8>>>);

impl CopySink {
    fn new() -> CopySink {
        CopySink(Rc::new(RefCell::new(Vec::with_capacity(4 << 20))))
    }

    fn accept(&mut self, buf: &[u8]) -> usize {
        let mut out = self.0.borrow_mut();
        if out.len() + buf.len() > out.capacity() {
            out.clear();
        }
        out.extend_from_slice(buf);
        buf.len()
    }
}

impl Write for CopySink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.accept(buf))
    }
    /// Like the kernel's `writev`: every buffer copied, in order.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|buf| self.accept(buf)).sum())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for CopySink {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl AsyncWrite for CopySink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(self.get_mut().accept(buf)))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let sink = self.get_mut();
        Poll::Ready(Ok(bufs.iter().map(|buf| sink.accept(buf)).sum()))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for CopySink {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_binary");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for size in SMALL.into_iter().chain(LARGE) {
        if size >= 16 << 20 {
            group
                .measurement_time(Duration::from_secs(3))
                .sample_size(10);
        }
        let count = if size <= 1024 { FRAMES_PER_BUFFER } else { 1 };
        group.throughput(if count > 1 {
            Throughput::Elements(count as u64)
        } else {
            Throughput::Bytes(size as u64)
        });
        let payload = Bytes::from(sample_payload(size, false));
        let id = label(size);
        let sink = CopySink::new();

        let mut out = sink.clone();
        group.bench_function(BenchmarkId::new("memcpy", &id), |b| {
            b.iter(|| {
                for _ in 0..count {
                    out.accept(black_box(&payload));
                }
            })
        });

        let (mut out, mut buf) = (sink.clone(), Vec::with_capacity(size + 10));
        group.bench_function(BenchmarkId::new("wsloop", &id), |b| {
            b.iter(|| {
                for _ in 0..count {
                    // As the server does with a payload the application hands over (`Handle::send(id, vec)`):
                    // a large one goes out from where it is, its header beside it in one writev; a small one
                    // is copied behind its header into one buffer, which is then written.
                    let payload = black_box(&payload);
                    if payload.len() >= frame::WRITEV_MIN {
                        let head = Head::new(true, OpCode::Binary, payload.len());
                        let parts = [IoSlice::new(head.as_bytes()), IoSlice::new(payload)];
                        let written = out.write_vectored(&parts).expect("the sink takes all");
                        assert_eq!(written, head.as_bytes().len() + payload.len());
                    } else {
                        buf.clear();
                        frame::encode(&mut buf, true, OpCode::Binary, payload);
                        out.accept(&buf);
                    }
                }
            })
        });

        let mut ws =
            TWebSocket::from_raw_socket(sink.clone(), TRole::Server, Some(tungstenite_config()));
        group.bench_function(BenchmarkId::new("tungstenite", &id), |b| {
            b.iter(|| {
                for _ in 0..count {
                    ws.write(TMessage::Binary(black_box(&payload).clone()))
                        .expect("tungstenite write");
                }
                ws.flush().expect("tungstenite flush");
            })
        });

        let mut ws = fastwebsockets::WebSocket::after_handshake(sink, fastwebsockets::Role::Server);
        group.bench_function(BenchmarkId::new("fastwebsockets", &id), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    for _ in 0..count {
                        let payload = fastwebsockets::Payload::Borrowed(black_box(&payload));
                        let frame = fastwebsockets::Frame::new(
                            true,
                            fastwebsockets::OpCode::Binary,
                            None,
                            payload,
                        );
                        ws.write_frame(frame).await.expect("fastwebsockets write");
                    }
                })
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = decode, decode_in_place, encode }
criterion_main!(benches);
