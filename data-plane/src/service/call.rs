//! One inference call from start to end, whatever the RPC: the request
//! checked and watched (`start`), the caller's own limits (`admit`), the
//! engine run in the request's span (`Call::run`), and what a served unary
//! call settles (`served`).

use std::time::Duration;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use tracing::Instrument as _;

use super::InferenceService;
use crate::access::{self, Admission};
use crate::callers::Grant;
use crate::error::DpError;
use crate::failover::{Failed, Served};
use crate::intake;
use crate::observe::trace::Incoming;
use crate::observe::{Operation, Watch};
use crate::respond::failed;
use crate::settle::Reserved;
use crate::upstream::{ChatRequest, EmbedRequest, Usage};

/// `x-switchyard-caller`: who the answer was for (a name, never a key).
pub(super) fn caller_header(md: &mut MetadataMap, grant: Option<&Grant>) {
    if let Some(v) = grant.and_then(Grant::header) {
        md.insert("x-switchyard-caller", v);
    }
}

/// The caller's deadline, from grpc-timeout (`100m`, `5S`, …).
pub(super) fn deadline(md: &MetadataMap) -> Option<Instant> {
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
pub(super) struct Call<Q> {
    /// Who is calling (absent only on a server built without the filter).
    pub(super) grant: Option<Grant>,
    pub(super) id: String,
    pub(super) req: Q,
    /// Tokens the request may use, estimated (reserved from limits).
    pub(super) estimate: u64,
    pub(super) deadline: Option<Instant>,
    pub(super) span: tracing::Span,
    pub(super) trace: Incoming,
}

/// A started request: as received, checked, and watched.
pub(super) type Started<R> = (R, Call<<R as Inbound>::Checked>, Option<Watch>);

/// What `start` needs to know of an inference request.
pub(super) trait Inbound {
    type Checked;
    /// What it asks of its model (GenAI's operation name).
    const OPERATION: Operation;
    fn model(&self) -> &str;
    fn request_id(&self) -> &str;
    fn metadata(&self) -> &std::collections::HashMap<String, String>;
    fn check(&self, rpc: &str) -> Result<(Self::Checked, u64), DpError>;
}

impl Inbound for pb::GenerateRequest {
    type Checked = ChatRequest;
    const OPERATION: Operation = Operation::Chat;
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
    const OPERATION: Operation = Operation::Embeddings;
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
    pub(super) async fn admit<Q>(
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

    pub(super) fn start<R: Inbound>(
        &self,
        r: Request<R>,
        rpc: &'static str,
    ) -> Result<Started<R>, Status> {
        let deadline = deadline(r.metadata());
        let trace = Incoming::from_metadata(r.metadata());
        let grant = r.extensions().get::<Grant>().cloned();
        let r = r.into_inner();
        let model = r.model();
        let mut watch = self.engine.observer.start(model, R::OPERATION);
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
                gen_ai.operation.name = R::OPERATION.name(),
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
    /// reported (`bound`, the request's upper bound, when it reported
    /// none), log it and close its watch.
    pub(super) fn served<Q, T>(
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
            &self.engine.fleet,
            &self.engine.observer.metrics,
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
}

impl<Q> Call<Q> {
    /// Runs the engine inside the request's span; a failure is logged,
    /// counted, and becomes the caller's status.
    pub(super) async fn run<T>(
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
