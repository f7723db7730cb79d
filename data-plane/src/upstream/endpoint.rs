//! Endpoints: a target with what every request to it sends the same — its
//! URLs and headers — built once per config load (per provider key, shared
//! by its members), so no request parses a URL or builds a header value.

use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use http_body_util::Full;
use url::Url;

use secrecy::{ExposeSecret, SecretString};

use super::client::Request;
use super::{Kind, Target, TraceHeaders, UpstreamError};

/// The Anthropic API version members are sent.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Where a request goes: a URL parsed once, or why it cannot be one (each
/// request to it then fails with that, a configuration error).
struct Dest(Result<Uri, String>);

impl Dest {
    fn new(base_url: &str, path: &str) -> Self {
        let text = join_url(base_url, path);
        let bad = || format!("the base URL {base_url:?} is not an http(s) URL with a host");
        let parsed = Url::parse(&text)
            .ok()
            .filter(|u| u.has_host() && matches!(u.scheme(), "http" | "https"))
            .and_then(|u| u.as_str().parse::<Uri>().ok());
        Self(parsed.ok_or_else(bad))
    }

    /// Nowhere: the mock sends nothing.
    fn none() -> Self {
        Self(Err("this member sends no HTTP requests".into()))
    }
}

/// What an upstream call is for.
#[derive(Clone, Copy, Debug)]
pub(super) enum Call {
    /// Chat (`chat/completions`, `messages`): unary or streaming.
    Chat {
        stream: bool,
    },
    Embeddings,
}

/// The URLs and headers of one provider key: the same for every member
/// that uses it.
pub struct Wire {
    chat: Dest,
    embeddings: Dest,
    /// Credential, fixed and extra headers, `content-type`; or why the
    /// member's configuration cannot be sent.
    unary: Result<HeaderMap, String>,
    /// The same with `accept: text/event-stream`.
    stream: Result<HeaderMap, String>,
}

impl Wire {
    pub fn new(
        kind: Kind,
        base_url: &str,
        credential: Option<&SecretString>,
        extra_headers: &[(String, String)],
    ) -> Self {
        let (chat, headers) = match kind {
            Kind::OpenAi => (
                "chat/completions",
                openai_headers(credential, extra_headers),
            ),
            Kind::Anthropic => ("messages", anthropic_headers(credential, extra_headers)),
            // The mock sends nothing.
            Kind::Mock => {
                return Self {
                    chat: Dest::none(),
                    embeddings: Dest::none(),
                    unary: Ok(HeaderMap::new()),
                    stream: Ok(HeaderMap::new()),
                };
            }
        };
        // Kept as the message: each request that cannot be sent fails with
        // its own `Config` error, as when the headers were built per request.
        let unary = headers.map_err(|e| match e {
            UpstreamError::Config(m) => m,
            other => other.to_string(),
        });
        let unary = unary.map(|mut h| {
            // A configured content-type (and accept) wins.
            h.entry(CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            h.entry(ACCEPT).or_insert(HeaderValue::from_static("*/*"));
            h
        });
        let stream = unary.clone().map(|mut h| {
            h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
            h
        });
        Self {
            chat: Dest::new(base_url, chat),
            embeddings: Dest::new(base_url, "embeddings"),
            unary,
            stream,
        }
    }

    /// The request for `call` carrying `body`, with the trace headers (they
    /// win over a member's extra headers).
    pub(super) fn request(
        &self,
        call: Call,
        body: Bytes,
        trace: &TraceHeaders,
    ) -> Result<Request, UpstreamError> {
        let (dest, headers) = match call {
            Call::Chat { stream: false } => (&self.chat, &self.unary),
            Call::Chat { stream: true } => (&self.chat, &self.stream),
            Call::Embeddings => (&self.embeddings, &self.unary),
        };
        let mut headers = headers.clone().map_err(UpstreamError::Config)?;
        let uri = dest.0.clone().map_err(UpstreamError::Config)?;
        trace.add_to(&mut headers);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        Ok(req)
    }
}

/// OpenAI's headers: the credential as a bearer token, then the extra headers.
pub(super) fn openai_headers(
    credential: Option<&SecretString>,
    extra_headers: &[(String, String)],
) -> Result<HeaderMap, UpstreamError> {
    let mut h = HeaderMap::new();
    if let Some(c) = credential {
        h.insert(
            AUTHORIZATION,
            secret_value(format!("Bearer {}", c.expose_secret()))?,
        );
    }
    add_extra_headers(&mut h, extra_headers)?;
    Ok(h)
}

/// Anthropic's headers: `x-api-key`, the API version, then the extra headers.
fn anthropic_headers(
    credential: Option<&SecretString>,
    extra_headers: &[(String, String)],
) -> Result<HeaderMap, UpstreamError> {
    let mut h = HeaderMap::new();
    if let Some(c) = credential {
        h.insert("x-api-key", secret_value(c.expose_secret().to_string())?);
    }
    h.insert(
        "anthropic-version",
        HeaderValue::from_static(ANTHROPIC_VERSION),
    );
    add_extra_headers(&mut h, extra_headers)?;
    Ok(h)
}

/// `{base}/{path}`, one slash between.
pub(super) fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// A header value holding a credential: never shown by Debug, never indexed.
pub(super) fn secret_value(value: String) -> Result<HeaderValue, UpstreamError> {
    let mut v = HeaderValue::try_from(value)
        .map_err(|_| UpstreamError::Config("credential is not a valid HTTP header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Adds configured headers, replacing same-named defaults. Values may hold
/// secrets (e.g. `api-key`), so they are marked sensitive and never reported.
pub(super) fn add_extra_headers(
    h: &mut HeaderMap,
    extra: &[(String, String)],
) -> Result<(), UpstreamError> {
    for (name, value) in extra {
        let bad = || UpstreamError::Config(format!("invalid extra header {name:?}"));
        let n = HeaderName::try_from(name.as_str()).map_err(|_| bad())?;
        let mut v = HeaderValue::try_from(value.as_str()).map_err(|_| bad())?;
        v.set_sensitive(true);
        h.insert(n, v);
    }
    Ok(())
}

/// A target and its prepared [`Wire`]: what a member is called through.
#[derive(Clone)]
pub struct Endpoint {
    target: Target,
    wire: Arc<Wire>,
}

impl Endpoint {
    /// A target with its own wire (a test's, or one built outside a config load).
    pub fn new(target: Target) -> Self {
        let wire = Wire::new(
            target.kind,
            &target.base_url,
            target.credential.as_ref(),
            &target.extra_headers,
        );
        Self::with_wire(target, Arc::new(wire))
    }

    /// A target on a wire prepared for its provider key.
    pub fn with_wire(target: Target, wire: Arc<Wire>) -> Self {
        Self { target, wire }
    }

    pub(super) fn wire(&self) -> &Wire {
        &self.wire
    }
}

impl Deref for Endpoint {
    type Target = Target;

    fn deref(&self) -> &Target {
        &self.target
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.target.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue};
    use http_body_util::BodyExt as _;
    use secrecy::SecretString;

    use super::super::openai::tests::target;
    use super::*;

    fn trace() -> TraceHeaders {
        let mut t = TraceHeaders::default();
        t.push(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static("00-1-2-01"),
        );
        t
    }

    fn sent(e: &Endpoint, call: Call) -> Result<Request, UpstreamError> {
        e.wire().request(call, Bytes::from_static(b"{}"), &trace())
    }

    fn body_of(r: Request) -> Bytes {
        futures::executor::block_on(r.into_body().collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }

    #[test]
    fn requests_carry_the_prepared_url_headers_and_trace() {
        let e = Endpoint::new(Target {
            extra_headers: vec![
                ("traceparent".into(), "mine".into()),
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
            ],
            ..target("http://h:1/v1/")
        });
        let r = sent(&e, Call::Chat { stream: true }).expect("request");
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri(), "http://h:1/v1/chat/completions");
        let h = r.headers();
        assert_eq!(h["authorization"], "Bearer sk-test");
        assert!(h["authorization"].is_sensitive());
        // The trace wins over an extra header; a configured content-type over the default.
        assert_eq!(h["traceparent"], "00-1-2-01");
        assert_eq!(h["content-type"], "application/json; charset=utf-8");
        assert_eq!(h["accept"], "text/event-stream");
        assert_eq!(h.get_all("accept").iter().count(), 1);
        assert_eq!(body_of(r), &b"{}"[..]);
        let r = sent(&e, Call::Embeddings).expect("request");
        assert_eq!(r.uri(), "http://h:1/v1/embeddings");
        assert_eq!(r.headers()["accept"], "*/*");
        let anthropic = Endpoint::new(Target {
            kind: Kind::Anthropic,
            ..target("https://api.anthropic.com/v1")
        });
        let r = sent(&anthropic, Call::Chat { stream: false }).expect("request");
        assert_eq!(r.uri(), "https://api.anthropic.com/v1/messages");
        let h = r.headers();
        assert_eq!(h["x-api-key"], "sk-test");
        assert_eq!(h["anthropic-version"], "2023-06-01");
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn what_cannot_be_sent_fails_each_request_as_before() {
        let bad_key = Endpoint::new(Target {
            credential: Some(SecretString::from("sk\nx")),
            ..target("http://h/v1")
        });
        for _ in 0..2 {
            let err = sent(&bad_key, Call::Chat { stream: false }).expect_err("refused");
            assert!(
                matches!(&err, UpstreamError::Config(m) if m == "credential is not a valid HTTP header value"),
                "{err:?}"
            );
        }
        // A base URL that is no http(s) URL fails each request with a
        // configuration error naming it (no bench: the member is misconfigured).
        for base in ["no scheme", "mailto:x", "ftp://h/v1"] {
            let e = Endpoint::new(target(base));
            let err = sent(&e, Call::Chat { stream: false }).expect_err("refused");
            assert!(
                matches!(&err, UpstreamError::Config(m) if m.contains(&format!("{base:?}"))),
                "{err:?}"
            );
        }
    }
}
