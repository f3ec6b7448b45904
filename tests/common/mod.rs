//! Shared by the integration tests: a server on `127.0.0.1:0` in a thread, and raw-socket and tungstenite clients.
//!
//! Every client socket has read and write timeouts, so a bug fails a test instead of hanging it.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wsloop::frame::{self, Limits, OpCode};
use wsloop::{Config, ConnId, Handle, Handler, Message, Remote, Server, Status};

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
