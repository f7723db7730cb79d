//! The HTTP door against clients that misbehave, on raw sockets and with a
//! plain HTTP client: connections that say nothing, trickle a request head
//! (slowloris), idle after a request or come over the cap are closed;
//! broken framing is a 400, malformed bodies are 400s naming the parameter
//! as OpenAI's SDKs do; every refusal has OpenAI's error body; POSTs must
//! be JSON and browser pages of other origins are refused.
// Tests read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

struct Door {
    fake: FakeUpstream,
    _prefix: RedisPrefix,
    worker: ServerProc,
    addr: String,
}

/// A worker with the door on, pool "p" (one member, "m"), callers with the
/// deprecated token, a 4000-byte body limit, and `env` on top.
async fn door(env: &[(&str, &str)]) -> Door {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &fake.base_url(), None)
        .pool(
            "p",
            pb::Strategy::Priority,
            policy(0, 3, 1000),
            &[("up", "m", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let mut all = vec![
        ("SWITCHYARD_INFERENCE_TOKENS", CALLER_TOKEN),
        ("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0"),
        ("SWITCHYARD_HTTP_MAX_BODY_BYTES", "4000"),
    ];
    all.extend_from_slice(env);
    let worker = worker(&redis_url(), &prefix, &all).await;
    wait_revision(&worker, 1).await;
    let addr = http_addr(&worker).await;
    Door {
        fake,
        _prefix: prefix,
        worker,
        addr,
    }
}

/// Reads until the server closes the connection, at most `within`: true
/// when it did (EOF or reset), with what it sent.
async fn closed_within(s: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (false, got),
            Ok(Ok(0) | Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `request` raw, closes the sending side and reads the whole answer:
/// its status and its body as JSON (Null when it is not JSON).
async fn raw(addr: &str, request: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("send");
    s.shutdown().await.expect("half-close");
    let (_, got) = closed_within(&mut s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // A chunked body: the JSON sits between the size lines.
    let json = body
        .find('{')
        .and_then(|i| body.rfind('}').map(|j| &body[i..=j]))
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

fn head(extra: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: door\r\nAuthorization: Bearer {CALLER_TOKEN}\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

fn closed(metrics: &str, reason: &str) -> f64 {
    sample(
        metrics,
        "switchyard_http_connections_closed_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_silent_connection_and_a_slowloris_are_closed_by_the_header_timeout() {
    let d = door(&[("SWITCHYARD_HTTP_HEADER_TIMEOUT_MS", "300")]).await;
    // Connects and says nothing.
    let mut silent = TcpStream::connect(&d.addr).await.expect("connect");
    // Sends its request head a byte every 100 ms: it would take 6 s.
    let mut slow = TcpStream::connect(&d.addr).await.expect("connect");
    let request = head("Content-Length: 2\r\n");
    let mut cut = false;
    for byte in request.as_bytes() {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        let (gone, _) = closed_within(&mut slow, Duration::from_millis(100)).await;
        if gone {
            cut = true;
            break;
        }
    }
    assert!(cut, "a head trickled for 6 s is cut off");
    let (gone, _) = closed_within(&mut silent, Duration::from_secs(5)).await;
    assert!(gone, "a connection that sends nothing is closed");
    let m = scrape(&d.worker).await;
    assert!(closed(&m, "header_timeout") >= 2.0, "{m}");
    // Clients that send their request at once are served as before.
    let r = reqwest::get(format!("http://{}/healthz", d.addr))
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_idle_connection_and_a_stalled_body_are_cut_but_a_slow_answer_is_not() {
    let d = door(&[
        ("SWITCHYARD_HTTP_HEADER_TIMEOUT_MS", "30000"),
        ("SWITCHYARD_HTTP_IDLE_TIMEOUT_MS", "300"),
    ])
    .await;
    let mut s = TcpStream::connect(&d.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: door\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.expect("the answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Kept alive, then idle: closed after 300 ms, long before the header timeout.
    let (gone, _) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(gone, "an idle keep-alive connection is closed");
    assert!(closed(&scrape(&d.worker).await, "idle") >= 1.0);
    // A body that never finishes arriving: 408 once the idle time is up.
    let mut s = TcpStream::connect(&d.addr).await.expect("connect");
    s.write_all(format!("{}{{\"model\"", head("Content-Length: 100\r\n")).as_bytes())
        .await
        .expect("send");
    let (gone, got) = closed_within(&mut s, Duration::from_secs(5)).await;
    let answer = String::from_utf8_lossy(&got);
    assert!(gone && answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    // A request in flight is not idle: an upstream 1.5 s slow still answers.
    d.fake
        .set_fault("m", Fault::DelayFirstByte(Duration::from_millis(1500)));
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", d.addr))
        .bearer_auth(CALLER_TOKEN)
        .json(&json!({"model": "p", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_served_again_once_others_close() {
    let d = door(&[
        ("SWITCHYARD_HTTP_MAX_CONNECTIONS", "2"),
        ("SWITCHYARD_HTTP_HEADER_TIMEOUT_MS", "30000"),
        ("SWITCHYARD_HTTP_IDLE_TIMEOUT_MS", "30000"),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&d.addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: door\r\n\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("served");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(&d.addr).await.expect("connect");
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: door\r\n\r\n")
        .await;
    let (gone, got) = closed_within(&mut third, Duration::from_secs(5)).await;
    assert!(
        gone && got.is_empty(),
        "a third connection is closed unserved"
    );
    let m = scrape(&d.worker).await;
    assert!(closed(&m, "limit") >= 1.0, "{m}");
    assert_eq!(
        sample(&m, "switchyard_http_connections_open", &[]),
        Some(2.0)
    );
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        let r = reqwest::Client::new()
            .get(format!("http://{}/healthz", d.addr))
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "served again once the held connections closed");
}

#[tokio::test]
async fn framing_errors_are_400_and_refusals_carry_openai_error_bodies() {
    let d = door(&[]).await;
    let body = r#"{"model": "p", "messages": [{"role": "user", "content": "hi"}]}"#;
    let half = &body[..20];
    let cases = [
        (
            "a chunked body cut halfway",
            format!(
                "{}{:x}\r\n{half}",
                head("Transfer-Encoding: chunked\r\n"),
                body.len()
            ),
        ),
        (
            "a Content-Length longer than the body",
            format!("{}{half}", head("Content-Length: 200\r\n")),
        ),
        (
            "a bad chunk-size line",
            format!(
                "{}zz\r\n{body}\r\n0\r\n\r\n",
                head("Transfer-Encoding: chunked\r\n")
            ),
        ),
    ];
    for (what, request) in cases {
        let (status, e) = raw(&d.addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{what}: {e}");
    }
    // Really too large (chunked, no Content-Length to judge by): still 413.
    let big = "x".repeat(5000);
    let request = format!(
        "{}{:x}\r\n{big}\r\n0\r\n\r\n",
        head("Transfer-Encoding: chunked\r\nConnection: close\r\n"),
        big.len()
    );
    let (status, e) = raw(&d.addr, request.as_bytes()).await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["error"]["code"], "request_too_large");

    // The HTTP stack's refusals: 405 and 415, OpenAI's shape.
    let c = reqwest::Client::new();
    let r = c
        .get(format!("http://{}/v1/chat/completions", d.addr))
        .bearer_auth(CALLER_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 405);
    let e: Value = r.json().await.expect("a JSON error body");
    assert_eq!(e["error"]["code"], "method_not_allowed", "{e}");
    assert!(e["error"]["message"].is_string() && e["error"].get("param").is_some());
    let r = c
        .post(format!("http://{}/v1/chat/completions", d.addr))
        .bearer_auth(CALLER_TOKEN)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 415);
    let e: Value = r.json().await.expect("a JSON error body");
    assert_eq!(e["error"]["code"], "unsupported_media_type", "{e}");
    assert_eq!(d.fake.total_calls(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_parameter_as_openai_does() {
    let d = door(&[]).await;
    let user = |content: Value| json!([{"role": "user", "content": content}]);
    let text = json!({"type": "text", "text": "look"});
    let image = |url: &str| json!({"type": "image_url", "image_url": {"url": url}});
    let cases = [
        (json!({"stream_options": "yes"}), "stream_options"),
        (
            json!({"stream": true, "stream_options": {"include_usage": "yes"}}),
            "stream_options.include_usage",
        ),
        (
            json!({"messages": user(json!([{"type": "text"}, image("https://x/a.png")]))}),
            "messages[0].content[0].text",
        ),
        (
            json!({"messages": user(json!([text, image("data:image/png;base64,not base64!")]))}),
            "messages[0].content[1].image_url.url",
        ),
        (
            json!({"messages": user(json!([text, image("data:;base64,iVBORw0KGgo=")]))}),
            "messages[0].content[1].image_url.url",
        ),
        (
            json!({"messages": user(json!([text, image("ftp://x/a.png")]))}),
            "messages[0].content[1].image_url.url",
        ),
        (
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "content": "42"}
            ]}),
            "messages[2].tool_call_id",
        ),
        (json!({"temperature": 3}), "temperature"),
        (json!({"top_p": 1.5}), "top_p"),
        (json!({"n": 0}), "n"),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": "not an object"}}}),
            "response_format.json_schema.schema",
        ),
    ];
    let c = reqwest::Client::new();
    for (fields, param) in cases {
        let mut body = json!({"model": "p", "messages": user(json!("hi"))});
        for (k, v) in fields.as_object().expect("fields") {
            body[k] = v.clone();
        }
        let r = c
            .post(format!("http://{}/v1/chat/completions", d.addr))
            .bearer_auth(CALLER_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("answer");
        assert_eq!(r.status(), 400, "{param}");
        let e: Value = r.json().await.expect("json");
        assert_eq!(e["error"]["param"], param, "{e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(param), "{e}");
        for internal in ["parts[", "schema_json", ".image."] {
            assert!(!message.contains(internal), "{e}");
        }
    }
    assert_eq!(
        d.fake.total_calls(),
        0,
        "no malformed body reached the upstream"
    );
}

#[tokio::test]
async fn posts_must_be_json_and_other_origins_are_refused() {
    let d = door(&[("SWITCHYARD_HTTP_CORS_ORIGIN", "https://app.example.com")]).await;
    let c = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", d.addr);
    let body = r#"{"model": "p", "messages": [{"role": "user", "content": "hi"}]}"#;
    let post = |content_type: &str, origin: Option<&str>| {
        let mut req = c
            .post(&url)
            .bearer_auth(CALLER_TOKEN)
            .header("content-type", content_type)
            .body(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    // A form-like text/plain POST, as a web page may send without preflight.
    let r = post("text/plain", None).await.expect("answer");
    assert_eq!(r.status(), 415);
    assert_eq!(d.fake.total_calls(), 0);
    let r = post("application/json; charset=utf-8", None)
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    // A page of another origin: 403, even with a JSON body.
    let r = post("application/json", Some("https://evil.example"))
        .await
        .expect("answer");
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "origin_not_allowed", "{e}");
    assert_eq!(
        d.fake.total_calls(),
        1,
        "only the same-origin call was served"
    );
    // Its preflight is refused too; the allowed origin's is answered.
    let preflight = |origin: &str| {
        c.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let r = preflight("https://evil.example").await.expect("answer");
    assert_eq!(r.status(), 403);
    let r = preflight("https://app.example.com").await.expect("answer");
    assert!(r.status().is_success(), "{}", r.status());
    let allow = |r: &reqwest::Response, h: &str| {
        r.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    assert_eq!(
        allow(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(allow(&r, "access-control-allow-methods").contains("post"));
    assert!(allow(&r, "access-control-allow-headers").contains("authorization"));
    // The allowed origin's request is served, with CORS headers.
    let r = post("application/json", Some("https://app.example.com"))
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(
        allow(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );
}
