//! Helpers shared with the other adapters' tests (`run`, `sse`, `target`,
//! `msg`, `tool`), and the stream, body and header tests.

use std::time::Duration;

use futures::StreamExt as _;

use futures::stream;
use secrecy::SecretString;
use serde_json::json;

use super::super::wire::{SseDecoder, decode_sse, join_url, scrub};
use super::super::{
    ChatRequest, Chunk, Completion, Kind, Message, ResponseFormat, Role, Target, Timeouts, Tool,
    ToolCall, UpstreamError, Usage,
};
use super::body::request_body;
use super::headers;
use super::parse::{Decoder, parse_completion};

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
        Ok(Chunk::Usage(u)) => {
            // Details only when there are some, so plain counts read as before.
            let mut s = format!("usage {}/{}", u.input_tokens, u.output_tokens);
            for (name, n) in [
                ("cached", u.cached_input_tokens),
                ("cache_write", u.cache_write_input_tokens),
                ("reasoning", u.reasoning_tokens),
            ] {
                if n > 0 {
                    s.push_str(&format!(" {name}={n}"));
                }
            }
            s
        }
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
    assert_eq!(request_body(&target("x"), &req, true).expect("body"), want);
    let plain = request_body(&target("x"), &ChatRequest::default(), false).expect("body");
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
