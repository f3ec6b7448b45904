//! The opening handshake over raw sockets: dribbled requests, pipelined frames, and one test per refusal.

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::{
    connect_raw, echo, masked, read_frame, read_response, request, start, still_serves, Echo,
};
use wsloop::frame::OpCode;
use wsloop::handshake::{HttpResponse, Request};
use wsloop::{Config, Handler};

#[test]
fn rfc_sample_key_gets_the_rfc_accept_value() {
    let server = echo();
    let mut stream = connect_raw(server.addr);
    stream.write_all(request(server.addr).as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101);
    assert!(
        head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
}

#[test]
fn a_request_dribbled_one_byte_at_a_time_is_reassembled() {
    let server = echo();
    let mut stream = connect_raw(server.addr);
    let mut bytes = request(server.addr).into_bytes();
    bytes.extend(masked(true, OpCode::Text, b"after the dribble"));
    for byte in bytes {
        stream.write_all(&[byte]).unwrap();
        thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(read_response(&mut stream).0, 101);
    assert_eq!(read_frame(&mut stream).unwrap().2, b"after the dribble");
}

#[test]
fn request_and_first_frames_in_one_write_are_all_handled() {
    let server = echo();
    let mut stream = connect_raw(server.addr);
    let mut bytes = request(server.addr).into_bytes();
    for i in 0..3 {
        bytes.extend(masked(true, OpCode::Text, format!("frame {i}").as_bytes()));
    }
    stream.write_all(&bytes).unwrap();
    assert_eq!(read_response(&mut stream).0, 101);
    for i in 0..3 {
        assert_eq!(
            read_frame(&mut stream).unwrap().2,
            format!("frame {i}").as_bytes()
        );
    }
}

#[test]
fn extensions_offered_are_declined() {
    let server = echo();
    let mut stream = connect_raw(server.addr);
    let req = request(server.addr).replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    stream.write_all(req.as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut stream);
    assert_eq!(status, 101);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{head}"
    );
}

/// One row per check of RFC 6455 §4.2.1: the request, the status, and a word the one-line body must contain.
#[test]
fn each_bad_handshake_gets_its_status_and_the_server_still_serves() {
    let server = echo();
    let good = request(server.addr);
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let table: Vec<(&str, String, u16, &str)> = vec![
        ("POST", good.replacen("GET", "POST", 1), 400, "GET"),
        (
            "HTTP/1.0",
            good.replace("HTTP/1.1", "HTTP/1.0"),
            400,
            "HTTP/1.1",
        ),
        (
            "no Host",
            good.replace(&format!("Host: {}\r\n", server.addr), ""),
            400,
            "Host",
        ),
        (
            "two Host headers",
            good.replace("\r\n\r\n", "\r\nHost: elsewhere.example\r\n\r\n"),
            400,
            "Host",
        ),
        (
            "no Upgrade",
            good.replace("Upgrade: websocket\r\n", ""),
            400,
            "Upgrade",
        ),
        (
            "no Connection",
            good.replace("Connection: Upgrade\r\n", ""),
            400,
            "Connection",
        ),
        ("no key", good.replace(key, ""), 400, "Sec-WebSocket-Key"),
        (
            "short key",
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
            400,
            "16 bytes",
        ),
        (
            "no version",
            good.replace("Sec-WebSocket-Version: 13\r\n", ""),
            400,
            "Sec-WebSocket-Version",
        ),
        (
            "version 12",
            good.replace("Version: 13", "Version: 12"),
            426,
            "13",
        ),
        (
            "not HTTP",
            "\x16\x03\x01 hello\r\n\r\n".to_string(),
            400,
            "malformed",
        ),
        (
            "plain HTTP GET",
            format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr),
            426,
            "WebSocket",
        ),
        (
            "head over 8 KiB",
            good.replace(
                "\r\n\r\n",
                &format!("\r\nX-Pad: {}\r\n\r\n", "p".repeat(9000)),
            ),
            431,
            "8192",
        ),
    ];
    for (name, req, status, word) in table {
        let mut stream = connect_raw(server.addr);
        stream.write_all(req.as_bytes()).unwrap();
        let (got, head, body) = read_response(&mut stream);
        assert_eq!(got, status, "{name}: {head}{body}");
        assert!(
            body.contains(word) && body.contains("RFC"),
            "{name}: body {body:?}"
        );
        assert_eq!(body.lines().count(), 1, "{name}: one line");
        if status == 426 {
            assert!(head.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{head}");
            assert!(
                head.contains("\r\nConnection: Upgrade, close\r\n"),
                "{head}"
            );
        }
        common::assert_closed(&mut stream);
    }
    still_serves(server.addr);
}

#[test]
fn a_head_that_never_ends_is_refused_at_the_limit_not_buffered_forever() {
    let server = echo();
    let mut stream = connect_raw(server.addr);
    stream.write_all(b"GET / HTTP/1.1\r\nX-Endless: ").unwrap();
    // Keep sending without ever ending the header line: the server must answer 431 once 8 KiB are in.
    let chunk = [b'a'; 1024];
    for _ in 0..16 {
        if stream.write_all(&chunk).is_err() {
            break; // the server already answered and closed
        }
    }
    assert_eq!(read_response(&mut stream).0, 431);
    still_serves(server.addr);
}

struct Page;

impl Handler for Page {
    fn http(&mut self, req: &Request<'_>) -> Option<HttpResponse> {
        (req.target == "/").then(|| HttpResponse::new(200, "text/plain", "a page"))
    }
}

#[test]
fn plain_http_goes_to_the_user_handler() {
    let server = start(Config::default(), Page);
    let mut stream = connect_raw(server.addr);
    stream
        .write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    let (status, _, body) = read_response(&mut stream);
    assert_eq!((status, body.as_str()), (200, "a page"));
    common::assert_closed(&mut stream);
    let mut stream = connect_raw(server.addr);
    stream
        .write_all(format!("GET /other HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut stream).0, 426);
}

#[test]
fn max_users_refuses_the_next_handshake_with_503() {
    let server = start(Config::default().max_users(2), Echo);
    let _a = common::handshaken(server.addr);
    let b = common::handshaken(server.addr);
    let mut c = connect_raw(server.addr);
    c.write_all(request(server.addr).as_bytes()).unwrap();
    let (status, head, body) = read_response(&mut c);
    assert_eq!(status, 503, "{head}{body}");
    drop(b);
    common::eventually("a slot to free up", || {
        let mut d = connect_raw(server.addr);
        d.write_all(request(server.addr).as_bytes()).unwrap();
        read_response(&mut d).0 == 101
    });
}
