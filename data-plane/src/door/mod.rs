//! The OpenAI-compatible HTTP door: `POST /v1/chat/completions` (JSON and
//! SSE), `POST /v1/embeddings`, `GET /v1/models`, `GET /healthz`.
//!
//! It is a door onto the call layer (`service::call`), as the gRPC service
//! is: a body is read into the request the call layer takes and handed over
//! with the caller's grant, deadline and trace context (so one resolution,
//! selection and failover path, the same caller checks, limits, metrics and
//! logs); the answer and its `x-switchyard-*` headers are written back in
//! OpenAI's shapes, and the call layer's typed error becomes OpenAI's error
//! by variant (`error`). An Anthropic `/v1/messages` door would be one more
//! pair of readers and writers beside `chat_in`/`chat_out`.

mod chat_in;
mod chat_out;
mod completion;
mod embeddings;
mod error;
mod front;
mod headers;
mod json;
mod messages;
mod serve;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::json;
use switchyard_proto::v1 as pb;

use crate::access::Access;
use crate::callers::Grant;
use crate::observe::trace::Incoming;
use crate::respond::{self, chunk_event};
use crate::service::{Ask, InferenceService, Opened};
use crate::upstream::Chunk;

pub use error::DoorError;
pub use front::Origins;
pub use serve::{ConnMetrics, Limits};

/// What the door's handlers share.
pub struct Door {
    pub service: Arc<InferenceService>,
    pub access: Access,
    /// Largest request body taken.
    pub max_body: usize,
    /// Longest a request's body may take to arrive (a client trickling it
    /// holds a connection as a slow head would).
    pub body_timeout: std::time::Duration,
    /// Spans are exported (OTLP): each request gets a server span that
    /// continues the caller's `traceparent`, as gRPC calls do.
    pub export_spans: bool,
    /// The origins browsers may call from (`--http-cors-origin`).
    pub origins: Origins,
}

/// The routes, under (outermost first): the server span; OpenAI's error
/// body on refusals that have none; the origin check; CORS for allowed
/// origins; the JSON content type on POSTs.
pub fn router(door: Arc<Door>) -> Router {
    let spans = door.export_spans;
    let origins = door.origins.clone();
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embed))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .fallback(|| async {
            DoorError::not_found(
                "no such endpoint; this door serves POST /v1/chat/completions, POST /v1/embeddings and GET /v1/models",
            )
        })
        // Routed requests only: an unknown path stays a 404.
        .route_layer(axum::middleware::from_fn(front::require_json))
        .layer(origins.cors())
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                front::check_origin(origins.clone(), req, next)
            },
        ))
        .layer(axum::middleware::map_response(front::error_body))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| server_span(spans, req, next),
        ))
        .with_state(door)
}

/// The request's server span: the engine's spans nest in it, and with
/// export on it continues the caller's trace (W3C `traceparent`).
async fn server_span(export: bool, req: Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument as _;
    let span = if export {
        let span = tracing::info_span!(
            "http",
            otel.name = %format_args!("{} {}", req.method(), req.uri().path()),
            otel.kind = "server",
            http.request.method = %req.method(),
            url.path = %req.uri().path(),
        );
        crate::observe::trace::continue_caller(&span, req.headers());
        span
    } else {
        tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
    };
    next.run(req).instrument(span).await
}

type Parts = axum::http::request::Parts;

impl Door {
    /// Who is calling, checked as for gRPC (the same filter and keys).
    fn authorize(&self, parts: &Parts) -> Result<Option<Grant>, DoorError> {
        self.access
            .check(parts.uri.path(), &parts.extensions, &parts.headers)
            .map_err(DoorError::from)
    }

    /// The caller, then the body (at most `max_body` bytes, within `body_timeout`).
    async fn open(&self, req: Request) -> Result<(Parts, Option<Grant>, Bytes), DoorError> {
        let (parts, body) = req.into_parts();
        let grant = self.authorize(&parts)?;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(DoorError::too_large(self.max_body));
        }
        let read = axum::body::to_bytes(body, self.max_body);
        let bytes = tokio::time::timeout(self.body_timeout, read)
            .await
            .map_err(|_| DoorError::body_timeout(self.body_timeout))?
            .map_err(|e| {
                let e = e.into_inner();
                if e.is::<http_body_util::LengthLimitError>() {
                    DoorError::too_large(self.max_body)
                } else {
                    // Cut short, or framed wrong (a bad chunk): the caller's mistake.
                    DoorError::invalid(None, format!("the request body could not be read: {e}"))
                }
            })?;
        Ok((parts, grant, bytes))
    }
}

/// The call layer's view of a door request: the message, the caller, the
/// deadline from the timeout headers, the trace context.
fn ask<T>(parts: &Parts, grant: Option<Grant>, message: T) -> Ask<T> {
    Ask {
        message,
        grant,
        deadline: headers::deadline(&parts.headers),
        trace: Incoming::from_headers(&parts.headers),
    }
}

fn json_response(body: &impl serde::Serialize, headers: axum::http::HeaderMap) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().extend(headers);
    resp
}

async fn chat(State(door): State<Arc<Door>>, req: Request) -> Response {
    match chat_inner(&door, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn chat_inner(door: &Door, req: Request) -> Result<Response, DoorError> {
    let (parts, grant, body) = door.open(req).await?;
    let chat = chat_in::read(&body)?;
    let asked = chat.request.model.clone();
    let ask = ask(&parts, grant, chat.request);
    if !chat.stream {
        let a = door.service.chat(ask).await?;
        let answer = respond::unary(a.id, a.served);
        let body = completion::completion(&answer, &asked);
        return Ok(json_response(&body, a.headers));
    }
    let mut opened = door.service.stream(ask).await?;
    let headers = std::mem::take(&mut opened.headers);
    let body = Body::from_stream(
        sse_stream(opened, asked, chat.include_usage).map(Ok::<_, std::convert::Infallible>),
    );
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.extend(headers);
    Ok(resp)
}

/// A committed stream as SSE: the role chunk at the start, a chunk per
/// delta, the finish, the usage (when asked for) and `[DONE]` only after
/// the stream finished. A stream that fails ends with an error event and
/// no `[DONE]`, so no client takes a cut answer for a whole one. Dropping
/// it (the client left) drops the chunks, which cancels the upstream.
fn sse_stream(
    opened: Opened,
    asked: String,
    include_usage: bool,
) -> impl futures::Stream<Item = Bytes> + Send {
    let Opened {
        id,
        served_by,
        meta,
        chunks,
        ..
    } = opened;
    let head = chat_out::StreamHead::new(&id, &served_by, meta, &asked);
    let role = chat_out::sse(&head.role());
    struct S {
        chunks: crate::stream::Chunks,
        head: chat_out::StreamHead,
        usage: Option<pb::Usage>,
        ended: bool,
    }
    let state = S {
        chunks,
        head,
        usage: None,
        ended: false,
    };
    let rest = futures::stream::unfold(state, move |mut s| async move {
        loop {
            if s.ended {
                return None;
            }
            match s.chunks.next().await {
                Some(Ok(Chunk::Usage(u))) => s.usage = Some(respond::usage(u)),
                Some(Ok(Chunk::Text(t))) => return Some((s.head.text_sse(&t), s)),
                Some(Ok(c)) => {
                    if let Some(v) = chunk_event(c)
                        .and_then(|e| e.event)
                        .and_then(|e| s.head.event(&e))
                    {
                        return Some((chat_out::sse(&v), s));
                    }
                }
                None => {
                    s.ended = true;
                    let mut out = Vec::new();
                    if let (true, Some(u)) = (include_usage, &s.usage) {
                        out.extend_from_slice(&chat_out::sse(&s.head.usage(u)));
                    }
                    out.extend_from_slice(chat_out::DONE);
                    return Some((Bytes::from(out), s));
                }
                Some(Err(e)) => {
                    s.ended = true;
                    return Some((chat_out::sse(&DoorError::from(e).body()), s));
                }
            }
        }
    });
    futures::stream::once(std::future::ready(role)).chain(rest)
}

async fn embed(State(door): State<Arc<Door>>, req: Request) -> Response {
    let run = async {
        let (parts, grant, body) = door.open(req).await?;
        let (message, base64) = embeddings::read(&body)?;
        let asked = message.model.clone();
        let encoding = pb::EmbeddingEncoding::try_from(message.encoding)
            .unwrap_or(pb::EmbeddingEncoding::Float);
        let a = door.service.embeddings(ask(&parts, grant, message)).await?;
        let answer = respond::embeddings(a.id, a.served, encoding);
        let body = embeddings::answer(&answer, &asked, base64);
        Ok::<_, DoorError>(json_response(&body, a.headers))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// The virtual models (pools and routes) the caller may use, OpenAI's shape.
async fn models(State(door): State<Arc<Door>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let grant = match door.authorize(&parts) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let data: Vec<_> = door
        .service
        .model_names(grant.as_ref())
        .into_iter()
        .map(|(name, kind)| {
            json!({"id": name, "object": "model", "created": 0, "owned_by": "switchyard", "switchyard_kind": kind})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// 200 once a config is loaded (for load balancers and probes).
async fn healthz(State(door): State<Arc<Door>>) -> Response {
    if door.service.ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no config loaded yet").into_response()
    }
}

/// Serves the door on `listener` (TLS when the gRPC port has it) until
/// `stop`; requests and streams in flight then get `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<switchyard_shared::tls::ServerTls>,
    limits: Limits,
    metrics: ConnMetrics,
    stop: tokio_util::sync::CancellationToken,
    grace: std::time::Duration,
) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %addr, scheme, "OpenAI-compatible HTTP door listening");
    match tls {
        None => {
            let listener = switchyard_shared::tls::NoDelay(listener);
            serve::serve(listener, router, limits, metrics, stop, grace).await;
        }
        Some(tls) => {
            // The connection's client certificate (mTLS) reaches the
            // caller check as it does on the gRPC port.
            let listener = switchyard_shared::tls::TlsIncoming::http(listener, &tls);
            serve::serve(listener, router, limits, metrics, stop, grace).await;
        }
    }
}
