//! Intake: a caller's request checked and turned into the neutral form
//! (`upstream::ChatRequest`, `upstream::EmbedRequest`). Every mistake is an
//! INVALID_ARGUMENT naming the field and what to send instead.

use serde_json::Value;
use switchyard_proto::v1 as pb;

use crate::error::DpError;
use crate::upstream::{
    self, Cache, ChatRequest, Detail, Effort, EmbedInput, EmbedRequest, Part, PartKind, Reasoning,
    ReasoningBlock, ResponseFormat, Source, ToolChoice,
};

mod extra;
pub use extra::extra;

fn invalid(msg: String) -> DpError {
    DpError::InvalidArgument(msg)
}

/// `field` (its path in the request) is wrong: `problem` says how.
fn bad(field: impl Into<String>, problem: impl Into<String>) -> DpError {
    DpError::InvalidField {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Longest model name a caller may send.
const MAX_MODEL: usize = 512;
/// Stop sequences: OpenAI takes at most 4; Anthropic more, but keep one rule.
const MAX_STOP: usize = 4;
/// Inline image or document bytes, per part.
const MAX_INLINE: usize = 20 * 1024 * 1024;
/// Embedding inputs per request (OpenAI's limit).
const MAX_EMBED_INPUTS: usize = 2048;

pub fn check_model(model: &str) -> Result<(), DpError> {
    if model.len() > MAX_MODEL {
        return Err(bad(
            "model",
            format!(
                "is {} bytes; a route, pool or provider/model name is at most {MAX_MODEL}",
                model.len()
            ),
        ));
    }
    Ok(())
}

fn role(r: i32, i: usize) -> Result<upstream::Role, DpError> {
    match pb::Role::try_from(r) {
        Ok(pb::Role::System) => Ok(upstream::Role::System),
        Ok(pb::Role::User) => Ok(upstream::Role::User),
        Ok(pb::Role::Assistant) => Ok(upstream::Role::Assistant),
        Ok(pb::Role::Tool) => Ok(upstream::Role::Tool),
        Ok(pb::Role::Unspecified) | Err(_) => Err(bad(
            format!("messages[{i}].role"),
            format!("is {r}; use ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"),
        )),
    }
}

fn cache(c: Option<&pb::CacheControl>, at: &str) -> Result<Option<Cache>, DpError> {
    let Some(c) = c else { return Ok(None) };
    match c.ttl.as_str() {
        "" => Ok(Some(Cache { ttl: None })),
        "5m" | "1h" => Ok(Some(Cache {
            ttl: Some(c.ttl.clone()),
        })),
        other => Err(bad(
            format!("{at}.cache_control.ttl"),
            format!(
                "is '{}'; use \"\" (the provider's default), \"5m\" or \"1h\"",
                clip(other)
            ),
        )),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
const DOCUMENT_TYPES: [&str; 2] = ["application/pdf", "text/plain"];

fn source(
    url: Option<&str>,
    data: Option<&[u8]>,
    media_type: &str,
    allowed: &[&str],
    at: &str,
) -> Result<Source, DpError> {
    match (url, data) {
        (Some(u), None) => {
            if !(u.starts_with("https://") || u.starts_with("http://") || u.starts_with("data:")) {
                return Err(bad(format!("{at}.url"), "must be an http(s): or data: URL"));
            }
            Ok(Source::Url(u.to_owned()))
        }
        (None, Some(d)) => {
            if d.is_empty() {
                return Err(bad(format!("{at}.data"), "is empty"));
            }
            if d.len() > MAX_INLINE {
                return Err(bad(
                    format!("{at}.data"),
                    format!("is {} bytes; at most {MAX_INLINE}", d.len()),
                ));
            }
            if !allowed.contains(&media_type) {
                return Err(bad(
                    format!("{at}.media_type"),
                    format!(
                        "is '{}'; with data use one of {}",
                        clip(media_type),
                        allowed.join(", ")
                    ),
                ));
            }
            Ok(Source::Data {
                media_type: media_type.to_owned(),
                data: d.to_vec(),
            })
        }
        _ => Err(bad(at, "needs a url or data")),
    }
}

fn part(p: &pb::ContentPart, at: &str) -> Result<Part, DpError> {
    use pb::content_part::Part as P;
    let kind = match &p.part {
        Some(P::Text(t)) => PartKind::Text(t.clone()),
        Some(P::Image(i)) => {
            use pb::image_part::Source as S;
            let (url, data) = match &i.source {
                Some(S::Url(u)) => (Some(u.as_str()), None),
                Some(S::Data(d)) => (None, Some(d.as_slice())),
                None => (None, None),
            };
            let detail = match pb::ImageDetail::try_from(i.detail) {
                Ok(pb::ImageDetail::Unspecified) => None,
                Ok(pb::ImageDetail::Auto) => Some(Detail::Auto),
                Ok(pb::ImageDetail::Low) => Some(Detail::Low),
                Ok(pb::ImageDetail::High) => Some(Detail::High),
                Err(_) => {
                    return Err(bad(
                        format!("{at}.image.detail"),
                        format!("is {}; use IMAGE_DETAIL_AUTO, _LOW or _HIGH", i.detail),
                    ));
                }
            };
            PartKind::Image {
                source: source(
                    url,
                    data,
                    &i.media_type,
                    &IMAGE_TYPES,
                    &format!("{at}.image"),
                )?,
                detail,
            }
        }
        Some(P::Document(d)) => {
            use pb::document_part::Source as S;
            let (url, data) = match &d.source {
                Some(S::Url(u)) => (Some(u.as_str()), None),
                Some(S::Data(b)) => (None, Some(b.as_slice())),
                None => (None, None),
            };
            PartKind::Document {
                source: source(
                    url,
                    data,
                    &d.media_type,
                    &DOCUMENT_TYPES,
                    &format!("{at}.document"),
                )?,
                filename: (!d.filename.is_empty()).then(|| d.filename.clone()),
            }
        }
        None => {
            return Err(bad(at, "is empty; set text, image or document"));
        }
    };
    Ok(Part {
        kind,
        cache: cache(p.cache_control.as_ref(), at)?,
    })
}

fn message(m: &pb::ChatMessage, i: usize) -> Result<upstream::Message, DpError> {
    let at = format!("messages[{i}]");
    let role = role(m.role, i)?;
    if !m.parts.is_empty() && !m.content.is_empty() {
        return Err(bad(
            at,
            "has both content and parts; put the text in a text part",
        ));
    }
    let parts = m
        .parts
        .iter()
        .enumerate()
        .map(|(j, p)| part(p, &format!("{at}.parts[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if role != upstream::Role::User
        && parts.iter().any(|p| !matches!(p.kind, PartKind::Text(_)))
        && role != upstream::Role::Tool
    {
        return Err(bad(
            at,
            "holds an image or document; those go in user (or tool) messages",
        ));
    }
    if !m.reasoning.is_empty() && role != upstream::Role::Assistant {
        return Err(bad(
            at,
            "holds reasoning; that goes in assistant messages only",
        ));
    }
    if m.is_error && role != upstream::Role::Tool {
        return Err(bad(format!("{at}.is_error"), "is for tool messages only"));
    }
    Ok(upstream::Message {
        role,
        content: m.content.clone(),
        parts,
        tool_calls: m
            .tool_calls
            .iter()
            .map(|t| upstream::ToolCall {
                id: t.id.clone(),
                name: t.name.clone(),
                arguments_json: t.arguments_json.clone(),
            })
            .collect(),
        tool_call_id: (!m.tool_call_id.is_empty()).then(|| m.tool_call_id.clone()),
        name: (!m.name.is_empty()).then(|| m.name.clone()),
        reasoning: m
            .reasoning
            .iter()
            .map(|r| ReasoningBlock {
                text: r.text.clone(),
                signature: (!r.signature.is_empty()).then(|| r.signature.clone()),
                redacted: (!r.redacted_data.is_empty()).then(|| r.redacted_data.clone()),
            })
            .collect(),
        is_error: m.is_error,
        cache: cache(m.cache_control.as_ref(), &at)?,
    })
}

fn tool_choice(
    c: Option<&pb::ToolChoice>,
    tools: &[upstream::Tool],
) -> Result<Option<ToolChoice>, DpError> {
    let Some(c) = c else { return Ok(None) };
    let choice = match pb::ToolChoiceMode::try_from(c.mode) {
        Ok(pb::ToolChoiceMode::Unspecified) if c.function.is_empty() => return Ok(None),
        Ok(pb::ToolChoiceMode::Auto) => ToolChoice::Auto,
        Ok(pb::ToolChoiceMode::None) => ToolChoice::None,
        Ok(pb::ToolChoiceMode::Required) => ToolChoice::Required,
        Ok(pb::ToolChoiceMode::Function | pb::ToolChoiceMode::Unspecified) => {
            if !tools.iter().any(|t| t.name == c.function) {
                return Err(bad(
                    "tool_choice",
                    format!(
                        "names function '{}', which is not among tools",
                        clip(&c.function)
                    ),
                ));
            }
            ToolChoice::Function(c.function.clone())
        }
        Err(_) => {
            return Err(bad(
                "tool_choice.mode",
                format!(
                    "is {}; use TOOL_CHOICE_MODE_AUTO, _NONE, _REQUIRED or _FUNCTION",
                    c.mode
                ),
            ));
        }
    };
    if matches!(choice, ToolChoice::Required) && tools.is_empty() {
        return Err(bad("tool_choice", "is REQUIRED but no tools are given"));
    }
    Ok(Some(choice))
}

fn json_object(text: &str, field: &str) -> Result<Value, DpError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(bad(field, "must be a JSON object")),
        Err(e) => Err(bad(field, format!("is not valid JSON: {e}"))),
    }
}

fn response_format(r: &pb::GenerateRequest) -> Result<ResponseFormat, DpError> {
    let mode = pb::ResponseFormat::try_from(r.response_format).map_err(|_| {
        invalid(format!(
            "response_format is {}; use RESPONSE_FORMAT_TEXT, _JSON_OBJECT or _JSON_SCHEMA",
            r.response_format
        ))
    })?;
    match (mode, &r.json_schema) {
        (pb::ResponseFormat::JsonSchema, None) => Err(invalid(
            "response_format is JSON_SCHEMA but json_schema is unset".into(),
        )),
        (pb::ResponseFormat::JsonSchema | pb::ResponseFormat::Unspecified, Some(s)) => {
            let name_ok = !s.name.is_empty()
                && s.name.len() <= 64
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !name_ok {
                return Err(bad(
                    "json_schema.name",
                    format!(
                        "is '{}'; use 1-64 characters of a-z, A-Z, 0-9, _ and -",
                        clip(&s.name)
                    ),
                ));
            }
            Ok(ResponseFormat::JsonSchema {
                name: s.name.clone(),
                description: (!s.description.is_empty()).then(|| s.description.clone()),
                schema: json_object(&s.schema_json, "json_schema.schema_json")?,
                strict: s.strict,
            })
        }
        (_, Some(_)) => Err(invalid(
            "json_schema is set but response_format is not JSON_SCHEMA".into(),
        )),
        (pb::ResponseFormat::JsonObject, None) => Ok(ResponseFormat::JsonObject),
        (_, None) => Ok(ResponseFormat::Text),
    }
}

fn reasoning(r: Option<&pb::Reasoning>) -> Result<Option<Reasoning>, DpError> {
    let Some(r) = r else { return Ok(None) };
    let effort = match r.effort.as_str() {
        "" => None,
        "minimal" => Some(Effort::Minimal),
        "low" => Some(Effort::Low),
        "medium" => Some(Effort::Medium),
        "high" => Some(Effort::High),
        other => {
            return Err(bad(
                "reasoning.effort",
                format!("is '{}'; use minimal, low, medium or high", clip(other)),
            ));
        }
    };
    if let Some(b) = r.budget_tokens
        && !(1024..=1_000_000).contains(&b)
    {
        return Err(bad(
            "reasoning.budget_tokens",
            format!("is {b}; use 1024 to 1000000"),
        ));
    }
    if effort.is_none() && r.budget_tokens.is_none() {
        return Ok(None);
    }
    Ok(Some(Reasoning {
        effort,
        budget_tokens: r.budget_tokens,
    }))
}

fn range(v: Option<f32>, lo: f32, hi: f32, field: &str) -> Result<(), DpError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(bad(field, format!("is {x}; use {lo} to {hi}"))),
        _ => Ok(()),
    }
}

/// Checks a Generate request and turns it into the neutral form.
pub fn chat_request(r: &pb::GenerateRequest, stream: bool) -> Result<ChatRequest, DpError> {
    check_model(&r.model)?;
    if r.messages.is_empty() {
        return Err(bad("messages", "is empty; send at least one message"));
    }
    let messages = r
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    range(r.temperature, 0.0, 2.0, "temperature")?;
    range(r.top_p, 0.0, 1.0, "top_p")?;
    range(r.presence_penalty, -2.0, 2.0, "presence_penalty")?;
    range(r.frequency_penalty, -2.0, 2.0, "frequency_penalty")?;
    if r.max_tokens == Some(0) {
        return Err(bad("max_tokens", "is 0; leave it unset or give at least 1"));
    }
    if r.stop.len() > MAX_STOP {
        return Err(bad(
            "stop",
            format!("has {} sequences; at most {MAX_STOP}", r.stop.len()),
        ));
    }
    if r.stop.iter().any(String::is_empty) {
        return Err(bad("stop", "holds an empty sequence"));
    }
    match r.n {
        Some(0) | Some(129..) => {
            return Err(bad(
                "n",
                format!("is {}; use 1 to 128", r.n.unwrap_or_default()),
            ));
        }
        Some(2..) if stream => {
            return Err(bad("n", "> 1 is served on unary calls only; call Generate"));
        }
        _ => {}
    }
    if let Some(k) = r.top_logprobs {
        if k > 20 {
            return Err(bad("top_logprobs", format!("is {k}; use 0 to 20")));
        }
        if !r.logprobs {
            return Err(bad("top_logprobs", "needs logprobs: true"));
        }
    }
    if r.logprobs && stream {
        return Err(bad(
            "logprobs",
            "are served on unary calls only; call Generate",
        ));
    }
    if r.top_k == Some(0) {
        return Err(bad("top_k", "is 0; leave it unset or give at least 1"));
    }
    let mut tools = Vec::with_capacity(r.tools.len());
    for (i, t) in r.tools.iter().enumerate() {
        if t.name.is_empty() {
            return Err(bad(format!("tools[{i}].name"), "is empty"));
        }
        tools.push(upstream::Tool {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters_json: t.parameters_json.clone(),
            strict: t.strict,
            cache: cache(t.cache_control.as_ref(), &format!("tools[{i}]"))?,
        });
    }
    let tool_choice = tool_choice(r.tool_choice.as_ref(), &tools)?;
    Ok(ChatRequest {
        messages,
        tool_choice,
        tools,
        parallel_tool_calls: r.parallel_tool_calls,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        presence_penalty: r.presence_penalty,
        frequency_penalty: r.frequency_penalty,
        stop: r.stop.clone(),
        seed: r.seed,
        response_format: response_format(r)?,
        reasoning: reasoning(r.reasoning.as_ref())?,
        user: (!r.user.is_empty()).then(|| r.user.clone()),
        n: r.n.filter(|n| *n > 1),
        logprobs: r.logprobs,
        top_logprobs: r.top_logprobs,
        extra: extra(&r.extra_json)?,
    })
}

/// Checks an Embed request and turns it into the neutral form.
pub fn embed_request(r: &pb::EmbedRequest) -> Result<EmbedRequest, DpError> {
    check_model(&r.model)?;
    if r.inputs.is_empty() {
        return Err(bad("inputs", "is empty; send at least one input"));
    }
    if r.inputs.len() > MAX_EMBED_INPUTS {
        return Err(bad(
            "inputs",
            format!(
                "has {} items; at most {MAX_EMBED_INPUTS} per request",
                r.inputs.len()
            ),
        ));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (i, input) in r.inputs.iter().enumerate() {
        use pb::embed_input::Input;
        inputs.push(match &input.input {
            Some(Input::Text(t)) if !t.is_empty() => EmbedInput::Text(t.clone()),
            Some(Input::Tokens(t)) if !t.ids.is_empty() => EmbedInput::Tokens(t.ids.clone()),
            _ => {
                return Err(bad(
                    format!("inputs[{i}]"),
                    "is empty; give text or token ids",
                ));
            }
        });
    }
    let texts = inputs
        .iter()
        .filter(|i| matches!(i, EmbedInput::Text(_)))
        .count();
    if texts != 0 && texts != inputs.len() {
        return Err(bad(
            "inputs",
            "mix text and token ids; send one kind per request",
        ));
    }
    if r.dimensions == Some(0) {
        return Err(bad("dimensions", "is 0; leave it unset or give at least 1"));
    }
    pb::EmbeddingEncoding::try_from(r.encoding).map_err(|_| {
        invalid(format!(
            "encoding is {}; use EMBEDDING_ENCODING_FLOAT or _BASE64",
            r.encoding
        ))
    })?;
    Ok(EmbedRequest {
        inputs,
        dimensions: r.dimensions,
        user: (!r.user.is_empty()).then(|| r.user.clone()),
        extra: extra(&r.extra_json)?,
    })
}

/// The caller's request id, or a new one.
pub fn request_id(given: &str) -> String {
    if given.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        given.chars().take(128).collect()
    }
}
