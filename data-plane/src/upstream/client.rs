//! The HTTP client the adapters send with: hyper's pooled client over
//! rustls (HTTP/1.1, and HTTP/2 where the upstream offers it by ALPN),
//! taking requests whose URI and headers were prepared at config load
//! (`endpoint`) — no URL is parsed and no header built per request.
//!
//! No redirects (a redirect would carry the credential headers to another
//! host, and turn a POST into a GET: an upstream that redirects is
//! misconfigured), no retries and no overall timeout of its own: failover
//! decides all three, per attempt.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
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

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);
/// Idle connections kept per host.
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// One pooled client (cheap to clone: the pool is shared).
#[derive(Clone)]
pub struct Client {
    inner: Pooled<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// A client whose connections must be made within `connect`.
    pub fn new(connect: Duration) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(connect));
        tcp.set_nodelay(true);
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
            .build(https);
        Self { inner }
    }

    /// Sends `req`; the answer once its head arrived.
    pub async fn send(&self, req: Request) -> Result<Response, UpstreamError> {
        self.inner.request(req).await.map_err(|e| {
            let text = described(&e);
            if e.is_connect() {
                UpstreamError::Connect(text)
            } else {
                UpstreamError::Io(text)
            }
        })
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
