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
mod member_view;
mod models;
mod start;
mod stats;

pub use call::{Answer, Opened, Unserved};
pub use start::{Ask, deadline_after};

use crate::callers::Grant;
use crate::failover::Engine;
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
        let catalog = self.engine.catalog().load();
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
        self.engine.catalog().load().loaded
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
        let grant = r.extensions().get::<Grant>();
        Ok(Response::new(models::list(&self.engine, grant).await))
    }

    async fn get_pool_stats(
        &self,
        r: Request<pb::GetPoolStatsRequest>,
    ) -> Result<Response<pb::GetPoolStatsResponse>, Status> {
        let grant = r.extensions().get::<Grant>().cloned();
        let r = r.into_inner();
        let window = stats::window(r.window_seconds)?;
        let catalog = self.engine.catalog().load_full();
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
            .observer()
            .stats
            .read(Duration::from_secs(u64::from(window)))
            .await
            .map_err(|e| Status::unavailable(format!("pool statistics are unreachable: {e}")))?;
        let health = self.engine.fleet().table().load();
        let now = Instant::now();
        Ok(Response::new(pb::GetPoolStatsResponse {
            window_seconds: window,
            from_unix_ms: from.saturating_mul(1000),
            to_unix_ms: to.saturating_mul(1000),
            pools: stats::pools(&pools, &totals, &health, now),
        }))
    }

    async fn get_caller_stats(
        &self,
        r: Request<pb::GetCallerStatsRequest>,
    ) -> Result<Response<pb::GetCallerStatsResponse>, Status> {
        let catalog = self.engine.catalog().load_full();
        let recorded = &self.engine.observer().stats;
        stats::caller_stats(
            recorded,
            &catalog,
            r.extensions().get::<Grant>(),
            r.get_ref(),
        )
        .await
        .map(Response::new)
    }
}
