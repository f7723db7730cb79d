//! What the door refuses before a handler runs, and the shape of refusals
//! that come from the HTTP stack rather than a handler.
//!
//! - A browser's cross-origin request (one with an `Origin` header) is
//!   refused (403) unless `--http-cors-origin` lists its origin; for listed
//!   origins tower-http's `CorsLayer` answers preflights and adds the CORS
//!   headers. So a web page cannot make a worker (a `--no-auth` one above
//!   all) spend provider keys with a form or `text/plain` POST.
//! - A POST must say `Content-Type: application/json` (415 otherwise).
//! - Any error response with an empty body (a 405, an extractor's
//!   rejection, …) gets OpenAI's JSON error body.

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

use super::error::DoorError;

/// The origins a browser may call the door from (`--http-cors-origin`);
/// shared, so the per-request origin check clones a pointer, not the list.
#[derive(Clone, Debug, Default)]
pub struct Origins(std::sync::Arc<[HeaderValue]>);

impl Origins {
    /// Parses `scheme://host[:port]` origins as browsers send them.
    pub fn parse(given: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for o in given.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            let url = url::Url::parse(o)
                .map_err(|e| format!("--http-cors-origin '{o}' is not an origin: {e}"))?;
            let origin = url.origin().ascii_serialization();
            if !url.has_host() || origin != o.trim_end_matches('/') {
                return Err(format!(
                    "--http-cors-origin '{o}' is not an origin; give scheme://host[:port], like https://app.example.com"
                ));
            }
            out.push(
                HeaderValue::from_str(&origin)
                    .map_err(|_| format!("--http-cors-origin '{o}' is not a header value"))?,
            );
        }
        Ok(Self(out.into()))
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.0.contains(origin)
    }

    /// CORS for the listed origins (the origin check refuses the rest).
    pub fn cors(&self) -> CorsLayer {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.0.to_vec()))
            .allow_methods(AllowMethods::list([Method::GET, Method::POST]))
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::any())
            .max_age(std::time::Duration::from_secs(600))
    }
}

/// Refuses a request from a browser page of an origin not listed.
pub async fn check_origin(origins: Origins, req: Request, next: Next) -> Response {
    if let Some(origin) = req.headers().get(header::ORIGIN)
        && !origins.allows(origin)
    {
        return DoorError {
            status: StatusCode::FORBIDDEN,
            kind: "permission_error",
            code: Some("origin_not_allowed"),
            ..DoorError::invalid(
                None,
                "cross-origin requests from this origin are refused; an operator may allow it with --http-cors-origin",
            )
        }
        .into_response();
    }
    next.run(req).await
}

/// Is `v` JSON's media type (parameters such as `charset` aside)?
fn is_json(v: &HeaderValue) -> bool {
    v.to_str().is_ok_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// A POST body must be declared JSON.
pub async fn require_json(req: Request, next: Next) -> Response {
    if req.method() == Method::POST {
        let declared = req.headers().get(header::CONTENT_TYPE);
        if !declared.is_some_and(is_json) {
            let got = declared
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| "none".to_owned(), |v| format!("'{}'", clip(v)));
            return DoorError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: Some("unsupported_media_type"),
                ..DoorError::invalid(
                    None,
                    format!(
                        "send the body as JSON with Content-Type: application/json (got {got})"
                    ),
                )
            }
            .into_response();
        }
    }
    next.run(req).await
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// An error response without a body gets OpenAI's error body, saying what
/// the status means.
pub async fn error_body(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error())
        || resp.body().size_hint().exact() != Some(0)
    {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let (message, code) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "this endpoint does not take that method; POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models".to_owned(),
            "method_not_allowed",
        ),
        StatusCode::LENGTH_REQUIRED => (
            "the body needs a Content-Length or chunked transfer encoding".to_owned(),
            "length_required",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("the request body is too large".to_owned(), "request_too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "send the body as JSON with Content-Type: application/json".to_owned(),
            "unsupported_media_type",
        ),
        s => (
            s.canonical_reason().unwrap_or("the request was refused").to_lowercase(),
            "invalid_request",
        ),
    };
    let err = DoorError {
        status,
        kind: if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        },
        code: Some(code),
        ..DoorError::invalid(None, message)
    };
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let o = Origins::parse(&[
            "https://app.example.com".into(),
            " http://localhost:3000/ ".into(),
        ])
        .expect("origins");
        assert!(o.allows(&HeaderValue::from_static("https://app.example.com")));
        assert!(o.allows(&HeaderValue::from_static("http://localhost:3000")));
        assert!(!o.allows(&HeaderValue::from_static("https://evil.example")));
        for bad in ["*", "app.example.com", "https://app.example.com/path"] {
            assert!(Origins::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_is_the_media_type_whatever_its_parameters() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
        ] {
            assert!(is_json(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            assert!(!is_json(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
