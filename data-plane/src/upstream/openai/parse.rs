//! Chat completions answers: the unary body and the SSE stream, read into
//! borrowed, lenient structs (`lenient`): no `serde_json::Value` is built.

use eventsource_stream::Event;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::super::lenient::{Float, List, Num, Obj, Str, read};
use super::super::wire::{SseDecoder, error_of, event_message, sat};
use super::super::{
    Choice, Chunk, Completion, ReasoningBlock, ResponseMeta, TokenLogprob, ToolCall, TopLogprob,
    UpstreamError, Usage,
};

/// A unary answer or a stream event: what is read of it.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Answer<'a> {
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    model: Str<'a>,
    #[serde(borrow)]
    system_fingerprint: Str<'a>,
    #[serde(borrow)]
    choices: List<Obj<ChoiceIn<'a>>>,
    usage: Obj<UsageIn>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ChoiceIn<'a> {
    index: Num,
    /// Unary answers.
    #[serde(borrow)]
    message: Obj<MessageIn<'a>>,
    /// Stream events.
    #[serde(borrow)]
    delta: Obj<MessageIn<'a>>,
    #[serde(borrow)]
    finish_reason: Str<'a>,
    #[serde(borrow)]
    logprobs: Obj<LogprobsIn<'a>>,
}

/// A message (unary) or a delta (stream).
#[derive(Default, Deserialize)]
#[serde(default)]
struct MessageIn<'a> {
    #[serde(borrow)]
    content: Str<'a>,
    #[serde(borrow)]
    refusal: Str<'a>,
    #[serde(borrow)]
    reasoning_content: Str<'a>,
    #[serde(borrow)]
    reasoning: Str<'a>,
    #[serde(borrow)]
    tool_calls: List<Obj<CallIn<'a>>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CallIn<'a> {
    index: Num,
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    function: Obj<FunctionIn<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct FunctionIn<'a> {
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(borrow)]
    arguments: Str<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct LogprobsIn<'a> {
    #[serde(borrow)]
    content: List<Obj<TokenIn<'a>>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TokenIn<'a> {
    #[serde(borrow)]
    token: Str<'a>,
    logprob: Float,
    bytes: List<Num>,
    #[serde(borrow)]
    top_logprobs: List<Obj<TokenIn<'a>>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct UsageIn {
    prompt_tokens: Num,
    completion_tokens: Num,
    prompt_tokens_details: Obj<PromptDetails>,
    /// DeepSeek's cache hits.
    prompt_cache_hit_tokens: Num,
    completion_tokens_details: Obj<CompletionDetails>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PromptDetails {
    cached_tokens: Num,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CompletionDetails {
    reasoning_tokens: Num,
}

/// Usage with its details: `prompt_tokens_details.cached_tokens` (or
/// DeepSeek's `prompt_cache_hit_tokens`) and
/// `completion_tokens_details.reasoning_tokens`; `None` unless an object.
fn usage_of(u: Obj<UsageIn>) -> Option<Usage> {
    let u = u.0?;
    let n = |v: Num| v.0.map_or(0, sat);
    let cached = u
        .prompt_tokens_details
        .0
        .and_then(|d| d.cached_tokens.0)
        .or(u.prompt_cache_hit_tokens.0);
    let reasoning = u.completion_tokens_details.0.map(|d| d.reasoning_tokens);
    Some(Usage {
        input_tokens: n(u.prompt_tokens),
        output_tokens: n(u.completion_tokens),
        cached_input_tokens: cached.map_or(0, sat),
        reasoning_tokens: reasoning.map_or(0, n),
        ..Usage::default()
    })
}

fn meta_of(id: Str<'_>, model: Str<'_>, system_fingerprint: Str<'_>) -> ResponseMeta {
    ResponseMeta {
        id: id.nonempty(),
        model: model.nonempty(),
        system_fingerprint: system_fingerprint.nonempty(),
        rate: None,
    }
}

impl MessageIn<'_> {
    /// Reasoning text: `reasoning_content` (DeepSeek, vLLM) or else
    /// `reasoning` (OpenRouter), never both.
    fn take_reasoning(&mut self) -> Option<String> {
        std::mem::take(&mut self.reasoning_content)
            .nonempty()
            .or_else(|| std::mem::take(&mut self.reasoning).nonempty())
    }
}

fn bytes_of(v: List<Num>) -> Vec<u8> {
    let ints = v.items().into_iter();
    ints.filter_map(|b| b.0.and_then(|b| u8::try_from(b).ok()))
        .collect()
}

fn logprobs_of(lp: Obj<LogprobsIn<'_>>) -> Vec<TokenLogprob> {
    let tokens = lp.0.map(|lp| lp.content.items()).unwrap_or_default();
    tokens
        .into_iter()
        .map(|t| {
            let t = t.0.unwrap_or_default();
            TokenLogprob {
                token: t.token.owned().unwrap_or_default(),
                logprob: t.logprob.0.unwrap_or_default(),
                bytes: bytes_of(t.bytes),
                top: t
                    .top_logprobs
                    .items()
                    .into_iter()
                    .map(|x| {
                        let x = x.0.unwrap_or_default();
                        TopLogprob {
                            token: x.token.owned().unwrap_or_default(),
                            logprob: x.logprob.0.unwrap_or_default(),
                            bytes: bytes_of(x.bytes),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

fn choice_of(c: ChoiceIn<'_>) -> Result<Choice, UpstreamError> {
    let Some(mut msg) = c.message.0 else {
        return Err(UpstreamError::Protocol(
            "response has no choices[].message".into(),
        ));
    };
    let reasoning = msg.take_reasoning();
    // A refusal comes instead of content.
    let content = msg.content.nonempty().or_else(|| msg.refusal.nonempty());
    Ok(Choice {
        content: content.unwrap_or_default(),
        tool_calls: msg
            .tool_calls
            .items()
            .into_iter()
            .map(|c| {
                let c = c.0.unwrap_or_default();
                let f = c.function.0.unwrap_or_default();
                ToolCall {
                    id: c.id.owned().unwrap_or_default(),
                    name: f.name.owned().unwrap_or_default(),
                    arguments_json: f.arguments.owned().unwrap_or_default(),
                }
            })
            .collect(),
        // A whole body arrived, so it did finish; some servers omit the reason.
        finish_reason: c.finish_reason.owned().unwrap_or_else(|| "stop".into()),
        reasoning: reasoning
            .map(|text| ReasoningBlock {
                text,
                signature: None,
                redacted: None,
            })
            .into_iter()
            .collect(),
        logprobs: logprobs_of(c.logprobs),
    })
}

pub(super) fn parse_completion(body: &[u8]) -> Result<Completion, UpstreamError> {
    let v: Answer<'_> = read(body)?;
    if let Some(message) = error_of(v.error) {
        return Err(UpstreamError::Event { message });
    }
    // In `index` order (servers send them so; this makes sure).
    let mut choices: Vec<_> = v
        .choices
        .items()
        .into_iter()
        .enumerate()
        .map(|(pos, c)| {
            let c = c.0.unwrap_or_default();
            (c.index.0.unwrap_or(pos as u64), c)
        })
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
        usage: usage_of(v.usage),
        reasoning: first.reasoning,
        logprobs: first.logprobs,
        meta: meta_of(v.id, v.model, v.system_fingerprint),
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
        let v: Answer<'_> = read(data.as_bytes())?;
        if let Some(message) = error_of(v.error) {
            return Err(UpstreamError::Event { message });
        }
        if !self.meta_sent && v.id.as_str().is_some_and(|id| !id.is_empty()) {
            self.meta_sent = true;
            out.push(Chunk::Meta(meta_of(v.id, v.model, v.system_fingerprint)));
        }
        let choice = v
            .choices
            .items()
            .into_iter()
            .next()
            .and_then(|c| c.0)
            .unwrap_or_default();
        let mut delta = choice.delta.0.unwrap_or_default();
        if let Some(text) = delta.take_reasoning() {
            out.push(Chunk::Reasoning {
                index: 0,
                text,
                signature: None,
                redacted: None,
            });
        }
        if let Some(text) = delta.content.nonempty() {
            out.push(Chunk::Text(text));
        }
        for (pos, c) in delta.tool_calls.items().into_iter().enumerate() {
            let c = c.0.unwrap_or_default();
            let f = c.function.0.unwrap_or_default();
            let (id, name) = (c.id.owned(), f.name.owned());
            let arguments = f.arguments.owned().unwrap_or_default();
            if id.is_some() || name.is_some() || !arguments.is_empty() {
                let index = c.index.0.map_or(sat(pos as u64), sat);
                out.push(Chunk::ToolCall {
                    index,
                    id,
                    name,
                    arguments,
                });
            }
        }
        if let Some(reason) = choice.finish_reason.owned() {
            self.finish = Some(reason);
        }
        out.extend(usage_of(v.usage).map(Chunk::Usage));
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

    #[test]
    fn nulls_unknown_fields_escapes_and_no_usage_read_as_before() {
        let body = br#"{"id":null,"model":"m\u00e9","extra":{"deep":[1,{"x":null}]},
            "choices":[{"message":{"content":"say \"hi\"\n","tool_calls":[
              {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},
              {"id":7,"function":null}]},"finish_reason":null}],"usage":null}"#;
        let c = parse_completion(body).expect("parses");
        assert_eq!(c.content, "say \"hi\"\n");
        assert_eq!(c.finish_reason, "stop");
        assert_eq!(c.usage, None);
        assert_eq!((c.meta.id, c.meta.model), (None, Some("mé".into())));
        let calls = [
            ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments_json: r#"{"a":1}"#.into(),
            },
            ToolCall::default(),
        ];
        assert_eq!(c.tool_calls, calls);
        // Usage fields of the wrong type count 0; an error object wins over choices.
        let odd = br#"{"choices":[{"message":{"content":"a"}}],
            "usage":{"prompt_tokens":"3","completion_tokens":2.5,"prompt_tokens_details":null}}"#;
        assert_eq!(
            parse_completion(odd).expect("parses").usage,
            Some(Usage::new(0, 0))
        );
        let err = br#"{"error":{"type":"server_error","message":"down \u0021"},"choices":[]}"#;
        assert!(matches!(parse_completion(err),
            Err(UpstreamError::Event { message }) if message == "down !"));
        let null_error = br#"{"error":null,"choices":[{"message":{"content":"ok"}}]}"#;
        assert_eq!(parse_completion(null_error).expect("parses").content, "ok");
        assert!(matches!(
            parse_completion(b"[]"),
            Err(UpstreamError::Protocol(_))
        ));
    }

    #[test]
    fn stream_tool_call_deltas_with_escapes_nulls_and_unknown_fields() {
        let body = sse(&[
            r#"{"id":"","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":""}}]},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x"}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":\"a\\\"b\"}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":null,"function":{"name":null,"arguments":null}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":4,"completion_tokens":3}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            run::<Decoder>(&body, 5, false),
            [
                "call 0 call_1 get ",
                r#"call 0 - - {"q":"a\"b"}"#,
                "usage 4/3",
                "finish tool_calls",
            ]
        );
    }
}
