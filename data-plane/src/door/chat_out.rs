//! The engine's answers in OpenAI's chat completions shape: one SSE chunk
//! per stream event (a whole completion: `completion.rs`), and what both share.

use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

use crate::observe::stats::unix_secs;
use crate::upstream::ResponseMeta;

/// The upstream's answer id, else one made from the request id.
pub fn answer_id(upstream_id: &str, request_id: &str) -> String {
    if upstream_id.is_empty() {
        format!("chatcmpl-{request_id}")
    } else {
        upstream_id.to_owned()
    }
}

/// The model the answer names: what the upstream said answered, else the
/// member's upstream model, else the name asked for.
pub fn answer_model(response_model: &str, served: Option<&pb::ServedBy>, asked: &str) -> String {
    if !response_model.is_empty() {
        return response_model.to_owned();
    }
    served
        .map(|s| s.upstream_model.as_str())
        .filter(|m| !m.is_empty())
        .unwrap_or(asked)
        .to_owned()
}

/// Usage in OpenAI's shape (cache writes in Anthropic's name, when any).
#[derive(serde::Serialize)]
pub struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u64,
    prompt_tokens_details: Cached,
    completion_tokens_details: Reasoned,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u32>,
}

#[derive(serde::Serialize)]
struct Cached {
    cached_tokens: u32,
}

#[derive(serde::Serialize)]
struct Reasoned {
    reasoning_tokens: u32,
}

impl Usage {
    pub fn of(u: &pb::Usage) -> Self {
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u64::from(u.input_tokens) + u64::from(u.output_tokens),
            prompt_tokens_details: Cached {
                cached_tokens: u.cached_input_tokens,
            },
            completion_tokens_details: Reasoned {
                reasoning_tokens: u.reasoning_tokens,
            },
            cache_creation_input_tokens: (u.cache_write_input_tokens > 0)
                .then_some(u.cache_write_input_tokens),
        }
    }
}

/// What every chunk of one stream repeats.
pub struct StreamHead {
    pub id: String,
    pub model: String,
    pub created: i64,
    pub fingerprint: Option<String>,
}

impl StreamHead {
    /// The head of request `request_id`'s stream, served by `served_by`,
    /// from what the upstream said of its answer (`meta`).
    pub fn new(
        request_id: &str,
        served_by: &pb::ServedBy,
        meta: ResponseMeta,
        asked: &str,
    ) -> Self {
        Self {
            id: answer_id(meta.id.as_deref().unwrap_or_default(), request_id),
            model: answer_model(
                meta.model.as_deref().unwrap_or_default(),
                Some(served_by),
                asked,
            ),
            created: unix_secs(),
            fingerprint: meta.system_fingerprint.filter(|f| !f.is_empty()),
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(f) = &self.fingerprint {
            v["system_fingerprint"] = json!(f);
        }
        v
    }

    fn delta(&self, delta: Value, finish: Option<&str>) -> Value {
        self.chunk(json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]))
    }

    /// The first chunk: the assistant's role, before any content.
    pub fn role(&self) -> Value {
        self.delta(json!({"role": "assistant", "content": ""}), None)
    }

    /// A chunk for one stream event; `None` for events sent later
    /// (usage: after the finish, when asked for) or not at all.
    pub fn event(&self, e: &pb::generate_stream_event::Event) -> Option<Value> {
        use pb::generate_stream_event::Event;
        Some(match e {
            Event::TextDelta(t) => self.delta(json!({"content": t}), None),
            Event::ToolCallDelta(d) => {
                let mut call =
                    json!({"index": d.index, "function": {"arguments": d.arguments_delta}});
                if !d.id.is_empty() {
                    call["id"] = json!(d.id);
                    call["type"] = json!("function");
                }
                if !d.name.is_empty() {
                    call["function"]["name"] = json!(d.name);
                }
                self.delta(json!({"tool_calls": [call]}), None)
            }
            Event::ReasoningDelta(r) => {
                let mut d = json!({});
                if !r.text.is_empty() {
                    d["reasoning_content"] = json!(r.text);
                }
                if !r.signature.is_empty() {
                    d["thinking_blocks"] = json!([{"type": "thinking", "thinking": "", "signature": r.signature, "index": r.index}]);
                }
                if !r.redacted_data.is_empty() {
                    d["thinking_blocks"] = json!([{"type": "redacted_thinking", "data": r.redacted_data, "index": r.index}]);
                }
                self.delta(d, None)
            }
            Event::Finish(f) => self.delta(json!({}), Some(&f.finish_reason)),
            Event::Usage(_) | Event::Start(_) => return None,
        })
    }

    /// The usage chunk OpenAI sends last (`stream_options.include_usage`).
    pub fn usage(&self, u: &pb::Usage) -> Value {
        let mut v = self.chunk(json!([]));
        v["usage"] = json!(Usage::of(u));
        v
    }
}

/// A content delta, OpenAI's chunk written straight from borrowed parts:
/// the hot path of a stream builds no JSON tree per chunk.
#[derive(serde::Serialize)]
struct TextChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a str>,
    choices: [TextChoice<'a>; 1],
}

#[derive(serde::Serialize)]
struct TextChoice<'a> {
    index: u32,
    delta: TextDelta<'a>,
    /// Always null: logprobs are not streamed.
    logprobs: (),
    finish_reason: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct TextDelta<'a> {
    content: &'a str,
}

impl StreamHead {
    /// The SSE event of a content delta (what `event` gives for one, as JSON).
    pub fn text_sse(&self, text: &str) -> bytes::Bytes {
        sse(&TextChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: self.fingerprint.as_deref(),
            choices: [TextChoice {
                index: 0,
                delta: TextDelta { content: text },
                logprobs: (),
                finish_reason: None,
            }],
        })
    }
}

/// One SSE event: `data: <json>\n\n`.
pub fn sse(v: &impl serde::Serialize) -> bytes::Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serializing a Value or one of the chunk structs into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    out.extend_from_slice(b"\n\n");
    out.into()
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_chunks_in_openai_shape() {
        use pb::generate_stream_event::Event;
        let meta = ResponseMeta {
            id: Some("chatcmpl-up".into()),
            model: Some("gpt-x".into()),
            ..Default::default()
        };
        let h = StreamHead::new("r", &pb::ServedBy::default(), meta, "chat");
        assert_eq!(h.role()["choices"][0]["delta"]["role"], "assistant");
        let t = h.event(&Event::TextDelta("hi".into())).expect("a chunk");
        assert_eq!(
            (t["id"].as_str(), t["model"].as_str()),
            (Some("chatcmpl-up"), Some("gpt-x"))
        );
        assert_eq!(t["choices"][0]["delta"]["content"], "hi");
        let call = h
            .event(&Event::ToolCallDelta(pb::ToolCallDelta {
                index: 1,
                id: "c".into(),
                name: "f".into(),
                arguments_delta: "{".into(),
            }))
            .expect("a chunk");
        assert_eq!(call["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(
            call["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "f"
        );
        let fin = h
            .event(&Event::Finish(pb::Finish {
                finish_reason: "stop".into(),
            }))
            .expect("a chunk");
        assert_eq!(fin["choices"][0]["finish_reason"], "stop");
        assert!(h.event(&Event::Usage(pb::Usage::default())).is_none());
        assert_eq!(
            h.usage(&pb::Usage {
                input_tokens: 1,
                output_tokens: 2,
                ..Default::default()
            })["usage"]["total_tokens"],
            3
        );
        assert!(sse(&fin).starts_with(b"data: {") && sse(&fin).ends_with(b"}\n\n"));
    }

    #[test]
    fn a_text_delta_written_straight_reads_as_the_tree_one() {
        for fingerprint in [None, Some("fp_1".to_owned())] {
            let head = StreamHead {
                id: "chatcmpl-1".into(),
                model: "m \"quoted\"".into(),
                created: 1_700_000_000,
                fingerprint,
            };
            let text = "line\n\"esc\" é 🙂";
            let tree = head
                .event(&pb::generate_stream_event::Event::TextDelta(text.into()))
                .expect("a chunk");
            let fast = head.text_sse(text);
            let body = fast
                .strip_prefix(b"data: ")
                .and_then(|b| b.strip_suffix(b"\n\n"))
                .expect("one SSE event");
            let fast: Value = serde_json::from_slice(body).expect("JSON");
            assert_eq!(fast, tree);
        }
    }
}
