//! wss://: real clients (tungstenite over a rustls client session) against the server with TLS, a certificate
//! made at test time. Every size class, fragments, ping and close; a request and frames arriving one byte at a
//! time; bytes that are not TLS, a plain HTTP request, a ClientHello that fails, a handshake that never ends, a
//! peer that leaves without `close_notify`; and after each, a new client is still served.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::process::{binary, Example};
use common::tls::{tls_over, tls_stream, wss_client, TestCert, TlsStream};
use common::{connect_raw, masked, request, start, start_loops, Echo, TIMEOUT};
use tungstenite::Message as TMessage;
use wsloop::frame::{self, Limits, OpCode};
use wsloop::{
    rustls, Closed, ClosedBy, Config, ConnId, Handle, Handler, Message, Status, Tls, TlsError,
};

/// An echo server with TLS, and the certificate its clients trust.
fn tls_echo(config: Config) -> (common::TestServer, TestCert) {
    let cert = TestCert::new();
    let server = start(config.tls(Some(cert.tls())), Echo);
    (server, cert)
}

/// A new client can still complete a TLS and a WebSocket handshake, and gets its message back.
fn still_serves_tls(addr: SocketAddr, cert: &TestCert) {
    let mut ws = wss_client(addr, &cert.client_config());
    ws.send(TMessage::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), TMessage::text("still here"));
}

#[test]
fn every_length_form_fragments_and_ping_round_trip_over_tls() {
    let (server, cert) = tls_echo(Config::default());
    let mut ws = wss_client(server.addr, &cert.client_config());
    // 0, the 7-bit maximum, the first 16-bit length, the 16-bit maximum, the first 64-bit length, a full TLS record
    // and one byte more, and 5 MiB (hundreds of records each way, more than the socket buffers hold).
    for len in [0usize, 125, 126, 65535, 65536, 16384, 16385, 5 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ws.send(TMessage::binary(payload.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            TMessage::binary(payload),
            "binary of {len} bytes"
        );
        let text = "é".repeat(len / 2);
        ws.send(TMessage::text(text.clone())).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            TMessage::text(text),
            "text of {len} bytes"
        );
    }
    // A fragmented text message, with a ping between its fragments.
    use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
    use tungstenite::protocol::frame::Frame;
    let part = |op, fin, text: &str| Frame::message(text.as_bytes().to_vec(), op, fin);
    ws.write(TMessage::Frame(part(
        TOpCode::Data(Data::Text),
        false,
        "frag",
    )))
    .unwrap();
    ws.write(TMessage::Ping(b"mid".to_vec().into())).unwrap();
    ws.write(TMessage::Frame(part(
        TOpCode::Data(Data::Continue),
        false,
        "men",
    )))
    .unwrap();
    ws.write(TMessage::Frame(part(
        TOpCode::Data(Data::Continue),
        true,
        "ted",
    )))
    .unwrap();
    ws.flush().unwrap();
    assert_eq!(ws.read().unwrap(), TMessage::Pong(b"mid".to_vec().into()));
    assert_eq!(ws.read().unwrap(), TMessage::text("fragmented"));
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "done".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(TMessage::Close(frame)) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the close did not complete cleanly: {e}"),
        }
    }
    // The server's TLS session ended with close_notify: the client's session says so, and the socket is at EOF.
    let stream = ws.get_mut();
    let mut rest = [0u8; 16];
    assert_eq!(stream.read(&mut rest).expect("a clean TLS end"), 0);
    still_serves_tls(server.addr, &cert);
}

#[test]
fn several_loops_serve_tls() {
    let cert = TestCert::new();
    let server = start_loops(Config::default().tls(Some(cert.tls())), 2, |_| Echo);
    let mut clients: Vec<_> = (0..6)
        .map(|_| wss_client(server.addr, &cert.client_config()))
        .collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(TMessage::text(format!("client {i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), TMessage::text(format!("client {i}")));
    }
}

/// A transport that hands the socket one byte per write, each its own TCP segment: every byte of the TLS
/// handshake and of every record reaches the server on its own.
struct OneByteAtATime(TcpStream);

impl Read for OneByteAtATime {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for OneByteAtATime {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match buf.first() {
            None => Ok(0),
            Some(&byte) => {
                self.0.write_all(&[byte])?;
                std::thread::sleep(Duration::from_micros(50));
                Ok(1)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Reads one server frame through a TLS stream.
fn read_frame<S: Read + Write>(stream: &mut TlsStream<S>) -> (OpCode, Vec<u8>) {
    let server = Limits {
        max_payload: 1 << 40,
        require_mask: false,
        deflate: false,
    };
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if let Ok(Status::Complete(header)) = frame::decode_header(&buf, &server) {
            let mut payload = vec![0u8; header.payload_len as usize];
            stream.read_exact(&mut payload).expect("the payload");
            return (header.opcode, payload);
        }
        stream.read_exact(&mut byte).expect("a frame header");
        buf.push(byte[0]);
    }
}

/// Reads an HTTP response head through a TLS stream; returns it.
fn read_head<S: Read + Write>(stream: &mut TlsStream<S>) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("an ASCII head")
}

#[test]
fn a_request_and_frames_arriving_one_byte_at_a_time_under_tls() {
    let (server, cert) = tls_echo(Config::default());
    let config = cert.client_config();

    // One TCP segment per byte of ciphertext: the ClientHello, the rest of the handshake, every record.
    let mut stream = tls_over(OneByteAtATime(connect_raw(server.addr)), &config);
    stream.write_all(request(server.addr).as_bytes()).unwrap();
    stream.flush().unwrap();
    assert!(read_head(&mut stream).starts_with("HTTP/1.1 101"));
    stream
        .write_all(&masked(true, OpCode::Text, b"one byte at a time"))
        .unwrap();
    assert_eq!(
        read_frame(&mut stream),
        (OpCode::Text, b"one byte at a time".to_vec())
    );

    // One TLS record per byte of plaintext: the request head and a frame, a byte in each record.
    let mut stream = tls_stream(server.addr, &config);
    let mut bytes = request(server.addr).into_bytes();
    bytes.extend(masked(true, OpCode::Binary, &[7; 300]));
    for byte in bytes {
        stream.write_all(&[byte]).unwrap();
        stream.flush().unwrap();
    }
    assert!(read_head(&mut stream).starts_with("HTTP/1.1 101"));
    assert_eq!(read_frame(&mut stream), (OpCode::Binary, vec![7; 300]));
    still_serves_tls(server.addr, &cert);
}

/// Reads what the server sends until it closes the connection (bounded by `TIMEOUT`).
fn read_to_close(mut stream: TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e} (read {got:?})"),
        }
    }
}

/// A TLS record with a fatal alert: content type 21, then a version, a length of 2, level 2 (fatal).
fn is_fatal_alert(bytes: &[u8]) -> bool {
    bytes.len() >= 7 && bytes[0] == 21 && bytes[3..5] == [0, 2] && bytes[5] == 2
}

#[test]
fn bytes_that_are_not_tls_get_an_alert_and_the_connection_closed() {
    let (server, cert) = tls_echo(Config::default());
    // A plain ws:// handshake on the wss:// port.
    let mut plain = connect_raw(server.addr);
    plain.write_all(request(server.addr).as_bytes()).unwrap();
    let answer = read_to_close(plain);
    assert!(is_fatal_alert(&answer), "not a TLS alert: {answer:?}");
    assert!(
        !answer.windows(4).any(|w| w == b"HTTP"),
        "an HTTP answer to a plain request"
    );
    // Garbage.
    let mut garbage = connect_raw(server.addr);
    garbage.write_all(&[0xde; 64]).unwrap();
    let answer = read_to_close(garbage);
    assert!(is_fatal_alert(&answer), "not a TLS alert: {answer:?}");
    // A record header announcing a record far larger than TLS allows.
    let mut huge = connect_raw(server.addr);
    huge.write_all(&[22, 3, 1, 0xff, 0xff]).unwrap();
    let answer = read_to_close(huge);
    assert!(is_fatal_alert(&answer), "not a TLS alert: {answer:?}");
    still_serves_tls(server.addr, &cert);
}

#[test]
fn a_client_hello_that_fails_gets_the_alert_that_says_why() {
    let (server, cert) = tls_echo(Config::default());
    // Only h2 offered through ALPN: the server speaks http/1.1 only, and says so (no_application_protocol).
    let h2_only = cert.client_config_with(|c| c.alpn_protocols = vec![b"h2".to_vec()]);
    let mut stream = tls_stream(server.addr, &h2_only);
    let error = stream
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .and_then(|_| stream.flush());
    let error = error.and_then(|_| stream.read(&mut [0u8; 16]).map(|_| ()));
    let error = error.expect_err("the handshake must fail");
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            inner,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::NoApplicationProtocol
            ))
        ),
        "{error:?}"
    );
    // A client that does not trust the certificate ends the handshake with its own alert.
    let stranger = TestCert::new();
    let mut stream = tls_stream(server.addr, &stranger.client_config());
    let error = stream.write_all(b"x").and_then(|_| stream.flush());
    assert!(error.is_err(), "a certificate of another key was accepted");
    still_serves_tls(server.addr, &cert);
}

#[test]
fn the_handshake_timeout_covers_the_tls_handshake() {
    let timeout = Duration::from_millis(300);
    let (server, cert) = tls_echo(Config::default().handshake_timeout(timeout));
    // Half a ClientHello (a record header announcing 512 bytes, then 10 of them), then nothing.
    let mut stalled = connect_raw(server.addr);
    stalled
        .write_all(&[22, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3, 0, 0, 0, 0])
        .unwrap();
    let started = Instant::now();
    let _ = read_to_close(stalled);
    let waited = started.elapsed();
    assert!(
        waited >= timeout - Duration::from_millis(50),
        "closed after {waited:?}"
    );
    assert!(waited < TIMEOUT, "never closed");
    // A TLS handshake that completed, then no HTTP request: the same timeout.
    let mut quiet = tls_stream(server.addr, &cert.client_config());
    while quiet.conn.is_handshaking() {
        quiet
            .conn
            .complete_io(&mut quiet.sock)
            .expect("the TLS handshake");
    }
    let mut buf = [0u8; 16];
    match quiet.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    still_serves_tls(server.addr, &cert);
}

/// Reports each connection's end.
struct Ends(mpsc::Sender<(ConnId, ClosedBy, u16)>);

impl Handler for Ends {
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        if msg.as_bytes() == b"close me" {
            ws.close(
                id,
                wsloop::CloseCode::application(4001).unwrap(),
                "as asked",
            );
        } else {
            ws.send(id, msg);
        }
    }

    fn close(&mut self, _ws: &mut Handle<'_>, id: ConnId, closed: Closed) {
        let _ = self.0.send((id, closed.by, closed.status()));
    }
}

/// A TLS server reporting every connection's end, with `config`; its certificate; and the ends as they come.
type EndsServer = (
    common::TestServer,
    TestCert,
    mpsc::Receiver<(ConnId, ClosedBy, u16)>,
);

fn ends_server(config: Config) -> EndsServer {
    let cert = TestCert::new();
    let (ends, ended) = mpsc::channel();
    let server = start(config.tls(Some(cert.tls())), Ends(ends));
    (server, cert, ended)
}

/// A wss:// client whose first message came back.
fn greeted(addr: SocketAddr, cert: &TestCert) -> common::tls::TlsClient {
    let mut ws = wss_client(addr, &cert.client_config());
    ws.send(TMessage::text("hi")).unwrap();
    assert_eq!(ws.read().unwrap(), TMessage::text("hi"));
    ws
}

#[test]
fn a_peer_that_leaves_without_close_notify_is_closed_and_a_server_close_ends_with_one() {
    let (server, cert, ended) = ends_server(Config::default());
    // The peer's FIN without close_notify or a close frame: 1006, dropped.
    let ws = greeted(server.addr, &cert);
    ws.get_ref()
        .sock
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let (_, by, status) = ended.recv_timeout(TIMEOUT).expect("the close callback");
    assert_eq!((by, status), (ClosedBy::Dropped, 1006));
    drop(ws);

    // The peer's close_notify alone (no close frame): the same, and the server answers with its own.
    let mut ws = wss_client(server.addr, &cert.client_config());
    ws.get_mut().conn.send_close_notify();
    ws.get_mut().flush().unwrap();
    let (_, by, status) = ended.recv_timeout(TIMEOUT).expect("the close callback");
    assert_eq!((by, status), (ClosedBy::Dropped, 1006));
    let mut rest = [0u8; 16];
    assert_eq!(ws.get_mut().read(&mut rest).expect("a clean TLS end"), 0);

    // The application closes: close frame, then close_notify, then the TCP FIN.
    let mut ws = wss_client(server.addr, &cert.client_config());
    ws.send(TMessage::text("close me")).unwrap();
    match ws.read().unwrap() {
        TMessage::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let (_, by, _) = ended.recv_timeout(TIMEOUT).expect("the close callback");
    assert_eq!(by, ClosedBy::Application);
    // The client's answering close frame goes out; the server's TLS session then ends with close_notify.
    let started = Instant::now();
    ws.flush().unwrap();
    let stream = ws.get_mut();
    assert_eq!(
        stream
            .read(&mut rest)
            .expect("close_notify, not a truncation"),
        0
    );
    assert!(
        started.elapsed() < Config::default().close_timeout,
        "the server waited for its close timeout: the answering close frame was not seen"
    );
    still_serves_tls(server.addr, &cert);
}

#[test]
fn a_slow_reader_over_tls_is_found_by_the_queue_limit() {
    let (server, cert, ended) = ends_server(Config::default().max_buffered(1 << 20));
    // The client sends and never reads: the echoes pile up in the server's queue, not in the TLS session.
    let mut ws = wss_client(server.addr, &cert.client_config());
    let chunk = vec![b'x'; 64 << 10];
    let text = String::from_utf8(chunk).unwrap();
    for _ in 0..200 {
        if ws.send(TMessage::text(text.clone())).is_err() {
            break;
        }
        if let Ok((_, by, status)) = ended.try_recv() {
            assert_eq!((by, status), (ClosedBy::SlowReader, 1008));
            return;
        }
    }
    let (_, by, status) = ended.recv_timeout(TIMEOUT).expect("the close callback");
    assert_eq!((by, status), (ClosedBy::SlowReader, 1008));
    drop(server);
}

#[test]
fn bad_certificate_and_key_files_say_which_and_why() {
    let cert = TestCert::new();
    let (cert_file, key_file) = cert.write_files("bad-files");
    let dir = cert_file.parent().unwrap().to_path_buf();
    assert!(Tls::from_pem_files(&cert_file, &key_file).is_ok());

    let missing = dir.join("missing.pem");
    let error = Tls::from_pem_files(&missing, &key_file).unwrap_err();
    assert!(matches!(error, TlsError::File { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.pem"), "{error}");

    // The key where the certificate should be, and the certificate where the key should be.
    let error = Tls::from_pem_files(&key_file, &key_file).unwrap_err();
    assert!(matches!(error, TlsError::Missing { .. }), "{error:?}");
    assert!(
        error.to_string().contains("key.pem: no CERTIFICATE"),
        "{error}"
    );
    let error = Tls::from_pem_files(&cert_file, &cert_file).unwrap_err();
    assert!(matches!(error, TlsError::Missing { .. }), "{error:?}");
    assert!(
        error.to_string().contains("cert.pem: no PRIVATE KEY"),
        "{error}"
    );

    // A key that is not the certificate's.
    let other = TestCert::new();
    let (_, other_key) = other.write_files("bad-files-other");
    let error = Tls::from_pem_files(&cert_file, &other_key).unwrap_err();
    assert!(matches!(error, TlsError::Rejected(_)), "{error:?}");

    // A PEM block cut short.
    let cut = dir.join("cut.pem");
    std::fs::write(&cut, &cert.cert_pem[..cert.cert_pem.len() / 2]).unwrap();
    let error = Tls::from_pem_files(&cut, &key_file).unwrap_err();
    assert!(error.to_string().contains("cut.pem"), "{error}");

    // The example says it in one line and exits with status 1.
    let output = std::process::Command::new(binary("echo"))
        .args(["--port", "0", "--tls-cert"])
        .arg(&missing)
        .arg("--tls-key")
        .arg(&key_file)
        .output()
        .expect("run the echo example");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

#[test]
fn the_chatroom_serves_its_page_over_https_and_its_room_over_wss() {
    let cert = TestCert::new();
    let (cert_file, key_file) = cert.write_files("chatroom");
    let (cert_arg, key_arg) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
    let chatroom = Example::start(
        "chatroom",
        &["--tls-cert", cert_arg, "--tls-key", key_arg],
        "chatroom on https://",
        "/ (Ctrl-C to stop)",
    );
    let mut page = tls_stream(chatroom.addr, &cert.client_config());
    page.write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", chatroom.addr).as_bytes())
        .unwrap();
    let head = read_head(&mut page);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );

    let mut ws = wss_client(chatroom.addr, &cert.client_config());
    let welcome = match ws.read().unwrap() {
        TMessage::Text(text) => text.to_string(),
        other => panic!("expected the welcome, got {other:?}"),
    };
    assert!(welcome.contains("\"welcome\""), "{welcome}");
}

/// How long the server takes to close `stream` (EOF or a reset), reading and dropping what it sends meanwhile.
fn time_to_close(mut stream: TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return started.elapsed(),
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

#[test]
fn a_fin_right_behind_a_client_hello_is_seen_at_once() {
    // The FIN comes with the ClientHello's bytes, and no new edge will announce it: the server must read on to it,
    // as a plain server does for half a request and a FIN, not wait for its handshake timeout.
    let timeout = Duration::from_secs(4);
    let (server, cert) = tls_echo(Config::default().handshake_timeout(timeout));
    let mut client = rustls::ClientConnection::new(
        cert.client_config(),
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    let mut stream = connect_raw(server.addr);
    stream.write_all(&hello).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let took = time_to_close(stream);
    assert!(took < timeout / 2, "closed only after {took:?}");
    still_serves_tls(server.addr, &cert);
}

#[test]
fn a_close_notify_in_the_same_read_as_a_message_is_seen() {
    let (server, cert, ended) = ends_server(Config::default());
    let mut ws = greeted(server.addr, &cert);
    // A frame and close_notify written together, and no FIN: the close_notify must not wait for one.
    let stream = ws.get_mut();
    stream
        .conn
        .writer()
        .write_all(&masked(true, OpCode::Text, b"again"))
        .unwrap();
    stream.conn.send_close_notify();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut stream.sock).unwrap();
    }
    let (_, by, status) = ended
        .recv_timeout(TIMEOUT)
        .expect("the close_notify that came behind a message was not noticed");
    assert_eq!((by, status), (ClosedBy::Dropped, 1006));
}

/// A client whose socket takes 4 KiB at a time sends `n` messages of 4000 bytes without reading, half-closes, and
/// then reads what comes back. Returns how many echoes it got.
fn echoes_after_a_half_close(addr: SocketAddr, cert: &TestCert, n: usize) -> usize {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let url = format!("wss://localhost:{}/", addr.port());
    let (mut ws, _) = tungstenite::client(url, tls_over(stream, &cert.client_config())).unwrap();
    let payload = vec![b'x'; 4000];
    for _ in 0..n {
        ws.send(TMessage::binary(payload.clone())).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    ws.get_ref()
        .sock
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    let mut got = 0;
    while let Ok(message) = ws.read() {
        got += usize::from(message.is_binary());
    }
    got
}

#[test]
fn a_peer_that_half_closes_still_gets_every_record_the_session_holds() {
    // When the peer's FIN arrives, what is left to write may sit in the TLS session (records the full socket did
    // not take) with the queue already empty: it must still go out, as queued frames do, before the close.
    let (server, cert) = tls_echo(Config::default().max_buffered(64 << 20));
    // Which count leaves the queue empty and records in the session when the FIN comes depends on the socket
    // buffers: a scan around what they hold (4 KiB for the client, the kernel's defaults for the server) finds it.
    let lost: Vec<(usize, usize)> = (680..=820)
        .step_by(2)
        .map(|n| (n, echoes_after_a_half_close(server.addr, &cert, n)))
        .filter(|&(n, got)| got != n)
        .collect();
    assert!(lost.is_empty(), "(sent, echoes received): {lost:?}");
}
