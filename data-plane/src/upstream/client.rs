//! The HTTP client the adapters send with: hyper's pooled client over
//! rustls (HTTP/1.1, and HTTP/2 where the upstream offers it by ALPN),
//! taking requests whose URI and headers were prepared at config load
//! (`endpoint`) — no URL is parsed and no header built per request.
//!
//! No redirects (a redirect would carry the credential headers to another
//! host, and turn a POST into a GET: an upstream that redirects is
//! misconfigured) and no overall timeout of its own: failover decides both,
//! per attempt. It resends only what the upstream provably never processed:
//! an HTTP/2 stream refused (`REFUSED_STREAM`) or cut by a graceful GOAWAY,
//! at most twice. Dead connections are found by TCP keepalive, a TCP user
//! timeout and HTTP/2 pings, so a black-holed pooled connection costs
//! seconds, not the kernel's quarter of an hour. `HTTP(S)_PROXY` is not
//! honoured (the worker warns at start when it is set).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use http::Uri;
use http_body_util::{BodyDataStream, BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::UpstreamError;

/// A request as the adapters send it.
pub type Request = http::Request<Full<Bytes>>;
/// An answer, its body still to be read.
pub type Response = http::Response<Incoming>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// TCP keepalive: first probe after this much silence, then every as long.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 3;
/// Unacknowledged data older than this closes the connection (Linux).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings: every this long, a connection answering none within
/// `H2_PING_TIMEOUT` is closed.
const H2_PING_EVERY: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Resends of a request the upstream refused unprocessed.
const MAX_RESENDS: usize = 2;

/// One pooled client (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct Client {
    inner: Pooled<Bounded, Full<Bytes>>,
}

impl Client {
    /// A client whose connections (DNS, TCP and TLS together) must be made
    /// within `connect`.
    pub fn new(connect: Duration) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(KEEPALIVE));
        tcp.set_keepalive_interval(Some(KEEPALIVE));
        tcp.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
        #[cfg(target_os = "linux")]
        tcp.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        // `https` URLs go through the TLS connector wrapping this one.
        tcp.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let inner = Pooled::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Some(H2_PING_EVERY))
            .http2_keep_alive_timeout(H2_PING_TIMEOUT)
            .build(Bounded {
                inner: https,
                limit: connect,
            });
        Self { inner }
    }

    /// Sends the request `make` builds (again, for a resend); the answer
    /// once its head arrived.
    pub async fn send(
        &self,
        make: impl Fn() -> Result<Request, UpstreamError>,
    ) -> Result<Response, UpstreamError> {
        let mut resends = 0;
        loop {
            match self.inner.request(make()?).await {
                Ok(resp) => return Ok(resp),
                Err(e) if resends < MAX_RESENDS && unprocessed(&e) => resends += 1,
                Err(e) => {
                    let text = described(&e);
                    return Err(if e.is_connect() {
                        UpstreamError::Connect(text)
                    } else {
                        UpstreamError::Io(text)
                    });
                }
            }
        }
    }
}

/// True when the upstream said it did not process the request: its HTTP/2
/// stream was refused, or the connection was closed gracefully (GOAWAY
/// with no error) before the stream was taken. Safe to send again.
fn unprocessed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)));
        }
        cause = c.source();
    }
    false
}

/// The TLS connector, its whole connect (DNS, TCP, TLS) bounded by `limit`.
#[derive(Clone)]
struct Bounded {
    inner: HttpsConnector<HttpConnector>,
    limit: Duration,
}

type Connected = <HttpsConnector<HttpConnector> as tower::Service<Uri>>::Response;

impl tower::Service<Uri> for Bounded {
    type Response = Connected;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Connected, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(done) => done,
                Err(_) => Err(format!(
                    "no connection within the connect timeout ({} ms: DNS, TCP and TLS)",
                    limit.as_millis()
                )
                .into()),
            }
        })
    }
}

/// Says at start that a proxy set in the environment is not used: upstream
/// calls go straight to the members' base URLs.
// Not configuration: it looks for what other HTTP clients would honour, to
// say that this one does not.
#[allow(clippy::disallowed_methods)]
pub fn warn_about_proxy_env() {
    let set: Vec<&str> = [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .into_iter()
    .filter(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
    .collect();
    if !set.is_empty() {
        tracing::warn!(variables = %set.join(","), "a proxy is set in the environment but upstream calls do not use proxies: they go straight to each member's base URL");
    }
}

/// TLS to upstreams: the web PKI roots (the providers' public
/// certificates), over the ring provider the rest of the worker uses.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the default versions; this is never taken.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    }
}

/// An error and its causes, as one line ("client error (Connect): tcp
/// connect error: Connection refused (os error 111)").
fn described(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn body_error(e: &hyper::Error) -> UpstreamError {
    UpstreamError::Io(described(e))
}

/// The whole body of an answer.
pub async fn whole(resp: Response) -> Result<Bytes, UpstreamError> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|e| body_error(&e))?
        .to_bytes())
}

/// The body of an answer, at most about `limit` bytes of it (an error
/// body: read for its message, never in full when it is huge). A body
/// that fails partway is what arrived.
pub async fn head_of(resp: Response, limit: usize) -> Vec<u8> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    out
}

/// The body of an answer as a stream of byte chunks.
pub fn chunks(resp: Response) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send {
    BodyDataStream::new(resp.into_body()).map(|r| r.map_err(|e| body_error(&e)))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tokio::spawn for the silent server
mod tests {
    use super::*;

    /// The connect timeout bounds TLS too: a server that accepts the TCP
    /// connection and then says nothing fails the request as a connect
    /// error at the connect timeout (not at the first-byte timeout).
    #[tokio::test]
    async fn a_tls_handshake_that_never_ends_is_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let client = Client::new(Duration::from_millis(200));
        let uri: Uri = format!("https://{addr}/v1/chat/completions")
            .parse()
            .expect("uri");
        let req = || {
            let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = uri.clone();
            Ok(req)
        };
        let started = std::time::Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), client.send(req))
            .await
            .expect("bounded by the connect timeout")
            .expect_err("no TLS server there");
        assert!(
            matches!(&err, UpstreamError::Connect(m) if m.contains("connect timeout")),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        held.abort();
    }
}
