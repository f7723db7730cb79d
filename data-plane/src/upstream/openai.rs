//! OpenAI-compatible adapter: `POST {base_url}/chat/completions`, unary or
//! SSE streaming.
//!
//! Input the upstream cannot take as given is mapped, not refused: a tool whose
//! `parameters_json` is empty is sent with `parameters: {}`; one whose schema is
//! not valid JSON is sent with `{"type":"object"}` (a loose schema) rather than
//! failing the whole request.

use eventsource_stream::Event;
use reqwest::header::{AUTHORIZATION, HeaderMap};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use super::wire::{
    SseDecoder, add_extra_headers, error_in, event_message, float, parse_json, post_stream,
    post_unary, sat, secret_value,
};
use super::{
    ChatRequest, Chunk, ChunkStream, Completion, EmbedRequest, Embeddings, Message, ResponseFormat,
    Role, Target, ToolCall, TraceHeaders, UpstreamError, Usage, with_trace,
};

/// Not yet translated: refused before anything is sent.
pub async fn embed(
    _http: &reqwest::Client,
    _t: &Target,
    _req: &EmbedRequest,
    _trace: &TraceHeaders,
) -> Result<Embeddings, UpstreamError> {
    Err(UpstreamError::Unsupported(
        "embeddings are not translated yet".into(),
    ))
}

pub async fn complete(
    http: &reqwest::Client,
    t: &Target,
    req: &ChatRequest,
    trace: &TraceHeaders,
) -> Result<Completion, UpstreamError> {
    let body = post_unary(
        http,
        t,
        "chat/completions",
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
        "chat/completions",
        with_trace(headers(t)?, trace),
        &request_body(t, req, true),
        Decoder::default(),
    )
    .await
}

fn headers(t: &Target) -> Result<HeaderMap, UpstreamError> {
    let mut h = HeaderMap::new();
    if let Some(c) = &t.credential {
        h.insert(
            AUTHORIZATION,
            secret_value(format!("Bearer {}", c.expose_secret()))?,
        );
    }
    add_extra_headers(&mut h, &t.extra_headers)?;
    Ok(h)
}

fn request_body(t: &Target, req: &ChatRequest, stream: bool) -> Value {
    let mut b = Map::new();
    b.insert("model".into(), json!(t.model));
    b.insert(
        "messages".into(),
        req.messages.iter().map(message).collect(),
    );
    if !req.tools.is_empty() {
        let tools = req.tools.iter().map(|tool| {
            let parameters = match tool.parameters_json.trim() {
                "" => json!({}),
                s => serde_json::from_str(s).unwrap_or_else(|_| json!({"type": "object"})),
            };
            let mut f = json!({"name": tool.name, "parameters": parameters});
            if !tool.description.is_empty() {
                f["description"] = json!(tool.description);
            }
            json!({"type": "function", "function": f})
        });
        b.insert("tools".into(), tools.collect());
    }
    let opt = [
        ("max_tokens", req.max_tokens.map(|v| json!(v))),
        ("temperature", req.temperature.map(float)),
        ("top_p", req.top_p.map(float)),
        ("seed", req.seed.map(|v| json!(v))),
        ("stop", (!req.stop.is_empty()).then(|| json!(req.stop))),
        (
            "response_format",
            (req.response_format == ResponseFormat::JsonObject)
                .then(|| json!({"type": "json_object"})),
        ),
    ];
    b.extend(
        opt.into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?))),
    );
    if stream {
        b.insert("stream".into(), json!(true));
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(b)
}

fn message(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut v = json!({"role": role, "content": m.content});
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        if m.content.is_empty() {
            v["content"] = Value::Null;
        }
        let calls = m.tool_calls.iter().map(|c| {
            json!({"id": c.id, "type": "function",
                   "function": {"name": c.name, "arguments": c.arguments_json}})
        });
        v["tool_calls"] = calls.collect();
    }
    if m.role == Role::Tool {
        v["tool_call_id"] = json!(m.tool_call_id.as_deref().unwrap_or_default());
    } else if let Some(name) = &m.name {
        v["name"] = json!(name);
    }
    v
}

fn usage_of(u: &Value) -> Option<Usage> {
    let n = |k: &str| u[k].as_u64().map_or(0, sat);
    u.is_object()
        .then(|| Usage::new(n("prompt_tokens"), n("completion_tokens")))
}

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn parse_completion(body: &[u8]) -> Result<Completion, UpstreamError> {
    let v = parse_json(body)?;
    if let Some(message) = error_in(&v) {
        return Err(UpstreamError::Event { message });
    }
    let msg = &v["choices"][0]["message"];
    if !msg.is_object() {
        return Err(UpstreamError::Protocol(
            "response has no choices[0].message".into(),
        ));
    }
    let calls = msg["tool_calls"].as_array().into_iter().flatten();
    Ok(Completion {
        content: str_of(&msg["content"]).unwrap_or_default(),
        tool_calls: calls
            .map(|c| ToolCall {
                id: str_of(&c["id"]).unwrap_or_default(),
                name: str_of(&c["function"]["name"]).unwrap_or_default(),
                arguments_json: str_of(&c["function"]["arguments"]).unwrap_or_default(),
            })
            .collect(),
        // A whole body arrived, so it did finish; some servers omit the reason.
        finish_reason: str_of(&v["choices"][0]["finish_reason"]).unwrap_or_else(|| "stop".into()),
        usage: usage_of(&v["usage"]),
        ..Completion::default()
    })
}

/// Stream state: Usage goes out as it arrives, Finish only at the end.
#[derive(Default)]
struct Decoder {
    finish: Option<String>,
}

impl SseDecoder for Decoder {
    fn event(&mut self, ev: &Event, out: &mut Vec<Chunk>) -> Result<bool, UpstreamError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            return Ok(true);
        }
        if ev.event == "error" {
            return Err(UpstreamError::Event {
                message: event_message(data),
            });
        }
        if data.is_empty() {
            return Ok(false);
        }
        let v = parse_json(data.as_bytes())?;
        if let Some(message) = error_in(&v) {
            return Err(UpstreamError::Event { message });
        }
        let choice = &v["choices"][0];
        if let Some(text) = choice["delta"]["content"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            out.push(Chunk::Text(text.to_string()));
        }
        let calls = choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten();
        for (pos, c) in calls.enumerate() {
            let (id, name) = (str_of(&c["id"]), str_of(&c["function"]["name"]));
            let arguments = str_of(&c["function"]["arguments"]).unwrap_or_default();
            if id.is_some() || name.is_some() || !arguments.is_empty() {
                let index = c["index"].as_u64().map_or(sat(pos as u64), sat);
                out.push(Chunk::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                });
            }
        }
        if let Some(reason) = str_of(&choice["finish_reason"]) {
            self.finish = Some(reason);
        }
        out.extend(usage_of(&v["usage"]).map(Chunk::Usage));
        Ok(false)
    }

    fn end(&mut self) -> Result<Chunk, UpstreamError> {
        self.finish
            .take()
            .map(Chunk::Finish)
            .ok_or(UpstreamError::Truncated)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use futures::StreamExt as _;

    use futures::stream;
    use secrecy::SecretString;

    use super::super::wire::{decode_sse, join_url, scrub};
    use super::super::{Kind, Timeouts, Tool};
    use super::*;

    /// Decodes `sse` fed in `piece`-byte parts (splitting lines and UTF-8
    /// characters), then an optional transport error; one line per item.
    pub(in super::super) fn run<D: SseDecoder + Default>(
        sse: &str,
        piece: usize,
        cut: bool,
    ) -> Vec<String> {
        let mut parts: Vec<_> = sse
            .as_bytes()
            .chunks(piece)
            .map(|c| Ok(c.to_vec()))
            .collect();
        if cut {
            parts.push(Err(UpstreamError::Io("reset".into())));
        }
        let items: Vec<_> =
            futures::executor::block_on(decode_sse(stream::iter(parts), D::default()).collect());
        items.iter().map(show).collect()
    }

    fn show(item: &Result<Chunk, UpstreamError>) -> String {
        match item {
            Ok(Chunk::Text(s)) => format!("text {s}"),
            Ok(Chunk::ToolCall {
                index,
                id,
                name,
                arguments,
            }) => {
                let (id, name) = (id.as_deref().unwrap_or("-"), name.as_deref().unwrap_or("-"));
                format!("call {index} {id} {name} {arguments}")
            }
            Ok(Chunk::Usage(u)) => format!("usage {}/{}", u.input_tokens, u.output_tokens),
            Ok(Chunk::Meta(m)) => format!(
                "meta {} {} {}",
                m.id.as_deref().unwrap_or("-"),
                m.model.as_deref().unwrap_or("-"),
                m.system_fingerprint.as_deref().unwrap_or("-")
            ),
            Ok(Chunk::Reasoning {
                index,
                text,
                signature,
                redacted,
            }) => format!(
                "reasoning {index} {text} sig={} redacted={}",
                signature.as_deref().unwrap_or("-"),
                redacted.as_deref().unwrap_or("-")
            ),
            Ok(Chunk::Finish(r)) => format!("finish {r}"),
            Err(UpstreamError::Event { message }) => format!("event error {message}"),
            Err(UpstreamError::Protocol(_)) => "protocol error".into(),
            Err(e) => format!("{e:?}"),
        }
    }

    pub(in super::super) fn target(base_url: &str) -> Target {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_millis(300),
            total: Duration::from_secs(5),
        };
        Target {
            kind: Kind::OpenAi,
            base_url: base_url.into(),
            model: "m-1".into(),
            credential: Some(SecretString::from("sk-test")),
            extra_headers: vec![("x-org".into(), "acme".into())],
            timeouts,
            default_max_tokens: None,
            allow_extra: true,
        }
    }

    pub(in super::super) fn msg(role: Role, content: &str) -> Message {
        Message::text(role, content)
    }

    pub(in super::super) fn tool(name: &str, description: &str, schema: &str) -> Tool {
        let (name, description, parameters_json) = (name.into(), description.into(), schema.into());
        Tool {
            name,
            description,
            parameters_json,
            strict: false,
            cache: None,
        }
    }

    /// An SSE body with one `data:` event per item.
    pub(in super::super) fn sse(data: &[&str]) -> String {
        data.iter().map(|d| format!("data: {d}\n\n")).collect()
    }

    const TEXT: [&str; 6] = [
        r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"Hé"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{"content":"llo"},"finish_reason":null}]}"#,
        r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#,
        r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
        "[DONE]",
    ];

    #[test]
    fn text_then_usage_then_finish_whatever_the_split() {
        let text = format!(": keep-alive\n\n{}", sse(&TEXT));
        for piece in [1, 2, 7, 64, text.len()] {
            let got = run::<Decoder>(&text, piece, false);
            assert_eq!(
                got,
                ["text Hé", "text llo", "usage 9/2", "finish stop"],
                "{piece}"
            );
        }
        // Nothing is read after [DONE].
        assert_eq!(
            run::<Decoder>(&text, 5, true).last().map(String::as_str),
            Some("finish stop")
        );
    }

    #[test]
    fn tool_call_deltas_keep_their_index() {
        let body = sse(&[
            r#"{"choices":[{"delta":{"content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"now","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        let want = [
            "call 0 call_1 weather ",
            r#"call 0 - - {"city":"#,
            "call 1 call_2 now {}",
            r#"call 0 - - "Oslo"}"#,
            "finish tool_calls",
        ];
        assert_eq!(run::<Decoder>(&body, 5, false), want);
    }

    #[test]
    fn an_error_object_ends_the_stream() {
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                   data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(
            run::<Decoder>(sse, 16, false),
            ["text a", "event error overloaded"]
        );
        assert_eq!(
            run::<Decoder>("event: error\ndata: boom\n\n", 4, false),
            ["event error boom"]
        );
        assert_eq!(
            run::<Decoder>("data: {nope\n\n", 64, false),
            ["protocol error"]
        );
    }

    #[test]
    fn a_stream_without_finish_reason_is_truncated() {
        let a = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        assert_eq!(run::<Decoder>(a, 9, false), ["text a", "Truncated"]);
        assert_eq!(
            run::<Decoder>(&format!("{a}data: [DONE]\n\n"), 9, false),
            ["text a", "Truncated"]
        );
        assert_eq!(run::<Decoder>(a, 9, true), ["text a", "Io(\"reset\")"]);
        // A finish reason without [DONE] still finishes.
        let end = "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n";
        assert_eq!(
            run::<Decoder>(&format!("{a}{end}"), 9, false),
            ["text a", "finish length"]
        );
    }

    #[test]
    fn request_body_maps_roles_tools_and_options() {
        let call = ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments_json: r#"{"x":1}"#.into(),
        };
        let req = ChatRequest {
            messages: vec![
                msg(Role::System, "be brief"),
                Message {
                    name: Some("ann".into()),
                    ..msg(Role::User, "hi")
                },
                Message {
                    tool_calls: vec![call],
                    ..msg(Role::Assistant, "")
                },
                Message {
                    tool_call_id: Some("c1".into()),
                    ..msg(Role::Tool, "42")
                },
            ],
            tools: vec![
                tool("f", "does f", r#"{"type":"object"}"#),
                tool("g", "", ""),
                tool("h", "", "{no"),
            ],
            max_tokens: Some(100),
            temperature: Some(0.7),
            top_p: Some(0.9),
            stop: vec!["END".into()],
            seed: Some(7),
            response_format: ResponseFormat::JsonObject,
            ..Default::default()
        };
        let want = json!({
            "model": "m-1",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi", "name": "ann"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "f", "description": "does f", "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "g", "parameters": {}}},
                {"type": "function", "function": {"name": "h", "parameters": {"type": "object"}}},
            ],
            "max_tokens": 100, "temperature": 0.7, "top_p": 0.9, "stop": ["END"], "seed": 7,
            "response_format": {"type": "json_object"},
            "stream": true, "stream_options": {"include_usage": true},
        });
        assert_eq!(request_body(&target("x"), &req, true), want);
        let plain = request_body(&target("x"), &ChatRequest::default(), false);
        assert_eq!(plain, json!({"model": "m-1", "messages": []}));
    }

    #[test]
    fn unary_response_and_helpers() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"ok","tool_calls":[
            {"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        let c = parse_completion(body).expect("parses");
        let call = ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments_json: "{}".into(),
        };
        let usage = Some(Usage::new(3, 4));
        let (content, finish_reason) = ("ok".into(), "tool_calls".into());
        assert_eq!(
            c,
            Completion {
                content,
                tool_calls: vec![call],
                finish_reason,
                usage,
                ..Completion::default()
            }
        );
        let err = parse_completion(br#"{"error":{"message":"bad model"}}"#);
        assert!(matches!(err, Err(UpstreamError::Event { message }) if message == "bad model"));
        assert!(matches!(
            parse_completion(b"{\"choices\":[]}"),
            Err(UpstreamError::Protocol(_))
        ));

        assert_eq!(
            join_url("http://h/v1/", "/chat/completions"),
            "http://h/v1/chat/completions"
        );
        assert_eq!(
            join_url("http://h/v1", "chat/completions"),
            "http://h/v1/chat/completions"
        );
        let h = headers(&target("x")).expect("headers");
        assert_eq!(
            (h["authorization"].as_bytes(), h["x-org"].as_bytes()),
            (&b"Bearer sk-test"[..], &b"acme"[..])
        );
        assert!(h["authorization"].is_sensitive() && !format!("{h:?}").contains("sk-test"));
        let extra = vec![("authorization".into(), "Bearer other".into())];
        let h = headers(&Target {
            extra_headers: extra,
            ..target("x")
        })
        .expect("headers");
        assert_eq!(h["authorization"], "Bearer other");
        assert_eq!(scrub(&target("x"), "bad key sk-test"), "bad key *****");
    }
}
