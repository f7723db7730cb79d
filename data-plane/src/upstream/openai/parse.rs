//! Chat completions answers: the unary body and the SSE stream.

use eventsource_stream::Event;
use serde_json::Value;

use super::super::wire::{SseDecoder, error_in, event_message, parse_json, sat};
use super::super::{
    Choice, Chunk, Completion, ReasoningBlock, ResponseMeta, TokenLogprob, ToolCall, TopLogprob,
    UpstreamError, Usage,
};

pub(super) fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn nonempty(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// Usage with its details: `prompt_tokens_details.cached_tokens` (or
/// DeepSeek's `prompt_cache_hit_tokens`) and
/// `completion_tokens_details.reasoning_tokens`.
pub(super) fn usage_of(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    let n = |v: &Value| v.as_u64().map_or(0, sat);
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .or_else(|| u["prompt_cache_hit_tokens"].as_u64());
    Some(Usage {
        input_tokens: n(&u["prompt_tokens"]),
        output_tokens: n(&u["completion_tokens"]),
        cached_input_tokens: cached.map_or(0, sat),
        reasoning_tokens: n(&u["completion_tokens_details"]["reasoning_tokens"]),
        ..Usage::default()
    })
}

fn meta_of(v: &Value) -> ResponseMeta {
    ResponseMeta {
        id: nonempty(&v["id"]),
        model: nonempty(&v["model"]),
        system_fingerprint: nonempty(&v["system_fingerprint"]),
        rate: None,
    }
}

/// Reasoning text of a message or delta: `reasoning_content` (DeepSeek,
/// vLLM) or else `reasoning` (OpenRouter), never both.
fn reasoning_of(m: &Value) -> Option<String> {
    nonempty(&m["reasoning_content"]).or_else(|| nonempty(&m["reasoning"]))
}

fn bytes_of(v: &Value) -> Vec<u8> {
    let ints = v.as_array().into_iter().flatten();
    ints.filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
        .collect()
}

fn logprobs_of(lp: &Value) -> Vec<TokenLogprob> {
    let tokens = lp["content"].as_array().into_iter().flatten();
    tokens
        .map(|t| TokenLogprob {
            token: str_of(&t["token"]).unwrap_or_default(),
            logprob: t["logprob"].as_f64().unwrap_or_default(),
            bytes: bytes_of(&t["bytes"]),
            top: t["top_logprobs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| TopLogprob {
                    token: str_of(&x["token"]).unwrap_or_default(),
                    logprob: x["logprob"].as_f64().unwrap_or_default(),
                    bytes: bytes_of(&x["bytes"]),
                })
                .collect(),
        })
        .collect()
}

fn choice_of(c: &Value) -> Result<Choice, UpstreamError> {
    let msg = &c["message"];
    if !msg.is_object() {
        return Err(UpstreamError::Protocol(
            "response has no choices[].message".into(),
        ));
    }
    let calls = msg["tool_calls"].as_array().into_iter().flatten();
    // A refusal comes instead of content.
    let content = nonempty(&msg["content"]).or_else(|| nonempty(&msg["refusal"]));
    Ok(Choice {
        content: content.unwrap_or_default(),
        tool_calls: calls
            .map(|c| ToolCall {
                id: str_of(&c["id"]).unwrap_or_default(),
                name: str_of(&c["function"]["name"]).unwrap_or_default(),
                arguments_json: str_of(&c["function"]["arguments"]).unwrap_or_default(),
            })
            .collect(),
        // A whole body arrived, so it did finish; some servers omit the reason.
        finish_reason: str_of(&c["finish_reason"]).unwrap_or_else(|| "stop".into()),
        reasoning: reasoning_of(msg)
            .map(|text| ReasoningBlock {
                text,
                signature: None,
                redacted: None,
            })
            .into_iter()
            .collect(),
        logprobs: logprobs_of(&c["logprobs"]),
    })
}

pub(super) fn parse_completion(body: &[u8]) -> Result<Completion, UpstreamError> {
    let v = parse_json(body)?;
    if let Some(message) = error_in(&v) {
        return Err(UpstreamError::Event { message });
    }
    // In `index` order (servers send them so; this makes sure).
    let mut choices: Vec<_> = v["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(pos, c)| (c["index"].as_u64().unwrap_or(pos as u64), c))
        .collect();
    choices.sort_by_key(|(index, _)| *index);
    let mut choices = choices.into_iter().map(|(_, c)| choice_of(c));
    let first = choices
        .next()
        .ok_or_else(|| UpstreamError::Protocol("response has no choices[0].message".into()))??;
    Ok(Completion {
        content: first.content,
        tool_calls: first.tool_calls,
        finish_reason: first.finish_reason,
        usage: usage_of(&v["usage"]),
        reasoning: first.reasoning,
        logprobs: first.logprobs,
        meta: meta_of(&v),
        more_choices: choices.collect::<Result<_, _>>()?,
    })
}

/// Stream state: Meta once (from the first event with an `id`), Usage as it
/// arrives, Finish only at the end.
#[derive(Default)]
pub(super) struct Decoder {
    finish: Option<String>,
    meta_sent: bool,
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
        if !self.meta_sent && nonempty(&v["id"]).is_some() {
            self.meta_sent = true;
            out.push(Chunk::Meta(meta_of(&v)));
        }
        let choice = &v["choices"][0];
        let delta = &choice["delta"];
        if let Some(text) = reasoning_of(delta) {
            out.push(Chunk::Reasoning {
                index: 0,
                text,
                signature: None,
                redacted: None,
            });
        }
        if let Some(text) = nonempty(&delta["content"]) {
            out.push(Chunk::Text(text));
        }
        let calls = delta["tool_calls"].as_array().into_iter().flatten();
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
mod tests {
    use super::super::tests::{run, sse};
    use super::*;

    #[test]
    fn unary_in_openais_format_with_every_detail() {
        let body = br#"{
          "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
          "object": "chat.completion",
          "created": 1741570283,
          "model": "gpt-4o-2024-08-06",
          "choices": [
            {"index": 1, "message": {"role": "assistant", "content": null,
               "refusal": "I can't help with that.", "annotations": []},
             "logprobs": null, "finish_reason": "stop"},
            {"index": 0, "message": {"role": "assistant", "content": "Hi",
               "reasoning_content": "The user greets.", "refusal": null, "annotations": []},
             "logprobs": {"content": [
               {"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
                "top_logprobs": [
                  {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                  {"token": "Hey", "logprob": -1.5, "bytes": null}]}],
               "refusal": null},
             "finish_reason": "stop"}
          ],
          "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 20, "audio_tokens": 0,
              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
          "service_tier": "default",
          "system_fingerprint": "fp_fc9f1d7035"
        }"#;
        let c = parse_completion(body).expect("parses");
        let hi = TokenLogprob {
            token: "Hi".into(),
            logprob: -0.25,
            bytes: b"Hi".to_vec(),
            top: vec![
                TopLogprob {
                    token: "Hi".into(),
                    logprob: -0.25,
                    bytes: b"Hi".to_vec(),
                },
                TopLogprob {
                    token: "Hey".into(),
                    logprob: -1.5,
                    bytes: Vec::new(),
                },
            ],
        };
        let want = Completion {
            content: "Hi".into(),
            tool_calls: Vec::new(),
            finish_reason: "stop".into(),
            usage: Some(Usage {
                input_tokens: 1117,
                output_tokens: 46,
                cached_input_tokens: 1024,
                cache_write_input_tokens: 0,
                reasoning_tokens: 20,
            }),
            reasoning: vec![ReasoningBlock {
                text: "The user greets.".into(),
                signature: None,
                redacted: None,
            }],
            logprobs: vec![hi],
            meta: ResponseMeta {
                id: Some("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG".into()),
                model: Some("gpt-4o-2024-08-06".into()),
                system_fingerprint: Some("fp_fc9f1d7035".into()),
                rate: None,
            },
            more_choices: vec![Choice {
                content: "I can't help with that.".into(),
                finish_reason: "stop".into(),
                ..Choice::default()
            }],
        };
        assert_eq!(c, want);
    }

    #[test]
    fn openrouter_reasoning_deepseek_cache_hits_and_missing_details() {
        let body = br#"{"id":"gen-1","model":"deepseek/deepseek-r1","choices":[{"message":
            {"role":"assistant","content":"4","reasoning":"2+2"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":10,"completion_tokens":5,"prompt_cache_hit_tokens":8}}"#;
        let c = parse_completion(body).expect("parses");
        assert_eq!(
            (c.reasoning[0].text.as_str(), c.usage),
            (
                "2+2",
                Some(Usage {
                    cached_input_tokens: 8,
                    ..Usage::new(10, 5)
                })
            )
        );
        assert_eq!(c.meta.system_fingerprint, None);
        assert!(c.more_choices.is_empty() && c.logprobs.is_empty());
        // A choice without a message is malformed, even a later one.
        let bad = br#"{"choices":[{"message":{"content":"a"}},{"finish_reason":"stop"}]}"#;
        assert!(matches!(
            parse_completion(bad),
            Err(UpstreamError::Protocol(_))
        ));
    }

    #[test]
    fn stream_meta_first_then_reasoning_text_usage_and_finish() {
        let body = sse(&[
            r#"{"id":"chatcmpl-7","object":"chat.completion.chunk","created":1,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":"Let"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-7","model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":" me think"},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-7","model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"Yes","reasoning_content":null},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-7","model":"deepseek-reasoner","choices":[{"index":0,"delta":{"reasoning":"late"},"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-7","model":"deepseek-reasoner","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":1}}}"#,
            "[DONE]",
        ]);
        let want = [
            "meta chatcmpl-7 deepseek-reasoner fp_1",
            "reasoning 0 Let sig=- redacted=-",
            "reasoning 0  me think sig=- redacted=-",
            "text Yes",
            "reasoning 0 late sig=- redacted=-",
            "usage 9/2 cached=3 reasoning=1",
            "finish stop",
        ];
        for piece in [1, 3, 17, body.len()] {
            assert_eq!(run::<Decoder>(&body, piece, false), want, "{piece}");
        }
        // Meta comes from the first event with an id, before its content.
        let later = sse(&[
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"id":"x-1","choices":[{"delta":{"content":"b"},"finish_reason":"stop"}]}"#,
        ]);
        assert_eq!(
            run::<Decoder>(&later, 8, false),
            ["text a", "meta x-1 - -", "text b", "finish stop"]
        );
    }
}
