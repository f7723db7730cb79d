//! Respond: what the caller gets back — the unary answer, the metadata
//! naming the member and the attempts (headers, trailers, errors), and the
//! stream's events.

use std::pin::Pin;

use futures::Stream;
use switchyard_proto::v1 as pb;
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::failover::{Failed, Served};
use crate::upstream::{Chunk, Completion};

/// Metadata naming the server, the member and the attempts (headers or trailers).
///
/// Built straight into each value's string (no per-attempt strings): it runs
/// for every response.
pub fn served_metadata(
    md: &mut MetadataMap,
    request_id: &str,
    served: Option<&pb::ServedBy>,
    attempts: &[pb::Attempt],
) {
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert("x-switchyard-request-id", v);
    }
    if let Some(s) = served {
        if let Ok(v) = MetadataValue::try_from(s.member_id.as_str()) {
            md.insert("x-switchyard-member", v);
        }
        let mut upstream = String::with_capacity(s.provider.len() + 1 + s.upstream_model.len());
        upstream.push_str(&s.provider);
        upstream.push('/');
        upstream.push_str(&s.upstream_model);
        if let Ok(v) = MetadataValue::try_from(upstream) {
            md.insert("x-switchyard-upstream", v);
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
    if let Ok(v) = MetadataValue::try_from(summary) {
        md.insert("x-switchyard-attempts", v);
    }
}

/// The caller's status for a request nobody served, naming the attempts.
pub fn failed(request_id: &str, f: Failed) -> (Status, Vec<pb::Attempt>) {
    let mut status = Status::from(f.error);
    served_metadata(status.metadata_mut(), request_id, None, &f.attempts);
    (status, f.attempts)
}

pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::GenerateStreamEvent, Status>> + Send + 'static>>;

pub fn event(e: pb::generate_stream_event::Event) -> pb::GenerateStreamEvent {
    pb::GenerateStreamEvent { event: Some(e) }
}

pub fn chunk_event(c: Chunk) -> pb::GenerateStreamEvent {
    use pb::generate_stream_event::Event;
    match c {
        Chunk::Text(t) => event(Event::TextDelta(t)),
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
        Chunk::Usage(u) => event(Event::Usage(pb::Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        })),
        Chunk::Finish(reason) => event(Event::Finish(pb::Finish {
            finish_reason: reason,
        })),
    }
}

/// The unary answer, with the metadata naming who served it.
pub fn unary(id: String, served: Served<Completion>) -> tonic::Response<pb::GenerateResponse> {
    let Served {
        value,
        served_by,
        attempts,
        ..
    } = served;
    // Metadata first, so the response can take the values without copies.
    let mut md = MetadataMap::new();
    served_metadata(&mut md, &id, Some(&served_by), &attempts);
    let mut resp = tonic::Response::new(pb::GenerateResponse {
        request_id: id,
        content: value.content,
        tool_calls: value
            .tool_calls
            .into_iter()
            .map(|t| pb::ToolCall {
                id: t.id,
                name: t.name,
                arguments_json: t.arguments_json,
            })
            .collect(),
        finish_reason: value.finish_reason,
        usage: value.usage.map(|u| pb::Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
        }),
        served_by: Some(served_by),
        attempts,
    });
    *resp.metadata_mut() = md;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_metadata_names_member_upstream_and_attempts() {
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
        let mut md = MetadataMap::new();
        served_metadata(&mut md, "r-1", Some(&served), &attempts);
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
