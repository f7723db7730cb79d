//! One request of each kind, timed: straight to the fake upstream (HTTP, the
//! `direct` baseline) or through a worker (gRPC, or its HTTP door), plus
//! ListModels look-ups.

use std::sync::Arc;

use futures::StreamExt as _;
use serde_json::Value;
use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use crate::stats::micros;

pub type Client = pb::inference_client::InferenceClient<tonic::transport::Channel>;

/// An OpenAI chat body for `model`, 16 tokens at most.
fn chat_body(model: &str, stream: bool) -> String {
    let stream = if stream { r#","stream":true"# } else { "" };
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}],"max_tokens":16{stream}}}"#)
}

/// What every request needs: HTTP client and URL of the fake, gRPC client of one worker.
#[derive(Clone)]
pub struct Ctx {
    pub http: reqwest::Client,
    pub url: String,
    pub grpc: Client,
}

impl Ctx {
    /// The same fake, another worker.
    pub fn for_worker(&self, grpc: Client) -> Arc<Ctx> {
        Arc::new(Ctx { http: self.http.clone(), url: self.url.clone(), grpc })
    }
}

/// A scenario's request function: `f(ctx)` on a shared context.
pub fn with<F, Fut>(ctx: &Arc<Ctx>, f: F) -> impl Fn() -> Fut + Clone + Send + Sync + 'static
where
    F: Fn(Arc<Ctx>) -> Fut + Clone + Send + Sync + 'static,
{
    let ctx = Arc::clone(ctx);
    move || f(Arc::clone(&ctx))
}

/// POSTs `body` to `url`; `who` names the target in errors ("direct", "door").
async fn post(http: &reqwest::Client, url: &str, who: &str, body: String) -> Result<reqwest::Response, String> {
    let resp = http.post(url).header("content-type", "application/json").body(body).send().await;
    let resp = resp.map_err(|e| format!("{who}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{who}: HTTP {}", resp.status()));
    }
    Ok(resp)
}

pub async fn direct_unary(ctx: Arc<Ctx>) -> Result<u64, String> {
    let t = Instant::now();
    post(&ctx.http, &ctx.url, "direct", chat_body("m1", false))
        .await?
        .bytes()
        .await
        .map_err(|e| format!("direct body: {e}"))?;
    Ok(micros(t.elapsed()))
}

/// Time to the first SSE event carrying non-empty `choices[0].delta.content`; requires `[DONE]`.
pub async fn direct_stream(ctx: Arc<Ctx>) -> Result<u64, String> {
    sse_stream(&ctx.http, &ctx.url, "direct", "m1").await
}

/// A chat completion through a worker's HTTP door (`url`: its
/// `/v1/chat/completions`) on pool `model`; checks the answer has content.
pub async fn door_unary(http: &reqwest::Client, url: &str, model: &str) -> Result<u64, String> {
    let t = Instant::now();
    let body = post(http, url, "door", chat_body(model, false)).await?.bytes().await;
    let body = body.map_err(|e| format!("door body: {e}"))?;
    let us = micros(t.elapsed());
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    if v["choices"][0]["message"]["content"].as_str().is_none_or(str::is_empty) {
        return Err(format!("door: no content in {}", String::from_utf8_lossy(&body)));
    }
    Ok(us)
}

/// The same, streamed: time to the first content event; requires `[DONE]`.
pub async fn door_stream(http: &reqwest::Client, url: &str, model: &str) -> Result<u64, String> {
    sse_stream(http, url, "door", model).await
}

/// `stream: true` to `url`: time to the first SSE event carrying non-empty
/// `choices[0].delta.content`; requires `[DONE]`.
async fn sse_stream(http: &reqwest::Client, url: &str, who: &str, model: &str) -> Result<u64, String> {
    let t = Instant::now();
    let mut body = post(http, url, who, chat_body(model, true)).await?.bytes_stream();
    let (mut buf, mut scanned, mut first) = (Vec::<u8>::new(), 0usize, None);
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.map_err(|e| format!("{who} stream body: {e}"))?);
        while first.is_none() {
            let Some(nl) = buf[scanned..].iter().position(|&b| b == b'\n') else { break };
            let line = &buf[scanned..scanned + nl];
            scanned += nl + 1;
            let Some(data) = line.strip_prefix(b"data: ") else { continue };
            let v: Value = serde_json::from_slice(data).unwrap_or_default();
            if v["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()) {
                first = Some(micros(t.elapsed()));
            }
        }
    }
    match first {
        Some(us) if buf.windows(12).any(|w| w == b"data: [DONE]") => Ok(us),
        Some(_) => Err(format!("{who} stream: no [DONE]")),
        None => Err(format!("{who} stream: no content chunk")),
    }
}

/// The HTTP status the fake answers for a unary call to `model`.
pub async fn direct_status(ctx: &Ctx, model: &str) -> Result<u16, String> {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    let resp = ctx.http.post(&ctx.url).json(&body).send().await.map_err(|e| format!("direct: {e}"))?;
    Ok(resp.status().as_u16())
}

fn request(model: &str) -> pb::GenerateRequest {
    let msg = pb::ChatMessage { role: pb::Role::User as i32, content: "hello".into(), ..Default::default() };
    pb::GenerateRequest { model: model.into(), messages: vec![msg], max_tokens: Some(16), ..Default::default() }
}

pub fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Generate; checks the answer and that it took exactly `attempts` attempts.
pub async fn worker_unary(ctx: Arc<Ctx>, model: &'static str, attempts: usize) -> Result<u64, String> {
    let t = Instant::now();
    let r = ctx.grpc.clone().generate(request(model)).await.map_err(status_text)?.into_inner();
    let us = micros(t.elapsed());
    if r.content.is_empty() {
        return Err("Generate: empty content".into());
    }
    if r.attempts.len() != attempts {
        let got: Vec<_> = r.attempts.iter().map(|a| (a.outcome, a.detail.clone())).collect();
        return Err(format!("Generate {model}: expected {attempts} attempts, got {got:?}"));
    }
    Ok(us)
}

/// GenerateStream: time to the first non-empty text delta; requires a Finish.
pub async fn worker_stream(ctx: Arc<Ctx>) -> Result<u64, String> {
    use pb::generate_stream_event::Event;
    let t = Instant::now();
    let mut s = ctx.grpc.clone().generate_stream(request("bench")).await.map_err(status_text)?.into_inner();
    let (mut first, mut finished) = (None, false);
    while let Some(ev) = s.message().await.map_err(status_text)? {
        match ev.event {
            Some(Event::TextDelta(d)) if first.is_none() && !d.is_empty() => first = Some(micros(t.elapsed())),
            Some(Event::Finish(_)) => finished = true,
            _ => {}
        }
    }
    match first {
        Some(us) if finished => Ok(us),
        Some(_) => Err("GenerateStream: ended without Finish".into()),
        None => Err("GenerateStream: no text delta".into()),
    }
}

/// `available` of one member of pool `pool`, as the worker's ListModels reports it.
pub async fn member_available(grpc: &Client, pool: &str, member_id: &str) -> Result<bool, String> {
    let r = grpc.clone().list_models(pb::ListModelsRequest {}).await.map_err(status_text)?.into_inner();
    let pool_members = r.models.iter().find(|m| m.name == pool).map(|m| m.members.as_slice()).unwrap_or_default();
    let member = pool_members.iter().find(|m| m.member_id == member_id);
    member.map(|m| m.available).ok_or_else(|| format!("ListModels: no member {member_id} in pool {pool}"))
}

/// The config revision the worker serves, as its ListModels reports it.
pub async fn served_revision(grpc: &Client) -> Result<u64, String> {
    let r = grpc.clone().list_models(pb::ListModelsRequest {}).await.map_err(status_text)?;
    Ok(r.into_inner().revision)
}
