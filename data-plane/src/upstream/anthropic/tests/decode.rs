//! Answers and streams: `decode.rs`.

use futures::StreamExt as _;
use serde_json::json;

use super::super::super::openai::tests::run;
use super::super::super::wire::{SseDecoder, decode_sse};
use super::super::super::{Chunk, Completion, ReasoningBlock, ResponseMeta, ToolCall, Usage};
use super::super::body::JSON_TOOL;
use super::super::decode::{Decoder, map_stop_reason, parse_completion};
use super::*;
use crate::upstream::UpstreamError;

/// A decoder expecting the `response_format` JSON object's forced tool.
struct Forced(Decoder);

impl Default for Forced {
    fn default() -> Self {
        Self(Decoder::forcing(Some(JSON_TOOL)))
    }
}

impl SseDecoder for Forced {
    fn event(
        &mut self,
        ev: &eventsource_stream::Event,
        out: &mut Vec<Chunk>,
    ) -> Result<bool, UpstreamError> {
        self.0.event(ev, out)
    }

    fn end(&mut self) -> Result<Chunk, UpstreamError> {
        self.0.end()
    }
}

/// The chunks of `sse` decoded whole, exactly (`run` shows usage as in/out only).
fn chunks(sse: &str, decoder: Decoder) -> Vec<Result<Chunk, String>> {
    let body = futures::stream::iter([Ok::<_, UpstreamError>(sse.as_bytes().to_vec())]);
    let items = futures::executor::block_on(decode_sse(body, decoder).collect::<Vec<_>>());
    items
        .into_iter()
        .map(|i| i.map_err(|e| e.to_string()))
        .collect()
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
        let want = [
            META,
            "text Hé",
            "text llo",
            "usage 30/12 cached=5",
            "finish stop",
        ];
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
        block_start(
            index,
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        )
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
        META,
        "text Let me check",
        "call 0 toolu_1 weather ",
        r#"call 0 - - {"city":"#,
        r#"call 0 - - "Oslo"}"#,
        "call 1 toolu_2 now ",
        "call 1 - - {}",
        "usage 30/40 cached=5",
        "finish tool_calls",
    ];
    assert_eq!(run::<Decoder>(&body, 11, false), want);
}

#[test]
fn thinking_signatures_redacted_blocks_and_cache_usage_stream() {
    let start = json!({"type": "message_start", "message": {
        "id": "msg_2", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20,
                  "cache_read_input_tokens": 30, "output_tokens": 1}}});
    let thinking = json!({"type": "thinking", "thinking": "", "signature": ""});
    // Newer streams repeat the (cumulative) input counts at the end.
    let end = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 20,
                  "cache_read_input_tokens": 30, "output_tokens": 50}});
    let body = events(&[
        &start.to_string(),
        &block_start(0, thinking.clone()),
        &delta(0, "thinking_delta", "thinking", "Oslo is"),
        &delta(0, "thinking_delta", "thinking", " north."),
        &delta(0, "signature_delta", "signature", "sig-1"),
        r#"{"type":"content_block_stop","index":0}"#,
        &block_start(1, json!({"type": "redacted_thinking", "data": "EmwKAhgB"})),
        r#"{"type":"content_block_stop","index":1}"#,
        &block_start(2, thinking),
        &delta(2, "thinking_delta", "thinking", "So:"),
        &delta(2, "signature_delta", "signature", "sig-2"),
        &block_start(3, json!({"type": "text", "text": ""})),
        &delta(3, "text_delta", "text", "Cold."),
        &end.to_string(),
        STOP,
    ]);
    let want = [
        "meta msg_2 claude-sonnet-4-5 -",
        "reasoning 0 Oslo is sig=- redacted=-",
        "reasoning 0  north. sig=- redacted=-",
        "reasoning 0  sig=sig-1 redacted=-",
        "reasoning 1  sig=- redacted=EmwKAhgB",
        "reasoning 2 So: sig=- redacted=-",
        "reasoning 2  sig=sig-2 redacted=-",
        "text Cold.",
        "usage 60/50 cached=30 cache_write=20",
        "finish stop",
    ];
    for piece in [1, 9, 64, body.len()] {
        assert_eq!(run::<Decoder>(&body, piece, false), want, "{piece}");
    }
    let got = chunks(&body, Decoder::default());
    let usage = Usage {
        input_tokens: 60,
        output_tokens: 50,
        cached_input_tokens: 30,
        cache_write_input_tokens: 20,
        reasoning_tokens: 0,
    };
    assert_eq!(got[0], Ok(Chunk::Meta(meta("msg_2", "claude-sonnet-4-5"))));
    assert_eq!(got[got.len() - 2], Ok(Chunk::Usage(usage)));
}

#[test]
fn a_forced_tools_json_streams_as_text() {
    let body = events(&[
        START,
        &block_start(
            0,
            json!({"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL, "input": {}}),
        ),
        &delta(0, "input_json_delta", "partial_json", ""),
        &delta(0, "input_json_delta", "partial_json", r#"{"city":"#),
        &delta(0, "input_json_delta", "partial_json", r#""Oslo"}"#),
        r#"{"type":"content_block_stop","index":0}"#,
        &end("tool_use", 9),
        STOP,
    ]);
    let want = [
        META,
        r#"text {"city":"#,
        r#"text "Oslo"}"#,
        "usage 30/9 cached=5",
        "finish stop",
    ];
    for piece in [1, 13, body.len()] {
        assert_eq!(run::<Forced>(&body, piece, false), want, "{piece}");
    }
    // Without the forced tool, the same is a tool call.
    let plain = run::<Decoder>(&body, 13, false);
    assert_eq!(
        (plain[1].as_str(), plain[plain.len() - 1].as_str()),
        ("call 0 toolu_1 json_response ", "finish tool_calls")
    );
}

#[test]
fn an_error_event_ends_the_stream() {
    let error = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let body = events(&[START, &delta(0, "text_delta", "text", "a"), error, STOP]);
    assert_eq!(
        run::<Decoder>(&body, 8, false),
        [META, "text a", "event error Overloaded"]
    );
}

#[test]
fn a_stream_without_message_stop_is_truncated() {
    let body = events(&[
        START,
        &delta(0, "text_delta", "text", "a"),
        &end("max_tokens", 3),
    ]);
    assert_eq!(
        run::<Decoder>(&body, 8, false),
        [META, "text a", "Truncated"]
    );
    assert_eq!(
        run::<Decoder>(&body, 8, true),
        [META, "text a", "Io(\"reset\")"]
    );
    let body = format!("{body}{}", events(&[STOP]));
    assert_eq!(
        run::<Decoder>(&body, 8, false),
        [META, "text a", "usage 30/3 cached=5", "finish length"]
    );
}

fn meta(id: &str, model: &str) -> ResponseMeta {
    ResponseMeta {
        id: Some(id.into()),
        model: Some(model.into()),
        system_fingerprint: None,
        rate: None,
    }
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
    let usage = Some(Usage {
        cache_write_input_tokens: 2,
        ..Usage::new(12, 7)
    });
    let (content, finish_reason) = ("Let me check".into(), "tool_calls".into());
    let want = Completion {
        content,
        tool_calls: vec![call],
        finish_reason,
        usage,
        meta: ResponseMeta {
            id: Some("msg_1".into()),
            ..ResponseMeta::default()
        },
        ..Completion::default()
    };
    assert_eq!(parse_completion(body, None).expect("parses"), want);
    let err = parse_completion(
        br#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#,
        None,
    );
    assert!(matches!(err, Err(UpstreamError::Event { message }) if message == "boom"));
    assert!(matches!(
        parse_completion(br#"{"id":"msg_1"}"#, None),
        Err(UpstreamError::Protocol(_))
    ));
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

#[test]
fn unary_thinking_redacted_text_tool_use_meta_and_cache_usage() {
    let body = br#"{
      "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
      "type": "message",
      "role": "assistant",
      "model": "claude-sonnet-4-5-20250929",
      "content": [
        {"type": "thinking", "thinking": "The user wants the weather in Oslo.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "weather", "input": {"city": "Oslo"}}
      ],
      "stop_reason": "tool_use",
      "stop_sequence": null,
      "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 1000,
        "cache_read_input_tokens": 2000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 120,
        "service_tier": "standard"
      }
    }"#;
    let want = Completion {
        content: "Let me check.".into(),
        tool_calls: vec![ToolCall {
            id: "toolu_01A09q90qw90lq917835lq9".into(),
            name: "weather".into(),
            arguments_json: r#"{"city":"Oslo"}"#.into(),
        }],
        finish_reason: "tool_calls".into(),
        usage: Some(Usage {
            input_tokens: 3050,
            output_tokens: 120,
            cached_input_tokens: 2000,
            cache_write_input_tokens: 1000,
            reasoning_tokens: 0,
        }),
        reasoning: vec![
            ReasoningBlock {
                text: "The user wants the weather in Oslo.".into(),
                signature: Some("EqQBCgIYAhIM1gbcDa9GJwZA2b3h".into()),
                redacted: None,
            },
            ReasoningBlock {
                redacted: Some("EmwKAhgBEgy3va3pzix/LafPsn4a".into()),
                ..ReasoningBlock::default()
            },
        ],
        meta: meta("msg_01XFDUDYJgAACzvnptvVoYEL", "claude-sonnet-4-5-20250929"),
        ..Completion::default()
    };
    assert_eq!(parse_completion(body, None).expect("parses"), want);
}

#[test]
fn a_forced_tools_input_is_the_content_and_a_stop() {
    let body = br#"{"id":"msg_3","type":"message","role":"assistant","model":"claude-x",
        "content":[{"type":"tool_use","id":"toolu_1","name":"place","input":{"city":"Oslo","n":1}}],
        "stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":6}}"#;
    let want = Completion {
        content: r#"{"city":"Oslo","n":1}"#.into(),
        finish_reason: "stop".into(),
        usage: Some(Usage::new(5, 6)),
        meta: meta("msg_3", "claude-x"),
        ..Completion::default()
    };
    assert_eq!(parse_completion(body, Some("place")).expect("parses"), want);
    // Not forced: a tool call.
    let plain = parse_completion(body, None).expect("parses");
    assert_eq!(
        (
            plain.content.as_str(),
            plain.tool_calls.len(),
            plain.finish_reason.as_str()
        ),
        ("", 1, "tool_calls")
    );
}

#[test]
fn typed_reading_keeps_nulls_escapes_unknown_blocks_and_tool_input_text() {
    let body = br#"{"id":"msg_2","model":null,"type":"message","content":[
        {"type":"text","text":"a \"b\"\n","citations":null},
        {"type":"server_tool_use","id":"s1","name":"web","input":{"q":1}},
        {"type":"tool_use","id":"t1","name":"f","input":{ "z": [1, 2], "a": "\u00e9" }},
        {"type":"tool_use","id":"t2","name":"g"}],
        "stop_reason":null,"usage":null}"#;
    let c = parse_completion(body, None).expect("parses");
    assert_eq!(c.content, "a \"b\"\n");
    let args: Vec<_> = c
        .tool_calls
        .iter()
        .map(|t| t.arguments_json.as_str())
        .collect();
    assert_eq!(args, [r#"{"a":"é","z":[1,2]}"#, "null"]);
    assert_eq!((c.finish_reason.as_str(), c.usage), ("stop", None));
    assert_eq!(c.meta.id.as_deref(), Some("msg_2"));
    assert_eq!(c.meta.model, None);
    let no_content = parse_completion(br#"{"content":{"type":"text"}}"#, None);
    assert!(matches!(no_content, Err(UpstreamError::Protocol(_))));
}
