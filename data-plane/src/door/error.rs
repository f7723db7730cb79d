//! The door's errors: OpenAI's JSON error shape with the HTTP status a
//! client (and its SDK's retry logic) expects, mapped from the one gRPC
//! status the engine gives, in one place.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tonic::Code;

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

/// Seconds to wait, from gRPC's retry pushback (rounded up, at least 1).
fn retry_after(status: &tonic::Status) -> Option<HeaderValue> {
    let ms: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
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

/// The field an INVALID_ARGUMENT names (a `google.rpc.BadRequest`
/// violation) and what is wrong with it.
fn violation(s: &tonic::Status) -> Option<(String, String)> {
    use tonic_types::StatusExt as _;
    let details = s.get_error_details();
    let v = details.bad_request()?.field_violations.first()?;
    Some((public_param(&v.field), v.description.clone()))
}

impl From<tonic::Status> for DoorError {
    fn from(s: tonic::Status) -> Self {
        if s.code() == Code::InvalidArgument
            && let Some((param, problem)) = violation(&s)
        {
            let mut e = Self::invalid(Some(param.clone()), format!("{param} {problem}"));
            super::headers::copy_switchyard(s.metadata(), &mut e.headers);
            return e;
        }
        let retry = retry_after(&s);
        let (status, kind, code) = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                s.message()
                    .contains("longer than the context")
                    .then_some("context_length_exceeded"),
            ),
            Code::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                Some("invalid_api_key"),
            ),
            Code::PermissionDenied => (
                StatusCode::FORBIDDEN,
                "permission_error",
                Some("model_not_allowed"),
            ),
            Code::NotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout", Some("timeout")),
            Code::ResourceExhausted => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            // Every member failed: a retry hint means some are due back soon
            // (503, Retry-After); without one the upstreams simply failed (502).
            Code::Unavailable if retry.is_some() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("upstreams_unavailable"),
            ),
            Code::Unavailable if s.message().starts_with("this worker has not loaded") => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("not_ready"),
            ),
            Code::Unavailable => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                Some("upstreams_failed"),
            ),
            // A disabled model, no active member, an upstream account that
            // cannot pay: nothing the request can change, an operator can.
            Code::FailedPrecondition => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("model_unavailable"),
            ),
            Code::Cancelled => (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                "cancelled",
                None,
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        };
        let mut headers = HeaderMap::new();
        super::headers::copy_switchyard(s.metadata(), &mut headers);
        if let Some(r) = retry {
            headers.insert(axum::http::header::RETRY_AFTER, r);
        }
        Self {
            status,
            kind,
            code,
            param: (code == Some("model_not_found")).then(|| "model".to_owned()),
            message: s.message().to_owned(),
            headers: Box::new(headers),
        }
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

    fn mapped(s: tonic::Status) -> (u16, &'static str, Option<&'static str>) {
        let e = DoorError::from(s);
        (e.status.as_u16(), e.kind, e.code)
    }

    #[test]
    fn statuses_map_to_what_openai_clients_expect() {
        use tonic::Status;
        assert_eq!(mapped(Status::invalid_argument("x")).0, 400);
        assert_eq!(mapped(Status::unauthenticated("x")).0, 401);
        assert_eq!(mapped(Status::permission_denied("x")).0, 403);
        assert_eq!(
            mapped(Status::not_found("x")),
            (404, "invalid_request_error", Some("model_not_found"))
        );
        assert_eq!(mapped(Status::deadline_exceeded("x")).0, 504);
        assert_eq!(mapped(Status::unavailable("every candidate failed")).0, 502);
        let mut s = Status::resource_exhausted("slow down");
        s.metadata_mut()
            .insert("grpc-retry-pushback-ms", "1500".parse().expect("ascii"));
        let e = DoorError::from(s);
        assert_eq!(e.status.as_u16(), 429);
        assert_eq!(
            e.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"2"[..])
        );
        let mut s = Status::unavailable("every candidate failed");
        s.metadata_mut()
            .insert("grpc-retry-pushback-ms", "200".parse().expect("ascii"));
        let e = DoorError::from(s);
        assert_eq!(e.status.as_u16(), 503);
        assert_eq!(
            e.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(
            DoorError::from(Status::invalid_argument(
                "the request is longer than the context of every member of 'x'"
            ))
            .code,
            Some("context_length_exceeded")
        );
    }
}
