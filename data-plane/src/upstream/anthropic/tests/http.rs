//! Over real HTTP: `complete` and `stream` against canned servers.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use super::super::super::canned::{body_of, http_response, serve_once};
use super::super::super::openai::tests::{msg, target};
use super::super::super::{
    ChatRequest, Chunk, Kind, ResponseFormat, ResponseMeta, Role, Target, UpstreamError, Usage,
};
use super::super::{complete, stream};
use super::*;

fn anthropic_target(base: &str) -> Target {
    Target {
        kind: Kind::Anthropic,
        ..target(base)
    }
}

#[tokio::test]
async fn over_http_headers_errors_and_timeouts() {
    let http = crate::upstream::Client::new(std::time::Duration::from_secs(5));
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
        rate: None,
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
    let http = crate::upstream::Client::new(std::time::Duration::from_secs(5));
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
