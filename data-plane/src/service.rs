//! The `switchyard.v1.Inference` gRPC service.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::inference_server::Inference;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::task::TaskTracker;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::failover::{Engine, Failed, OpenStream, Served};
use crate::upstream::{self, ChatRequest, Chunk, ErrorClass};

pub struct InferenceService {
    engine: Arc<Engine>,
    tasks: TaskTracker,
    /// Longest silence between two chunks once a stream is committed.
    stream_idle: Duration,
}

impl InferenceService {
    pub fn new(engine: Arc<Engine>, tasks: TaskTracker, stream_idle: Duration) -> Self {
        Self {
            engine,
            tasks,
            stream_idle,
        }
    }
}

/// The caller's deadline, from grpc-timeout (`100m`, `5S`, …).
fn deadline(md: &MetadataMap) -> Option<Instant> {
    let v = md.get("grpc-timeout")?.to_str().ok()?;
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    // Finish a little early, so the caller gets our DEADLINE_EXCEEDED (with
    // the attempts made) rather than the transport's bare CANCELLED.
    let margin = (d / 10).min(Duration::from_millis(20));
    Instant::now().checked_add(d.saturating_sub(margin))
}

fn role(r: i32, i: usize) -> Result<upstream::Role, Status> {
    match pb::Role::try_from(r) {
        Ok(pb::Role::System) => Ok(upstream::Role::System),
        Ok(pb::Role::User) => Ok(upstream::Role::User),
        Ok(pb::Role::Assistant) => Ok(upstream::Role::Assistant),
        Ok(pb::Role::Tool) => Ok(upstream::Role::Tool),
        Ok(pb::Role::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
            "messages[{i}].role is {r}; use ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"
        ))),
    }
}

/// Checks the request and turns it into the neutral form.
fn chat_request(r: &pb::GenerateRequest) -> Result<ChatRequest, Status> {
    if r.model.len() > 512 {
        return Err(Status::invalid_argument(format!(
            "model is {} bytes; a route, pool or provider/model name is at most 512",
            r.model.len()
        )));
    }
    if r.messages.is_empty() {
        return Err(Status::invalid_argument(
            "messages is empty; send at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.iter().enumerate() {
        messages.push(upstream::Message {
            role: role(m.role, i)?,
            content: m.content.clone(),
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
        });
    }
    if let Some(t) = r.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(Status::invalid_argument(format!(
            "temperature is {t}; use 0 to 2"
        )));
    }
    if let Some(p) = r.top_p
        && !(0.0..=1.0).contains(&p)
    {
        return Err(Status::invalid_argument(format!(
            "top_p is {p}; use 0 to 1"
        )));
    }
    if r.max_tokens == Some(0) {
        return Err(Status::invalid_argument(
            "max_tokens is 0; leave it unset or give at least 1",
        ));
    }
    Ok(ChatRequest {
        messages,
        tools: r
            .tools
            .iter()
            .map(|t| upstream::Tool {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters_json: t.parameters_json.clone(),
            })
            .collect(),
        max_tokens: r.max_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        stop: r.stop.clone(),
        seed: r.seed,
        json_mode: r.response_format == pb::ResponseFormat::JsonObject as i32,
    })
}

fn request_id(r: &pb::GenerateRequest) -> String {
    if r.request_id.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        r.request_id.chars().take(128).collect()
    }
}

/// Metadata naming the server, the member and the attempts (headers or trailers).
///
/// Built straight into each value's string (no per-attempt strings): it runs
/// for every response.
fn served_metadata(
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

fn failed(request_id: &str, f: Failed) -> Status {
    let mut status = Status::from(f.error);
    served_metadata(status.metadata_mut(), request_id, None, &f.attempts);
    status
}

type EventStream =
    Pin<Box<dyn Stream<Item = Result<pb::GenerateStreamEvent, Status>> + Send + 'static>>;

fn event(e: pb::generate_stream_event::Event) -> pb::GenerateStreamEvent {
    pb::GenerateStreamEvent { event: Some(e) }
}

fn chunk_event(c: Chunk) -> pb::GenerateStreamEvent {
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

/// What both Generate RPCs start with: the checked request, its id, the
/// caller's deadline and the request's log span.
struct Call {
    id: String,
    chat: ChatRequest,
    deadline: Option<Instant>,
    span: tracing::Span,
}

impl Call {
    fn start(
        r: Request<pb::GenerateRequest>,
        rpc: &'static str,
    ) -> Result<(pb::GenerateRequest, Self), Status> {
        let deadline = deadline(r.metadata());
        let r = r.into_inner();
        let id = request_id(&r);
        let chat = chat_request(&r)?;
        // Caller metadata is logged, never sent upstream.
        let span = tracing::info_span!("generate", rpc, request_id = %id, model = %r.model, caller = ?r.metadata);
        Ok((
            r,
            Self {
                id,
                chat,
                deadline,
                span,
            },
        ))
    }

    /// Runs the engine inside the request's span; a failure is logged and
    /// becomes the caller's status.
    async fn run<T>(
        &self,
        engine: impl std::future::Future<Output = Result<Served<T>, Failed>>,
    ) -> Result<Served<T>, Status> {
        engine.instrument(self.span.clone()).await.map_err(|f| {
            self.span.in_scope(
                || tracing::info!(error = %f.error, attempts = f.attempts.len(), "not served"),
            );
            failed(&self.id, f)
        })
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn generate(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let (r, call) = Call::start(r, "generate")?;
        let served = call
            .run(self.engine.generate(&r.model, &call.chat, call.deadline))
            .await?;
        let Call { id, span, .. } = call;
        let Served {
            value,
            served_by,
            attempts,
            member,
            ..
        } = served;
        if member.limited() {
            let tokens = value.usage.map_or(0, |u| {
                u64::from(u.input_tokens) + u64::from(u.output_tokens)
            });
            // The request was counted when the attempt started; add its tokens.
            self.engine
                .fleet
                .record_usage(&member.member_id, 0, tokens)
                .await;
        }
        span.in_scope(
            || tracing::info!(member = %served_by.member_id, attempts = attempts.len(), "served"),
        );
        // Metadata first, so the response can take the values without copies.
        let mut md = MetadataMap::new();
        served_metadata(&mut md, &id, Some(&served_by), &attempts);
        let mut resp = Response::new(pb::GenerateResponse {
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
        Ok(resp)
    }

    type GenerateStreamStream = EventStream;

    async fn generate_stream(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (r, call) = Call::start(r, "generate_stream")?;
        let served = call
            .run(self.engine.open_stream(&r.model, &call.chat, call.deadline))
            .await?;
        let Call {
            id, span, deadline, ..
        } = call;
        let Served {
            value: OpenStream { first, rest },
            served_by,
            attempts,
            member,
            pool,
        } = served;
        span.in_scope(|| tracing::info!(member = %served_by.member_id, attempts = attempts.len(), "stream committed"));

        let (tx, rx) = mpsc::channel::<Result<pb::GenerateStreamEvent, Status>>(32);
        let start = event(pb::generate_stream_event::Event::Start(pb::StreamStart {
            request_id: id.clone(),
            served_by: Some(served_by.clone()),
            attempts: attempts.clone(),
        }));
        let engine = self.engine.clone();
        let idle = self.stream_idle;
        let request_end = Instant::now() + member.target.timeouts.total;
        let mut trailers = MetadataMap::new();
        served_metadata(&mut trailers, &id, Some(&served_by), &attempts);
        let mut headers = MetadataMap::new();
        served_metadata(&mut headers, &id, Some(&served_by), &attempts);
        let request_id = id.clone();
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = finished.clone();
        self.tasks.spawn(
            async move {
            // A caller that stops reading holds the upstream open no longer
            // than the stream may last.
            let end = deadline.map_or(request_end, |d| d.min(request_end));
            let send = |ev| {
                let tx = tx.clone();
                async move {
                    match tokio::time::timeout_at(end.into(), tx.send(ev)).await {
                        Ok(Ok(())) => Ok(()),
                        _ => Err(()),
                    }
                }
            };
            // The closing status gets a moment of its own even past `end`, so a
            // stream never looks finished (OK) when it was cut.
            let finish = |ev| {
                let tx = tx.clone();
                async move {
                    let _ = tokio::time::timeout(Duration::from_secs(1), tx.send(ev)).await;
                }
            };
            let count_usage = |c: &Chunk| {
                let tokens = match c {
                    Chunk::Usage(u) if member.limited() => u64::from(u.input_tokens) + u64::from(u.output_tokens),
                    _ => 0,
                };
                let (fleet, id) = (engine.fleet.clone(), member.member_id.clone());
                async move {
                    if tokens > 0 {
                        fleet.record_usage(&id, 0, tokens).await;
                    }
                }
            };
            let pump = async {
                send(Ok(start)).await?;
                let finished = matches!(first, Chunk::Finish(_));
                count_usage(&first).await;
                send(Ok(chunk_event(first))).await?;
                if finished {
                    return Ok(());
                }
                let mut rest = rest;
                loop {
                    // The silence allowed: the idle limit, within the caller's
                    // deadline and the provider's whole-request timeout.
                    let limit = idle.min(end.saturating_duration_since(Instant::now()));
                    let next = tokio::select! {
                        () = tx.closed() => return Err(()),
                        n = tokio::time::timeout(limit, rest.next()) => n,
                    };
                    match next {
                        Ok(Some(Ok(chunk))) => {
                            count_usage(&chunk).await;
                            let finished = matches!(chunk, Chunk::Finish(_));
                            send(Ok(chunk_event(chunk))).await?;
                            if finished {
                                return Ok(());
                            }
                        }
                        Ok(Some(Err(err))) => {
                            tracing::warn!(request_id = %request_id, member = %member.member_id, error = %err, "upstream failed after the first chunk");
                            if err.class() == ErrorClass::Transient {
                                engine.fleet.failure(&member.member_id, &pool.policy, err.retry_after(), false).await;
                            }
                            let msg = format!("member {} failed mid-stream: {err}; the stream is not replayed elsewhere", member.member_id);
                            let _ = finish(Err(Status::unavailable(msg))).await;
                            return Err(());
                        }
                        Ok(None) => {
                            let _ = finish(Err(Status::unavailable(format!("member {} ended the stream before finishing", member.member_id)))).await;
                            return Err(());
                        }
                        Err(_) => {
                            let now = Instant::now();
                            let msg = if deadline.is_some_and(|d| now >= d) {
                                // The caller's deadline: not the member's fault.
                                "deadline passed while streaming".to_owned()
                            } else if now >= request_end {
                                format!("member {} exceeded the provider's request timeout", member.member_id)
                            } else {
                                tracing::warn!(request_id = %request_id, member = %member.member_id, "stream stalled");
                                engine.fleet.failure(&member.member_id, &pool.policy, None, false).await;
                                format!("no chunk from member {} for {} ms", member.member_id, limit.as_millis())
                            };
                            let _ = finish(Err(Status::deadline_exceeded(msg))).await;
                            return Err(());
                        }
                    }
                }
            };
            // Dropping `rest` (here, at the end of the task) closes the upstream
            // connection: a caller that left cancels the upstream at once.
            if pump.await.is_ok() {
                finished.store(true, std::sync::atomic::Ordering::Release);
                // OK with trailing metadata naming the member and the attempts.
                let _ = finish(Err(Status::with_metadata(tonic::Code::Ok, "", trailers))).await;
            }
            }
            .instrument(span),
        );
        // If the pump ends without handing over a status (it gave up on a
        // caller that stopped reading), the stream ends UNAVAILABLE, never OK.
        let tail = futures::stream::once(async move {
            (!done.load(std::sync::atomic::Ordering::Acquire))
                .then(|| Err(Status::unavailable("the stream was cut before it finished")))
        })
        .filter_map(std::future::ready);
        let mut resp = Response::new(Box::pin(ReceiverStream::new(rx).chain(tail)) as EventStream);
        *resp.metadata_mut() = headers;
        Ok(resp)
    }

    async fn list_models(
        &self,
        _r: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let catalog = self.engine.catalog.load_full();
        let (pools, routes) = catalog.models();
        let mut models = Vec::new();
        let health_of = |pool: &crate::catalog::Pool| {
            let engine = self.engine.clone();
            let pool_id = pool.id.clone();
            let members = pool.members.clone();
            async move {
                let refs: Vec<_> = members.iter().map(|m| m.as_member()).collect();
                let b = engine.fleet.begin(&pool_id, &refs, false).await;
                members
                    .iter()
                    .zip(b.health.iter())
                    .map(|(m, h)| pb::MemberHealth {
                        member_id: m.member_id.clone(),
                        provider: m.provider.clone(),
                        upstream_model: m.upstream_model.clone(),
                        status: m.status.into(),
                        available: !h.benched(b.now_ms),
                        consecutive_failures: h.consecutive_failures,
                        benched_until_ms: if h.benched(b.now_ms) {
                            h.benched_until_ms
                        } else {
                            0
                        },
                        requests_this_minute: h.requests_this_minute,
                        tokens_this_minute: h.tokens_this_minute,
                    })
                    .collect::<Vec<_>>()
            }
        };
        for p in &pools {
            models.push(pb::VirtualModel {
                name: p.name.clone(),
                kind: "pool".into(),
                enabled: p.enabled,
                members: health_of(p).await,
            });
        }
        for r in &routes {
            let mut members = Vec::new();
            for (p, _) in &r.tiers {
                members.extend(health_of(p).await);
            }
            models.push(pb::VirtualModel {
                name: r.name.clone(),
                kind: "route".into(),
                enabled: r.enabled,
                members,
            });
        }
        Ok(Response::new(pb::ListModelsResponse {
            revision: catalog.revision,
            models,
        }))
    }
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
