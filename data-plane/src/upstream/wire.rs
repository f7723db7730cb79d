//! HTTP and SSE plumbing shared by the wire formats: sending (URLs and
//! headers come prepared: `endpoint`) with status checks, the unary body
//! read and the SSE decode loop.

use std::collections::VecDeque;

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::client::{self, Client, Response};
use super::endpoint::Call;
#[cfg(test)]
pub(super) use super::endpoint::join_url;
use super::{
    Chunk, ChunkStream, Endpoint, RateHeaders, ResponseMeta, Target, TraceHeaders, UpstreamError,
    clip_body, retry_hint,
};

/// POSTs `body` (a unary chat or embeddings call) and returns the whole
/// response body and its rate-limit headers.
pub(super) async fn post_unary(
    http: &Client,
    t: &Endpoint,
    call: Call,
    body: &Bytes,
    trace: &TraceHeaders,
) -> Result<(Bytes, Option<RateHeaders>), UpstreamError> {
    let req = || t.wire().request(call, body.clone(), trace);
    unary_body(t, http.send(req)).await
}

/// POSTs `body` asking for SSE; returns once the upstream accepted it
/// (within the first-byte timeout), decoding events with `decoder`.
pub(super) async fn post_stream<D: SseDecoder>(
    http: &Client,
    t: &Endpoint,
    body: &Bytes,
    trace: &TraceHeaders,
    decoder: D,
) -> Result<ChunkStream, UpstreamError> {
    let call = Call::Chat { stream: true };
    let req = || t.wire().request(call, body.clone(), trace);
    let resp = tokio::time::timeout(t.timeouts.first_byte, send_checked(t, http.send(req)))
        .await
        .map_err(|_| UpstreamError::FirstByteTimeout)??;
    // The headers arrive before the body: the rate they tell leads the stream.
    let rate = rate_of(&resp);
    let events = decode_sse(client::chunks(resp), decoder);
    Ok(match rate {
        Some(rate) => {
            let meta = Chunk::Meta(ResponseMeta {
                rate: Some(rate),
                ..ResponseMeta::default()
            });
            futures::stream::once(async move { Ok(meta) })
                .chain(events)
                .boxed()
        }
        None => events,
    })
}

/// Sends; a non-2xx status becomes `Http` with the upstream's message.
pub(super) async fn send_checked(
    t: &Target,
    sent: impl Future<Output = Result<Response, UpstreamError>>,
) -> Result<Response, UpstreamError> {
    let resp = sent.await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = retry_hint(resp.headers(), status.as_u16());
    let rate = rate_of(&resp).map(Box::new);
    let body = client::head_of(resp, 64 * 1024).await;
    // Masked before anything is cut from it, so no part of an echoed key survives.
    let text = mask_secret(t, &String::from_utf8_lossy(&body));
    let json = serde_json::from_str::<Value>(&text).ok();
    let code = json.as_ref().and_then(error_code);
    let message = match json.as_ref().and_then(error_in) {
        Some(m) => m,
        None if text.trim().is_empty() => {
            status.canonical_reason().unwrap_or("no body").to_string()
        }
        None => text,
    };
    Err(UpstreamError::Http {
        status: status.as_u16(),
        message: scrub(t, &message),
        code,
        retry_after,
        rate,
    })
}

/// The rate-limit headers of an answer, if it carried any.
fn rate_of(resp: &Response) -> Option<RateHeaders> {
    super::ratelimit::read(resp.headers(), std::time::SystemTime::now())
}

/// Sends; the response headers must arrive within `first_byte`. The body
/// read is bounded by the caller's per-attempt total timeout.
async fn unary_body(
    t: &Target,
    sent: impl Future<Output = Result<Response, UpstreamError>>,
) -> Result<(Bytes, Option<RateHeaders>), UpstreamError> {
    let resp = tokio::time::timeout(t.timeouts.first_byte, send_checked(t, sent))
        .await
        .map_err(|_| UpstreamError::FirstByteTimeout)??;
    let rate = rate_of(&resp);
    let body = client::whole(resp).await?;
    Ok((body, rate))
}

/// Clips an upstream message and masks the credential should it be echoed.
pub(super) fn scrub(t: &Target, message: &str) -> String {
    clip_body(&mask_secret(t, message))
}

/// `message` with the target's credential (and extra header values), where
/// they appear, replaced by `*****`, even where a clip cut one short.
pub(crate) fn mask_secret(t: &Target, message: &str) -> String {
    // The credential, and extra header values long enough to be secrets
    // (`api-key: …`): none may come back in an error.
    let secrets = t
        .credential
        .iter()
        .map(|c| c.expose_secret())
        .filter(|c| !c.is_empty())
        .chain(
            t.extra_headers
                .iter()
                .map(|(_, v)| v.as_str())
                .filter(|v| v.len() >= 8),
        );
    let mut out = message.to_owned();
    for secret in secrets {
        out = out.replace(secret, "*****");
        // A message clipped inside an echoed secret ends with its prefix.
        if let Some(body) = out.strip_suffix('…') {
            let cut = (4..secret.len())
                .rev()
                .find(|&n| secret.is_char_boundary(n) && body.ends_with(&secret[..n]));
            if let Some(n) = cut {
                out = format!("{}*****…", &body[..body.len() - n]);
            }
        }
    }
    out
}

pub(super) fn parse_json(body: &[u8]) -> Result<Value, UpstreamError> {
    serde_json::from_slice(body).map_err(|e| UpstreamError::Protocol(format!("invalid JSON: {e}")))
}

/// The message of an `{"error": ...}` object (OpenAI and Anthropic shapes), if any.
pub(super) fn error_in(v: &Value) -> Option<String> {
    v.get("error").filter(|e| !e.is_null()).map(error_message)
}

/// The message of an answer's `error` field read raw (typed answers keep it
/// so: it is rare), as [`error_in`] reads it.
pub(super) fn error_of(raw: Option<&serde_json::value::RawValue>) -> Option<String> {
    let e = serde_json::from_str::<Value>(raw?.get()).ok()?;
    (!e.is_null()).then(|| error_message(&e))
}

/// `error.message`, or the error itself when it is a string, or its JSON.
fn error_message(e: &Value) -> String {
    let text = e.get("message").and_then(Value::as_str).or(e.as_str());
    clip_body(&text.map_or_else(|| e.to_string(), str::to_string))
}

/// The provider's error code (OpenAI `error.code`) or type (`error.type`,
/// Anthropic's `not_found_error`, `rate_limit_error`, ...), short and plain.
pub(super) fn error_code(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    [e.get("code"), e.get("type")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|c| !c.is_empty() && c.len() <= 64)
        .map(str::to_owned)
}

/// The message of an SSE error event's data, JSON or not.
pub(super) fn event_message(data: &str) -> String {
    let v = serde_json::from_str::<Value>(data).ok();
    v.and_then(|v| error_in(&v))
        .unwrap_or_else(|| clip_body(data))
}

/// An f32 as the decimal it was written as (`0.7`, not `0.699999988079071`).
pub(super) fn float(v: f32) -> Value {
    v.to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

pub(super) fn sat(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Per-format SSE state machine driven by [`decode_sse`].
pub(super) trait SseDecoder: Send + 'static {
    /// Handles one event, pushing chunks to `out`; `Ok(true)` when the
    /// upstream said it is done (no more events are read).
    fn event(&mut self, ev: &Event, out: &mut Vec<Chunk>) -> Result<bool, UpstreamError>;
    /// The final item, once done or when the body ended: `Finish` or `Truncated`.
    fn end(&mut self) -> Result<Chunk, UpstreamError>;
}

/// Turns a body into chunks that end with `Ok(Finish)` or exactly one error.
pub(super) fn decode_sse<S, B, D>(body: S, decoder: D) -> ChunkStream
where
    S: Stream<Item = Result<B, UpstreamError>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    D: SseDecoder,
{
    let state = (
        Box::pin(body.eventsource()),
        decoder,
        VecDeque::new(),
        false,
    );
    futures::stream::unfold(
        state,
        |(mut events, mut dec, mut queue, mut done)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    return Some((item, (events, dec, queue, done)));
                }
                if done {
                    return None;
                }
                let mut out = Vec::new();
                let result = match events.next().await {
                    None => Ok(true),
                    Some(Ok(ev)) => dec.event(&ev, &mut out),
                    Some(Err(EventStreamError::Transport(e))) => Err(e),
                    Some(Err(e)) => Err(UpstreamError::Protocol(format!("bad event stream: {e}"))),
                };
                queue.extend(out.into_iter().map(Ok));
                match result {
                    Ok(false) => continue,
                    Ok(true) => queue.push_back(dec.end()),
                    Err(e) => queue.push_back(Err(e)),
                }
                done = true;
            }
        },
    )
    .boxed()
}

/// Merges a request's `extra` fields into a body object, last: its keys win.
pub(super) fn merge_extra(
    body: &mut serde_json::Map<String, Value>,
    extra: Option<&serde_json::Map<String, Value>>,
) {
    if let Some(extra) = extra {
        body.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}
