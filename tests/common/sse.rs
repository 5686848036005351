//! The live event stream (`GET /v1/events`, Server-Sent Events) read over
//! a plain TCP connection with the ops token (tests/events.rs,
//! tests/cluster.rs).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::ADMIN_TOKEN;

/// Opens `GET /v1/events` (with `Last-Event-ID` when given) and returns
/// the stream after the response head, which must be 200 text/event-stream.
pub fn open_stream(admin_port: u16, last_event_id: Option<&str>) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", admin_port)).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let last = last_event_id
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{admin_port}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nAccept: text/event-stream\r\n{last}\r\n"
    )
    .expect("write");
    let mut r = BufReader::new(s);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("response head");
        if line.trim_end().is_empty() {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    assert!(head[0].starts_with("http/1.1 200"), "{head:?}");
    assert!(
        head.iter()
            .any(|h| h.starts_with("content-type: text/event-stream")),
        "{head:?}"
    );
    r
}

/// The next SSE event on `r` (chunked transfer framing lines skipped):
/// (id, event, data).
pub fn next_event(r: &mut BufReader<TcpStream>) -> (String, String, String) {
    let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("event stream line");
        assert!(n > 0, "the event stream ended");
        let line = line.trim_end();
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = v.trim().to_owned();
        } else if line.is_empty() && !data.is_empty() {
            return (id, kind, data);
        }
    }
}
