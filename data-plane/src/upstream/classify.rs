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
fn capped_secs(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// When the upstream says to come back: `retry-after-ms` or `Retry-After`
/// (seconds or an HTTP date) on any error; on a 429 without them, the reset
/// of the limits it has exhausted: OpenAI's `x-ratelimit-reset-requests` /
/// `-tokens` (`1s`, `6m0s`, `120ms`) where `x-ratelimit-remaining-*` is 0,
/// Anthropic's `anthropic-ratelimit-*-reset` (RFC 3339) likewise. The
/// longest such reset wins.
pub fn retry_hint(headers: &reqwest::header::HeaderMap, status: u16) -> Option<Duration> {
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
fn parse_reset_duration(v: &str) -> Option<Duration> {
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
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_table() {
        let http = |status, code: Option<&str>, message: &str| UpstreamError::Http {
            status,
            message: message.into(),
            code: code.map(Into::into),
            retry_after: None,
        };
        use ErrorClass as C;
        let rows = [
            (
                http(429, Some("rate_limit_exceeded"), "Rate limit reached"),
                C::RateLimited,
            ),
            (
                http(529, Some("overloaded_error"), "Overloaded"),
                C::RateLimited,
            ),
            (
                http(
                    429,
                    Some("insufficient_quota"),
                    "You exceeded your current quota",
                ),
                C::AuthBilling(Refusal::Billing),
            ),
            (
                http(401, Some("invalid_api_key"), "Incorrect API key"),
                C::AuthBilling(Refusal::Unauthenticated),
            ),
            (
                http(402, None, "Payment required"),
                C::AuthBilling(Refusal::Billing),
            ),
            (
                http(
                    429,
                    Some("rate_limit_exceeded"),
                    "Rate limit reached. See https://platform.openai.com/account/billing",
                ),
                C::RateLimited,
            ),
            (
                http(400, None, "Invalid model: mistral-x"),
                C::ModelNotFound,
            ),
            (http(422, None, "Model Not Exist"), C::ModelNotFound),
            (
                http(403, Some("permission_error"), "Forbidden"),
                C::AuthBilling(Refusal::Forbidden),
            ),
            (
                http(
                    400,
                    Some("invalid_request_error"),
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
                ),
                C::Declined(Refusal::Billing),
            ),
            (
                http(400, Some("billing_error"), "Billing issue"),
                C::Declined(Refusal::Billing),
            ),
            (
                http(402, Some("billing_error"), "Billing issue"),
                C::AuthBilling(Refusal::Billing),
            ),
            (
                http(
                    429,
                    Some("rate_limit_exceeded"),
                    "Rate limit reached; you exceeded your current quota of requests",
                ),
                C::RateLimited,
            ),
            (
                http(
                    400,
                    Some("invalid_request_error"),
                    "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (8000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
                ),
                C::ContextTooLong,
            ),
            (
                http(404, Some("model_not_found"), "The model `x` does not exist"),
                C::ModelNotFound,
            ),
            (
                http(404, Some("not_found_error"), "model: claude-x"),
                C::ModelNotFound,
            ),
            (
                http(404, Some("not_found_error"), "Not Found"),
                C::Transient,
            ),
            (http(404, None, "Not found"), C::Transient),
            (
                http(
                    400,
                    Some("context_length_exceeded"),
                    "This model's maximum context length is 8192 tokens",
                ),
                C::ContextTooLong,
            ),
            (
                http(
                    400,
                    Some("invalid_request_error"),
                    "prompt is too long: 210000 tokens > 200000 maximum",
                ),
                C::ContextTooLong,
            ),
            (
                http(400, None, "Bad request"),
                C::Permanent(Refusal::BadRequest),
            ),
            (
                http(422, None, "Unprocessable"),
                C::Permanent(Refusal::BadRequest),
            ),
            (http(418, None, "teapot"), C::Permanent(Refusal::Other)),
            (http(408, None, "timeout"), C::Transient),
            (http(500, None, "oops"), C::Transient),
            (http(503, None, "overloaded"), C::Transient),
            (UpstreamError::Truncated, C::Transient),
            (UpstreamError::FirstByteTimeout, C::Transient),
            (UpstreamError::Connect("refused".into()), C::Transient),
            (
                UpstreamError::Event {
                    message: "overloaded".into(),
                },
                C::Transient,
            ),
            (UpstreamError::Config("bad header".into()), C::Misconfigured),
            (
                UpstreamError::Unsupported("no images".into()),
                C::Unsupported,
            ),
        ];
        for (err, class) in rows {
            assert_eq!(err.class(), class, "{err}");
        }
    }

    /// Provider messages echo request fields: a field named like a billing,
    /// context or model error must not move the class of a 400 (issue 17).
    #[test]
    fn text_a_caller_shapes_never_decides_the_class() {
        let fields = [
            "credit balance",
            "insufficient_quota",
            "exceeded your current quota",
            "billing is not active",
            "maximum context length",
            "context window",
            "prompt is too long",
            "model does not exist",
            "model not found",
            "invalid model",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
            "prompt is too long: 5 tokens > 1 maximum",
            "Model Not Exist",
        ];
        for field in fields {
            for (code, message) in [
                (
                    Some("invalid_request_error"),
                    format!("Unrecognized request argument supplied: {field}"),
                ),
                (
                    Some("invalid_request_error"),
                    format!("{field}: Extra inputs are not permitted"),
                ),
                (
                    None,
                    format!("Unrecognized request argument supplied: {field}"),
                ),
            ] {
                for status in [400, 422] {
                    let err = UpstreamError::Http {
                        status,
                        message: message.clone(),
                        code: code.map(Into::into),
                        retry_after: None,
                    };
                    assert_eq!(
                        err.class(),
                        ErrorClass::Permanent(Refusal::BadRequest),
                        "{status} {message:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_fixed_sentence_compiles_and_matches_its_example() {
        for (set, example) in [
            (
                &UNKNOWN_MODEL,
                "The model `gpt-9` does not exist or you do not have access to it.",
            ),
            (&UNKNOWN_MODEL, "model: claude-x"),
            (
                &UNKNOWN_MODEL,
                r#"model "llama3" not found, try pulling it first"#,
            ),
            (
                &CONTEXT_TOO_LONG,
                "prompt is too long: 210000 tokens > 200000 maximum",
            ),
            (
                &CONTEXT_TOO_LONG,
                "This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens. Please reduce the length of the messages.",
            ),
        ] {
            assert!(set.matches(example), "{example}");
            assert_eq!(
                RegexSet::new(set.1).map(|s| s.len()).ok(),
                Some(set.1.len()),
                "every pattern compiles"
            );
        }
    }

    #[test]
    fn retry_hints_in_every_form_providers_send() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let hint = |pairs: &[(&'static str, String)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).expect("header"));
            }
            retry_hint(&h, 429)
        };
        assert_eq!(
            hint(&[("retry-after", "20".into())]),
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            hint(&[("retry-after-ms", "1500".into())]),
            Some(Duration::from_millis(1500))
        );
        let in_30s = std::time::SystemTime::now() + Duration::from_secs(30);
        let date = hint(&[("retry-after", httpdate::fmt_http_date(in_30s))]).expect("date");
        assert!(
            date > Duration::from_secs(28) && date <= Duration::from_secs(30),
            "{date:?}"
        );
        assert_eq!(
            hint(&[
                ("x-ratelimit-reset-requests", "1s".into()),
                ("x-ratelimit-reset-tokens", "6m0s".into())
            ]),
            Some(Duration::from_secs(360)),
            "the longest reset wins"
        );
        assert_eq!(
            hint(&[("x-ratelimit-reset-tokens", "120ms".into())]),
            Some(Duration::from_millis(120))
        );
        let rfc = humantime::format_rfc3339_seconds(in_30s).to_string();
        let a = hint(&[("anthropic-ratelimit-requests-reset", rfc)]).expect("rfc3339");
        assert!(
            a > Duration::from_secs(28) && a <= Duration::from_secs(30),
            "{a:?}"
        );
        assert_eq!(hint(&[("retry-after", "soon".into())]), None);
        for huge in ["1e20", "1e300", "inf", "NaN", "-5"] {
            let h = hint(&[("retry-after", huge.into())]);
            assert!(
                h.is_none_or(|d| d <= Duration::from_secs(86_400)),
                "{huge}: {h:?}"
            );
        }
        assert_eq!(
            hint(&[("retry-after-ms", "1e30".into())]),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            hint(&[("x-ratelimit-reset-tokens", "99999999999999999999h".into())]),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            hint(&[
                ("x-ratelimit-reset-requests", "1s".into()),
                ("x-ratelimit-remaining-requests", "0".into()),
                ("x-ratelimit-reset-tokens", "6m0s".into()),
                ("x-ratelimit-remaining-tokens", "5000".into())
            ]),
            Some(Duration::from_secs(1)),
            "only the exhausted limit's reset counts"
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
        assert_eq!(retry_hint(&h, 503), None, "reset headers only on a 429");
        assert_eq!(
            hint(&[("retry-after", "99999999".into())]),
            Some(Duration::from_secs(86_400)),
            "capped at a day"
        );
    }
}
