//! End-to-end tests over raw HTTP/1.1 on a TCP socket.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{TIMEOUT, eventually, open_stream, request, send, sse_data};
use serde_json::{Value, json};
use switchyard_testkit::{FakeConfig, FakeUpstream, Fault};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn openai_json_and_headers() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    assert!(up.base_url().starts_with("http://127.0.0.1:"));
    assert!(up.base_url().ends_with("/v1"));
    let body = json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi there"}]});
    let r = send(
        &up,
        "/v1/chat/completions",
        "Authorization: Bearer sk-1\r\n",
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["model"], "gpt-x");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "gpt-x says hello w1 w2"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(up.calls("gpt-x"), 1);
    assert_eq!(up.total_calls(), 1);
    let headers = up.last_headers("gpt-x").expect("headers recorded");
    assert_eq!(headers["authorization"], "Bearer sk-1");
    assert_eq!(up.in_flight(), 0);
    assert_eq!(up.cancelled(), 0);
}

#[tokio::test]
async fn openai_sse_with_usage() {
    let up = FakeUpstream::start(FakeConfig {
        chunks: 4,
        chunk_delay: Duration::from_millis(1),
    })
    .await;
    let body = json!({"model": "gpt-x", "stream": true, "stream_options": {"include_usage": true},
                      "messages": []});
    let r = send(&up, "/v1/chat/completions", "", body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.complete);
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "gpt-x says hello w1");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 4);
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    eventually("stream finished", || up.in_flight() == 0).await;
    assert_eq!(up.cancelled(), 0);
}

#[tokio::test]
async fn anthropic_json_and_sse() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let r = send(
        &up,
        "/v1/messages",
        "x-api-key: ak-1\r\nanthropic-version: 2023-06-01\r\n",
        json!({"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["content"][0]["text"], "claude-x says hello w1 w2");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(
        up.last_headers("claude-x").expect("headers")["x-api-key"],
        "ak-1"
    );

    let body = json!({"model": "claude-x", "max_tokens": 10, "stream": true, "messages": []});
    let r = send(&up, "/v1/messages", "", body).await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    let events: Vec<&str> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == "content_block_delta")
            .count(),
        5
    );
    let data: Vec<Value> = sse_data(&r.body)
        .iter()
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    let text: String = data
        .iter()
        .filter(|d| d["delta"]["type"] == "text_delta")
        .filter_map(|d| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "claude-x says hello w1 w2");
    let delta = data
        .iter()
        .find(|d| d["type"] == "message_delta")
        .expect("message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(up.calls("claude-x"), 2);
}

#[tokio::test]
async fn status_fault_with_retry_after_only_hits_its_model() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let fault = Fault::Status {
        code: 429,
        retry_after_secs: Some(7),
        body: None,
    };
    up.set_fault_times("bad", fault, 1);
    let body = json!({"model": "bad", "stream": true, "messages": []});
    let r = send(&up, "/v1/chat/completions", "", body.clone()).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    let healthy = json!({"model": "good", "messages": []});
    assert_eq!(
        send(&up, "/v1/chat/completions", "", healthy).await.status,
        200
    );
    // The counted fault is used up.
    assert_eq!(
        send(&up, "/v1/chat/completions", "", body).await.status,
        200
    );

    up.set_fault("bad", Fault::UnknownModel);
    let r = send(
        &up,
        "/v1/messages",
        "",
        json!({"model": "bad", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    assert_eq!(up.calls("bad"), 3);
    assert_eq!(up.total_calls(), 4);
}

#[tokio::test]
async fn drop_after_ends_stream_without_done() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    up.set_fault("m", Fault::DropAfter(2));
    let body = json!({"model": "m", "stream": true, "messages": []});
    let r = send(&up, "/v1/chat/completions", "", body).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "chunked body must not be terminated");
    let data = sse_data(&r.body);
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let contents = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .count();
    assert_eq!(contents, 2);

    let body = json!({"model": "m", "stream": true, "messages": []});
    let r = send(&up, "/v1/messages", "", body).await;
    assert!(!r.complete);
    assert!(!r.body.contains("message_stop"));
    assert_eq!(r.body.matches("event: content_block_delta").count(), 2);
    eventually("streams released", || up.in_flight() == 0).await;
    assert_eq!(
        up.cancelled(),
        0,
        "a server-side drop is not a client cancel"
    );
}

#[tokio::test]
async fn error_event_fault() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    up.set_fault("m", Fault::ErrorEvent);
    let body = json!({"model": "m", "stream": true, "messages": []});
    let r = send(&up, "/v1/messages", "", body.clone()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("event: error\ndata: "));
    let data: Value = serde_json::from_str(&sse_data(&r.body)[0]).expect("error JSON");
    assert_eq!(data["error"]["type"], "overloaded_error");
    let r = send(&up, "/v1/chat/completions", "", body).await;
    let data: Value = serde_json::from_str(&sse_data(&r.body)[0]).expect("error JSON");
    assert_eq!(data["error"]["message"], "overloaded");
}

#[tokio::test]
async fn client_hangup_mid_stream_counts_as_cancelled() {
    let up = FakeUpstream::start(FakeConfig {
        chunks: 50,
        chunk_delay: Duration::from_millis(20),
    })
    .await;
    let sock = open_stream(&up, "slow", r#""content":"slow""#).await;
    assert_eq!(up.in_flight(), 1);
    drop(sock);
    eventually("cancel counted", || up.cancelled() == 1).await;
    assert_eq!(up.in_flight(), 0);

    // A stalled stream ends when its client leaves, too.
    up.set_fault("stuck", Fault::StallAfter(1));
    let sock = open_stream(&up, "stuck", "stuck").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(up.in_flight(), 1);
    drop(sock);
    eventually("stall cancel counted", || up.cancelled() == 2).await;
    assert_eq!(up.in_flight(), 0);
}

#[tokio::test]
async fn shutdown_ends_stalled_streams() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    up.set_fault("stuck", Fault::StallAfter(0));
    let _sock = open_stream(&up, "stuck", "\"role\"").await;
    tokio::time::timeout(TIMEOUT, up.shutdown())
        .await
        .expect("shutdown completes despite a stalled stream");
}

#[tokio::test]
async fn unary_faults() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    up.set_fault_times("m", Fault::DelayFirstByte(Duration::from_millis(150)), 1);
    let started = tokio::time::Instant::now();
    let r = send(&up, "/v1/chat/completions", "", json!({"model": "m"})).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));

    up.set_fault("m", Fault::DropAfter(1));
    let r = send(&up, "/v1/messages", "", json!({"model": "m"})).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "unary drop leaves the body unterminated");
    assert!(
        serde_json::from_str::<Value>(&r.body).is_err(),
        "half a JSON body"
    );

    // A client giving up on a request that never gets headers counts as cancelled.
    up.set_fault("m", Fault::StallAfter(0));
    let mut sock = TcpStream::connect(up.addr()).await.expect("connect");
    let req = request(&up, "/v1/messages", "", &json!({"model": "m"}));
    sock.write_all(req.as_bytes()).await.expect("write request");
    eventually("request arrives", || up.in_flight() == 1).await;
    drop(sock);
    eventually("cancel counted", || up.cancelled() == 1).await;
    assert_eq!(up.in_flight(), 0);

    let r = send(&up, "/v1/chat/completions", "", json!({"messages": []})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(up.total_calls(), 4);
    assert_eq!(up.calls("m"), 3);
}

#[tokio::test]
async fn latency_profile_slows_past_its_knee_and_stats_count_peaks() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    up.set_fault(
        "knee",
        Fault::Latency {
            ttft: Duration::from_millis(10),
            knee: 2,
            slow: Duration::from_millis(400),
        },
    );
    let body = json!({"model": "knee", "messages": [{"role": "user", "content": "hi"}]});
    // One at a time: always under the knee, fast.
    let t = std::time::Instant::now();
    assert_eq!(
        send(&up, "/v1/chat/completions", "", body.clone())
            .await
            .status,
        200
    );
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // Four at once: the third and fourth are past the knee and slow.
    let t = std::time::Instant::now();
    let sends = (0..4).map(|_| send(&up, "/v1/chat/completions", "", body.clone()));
    let answers = futures::future::join_all(sends).await;
    assert!(answers.iter().all(|r| r.status == 200));
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(up.max_in_flight("knee"), 4);
    // The stats the bench reads.
    let (_, stats) = raw(&up, "GET").await;
    let stats: Value = serde_json::from_str(&stats).expect("JSON");
    assert_eq!(stats["knee"]["calls"], 5);
    assert_eq!(stats["knee"]["max_in_flight"], 4);
    assert_eq!(stats["knee"]["in_flight"], 0);
    assert_eq!(stats["knee"]["statuses"]["200"], 5);
    let (head, _) = raw(&up, "DELETE").await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert_eq!(up.max_in_flight("knee"), 0);
}

/// `METHOD /stats` on the fake: the head and the body.
async fn raw(up: &FakeUpstream, method: &str) -> (String, String) {
    use tokio::io::AsyncReadExt as _;
    let mut s = TcpStream::connect(up.addr()).await.expect("connect");
    let req = format!("{method} /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = String::new();
    tokio::time::timeout(TIMEOUT, s.read_to_string(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn a_fault_for_one_credential_leaves_the_others_alone() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    up.set_credential_fault(
        "gpt-x",
        "sk-bad",
        Fault::Status {
            code: 401,
            retry_after_secs: None,
            body: None,
        },
    );
    let body = json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]});
    let bad = send(
        &up,
        "/v1/chat/completions",
        "Authorization: Bearer sk-bad\r\n",
        body.clone(),
    )
    .await;
    assert_eq!(bad.status, 401);
    // Anthropic's header counts as the credential too.
    let good = send(&up, "/v1/messages", "x-api-key: sk-good\r\n", body.clone()).await;
    assert_eq!(good.status, 200);
    let none = send(&up, "/v1/chat/completions", "", body.clone()).await;
    assert_eq!(none.status, 200);
    assert_eq!(up.credential_calls("gpt-x", "sk-bad"), 1);
    assert_eq!(up.credential_calls("gpt-x", "sk-good"), 1);
    assert_eq!(up.calls("gpt-x"), 3);
    up.clear_credential_fault("gpt-x", "sk-bad");
    let healed = send(
        &up,
        "/v1/chat/completions",
        "Authorization: Bearer sk-bad\r\n",
        body,
    )
    .await;
    assert_eq!(healed.status, 200);
}
