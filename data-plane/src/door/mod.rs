//! The OpenAI-compatible HTTP door: `POST /v1/chat/completions` (JSON and
//! SSE), `POST /v1/embeddings`, `GET /v1/models`, `GET /healthz`.
//!
//! It is a translation in front of the gRPC service, in process: a body is
//! read into the same `pb::GenerateRequest` a gRPC caller sends and handed
//! to the same `InferenceService` (so one resolution, selection and failover
//! path, the same caller checks, limits, metrics and logs); the answer and
//! its `x-switchyard-*` metadata are written back in OpenAI's shapes. An
//! Anthropic `/v1/messages` door would be one more pair of readers and
//! writers beside `chat_in`/`chat_out`.

mod chat_in;
mod chat_out;
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
use switchyard_proto::v1::inference_server::Inference as _;

use crate::access::Access;
use crate::callers::Grant;
use crate::respond::EventStream;
use crate::service::InferenceService;

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

/// The gRPC request the service takes: the message, the caller's grant and
/// the deadline and trace context from the headers.
fn grpc_request<T>(parts: &Parts, grant: Option<Grant>, message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::from_parts(
        headers::to_metadata(&parts.headers),
        tonic::Extensions::default(),
        message,
    );
    if let Some(g) = grant {
        req.extensions_mut().insert(g);
    }
    req
}

fn json_response(body: &impl serde::Serialize, md: &tonic::metadata::MetadataMap) -> Response {
    let mut resp = axum::Json(body).into_response();
    headers::copy_switchyard(md, resp.headers_mut());
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
    let req = grpc_request(&parts, grant, chat.request);
    if !chat.stream {
        let resp = door.service.generate(req).await?;
        let body = chat_out::completion(resp.get_ref(), &asked);
        return Ok(json_response(&body, resp.metadata()));
    }
    let resp = door.service.generate_stream(req).await?;
    let (md, events, _) = resp.into_parts();
    let body = Body::from_stream(
        sse_stream(events, asked, chat.include_usage).map(Ok::<_, std::convert::Infallible>),
    );
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers::copy_switchyard(&md, h);
    Ok(resp)
}

/// A committed stream as SSE: the role chunk at the start, a chunk per
/// delta, the finish, the usage (when asked for) and `[DONE]` only after
/// the stream ended OK. A stream that fails ends with an error event and
/// no `[DONE]`, so no client takes a cut answer for a whole one. Dropping
/// it (the client left) drops the events, which cancels the upstream.
fn sse_stream(
    events: EventStream,
    asked: String,
    include_usage: bool,
) -> impl futures::Stream<Item = Bytes> + Send {
    struct S {
        events: EventStream,
        head: Option<chat_out::StreamHead>,
        usage: Option<pb::Usage>,
        ended: bool,
    }
    let state = S {
        events,
        head: None,
        usage: None,
        ended: false,
    };
    futures::stream::unfold(state, move |mut s| {
        let asked = asked.clone();
        async move {
            use pb::generate_stream_event::Event;
            loop {
                if s.ended {
                    return None;
                }
                match s.events.next().await {
                    Some(Ok(pb::GenerateStreamEvent { event: Some(e) })) => match e {
                        Event::Start(start) => {
                            let head = chat_out::StreamHead::new(&start, &asked);
                            let out = chat_out::sse(&head.role());
                            s.head = Some(head);
                            return Some((out, s));
                        }
                        Event::Usage(u) => s.usage = Some(u),
                        e => {
                            if let Some(v) = s.head.as_ref().and_then(|h| h.event(&e)) {
                                return Some((chat_out::sse(&v), s));
                            }
                        }
                    },
                    Some(Ok(pb::GenerateStreamEvent { event: None })) => {}
                    Some(Err(status)) if status.code() == tonic::Code::Ok => {
                        s.ended = true;
                        let mut out = Vec::new();
                        if let (true, Some(h), Some(u)) = (include_usage, &s.head, &s.usage) {
                            out.extend_from_slice(&chat_out::sse(&h.usage(u)));
                        }
                        out.extend_from_slice(chat_out::DONE);
                        return Some((Bytes::from(out), s));
                    }
                    Some(Err(status)) => {
                        s.ended = true;
                        return Some((chat_out::sse(&DoorError::from(status).body()), s));
                    }
                    None => return None,
                }
            }
        }
    })
}

async fn embed(State(door): State<Arc<Door>>, req: Request) -> Response {
    let run = async {
        let (parts, grant, body) = door.open(req).await?;
        let (message, base64) = embeddings::read(&body)?;
        let asked = message.model.clone();
        let resp = door
            .service
            .embed(grpc_request(&parts, grant, message))
            .await?;
        let body = embeddings::answer(resp.get_ref(), &asked, base64);
        Ok::<_, DoorError>(json_response(&body, resp.metadata()))
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
