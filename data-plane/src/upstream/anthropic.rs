//! Anthropic Messages adapter: `POST {base_url}/messages`, unary or SSE
//! streaming. HTTP and SSE plumbing is shared with `openai.rs`.
//!
//! Mapping notes:
//! - system messages are joined (blank line between) into the top-level `system`;
//! - consecutive messages that map to the same role are merged into one turn, so
//!   several tool results answer one assistant turn in a single user message;
//! - tool call arguments and tool schemas that are empty or not a JSON object are
//!   sent as `{}` / `{"type":"object"}` (Anthropic requires objects);
//! - `max_tokens` defaults to 1024; `seed` and `json_mode` have no Anthropic
//!   equivalent and are ignored;
//! - tool call chunk `index` counts tool_use blocks (0, 1, ...) like OpenAI's,
//!   not Anthropic's content block index (which also counts text blocks);
//! - input tokens include cache reads and writes, as OpenAI's `prompt_tokens` do.

use std::collections::HashMap;

use eventsource_stream::Event;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use super::wire::{
    SseDecoder, add_extra_headers, error_in, event_message, float, parse_json, post_stream,
    post_unary, sat, secret_value,
};
use super::{
    ChatRequest, Chunk, ChunkStream, Completion, Role, Target, ToolCall, TraceHeaders,
    UpstreamError, Usage, with_trace,
};

const API_VERSION: &str = "2023-06-01";
const DEFAULT_MAX_TOKENS: u32 = 1024;

pub async fn complete(
    http: &reqwest::Client,
    t: &Target,
    req: &ChatRequest,
    trace: &TraceHeaders,
) -> Result<Completion, UpstreamError> {
    let body = post_unary(
        http,
        t,
        "messages",
        with_trace(headers(t)?, trace),
        &request_body(t, req, false),
    )
    .await?;
    parse_completion(&body)
}

pub async fn stream(
    http: &reqwest::Client,
    t: &Target,
    req: &ChatRequest,
    trace: &TraceHeaders,
) -> Result<ChunkStream, UpstreamError> {
    post_stream(
        http,
        t,
        "messages",
        with_trace(headers(t)?, trace),
        &request_body(t, req, true),
        Decoder::default(),
    )
    .await
}

fn headers(t: &Target) -> Result<HeaderMap, UpstreamError> {
    let mut h = HeaderMap::new();
    if let Some(c) = &t.credential {
        h.insert("x-api-key", secret_value(c.expose_secret().to_string())?);
    }
    h.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
    add_extra_headers(&mut h, &t.extra_headers)?;
    Ok(h)
}

/// Parses JSON text that must be an object; anything else becomes `fallback`.
fn object_or(text: &str, fallback: Value) -> Value {
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
        .unwrap_or(fallback)
}

fn request_body(t: &Target, req: &ChatRequest, stream: bool) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let text = json!({"type": "text", "text": m.content});
        let (role, blocks) = match m.role {
            Role::System => {
                system.push(m.content.as_str());
                continue;
            }
            Role::User => ("user", vec![text]),
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": m.content});
                ("user", vec![block])
            }
            Role::Assistant => {
                let uses = m.tool_calls.iter().map(|c| {
                    let input = object_or(&c.arguments_json, json!({}));
                    json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input})
                });
                // Anthropic rejects empty text blocks; keep one only if it is all there is.
                let keep_text = !m.content.is_empty() || m.tool_calls.is_empty();
                let blocks = keep_text.then_some(text).into_iter().chain(uses);
                ("assistant", blocks.collect())
            }
        };
        match turns.last_mut() {
            Some((last, b)) if *last == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}));
    let mut b = Map::new();
    b.insert("model".into(), json!(t.model));
    b.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    b.insert("messages".into(), messages.collect());
    let tools = req.tools.iter().map(|tool| {
        let schema = object_or(&tool.parameters_json, json!({"type": "object"}));
        let mut v = json!({"name": tool.name, "input_schema": schema});
        if !tool.description.is_empty() {
            v["description"] = json!(tool.description);
        }
        v
    });
    let opt = [
        (
            "system",
            (!system.is_empty()).then(|| json!(system.join("\n\n"))),
        ),
        ("tools", (!req.tools.is_empty()).then(|| tools.collect())),
        (
            "stop_sequences",
            (!req.stop.is_empty()).then(|| json!(req.stop)),
        ),
        ("temperature", req.temperature.map(float)),
        ("top_p", req.top_p.map(float)),
        ("stream", stream.then_some(json!(true))),
    ];
    b.extend(
        opt.into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?))),
    );
    Value::Object(b)
}

fn map_stop_reason(reason: &str) -> String {
    match reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_string()
}

/// Adds the usage fields present in `u` (message_start / message_delta / unary).
fn add_usage(usage: &mut Usage, u: &Value) {
    let input = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ];
    if u["input_tokens"].is_u64() {
        let n: u64 = input.iter().filter_map(|k| u[*k].as_u64()).sum();
        usage.input_tokens = sat(n);
    }
    if let Some(n) = u["output_tokens"].as_u64() {
        usage.output_tokens = sat(n);
    }
}

fn parse_completion(body: &[u8]) -> Result<Completion, UpstreamError> {
    let v = parse_json(body)?;
    if let Some(message) = error_in(&v) {
        return Err(UpstreamError::Event { message });
    }
    let Some(blocks) = v["content"].as_array() else {
        return Err(UpstreamError::Protocol("response has no content".into()));
    };
    let mut c = Completion::default();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => c.content.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => c.tool_calls.push(ToolCall {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str().unwrap_or_default().to_string(),
                arguments_json: b["input"].to_string(),
            }),
            _ => {}
        }
    }
    c.finish_reason = map_stop_reason(v["stop_reason"].as_str().unwrap_or("end_turn"));
    if v["usage"].is_object() {
        let mut usage = Usage::default();
        add_usage(&mut usage, &v["usage"]);
        c.usage = Some(usage);
    }
    Ok(c)
}

#[derive(Default)]
struct Decoder {
    usage: Usage,
    stop_reason: Option<String>,
    /// Content block index -> tool call ordinal.
    tools: HashMap<u64, u32>,
    stopped: bool,
}

impl SseDecoder for Decoder {
    fn event(&mut self, ev: &Event, out: &mut Vec<Chunk>) -> Result<bool, UpstreamError> {
        if ev.event == "error" {
            return Err(UpstreamError::Event {
                message: event_message(&ev.data),
            });
        }
        if ev.data.trim().is_empty() {
            return Ok(false);
        }
        let v = parse_json(ev.data.as_bytes())?;
        let kind = v["type"].as_str().unwrap_or(ev.event.as_str());
        let index = v["index"].as_u64();
        match kind {
            "message_start" => add_usage(&mut self.usage, &v["message"]["usage"]),
            "content_block_start" => {
                let block = &v["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        let text = block["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            out.push(Chunk::Text(text.to_string()));
                        }
                    }
                    Some("tool_use") => {
                        let ordinal = sat(self.tools.len() as u64);
                        self.tools.insert(index.unwrap_or(u64::MAX), ordinal);
                        out.push(Chunk::ToolCall {
                            index: ordinal,
                            id: block["id"].as_str().map(str::to_string),
                            name: block["name"].as_str().map(str::to_string),
                            arguments: String::new(),
                        });
                    }
                    _ => {} // thinking and other block kinds are not forwarded
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default();
                        if !text.is_empty() {
                            out.push(Chunk::Text(text.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or_default();
                        // Deltas of blocks not forwarded (e.g. server_tool_use) are dropped.
                        let ordinal = index.and_then(|i| self.tools.get(&i));
                        if let (Some(&index), false) = (ordinal, part.is_empty()) {
                            let arguments = part.to_string();
                            out.push(Chunk::ToolCall {
                                index,
                                id: None,
                                name: None,
                                arguments,
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(r.to_string());
                }
                add_usage(&mut self.usage, &v["usage"]);
            }
            "message_stop" => {
                out.push(Chunk::Usage(self.usage));
                self.stopped = true;
                return Ok(true);
            }
            "error" => {
                return Err(UpstreamError::Event {
                    message: event_message(&ev.data),
                });
            }
            _ => {} // ping, content_block_stop, and event types added later
        }
        Ok(false)
    }

    fn end(&mut self) -> Result<Chunk, UpstreamError> {
        if !self.stopped {
            return Err(UpstreamError::Truncated);
        }
        let reason = self.stop_reason.as_deref().unwrap_or("end_turn");
        Ok(Chunk::Finish(map_stop_reason(reason)))
    }
}

#[cfg(test)]
// A canned HTTP server per test.
#[allow(clippy::disallowed_methods)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::openai::tests::{msg, run, sse, target, tool};
    use super::super::{Kind, Message};
    use super::*;

    /// SSE with an `event:` line naming each data's `type`, as Anthropic sends.
    fn events(data: &[&str]) -> String {
        let named = data.iter().map(|d| {
            let kind = parse_json(d.as_bytes())
                .map(|v| v["type"].clone())
                .unwrap_or_default();
            format!(
                "event: {}\n{}",
                kind.as_str().unwrap_or_default(),
                sse(&[d])
            )
        });
        named.collect()
    }

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","role":"assistant","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
    const STOP: &str = r#"{"type":"message_stop"}"#;

    fn delta(index: u32, kind: &str, field: &str, value: &str) -> String {
        let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}});
        d.to_string()
    }

    fn end(reason: &str, output: u32) -> String {
        let d = json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": output}});
        d.to_string()
    }

    #[test]
    fn text_then_usage_then_finish_whatever_the_split() {
        let body = events(&[
            START,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type": "ping"}"#,
            &delta(0, "text_delta", "text", "Hé"),
            &delta(0, "text_delta", "text", "llo"),
            r#"{"type":"content_block_stop","index":0}"#,
            &end("end_turn", 12),
            STOP,
        ]);
        for piece in [1, 3, 50, body.len()] {
            let want = ["text Hé", "text llo", "usage 30/12", "finish stop"];
            assert_eq!(run::<Decoder>(&body, piece, false), want, "{piece}");
        }
        // Nothing is read after message_stop.
        assert_eq!(
            run::<Decoder>(&body, 7, true).last().map(String::as_str),
            Some("finish stop")
        );
    }

    #[test]
    fn tool_use_blocks_become_indexed_tool_calls() {
        let tool_start = |index: u32, id: &str, name: &str| {
            let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
            json!({"type": "content_block_start", "index": index, "content_block": block})
                .to_string()
        };
        let body = events(&[
            START,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Let me check"}}"#,
            &tool_start(1, "toolu_1", "weather"),
            &delta(1, "input_json_delta", "partial_json", ""),
            &delta(1, "input_json_delta", "partial_json", r#"{"city":"#),
            &delta(1, "input_json_delta", "partial_json", r#""Oslo"}"#),
            &tool_start(2, "toolu_2", "now"),
            &delta(2, "input_json_delta", "partial_json", "{}"),
            &end("tool_use", 40),
            STOP,
        ]);
        let want = [
            "text Let me check",
            "call 0 toolu_1 weather ",
            r#"call 0 - - {"city":"#,
            r#"call 0 - - "Oslo"}"#,
            "call 1 toolu_2 now ",
            "call 1 - - {}",
            "usage 30/40",
            "finish tool_calls",
        ];
        assert_eq!(run::<Decoder>(&body, 11, false), want);
    }

    #[test]
    fn an_error_event_ends_the_stream() {
        let error =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let body = events(&[START, &delta(0, "text_delta", "text", "a"), error, STOP]);
        assert_eq!(
            run::<Decoder>(&body, 8, false),
            ["text a", "event error Overloaded"]
        );
    }

    #[test]
    fn a_stream_without_message_stop_is_truncated() {
        let body = events(&[
            START,
            &delta(0, "text_delta", "text", "a"),
            &end("max_tokens", 3),
        ]);
        assert_eq!(run::<Decoder>(&body, 8, false), ["text a", "Truncated"]);
        assert_eq!(run::<Decoder>(&body, 8, true), ["text a", "Io(\"reset\")"]);
        let body = format!("{body}{}", events(&[STOP]));
        assert_eq!(
            run::<Decoder>(&body, 8, false),
            ["text a", "usage 30/3", "finish length"]
        );
    }

    #[test]
    fn request_body_maps_system_roles_and_tools() {
        let calls = vec![
            ToolCall {
                id: "t1".into(),
                name: "f".into(),
                arguments_json: r#"{"x":1}"#.into(),
            },
            ToolCall {
                id: "t2".into(),
                name: "g".into(),
                arguments_json: "oops".into(),
            },
        ];
        let answer = |id: &str, content| Message {
            tool_call_id: Some(id.into()),
            ..msg(Role::Tool, content)
        };
        let req = ChatRequest {
            messages: vec![
                msg(Role::System, "be brief"),
                msg(Role::User, "hi"),
                Message {
                    tool_calls: calls,
                    ..msg(Role::Assistant, "")
                },
                answer("t1", "1"),
                answer("t2", "2"),
                msg(Role::System, "in French"),
                msg(Role::User, "thanks"),
            ],
            tools: vec![
                tool("f", "does f", r#"{"type":"object","properties":{}}"#),
                tool("g", "", ""),
            ],
            stop: vec!["END".into()],
            temperature: Some(0.3),
            seed: Some(7),
            response_format: super::super::ResponseFormat::JsonObject,
            ..Default::default()
        };
        let want = json!({
            "model": "m-1",
            "max_tokens": 1024,
            "system": "be brief\n\nin French",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
                    {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "1"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "2"},
                    {"type": "text", "text": "thanks"}]},
            ],
            "tools": [
                {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}}},
                {"name": "g", "input_schema": {"type": "object"}},
            ],
            "stop_sequences": ["END"],
            "temperature": 0.3,
            "stream": true,
        });
        assert_eq!(request_body(&target("x"), &req, true), want);
        let req = ChatRequest {
            max_tokens: Some(5),
            messages: vec![msg(Role::Assistant, "ok")],
            ..req
        };
        let body = request_body(&target("x"), &req, false);
        assert_eq!((&body["max_tokens"], body.get("stream")), (&json!(5), None));
        assert_eq!(
            body["messages"],
            json!([{"role": "assistant", "content": [{"type": "text", "text": "ok"}]}])
        );
    }

    #[test]
    fn unary_response_is_parsed() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","content":[
            {"type":"text","text":"Let me "},{"type":"tool_use","id":"t1","name":"f","input":{"x":1}},
            {"type":"text","text":"check"}],"stop_reason":"tool_use",
            "usage":{"input_tokens":10,"cache_creation_input_tokens":2,"output_tokens":7}}"#;
        let call = ToolCall {
            id: "t1".into(),
            name: "f".into(),
            arguments_json: r#"{"x":1}"#.into(),
        };
        let usage = Some(Usage::new(12, 7));
        let (content, finish_reason) = ("Let me check".into(), "tool_calls".into());
        let want = Completion {
            content,
            tool_calls: vec![call],
            finish_reason,
            usage,
            ..Completion::default()
        };
        assert_eq!(parse_completion(body).expect("parses"), want);
        let err =
            parse_completion(br#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#);
        assert!(matches!(err, Err(UpstreamError::Event { message }) if message == "boom"));
        let reasons = [
            "end_turn",
            "stop_sequence",
            "max_tokens",
            "tool_use",
            "refusal",
            "pause_turn",
        ];
        let mapped: Vec<_> = reasons.iter().map(|r| map_stop_reason(r)).collect();
        assert_eq!(
            mapped,
            [
                "stop",
                "stop",
                "length",
                "tool_calls",
                "content_filter",
                "pause_turn"
            ]
        );
    }

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
                    if req.len()
                        >= head + 4 + len.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0)
                    {
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
        let usage = Usage::new(30, 2);
        let want = [
            Chunk::Text("hi".into()),
            Chunk::Usage(usage),
            Chunk::Finish("stop".into()),
        ];
        assert_eq!(got, want.map(Ok));

        let limited = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down, sk-test"}}"#;
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
}
