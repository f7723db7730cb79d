//! An OpenAI chat completions body, read into the gRPC request the engine
//! takes (`pb::GenerateRequest`). The door adds no rules of its own: range
//! checks and the rest are `intake`'s, as for gRPC callers. Fields it does
//! not know go to `extra_json`, so provider-specific options pass through
//! (where the pool allows it).

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Map, Value};
use switchyard_proto::v1 as pb;

use super::error::DoorError;

type R<T> = Result<T, DoorError>;

fn bad(param: &str, message: impl Into<String>) -> DoorError {
    DoorError::invalid(Some(param.to_owned()), message)
}

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

fn str_of<'a>(v: &'a Value, param: &str) -> R<Option<&'a str>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(bad(param, format!("{param} must be a string"))),
    }
}

fn u32_of(v: &Value, param: &str) -> R<Option<u32>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                bad(
                    param,
                    format!("{param} must be a whole number from 0 to 2^32-1"),
                )
            }),
        _ => Err(bad(param, format!("{param} must be a number"))),
    }
}

fn f32_of(v: &Value, param: &str) -> R<Option<f32>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(n.as_f64().map(|f| f as f32)),
        _ => Err(bad(param, format!("{param} must be a number"))),
    }
}

fn bool_of(v: &Value, param: &str) -> R<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        _ => Err(bad(param, format!("{param} must be true or false"))),
    }
}

fn cache_of(v: &Value, param: &str) -> R<Option<pb::CacheControl>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(pb::CacheControl {
            ttl: str_of(
                o.get("ttl").unwrap_or(&Value::Null),
                &format!("{param}.ttl"),
            )?
            .unwrap_or_default()
            .to_owned(),
        })),
        _ => Err(bad(
            param,
            format!("{param} must be an object like {{\"type\": \"ephemeral\"}}"),
        )),
    }
}

/// `data:<media type>;base64,<data>` split into its media type and bytes.
fn data_url(url: &str, param: &str) -> R<Option<(String, Vec<u8>)>> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(None);
    };
    let (head, data) = rest
        .split_once(',')
        .ok_or_else(|| bad(param, format!("{param} is a data: URL without data")))?;
    let media = head
        .strip_suffix(";base64")
        .ok_or_else(|| bad(param, format!("{param} must be a base64 data: URL")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| bad(param, format!("{param} holds invalid base64: {e}")))?;
    Ok(Some((media.to_owned(), bytes)))
}

fn part(v: &Value, param: &str) -> R<pb::ContentPart> {
    use pb::content_part::Part;
    let kind = str_of(
        v.get("type").unwrap_or(&Value::Null),
        &format!("{param}.type"),
    )?;
    let part = match kind {
        Some("text") => Part::Text(
            str_of(
                v.get("text").unwrap_or(&Value::Null),
                &format!("{param}.text"),
            )?
            .unwrap_or_default()
            .to_owned(),
        ),
        Some("image_url") => {
            let img = v.get("image_url").unwrap_or(&Value::Null);
            // Some clients send the URL as a bare string.
            let (url, detail) = match img {
                Value::String(s) => (s.as_str(), None),
                Value::Object(o) => (
                    str_of(
                        o.get("url").unwrap_or(&Value::Null),
                        &format!("{param}.image_url.url"),
                    )?
                    .unwrap_or_default(),
                    str_of(
                        o.get("detail").unwrap_or(&Value::Null),
                        &format!("{param}.image_url.detail"),
                    )?,
                ),
                _ => return Err(bad(param, format!("{param}.image_url must hold a url"))),
            };
            let detail = match detail {
                None => pb::ImageDetail::Unspecified,
                Some("auto") => pb::ImageDetail::Auto,
                Some("low") => pb::ImageDetail::Low,
                Some("high") => pb::ImageDetail::High,
                Some(other) => {
                    return Err(bad(
                        &format!("{param}.image_url.detail"),
                        format!("detail is '{other}'; use auto, low or high"),
                    ));
                }
            };
            Part::Image(pb::ImagePart {
                source: Some(pb::image_part::Source::Url(url.to_owned())),
                media_type: String::new(),
                detail: detail.into(),
            })
        }
        Some("file") => {
            let f = v.get("file").unwrap_or(&Value::Null);
            let p = format!("{param}.file");
            if f.get("file_id").is_some_and(|x| !x.is_null()) {
                return Err(bad(
                    &p,
                    "file_id is not supported: send the file inline as file_data (a base64 data: URL)",
                ));
            }
            let data = str_of(
                f.get("file_data").unwrap_or(&Value::Null),
                &format!("{p}.file_data"),
            )?
            .ok_or_else(|| {
                bad(
                    &p,
                    format!("{p}.file_data is required (a base64 data: URL)"),
                )
            })?;
            let (media_type, bytes) = data_url(data, &format!("{p}.file_data"))?
                .ok_or_else(|| bad(&p, format!("{p}.file_data must be a data: URL")))?;
            Part::Document(pb::DocumentPart {
                source: Some(pb::document_part::Source::Data(bytes)),
                media_type,
                filename: str_of(
                    f.get("filename").unwrap_or(&Value::Null),
                    &format!("{p}.filename"),
                )?
                .unwrap_or_default()
                .to_owned(),
            })
        }
        Some(other) => {
            return Err(bad(
                &format!("{param}.type"),
                format!(
                    "content part type '{other}' is not supported; use text, image_url or file"
                ),
            ));
        }
        None => {
            return Err(bad(
                &format!("{param}.type"),
                format!("{param}.type is required"),
            ));
        }
    };
    Ok(pb::ContentPart {
        part: Some(part),
        cache_control: cache_of(
            v.get("cache_control").unwrap_or(&Value::Null),
            &format!("{param}.cache_control"),
        )?,
    })
}

/// `content`: a string, null, or an array of parts. A text-only array is
/// joined into plain content unless a part carries a cache marker.
fn content(v: &Value, param: &str) -> R<(String, Vec<pb::ContentPart>)> {
    match v {
        Value::Null => Ok((String::new(), Vec::new())),
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(items) => {
            let parts = items
                .iter()
                .enumerate()
                .map(|(i, p)| part(p, &format!("{param}[{i}]")))
                .collect::<R<Vec<_>>>()?;
            let plain = parts.iter().all(|p| {
                p.cache_control.is_none() && matches!(p.part, Some(pb::content_part::Part::Text(_)))
            });
            if plain {
                let text = parts
                    .into_iter()
                    .filter_map(|p| match p.part {
                        Some(pb::content_part::Part::Text(t)) => Some(t),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                return Ok((text, Vec::new()));
            }
            Ok((String::new(), parts))
        }
        _ => Err(bad(
            param,
            format!("{param} must be a string, an array of parts, or null"),
        )),
    }
}

fn tool_calls(v: &Value, param: &str) -> R<Vec<pb::ToolCall>> {
    let Some(items) = v.as_array() else {
        return if v.is_null() {
            Ok(Vec::new())
        } else {
            Err(bad(param, format!("{param} must be an array")))
        };
    };
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = format!("{param}[{i}]");
            let f = c.get("function").unwrap_or(&Value::Null);
            Ok(pb::ToolCall {
                id: str_of(c.get("id").unwrap_or(&Value::Null), &format!("{p}.id"))?
                    .unwrap_or_default()
                    .to_owned(),
                name: str_of(
                    f.get("name").unwrap_or(&Value::Null),
                    &format!("{p}.function.name"),
                )?
                .unwrap_or_default()
                .to_owned(),
                arguments_json: str_of(
                    f.get("arguments").unwrap_or(&Value::Null),
                    &format!("{p}.function.arguments"),
                )?
                .unwrap_or_default()
                .to_owned(),
            })
        })
        .collect()
}

/// Reasoning sent back on an assistant message: Anthropic-style
/// `thinking_blocks` (with signatures), else `reasoning_content` text.
fn reasoning(m: &Map<String, Value>, param: &str) -> R<Vec<pb::ReasoningBlock>> {
    if let Some(Value::Array(blocks)) = m.get("thinking_blocks") {
        return blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let p = format!("{param}.thinking_blocks[{i}]");
                let s = |k: &str| -> R<String> {
                    Ok(
                        str_of(b.get(k).unwrap_or(&Value::Null), &format!("{p}.{k}"))?
                            .unwrap_or_default()
                            .to_owned(),
                    )
                };
                Ok(match b.get("type").and_then(Value::as_str) {
                    Some("redacted_thinking") => pb::ReasoningBlock {
                        redacted_data: s("data")?,
                        ..Default::default()
                    },
                    _ => pb::ReasoningBlock {
                        text: s("thinking")?,
                        signature: s("signature")?,
                        redacted_data: String::new(),
                    },
                })
            })
            .collect();
    }
    let text = str_of(
        m.get("reasoning_content").unwrap_or(&Value::Null),
        &format!("{param}.reasoning_content"),
    )?;
    Ok(text
        .filter(|t| !t.is_empty())
        .map(|t| pb::ReasoningBlock {
            text: t.to_owned(),
            ..Default::default()
        })
        .into_iter()
        .collect())
}

fn message(v: &Value, i: usize) -> R<pb::ChatMessage> {
    let param = format!("messages[{i}]");
    let m = v
        .as_object()
        .ok_or_else(|| bad(&param, format!("{param} must be an object")))?;
    let role = match str_of(
        m.get("role").unwrap_or(&Value::Null),
        &format!("{param}.role"),
    )? {
        Some("system" | "developer") => pb::Role::System,
        Some("user") => pb::Role::User,
        Some("assistant") => pb::Role::Assistant,
        Some("tool") => pb::Role::Tool,
        Some("function") => {
            return Err(bad(
                &format!("{param}.role"),
                "role 'function' is deprecated; use tools and role 'tool'",
            ));
        }
        Some(other) => {
            return Err(bad(
                &format!("{param}.role"),
                format!("role is '{other}'; use system, developer, user, assistant or tool"),
            ));
        }
        None => {
            return Err(bad(
                &format!("{param}.role"),
                format!("{param}.role is required"),
            ));
        }
    };
    let (text, parts) = content(
        m.get("content").unwrap_or(&Value::Null),
        &format!("{param}.content"),
    )?;
    Ok(pb::ChatMessage {
        role: role.into(),
        content: text,
        parts,
        tool_calls: tool_calls(
            m.get("tool_calls").unwrap_or(&Value::Null),
            &format!("{param}.tool_calls"),
        )?,
        tool_call_id: str_of(
            m.get("tool_call_id").unwrap_or(&Value::Null),
            &format!("{param}.tool_call_id"),
        )?
        .unwrap_or_default()
        .to_owned(),
        name: str_of(
            m.get("name").unwrap_or(&Value::Null),
            &format!("{param}.name"),
        )?
        .unwrap_or_default()
        .to_owned(),
        reasoning: if role == pb::Role::Assistant {
            reasoning(m, &param)?
        } else {
            Vec::new()
        },
        is_error: bool_of(
            m.get("is_error").unwrap_or(&Value::Null),
            &format!("{param}.is_error"),
        )?
        .unwrap_or(false),
        cache_control: cache_of(
            m.get("cache_control").unwrap_or(&Value::Null),
            &format!("{param}.cache_control"),
        )?,
    })
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
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| DoorError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    let Value::Object(b) = v else {
        return Err(DoorError::invalid(None, "the body must be a JSON object"));
    };
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
    let mut extra: Map<String, Value> = b
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match get("extra_json") {
        Value::Null => {}
        Value::Object(o) => extra.extend(o.clone()),
        _ => return Err(bad("extra_json", "extra_json must be an object")),
    }
    if !extra.is_empty() {
        r.extra_json = Value::Object(extra).to_string();
    }
    let stream = bool_of(get("stream"), "stream")?.unwrap_or(false);
    let include_usage = get("stream_options")
        .get("include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
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
