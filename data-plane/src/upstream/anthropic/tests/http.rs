//! Over real HTTP: `complete` and `stream` against canned servers.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::super::openai::tests::{msg, target};
use super::super::super::{
    ChatRequest, Chunk, Kind, ResponseFormat, ResponseMeta, Role, Target, UpstreamError, Usage,
};
use super::super::{complete, stream};
use super::*;

/// Serves one canned HTTP response after `delay`; yields the request seen.
async fn serve_once(
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
                    .and_then(|s| s.split("\r\n").next());
                if req.len() >= head + 4 + len.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0) {
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

fn http_response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn anthropic_target(base: &str) -> Target {
    Target {
        kind: Kind::Anthropic,
        ..target(base)
    }
}

/// The JSON body of a request seen by `serve_once`.
fn body_of(seen: &str) -> Value {
    let body = seen.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).expect("a JSON body")
}

#[tokio::test]
async fn over_http_headers_errors_and_timeouts() {
    let http = reqwest::Client::new();
    let req = ChatRequest {
        messages: vec![msg(Role::User, "hi")],
        ..Default::default()
    };

    let ok = r#"{"content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":2}}"#;
    let (base, seen) = serve_once(http_response("200 OK", "", ok), Duration::ZERO).await;
    let c = complete(&http, &anthropic_target(&base), &req, &Default::default())
        .await
        .expect("completes");
    assert_eq!(
        (c.content.as_str(), c.finish_reason.as_str()),
        ("hello", "stop")
    );
    let seen = seen.await.expect("server").to_lowercase();
    assert!(seen.starts_with("post /v1/messages http/1.1"), "{seen}");
    for h in [
        "x-api-key: sk-test",
        "anthropic-version: 2023-06-01",
        "x-org: acme",
    ] {
        assert!(seen.contains(h), "{h} missing in {seen}");
    }

    let body = events(&[
        START,
        &delta(0, "text_delta", "text", "hi"),
        &end("end_turn", 2),
        STOP,
    ]);
    let sse_resp = http_response("200 OK", "content-type: text/event-stream\r\n", &body);
    let (base, _) = serve_once(sse_resp, Duration::ZERO).await;
    let s = stream(&http, &anthropic_target(&base), &req, &Default::default())
        .await
        .expect("stream");
    let got: Vec<_> = s.map(|i| i.map_err(|e| e.to_string())).collect().await;
    let usage = Usage {
        cached_input_tokens: 5,
        ..Usage::new(30, 2)
    };
    let meta = ResponseMeta {
        id: Some("msg_1".into()),
        model: Some("claude-x".into()),
        system_fingerprint: None,
    };
    let want = [
        Chunk::Meta(meta),
        Chunk::Text("hi".into()),
        Chunk::Usage(usage),
        Chunk::Finish("stop".into()),
    ];
    assert_eq!(got, want.map(Ok));

    let limited =
        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down, sk-test"}}"#;
    let (base, _) = serve_once(
        http_response("429 Too Many Requests", "retry-after: 7\r\n", limited),
        Duration::ZERO,
    )
    .await;
    let err = stream(&http, &anthropic_target(&base), &req, &Default::default())
        .await
        .err()
        .expect("fails");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(
        matches!(&err, UpstreamError::Http { status: 429, message, .. } if message == "slow down, *****")
    );

    let (base, _) = serve_once(http_response("200 OK", "", ok), Duration::from_secs(2)).await;
    let err = complete(&http, &anthropic_target(&base), &req, &Default::default())
        .await
        .expect_err("times out");
    assert!(matches!(err, UpstreamError::FirstByteTimeout), "{err:?}");
}

#[tokio::test]
async fn structured_output_over_http_is_a_forced_tool_read_as_content() {
    let http = reqwest::Client::new();
    let req = ChatRequest {
        messages: vec![msg(Role::User, "where?")],
        response_format: ResponseFormat::JsonObject,
        ..Default::default()
    };
    let tools = json!([{"name": "json_response", "description": "Respond with JSON",
                        "input_schema": {"type": "object"}}]);
    let choice = json!({"type": "tool", "name": "json_response"});

    let answer = r#"{"id":"msg_9","type":"message","role":"assistant","model":"claude-x",
        "content":[{"type":"tool_use","id":"toolu_1","name":"json_response","input":{"city":"Oslo"}}],
        "stop_reason":"tool_use","usage":{"input_tokens":3,"output_tokens":4}}"#;
    let (base, seen) = serve_once(http_response("200 OK", "", answer), Duration::ZERO).await;
    let c = complete(&http, &anthropic_target(&base), &req, &Default::default())
        .await
        .expect("completes");
    assert_eq!(
        (
            c.content.as_str(),
            c.finish_reason.as_str(),
            c.tool_calls.len()
        ),
        (r#"{"city":"Oslo"}"#, "stop", 0)
    );
    let sent = body_of(&seen.await.expect("server"));
    assert_eq!((&sent["tools"], &sent["tool_choice"]), (&tools, &choice));

    let body = events(&[
        START,
        &block_start(
            0,
            json!({"type": "tool_use", "id": "toolu_1", "name": "json_response", "input": {}}),
        ),
        &delta(0, "input_json_delta", "partial_json", r#"{"city":"#),
        &delta(0, "input_json_delta", "partial_json", r#""Oslo"}"#),
        &end("tool_use", 4),
        STOP,
    ]);
    let sse_resp = http_response("200 OK", "content-type: text/event-stream\r\n", &body);
    let (base, seen) = serve_once(sse_resp, Duration::ZERO).await;
    let s = stream(&http, &anthropic_target(&base), &req, &Default::default())
        .await
        .expect("stream");
    let got: Vec<_> = s.map(|i| i.map_err(|e| e.to_string())).collect().await;
    let text: String = got
        .iter()
        .filter_map(|c| match c {
            Ok(Chunk::Text(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, r#"{"city":"Oslo"}"#);
    assert_eq!(got.last(), Some(&Ok(Chunk::Finish("stop".into()))));
    assert!(!got.iter().any(|c| matches!(c, Ok(Chunk::ToolCall { .. }))));
    let sent = body_of(&seen.await.expect("server"));
    assert_eq!(
        (&sent["tools"], &sent["tool_choice"], &sent["stream"]),
        (&tools, &choice, &json!(true))
    );

    // Refused before anything is sent: nothing listens at this address.
    let refused = ChatRequest {
        seed: Some(1),
        ..req
    };
    let err = complete(
        &http,
        &anthropic_target("http://127.0.0.1:9/v1"),
        &refused,
        &Default::default(),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, UpstreamError::Unsupported(_)), "{err:?}");
}
