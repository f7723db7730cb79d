//! A tiny raw HTTP/1.1 client for the fake upstream.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_testkit::FakeUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// De-chunked body.
    pub body: String,
    /// Whether the chunked body ended with its terminating zero-size chunk.
    pub complete: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("body is JSON")
    }
}

pub fn request(up: &FakeUpstream, path: &str, extra_headers: &str, body: &Value) -> String {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{extra_headers}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        up.addr(),
        body.len()
    )
}

/// Sends one request and reads until the server closes the connection.
pub async fn send(up: &FakeUpstream, path: &str, extra_headers: &str, body: Value) -> Reply {
    let mut sock = TcpStream::connect(up.addr()).await.expect("connect");
    let req = request(up, path, extra_headers, &body);
    sock.write_all(req.as_bytes()).await.expect("write request");
    let mut raw = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("server closes the connection in time");
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("response head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .expect("status line")
        .split(' ')
        .nth(1)
        .expect("code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut reply = Reply {
        status: status.parse().expect("numeric status"),
        headers,
        body: String::new(),
        complete: true,
    };
    if reply.header("transfer-encoding") == Some("chunked") {
        let (body, complete) = dechunk(rest);
        reply.body = body;
        reply.complete = complete;
    } else {
        reply.body = rest.to_owned();
    }
    reply
}

pub fn dechunk(mut rest: &str) -> (String, bool) {
    let mut body = String::new();
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return (body, false);
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return (body, false);
        };
        if size == 0 {
            return (body, true);
        }
        if after.len() < size {
            body.push_str(after);
            return (body, false);
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or("");
    }
}

pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens a stream and reads until `needle` arrives, then returns the socket.
pub async fn open_stream(up: &FakeUpstream, model: &str, needle: &str) -> TcpStream {
    let mut sock = TcpStream::connect(up.addr()).await.expect("connect");
    let req = request(
        up,
        "/v1/chat/completions",
        "",
        &json!({"model": model, "stream": true}),
    );
    sock.write_all(req.as_bytes()).await.expect("write request");
    let mut seen = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = sock.read(&mut buf).await.expect("read");
            assert!(n > 0, "stream closed early");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("first chunk in time");
    sock
}
