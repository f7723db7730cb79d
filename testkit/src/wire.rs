//! Wire formats: OpenAI Chat Completions and Anthropic Messages, JSON and SSE.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

/// Which provider's wire format a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    OpenAi,
    Anthropic,
}

/// One SSE frame; `content` marks frames that carry answer text.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub(crate) bytes: Bytes,
    pub(crate) content: bool,
}

/// What one request is answered with.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) id: String,
    pub(crate) model: String,
    pub(crate) chunks: Vec<String>,
    pub(crate) prompt_tokens: u64,
}

impl Answer {
    pub(crate) fn new(wire: Wire, seq: u64, model: &str, chunks: usize, body: &Value) -> Self {
        let id = match wire {
            Wire::OpenAi => format!("chatcmpl-fake{seq:08}"),
            Wire::Anthropic => format!("msg_fake{seq:08}"),
        };
        Self {
            id,
            model: model.to_owned(),
            chunks: answer_chunks(model, chunks),
            prompt_tokens: prompt_tokens(body),
        }
    }

    pub(crate) fn text(&self) -> String {
        self.chunks.concat()
    }

    fn completion_tokens(&self) -> u64 {
        self.chunks.len() as u64
    }
}

/// `"<model> says hello"` split into exactly `n` chunks (at least one): padded with
/// `" w1"`, `" w2"`, ... when `n` exceeds three words, merged into the last chunk when fewer.
pub(crate) fn answer_chunks(model: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let mut words: Vec<String> = vec![model.to_owned(), "says".to_owned(), "hello".to_owned()];
    let mut pad = 1;
    while words.len() < n {
        words.push(format!("w{pad}"));
        pad += 1;
    }
    let mut chunks: Vec<String> = Vec::with_capacity(n);
    for (i, word) in words.into_iter().enumerate() {
        let piece = if i == 0 { word } else { format!(" {word}") };
        if chunks.len() < n {
            chunks.push(piece);
        } else if let Some(last) = chunks.last_mut() {
            last.push_str(&piece);
        }
    }
    chunks
}

/// A deterministic stand-in for a tokenizer: whitespace-separated words in the messages.
fn prompt_tokens(body: &Value) -> u64 {
    fn count(value: &Value) -> u64 {
        match value {
            Value::String(s) => s.split_whitespace().count() as u64,
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }
    count(&body["system"]) + count(&body["messages"]).max(1)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The complete (non-streaming) response body.
pub(crate) fn unary_body(wire: Wire, answer: &Answer) -> Value {
    let (prompt, completion) = (answer.prompt_tokens, answer.completion_tokens());
    match wire {
        Wire::OpenAi => json!({
            "id": answer.id,
            "object": "chat.completion",
            "created": now_secs(),
            "model": answer.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": answer.text()},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion
            }
        }),
        Wire::Anthropic => json!({
            "id": answer.id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [{"type": "text", "text": answer.text()}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": prompt, "output_tokens": completion}
        }),
    }
}

fn data_frame(value: &Value, content: bool) -> Piece {
    Piece {
        bytes: Bytes::from(format!("data: {value}\n\n")),
        content,
    }
}

fn event_frame(event: &str, value: &Value, content: bool) -> Piece {
    Piece {
        bytes: Bytes::from(format!("event: {event}\ndata: {value}\n\n")),
        content,
    }
}

/// Every SSE frame of a healthy stream, in order.
pub(crate) fn stream_pieces(wire: Wire, answer: &Answer, include_usage: bool) -> Vec<Piece> {
    match wire {
        Wire::OpenAi => openai_pieces(answer, include_usage),
        Wire::Anthropic => anthropic_pieces(answer),
    }
}

fn openai_pieces(answer: &Answer, include_usage: bool) -> Vec<Piece> {
    let created = now_secs();
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": answer.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
    };
    let mut pieces = vec![data_frame(
        &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        false,
    )];
    for text in &answer.chunks {
        pieces.push(data_frame(
            &chunk(json!({"content": text}), Value::Null),
            true,
        ));
    }
    pieces.push(data_frame(&chunk(json!({}), json!("stop")), false));
    if include_usage {
        let (prompt, completion) = (answer.prompt_tokens, answer.completion_tokens());
        let usage = json!({
            "id": answer.id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": answer.model,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion
            }
        });
        pieces.push(data_frame(&usage, false));
    }
    pieces.push(Piece {
        bytes: Bytes::from_static(b"data: [DONE]\n\n"),
        content: false,
    });
    pieces
}

fn anthropic_pieces(answer: &Answer) -> Vec<Piece> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": answer.id,
            "type": "message",
            "role": "assistant",
            "model": answer.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1}
        }
    });
    let mut pieces = vec![
        event_frame("message_start", &start, false),
        event_frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
            false,
        ),
        event_frame("ping", &json!({"type": "ping"}), false),
    ];
    for text in &answer.chunks {
        let delta = json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": text}});
        pieces.push(event_frame("content_block_delta", &delta, true));
    }
    pieces.push(event_frame(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
        false,
    ));
    pieces.push(event_frame(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": answer.completion_tokens()}}),
        false,
    ));
    pieces.push(event_frame(
        "message_stop",
        &json!({"type": "message_stop"}),
        false,
    ));
    pieces
}

/// The preamble frames and the first `n` content frames; frames after the content (finish
/// chunk, usage, `[DONE]`, `message_stop`, ...) are never included.
pub(crate) fn truncate_after_content(pieces: Vec<Piece>, n: usize) -> Vec<Piece> {
    let mut seen = 0;
    let mut cut = 0;
    for (i, piece) in pieces.iter().enumerate() {
        if piece.content {
            if seen == n {
                break;
            }
            seen += 1;
            cut = i + 1;
        } else if seen == 0 {
            cut = i + 1;
        } else {
            break;
        }
    }
    pieces.into_iter().take(cut).collect()
}

/// The in-stream error frame of [`crate::Fault::ErrorEvent`].
pub(crate) fn error_event(wire: Wire) -> Piece {
    match wire {
        Wire::OpenAi => data_frame(
            &json!({"error": {"message": "overloaded", "type": "server_error"}}),
            false,
        ),
        Wire::Anthropic => event_frame("error", &error_body(Wire::Anthropic, 529, None), false),
    }
}

/// The provider's error JSON for an HTTP status.
pub(crate) fn error_body(wire: Wire, code: u16, message: Option<&str>) -> Value {
    match wire {
        Wire::OpenAi => {
            let (kind, err_code, default) = match code {
                400 => ("invalid_request_error", Value::Null, "Bad request"),
                401 => (
                    "invalid_request_error",
                    json!("invalid_api_key"),
                    "Incorrect API key provided",
                ),
                403 => ("invalid_request_error", Value::Null, "Forbidden"),
                404 => ("invalid_request_error", Value::Null, "Not found"),
                429 => (
                    "requests",
                    json!("rate_limit_exceeded"),
                    "Rate limit reached for requests",
                ),
                529 | 503 => ("server_error", Value::Null, "overloaded"),
                _ => ("server_error", Value::Null, "The server had an error"),
            };
            json!({"error": {"message": message.unwrap_or(default), "type": kind,
                             "param": null, "code": err_code}})
        }
        Wire::Anthropic => {
            let (kind, default) = match code {
                400 => ("invalid_request_error", "Bad request"),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => ("permission_error", "Forbidden"),
                404 => ("not_found_error", "Not found"),
                413 => ("request_too_large", "Request too large"),
                429 => ("rate_limit_error", "Rate limited"),
                529 | 503 => ("overloaded_error", "Overloaded"),
                _ => ("api_error", "Internal server error"),
            };
            json!({"type": "error", "error": {"type": kind, "message": message.unwrap_or(default)}})
        }
    }
}

/// Top-level request fields each API knows (a strict upstream refuses the rest).
const OPENAI_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
    "service_tier",
    "store",
    "metadata",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    "input",
    "dimensions",
    "encoding_format",
];
const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
];

/// The first top-level field of `body` the API does not know, with the
/// error the real API answers it with (a 400 that names the field).
pub(crate) fn unknown_field_error(wire: Wire, body: &Value) -> Option<Value> {
    let known = match wire {
        Wire::OpenAi => OPENAI_FIELDS,
        Wire::Anthropic => ANTHROPIC_FIELDS,
    };
    let field = body
        .as_object()?
        .keys()
        .find(|k| !known.contains(&k.as_str()))?;
    Some(match wire {
        Wire::OpenAi => json!({"error": {
            "message": format!("Unrecognized request argument supplied: {field}"),
            "type": "invalid_request_error",
            "param": null,
            "code": null
        }}),
        Wire::Anthropic => error_body(
            Wire::Anthropic,
            400,
            Some(&format!("{field}: Extra inputs are not permitted")),
        ),
    })
}

/// The provider's 404 for an unknown model.
pub(crate) fn unknown_model_body(wire: Wire, model: &str) -> Value {
    match wire {
        Wire::OpenAi => json!({"error": {
            "message": format!(
                "The model `{model}` does not exist or you do not have access to it."
            ),
            "type": "invalid_request_error",
            "param": null,
            "code": "model_not_found"
        }}),
        Wire::Anthropic => error_body(Wire::Anthropic, 404, Some(&format!("model: {model}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_pad_and_merge() {
        assert_eq!(
            answer_chunks("m", 5),
            ["m", " says", " hello", " w1", " w2"]
        );
        assert_eq!(answer_chunks("m", 3), ["m", " says", " hello"]);
        assert_eq!(answer_chunks("m", 2), ["m", " says hello"]);
        assert_eq!(answer_chunks("m", 0), ["m says hello"]);
    }

    #[test]
    fn truncation_keeps_preamble_and_n_contents() {
        let answer = Answer::new(Wire::Anthropic, 1, "m", 5, &Value::Null);
        let all = stream_pieces(Wire::Anthropic, &answer, false);
        let cut = truncate_after_content(all.clone(), 2);
        assert_eq!(cut.len(), 5, "3 preamble frames + 2 deltas");
        assert_eq!(truncate_after_content(all.clone(), 0).len(), 3);
        let contents = all.iter().filter(|p| p.content).count();
        assert_eq!(truncate_after_content(all, 99).len(), 3 + contents);
    }
}
