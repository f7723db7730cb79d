//! The chat completions request body (what is sent, and what is not: see
//! the module above).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use super::super::wire::{float, merge_extra};
use super::super::{
    ChatRequest, Detail, Message, Part, PartKind, Reasoning, ResponseFormat, Role, Source, Target,
    Tool, ToolChoice, UpstreamError,
};

pub(in crate::upstream) fn request_body(
    t: &Target,
    req: &ChatRequest,
    stream: bool,
) -> Result<Value, UpstreamError> {
    let mut b = Map::new();
    b.insert("model".into(), json!(t.model));
    let messages = req.messages.iter().map(message).collect::<Result<_, _>>()?;
    b.insert("messages".into(), Value::Array(messages));
    if !req.tools.is_empty() {
        b.insert("tools".into(), req.tools.iter().map(tool).collect());
    }
    let max_key = if openai_itself(t) || req.reasoning.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let opt = [
        ("tool_choice", req.tool_choice.as_ref().map(tool_choice)),
        (
            "parallel_tool_calls",
            req.parallel_tool_calls.map(Value::Bool),
        ),
        (
            max_key,
            req.max_tokens.or(t.default_max_tokens).map(|v| json!(v)),
        ),
        ("temperature", req.temperature.map(float)),
        ("top_p", req.top_p.map(float)),
        ("top_k", req.top_k.map(|v| json!(v))),
        ("presence_penalty", req.presence_penalty.map(float)),
        ("frequency_penalty", req.frequency_penalty.map(float)),
        ("seed", req.seed.map(|v| json!(v))),
        ("stop", (!req.stop.is_empty()).then(|| json!(req.stop))),
        ("response_format", response_format(&req.response_format)),
        ("reasoning_effort", req.reasoning.as_ref().and_then(effort)),
        ("user", req.user.as_ref().map(|u| json!(u))),
        ("n", req.n.map(|v| json!(v))),
        ("logprobs", req.logprobs.then_some(Value::Bool(true))),
        (
            "top_logprobs",
            req.top_logprobs.filter(|_| req.logprobs).map(|v| json!(v)),
        ),
    ];
    b.extend(
        opt.into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?))),
    );
    merge_extra(&mut b, req.extra.as_ref());
    // After extra, so nothing turns the usage frame off: a stream's tokens
    // are charged to limits and budgets from it (intake refuses these keys
    // in extra too).
    if stream {
        b.insert("stream".into(), json!(true));
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(b))
}

/// Whether the target is OpenAI's own API (or Azure OpenAI), which wants
/// `max_completion_tokens`.
fn openai_itself(t: &Target) -> bool {
    // Runs for every request: the host read off the URL by hand (no parse,
    // no allocation), `scheme://[user@]host[:port][/path]`.
    let rest = t.base_url.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = host_port.split(':').next().unwrap_or_default();
    host.eq_ignore_ascii_case("api.openai.com")
        || host
            .get(host.len().saturating_sub(17)..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".openai.azure.com"))
}

/// The effort asked for, or the one nearest a token budget.
fn effort(r: &Reasoning) -> Option<Value> {
    let e = match (r.effort, r.budget_tokens) {
        (Some(e), _) => e.as_str(),
        (None, Some(b)) if b <= 2048 => "low",
        (None, Some(b)) if b <= 8192 => "medium",
        (None, Some(_)) => "high",
        (None, None) => return None,
    };
    Some(json!(e))
}

fn response_format(f: &ResponseFormat) -> Option<Value> {
    match f {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json!({"type": "json_object"})),
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let mut s = json!({"name": name, "schema": schema, "strict": strict});
            if let Some(d) = description {
                s["description"] = json!(d);
            }
            Some(json!({"type": "json_schema", "json_schema": s}))
        }
    }
}

fn tool_choice(c: &ToolChoice) -> Value {
    match c {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

fn tool(tool: &Tool) -> Value {
    let parameters = match tool.parameters_json.trim() {
        "" => json!({}),
        s => serde_json::from_str(s).unwrap_or_else(|_| json!({"type": "object"})),
    };
    let mut f = json!({"name": tool.name, "parameters": parameters});
    if !tool.description.is_empty() {
        f["description"] = json!(tool.description);
    }
    if tool.strict {
        f["strict"] = json!(true);
    }
    json!({"type": "function", "function": f})
}

fn message(m: &Message) -> Result<Value, UpstreamError> {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let content = if m.parts.is_empty() {
        json!(m.content)
    } else {
        let media = m.parts.iter().any(|p| !matches!(p.kind, PartKind::Text(_)));
        if media && m.role != Role::User {
            return Err(UpstreamError::Unsupported(
                "OpenAI-compatible members take images and documents in user messages only".into(),
            ));
        }
        Value::Array(m.parts.iter().map(part).collect::<Result<_, _>>()?)
    };
    let mut v = json!({"role": role, "content": content});
    if m.role == Role::Assistant && !m.tool_calls.is_empty() {
        if m.parts.is_empty() && m.content.is_empty() {
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
    Ok(v)
}

fn data_url(media_type: &str, data: &[u8]) -> String {
    format!("data:{media_type};base64,{}", B64.encode(data))
}

fn part(p: &Part) -> Result<Value, UpstreamError> {
    Ok(match &p.kind {
        PartKind::Text(text) => json!({"type": "text", "text": text}),
        PartKind::Image { source, detail } => {
            let url = match source {
                Source::Url(u) => u.clone(),
                Source::Data { media_type, data } => data_url(media_type, data),
            };
            let mut image_url = json!({ "url": url });
            if let Some(d) = detail {
                image_url["detail"] = json!(match d {
                    Detail::Auto => "auto",
                    Detail::Low => "low",
                    Detail::High => "high",
                });
            }
            json!({"type": "image_url", "image_url": image_url})
        }
        PartKind::Document { source, filename } => document(source, filename.as_deref())?,
    })
}

/// A base64 `data:` URL's media type (parameters dropped) and bytes.
fn decode_data_url(url: &str) -> Option<(String, Vec<u8>)> {
    let (head, payload) = url.strip_prefix("data:")?.split_once(',')?;
    let head = head.strip_suffix(";base64")?;
    let media_type = head.split(';').next().unwrap_or_default().trim();
    let data = B64.decode(payload.trim()).ok()?;
    Some((media_type.to_ascii_lowercase(), data))
}

fn document(source: &Source, filename: Option<&str>) -> Result<Value, UpstreamError> {
    let decoded;
    let (media_type, data) = match source {
        Source::Data { media_type, data } => (media_type.as_str(), data.as_slice()),
        Source::Url(u) => {
            decoded = decode_data_url(u).ok_or_else(|| {
                UpstreamError::Unsupported(
                    "OpenAI-compatible members take documents as inline data, not by URL".into(),
                )
            })?;
            (decoded.0.as_str(), decoded.1.as_slice())
        }
    };
    match media_type {
        "application/pdf" => Ok(json!({"type": "file", "file": {
            "file_data": data_url(media_type, data),
            "filename": filename.unwrap_or("document.pdf"),
        }})),
        "text/plain" => match std::str::from_utf8(data) {
            Ok(text) => Ok(json!({"type": "text", "text": text})),
            Err(_) => Err(UpstreamError::Unsupported(
                "a text/plain document that is not UTF-8 cannot be sent as text".into(),
            )),
        },
        other => Err(UpstreamError::Unsupported(format!(
            "OpenAI-compatible members take PDF and plain-text documents, not {:?}",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::super::{
        Cache, Effort, ReasoningBlock, Target, Tool, ToolCall, UpstreamError,
    };
    use super::super::tests::{msg, target, tool as tool_def};
    use super::*;

    fn user_parts(kinds: Vec<PartKind>) -> Message {
        let parts = kinds
            .into_iter()
            .map(|kind| Part { kind, cache: None })
            .collect();
        Message {
            parts,
            ..msg(Role::User, "")
        }
    }

    fn body(req: &ChatRequest) -> Value {
        request_body(&target("x"), req, false).expect("body")
    }

    fn messages_of(m: Message) -> Result<Value, UpstreamError> {
        let req = ChatRequest {
            messages: vec![m],
            ..Default::default()
        };
        request_body(&target("x"), &req, false).map(|b| b["messages"].clone())
    }

    #[test]
    fn parts_become_a_content_array() {
        let m = user_parts(vec![
            PartKind::Text("look".into()),
            PartKind::Image {
                source: Source::Url("https://x/cat.png".into()),
                detail: Some(Detail::Low),
            },
            PartKind::Image {
                source: Source::Data {
                    media_type: "image/png".into(),
                    data: b"png!".to_vec(),
                },
                detail: None,
            },
            PartKind::Document {
                source: Source::Data {
                    media_type: "application/pdf".into(),
                    data: b"%PDF".to_vec(),
                },
                filename: Some("a.pdf".into()),
            },
            PartKind::Document {
                source: Source::Data {
                    media_type: "application/pdf".into(),
                    data: b"%PDF".to_vec(),
                },
                filename: None,
            },
            PartKind::Document {
                source: Source::Data {
                    media_type: "text/plain".into(),
                    data: "notes: é".as_bytes().to_vec(),
                },
                filename: Some("n.txt".into()),
            },
            PartKind::Document {
                source: Source::Url("data:application/pdf;base64,JVBERg==".into()),
                filename: None,
            },
        ]);
        let want = json!([{"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,cG5nIQ=="}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "document.pdf"}},
            {"type": "text", "text": "notes: é"},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "document.pdf"}},
        ]}]);
        assert_eq!(messages_of(m).expect("body"), want);
    }

    #[test]
    fn documents_by_url_and_media_outside_user_messages_are_unsupported() {
        let doc = |source| PartKind::Document {
            source,
            filename: None,
        };
        let by_url = user_parts(vec![doc(Source::Url("https://x/a.pdf".into()))]);
        let err = messages_of(by_url).expect_err("unsupported");
        assert!(
            matches!(&err, UpstreamError::Unsupported(m)
                if m == "OpenAI-compatible members take documents as inline data, not by URL"),
            "{err:?}"
        );
        let latin1 = user_parts(vec![doc(Source::Data {
            media_type: "text/plain".into(),
            data: vec![0xe9, 0x20],
        })]);
        assert!(matches!(
            messages_of(latin1),
            Err(UpstreamError::Unsupported(_))
        ));
        let image = PartKind::Image {
            source: Source::Url("https://x/cat.png".into()),
            detail: None,
        };
        let in_tool = Message {
            role: Role::Tool,
            tool_call_id: Some("c1".into()),
            ..user_parts(vec![image])
        };
        assert!(matches!(
            messages_of(in_tool),
            Err(UpstreamError::Unsupported(_))
        ));
        // Text parts are fine anywhere.
        let text = Message {
            role: Role::Tool,
            tool_call_id: Some("c1".into()),
            ..user_parts(vec![PartKind::Text("42".into())])
        };
        let want = json!([{"role": "tool", "content": [{"type": "text", "text": "42"}], "tool_call_id": "c1"}]);
        assert_eq!(messages_of(text).expect("body"), want);
    }

    #[test]
    fn tools_strict_choice_and_parallel_calls() {
        let strict = Tool {
            strict: true,
            ..tool_def("f", "", r#"{"type":"object"}"#)
        };
        let choices = [
            (ToolChoice::Auto, json!("auto")),
            (ToolChoice::None, json!("none")),
            (ToolChoice::Required, json!("required")),
            (
                ToolChoice::Function("f".into()),
                json!({"type": "function", "function": {"name": "f"}}),
            ),
        ];
        for (choice, want_choice) in choices {
            let req = ChatRequest {
                tools: vec![strict.clone()],
                tool_choice: Some(choice),
                parallel_tool_calls: Some(false),
                ..Default::default()
            };
            let want = json!({
                "model": "m-1", "messages": [],
                "tools": [{"type": "function", "function":
                    {"name": "f", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": want_choice,
                "parallel_tool_calls": false,
            });
            assert_eq!(body(&req), want);
        }
    }

    #[test]
    fn json_schema_response_format() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let req = |description: Option<&str>| ChatRequest {
            response_format: ResponseFormat::JsonSchema {
                name: "answer".into(),
                description: description.map(str::to_string),
                schema: schema.clone(),
                strict: true,
            },
            ..Default::default()
        };
        let want = json!({"model": "m-1", "messages": [], "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "description": "the answer", "schema": schema, "strict": true},
        }});
        assert_eq!(body(&req(Some("the answer"))), want);
        let want = json!({"model": "m-1", "messages": [], "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": true},
        }});
        assert_eq!(body(&req(None)), want);
    }

    #[test]
    fn reasoning_effort_and_budget_mapping() {
        let with = |effort, budget_tokens| ChatRequest {
            reasoning: Some(Reasoning {
                effort,
                budget_tokens,
            }),
            max_tokens: Some(500),
            ..Default::default()
        };
        let cases = [
            (Some(Effort::Minimal), None, "minimal"),
            (Some(Effort::High), Some(100), "high"),
            (None, Some(1024), "low"),
            (None, Some(2048), "low"),
            (None, Some(2049), "medium"),
            (None, Some(8192), "medium"),
            (None, Some(8193), "high"),
        ];
        for (effort, budget, want_effort) in cases {
            // With reasoning, the cap is max_completion_tokens anywhere.
            let want = json!({"model": "m-1", "messages": [],
                "max_completion_tokens": 500, "reasoning_effort": want_effort});
            assert_eq!(body(&with(effort, budget)), want, "{effort:?} {budget:?}");
        }
    }

    #[test]
    fn max_tokens_name_by_base_url_and_default() {
        let req = ChatRequest {
            max_tokens: Some(100),
            ..Default::default()
        };
        let cases = [
            ("https://api.openai.com/v1", "max_completion_tokens"),
            ("https://API.OpenAI.com/v1/", "max_completion_tokens"),
            (
                "https://acme.openai.azure.com/openai/deployments/d",
                "max_completion_tokens",
            ),
            ("https://api.deepseek.com/v1", "max_tokens"),
            ("http://127.0.0.1:8000/v1", "max_tokens"),
            ("https://api.openai.com.evil.example/v1", "max_tokens"),
            ("https://key@api.openai.com:443/v1", "max_completion_tokens"),
            ("https://evil.example/api.openai.com", "max_tokens"),
            ("https://x.openai.azure.com.evil.example", "max_tokens"),
        ];
        for (base, key) in cases {
            let got = request_body(&target(base), &req, false).expect("body");
            let mut want = json!({"model": "m-1", "messages": []});
            want[key] = json!(100);
            assert_eq!(got, want, "{base}");
        }
        // The member's default when the request sets none; the request's otherwise.
        let t = Target {
            default_max_tokens: Some(4096),
            ..target("http://vllm:8000/v1")
        };
        let got = request_body(&t, &ChatRequest::default(), false).expect("body");
        assert_eq!(
            got,
            json!({"model": "m-1", "messages": [], "max_tokens": 4096})
        );
        let got = request_body(&t, &req, false).expect("body");
        assert_eq!(
            got,
            json!({"model": "m-1", "messages": [], "max_tokens": 100})
        );
    }

    #[test]
    fn penalties_top_k_user_n_and_logprobs() {
        let req = ChatRequest {
            presence_penalty: Some(0.5),
            frequency_penalty: Some(-1.2),
            top_k: Some(40),
            user: Some("u-7".into()),
            n: Some(3),
            logprobs: true,
            top_logprobs: Some(2),
            ..Default::default()
        };
        let want = json!({"model": "m-1", "messages": [],
            "presence_penalty": 0.5, "frequency_penalty": -1.2, "top_k": 40,
            "user": "u-7", "n": 3, "logprobs": true, "top_logprobs": 2});
        assert_eq!(body(&req), want);
    }

    #[test]
    fn extra_is_merged_last_and_its_keys_win_but_the_usage_frame_stays() {
        let extra = json!({"temperature": 0.1, "repetition_penalty": 1.1,
            "stream_options": {"include_usage": false}});
        let req = ChatRequest {
            temperature: Some(0.7),
            max_tokens: Some(10),
            extra: extra.as_object().cloned(),
            ..Default::default()
        };
        let want = json!({"model": "m-1", "messages": [], "max_tokens": 10,
            "temperature": 0.1, "repetition_penalty": 1.1,
            "stream": true, "stream_options": {"include_usage": true}});
        assert_eq!(request_body(&target("x"), &req, true).expect("body"), want);
    }

    #[test]
    fn reasoning_blocks_and_cache_markers_are_not_sent() {
        let cache = Some(Cache {
            ttl: Some("1h".into()),
        });
        let thought = ReasoningBlock {
            text: "thinking".into(),
            signature: Some("sig".into()),
            redacted: None,
        };
        let call = ToolCall {
            id: "c1".into(),
            name: "f".into(),
            arguments_json: "{}".into(),
        };
        let req = ChatRequest {
            messages: vec![
                Message {
                    cache: cache.clone(),
                    ..msg(Role::System, "sys")
                },
                Message {
                    parts: vec![Part {
                        kind: PartKind::Text("hi".into()),
                        cache: cache.clone(),
                    }],
                    ..msg(Role::User, "")
                },
                Message {
                    reasoning: vec![thought],
                    tool_calls: vec![call],
                    ..msg(Role::Assistant, "")
                },
                Message {
                    tool_call_id: Some("c1".into()),
                    is_error: true,
                    ..msg(Role::Tool, "failed")
                },
            ],
            tools: vec![Tool {
                cache,
                ..tool_def("f", "", "")
            }],
            ..Default::default()
        };
        let want = json!({"model": "m-1", "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "content": "failed", "tool_call_id": "c1"},
        ], "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]});
        assert_eq!(body(&req), want);
    }
}
