//! The door's errors: OpenAI's JSON error shape with the HTTP status a
//! client (and its SDK's retry logic) expects, mapped from the call layer's
//! one error type by variant, in one place.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::DpError;
use crate::service::Unserved;
use crate::upstream::Refusal;

/// An error on its way to an HTTP caller.
#[derive(Debug)]
pub struct DoorError {
    pub status: StatusCode,
    /// OpenAI's `error.type`.
    pub kind: &'static str,
    /// OpenAI's `error.code`.
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
    /// Boxed: errors are rare, results that may hold one stay small.
    pub headers: Box<HeaderMap>,
}

impl DoorError {
    /// The request itself is wrong (400), naming the parameter.
    pub fn invalid(param: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: param.into(),
            message: message.into(),
            headers: Box::default(),
        }
    }

    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Some("request_too_large"),
            message: format!("the request body is larger than {limit} bytes"),
            ..Self::invalid(None, "")
        }
    }

    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self {
            status: StatusCode::REQUEST_TIMEOUT,
            code: Some("request_timeout"),
            message: format!(
                "the request body did not arrive within {} ms",
                limit.as_millis()
            ),
            ..Self::invalid(None, "")
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Some("not_found"),
            message: message.into(),
            ..Self::invalid(None, "")
        }
    }

    /// The JSON body as OpenAI shapes it.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// Seconds to wait (rounded up, at least 1), for `Retry-After`.
fn retry_after(after: std::time::Duration) -> Option<HeaderValue> {
    let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string()).ok()
}

/// A field path of the gRPC request, as the OpenAI body names it: content
/// parts are `content[j]`, an image part's source is `image_url.url`, a
/// document's `file.file_data`, and so on.
fn public_param(field: &str) -> String {
    let mut p = field.replace(".parts[", ".content[");
    for (grpc, openai) in [
        (".image.url", ".image_url.url"),
        (".image.data", ".image_url.url"),
        (".image.media_type", ".image_url.url"),
        (".image.detail", ".image_url.detail"),
        (".document.url", ".file.file_data"),
        (".document.data", ".file.file_data"),
        (".document.media_type", ".file.file_data"),
    ] {
        if let Some(head) = p.strip_suffix(grpc) {
            p = format!("{head}{openai}");
        }
    }
    let whole = match p.as_str() {
        "json_schema.schema_json" => "response_format.json_schema.schema",
        "json_schema.name" => "response_format.json_schema.name",
        "reasoning.effort" => "reasoning_effort",
        "reasoning.budget_tokens" => "thinking.budget_tokens",
        "tool_choice.mode" => "tool_choice",
        _ => "",
    };
    if !whole.is_empty() {
        return whole.to_owned();
    }
    // The door passes unknown body fields on as extra fields.
    if let Some(key) = p.strip_prefix("extra_json.") {
        return key.to_owned();
    }
    if let Some(rest) = p.strip_prefix("inputs") {
        return format!("input{rest}");
    }
    if let (Some(rest), true) = (p.strip_prefix("tools["), p.ends_with("].name")) {
        return format!("tools[{}.function.name", rest.trim_end_matches(".name"));
    }
    p
}

impl From<DpError> for DoorError {
    /// The HTTP status, OpenAI's `error.type` and `error.code` of each
    /// error, by variant: never from its text.
    fn from(e: DpError) -> Self {
        const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;
        let mut headers = HeaderMap::new();
        if let Some(r) = e.retry_after().and_then(retry_after) {
            headers.insert(axum::http::header::RETRY_AFTER, r);
        }
        let invalid = (StatusCode::BAD_REQUEST, "invalid_request_error", None);
        let not_found = (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
        );
        let forbidden = (
            StatusCode::FORBIDDEN,
            "permission_error",
            Some("model_not_allowed"),
        );
        let unauthenticated = (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Some("invalid_api_key"),
        );
        let limited = (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Some("rate_limit_exceeded"),
        );
        // Nothing the request can change, an operator can: a disabled
        // model, no active member, an upstream account that cannot pay.
        let unavailable = (
            UNAVAILABLE,
            "service_unavailable",
            Some("model_unavailable"),
        );
        // The upstreams failed and none is due back soon.
        let failed = (
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            Some("upstreams_failed"),
        );
        let timeout = (StatusCode::GATEWAY_TIMEOUT, "timeout", Some("timeout"));
        let (status, kind, code) = match &e {
            DpError::InvalidField { field, problem } => {
                let param = public_param(field);
                let message = format!("{param} {problem}");
                return Self {
                    headers: Box::new(headers),
                    ..Self::invalid(Some(param), message)
                };
            }
            DpError::InvalidArgument(_) | DpError::Unsupported { .. } => invalid,
            DpError::ContextTooLong { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            DpError::NotFound(_) | DpError::NoMemberKnowsModel { .. } => not_found,
            DpError::FailedPrecondition(_) => unavailable,
            DpError::Forbidden(_) => forbidden,
            DpError::Unauthenticated(_) => unauthenticated,
            DpError::CallerLimit { .. } | DpError::QuotaExhausted { .. } | DpError::Busy { .. } => {
                limited
            }
            DpError::NotReady => (UNAVAILABLE, "service_unavailable", Some("not_ready")),
            // Every member failed: a retry hint means some are due back soon.
            DpError::AllCandidatesFailed {
                retry_after: Some(_),
                ..
            } => (
                UNAVAILABLE,
                "service_unavailable",
                Some("upstreams_unavailable"),
            ),
            DpError::AllCandidatesFailed {
                retry_after: None, ..
            }
            | DpError::AttemptCap { .. }
            | DpError::StreamBroken { .. }
            | DpError::StreamCut => failed,
            DpError::Deadline { .. } | DpError::StreamTimedOut(_) => timeout,
            DpError::Refused { refusal, .. } => match refusal {
                Refusal::BadRequest => invalid,
                Refusal::Unauthenticated => unauthenticated,
                Refusal::Forbidden => forbidden,
                Refusal::Billing | Refusal::Other => unavailable,
            },
        };
        Self {
            status,
            kind,
            code,
            param: (code == Some("model_not_found")).then(|| "model".to_owned()),
            message: e.to_string(),
            headers: Box::new(headers),
        }
    }
}

impl From<Unserved> for DoorError {
    /// The error, with the `x-switchyard-*` headers that go with it.
    fn from(u: Unserved) -> Self {
        let mut e = Self::from(u.error);
        e.headers.extend(*u.headers);
        e
    }
}

impl IntoResponse for DoorError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().extend(*self.headers);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_field_paths_read_as_openai_parameters() {
        for (grpc, openai) in [
            ("temperature", "temperature"),
            (
                "messages[1].parts[0].image.url",
                "messages[1].content[0].image_url.url",
            ),
            (
                "messages[2].parts[1].image.media_type",
                "messages[2].content[1].image_url.url",
            ),
            (
                "messages[0].parts[3].document.data",
                "messages[0].content[3].file.file_data",
            ),
            (
                "messages[0].parts[3].cache_control.ttl",
                "messages[0].content[3].cache_control.ttl",
            ),
            (
                "json_schema.schema_json",
                "response_format.json_schema.schema",
            ),
            ("reasoning.effort", "reasoning_effort"),
            ("tools[2].name", "tools[2].function.name"),
            ("inputs[4]", "input[4]"),
            ("inputs", "input"),
        ] {
            assert_eq!(public_param(grpc), openai, "{grpc}");
        }
    }

    fn mapped(e: DpError) -> (u16, &'static str, Option<&'static str>) {
        let e = DoorError::from(e);
        (e.status.as_u16(), e.kind, e.code)
    }

    fn reasons() -> Vec<crate::error::Reason> {
        vec![crate::error::Reason {
            member: "a/x (member 1)".into(),
            why: "the request is longer than the context".into(),
        }]
    }

    #[test]
    fn errors_map_to_what_openai_clients_expect_by_variant() {
        use std::time::Duration;
        let refused = |refusal| DpError::Refused {
            refusal,
            member: "a/x".into(),
            // Text an upstream echoed from the request decides nothing.
            message: "the request is longer than the context; this worker has not loaded".into(),
        };
        assert_eq!(mapped(DpError::InvalidArgument("x".into())).0, 400);
        assert_eq!(
            mapped(refused(Refusal::BadRequest)),
            (400, "invalid_request_error", None)
        );
        assert_eq!(
            mapped(DpError::ContextTooLong {
                model: "m".into(),
                reasons: reasons()
            }),
            (
                400,
                "invalid_request_error",
                Some("context_length_exceeded")
            )
        );
        assert_eq!(mapped(DpError::Unauthenticated("no key")).0, 401);
        assert_eq!(mapped(refused(Refusal::Unauthenticated)).0, 401);
        assert_eq!(mapped(DpError::Forbidden("x".into())).0, 403);
        assert_eq!(
            mapped(DpError::NotFound("x".into())),
            (404, "invalid_request_error", Some("model_not_found"))
        );
        assert_eq!(
            DoorError::from(DpError::NotFound("x".into()))
                .param
                .as_deref(),
            Some("model")
        );
        assert_eq!(
            mapped(DpError::Deadline {
                model: "m".into(),
                attempts: 2
            })
            .0,
            504
        );
        assert_eq!(
            mapped(DpError::AllCandidatesFailed {
                model: "m".into(),
                reasons: reasons(),
                retry_after: None
            }),
            (502, "upstream_error", Some("upstreams_failed"))
        );
        assert_eq!(
            mapped(DpError::NotReady),
            (503, "service_unavailable", Some("not_ready"))
        );
        assert_eq!(
            mapped(refused(Refusal::Billing)),
            (503, "service_unavailable", Some("model_unavailable"))
        );
        let e = DoorError::from(DpError::CallerLimit {
            message: "slow down".into(),
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(e.status.as_u16(), 429);
        assert_eq!(
            e.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let e = DoorError::from(DpError::AllCandidatesFailed {
            model: "m".into(),
            reasons: reasons(),
            retry_after: Some(Duration::from_millis(200)),
        });
        assert_eq!(
            (e.status.as_u16(), e.code),
            (503, Some("upstreams_unavailable"))
        );
        assert_eq!(
            e.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn a_wrong_field_is_named_as_the_openai_parameter() {
        let e = DoorError::from(DpError::InvalidField {
            field: "json_schema.schema_json".into(),
            problem: "is not valid JSON".into(),
        });
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
        assert_eq!(
            e.message,
            "response_format.json_schema.schema is not valid JSON"
        );
    }
}
