//! Attempt: one try of one member, bounded by the provider's timeouts —
//! the whole answer (unary), or the first chunk (streams: failover is
//! allowed until it arrives, then the stream is committed).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use crate::model::Candidate;
use crate::signals::{Carry, Hold};
use crate::upstream::{
    self, ChatRequest, Chunk, ChunkStream, Completion, EmbedRequest, Embeddings, Prepared,
    ResponseMeta, TraceHeaders, UpstreamError,
};

/// An open stream: its first chunk of content is in hand, so it is committed.
pub struct OpenStream {
    /// The upstream's id, model and fingerprint, as it said before content.
    pub meta: ResponseMeta,
    pub first: Chunk,
    pub rest: ChunkStream,
    /// The attempt's in-flight hold: the stream counts at its member until
    /// the pump ends it (set by failover when the stream is committed).
    pub hold: Option<Hold>,
}

impl Carry for OpenStream {
    const STREAM: bool = true;
    fn carry(&mut self, hold: Hold) {
        hold.first_byte();
        self.hold = Some(hold);
    }
}

impl upstream::Rated for OpenStream {
    fn rate(&self) -> Option<upstream::RateHeaders> {
        self.meta.rate
    }
}

/// Asks `c` for embeddings, within the provider's request timeout.
pub async fn embed(
    http: &HttpClients,
    c: Arc<Candidate>,
    req: &EmbedRequest,
    body: Arc<Prepared>,
    trace: TraceHeaders,
) -> Result<Embeddings, UpstreamError> {
    let client = http.for_connect_timeout(c.target.timeouts.connect);
    let t = &c.target;
    let call = upstream::embed(&client, t, req, &body, &trace);
    tokio::time::timeout(t.timeouts.total, call)
        .await
        .unwrap_or(Err(UpstreamError::RequestTimeout))
}

/// Sends `req` to `c` and waits for the whole answer, within the provider's request timeout.
pub async fn complete(
    http: &HttpClients,
    c: Arc<Candidate>,
    req: &ChatRequest,
    body: Arc<Prepared>,
    trace: TraceHeaders,
) -> Result<Completion, UpstreamError> {
    let client = http.for_connect_timeout(c.target.timeouts.connect);
    let t = &c.target;
    tokio::time::timeout(
        t.timeouts.total,
        upstream::complete(&client, t, req, &body, &trace),
    )
    .await
    .unwrap_or(Err(UpstreamError::RequestTimeout))
}

/// Opens a stream to `c` and peeks its first chunk, within the first-byte timeout.
pub async fn open_stream(
    http: &HttpClients,
    c: Arc<Candidate>,
    req: &ChatRequest,
    body: Arc<Prepared>,
    trace: TraceHeaders,
) -> Result<OpenStream, UpstreamError> {
    let client = http.for_connect_timeout(c.target.timeouts.connect);
    let t = &c.target;
    let open = async {
        let mut s = upstream::stream(&client, t, req, &body, &trace).await?;
        let mut meta = ResponseMeta::default();
        loop {
            match s.next().await {
                // What the upstream says of itself commits nothing.
                Some(Ok(Chunk::Meta(m))) => {
                    // The headers' rate leads the stream; the body's meta follows.
                    let rate = m.rate.or(meta.rate);
                    meta = ResponseMeta { rate, ..m };
                }
                Some(Ok(first)) => {
                    return Ok(OpenStream {
                        meta,
                        first,
                        rest: s,
                        hold: None,
                    });
                }
                Some(Err(e)) => return Err(e),
                None => return Err(UpstreamError::Truncated),
            }
        }
    };
    tokio::time::timeout(t.timeouts.first_byte, open)
        .await
        .unwrap_or(Err(UpstreamError::FirstByteTimeout))
}

/// Pooled HTTP clients, one per distinct provider connect timeout (set per
/// client), kept across config changes so connection pools survive them.
/// Clients make no retries of their own and have no overall timeout:
/// failover decides both, per attempt.
#[derive(Default)]
pub struct HttpClients {
    clients: std::sync::Mutex<std::collections::HashMap<Duration, upstream::Client>>,
}

impl HttpClients {
    pub fn for_connect_timeout(&self, connect: Duration) -> upstream::Client {
        let mut map = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(connect)
            .or_insert_with(|| upstream::Client::new(connect))
            .clone()
    }
}
