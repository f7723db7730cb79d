//! The classification table, row by row, and the text a caller shapes.

use super::*;

#[test]
fn classification_follows_the_table() {
    let http = |status, code: Option<&str>, message: &str| UpstreamError::Http {
        status,
        message: message.into(),
        code: code.map(Into::into),
        retry_after: None,
        rate: None,
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
                    rate: None,
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
    use http::header::{HeaderMap, HeaderValue};
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
