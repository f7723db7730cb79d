//! An OpenAI chat body's `messages`: roles, content (a string or parts:
//! text, `image_url`, `file`), tool calls, reasoning sent back
//! (`thinking_blocks`, `reasoning_content`) and cache marks.

use serde_json::{Map, Value};
use switchyard_proto::v1 as pb;

use super::json::{R, bad, bool_of, cache_of, data_url, str_of};

fn part(v: &Value, param: &str) -> R<pb::ContentPart> {
    use pb::content_part::Part;
    let kind = str_of(
        v.get("type").unwrap_or(&Value::Null),
        &format!("{param}.type"),
    )?;
    let part = match kind {
        Some("text") => {
            let p = format!("{param}.text");
            let text = str_of(v.get("text").unwrap_or(&Value::Null), &p)?
                .ok_or_else(|| bad(&p, format!("{p} is required in a text part")))?;
            Part::Text(text.to_owned())
        }
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
            // An inline image must decode and say what it is.
            let at = format!("{param}.image_url.url");
            if let Some((media_type, _)) = data_url(url, &at)?
                && media_type.is_empty()
            {
                return Err(bad(
                    &at,
                    format!("{at} has no media type; use data:image/png;base64,..."),
                ));
            }
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

pub fn message(v: &Value, i: usize) -> R<pb::ChatMessage> {
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
    let tool_call_id = str_of(
        m.get("tool_call_id").unwrap_or(&Value::Null),
        &format!("{param}.tool_call_id"),
    )?
    .unwrap_or_default();
    if role == pb::Role::Tool && tool_call_id.is_empty() {
        return Err(bad(
            &format!("{param}.tool_call_id"),
            format!("{param}.tool_call_id is required: the id of the tool call this answers"),
        ));
    }
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
        tool_call_id: tool_call_id.to_owned(),
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
