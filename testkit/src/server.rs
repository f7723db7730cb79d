//! Router and handlers.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::Stream;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::FakeConfig;
use crate::fault::{Fault, FaultTable};
use crate::stats::{RequestGuard, Stats};
use crate::wire::{self, Answer, Piece, Wire};

/// Everything the handlers share with the [`crate::FakeUpstream`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: FakeConfig,
    pub(crate) faults: FaultTable,
    pub(crate) stats: Arc<Stats>,
    pub(crate) shutdown: CancellationToken,
    seq: AtomicU64,
    /// Rate-limit mode's windows.
    pub(crate) rate: crate::ratelimit::Windows,
}

impl Shared {
    pub(crate) fn new(config: FakeConfig, shutdown: CancellationToken) -> Self {
        Self {
            config,
            faults: FaultTable::default(),
            stats: Arc::new(Stats::default()),
            shutdown,
            seq: AtomicU64::new(1),
            rate: crate::ratelimit::Windows::default(),
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1/embeddings", post(embeddings))
        .route("/stats", axum::routing::get(stats).delete(reset_stats))
        .with_state(shared)
}

/// `GET /stats`: per model, calls, in flight, most in flight at once and
/// answers by status (for benchmarks driving the fake as a process).
async fn stats(State(s): State<Arc<Shared>>) -> Response {
    let mut r = (StatusCode::OK, s.stats.snapshot().to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `DELETE /stats`: starts the per-model counts over.
async fn reset_stats(State(s): State<Arc<Shared>>) -> StatusCode {
    s.stats.reset();
    StatusCode::NO_CONTENT
}

async fn openai(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Wire::OpenAi, headers, body).await
}

async fn anthropic(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(s, Wire::Anthropic, headers, body).await
}

/// OpenAI embeddings: one deterministic vector per input (`dimensions`
/// values, default 4), from the input's bytes. Status faults apply.
async fn embeddings(State(s): State<Arc<Shared>>, headers: HeaderMap, raw: Bytes) -> Response {
    let wire = Wire::OpenAi;
    let Some(body) = serde_json::from_slice::<Value>(&raw)
        .ok()
        .filter(Value::is_object)
    else {
        s.stats.record_anonymous();
        let err = wire::error_body(wire, 400, Some("request body is not a JSON object"));
        return json_response(wire, StatusCode::BAD_REQUEST, &err);
    };
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    s.stats.record_call(&model, &headers, &body);
    let mut guard = RequestGuard::new(Arc::clone(&s.stats));
    guard.finish();
    match s.faults.take(&model) {
        Some(Fault::Status { code, .. }) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(wire, status, &wire::error_body(wire, code, None));
        }
        Some(Fault::StrictFields) => {
            if let Some(err) = wire::unknown_field_error(wire, &body) {
                guard.finish();
                return json_response(wire, StatusCode::BAD_REQUEST, &err);
            }
        }
        Some(Fault::UnknownModel) => {
            return json_response(
                wire,
                StatusCode::NOT_FOUND,
                &wire::unknown_model_body(wire, &model),
            );
        }
        Some(Fault::Reply { json, .. }) => {
            let mut r = (StatusCode::OK, json).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return r;
        }
        _ => {}
    }
    let dims = body["dimensions"].as_u64().unwrap_or(4).clamp(1, 4096) as usize;
    let inputs: Vec<Vec<u8>> = match &body["input"] {
        Value::String(t) => vec![t.as_bytes().to_vec()],
        Value::Array(a) => a.iter().map(|x| x.to_string().into_bytes()).collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let v: Vec<f32> = (0..dims)
                .map(|d| {
                    let sum: usize = bytes.iter().map(|b| usize::from(*b) * (d + 1)).sum();
                    (sum % 997) as f32 / 997.0
                })
                .collect();
            serde_json::json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|b| b.len().div_ceil(4)).sum();
    let answer = serde_json::json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    json_response(wire, StatusCode::OK, &answer)
}

fn json_response(wire: Wire, status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    add_request_id(wire, headers);
    response
}

fn add_request_id(wire: Wire, headers: &mut HeaderMap) {
    let name = match wire {
        Wire::OpenAi => HeaderName::from_static("x-request-id"),
        Wire::Anthropic => HeaderName::from_static("request-id"),
    };
    headers.insert(name, HeaderValue::from_static("req_fake"));
}

async fn handle(s: Arc<Shared>, wire: Wire, headers: HeaderMap, raw: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&raw).ok();
    let Some(body) = parsed.filter(Value::is_object) else {
        s.stats.record_anonymous();
        let err = wire::error_body(wire, 400, Some("request body is not a JSON object"));
        return json_response(wire, StatusCode::BAD_REQUEST, &err);
    };
    let Some(model) = body["model"].as_str().map(str::to_owned) else {
        s.stats.record_anonymous();
        let err = wire::error_body(wire, 400, Some("model: field required"));
        return json_response(wire, StatusCode::BAD_REQUEST, &err);
    };
    s.stats.record_call(&model, &headers, &body);
    let credential = credential_of(&headers).map(|c| with_credential(&model, c));
    if let Some(c) = &credential {
        s.stats.record_credential_call(c);
    }
    let response = serve_model(&s, wire, body, model.clone(), credential.as_deref()).await;
    s.stats.record_status(&model, response.status().as_u16());
    response
}

/// The name a fault for `model` called with `credential` is kept under.
pub(crate) fn with_credential(model: &str, credential: &str) -> String {
    format!("{model}@{credential}")
}

/// The credential a request carries: its bearer token or `x-api-key`.
fn credential_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
}

/// One request for `model` (with `credential`, as `model@credential`): its
/// fault (the credential's first), then the answer.
async fn serve_model(
    s: &Arc<Shared>,
    wire: Wire,
    body: Value,
    model: String,
    credential: Option<&str>,
) -> Response {
    let (model_guard, in_flight) = s.stats.enter(&model);
    let mut guard = RequestGuard::new(Arc::clone(&s.stats)).holding(model_guard);
    let fault = credential
        .and_then(|c| s.faults.take(c))
        .or_else(|| s.faults.take(&model));
    if let Some(Fault::RateLimit { rpm, tpm }) = fault {
        let tokens = crate::ratelimit::tokens_of(&body);
        let (headers, over) = s.rate.take(wire, &model, rpm, tpm, tokens);
        let mut response = match over {
            Some(reset) => {
                guard.finish();
                let err = wire::error_body(wire, 429, None);
                let mut r = json_response(wire, StatusCode::TOO_MANY_REQUESTS, &err);
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(reset.as_secs().max(1)),
                );
                r
            }
            None => Box::pin(answer(s, wire, model, body, guard, None, in_flight)).await,
        };
        response.headers_mut().extend(headers);
        return response;
    }
    answer(s, wire, model, body, guard, fault, in_flight).await
}

/// Answers a request that passed its checks, with `fault` applied;
/// `in_flight`: requests for the model in flight, this one included.
async fn answer(
    s: &Arc<Shared>,
    wire: Wire,
    model: String,
    body: Value,
    mut guard: RequestGuard,
    fault: Option<Fault>,
    in_flight: usize,
) -> Response {
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false)
        && fault != Some(Fault::NoUsage);
    let seq = s.seq.fetch_add(1, Ordering::Relaxed);
    let answer = Answer::new(wire, seq, &model, s.config.chunks, &body);

    match fault {
        Some(Fault::Status {
            code,
            retry_after_secs,
            body: custom,
        }) => {
            guard.finish();
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = match custom {
                Some(text) => {
                    let is_json = serde_json::from_str::<Value>(&text).is_ok();
                    let mut r = (status, text).into_response();
                    if is_json {
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                    }
                    add_request_id(wire, r.headers_mut());
                    r
                }
                None => json_response(wire, status, &wire::error_body(wire, code, None)),
            };
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return response;
        }
        Some(Fault::StrictFields) => {
            if let Some(err) = wire::unknown_field_error(wire, &body) {
                guard.finish();
                return json_response(wire, StatusCode::BAD_REQUEST, &err);
            }
        }
        Some(Fault::UnknownModel) => {
            guard.finish();
            let err = wire::unknown_model_body(wire, &model);
            return json_response(wire, StatusCode::NOT_FOUND, &err);
        }
        Some(Fault::Reply { json, sse }) => {
            guard.finish();
            let (text, kind) = if stream {
                (sse, "text/event-stream")
            } else {
                (json, "application/json")
            };
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            add_request_id(wire, r.headers_mut());
            return r;
        }
        Some(Fault::Latency { ttft, knee, slow }) => {
            let delay = if in_flight > knee { slow } else { ttft };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = s.shutdown.cancelled() => {
                    guard.finish();
                    return shutting_down(wire);
                }
            }
        }
        Some(Fault::DelayFirstByte(delay)) => {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = s.shutdown.cancelled() => {
                    guard.finish();
                    return shutting_down(wire);
                }
            }
        }
        Some(Fault::StallAfter(_)) if !stream => {
            // Unary stall: never answer; the guard counts a cancel when the client leaves.
            s.shutdown.cancelled().await;
            guard.finish();
            return shutting_down(wire);
        }
        _ => {}
    }

    if stream {
        let (pieces, tail) = match fault {
            Some(Fault::ErrorEvent) => (vec![wire::error_event(wire)], Tail::Finish),
            Some(Fault::DropAfter(n)) => (
                wire::truncate_after_content(wire::stream_pieces(wire, &answer, include_usage), n),
                Tail::Drop,
            ),
            Some(Fault::StallAfter(n)) => (
                wire::truncate_after_content(wire::stream_pieces(wire, &answer, include_usage), n),
                Tail::Stall,
            ),
            _ => (
                wire::stream_pieces(wire, &answer, include_usage),
                Tail::Finish,
            ),
        };
        let state = StreamState {
            pieces: pieces.into(),
            tail,
            delay: s.config.chunk_delay,
            guard,
            shutdown: s.shutdown.clone(),
        };
        let mut response = Response::new(Body::from_stream(piece_stream(state)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        add_request_id(wire, headers);
        return response;
    }

    match fault {
        Some(Fault::ErrorEvent) => {
            guard.finish();
            json_response(
                wire,
                StatusCode::INTERNAL_SERVER_ERROR,
                &wire::error_body(wire, 500, None),
            )
        }
        Some(Fault::DropAfter(_)) => {
            // Headers and half of the JSON, then the connection is aborted.
            let text = Bytes::from(wire::unary_body(wire, &answer).to_string());
            let half = text.slice(..text.len() / 2);
            let state = StreamState {
                pieces: VecDeque::from([Piece {
                    bytes: half,
                    content: false,
                }]),
                tail: Tail::Drop,
                delay: Duration::ZERO,
                guard,
                shutdown: s.shutdown.clone(),
            };
            let mut response = Response::new(Body::from_stream(piece_stream(state)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => {
            // Simulate generation time: one chunk delay per chunk.
            let total = s
                .config
                .chunk_delay
                .saturating_mul(u32::try_from(answer.chunks.len()).unwrap_or(u32::MAX));
            if !total.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(total) => {}
                    () = s.shutdown.cancelled() => {
                        guard.finish();
                        return shutting_down(wire);
                    }
                }
            }
            guard.finish();
            let mut body = wire::unary_body(wire, &answer);
            if fault == Some(Fault::NoUsage)
                && let Some(o) = body.as_object_mut()
            {
                o.remove("usage");
            }
            json_response(wire, StatusCode::OK, &body)
        }
    }
}

fn shutting_down(wire: Wire) -> Response {
    let err = wire::error_body(wire, 503, Some("fake upstream shutting down"));
    json_response(wire, StatusCode::SERVICE_UNAVAILABLE, &err)
}

/// Pause before an injected connection drop, so hyper writes the frames sent before it.
const DROP_FLUSH_PAUSE: Duration = Duration::from_millis(2);

/// How a stream ends once its frames are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// End the body cleanly.
    Finish,
    /// Abort the connection (the body yields an error, so hyper closes it mid-message).
    Drop,
    /// Hang until the client disconnects or the server shuts down.
    Stall,
    /// Already ended.
    Done,
}

struct StreamState {
    pieces: VecDeque<Piece>,
    tail: Tail,
    delay: Duration,
    guard: RequestGuard,
    shutdown: CancellationToken,
}

fn aborted(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason.to_owned())
}

/// Frames with `delay` before each content frame, then the tail. The guard travels with the
/// stream: if hyper drops it before the tail ran, the client hung up.
fn piece_stream(state: StreamState) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::unfold(state, |mut st| async move {
        if st.tail == Tail::Done {
            return None;
        }
        if let Some(piece) = st.pieces.pop_front() {
            if piece.content && !st.delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(st.delay) => {}
                    () = st.shutdown.cancelled() => {
                        st.guard.finish();
                        st.tail = Tail::Done;
                        return Some((Err(aborted("fake upstream shutting down")), st));
                    }
                }
            }
            if st.pieces.is_empty() && st.tail == Tail::Finish {
                st.guard.finish();
            }
            return Some((Ok(piece.bytes), st));
        }
        match st.tail {
            Tail::Finish | Tail::Done => {
                st.guard.finish();
                None
            }
            Tail::Drop => {
                // hyper flushes buffered frames only while the body is pending; an error on
                // the next poll would discard them. Pause so the client sees the N chunks.
                tokio::time::sleep(DROP_FLUSH_PAUSE).await;
                st.guard.finish();
                st.tail = Tail::Done;
                Some((Err(aborted("fault: drop connection")), st))
            }
            Tail::Stall => {
                st.shutdown.cancelled().await;
                st.guard.finish();
                st.tail = Tail::Done;
                Some((Err(aborted("fake upstream shutting down")), st))
            }
        }
    })
}
