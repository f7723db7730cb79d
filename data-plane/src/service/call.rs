//! The call layer: one inference call from start to end, whatever door it
//! came through. A door (the gRPC service, the HTTP door) turns its wire
//! format into an `Ask` — the message, the caller's grant, the deadline and
//! the trace context — and gets back the neutral answer (`Answer`, or
//! `Opened` for a stream) or an `Unserved`: the typed `DpError` with the
//! `x-switchyard-*` headers that go with it. Each door maps `DpError` to its
//! own status by variant; none calls another.
//!
//! Inside: the request checked and watched (`start`), the caller's own
//! limits (`admit`), the engine run in the request's span (`Call::run`),
//! and what a served unary call settles (`served`).

use http::HeaderMap;
use switchyard_proto::v1 as pb;
use tracing::Instrument as _;

use super::InferenceService;
use super::start::{Ask, Call, Inbound, Started};
use crate::access::Admission;
use crate::callers::Grant;
use crate::error::DpError;
use crate::failover::{Failed, Served};
use crate::observe::Watch;
use crate::respond::{caller_header, served_headers};
use crate::settle::Reserved;
use crate::stream::{Chunks, Pump};
use crate::upstream::{Completion, Embeddings, ResponseMeta, Usage};

/// A served answer and its `x-switchyard-*` headers (request id, member,
/// upstream, attempts, caller).
pub struct Answer<T> {
    pub id: String,
    pub served: Served<T>,
    pub headers: HeaderMap,
}

/// A committed stream: who serves it, what was tried, the upstream's id
/// and model, its headers, and the chunks to come.
pub struct Opened {
    pub id: String,
    pub served_by: pb::ServedBy,
    pub attempts: Vec<pb::Attempt>,
    pub meta: ResponseMeta,
    pub headers: HeaderMap,
    pub chunks: Chunks,
}

/// A request that was not served: why, and the headers that go with the
/// error (the caller; the request id and attempts once the engine ran).
#[derive(Debug)]
pub struct Unserved {
    pub error: DpError,
    /// Boxed: errors are rare, results that may hold one stay small.
    pub headers: Box<HeaderMap>,
}

impl Unserved {
    fn new(error: DpError, grant: Option<&Grant>) -> Self {
        let mut headers = HeaderMap::new();
        caller_header(&mut headers, grant);
        Self {
            error,
            headers: Box::new(headers),
        }
    }
}

impl InferenceService {
    /// A chat completion, unary.
    pub async fn chat(
        &self,
        ask: Ask<pb::GenerateRequest>,
    ) -> Result<Answer<Completion>, Unserved> {
        let (model, call, mut watch) = self.start(ask, "generate")?;
        let admission = self.admit(&call, &mut watch).await?;
        let served = call
            .run(
                &mut watch,
                self.engine
                    .generate(&model, &call.req, call.deadline, &call.trace),
            )
            .await?;
        let bound = call
            .req
            .token_bound(served.member.target.default_max_tokens);
        let usage = served.value.usage;
        self.served(&call, admission, &served, usage, bound, &mut watch);
        Ok(call.answer(served))
    }

    /// Embeddings.
    pub async fn embeddings(
        &self,
        ask: Ask<pb::EmbedRequest>,
    ) -> Result<Answer<Embeddings>, Unserved> {
        let (model, call, mut watch) = self.start(ask, "embed")?;
        let admission = self.admit(&call, &mut watch).await?;
        let served = call
            .run(
                &mut watch,
                self.engine
                    .embed(&model, &call.req, call.deadline, &call.trace),
            )
            .await?;
        let usage = served.value.usage;
        self.served(&call, admission, &served, usage, call.estimate, &mut watch);
        Ok(call.answer(served))
    }

    /// A chat completion, streamed: failover until the first chunk, then
    /// the committed stream (its pump runs on the service's tasks).
    pub async fn stream(&self, ask: Ask<pb::GenerateRequest>) -> Result<Opened, Unserved> {
        let (model, call, mut watch) = self.start(ask, "generate_stream")?;
        let admission = self.admit(&call, &mut watch).await?;
        let served = call
            .run(
                &mut watch,
                self.engine
                    .open_stream(&model, &call.req, call.deadline, &call.trace),
            )
            .await?;
        let bound = call
            .req
            .token_bound(served.member.target.default_max_tokens);
        let prompt = call.req.prompt_estimate();
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
        let mut headers = HeaderMap::new();
        served_headers(&mut headers, &id, Some(&served_by), &attempts);
        caller_header(&mut headers, grant.as_ref());
        let busy = self
            .engine
            .observer()
            .metrics
            .member_busy(&member, &pool.name);
        let pump = Pump {
            fleet: self.engine.fleet().clone(),
            rules: self.engine.rules(),
            metrics: self.engine.observer().metrics.clone(),
            bound,
            prompt,
            streamed: Default::default(),
            watch: watch.map(|w| (w, served_by.clone(), attempts.clone(), busy)),
            member,
            pool,
            reserved_tokens,
            admission,
            request_id: id.clone(),
            idle: self.stream_idle,
            deadline,
        };
        let meta = std::mem::take(&mut open.meta);
        let chunks = pump.spawn(&self.tasks, open, span);
        Ok(Opened {
            id,
            served_by,
            attempts,
            meta,
            headers,
            chunks,
        })
    }

    /// The caller's own limits, before any member is tried.
    async fn admit<Q>(
        &self,
        call: &Call<Q>,
        watch: &mut Option<Watch>,
    ) -> Result<Option<Admission>, Unserved> {
        match crate::access::admit(self.engine.fleet(), call.grant.as_ref(), call.estimate).await {
            Ok(a) => Ok(a),
            Err(e) => {
                call.span
                    .in_scope(|| tracing::info!(error = %e, "refused: caller over its limit"));
                if let Some(w) = watch.take() {
                    w.finish(e.code(), None, None, None, &[]);
                }
                Err(Unserved::new(e, call.grant.as_ref()))
            }
        }
    }

    /// A unary answer is in hand: settle what was reserved on the usage it
    /// reported (`bound`, the request's upper bound, when it reported
    /// none), log it and close its watch.
    fn served<Q, T>(
        &self,
        call: &Call<Q>,
        admission: Option<Admission>,
        served: &Served<T>,
        usage: Option<Usage>,
        bound: u64,
        watch: &mut Option<Watch>,
    ) {
        Reserved {
            pool: &served.pool,
            member: &served.member,
            tokens: served.reserved_tokens,
            bound,
            seen: 0,
        }
        .settle(
            self.engine.fleet(),
            &self.engine.observer().metrics,
            admission,
            usage.map(|u| u.total()),
        );
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

    /// Checks, watches and opens the span of a request (see `start`); a
    /// refusal is counted and closes the watch.
    fn start<R: Inbound>(
        &self,
        ask: Ask<R>,
        rpc: &'static str,
    ) -> Result<Started<R::Checked>, Unserved> {
        let grant = ask.grant.clone();
        super::start::start(self, ask, rpc).map_err(|e| Unserved::new(e, grant.as_ref()))
    }
}

impl<Q> Call<Q> {
    /// Runs the engine inside the request's span; a failure is logged,
    /// counted, and becomes the caller's error.
    async fn run<T>(
        &self,
        watch: &mut Option<Watch>,
        engine: impl std::future::Future<Output = Result<Served<T>, Failed>>,
    ) -> Result<Served<T>, Unserved> {
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
            Err(Failed { error, attempts }) => {
                self.span.in_scope(
                    || tracing::info!(error = %error, attempts = attempts.len(), "not served"),
                );
                let code = error.code();
                let mut unserved = Unserved::new(error, self.grant.as_ref());
                served_headers(&mut unserved.headers, &self.id, None, &attempts);
                self.span.record("switchyard.attempts", attempts.len());
                self.span.record("rpc.grpc.status_code", code as i32);
                if let Some(w) = watch.take() {
                    w.finish(code, None, None, None, &attempts);
                }
                Err(unserved)
            }
        }
    }

    /// The answer's headers, and the answer.
    fn answer<T>(self, served: Served<T>) -> Answer<T> {
        let mut headers = HeaderMap::new();
        served_headers(
            &mut headers,
            &self.id,
            Some(&served.served_by),
            &served.attempts,
        );
        caller_header(&mut headers, self.grant.as_ref());
        Answer {
            id: self.id,
            served,
            headers,
        }
    }
}
