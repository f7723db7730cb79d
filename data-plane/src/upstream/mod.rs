//! Upstreams: one neutral chat request in, completions or chunk streams out,
//! per wire format (`openai`, `anthropic`, in-process `mock`).
//!
//! Adapters only speak HTTP and parse. Timeouts beyond connect/first byte
//! (total, inter-chunk stall), retries and failover belong to the caller
//! (`failover`), so nothing multiplies: the HTTP client retries nothing.

pub mod anthropic;
pub mod mock;
pub mod openai;
mod wire;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON object text.
    pub arguments_json: String,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// Assistant messages: calls it made.
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call answered.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema text.
    pub parameters_json: String,
}

/// The provider-neutral request.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub json_mode: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    Text(String),
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    Usage(Usage),
    /// The upstream finished; "stop", "length", "tool_calls", "content_filter".
    Finish(String),
}

/// A whole (unary) answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    pub usage: Option<Usage>,
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
        retry_after: Option<Duration>,
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
}

/// Why an upstream refused a request for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400, 413, 422: the request is wrong.
    BadRequest,
    /// 401: the member's credential is wrong.
    Unauthenticated,
    /// 403: the credential may not do this.
    Forbidden,
    /// Any other 4xx.
    Other,
}

/// What failover does with an error (docs/adr/004-failover-and-health.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry the member per policy, then move on; counts against its health.
    Transient,
    /// Move on without penalising the member.
    ModelNotFound,
    /// The upstream refused the request itself: return at once (unless the
    /// pool advances on permanent errors).
    Permanent(Refusal),
    /// This member cannot be called as configured: move on, no penalty.
    Misconfigured,
}

impl UpstreamError {
    pub fn class(&self) -> ErrorClass {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::FirstByteTimeout
            | UpstreamError::Event { .. }
            | UpstreamError::Protocol(_)
            | UpstreamError::Truncated
            | UpstreamError::Io(_)
            | UpstreamError::RequestTimeout => ErrorClass::Transient,
            UpstreamError::Config(_) => ErrorClass::Misconfigured,
            UpstreamError::Http { status, .. } => match status {
                404 => ErrorClass::ModelNotFound,
                408 | 409 | 425 | 429 => ErrorClass::Transient,
                400 | 413 | 422 => ErrorClass::Permanent(Refusal::BadRequest),
                401 => ErrorClass::Permanent(Refusal::Unauthenticated),
                403 => ErrorClass::Permanent(Refusal::Forbidden),
                s if *s >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Permanent(Refusal::Other),
            },
        }
    }

    /// The upstream's Retry-After, which lengthens a bench.
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
                retry_after,
            } => UpstreamError::Http {
                status,
                message: m(message),
                retry_after,
            },
            UpstreamError::Event { message } => UpstreamError::Event {
                message: m(message),
            },
            UpstreamError::Protocol(s) => UpstreamError::Protocol(m(s)),
            UpstreamError::Io(s) => UpstreamError::Io(m(s)),
            UpstreamError::Config(s) => UpstreamError::Config(m(s)),
            e @ (UpstreamError::FirstByteTimeout
            | UpstreamError::Truncated
            | UpstreamError::RequestTimeout) => e,
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

/// Parses a Retry-After header given in seconds (HTTP dates are ignored).
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Maps a reqwest failure to an upstream error, keeping URLs (which never
/// hold credentials: those travel in headers) but nothing else sensitive.
pub fn from_reqwest(err: &reqwest::Error) -> UpstreamError {
    if err.is_connect() {
        UpstreamError::Connect(err.to_string())
    } else if err.is_timeout() {
        UpstreamError::FirstByteTimeout
    } else if err.is_decode() {
        UpstreamError::Protocol(err.to_string())
    } else {
        UpstreamError::Io(err.to_string())
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

/// Sends one request and returns the whole answer.
pub async fn complete(
    http: &reqwest::Client,
    t: &Target,
    req: &ChatRequest,
) -> Result<Completion, UpstreamError> {
    let result = match t.kind {
        Kind::OpenAi => openai::complete(http, t, req).await,
        Kind::Anthropic => anthropic::complete(http, t, req).await,
        Kind::Mock => mock::complete(t, req).await,
    };
    result.map_err(|e| e.masked(t))
}

/// Sends one streaming request; returns once the upstream accepted it
/// (status checked), before the first chunk.
pub async fn stream(
    http: &reqwest::Client,
    t: &Target,
    req: &ChatRequest,
) -> Result<ChunkStream, UpstreamError> {
    let result = match t.kind {
        Kind::OpenAi => openai::stream(http, t, req).await,
        Kind::Anthropic => anthropic::stream(http, t, req).await,
        Kind::Mock => mock::stream(t, req).await,
    };
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
    fn classification_follows_the_failover_rules() {
        let http = |status| UpstreamError::Http {
            status,
            message: String::new(),
            retry_after: None,
        };
        for s in [429, 500, 502, 503, 504, 529] {
            assert_eq!(http(s).class(), ErrorClass::Transient, "{s}");
        }
        assert_eq!(http(404).class(), ErrorClass::ModelNotFound);
        assert_eq!(
            http(400).class(),
            ErrorClass::Permanent(Refusal::BadRequest)
        );
        assert_eq!(
            http(422).class(),
            ErrorClass::Permanent(Refusal::BadRequest)
        );
        assert_eq!(
            http(401).class(),
            ErrorClass::Permanent(Refusal::Unauthenticated)
        );
        assert_eq!(http(403).class(), ErrorClass::Permanent(Refusal::Forbidden));
        assert_eq!(UpstreamError::Truncated.class(), ErrorClass::Transient);
        assert_eq!(
            UpstreamError::Event {
                message: "overloaded".into()
            }
            .class(),
            ErrorClass::Transient
        );
    }
}
