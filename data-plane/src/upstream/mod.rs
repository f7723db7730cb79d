//! Upstreams: one neutral chat request in, completions or chunk streams out,
//! per wire format (`openai`, `anthropic`, in-process `mock`).
//!
//! `mock` is built only with the `mock` cargo feature (`switchyard dev`, the
//! tests, the bench); a release worker built without it treats a MOCK
//! member as misconfigured for this build (`mock_served`).
//!
//! Adapters only speak HTTP and parse. Timeouts beyond connect/first byte
//! (total, inter-chunk stall), retries and failover belong to the caller
//! (`failover`), so nothing multiplies: the HTTP client retries nothing.

pub mod anthropic;
#[cfg(test)]
mod canned;
mod classify;
pub mod client;
mod endpoint;
mod lenient;
#[cfg(feature = "mock")]
pub mod mock;
pub mod openai;
mod ratelimit;
mod request;
mod response;
mod wire;

pub use classify::{ErrorClass, Refusal, retry_hint};
pub use client::Client;
pub use endpoint::{Endpoint, Wire};
pub use ratelimit::{RateHeaders, Rated};
pub use request::{
    Cache, ChatRequest, DEFAULT_MAX_OUTPUT, Detail, Effort, EmbedInput, EmbedRequest, Message,
    Part, PartKind, Reasoning, ReasoningBlock, ResponseFormat, Role, Source, Tool, ToolCall,
    ToolChoice,
};
pub use response::{
    Choice, Chunk, Completion, Embeddings, ResponseMeta, TokenLogprob, TopLogprob, Usage,
};

use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use secrecy::SecretString;

/// Which wire format a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
    Mock,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the response headers (unary: the whole body) arrive.
    pub first_byte: Duration,
    pub total: Duration,
}

/// Where one attempt goes: a provider endpoint and an upstream model id.
#[derive(Clone)]
pub struct Target {
    pub kind: Kind,
    /// e.g. `https://api.openai.com/v1` (no trailing slash needed).
    pub base_url: String,
    pub model: String,
    /// Never logged; Debug shows `*****`.
    pub credential: Option<SecretString>,
    pub extra_headers: Vec<(String, String)>,
    pub timeouts: Timeouts,
    /// max_tokens for requests that set none (the member's `max_output_tokens`).
    pub default_max_tokens: Option<u32>,
    /// Whether requests may carry `extra` fields (the pool's `allow_request_extra`).
    pub allow_extra: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("credential", &self.credential.as_ref().map(|_| "*****"))
            .finish()
    }
}

/// A stream of chunks. It must end with `Ok(Chunk::Finish)` or an error:
/// an upstream that stops without finishing yields `Err(Truncated)`.
pub type ChunkStream = BoxStream<'static, Result<Chunk, UpstreamError>>;

/// Why an upstream call failed. Messages never hold a credential.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("timed out waiting for the first byte")]
    FirstByteTimeout,
    #[error("HTTP {status}: {message}")]
    Http {
        status: u16,
        message: String,
        /// The provider's error code or type (`model_not_found`,
        /// `rate_limit_error`, `context_length_exceeded`, ...), when it gave one.
        code: Option<String>,
        /// When the upstream said to come back (Retry-After and kin).
        retry_after: Option<Duration>,
        /// Its rate-limit headers (boxed: errors stay small).
        rate: Option<Box<RateHeaders>>,
    },
    /// An error object/event inside a 200 response or stream.
    #[error("upstream error: {message}")]
    Event { message: String },
    #[error("malformed response: {0}")]
    Protocol(String),
    #[error("stream ended before it finished")]
    Truncated,
    #[error("connection lost: {0}")]
    Io(String),
    #[error("timed out after the provider's request timeout")]
    RequestTimeout,
    /// The member's configuration cannot be sent (a credential or header
    /// that is not a valid header value): no upstream was called.
    #[error("member misconfigured: {0}")]
    Config(String),
    /// The member cannot take something the request asks for: nothing was
    /// sent, and another member may serve.
    #[error("{0}")]
    Unsupported(String),
}

impl UpstreamError {
    /// When the upstream said to come back, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error with an echoed credential masked in its message.
    fn masked(self, t: &Target) -> Self {
        let m = |s: String| wire::mask_secret(t, &s);
        match self {
            UpstreamError::Connect(s) => UpstreamError::Connect(m(s)),
            UpstreamError::Http {
                status,
                message,
                code,
                retry_after,
                rate,
            } => UpstreamError::Http {
                status,
                message: m(message),
                code,
                retry_after,
                rate,
            },
            UpstreamError::Event { message } => UpstreamError::Event {
                message: m(message),
            },
            UpstreamError::Protocol(s) => UpstreamError::Protocol(m(s)),
            UpstreamError::Io(s) => UpstreamError::Io(m(s)),
            UpstreamError::Config(s) => UpstreamError::Config(m(s)),
            UpstreamError::Unsupported(s) => UpstreamError::Unsupported(m(s)),
            e @ (UpstreamError::FirstByteTimeout
            | UpstreamError::Truncated
            | UpstreamError::RequestTimeout) => e,
        }
    }

    /// What the error answer's rate-limit headers said, if it had any.
    pub fn rate(&self) -> Option<RateHeaders> {
        match self {
            UpstreamError::Http { rate, .. } => rate.as_deref().copied(),
            _ => None,
        }
    }

    /// The HTTP status, when there was one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            UpstreamError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Cuts an upstream error body to something fit for an error message.
pub fn clip_body(body: &str) -> String {
    let t = body.trim();
    let mut out: String = t.chars().take(300).collect();
    if t.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// Trace headers (W3C `traceparent`, `tracestate`) for one upstream request.
#[derive(Clone, Debug, Default)]
pub struct TraceHeaders {
    headers: Vec<(http::header::HeaderName, http::header::HeaderValue)>,
}

impl TraceHeaders {
    pub fn push(&mut self, k: http::header::HeaderName, v: http::header::HeaderValue) {
        self.headers.push((k, v));
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| v.to_str().ok())
    }
}

impl TraceHeaders {
    /// Adds the trace headers to `h` (they win over a member's extra headers).
    fn add_to(&self, h: &mut http::header::HeaderMap) {
        for (k, v) in &self.headers {
            h.insert(k.clone(), v.clone());
        }
    }
}

/// A request as one member's wire format sends it, built before any attempt
/// (`prepare`, `prepare_embed`): a member that cannot take the request is
/// passed over before anything is sent or spent, and its retries reuse it
/// (the body is written once; each attempt shares its bytes).
pub struct Prepared(Option<bytes::Bytes>);

/// The body's JSON text.
fn written(body: &serde_json::Value) -> Result<bytes::Bytes, UpstreamError> {
    serde_json::to_vec(body)
        .map(bytes::Bytes::from)
        .map_err(|e| UpstreamError::Config(format!("the request body cannot be written: {e}")))
}

/// Builds the chat body `t` would be sent; `Unsupported` when the member
/// cannot take the request (nothing was sent).
pub fn prepare(t: &Target, req: &ChatRequest, stream: bool) -> Result<Prepared, UpstreamError> {
    check_extra(t, req.extra.as_ref()).map_err(|e| e.masked(t))?;
    let body = match t.kind {
        Kind::OpenAi => Some(openai::request_body(t, req, stream)),
        Kind::Anthropic => Some(anthropic::request_body(t, req, stream)),
        Kind::Mock => mock_served(MOCK_BUILT).err().map(Err),
    };
    let body = body.map(|b| b.and_then(|b| written(&b)));
    body.transpose().map(Prepared).map_err(|e| e.masked(t))
}

/// Builds the embeddings body `t` would be sent (see [`prepare`]).
pub fn prepare_embed(t: &Target, req: &EmbedRequest) -> Result<Prepared, UpstreamError> {
    check_extra(t, req.extra.as_ref()).map_err(|e| e.masked(t))?;
    let body = match t.kind {
        Kind::OpenAi => Some(openai::embed_body(t, req)),
        Kind::Anthropic => Some(Err(no_embeddings())),
        Kind::Mock => mock_served(MOCK_BUILT).err().map(Err),
    };
    let body = body.map(|b| b.and_then(|b| written(&b)));
    body.transpose().map(Prepared).map_err(|e| e.masked(t))
}

/// Whether this build serves MOCK members (the `mock` cargo feature).
pub const MOCK_BUILT: bool = cfg!(feature = "mock");

/// Whether a MOCK member can be served by a worker built with (`built`) or
/// without the `mock` feature. Without it the member is misconfigured for
/// this build: passed over before anything is claimed or sent, with no
/// penalty, and the reason names the cause, like a member whose headers
/// cannot be sent. Other members still serve.
fn mock_served(built: bool) -> Result<(), UpstreamError> {
    if built { Ok(()) } else { Err(mock_not_built()) }
}

/// Why a MOCK member is not served by this build.
fn mock_not_built() -> UpstreamError {
    UpstreamError::Config(
        "provider kind MOCK (the in-process mock upstream) is not built into this worker \
         (built without the `mock` cargo feature); give the member a real provider"
            .into(),
    )
}

fn no_embeddings() -> UpstreamError {
    UpstreamError::Unsupported("Anthropic members have no embeddings API".into())
}

/// The body of a prepared request, for the adapters that send one.
fn body_of(p: &Prepared) -> Result<&bytes::Bytes, UpstreamError> {
    p.0.as_ref()
        .ok_or_else(|| UpstreamError::Config("no request body was prepared for this member".into()))
}

/// Sends one prepared request and returns the whole answer.
pub async fn complete(
    http: &Client,
    t: &Endpoint,
    req: &ChatRequest,
    body: &Prepared,
    trace: &TraceHeaders,
) -> Result<Completion, UpstreamError> {
    let result = async {
        match t.kind {
            Kind::OpenAi => openai::send(http, t, body_of(body)?, trace).await,
            Kind::Anthropic => anthropic::send(http, t, req, body_of(body)?, trace).await,
            #[cfg(feature = "mock")]
            Kind::Mock => mock::complete(t, req).await,
            #[cfg(not(feature = "mock"))]
            Kind::Mock => Err(mock_not_built()),
        }
    };
    result.await.map_err(|e| e.masked(t))
}

/// Asks for embeddings (a prepared request) and returns them all.
pub async fn embed(
    http: &Client,
    t: &Endpoint,
    req: &EmbedRequest,
    body: &Prepared,
    trace: &TraceHeaders,
) -> Result<Embeddings, UpstreamError> {
    let result = async {
        match t.kind {
            Kind::OpenAi => openai::send_embed(http, t, req, body_of(body)?, trace).await,
            Kind::Anthropic => Err(no_embeddings()),
            #[cfg(feature = "mock")]
            Kind::Mock => mock::embed(t, req).await,
            #[cfg(not(feature = "mock"))]
            Kind::Mock => Err(mock_not_built()),
        }
    };
    result.await.map_err(|e| e.masked(t))
}

/// `extra` fields are refused where the member's pool forbids them.
pub fn check_extra(
    t: &Target,
    extra: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), UpstreamError> {
    if extra.is_some_and(|e| !e.is_empty()) && !t.allow_extra {
        return Err(UpstreamError::Unsupported(
            "this member's pool does not allow request extra fields (allow_request_extra is false)"
                .into(),
        ));
    }
    Ok(())
}

/// Sends one prepared streaming request; returns once the upstream
/// accepted it (status checked), before the first chunk.
pub async fn stream(
    http: &Client,
    t: &Endpoint,
    req: &ChatRequest,
    body: &Prepared,
    trace: &TraceHeaders,
) -> Result<ChunkStream, UpstreamError> {
    let result = async {
        match t.kind {
            Kind::OpenAi => openai::send_stream(http, t, body_of(body)?, trace).await,
            Kind::Anthropic => anthropic::send_stream(http, t, req, body_of(body)?, trace).await,
            #[cfg(feature = "mock")]
            Kind::Mock => mock::stream(t, req).await,
            #[cfg(not(feature = "mock"))]
            Kind::Mock => Err(mock_not_built()),
        }
    }
    .await;
    // Every error leaving an adapter, in the stream too, has an echoed credential masked.
    match result {
        Ok(s) => {
            let t = t.clone();
            Ok(s.map(move |item| item.map_err(|e| e.masked(&t))).boxed())
        }
        Err(e) => Err(e.masked(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mock_member_on_a_worker_built_without_mock_is_misconfigured_not_a_crash() {
        let err = mock_served(false).expect_err("not built");
        // Passed over with no penalty, like any member that cannot be sent.
        assert!(matches!(err.class(), ErrorClass::Misconfigured), "{err}");
        let message = err.to_string();
        assert!(message.starts_with("member misconfigured: "), "{message}");
        assert!(
            message.contains("MOCK") && message.contains("`mock` cargo feature"),
            "{message}"
        );
        assert!(mock_served(true).is_ok());
        // The tests build the feature in: MOCK members are prepared here.
        let mut t = target();
        t.kind = Kind::Mock;
        assert!(prepare(&t, &ChatRequest::default(), false).is_ok());
        assert!(prepare_embed(&t, &EmbedRequest::default()).is_ok());
    }

    fn target() -> Target {
        Target {
            kind: Kind::OpenAi,
            base_url: "http://x".into(),
            model: "m".into(),
            credential: Some(SecretString::from("sk-secret-1234567890".to_owned())),
            extra_headers: vec![("api-key".into(), "hdr-secret-abcdef".into())],
            timeouts: Timeouts {
                connect: Duration::from_secs(1),
                first_byte: Duration::from_secs(1),
                total: Duration::from_secs(1),
            },
            default_max_tokens: None,
            allow_extra: true,
        }
    }

    #[test]
    fn secrets_are_masked_even_when_a_clip_cuts_one_short() {
        let t = target();
        let m = wire::mask_secret(&t, "bad key sk-secret-1234567890 and hdr-secret-abcdef");
        assert_eq!(m, "bad key ***** and *****");
        let long = format!("{}sk-secret-1234567890", "x".repeat(290));
        let clipped = clip_body(&long);
        assert!(clipped.ends_with('…'), "clipped");
        let m = wire::mask_secret(&t, &clipped);
        assert!(!m.contains("sk-secret"), "{m}");
        assert!(m.ends_with("*****…"), "{m}");
    }
}
