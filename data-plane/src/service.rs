//! The `switchyard.v1.Inference` gRPC service: checks the request, runs
//! failover, hands the answer to `respond` (unary) or the stream pump.

use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use switchyard_proto::v1::inference_server::Inference;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::access::{self, Admission};
use crate::callers::Grant;
use crate::error::DpError;
use crate::failover::{Engine, Failed, Served};
use crate::fleet::State;
use crate::intake;
use crate::model::Pool;
use crate::observe::trace::Incoming;
use crate::observe::{Watch, report};
use crate::respond::{self, EventStream, event, failed, served_metadata};
use crate::stream::Pump;
use crate::upstream::{ChatRequest, EmbedRequest, Usage};

pub struct InferenceService {
    engine: Arc<Engine>,
    tasks: TaskTracker,
    /// Longest silence between two chunks once a stream is committed.
    stream_idle: Duration,
    /// Keys of the caller's `metadata` copied into the request's span (and
    /// logs); none by default, as metadata may hold personal data.
    span_metadata: Arc<[String]>,
}

impl InferenceService {
    pub fn new(
        engine: Arc<Engine>,
        tasks: TaskTracker,
        stream_idle: Duration,
        span_metadata: Vec<String>,
    ) -> Self {
        Self {
            engine,
            tasks,
            stream_idle,
            span_metadata: span_metadata.into(),
        }
    }
}

impl InferenceService {
    /// The pools and routes `grant` may use, by name: (name, "pool" | "route").
    pub fn model_names(&self, grant: Option<&Grant>) -> Vec<(String, &'static str)> {
        let catalog = self.engine.catalog.load();
        let (pools, routes) = catalog.models();
        let pools = pools.into_iter().map(|p| (p.name.clone(), "pool"));
        let routes = routes.into_iter().map(|r| (r.name.clone(), "route"));
        pools
            .chain(routes)
            .filter(|(name, _)| grant.is_none_or(|g| g.sees(name)))
            .collect()
    }

    /// Whether a config is loaded.
    pub fn ready(&self) -> bool {
        self.engine.catalog.load().loaded
    }
}

/// `x-switchyard-caller`: who the answer was for (a name, never a key).
fn caller_header(md: &mut MetadataMap, grant: Option<&Grant>) {
    if let Some(v) = grant.and_then(Grant::header) {
        md.insert("x-switchyard-caller", v);
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
    // A tenth of the budget, at most 50 ms: room for the answer to travel
    // back over a loaded machine or a cross-zone link.
    let margin = (d / 10).min(Duration::from_millis(50));
    Instant::now().checked_add(d.saturating_sub(margin))
}

/// What every inference RPC starts with: the checked request, its id, the
/// caller's deadline and trace context, the request's span, and its watch
/// (metrics and statistics, taken when it ends).
struct Call<Q> {
    /// Who is calling (absent only on a server built without the filter).
    grant: Option<Grant>,
    id: String,
    req: Q,
    /// Tokens the request may use, estimated (reserved from limits).
    estimate: u64,
    deadline: Option<Instant>,
    span: tracing::Span,
    trace: Incoming,
}

/// A started request: as received, checked, and watched.
type Started<R> = (R, Call<<R as Inbound>::Checked>, Option<Watch>);

/// What `start` needs to know of an inference request.
trait Inbound {
    type Checked;
    /// GenAI operation name ("chat", "embeddings").
    const OPERATION: &'static str;
    fn model(&self) -> &str;
    fn request_id(&self) -> &str;
    fn metadata(&self) -> &std::collections::HashMap<String, String>;
    fn check(&self, rpc: &str) -> Result<(Self::Checked, u64), DpError>;
}

impl Inbound for pb::GenerateRequest {
    type Checked = ChatRequest;
    const OPERATION: &'static str = "chat";
    fn model(&self) -> &str {
        &self.model
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn metadata(&self) -> &std::collections::HashMap<String, String> {
        &self.metadata
    }
    fn check(&self, rpc: &str) -> Result<(ChatRequest, u64), DpError> {
        let c = intake::chat_request(self, rpc == "generate_stream")?;
        let estimate = c.token_estimate();
        Ok((c, estimate))
    }
}

impl Inbound for pb::EmbedRequest {
    type Checked = EmbedRequest;
    const OPERATION: &'static str = "embeddings";
    fn model(&self) -> &str {
        &self.model
    }
    fn request_id(&self) -> &str {
        &self.request_id
    }
    fn metadata(&self) -> &std::collections::HashMap<String, String> {
        &self.metadata
    }
    fn check(&self, _rpc: &str) -> Result<(EmbedRequest, u64), DpError> {
        let e = intake::embed_request(self)?;
        let estimate = e.token_estimate();
        Ok((e, estimate))
    }
}

impl InferenceService {
    /// The caller's own limits, before any member is tried.
    async fn admit<Q>(
        &self,
        call: &Call<Q>,
        watch: &mut Option<Watch>,
    ) -> Result<Option<Admission>, Status> {
        match access::admit(&self.engine.fleet, call.grant.as_ref(), call.estimate).await {
            Ok(a) => Ok(a),
            Err(e) => {
                call.span
                    .in_scope(|| tracing::info!(error = %e, "refused: caller over its limit"));
                let mut status = Status::from(e);
                caller_header(status.metadata_mut(), call.grant.as_ref());
                if let Some(w) = watch.take() {
                    w.finish(status.code(), None, None, None, &[]);
                }
                Err(status)
            }
        }
    }

    fn start<R: Inbound>(&self, r: Request<R>, rpc: &'static str) -> Result<Started<R>, Status> {
        let deadline = deadline(r.metadata());
        let trace = Incoming::from_metadata(r.metadata());
        let grant = r.extensions().get::<Grant>().cloned();
        let r = r.into_inner();
        let model = r.model();
        let mut watch = self.engine.observer.start(model);
        if let Some(g) = &grant {
            watch.set_caller(g.name());
        }
        let id = intake::request_id(r.request_id());
        let checked = r.check(rpc).and_then(|c| {
            // An empty model is the request's mistake, reported by resolve.
            if let Some(g) = grant.as_ref().filter(|_| !model.is_empty()) {
                let catalog = self.engine.catalog.load();
                let direct = !catalog.is_configured(model) && model.contains('/');
                g.permit(model, direct)?;
            }
            Ok(c)
        });
        let (checked, estimate) = match checked {
            Ok(c) => c,
            Err(e) => {
                let mut status = Status::from(e);
                caller_header(status.metadata_mut(), grant.as_ref());
                watch.finish(status.code(), None, None, None, &[]);
                return Err(status);
            }
        };
        // Caller metadata is never sent upstream, and reaches the span (and
        // logs) only for the keys the operator allowed.
        let allowed: Vec<String> = self
            .span_metadata
            .iter()
            .filter_map(|k| r.metadata().get(k).map(|v| format!("{k}={v}")))
            .collect();
        // With spans exported, the span carries the GenAI attributes; the
        // logs alone need only the request's identity.
        let span = if self.engine.export_spans {
            tracing::info_span!(
                "generate",
                otel.name = %format_args!("{rpc} {model}"),
                rpc,
                request_id = %id,
                caller = grant.as_ref().map_or("", Grant::name),
                gen_ai.operation.name = R::OPERATION,
                gen_ai.request.model = %model,
                metadata = tracing::field::Empty,
                gen_ai.response.model = tracing::field::Empty,
                switchyard.member = tracing::field::Empty,
                switchyard.attempts = tracing::field::Empty,
                rpc.grpc.status_code = tracing::field::Empty,
            )
        } else {
            tracing::info_span!(
                "generate",
                rpc,
                request_id = %id,
                caller = grant.as_ref().map_or("", Grant::name),
                model = %model,
                metadata = tracing::field::Empty,
            )
        };
        if !allowed.is_empty() {
            span.record("metadata", allowed.join(","));
        }
        Ok((
            r,
            Call {
                grant,
                id,
                req: checked,
                estimate,
                deadline,
                span,
                trace,
            },
            Some(watch),
        ))
    }
}

impl InferenceService {
    /// A unary answer is in hand: settle what was reserved on the usage it
    /// reported, log it and close its watch.
    fn served<Q, T>(
        &self,
        call: &Call<Q>,
        admission: Option<Admission>,
        served: &Served<T>,
        usage: Option<Usage>,
        watch: &mut Option<Watch>,
    ) {
        // Dropped unsettled (an error above, or the caller leaving), the
        // admission gives its estimate back.
        if let Some(a) = admission {
            match usage {
                Some(u) => a.settle(u.total()),
                None => a.keep(),
            }
        }
        if served.member.limits.any()
            && let Some(u) = usage
        {
            // The request and an estimate of its tokens were reserved; settle
            // on the real count (an answer without usage keeps the estimate).
            self.engine
                .fleet
                .settle(&served.member.member_id, u.total(), served.reserved_tokens);
        }
        call.span.in_scope(
            || tracing::info!(member = %served.served_by.member_id, attempts = served.attempts.len(), "served"),
        );
        if let Some(w) = watch.take() {
            w.finish(
                tonic::Code::Ok,
                Some(&served.served_by),
                usage,
                None,
                &served.attempts,
            );
        }
    }
}

impl<Q> Call<Q> {
    /// Runs the engine inside the request's span; a failure is logged,
    /// counted, and becomes the caller's status.
    async fn run<T>(
        &self,
        watch: &mut Option<Watch>,
        engine: impl std::future::Future<Output = Result<Served<T>, Failed>>,
    ) -> Result<Served<T>, Status> {
        match engine.instrument(self.span.clone()).await {
            Ok(served) => {
                self.span.record(
                    "gen_ai.response.model",
                    served.served_by.upstream_model.as_str(),
                );
                self.span
                    .record("switchyard.member", served.served_by.member_id.as_str());
                self.span
                    .record("switchyard.attempts", served.attempts.len());
                Ok(served)
            }
            Err(f) => {
                self.span.in_scope(
                    || tracing::info!(error = %f.error, attempts = f.attempts.len(), "not served"),
                );
                let (mut status, attempts) = failed(&self.id, f);
                caller_header(status.metadata_mut(), self.grant.as_ref());
                self.span.record("switchyard.attempts", attempts.len());
                self.span
                    .record("rpc.grpc.status_code", status.code() as i32);
                if let Some(w) = watch.take() {
                    w.finish(status.code(), None, None, None, &attempts);
                }
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn generate(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let (r, call, mut watch) = self.start(r, "generate")?;
        let admission = self.admit(&call, &mut watch).await?;
        let served = call
            .run(
                &mut watch,
                self.engine
                    .generate(&r.model, &call.req, call.deadline, &call.trace),
            )
            .await?;
        self.served(&call, admission, &served, served.value.usage, &mut watch);
        let mut resp = respond::unary(call.id, served);
        caller_header(resp.metadata_mut(), call.grant.as_ref());
        Ok(resp)
    }

    async fn embed(
        &self,
        r: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let (r, call, mut watch) = self.start(r, "embed")?;
        let admission = self.admit(&call, &mut watch).await?;
        let served = call
            .run(
                &mut watch,
                self.engine
                    .embed(&r.model, &call.req, call.deadline, &call.trace),
            )
            .await?;
        self.served(&call, admission, &served, served.value.usage, &mut watch);
        let encoding =
            pb::EmbeddingEncoding::try_from(r.encoding).unwrap_or(pb::EmbeddingEncoding::Float);
        let mut resp = respond::embeddings(call.id, served, encoding);
        caller_header(resp.metadata_mut(), call.grant.as_ref());
        Ok(resp)
    }

    type GenerateStreamStream = EventStream;

    async fn generate_stream(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let (r, call, mut watch) = self.start(r, "generate_stream")?;
        let admission = self.admit(&call, &mut watch).await?;
        let served = call
            .run(
                &mut watch,
                self.engine
                    .open_stream(&r.model, &call.req, call.deadline, &call.trace),
            )
            .await?;
        let Call {
            id,
            span,
            deadline,
            grant,
            ..
        } = call;
        let Served {
            value: mut open,
            served_by,
            attempts,
            member,
            pool,
            reserved_tokens,
        } = served;
        span.in_scope(|| tracing::info!(member = %served_by.member_id, attempts = attempts.len(), "stream committed"));
        let mut headers = MetadataMap::new();
        served_metadata(&mut headers, &id, Some(&served_by), &attempts);
        caller_header(&mut headers, grant.as_ref());
        let busy = self
            .engine
            .observer
            .metrics
            .member_busy(&member, &pool.name);
        let pump = Pump {
            fleet: self.engine.fleet.clone(),
            watch: watch.map(|w| (w, served_by.clone(), attempts.clone(), busy)),
            member,
            pool,
            reserved_tokens,
            admission,
            request_id: id.clone(),
            idle: self.stream_idle,
            deadline,
            trailers: headers.clone(),
        };
        let meta = std::mem::take(&mut open.meta);
        let start = event(pb::generate_stream_event::Event::Start(pb::StreamStart {
            request_id: id,
            served_by: Some(served_by),
            attempts,
            upstream_id: meta.id.unwrap_or_default(),
            response_model: meta.model.unwrap_or_default(),
            system_fingerprint: meta.system_fingerprint.unwrap_or_default(),
        }));
        let mut resp = Response::new(pump.spawn(&self.tasks, start, open, span));
        *resp.metadata_mut() = headers;
        Ok(resp)
    }

    async fn list_models(
        &self,
        r: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let catalog = self.engine.catalog.load_full();
        let (mut pools, mut routes) = catalog.models();
        // A caller sees the models its key may use.
        if let Some(g) = r.extensions().get::<Grant>() {
            pools.retain(|p| g.sees(&p.name));
            routes.retain(|r| g.sees(&r.name));
        }
        // Health as this worker holds it: the fleet's table, kept live.
        let health = self.engine.fleet.table().load();
        let now = tokio::time::Instant::now();
        // Usage of limited members, from the fleet (one read each).
        let mut usage = std::collections::HashMap::new();
        let mut limited: Vec<String> = Vec::new();
        for p in &pools {
            limited.extend(
                p.members
                    .iter()
                    .filter(|m| m.limits.any())
                    .map(|m| m.member_id.clone()),
            );
        }
        for r in &routes {
            for (p, _) in &r.tiers {
                limited.extend(
                    p.members
                        .iter()
                        .filter(|m| m.limits.any())
                        .map(|m| m.member_id.clone()),
                );
            }
        }
        limited.sort_unstable();
        limited.dedup();
        // One pipelined read for all of them (bounded).
        let counts = self.engine.fleet.usage(&limited).await;
        usage.extend(limited.into_iter().zip(counts));
        let members_of = |pool: &Pool| -> Vec<pb::MemberHealth> {
            pool.members
                .iter()
                .map(|m| {
                    let e = health.get(&m.member_id);
                    let state = e.map_or(State::Available, |e| {
                        e.state(now, pool.policy.failure_threshold)
                    });
                    let (requests, tokens) = usage.get(&m.member_id).copied().unwrap_or_default();
                    pb::MemberHealth {
                        member_id: m.member_id.clone(),
                        provider: m.provider.clone(),
                        upstream_model: m.upstream_model.clone(),
                        status: m.status.into(),
                        available: matches!(state, State::Available | State::HalfOpen),
                        consecutive_failures: e.map_or(0, |e| e.fails),
                        benched_until_ms: match state {
                            State::Benched { until } => unix_ms(until, now),
                            _ => 0,
                        },
                        requests_this_minute: requests,
                        tokens_this_minute: tokens,
                    }
                })
                .collect()
        };
        let mut models = Vec::new();
        for p in &pools {
            models.push(pb::VirtualModel {
                name: p.name.clone(),
                kind: "pool".into(),
                enabled: p.enabled,
                members: members_of(p),
            });
        }
        for r in &routes {
            models.push(pb::VirtualModel {
                name: r.name.clone(),
                kind: "route".into(),
                enabled: r.enabled,
                members: r.tiers.iter().flat_map(|(p, _)| members_of(p)).collect(),
            });
        }
        Ok(Response::new(pb::ListModelsResponse {
            revision: catalog.revision,
            models,
        }))
    }

    async fn get_pool_stats(
        &self,
        r: Request<pb::GetPoolStatsRequest>,
    ) -> Result<Response<pb::GetPoolStatsResponse>, Status> {
        let grant = r.extensions().get::<Grant>().cloned();
        let r = r.into_inner();
        let window = report::window(r.window_seconds)?;
        let catalog = self.engine.catalog.load_full();
        let (mut pools, _) = catalog.models();
        // A caller sees the statistics of the pools its key may use.
        if let Some(g) = &grant {
            pools.retain(|p| g.sees(&p.name));
        }
        if !r.pool.is_empty() {
            pools.retain(|p| p.name == r.pool);
            if pools.is_empty() {
                return Err(Status::not_found(format!(
                    "no pool named '{}'",
                    r.pool.chars().take(128).collect::<String>()
                )));
            }
        }
        let (totals, from, to) = self
            .engine
            .observer
            .stats
            .read(Duration::from_secs(u64::from(window)))
            .await
            .map_err(|e| Status::unavailable(format!("pool statistics are unreachable: {e}")))?;
        let health = self.engine.fleet.table().load();
        let now = Instant::now();
        Ok(Response::new(pb::GetPoolStatsResponse {
            window_seconds: window,
            from_unix_ms: from.saturating_mul(1000),
            to_unix_ms: to.saturating_mul(1000),
            pools: report::pools(&pools, &totals, &health, now, |at| unix_ms(at, now)),
        }))
    }

    async fn get_caller_stats(
        &self,
        r: Request<pb::GetCallerStatsRequest>,
    ) -> Result<Response<pb::GetCallerStatsResponse>, Status> {
        let catalog = self.engine.catalog.load_full();
        let stats = &self.engine.observer.stats;
        report::caller_stats(stats, &catalog, r.extensions().get::<Grant>(), r.get_ref())
            .await
            .map(Response::new)
    }
}

/// `at` (this worker's clock) as Unix milliseconds.
fn unix_ms(at: tokio::time::Instant, now: tokio::time::Instant) -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let wall = i64::try_from(wall).unwrap_or(0);
    wall + i64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(0)
}
