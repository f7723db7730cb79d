//! An OpenAI chat completions body, read into the gRPC request the engine
//! takes (`pb::GenerateRequest`). The door adds no rules of its own: range
//! checks and the rest are `intake`'s, as for gRPC callers. Fields it does
//! not know go to `extra_json`, so provider-specific options pass through
//! (where the pool allows it).

use std::collections::HashMap;

use serde_json::Value;
use switchyard_proto::v1 as pb;

use super::json::{R, bad, bool_of, cache_of, f32_of, object, str_of, u32_of, unknown_fields};
use super::messages::message;

/// Fields the door reads (or knows to drop); everything else is `extra`.
const KNOWN: [&str; 27] = [
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "user",
    "n",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "reasoning_effort",
    "thinking",
    "metadata",
    "request_id",
    "extra_json",
    // Deprecated OpenAI fields the door refuses by name.
    "functions",
];

/// What the door needs besides the request itself.
pub struct Chat {
    pub request: pb::GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
}

fn tools(v: &Value) -> R<Vec<pb::ToolDefinition>> {
    let Some(items) = v.as_array() else {
        return if v.is_null() {
            Ok(Vec::new())
        } else {
            Err(bad("tools", "tools must be an array"))
        };
    };
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = format!("tools[{i}]");
            if t.get("type").and_then(Value::as_str).unwrap_or("function") != "function" {
                return Err(bad(
                    &format!("{p}.type"),
                    "only function tools are supported",
                ));
            }
            let f = t
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| bad(&p, format!("{p}.function is required")))?;
            let name = str_of(
                f.get("name").unwrap_or(&Value::Null),
                &format!("{p}.function.name"),
            )?
            .ok_or_else(|| bad(&format!("{p}.function.name"), "a tool needs a name"))?;
            Ok(pb::ToolDefinition {
                name: name.to_owned(),
                description: str_of(
                    f.get("description").unwrap_or(&Value::Null),
                    &format!("{p}.function.description"),
                )?
                .unwrap_or_default()
                .to_owned(),
                parameters_json: match f.get("parameters") {
                    None | Some(Value::Null) => String::new(),
                    Some(s) => s.to_string(),
                },
                strict: bool_of(
                    f.get("strict").unwrap_or(&Value::Null),
                    &format!("{p}.function.strict"),
                )?
                .unwrap_or(false),
                cache_control: cache_of(
                    t.get("cache_control").unwrap_or(&Value::Null),
                    &format!("{p}.cache_control"),
                )?,
            })
        })
        .collect()
}

fn tool_choice(v: &Value) -> R<Option<pb::ToolChoice>> {
    use pb::ToolChoiceMode as M;
    let (mode, function) = match v {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => (M::Auto, String::new()),
            "none" => (M::None, String::new()),
            "required" => (M::Required, String::new()),
            other => {
                return Err(bad(
                    "tool_choice",
                    format!(
                        "tool_choice is '{other}'; use auto, none, required or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}"
                    ),
                ));
            }
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice", "tool_choice.function.name is required"))?;
            (M::Function, name.to_owned())
        }
        _ => {
            return Err(bad(
                "tool_choice",
                "tool_choice must be a string or an object",
            ));
        }
    };
    Ok(Some(pb::ToolChoice {
        mode: mode.into(),
        function,
    }))
}

fn response_format(v: &Value, r: &mut pb::GenerateRequest) -> R<()> {
    if v.is_null() {
        return Ok(());
    }
    match v.get("type").and_then(Value::as_str) {
        Some("text") => r.response_format = pb::ResponseFormat::Text.into(),
        Some("json_object") => r.response_format = pb::ResponseFormat::JsonObject.into(),
        Some("json_schema") => {
            let s = v
                .get("json_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    bad(
                        "response_format.json_schema",
                        "response_format.json_schema is required",
                    )
                })?;
            r.response_format = pb::ResponseFormat::JsonSchema.into();
            r.json_schema = Some(pb::JsonSchema {
                name: str_of(
                    s.get("name").unwrap_or(&Value::Null),
                    "response_format.json_schema.name",
                )?
                .unwrap_or_default()
                .to_owned(),
                description: str_of(
                    s.get("description").unwrap_or(&Value::Null),
                    "response_format.json_schema.description",
                )?
                .unwrap_or_default()
                .to_owned(),
                schema_json: s.get("schema").map(Value::to_string).unwrap_or_default(),
                strict: bool_of(
                    s.get("strict").unwrap_or(&Value::Null),
                    "response_format.json_schema.strict",
                )?
                .unwrap_or(false),
            });
        }
        _ => {
            return Err(bad(
                "response_format.type",
                "response_format.type must be text, json_object or json_schema",
            ));
        }
    }
    Ok(())
}

fn stop(v: &Value) -> R<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("stop", "stop must be a string or an array of strings"))
            })
            .collect(),
        _ => Err(bad("stop", "stop must be a string or an array of strings")),
    }
}

fn metadata(v: &Value) -> R<HashMap<String, String>> {
    match v {
        Value::Null => Ok(HashMap::new()),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad("metadata", "metadata values must be strings")),
            })
            .collect(),
        _ => Err(bad("metadata", "metadata must be an object of strings")),
    }
}

/// Reads a chat completions body.
pub fn read(body: &[u8]) -> R<Chat> {
    let b = object(body)?;
    let get = |k: &str| b.get(k).unwrap_or(&Value::Null);
    if !get("functions").is_null() {
        return Err(bad("functions", "functions is deprecated; use tools"));
    }
    let model = str_of(get("model"), "model")?.ok_or_else(|| bad("model", "model is required"))?;
    let messages = get("messages")
        .as_array()
        .ok_or_else(|| bad("messages", "messages is required (an array)"))?;
    let mut r = pb::GenerateRequest {
        model: model.to_owned(),
        messages: messages
            .iter()
            .enumerate()
            .map(|(i, m)| message(m, i))
            .collect::<R<Vec<_>>>()?,
        tools: tools(get("tools"))?,
        tool_choice: tool_choice(get("tool_choice"))?,
        parallel_tool_calls: bool_of(get("parallel_tool_calls"), "parallel_tool_calls")?,
        // max_completion_tokens is the current name; max_tokens the old one.
        max_tokens: match u32_of(get("max_completion_tokens"), "max_completion_tokens")? {
            Some(n) => Some(n),
            None => u32_of(get("max_tokens"), "max_tokens")?,
        },
        temperature: f32_of(get("temperature"), "temperature")?,
        top_p: f32_of(get("top_p"), "top_p")?,
        top_k: u32_of(get("top_k"), "top_k")?,
        stop: stop(get("stop"))?,
        seed: match get("seed") {
            Value::Null => None,
            Value::Number(n) => Some(
                n.as_i64()
                    .ok_or_else(|| bad("seed", "seed must be a whole number"))?,
            ),
            _ => return Err(bad("seed", "seed must be a number")),
        },
        presence_penalty: f32_of(get("presence_penalty"), "presence_penalty")?,
        frequency_penalty: f32_of(get("frequency_penalty"), "frequency_penalty")?,
        user: str_of(get("user"), "user")?.unwrap_or_default().to_owned(),
        n: u32_of(get("n"), "n")?,
        logprobs: bool_of(get("logprobs"), "logprobs")?.unwrap_or(false),
        top_logprobs: u32_of(get("top_logprobs"), "top_logprobs")?,
        metadata: metadata(get("metadata"))?,
        request_id: str_of(get("request_id"), "request_id")?
            .unwrap_or_default()
            .to_owned(),
        ..Default::default()
    };
    response_format(get("response_format"), &mut r)?;
    let effort = str_of(get("reasoning_effort"), "reasoning_effort")?;
    // Anthropic-style `thinking: {type: enabled, budget_tokens}` is taken too.
    let budget = match get("thinking") {
        Value::Null => None,
        t if t.get("type").and_then(Value::as_str) == Some("disabled") => None,
        t => u32_of(
            t.get("budget_tokens").unwrap_or(&Value::Null),
            "thinking.budget_tokens",
        )?,
    };
    if effort.is_some() || budget.is_some() {
        r.reasoning = Some(pb::Reasoning {
            effort: effort.unwrap_or_default().to_owned(),
            budget_tokens: budget,
        });
    }
    // Unknown fields pass through to the upstream, plus an explicit
    // `extra_json` object (merged over them).
    let mut extra = unknown_fields(&b, &KNOWN);
    match get("extra_json") {
        Value::Null => {}
        Value::Object(o) => extra.extend(o.clone()),
        _ => return Err(bad("extra_json", "extra_json must be an object")),
    }
    if !extra.is_empty() {
        r.extra_json = Value::Object(extra).to_string();
    }
    let stream = bool_of(get("stream"), "stream")?.unwrap_or(false);
    let include_usage = match get("stream_options") {
        Value::Null => false,
        Value::Object(o) => bool_of(
            o.get("include_usage").unwrap_or(&Value::Null),
            "stream_options.include_usage",
        )?
        .unwrap_or(false),
        _ => {
            return Err(bad(
                "stream_options",
                "stream_options must be an object, like {\"include_usage\": true}",
            ));
        }
    };
    Ok(Chat {
        request: r,
        stream,
        include_usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_body_reads_into_the_request_model() {
        let body = serde_json::json!({
            "model": "coding",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
                    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERg==", "filename": "a.pdf"}}
                ]},
                {"role": "assistant", "content": null,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                 "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "boom", "is_error": true},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}},
            "max_completion_tokens": 99, "max_tokens": 5,
            "stop": "END", "seed": 7, "top_k": 3, "presence_penalty": 0.5, "user": "u1",
            "reasoning_effort": "low",
            "stream": true, "stream_options": {"include_usage": true},
            "service_tier": "flex"
        });
        let chat = read(body.to_string().as_bytes()).expect("reads");
        let r = &chat.request;
        assert!(chat.stream && chat.include_usage);
        assert_eq!(r.messages[0].role, pb::Role::System as i32);
        assert_eq!(r.messages[1].parts.len(), 3);
        assert!(r.messages[1].parts[0].cache_control.is_some());
        let Some(pb::content_part::Part::Document(d)) = &r.messages[1].parts[2].part else {
            panic!("a document part");
        };
        assert_eq!(
            (d.media_type.as_str(), d.filename.as_str()),
            ("application/pdf", "a.pdf")
        );
        assert_eq!(
            d.source,
            Some(pb::document_part::Source::Data(b"%PDF".to_vec()))
        );
        assert_eq!(r.messages[2].reasoning[0].signature, "sig");
        assert!(r.messages[3].is_error);
        assert_eq!(r.messages[4].content, "a\nb");
        assert!(r.tools[0].strict);
        assert_eq!(
            r.tool_choice.as_ref().map(|c| c.function.as_str()),
            Some("f")
        );
        assert_eq!(r.parallel_tool_calls, Some(false));
        assert_eq!(r.json_schema.as_ref().map(|s| s.name.as_str()), Some("out"));
        assert_eq!(r.max_tokens, Some(99));
        assert_eq!(r.stop, ["END"]);
        assert_eq!((r.seed, r.top_k, r.user.as_str()), (Some(7), Some(3), "u1"));
        assert_eq!(r.reasoning.as_ref().map(|x| x.effort.as_str()), Some("low"));
        assert_eq!(r.extra_json, r#"{"service_tier":"flex"}"#);
    }

    #[test]
    fn mistakes_name_the_parameter() {
        let cases = [
            (r#"{"messages": []}"#, "model"),
            (r#"{"model": "m"}"#, "messages"),
            (
                r#"{"model": "m", "messages": [{"role": "robot", "content": "x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model": "m", "messages": [], "temperature": "hot"}"#,
                "temperature",
            ),
            (
                r#"{"model": "m", "messages": [], "tool_choice": "maybe"}"#,
                "tool_choice",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model": "m", "messages": [], "functions": []}"#,
                "functions",
            ),
            (
                r#"{"model": "m", "messages": [], "stream_options": "yes"}"#,
                "stream_options",
            ),
            (
                r#"{"model": "m", "messages": [], "stream_options": {"include_usage": "yes"}}"#,
                "stream_options.include_usage",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}"#,
                "messages[0].content[0].text",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}"#,
                "messages[0].content[0].image_url.url",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:;base64,iVBORw0KGgo="}]}]}"#,
                "messages[0].content[0].image_url.url",
            ),
            (
                r#"{"model": "m", "messages": [{"role": "tool", "content": "42"}]}"#,
                "messages[0].tool_call_id",
            ),
        ];
        for (body, param) in cases {
            let e = read(body.as_bytes()).err().expect(body);
            assert_eq!(e.status.as_u16(), 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        let e = read(b"{nope").err().expect("not JSON");
        assert!(
            e.message.starts_with("the body is not valid JSON"),
            "{}",
            e.message
        );
    }
}
