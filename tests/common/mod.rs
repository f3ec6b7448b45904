//! Shared by the integration tests: a server (one loop or several) on `127.0.0.1:0` in a thread, a small
//! command-driven application ([`Rooms`]) that exposes the `Handle` to a client, and raw-socket and tungstenite
//! clients.
//!
//! Every client socket has read and write timeouts, so a bug fails a test instead of hanging it.
#![allow(dead_code)]

pub mod deflate;
pub mod process;
pub mod tls;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wsloop::frame::{self, Limits, OpCode};
use wsloop::{
    Closed, Config, ConnId, Context, Handle, Handler, Loops, Message, Remote, Server, Status,
};

/// How long a client waits for any one reply before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server running in a thread; stopped and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Remote,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Stops the server and waits for `run` to return.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.stop();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the server thread must not panic");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.stop_and_join();
        } else {
            self.stop.stop();
        }
    }
}

/// Starts `handler` with `config` on an ephemeral loopback port.
pub fn start<H: Handler + Send + 'static>(config: Config, handler: H) -> TestServer {
    let _ = env_logger::builder().is_test(true).try_init();
    let server = Server::bind("127.0.0.1:0", config).expect("bind 127.0.0.1:0");
    let addr = server.local_addr().expect("local_addr");
    let stop = server.remote();
    let thread = thread::spawn(move || server.run(handler).expect("the loop must not fail"));
    TestServer {
        addr,
        stop,
        thread: Some(thread),
    }
}

/// The echo application of `examples/echo.rs`.
pub struct Echo;

impl Handler for Echo {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        ws.send(id, msg);
    }
}

/// An echo server with the default config.
pub fn echo() -> TestServer {
    start(Config::default(), Echo)
}

/// A raw TCP connection with timeouts.
pub fn connect_raw(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A valid handshake request for `addr`.
pub fn request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads an HTTP response head and body (by `Content-Length`, if any): (status, head, body).
pub fn read_response(stream: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => panic!(
                "response head cut short after {:?}: {other:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    let head = String::from_utf8(buf).expect("ASCII head");
    let status = head[9..12].parse().expect("a status code");
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    (status, head, String::from_utf8(body).expect("UTF-8 body"))
}

/// A raw connection that has completed its handshake.
pub fn handshaken(addr: SocketAddr) -> TcpStream {
    let mut stream = connect_raw(addr);
    stream.write_all(request(addr).as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101, "{head}");
    stream
}

/// Encodes a masked client frame.
pub fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_masked(&mut out, fin, opcode, payload, [0x37, 0xfa, 0x21, 0x3d]);
    out
}

/// Reads one server frame: (fin, opcode, payload). Server frames must not be masked (RFC 6455 §5.1).
pub fn read_frame(stream: &mut TcpStream) -> io::Result<(bool, OpCode, Vec<u8>)> {
    let server = Limits {
        max_payload: 1 << 40,
        require_mask: false,
        deflate: false,
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1];
    loop {
        if let Ok(Status::Complete(header)) = frame::decode_header(&buf, &server) {
            assert_eq!(header.masking_key, None, "server frames must not be masked");
            let mut payload = vec![0u8; header.payload_len as usize];
            stream.read_exact(&mut payload)?;
            return Ok((header.fin, header.opcode, payload));
        }
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => buf.push(chunk[0]),
        }
    }
}

/// Reads frames until a close frame arrives; returns its code (None for an empty close payload).
pub fn read_close(stream: &mut TcpStream) -> Option<u16> {
    loop {
        let (_, opcode, payload) = read_frame(stream).expect("a close frame");
        if opcode == OpCode::Close {
            return payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        }
    }
}

/// After a close, the server closes TCP: the next read sees EOF (or a reset), never more data or a timeout.
pub fn assert_closed(stream: &mut TcpStream) {
    let mut rest = [0u8; 64];
    match stream.read(&mut rest) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close TCP, got {other:?}"),
    }
}

/// A tungstenite client, handshaked.
pub fn client(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let stream = connect_raw(addr);
    let (ws, response) =
        tungstenite::client(format!("ws://{addr}/"), stream).expect("tungstenite handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Polls `check` until it is true or `TIMEOUT` passes.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts that a new client can still complete a handshake and echo.
pub fn still_serves(addr: SocketAddr) {
    let mut ws = client(addr);
    ws.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("still here"));
}

/// A tungstenite client over a plain TCP stream.
pub type Client = tungstenite::WebSocket<TcpStream>;

impl TestServer {
    /// A handle that reaches the running server from any thread.
    pub fn remote(&self) -> Remote {
        self.stop.clone()
    }
}

/// Starts `threads` loops (`wsloop::Loops`) on an ephemeral loopback port, each with the handler `make(loop_index)`
/// builds; `run` (loop 0 included) goes on a thread of its own.
pub fn start_loops<H, F>(config: Config, threads: usize, make: F) -> TestServer
where
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let _ = env_logger::builder().is_test(true).try_init();
    let loops = Loops::bind("127.0.0.1:0", config, threads).expect("bind 127.0.0.1:0");
    assert_eq!(loops.len(), threads);
    let addr = loops.local_addr().expect("local_addr");
    let stop = loops.remote();
    let thread = thread::spawn(move || loops.run(make).expect("no loop may fail"));
    TestServer {
        addr,
        stop,
        thread: Some(thread),
    }
}

/// The next text message, skipping pings and pongs; anything else fails the test.
pub fn text(ws: &mut Client) -> String {
    for _ in 0..100 {
        match ws.read().expect("a text message") {
            tungstenite::Message::Text(text) => return text.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
    panic!("only pings and pongs");
}

/// Sends one text message.
pub fn say(ws: &mut Client, text: &str) {
    ws.send(tungstenite::Message::text(text))
        .expect("send a text message");
}

/// Sends `text` and returns the next text message: the answer to a [`Rooms`] command.
pub fn ask(ws: &mut Client, text: &str) -> String {
    say(ws, text);
    self::text(ws)
}

/// Proves that nothing is waiting for `ws`: an echoed marker must be the very next message. (Whatever the server
/// had queued for this client before it read the marker would arrive first.)
pub fn nothing_pending(ws: &mut Client, marker: &str) {
    let echo = format!("echo:{marker}");
    assert_eq!(
        ask(ws, &echo),
        echo,
        "something else was waiting for this client"
    );
}

/// What [`Rooms`] reports to the test through its channel.
#[derive(Debug)]
pub enum Event {
    /// `add` ran for this connection.
    Added(ConnId),
    /// `close` ran for this connection, with this code; `subscribers` is, for each watched topic, how many
    /// connections of the loop held it at that moment.
    Closed {
        id: ConnId,
        code: u16,
        subscribers: Vec<(String, usize)>,
    },
}

/// A test application driven by text commands, so that a test over real sockets can call each part of the `Handle`
/// and see the result:
///
/// - on `add`, the newcomer gets `hello:ID:LOOP:COUNT` (its id, its loop, `count()` then);
/// - `sub:T` / `unsub:T` answer `sub:T:RESULT:N` / `unsub:T:RESULT:N` (what the call returned, then
///   `subscribers(T)`); `count:T` answers `count:T:N`; `users` answers `users:COUNT`;
/// - `pub:T:...` publishes the whole text to `T` (borrowed); `own:T:...` publishes it as an owned `String`;
///   `all:...` broadcasts it;
/// - anything else (such as `echo:MARKER`) comes back to its sender.
#[derive(Default)]
pub struct Rooms {
    events: Option<mpsc::Sender<Event>>,
    watched: Vec<String>,
}

impl Rooms {
    /// Rooms that report `add` and `close` through `events`, with the subscriber count of each `watched` topic.
    pub fn reporting(events: mpsc::Sender<Event>, watched: &[&str]) -> Rooms {
        Rooms {
            events: Some(events),
            watched: watched.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn report(&self, event: Event) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }
}

impl Handler for Rooms {
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, _: &Context<'_>) {
        let hello = format!("hello:{}:{}:{}", id.get(), id.loop_index(), ws.count());
        ws.send(id, hello);
        self.report(Event::Added(id));
    }

    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return ws.send(id, msg);
        };
        let (command, rest) = text.split_once(':').unwrap_or((text, ""));
        let topic = rest.split(':').next().unwrap_or_default();
        match command {
            "sub" => {
                let ok = ws.subscribe(id, topic);
                let reply = format!("sub:{topic}:{ok}:{}", ws.subscribers(topic));
                ws.send(id, reply);
            }
            "unsub" => {
                let ok = ws.unsubscribe(id, topic);
                let reply = format!("unsub:{topic}:{ok}:{}", ws.subscribers(topic));
                ws.send(id, reply);
            }
            "count" => {
                let reply = format!("count:{topic}:{}", ws.subscribers(topic));
                ws.send(id, reply);
            }
            "users" => {
                let reply = format!("users:{}", ws.count());
                ws.send(id, reply);
            }
            "pub" | "own" | "all" => {
                let taken = match command {
                    "pub" => ws.publish(topic, text),
                    "own" => ws.publish(topic, text.to_string()),
                    _ => ws.broadcast(text),
                };
                // Only a node joined to others through Redis refuses; a test seeing this fails on it.
                if !taken {
                    ws.send(id, format!("refused:{text}"));
                }
            }
            _ => ws.send(id, text),
        }
    }

    fn close(&mut self, ws: &mut Handle<'_>, id: ConnId, closed: Closed<'_>) {
        let code = closed.status();
        let subscribers = self
            .watched
            .iter()
            .map(|topic| (topic.clone(), ws.subscribers(topic)))
            .collect();
        self.report(Event::Closed {
            id,
            code,
            subscribers,
        });
    }
}

/// A [`Rooms`] client's greeting: (id number, loop index, `count()` when it joined).
pub fn hello(ws: &mut Client) -> (u64, usize, usize) {
    let hello = text(ws);
    let fields: Vec<&str> = hello.split(':').collect();
    match fields[..] {
        ["hello", id, loop_index, count] => (
            id.parse().unwrap(),
            loop_index.parse().unwrap(),
            count.parse().unwrap(),
        ),
        _ => panic!("expected hello:ID:LOOP:COUNT, got {hello:?}"),
    }
}

/// Connects to a [`Rooms`] server that reports to `events`; returns the client with the `ConnId` its `add` saw.
pub fn join(addr: SocketAddr, events: &mpsc::Receiver<Event>) -> (Client, ConnId) {
    let mut ws = client(addr);
    let (number, loop_index, _) = hello(&mut ws);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Added(id)) if id.get() == number => {
                assert_eq!(id.loop_index(), loop_index);
                return (ws, id);
            }
            Ok(_) => continue,
            Err(e) => panic!("no add for connection {number}: {e}"),
        }
    }
}

/// The next `close` report, skipping `add`s.
pub fn next_close(events: &mpsc::Receiver<Event>) -> (ConnId, u16, Vec<(String, usize)>) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Closed {
                id,
                code,
                subscribers,
            }) => return (id, code, subscribers),
            Ok(Event::Added(_)) => continue,
            Err(e) => panic!("no close report: {e}"),
        }
    }
}

/// Ends a tungstenite client with a closing handshake and waits (bounded) until the server has closed TCP.
pub fn close_and_wait(mut ws: Client) {
    ws.close(None).expect("send a close frame");
    for _ in 0..1000 {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return,
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("unexpected error while closing: {e}"),
        }
    }
    panic!("the connection did not end");
}

/// Connects clients until every one of `loops` loops has `per_loop` of them (extra ones are dropped). Bounded: the
/// kernel spreads connections over the loops' listeners by a hash, so a few dozen attempts are plenty.
pub fn on_every_loop(
    server: &TestServer,
    reports: &mpsc::Receiver<Event>,
    loops: usize,
    per_loop: usize,
) -> Vec<Vec<(Client, ConnId)>> {
    let mut by_loop: Vec<Vec<(Client, ConnId)>> = (0..loops).map(|_| Vec::new()).collect();
    for _ in 0..500 {
        if by_loop.iter().all(|clients| clients.len() >= per_loop) {
            return by_loop;
        }
        let (ws, id) = join(server.addr, reports);
        let clients = &mut by_loop[id.loop_index()];
        if clients.len() < per_loop {
            clients.push((ws, id));
        }
    }
    let counts: Vec<usize> = by_loop.iter().map(Vec::len).collect();
    panic!("500 connections did not reach every loop: {counts:?}");
}

/// The `close` report of connection `id`, skipping every other report (such as the closes of clients that
/// [`on_every_loop`] did not keep).
pub fn close_of(events: &mpsc::Receiver<Event>, id: ConnId) -> (u16, Vec<(String, usize)>) {
    for _ in 0..10_000 {
        let (closed, code, subscribers) = next_close(events);
        if closed == id {
            return (code, subscribers);
        }
    }
    panic!("no close report for {id}");
}
