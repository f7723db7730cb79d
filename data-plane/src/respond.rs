//! Respond: what the caller gets back — the unary answer, the metadata
//! naming the member and the attempts (headers, trailers, errors), and the
//! stream's events.

use std::pin::Pin;

use futures::Stream;
use http::{HeaderMap, HeaderName, HeaderValue};
use switchyard_proto::v1 as pb;
use tonic::Status;

use crate::callers::Grant;
use crate::failover::Served;
use crate::upstream::{
    Chunk, Completion, Embeddings, ReasoningBlock, TokenLogprob, ToolCall, Usage,
};

/// Headers naming the request, the member and the attempts (on answers,
/// trailers and errors, whichever door).
///
/// Built straight into each value's string (no per-attempt strings): it runs
/// for every response.
pub fn served_headers(
    h: &mut HeaderMap,
    request_id: &str,
    served: Option<&pb::ServedBy>,
    attempts: &[pb::Attempt],
) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID, v);
    }
    if let Some(s) = served {
        if let Ok(v) = HeaderValue::from_str(&s.member_id) {
            h.insert(MEMBER, v);
        }
        let mut upstream = String::with_capacity(s.provider.len() + 1 + s.upstream_model.len());
        upstream.push_str(&s.provider);
        upstream.push('/');
        upstream.push_str(&s.upstream_model);
        if let Ok(v) = HeaderValue::try_from(upstream) {
            h.insert(UPSTREAM, v);
        }
    }
    // `member:outcome,...`, the outcome being the enum name without its prefix, lowercased.
    let mut summary = String::with_capacity(attempts.iter().map(|a| a.member_id.len() + 16).sum());
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            summary.push(',');
        }
        let outcome = pb::AttemptOutcome::try_from(a.outcome)
            .map(|o| o.as_str_name())
            .unwrap_or("?");
        summary.push_str(&a.member_id);
        summary.push(':');
        // Enum names are ASCII, so ASCII lowercasing is the full lowercasing.
        summary.extend(
            outcome
                .trim_start_matches("ATTEMPT_OUTCOME_")
                .chars()
                .map(|c| c.to_ascii_lowercase()),
        );
    }
    if let Ok(v) = HeaderValue::try_from(summary) {
        h.insert(ATTEMPTS, v);
    }
}

/// `x-switchyard-caller`: who the answer was for (a name, never a key).
pub fn caller_header(h: &mut HeaderMap, grant: Option<&Grant>) {
    if let Some(v) = grant.and_then(Grant::header) {
        h.insert(CALLER, v);
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-switchyard-request-id");
const MEMBER: HeaderName = HeaderName::from_static("x-switchyard-member");
const UPSTREAM: HeaderName = HeaderName::from_static("x-switchyard-upstream");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
const CALLER: HeaderName = HeaderName::from_static("x-switchyard-caller");

pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::GenerateStreamEvent, Status>> + Send + 'static>>;

pub fn event(e: pb::generate_stream_event::Event) -> pb::GenerateStreamEvent {
    pb::GenerateStreamEvent { event: Some(e) }
}

pub fn usage(u: Usage) -> pb::Usage {
    pb::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cached_input_tokens: u.cached_input_tokens,
        cache_write_input_tokens: u.cache_write_input_tokens,
        reasoning_tokens: u.reasoning_tokens,
    }
}

fn tool_calls(calls: Vec<ToolCall>) -> Vec<pb::ToolCall> {
    calls
        .into_iter()
        .map(|t| pb::ToolCall {
            id: t.id,
            name: t.name,
            arguments_json: t.arguments_json,
        })
        .collect()
}

fn reasoning_text(blocks: &[ReasoningBlock]) -> String {
    let mut text = String::new();
    for b in blocks.iter().filter(|b| !b.text.is_empty()) {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&b.text);
    }
    text
}

fn reasoning_blocks(blocks: Vec<ReasoningBlock>) -> Vec<pb::ReasoningBlock> {
    blocks
        .into_iter()
        .map(|b| pb::ReasoningBlock {
            text: b.text,
            signature: b.signature.unwrap_or_default(),
            redacted_data: b.redacted.unwrap_or_default(),
        })
        .collect()
}

fn logprobs(l: Vec<TokenLogprob>) -> Vec<pb::TokenLogprob> {
    l.into_iter()
        .map(|t| pb::TokenLogprob {
            token: t.token,
            logprob: t.logprob,
            bytes: t.bytes,
            top_logprobs: t
                .top
                .into_iter()
                .map(|x| pb::TopLogprob {
                    token: x.token,
                    logprob: x.logprob,
                    bytes: x.bytes,
                })
                .collect(),
        })
        .collect()
}

/// The stream event for a chunk; `None` for what is not forwarded (a late
/// `Meta`: the upstream's id and model went out with the start).
pub fn chunk_event(c: Chunk) -> Option<pb::GenerateStreamEvent> {
    use pb::generate_stream_event::Event;
    Some(match c {
        Chunk::Meta(_) => return None,
        Chunk::Text(t) => event(Event::TextDelta(t)),
        Chunk::Reasoning {
            index,
            text,
            signature,
            redacted,
        } => event(Event::ReasoningDelta(pb::ReasoningDelta {
            index,
            text,
            signature: signature.unwrap_or_default(),
            redacted_data: redacted.unwrap_or_default(),
        })),
        Chunk::ToolCall {
            index,
            id,
            name,
            arguments,
        } => event(Event::ToolCallDelta(pb::ToolCallDelta {
            index,
            id: id.unwrap_or_default(),
            name: name.unwrap_or_default(),
            arguments_delta: arguments,
        })),
        Chunk::Usage(u) => event(Event::Usage(usage(u))),
        Chunk::Finish(reason) => event(Event::Finish(pb::Finish {
            finish_reason: reason,
        })),
    })
}

/// The unary answer (its headers are the call layer's `Answer::headers`).
pub fn unary(id: String, served: Served<Completion>) -> pb::GenerateResponse {
    let Served {
        value,
        served_by,
        attempts,
        ..
    } = served;
    let mut choices = Vec::new();
    if !value.more_choices.is_empty() {
        choices.push(pb::Choice {
            index: 0,
            content: value.content.clone(),
            tool_calls: tool_calls(value.tool_calls.clone()),
            finish_reason: value.finish_reason.clone(),
            reasoning: reasoning_text(&value.reasoning),
            logprobs: logprobs(value.logprobs.clone()),
        });
        for (i, c) in value.more_choices.into_iter().enumerate() {
            choices.push(pb::Choice {
                index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                content: c.content,
                tool_calls: tool_calls(c.tool_calls),
                finish_reason: c.finish_reason,
                reasoning: reasoning_text(&c.reasoning),
                logprobs: logprobs(c.logprobs),
            });
        }
    }
    pb::GenerateResponse {
        request_id: id,
        content: value.content,
        tool_calls: tool_calls(value.tool_calls),
        finish_reason: value.finish_reason,
        usage: value.usage.map(usage),
        served_by: Some(served_by),
        attempts,
        reasoning: reasoning_text(&value.reasoning),
        reasoning_blocks: reasoning_blocks(value.reasoning),
        upstream_id: value.meta.id.unwrap_or_default(),
        response_model: value.meta.model.unwrap_or_default(),
        system_fingerprint: value.meta.system_fingerprint.unwrap_or_default(),
        logprobs: logprobs(value.logprobs),
        choices,
    }
}

/// The embeddings answer (its headers are the call layer's `Answer::headers`).
pub fn embeddings(
    id: String,
    served: Served<Embeddings>,
    encoding: pb::EmbeddingEncoding,
) -> pb::EmbedResponse {
    let Served {
        value,
        served_by,
        attempts,
        ..
    } = served;
    let base64 = encoding == pb::EmbeddingEncoding::Base64;
    let embeddings = value
        .vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| pb::Embedding {
            index: u32::try_from(i).unwrap_or(u32::MAX),
            data: if base64 {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            } else {
                Vec::new()
            },
            values: if base64 { Vec::new() } else { v },
        })
        .collect();
    pb::EmbedResponse {
        request_id: id,
        embeddings,
        usage: value.usage.map(usage),
        served_by: Some(served_by),
        attempts,
        response_model: value.model.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_headers_name_member_upstream_and_attempts() {
        let attempt = |member: &str, outcome: i32| pb::Attempt {
            member_id: member.into(),
            outcome,
            ..Default::default()
        };
        let served = pb::ServedBy {
            pool: "p".into(),
            member_id: "m2".into(),
            provider: "fake".into(),
            upstream_model: "gpt-x".into(),
        };
        let attempts = [
            attempt("m1", pb::AttemptOutcome::Transient as i32),
            attempt("m3", 999),
            attempt("m2", pb::AttemptOutcome::Ok as i32),
        ];
        let mut md = HeaderMap::new();
        served_headers(&mut md, "r-1", Some(&served), &attempts);
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(get("x-switchyard-request-id").as_deref(), Some("r-1"));
        assert_eq!(get("x-switchyard-member").as_deref(), Some("m2"));
        assert_eq!(get("x-switchyard-upstream").as_deref(), Some("fake/gpt-x"));
        assert_eq!(
            get("x-switchyard-attempts").as_deref(),
            Some("m1:transient,m3:?,m2:ok")
        );
    }
}
