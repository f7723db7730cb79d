//! The one classification table: what each upstream outcome means for
//! failover (docs/adr/004-failover-and-health.md), and when an upstream
//! says to come back.

use std::sync::OnceLock;
use std::time::Duration;

use regex::RegexSet;

use super::UpstreamError;

/// Why an upstream refused a request for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400, 413, 422: the request is wrong.
    BadRequest,
    /// 401: the member's credential is wrong.
    Unauthenticated,
    /// 403: the credential may not do this.
    Forbidden,
    /// 402, or a billing / insufficient-quota error: the account cannot pay.
    Billing,
    /// Any other 4xx.
    Other,
}

/// What failover does with an outcome: the one classification table
/// (docs/adr/004-failover-and-health.md, "Classification").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry the member per policy (with backoff), then move on; counts
    /// toward its bench.
    Transient,
    /// 429 / 529: bench the member at once, fleet-wide, for as long as it
    /// said (or the default), and move on. Never retried before then.
    RateLimited,
    /// 401 / 402 / 403 / billing: bench the member for long, move on; the
    /// caller sees this only if no other member serves.
    AuthBilling(Refusal),
    /// The account cannot pay, said in a 400: move on, no penalty (a 400
    /// never benches, since a caller can cause one); the caller sees this
    /// only if no other member serves.
    Declined(Refusal),
    /// The upstream does not know the model: move on, no penalty.
    ModelNotFound,
    /// The prompt is longer than the model's context: move on, no penalty (a
    /// member with a larger context may serve).
    ContextTooLong,
    /// The request itself is wrong: return at once (unless the pool
    /// advances on permanent errors).
    Permanent(Refusal),
    /// This member cannot be called as configured: move on, no penalty.
    Misconfigured,
    /// This member cannot take what the request asks for (nothing was
    /// sent): move on, no penalty.
    Unsupported,
}

/// The provider's structured codes (`error.code`, else `error.type`) that
/// mean "the account cannot pay": OpenAI's `insufficient_quota`,
/// `billing_not_active`, `billing_hard_limit_reached`; Anthropic's
/// `billing_error`.
fn is_billing_code(code: &str) -> bool {
    matches!(
        code,
        "insufficient_quota"
            | "billing_not_active"
            | "billing_hard_limit_reached"
            | "billing_error"
    )
}

/// Whole fixed sentences providers send with no structured code. Each is
/// matched from its first character to its last: a request field echoed in
/// a message (an unknown field's name, a value) can never make one, since
/// every provider's echo starts or ends with text of its own ("Unrecognized
/// request argument supplied: …", "…: Extra inputs are not permitted").
struct Sentences(OnceLock<RegexSet>, &'static [&'static str]);

impl Sentences {
    fn matches(&self, message: &str) -> bool {
        self.0
            .get_or_init(|| RegexSet::new(self.1).unwrap_or_else(|_| RegexSet::empty()))
            .is_match(message.trim())
    }
}

/// "The model is unknown here", as sent without `model_not_found`.
static UNKNOWN_MODEL: Sentences = Sentences(
    OnceLock::new(),
    &[
        // OpenAI (also with the code), vLLM, LiteLLM-style servers.
        r"^The model `[^`\s]{1,256}` does not exist( or you do not have access to it)?\.?$",
        // Anthropic's 404 `not_found_error`.
        r"^model: [^\s]{1,256}$",
        // DeepSeek.
        r"^Model Not Exist$",
        // Mistral.
        r"^Invalid model: [^\s]{1,256}$",
        // Ollama's OpenAI-compatible API.
        r#"^model "[^"\s]{1,256}" not found, try pulling it first$"#,
    ],
);

/// "The prompt is longer than the model's context", as sent without
/// `context_length_exceeded`.
static CONTEXT_TOO_LONG: Sentences = Sentences(
    OnceLock::new(),
    &[
        // Anthropic (400 `invalid_request_error`).
        r"^prompt is too long: \d+ tokens > \d+ maximum$",
        // OpenAI-compatible servers (vLLM and others copy OpenAI's sentence).
        r"^This model's maximum context length is \d+ tokens\. However, you requested \d+ tokens \(\d+ in the messages,( \d+ in the functions,)? \d+ in the completion\)\. Please reduce the length of the messages(, functions)? or completion\.$",
        r"^This model's maximum context length is \d+ tokens\. However, your messages resulted in \d+ tokens( \(including \d+ in the functions\))?\. Please reduce the length of the messages( or functions)?\.$",
        // vLLM (newer wording).
        r"^This model's maximum context length is \d+ tokens\. However, your request has \d+ input tokens\. Please reduce the length of the input messages\.$",
        // Anthropic, when the prompt and max_tokens together do not fit.
        r"^input length and `max_tokens` exceed context limit: \d+ \+ \d+ > \d+, decrease input length or `max_tokens` and try again$",
        // Mistral.
        r"^Prompt contains \d+ tokens( and \d+ draft tokens)?, too large for model with \d+ maximum context length$",
    ],
);

/// "The account cannot pay", as Anthropic once sent it: a 400 with this
/// sentence and no billing type.
static BILLING: Sentences = Sentences(
    OnceLock::new(),
    &[
        r"^Your credit balance is too low to access the (Anthropic|Claude) API\. Please go to Plans & Billing to upgrade or purchase credits\.$",
    ],
);

fn is_unknown_model(code: &str, message: &str) -> bool {
    // Azure OpenAI's DeploymentNotFound: the deployment (its model) does not exist.
    matches!(code, "model_not_found" | "DeploymentNotFound") || UNKNOWN_MODEL.matches(message)
}

fn is_context_too_long(code: &str, message: &str) -> bool {
    code == "context_length_exceeded" || CONTEXT_TOO_LONG.matches(message)
}

impl UpstreamError {
    /// The class of this outcome: decided by the HTTP status, the
    /// provider's structured code, and whole fixed sentences — never by a
    /// substring a request field can put in a message (ADR 004).
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
            UpstreamError::Unsupported(_) => ErrorClass::Unsupported,
            UpstreamError::Http {
                status,
                message,
                code,
                ..
            } => {
                let code = code.as_deref().unwrap_or("");
                match *status {
                    429 if is_billing_code(code) => ErrorClass::AuthBilling(Refusal::Billing),
                    429 | 529 => ErrorClass::RateLimited,
                    401 => ErrorClass::AuthBilling(Refusal::Unauthenticated),
                    402 => ErrorClass::AuthBilling(Refusal::Billing),
                    403 if is_billing_code(code) => ErrorClass::AuthBilling(Refusal::Billing),
                    403 => ErrorClass::AuthBilling(Refusal::Forbidden),
                    // A 404 without the provider's model-not-found error is a
                    // wrong base URL path: a member fault that counts.
                    404 if is_unknown_model(code, message) => ErrorClass::ModelNotFound,
                    404 => ErrorClass::Transient,
                    // A 400 never benches a member: a caller can cause any 400.
                    400 if is_context_too_long(code, message) => ErrorClass::ContextTooLong,
                    400 if is_billing_code(code) || BILLING.matches(message) => {
                        ErrorClass::Declined(Refusal::Billing)
                    }
                    // Some providers answer an unknown model with 400 or 422.
                    400 | 422 if is_unknown_model(code, message) => ErrorClass::ModelNotFound,
                    400 | 413 | 422 => ErrorClass::Permanent(Refusal::BadRequest),
                    408 | 409 | 425 => ErrorClass::Transient,
                    s if s >= 500 => ErrorClass::Transient,
                    _ => ErrorClass::Permanent(Refusal::Other),
                }
            }
        }
    }
}

/// Longest a provider may bench a member by saying so (a day).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// Seconds as a duration, capped at a day (never a panic on a huge value).
pub(super) fn capped_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// When the upstream says to come back: `retry-after-ms` or `Retry-After`
/// (seconds or an HTTP date) on any error; on a 429 without them, the reset
/// of the limits it has exhausted: OpenAI's `x-ratelimit-reset-requests` /
/// `-tokens` (`1s`, `6m0s`, `120ms`) where `x-ratelimit-remaining-*` is 0,
/// Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339) likewise. The
/// longest such reset wins.
pub fn retry_hint(headers: &http::header::HeaderMap, status: u16) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let now = std::time::SystemTime::now();
    let until = |t: std::time::SystemTime| t.duration_since(now).unwrap_or_default();
    if let Some(d) = get("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| capped_secs(ms / 1000.0))
    {
        return Some(d);
    }
    if let Some(v) = get("retry-after") {
        if let Some(d) = v.parse::<f64>().ok().and_then(capped_secs) {
            return Some(d);
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(until(at).min(MAX_RETRY_AFTER));
        }
    }
    if status != 429 {
        // Reset headers ride on every answer: they say when a limit refills,
        // not that this error came from one.
        return None;
    }
    let exhausted = |remaining: &str| get(remaining).is_none_or(|v| v == "0");
    let mut longest: Option<Duration> = None;
    let mut take = |d: Duration| longest = Some(longest.map_or(d, |l| l.max(d)));
    for (reset, remaining) in [
        (
            "x-ratelimit-reset-requests",
            "x-ratelimit-remaining-requests",
        ),
        ("x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"),
    ] {
        if exhausted(remaining)
            && let Some(d) = get(reset).and_then(parse_reset_duration)
        {
            take(d);
        }
    }
    for kind in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let reset = format!("anthropic-ratelimit-{kind}-reset");
        let remaining = format!("anthropic-ratelimit-{kind}-remaining");
        if exhausted(&remaining)
            && let Some(at) = get(&reset).and_then(|v| humantime::parse_rfc3339_weak(v).ok())
        {
            take(until(at));
        }
    }
    longest.map(|d| d.min(MAX_RETRY_AFTER))
}

/// OpenAI's reset durations: numbers with `h`, `m`, `s` or `ms`, run
/// together (`6m0s`, `1.5s`, `120ms`).
pub(super) fn parse_reset_duration(v: &str) -> Option<Duration> {
    let mut total = 0.0;
    let mut rest = v;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * unit;
        rest = &rest[len..];
    }
    capped_secs(total)
}

#[cfg(test)]
mod tests;
