//! The Messages request body, built from the neutral request; what cannot
//! be sent is refused (`Unsupported`) before anything is sent. The mapping
//! is summed up in the module notes (`mod.rs`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::super::wire::{float, merge_extra};
use super::super::{
    Cache, ChatRequest, DEFAULT_MAX_OUTPUT, Effort, Message, Part, PartKind, ReasoningBlock,
    ResponseFormat, Role, Source, Target, Tool, ToolChoice, UpstreamError,
};

/// The forced tool a `response_format` JSON object is asked through.
pub(super) const JSON_TOOL: &str = "json_response";
const JSON_TOOL_DESCRIPTION: &str = "Respond with JSON";

fn unsupported(message: impl Into<String>) -> UpstreamError {
    UpstreamError::Unsupported(message.into())
}

/// The name of the tool a JSON `response_format` is forced through, if any.
pub(super) fn forced_tool_name(req: &ChatRequest) -> Option<&str> {
    match &req.response_format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(JSON_TOOL),
        ResponseFormat::JsonSchema { name, .. } => Some(name),
    }
}

pub(in crate::upstream) fn request_body(
    t: &Target,
    req: &ChatRequest,
    stream: bool,
) -> Result<Value, UpstreamError> {
    refuse_options(req)?;
    let budget = req.reasoning.as_ref().and_then(|r| {
        let from_effort = r.effort.map(|e| match e {
            Effort::Minimal | Effort::Low => 1024,
            Effort::Medium => 4096,
            Effort::High => 16384,
        });
        r.budget_tokens.or(from_effort)
    });
    if budget.is_some() {
        refuse_with_thinking(req)?;
    }
    let default = t.default_max_tokens.unwrap_or(DEFAULT_MAX_OUTPUT);
    let max_tokens = match (budget, req.max_tokens) {
        (Some(b), Some(m)) if m <= b => {
            return Err(unsupported(format!(
                "max_tokens ({m}) must be greater than the thinking budget ({b}) on Anthropic members"
            )));
        }
        (Some(b), None) => b.saturating_add(default),
        (_, Some(m)) => m,
        (None, None) => default,
    };
    let (tools, tool_choice) = match forced_tool(req)? {
        Some(forced) => {
            let choice = json!({"type": "tool", "name": forced["name"]});
            (Some(json!([forced])), Some(choice))
        }
        None => {
            let tools = (!req.tools.is_empty()).then(|| req.tools.iter().map(tool).collect());
            (tools, tool_choice(req))
        }
    };

    let mut b = Map::new();
    b.insert("model".into(), json!(t.model));
    b.insert("max_tokens".into(), json!(max_tokens));
    b.insert("messages".into(), Value::Array(messages(req)?));
    let opt = [
        ("system", system(req)?),
        ("tools", tools),
        ("tool_choice", tool_choice),
        (
            "stop_sequences",
            (!req.stop.is_empty()).then(|| json!(req.stop)),
        ),
        ("temperature", req.temperature.map(float)),
        ("top_p", req.top_p.map(float)),
        ("top_k", req.top_k.map(|k| json!(k))),
        ("metadata", req.user.as_ref().map(|u| json!({"user_id": u}))),
        (
            "thinking",
            budget.map(|b| json!({"type": "enabled", "budget_tokens": b})),
        ),
    ];
    b.extend(
        opt.into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?))),
    );
    // Last: the caller's keys win, but for streaming (intake refuses it in
    // extra too).
    merge_extra(&mut b, req.extra.as_ref());
    if stream {
        b.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(b))
}

/// Options the Messages API has no equivalent for.
fn refuse_options(req: &ChatRequest) -> Result<(), UpstreamError> {
    let refused = [
        ("seed", req.seed.is_some()),
        ("presence_penalty", req.presence_penalty.is_some()),
        ("frequency_penalty", req.frequency_penalty.is_some()),
        ("n > 1", req.n.is_some_and(|n| n > 1)),
        ("logprobs", req.logprobs || req.top_logprobs.is_some()),
    ];
    match refused.iter().find(|(_, set)| *set) {
        Some((field, _)) => Err(unsupported(format!(
            "{field} is not supported by Anthropic members; leave it out to use them"
        ))),
        None => Ok(()),
    }
}

/// What Anthropic refuses alongside extended thinking.
fn refuse_with_thinking(req: &ChatRequest) -> Result<(), UpstreamError> {
    if forced_tool_name(req).is_some() {
        return Err(unsupported(
            "Anthropic members cannot combine response_format JSON (sent as a forced tool) \
             with reasoning (extended thinking); drop one of them",
        ));
    }
    if matches!(
        req.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Function(_))
    ) {
        return Err(unsupported(
            "Anthropic members cannot combine a tool_choice that forces tool use (REQUIRED, \
             FUNCTION) with reasoning (extended thinking); use AUTO or drop reasoning",
        ));
    }
    if let Some(t) = req.temperature.filter(|t| *t != 1.0) {
        return Err(unsupported(format!(
            "temperature ({t}) cannot be set with reasoning (extended thinking) on Anthropic \
             members; leave it unset (or 1)"
        )));
    }
    if req.top_k.is_some() {
        return Err(unsupported(
            "top_k cannot be set with reasoning (extended thinking) on Anthropic members; leave it unset",
        ));
    }
    if let Some(p) = req.top_p.filter(|p| *p < 0.95) {
        return Err(unsupported(format!(
            "top_p ({p}) must be 0.95 or more with reasoning (extended thinking) on Anthropic members"
        )));
    }
    Ok(())
}

/// The tool a JSON `response_format` is forced through, if any; it cannot
/// share the request with other tools or a tool_choice.
fn forced_tool(req: &ChatRequest) -> Result<Option<Value>, UpstreamError> {
    let tool = match &req.response_format {
        ResponseFormat::Text => return Ok(None),
        ResponseFormat::JsonObject => json!({
            "name": JSON_TOOL,
            "description": JSON_TOOL_DESCRIPTION,
            "input_schema": {"type": "object"},
        }),
        ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        } => {
            let description = description.as_deref().unwrap_or(JSON_TOOL_DESCRIPTION);
            let schema = Some(schema)
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            let mut v = json!({"name": name, "description": description, "input_schema": schema});
            if *strict {
                v["strict"] = json!(true);
            }
            v
        }
    };
    if !req.tools.is_empty() || req.tool_choice.is_some() {
        return Err(unsupported(
            "Anthropic members take response_format JSON as a forced tool, which cannot be \
             combined with tools or tool_choice; drop them or the response_format",
        ));
    }
    Ok(Some(tool))
}

/// `tool_choice`, with `disable_parallel_tool_use` when parallel calls are
/// off; only sent with tools (Anthropic refuses it without).
fn tool_choice(req: &ChatRequest) -> Option<Value> {
    if req.tools.is_empty() {
        return None;
    }
    let choice = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        // No tool is called, so nothing is parallel.
        Some(ToolChoice::None) => return Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if req.parallel_tool_calls == Some(false) {
        let mut v = choice.unwrap_or_else(|| json!({"type": "auto"}));
        v["disable_parallel_tool_use"] = json!(true);
        return Some(v);
    }
    choice
}

fn tool(tool: &Tool) -> Value {
    let schema = object_or(&tool.parameters_json, json!({"type": "object"}));
    let mut v = json!({"name": tool.name, "input_schema": schema});
    if !tool.description.is_empty() {
        v["description"] = json!(tool.description);
    }
    if tool.strict {
        v["strict"] = json!(true);
    }
    mark(&mut v, tool.cache.as_ref());
    v
}

/// Parses JSON text that must be an object; anything else becomes `fallback`.
fn object_or(text: &str, fallback: Value) -> Value {
    serde_json::from_str::<Value>(text)
        .ok()
        .filter(Value::is_object)
        .unwrap_or(fallback)
}

fn cache_control(c: &Cache) -> Value {
    match c.ttl.as_deref() {
        Some("1h") => json!({"type": "ephemeral", "ttl": "1h"}),
        // "5m" is the default.
        _ => json!({"type": "ephemeral"}),
    }
}

/// Adds `cache_control` to a block when it carries a cache marker.
fn mark(block: &mut Value, cache: Option<&Cache>) {
    if let (Some(c), Some(o)) = (cache, block.as_object_mut()) {
        o.insert("cache_control".into(), cache_control(c));
    }
}

/// The top-level `system`: a string, or text blocks when one is cached.
fn system(req: &ChatRequest) -> Result<Option<Value>, UpstreamError> {
    let system: Vec<&Message> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .collect();
    if system.is_empty() {
        return Ok(None);
    }
    if system
        .iter()
        .any(|m| m.parts.iter().any(|p| !matches!(p.kind, PartKind::Text(_))))
    {
        return Err(unsupported(
            "system messages take text only on Anthropic members",
        ));
    }
    let cached = system
        .iter()
        .any(|m| m.cache.is_some() || m.parts.iter().any(|p| p.cache.is_some()));
    if !cached {
        let texts: Vec<String> = system
            .iter()
            .map(|m| {
                let parts = m.parts.iter().filter_map(|p| match &p.kind {
                    PartKind::Text(t) => Some(t.as_str()),
                    _ => None,
                });
                std::iter::once(m.content.as_str()).chain(parts).collect()
            })
            .collect();
        return Ok(Some(json!(texts.join("\n\n"))));
    }
    let mut blocks = Vec::new();
    for m in system {
        let mut mine = content_blocks(m)?;
        mark_last(&mut mine, m.cache.as_ref());
        blocks.extend(mine);
    }
    Ok(Some(Value::Array(blocks)))
}

/// One turn: consecutive messages of the same role, merged.
struct Turn {
    role: &'static str,
    /// Assistant reasoning; goes first.
    thinking: Vec<Value>,
    blocks: Vec<Value>,
}

fn messages(req: &ChatRequest) -> Result<Vec<Value>, UpstreamError> {
    let mut turns: Vec<Turn> = Vec::new();
    for m in &req.messages {
        let (role, thinking, mut blocks) = match m.role {
            Role::System => continue,
            Role::User => ("user", Vec::new(), content_blocks(m)?),
            Role::Tool => ("user", Vec::new(), vec![tool_result(m)?]),
            Role::Assistant => ("assistant", reasoning(&m.reasoning), assistant_blocks(m)?),
        };
        mark_last(&mut blocks, m.cache.as_ref());
        match turns.last_mut() {
            Some(turn) if turn.role == role => {
                turn.thinking.extend(thinking);
                turn.blocks.extend(blocks);
            }
            _ => turns.push(Turn {
                role,
                thinking,
                blocks,
            }),
        }
    }
    let messages = turns.into_iter().map(|t| {
        let content: Vec<Value> = t.thinking.into_iter().chain(t.blocks).collect();
        json!({"role": t.role, "content": content})
    });
    Ok(messages.collect())
}

/// A message's cache marker goes on its last block.
fn mark_last(blocks: &mut [Value], cache: Option<&Cache>) {
    if let Some(last) = blocks.last_mut() {
        mark(last, cache);
    }
}

/// A user (or system) message's blocks: its parts, or one text block.
fn content_blocks(m: &Message) -> Result<Vec<Value>, UpstreamError> {
    if m.parts.is_empty() {
        return Ok(vec![json!({"type": "text", "text": m.content})]);
    }
    m.parts.iter().map(part).collect()
}

fn assistant_blocks(m: &Message) -> Result<Vec<Value>, UpstreamError> {
    let text = if m.parts.is_empty() {
        // Anthropic rejects empty text blocks; keep one only if it is all there is.
        let keep = !m.content.is_empty() || m.tool_calls.is_empty();
        let text = json!({"type": "text", "text": m.content});
        keep.then_some(text).into_iter().collect()
    } else {
        m.parts.iter().map(part).collect::<Result<Vec<_>, _>>()?
    };
    let uses = m.tool_calls.iter().map(|c| {
        let input = object_or(&c.arguments_json, json!({}));
        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input})
    });
    Ok(text.into_iter().chain(uses).collect())
}

fn tool_result(m: &Message) -> Result<Value, UpstreamError> {
    let id = m.tool_call_id.as_deref().unwrap_or_default();
    let mut v = json!({"type": "tool_result", "tool_use_id": id, "content": m.content});
    if !m.parts.is_empty() {
        v["content"] = m.parts.iter().map(part).collect::<Result<_, _>>()?;
    }
    if m.is_error {
        v["is_error"] = json!(true);
    }
    Ok(v)
}

/// Thinking blocks to send back: signed or redacted ones, unchanged.
/// Unsigned ones came from another provider; Anthropic refuses them.
fn reasoning(blocks: &[ReasoningBlock]) -> Vec<Value> {
    let kept = blocks
        .iter()
        .filter_map(|r| match (&r.redacted, &r.signature) {
            (Some(data), _) => Some(json!({"type": "redacted_thinking", "data": data})),
            (None, Some(sig)) => {
                Some(json!({"type": "thinking", "thinking": r.text, "signature": sig}))
            }
            (None, None) => None,
        });
    kept.collect()
}

fn part(p: &Part) -> Result<Value, UpstreamError> {
    let mut v = match &p.kind {
        PartKind::Text(text) => json!({"type": "text", "text": text}),
        // `detail` has no Anthropic equivalent.
        PartKind::Image { source, .. } => json!({"type": "image", "source": image(source)?}),
        PartKind::Document { source, filename } => {
            let mut d = json!({"type": "document", "source": document(source)?});
            if let Some(title) = filename {
                d["title"] = json!(title);
            }
            d
        }
    };
    mark(&mut v, p.cache.as_ref());
    Ok(v)
}

fn base64_source(media_type: &str, data: &str) -> Value {
    json!({"type": "base64", "media_type": media_type, "data": data})
}

fn image(source: &Source) -> Result<Value, UpstreamError> {
    Ok(match source {
        Source::Url(url) => match data_url(url)? {
            Some((media_type, data)) => base64_source(media_type, data),
            None => json!({"type": "url", "url": url}),
        },
        Source::Data { media_type, data } => base64_source(media_type, &STANDARD.encode(data)),
    })
}

const PDF: &str = "application/pdf";
const TEXT: &str = "text/plain";

fn document(source: &Source) -> Result<Value, UpstreamError> {
    let text_source = |bytes: Vec<u8>| {
        let text = String::from_utf8(bytes).map_err(|_| {
            unsupported("a text/plain document must be UTF-8 text for Anthropic members")
        })?;
        Ok(json!({"type": "text", "media_type": TEXT, "data": text}))
    };
    match source {
        Source::Url(url) => match data_url(url)? {
            None => Ok(json!({"type": "url", "url": url})),
            Some((PDF, data)) => Ok(base64_source(PDF, data)),
            Some((TEXT, data)) => {
                let bytes = STANDARD
                    .decode(data)
                    .map_err(|_| unsupported("a document's data: URL holds invalid base64 data"))?;
                text_source(bytes)
            }
            Some((other, _)) => Err(unsupported(format!(
                "Anthropic members take {PDF} or {TEXT} documents, not '{}'",
                clip(other)
            ))),
        },
        Source::Data { media_type, data } => match media_type.as_str() {
            PDF => Ok(base64_source(PDF, &STANDARD.encode(data))),
            TEXT => text_source(data.clone()),
            other => Err(unsupported(format!(
                "Anthropic members take {PDF} or {TEXT} documents, not '{}'",
                clip(other)
            ))),
        },
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A `data:<type>[;params];base64,<data>` URL's media type and data; `None`
/// for other URLs. A data URL that is not base64 cannot be sent.
fn data_url(url: &str) -> Result<Option<(&str, &str)>, UpstreamError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(None);
    };
    let meta = rest.split_once(',').and_then(|(meta, data)| {
        let media = meta.strip_suffix(";base64")?;
        let media_type = media.split(';').next().unwrap_or_default().trim();
        Some((media_type, data))
    });
    match meta {
        Some(found) => Ok(Some(found)),
        None => Err(unsupported(
            "Anthropic members take data: URLs in base64 only (data:<type>;base64,<data>); \
             or send the bytes as data",
        )),
    }
}
