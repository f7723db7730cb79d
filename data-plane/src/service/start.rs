//! The start of every inference call: the request checked against its
//! schema and the caller's scope, given an id, watched (metrics and
//! statistics, taken when it ends) and opened in its span.

use std::time::Duration;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use super::InferenceService;
use crate::callers::Grant;
use crate::error::DpError;
use crate::intake;
use crate::observe::trace::Incoming;
use crate::observe::{Operation, Watch};
use crate::upstream::{ChatRequest, EmbedRequest};

/// What a door hands the call layer.
pub struct Ask<R> {
    /// The request, as the gRPC API defines it.
    pub message: R,
    /// Who is calling (absent only on a server built without the filter).
    pub grant: Option<Grant>,
    /// When the caller stops waiting (see `deadline_after`).
    pub deadline: Option<Instant>,
    /// The caller's trace context.
    pub trace: Incoming,
}

/// The deadline a caller's timeout gives, a little early, so the caller
/// gets our DEADLINE_EXCEEDED (with the attempts made) rather than the
/// transport's bare CANCELLED: a tenth of the budget, at most 50 ms — room
/// for the answer to travel back over a loaded machine or a cross-zone link.
pub fn deadline_after(timeout: Duration) -> Option<Instant> {
    let margin = (timeout / 10).min(Duration::from_millis(50));
    Instant::now().checked_add(timeout.saturating_sub(margin))
}

/// A started request: checked, with its id, deadline, trace context and span.
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

/// A started request: the model asked for, the call, and its watch.
pub(super) type Started<Q> = (String, Call<Q>, Option<Watch>);

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

/// Checks `ask`, starts its watch and opens its span; returns the model
/// asked for, the call and its watch. A refusal closes the watch.
pub(super) fn start<R: Inbound>(
    service: &InferenceService,
    ask: Ask<R>,
    rpc: &'static str,
) -> Result<Started<R::Checked>, DpError> {
    let Ask {
        message: r,
        grant,
        deadline,
        trace,
    } = ask;
    let engine = &service.engine;
    let model = r.model();
    let mut watch = engine.observer().start(model, R::OPERATION);
    if let Some(g) = &grant {
        watch.set_caller(g.name());
    }
    let id = intake::request_id(r.request_id());
    let checked = r.check(rpc).and_then(|c| {
        // An empty model is the request's mistake, reported by resolve.
        if let Some(g) = grant.as_ref().filter(|_| !model.is_empty()) {
            let catalog = engine.catalog().load();
            let direct = !catalog.is_configured(model) && model.contains('/');
            g.permit(model, direct)?;
        }
        Ok(c)
    });
    let (checked, estimate) = match checked {
        Ok(c) => c,
        Err(e) => {
            watch.finish(e.code(), None, None, None, &[]);
            return Err(e);
        }
    };
    // Caller metadata is never sent upstream, and reaches the span (and
    // logs) only for the keys the operator allowed.
    let allowed: Vec<String> = service
        .span_metadata
        .iter()
        .filter_map(|k| r.metadata().get(k).map(|v| format!("{k}={v}")))
        .collect();
    // With spans exported, the span carries the GenAI attributes; the
    // logs alone need only the request's identity.
    let span = if engine.exports_spans() {
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
    let model = model.to_owned();
    Ok((
        model,
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
