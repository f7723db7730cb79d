//! Tests by job: the request body, answers and streams, and over HTTP.

mod body;
mod decode;
mod http;
mod options;

use serde_json::json;

use super::super::openai::tests::sse;
use super::super::wire::parse_json;

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

const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
const STOP: &str = r#"{"type":"message_stop"}"#;
/// What START shows as in `run`.
const META: &str = "meta msg_1 claude-x -";

fn block_start(index: u32, block: serde_json::Value) -> String {
    json!({"type": "content_block_start", "index": index, "content_block": block}).to_string()
}

fn delta(index: u32, kind: &str, field: &str, value: &str) -> String {
    let d = json!({"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}});
    d.to_string()
}

fn end(reason: &str, output: u32) -> String {
    let d = json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": output}});
    d.to_string()
}
