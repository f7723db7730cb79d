//! A whole chat completion in OpenAI's shape, written straight from the
//! answer's borrowed parts (no JSON tree is built, then written, then
//! dropped on every unary request).

use serde::Serialize;
use switchyard_proto::v1 as pb;

use super::chat_out::{Usage, answer_id, answer_model};
use crate::observe::stats::unix_secs;

#[derive(Serialize)]
pub struct Completion<'a> {
    id: String,
    object: &'static str,
    created: i64,
    model: String,
    choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    system_fingerprint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    logprobs: Option<Logprobs<'a>>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// Null when the answer is only tool calls.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    reasoning_content: &'a str,
    /// Anthropic-style thinking blocks (with signatures), so a client can
    /// send them back on the next turn.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    thinking_blocks: Vec<ThinkingBlock<'a>>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: Function<'a>,
}

#[derive(Serialize)]
struct Function<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum ThinkingBlock<'a> {
    #[serde(rename = "thinking")]
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    #[serde(rename = "redacted_thinking")]
    Redacted { data: &'a str },
}

#[derive(Serialize)]
struct Logprobs<'a> {
    content: Vec<TokenLogprob<'a>>,
}

#[derive(Serialize)]
struct TokenLogprob<'a> {
    #[serde(flatten)]
    token: Logprob<'a>,
    top_logprobs: Vec<Logprob<'a>>,
}

/// A token and its log probability (OpenAI's `top_logprobs` entry; with
/// those alternatives, a `content` entry).
#[derive(Serialize)]
struct Logprob<'a> {
    token: &'a str,
    logprob: f64,
    bytes: &'a [u8],
}

fn logprobs(l: &[pb::TokenLogprob]) -> Option<Logprobs<'_>> {
    (!l.is_empty()).then(|| Logprobs {
        content: l
            .iter()
            .map(|t| TokenLogprob {
                token: Logprob {
                    token: &t.token,
                    logprob: t.logprob,
                    bytes: &t.bytes,
                },
                top_logprobs: t
                    .top_logprobs
                    .iter()
                    .map(|x| Logprob {
                        token: &x.token,
                        logprob: x.logprob,
                        bytes: &x.bytes,
                    })
                    .collect(),
            })
            .collect(),
    })
}

fn message<'a>(
    content: &'a str,
    calls: &'a [pb::ToolCall],
    reasoning: &'a str,
    blocks: &'a [pb::ReasoningBlock],
) -> Message<'a> {
    Message {
        role: "assistant",
        content: (!content.is_empty() || calls.is_empty()).then_some(content),
        tool_calls: (!calls.is_empty()).then(|| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: &c.id,
                    r#type: "function",
                    function: Function {
                        name: &c.name,
                        arguments: &c.arguments_json,
                    },
                })
                .collect()
        }),
        reasoning_content: reasoning,
        thinking_blocks: blocks
            .iter()
            .filter(|b| !b.signature.is_empty() || !b.redacted_data.is_empty())
            .map(|b| {
                if b.redacted_data.is_empty() {
                    ThinkingBlock::Thinking {
                        thinking: &b.text,
                        signature: &b.signature,
                    }
                } else {
                    ThinkingBlock::Redacted {
                        data: &b.redacted_data,
                    }
                }
            })
            .collect(),
    }
}

/// A whole completion of `r`, answering a request for model `asked`.
pub fn completion<'a>(r: &'a pb::GenerateResponse, asked: &str) -> Completion<'a> {
    let choices = if r.choices.is_empty() {
        vec![Choice {
            index: 0,
            message: message(&r.content, &r.tool_calls, &r.reasoning, &r.reasoning_blocks),
            logprobs: logprobs(&r.logprobs),
            finish_reason: &r.finish_reason,
        }]
    } else {
        r.choices
            .iter()
            .map(|c| {
                // Signed thinking belongs to the first choice.
                let blocks = if c.index == 0 {
                    &r.reasoning_blocks[..]
                } else {
                    &[]
                };
                Choice {
                    index: c.index,
                    message: message(&c.content, &c.tool_calls, &c.reasoning, blocks),
                    logprobs: logprobs(&c.logprobs),
                    finish_reason: &c.finish_reason,
                }
            })
            .collect()
    };
    Completion {
        id: answer_id(&r.upstream_id, &r.request_id),
        object: "chat.completion",
        created: unix_secs(),
        model: answer_model(&r.response_model, r.served_by.as_ref(), asked),
        choices,
        system_fingerprint: &r.system_fingerprint,
        usage: r.usage.as_ref().map(Usage::of),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn written(r: &pb::GenerateResponse) -> Value {
        serde_json::to_value(completion(r, "coding")).expect("writes")
    }

    #[test]
    fn a_completion_in_openai_shape() {
        let r = pb::GenerateResponse {
            request_id: "r1".into(),
            content: String::new(),
            tool_calls: vec![pb::ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments_json: "{}".into(),
            }],
            finish_reason: "tool_calls".into(),
            usage: Some(pb::Usage {
                input_tokens: 10,
                output_tokens: 5,
                cached_input_tokens: 4,
                reasoning_tokens: 2,
                cache_write_input_tokens: 0,
            }),
            reasoning: "thought".into(),
            reasoning_blocks: vec![pb::ReasoningBlock {
                text: "thought".into(),
                signature: "s".into(),
                redacted_data: String::new(),
            }],
            served_by: Some(pb::ServedBy {
                upstream_model: "claude-x".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut v = written(&r);
        assert!(v["created"].as_i64().is_some_and(|t| t > 0));
        v["created"] = json!(0);
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-r1",
                "object": "chat.completion",
                "created": 0,
                "model": "claude-x",
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": null,
                        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                        "reasoning_content": "thought",
                        "thinking_blocks": [{"type": "thinking", "thinking": "thought", "signature": "s"}],
                    },
                    "logprobs": null,
                    "finish_reason": "tool_calls",
                }],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": 5,
                    "total_tokens": 15,
                    "prompt_tokens_details": {"cached_tokens": 4},
                    "completion_tokens_details": {"reasoning_tokens": 2},
                },
            })
        );
    }

    #[test]
    fn choices_logprobs_fingerprint_and_cache_writes() {
        let r = pb::GenerateResponse {
            upstream_id: "chatcmpl-up".into(),
            response_model: "gpt-x".into(),
            system_fingerprint: "fp_1".into(),
            choices: vec![
                pb::Choice {
                    index: 0,
                    content: "a".into(),
                    finish_reason: "stop".into(),
                    logprobs: vec![pb::TokenLogprob {
                        token: "a".into(),
                        logprob: -0.5,
                        bytes: vec![97],
                        top_logprobs: vec![pb::TopLogprob {
                            token: "b".into(),
                            logprob: -1.5,
                            bytes: vec![98],
                        }],
                    }],
                    ..Default::default()
                },
                pb::Choice {
                    index: 1,
                    content: "c".into(),
                    finish_reason: "length".into(),
                    ..Default::default()
                },
            ],
            reasoning_blocks: vec![pb::ReasoningBlock {
                redacted_data: "xyz".into(),
                ..Default::default()
            }],
            usage: Some(pb::Usage {
                input_tokens: 3,
                output_tokens: 2,
                cache_write_input_tokens: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = written(&r);
        assert_eq!(v["id"], "chatcmpl-up");
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["system_fingerprint"], "fp_1");
        assert_eq!(
            v["choices"][0]["logprobs"],
            json!({"content": [{"token": "a", "logprob": -0.5, "bytes": [97],
                "top_logprobs": [{"token": "b", "logprob": -1.5, "bytes": [98]}]}]})
        );
        assert_eq!(
            v["choices"][0]["message"]["thinking_blocks"],
            json!([{"type": "redacted_thinking", "data": "xyz"}])
        );
        assert_eq!(
            v["choices"][1],
            json!({"index": 1, "message": {"role": "assistant", "content": "c"},
                "logprobs": null, "finish_reason": "length"})
        );
        assert_eq!(v["usage"]["cache_creation_input_tokens"], 7);
    }
}
