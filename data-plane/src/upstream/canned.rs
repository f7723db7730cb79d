//! Tests only: a canned HTTP server on loopback that answers one request
//! and hands back what it received, for the adapters' over-HTTP tests.
// A canned server per test.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Serves one canned HTTP response after `delay`; yields the base URL
/// (`http://127.0.0.1:PORT/v1/`) and, at the end, the request seen.
pub async fn serve_once(
    response: String,
    delay: Duration,
) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/v1/", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.expect("accept");
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&req).to_lowercase();
            if let Some(head) = text.find("\r\n\r\n") {
                let len = text
                    .split("content-length: ")
                    .nth(1)
                    .and_then(|s| s.split("\r\n").next())
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(0);
                if req.len() >= head + 4 + len {
                    break;
                }
            }
            let n = sock.read(&mut buf).await.expect("read");
            assert!(n > 0, "client closed early");
            req.extend_from_slice(&buf[..n]);
        }
        tokio::time::sleep(delay).await;
        let _ = sock.write_all(response.as_bytes()).await;
        String::from_utf8_lossy(&req).into_owned()
    });
    (base, task)
}

/// An HTTP/1.1 response with `extra` header lines (each ending in CRLF).
pub fn http_response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The JSON body of a request seen by `serve_once`.
pub fn body_of(seen: &str) -> Value {
    let body = seen.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).expect("a JSON body")
}
