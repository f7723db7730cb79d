//! The inference service: the call layer every door shares (`call`,
//! `start`), and the `switchyard.v1.Inference` gRPC service on top of it
//! (`grpc` for the translation; ListModels and the statistics RPCs here).

use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use switchyard_proto::v1::inference_server::Inference;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};

mod call;
mod grpc;
mod start;

pub use call::{Answer, Ask, Opened, Unserved, deadline_after};

use crate::callers::Grant;
use crate::failover::Engine;
use crate::fleet::State;
use crate::model::{Live, Pool};
use crate::observe::report;
use crate::respond::{self, EventStream};

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

#[tonic::async_trait]
impl Inference for InferenceService {
    async fn generate(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        let a = self.chat(grpc::ask(r)).await.map_err(grpc::status)?;
        Ok(grpc::response(respond::unary(a.id, a.served), a.headers))
    }

    async fn embed(
        &self,
        r: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let encoding = pb::EmbeddingEncoding::try_from(r.get_ref().encoding)
            .unwrap_or(pb::EmbeddingEncoding::Float);
        let a = self.embeddings(grpc::ask(r)).await.map_err(grpc::status)?;
        Ok(grpc::response(
            respond::embeddings(a.id, a.served, encoding),
            a.headers,
        ))
    }

    type GenerateStreamStream = EventStream;

    async fn generate_stream(
        &self,
        r: Request<pb::GenerateRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let opened = self.stream(grpc::ask(r)).await.map_err(grpc::status)?;
        let headers = opened.headers.clone();
        Ok(grpc::response(grpc::events(opened), headers))
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
            for t in &r.tiers {
                limited.extend(
                    t.pool
                        .members
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
                    let live = self.engine.live(m);
                    let ms =
                        |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
                    pb::MemberHealth {
                        in_flight: live.in_flight,
                        ttft_ms: ms(live.ttft),
                        latency_ms: ms(live.latency),
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
                        refused: String::new(),
                        key: m.key.clone(),
                        context_tokens: m.context_tokens,
                        max_concurrency: m.max_concurrency,
                        ..headroom_of(&self.engine.fleet, &m.member_id, &live)
                    }
                })
                .chain(
                    catalog
                        .refused_members(&pool.name)
                        .iter()
                        .map(|r| pb::MemberHealth {
                            member_id: r.member_id.clone(),
                            provider: r.provider.clone(),
                            upstream_model: r.upstream_model.clone(),
                            status: r.status.into(),
                            available: false,
                            refused: r.reason.label().to_owned(),
                            key: r.key.clone(),
                            remaining_requests: -1,
                            remaining_tokens: -1,
                            ..Default::default()
                        }),
                )
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
                members: r.tiers.iter().flat_map(|t| members_of(&t.pool)).collect(),
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

/// A member's headroom as ListModels shows it (-1: unknown), from its
/// live view.
fn headroom_of(fleet: &crate::fleet::Fleet, member: &str, live: &Live) -> pb::MemberHealth {
    let shown = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    pb::MemberHealth {
        remaining_requests: shown(live.remaining_requests),
        remaining_tokens: shown(live.remaining_tokens),
        near_limit: fleet.headroom().near_limit(member, 1).is_some(),
        ..Default::default()
    }
}
