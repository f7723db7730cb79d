//! The in-process mock upstream: deterministic answers, faults per member.
//!
//! The member's upstream model id names the model and, after `?`, its
//! faults: `mock-a?status=503&retry_after=2&delay_ms=200&drop_after=3&stall_after=2&error_event=1&chunks=8&chunk_delay_ms=10`.
//! - `status`: fail with this HTTP status (404 = unknown model).
//! - `delay_ms`: wait before the first chunk (or the unary answer).
//! - `drop_after`: stream N chunks, then end without finishing.
//! - `stall_after`: stream N chunks, then hang.
//! - `error_event`: send an error event before any content.
//! - `context_too_long`: with `status=400`, the provider's context-length error.
//! - `chunks`, `chunk_delay_ms`: shape of a healthy answer.

use std::time::Duration;

use futures::StreamExt as _;

use super::wire::sat;
use super::{
    ChatRequest, Chunk, ChunkStream, Completion, EmbedInput, EmbedRequest, Embeddings, Role,
    Target, UpstreamError, Usage,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Faults {
    status: Option<u16>,
    retry_after: Option<u64>,
    delay_ms: u64,
    drop_after: Option<usize>,
    stall_after: Option<usize>,
    error_event: bool,
    context_too_long: bool,
    chunks: usize,
    chunk_delay_ms: u64,
}

fn parse(model: &str) -> (&str, Faults) {
    let (name, query) = model.split_once('?').unwrap_or((model, ""));
    let mut f = Faults {
        chunks: 5,
        ..Faults::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "1"));
        let n = v.parse::<u64>().ok();
        match k {
            "status" => f.status = n.and_then(|n| u16::try_from(n).ok()),
            "retry_after" => f.retry_after = n,
            "delay_ms" => f.delay_ms = n.unwrap_or(0),
            "drop_after" => f.drop_after = n.and_then(|n| usize::try_from(n).ok()),
            "stall_after" => f.stall_after = n.and_then(|n| usize::try_from(n).ok()),
            "error_event" => f.error_event = v != "0",
            "context_too_long" => f.context_too_long = v != "0",
            "chunks" => {
                f.chunks = n
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(5)
                    .clamp(1, 10_000)
            }
            "chunk_delay_ms" => f.chunk_delay_ms = n.unwrap_or(0),
            _ => {}
        }
    }
    (name, f)
}

/// The words of the deterministic answer.
fn words(name: &str, req: &ChatRequest, n: usize) -> Vec<String> {
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let mut text = format!("{name} says hello");
    if !last_user.is_empty() {
        text.push_str(" to: ");
        text.push_str(last_user);
    }
    let mut out: Vec<String> = text.split(' ').map(|w| format!("{w} ")).collect();
    let mut i = 1;
    while out.len() < n {
        out.push(format!("w{i} "));
        i += 1;
    }
    out.truncate(n.max(1));
    out
}

fn usage(req: &ChatRequest, words: usize) -> Usage {
    let input: usize = req
        .messages
        .iter()
        .map(|m| m.content.split_whitespace().count())
        .sum();
    Usage::new(
        u32::try_from(input).unwrap_or(u32::MAX),
        u32::try_from(words).unwrap_or(u32::MAX),
    )
}

fn fail(f: &Faults) -> Option<UpstreamError> {
    let status = f.status?;
    let (message, code) = match status {
        404 => ("model not found".to_owned(), Some("model_not_found")),
        400 if f.context_too_long => (
            "maximum context length exceeded".to_owned(),
            Some("context_length_exceeded"),
        ),
        _ => (format!("mock failure {status}"), None),
    };
    Some(UpstreamError::Http {
        status,
        message,
        code: code.map(str::to_owned),
        retry_after: f.retry_after.map(Duration::from_secs),
        rate: None,
    })
}

pub async fn complete(t: &Target, req: &ChatRequest) -> Result<Completion, UpstreamError> {
    let (name, f) = parse(&t.model);
    if f.delay_ms > 0 {
        let delay = Duration::from_millis(f.delay_ms);
        if delay >= t.timeouts.first_byte {
            tokio::time::sleep(t.timeouts.first_byte).await;
            return Err(UpstreamError::FirstByteTimeout);
        }
        tokio::time::sleep(delay).await;
    }
    if let Some(e) = fail(&f) {
        return Err(e);
    }
    if f.error_event {
        return Err(UpstreamError::Event {
            message: "mock overloaded".into(),
        });
    }
    if f.drop_after.is_some() {
        return Err(UpstreamError::Io("mock connection dropped".into()));
    }
    if f.stall_after.is_some() {
        tokio::time::sleep(t.timeouts.first_byte).await;
        return Err(UpstreamError::FirstByteTimeout);
    }
    let w = words(name, req, f.chunks);
    Ok(Completion {
        content: w.concat().trim_end().to_owned(),
        finish_reason: "stop".into(),
        usage: Some(usage(req, w.len())),
        ..Completion::default()
    })
}

/// Deterministic vectors: `dimensions` (default 8) values from each input's
/// bytes, so equal inputs embed equally.
pub async fn embed(t: &Target, req: &EmbedRequest) -> Result<Embeddings, UpstreamError> {
    let (name, f) = parse(&t.model);
    if f.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
    }
    if let Some(e) = fail(&f) {
        return Err(e);
    }
    let dims = req.dimensions.unwrap_or(8).clamp(1, 4096) as usize;
    let mut tokens = 0u32;
    let vectors = req
        .inputs
        .iter()
        .map(|i| {
            let bytes: Vec<u8> = match i {
                EmbedInput::Text(t) => {
                    tokens = tokens.saturating_add(sat(t.split_whitespace().count() as u64));
                    t.as_bytes().to_vec()
                }
                EmbedInput::Tokens(ids) => {
                    tokens = tokens.saturating_add(sat(ids.len() as u64));
                    ids.iter().flat_map(|x| x.to_le_bytes()).collect()
                }
            };
            (0..dims)
                .map(|d| {
                    let sum: u32 = bytes
                        .iter()
                        .enumerate()
                        .map(|(k, b)| u32::from(*b) * (k as u32 + d as u32 + 1))
                        .fold(0, u32::wrapping_add);
                    (sum % 1000) as f32 / 1000.0
                })
                .collect()
        })
        .collect();
    Ok(Embeddings {
        vectors,
        usage: Some(Usage::new(tokens, 0)),
        model: Some(name.to_owned()),
        rate: None,
    })
}

pub async fn stream(t: &Target, req: &ChatRequest) -> Result<ChunkStream, UpstreamError> {
    let (name, f) = parse(&t.model);
    if let Some(e) = fail(&f) {
        return Err(e);
    }
    let w = words(name, req, f.chunks);
    let u = usage(req, w.len());
    let first_delay = Duration::from_millis(f.delay_ms);
    let gap = Duration::from_millis(f.chunk_delay_ms);
    let items: Vec<Step> = if f.error_event {
        vec![Step::Fail(UpstreamError::Event {
            message: "mock overloaded".into(),
        })]
    } else {
        let cut = f.drop_after.or(f.stall_after);
        let mut steps: Vec<Step> = w.into_iter().map(|x| Step::Chunk(Chunk::Text(x))).collect();
        match cut {
            Some(n) if f.stall_after.is_some() => {
                steps.truncate(n);
                steps.push(Step::Stall);
            }
            Some(n) => {
                steps.truncate(n);
                steps.push(Step::Fail(UpstreamError::Truncated));
            }
            None => {
                steps.push(Step::Chunk(Chunk::Usage(u)));
                steps.push(Step::Chunk(Chunk::Finish("stop".into())));
            }
        }
        steps
    };
    let stalls = items.last().is_some_and(|s| matches!(s, Step::Stall));
    let paced =
        futures::stream::iter(items.into_iter().enumerate()).then(move |(i, step)| async move {
            let wait = if i == 0 { first_delay } else { gap };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            step
        });
    let s = paced.filter_map(|step| {
        std::future::ready(match step {
            Step::Chunk(c) => Some(Ok(c)),
            Step::Fail(e) => Some(Err(e)),
            Step::Stall => None,
        })
    });
    if stalls {
        // Hang like a silent upstream after the last chunk.
        return Ok(s.chain(futures::stream::pending()).boxed());
    }
    Ok(s.boxed())
}

enum Step {
    Chunk(Chunk),
    Fail(UpstreamError),
    Stall,
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, Message, Timeouts};
    use super::*;

    fn target(model: &str) -> Target {
        Target {
            kind: Kind::Mock,
            base_url: String::new(),
            model: model.into(),
            credential: None,
            extra_headers: Vec::new(),
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                first_byte: Duration::from_secs(5),
                total: Duration::from_secs(30),
            },
            default_max_tokens: None,
            allow_extra: true,
        }
    }

    fn req() -> ChatRequest {
        ChatRequest {
            messages: vec![Message::text(Role::User, "hi")],
            ..ChatRequest::default()
        }
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_per_input() {
        let req = EmbedRequest {
            inputs: vec![
                EmbedInput::Text("a b".into()),
                EmbedInput::Text("c".into()),
                EmbedInput::Text("a b".into()),
            ],
            dimensions: Some(4),
            ..EmbedRequest::default()
        };
        let e = embed(&target("emb"), &req).await.expect("embeds");
        assert_eq!(e.vectors.len(), 3);
        assert!(e.vectors.iter().all(|v| v.len() == 4));
        assert_eq!(e.vectors[0], e.vectors[2]);
        assert_ne!(e.vectors[0], e.vectors[1]);
        assert_eq!(e.usage, Some(Usage::new(5, 0)));
        let err = embed(&target("emb?status=503"), &req)
            .await
            .expect_err("fails");
        assert_eq!(err.http_status(), Some(503));
    }

    #[tokio::test]
    async fn healthy_stream_ends_with_usage_then_finish() {
        let s = stream(&target("m?chunks=3"), &req()).await.expect("stream");
        let items: Vec<_> = s.collect().await;
        assert_eq!(items.len(), 5);
        assert!(matches!(items[3], Ok(Chunk::Usage(_))));
        assert_eq!(items[4].as_ref().ok(), Some(&Chunk::Finish("stop".into())));
    }

    #[tokio::test]
    async fn faults() {
        let err = stream(&target("m?status=503&retry_after=2"), &req())
            .await
            .err()
            .expect("fails");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        let items: Vec<_> = stream(&target("m?drop_after=2"), &req())
            .await
            .expect("opens")
            .collect()
            .await;
        assert_eq!(items.len(), 3);
        assert!(matches!(items[2], Err(UpstreamError::Truncated)));
        let mut stalled = stream(&target("m?stall_after=1"), &req())
            .await
            .expect("opens");
        assert!(stalled.next().await.is_some_and(|c| c.is_ok()));
        let next = tokio::time::timeout(Duration::from_millis(100), stalled.next()).await;
        assert!(next.is_err(), "a stalled mock yields nothing more");
        let c = complete(&target("m"), &req()).await.expect("unary");
        assert!(
            c.content.starts_with("m says hello to: hi"),
            "{}",
            c.content
        );
    }
}
