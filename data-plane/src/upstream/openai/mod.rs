//! OpenAI-compatible adapter: `POST {base_url}/chat/completions`, unary or
//! SSE streaming, and `POST {base_url}/embeddings`.
//!
//! How the neutral request is sent (`body`):
//!
//! - Message `parts` become a `content` array: text parts, `image_url` parts
//!   (inline images as `data:` URLs, `detail` only when set), PDF documents as
//!   `file` parts (`file_data` a `data:` URL) and plain-text documents as text
//!   parts. Documents must be inline data (bytes or a base64 `data:` URL):
//!   these APIs fetch no document by URL, so one by URL is `Unsupported`, as
//!   are images and documents outside user messages (tool results take text
//!   only here).
//! - Cache markers are not sent: OpenAI-compatible providers cache prompt
//!   prefixes by themselves; cached tokens come back in the usage.
//! - An assistant message's `reasoning` blocks are not sent back: the chat
//!   completions API takes none, and DeepSeek-style servers refuse a request
//!   that sends `reasoning_content` back.
//! - A tool message's `is_error` has no counterpart: the result goes as is
//!   (its text says what failed).
//! - Reasoning is `reasoning_effort`; a request giving only `budget_tokens`
//!   gets the effort nearest to it: up to 2048 tokens `low`, up to 8192
//!   `medium`, above that `high`.
//! - The output cap (`max_tokens`, else the member's default) goes as
//!   `max_completion_tokens` to OpenAI's own API (`api.openai.com`, Azure
//!   `*.openai.azure.com`) and with reasoning (reasoning models take no
//!   `max_tokens`); elsewhere as `max_tokens`, the name many
//!   OpenAI-compatible servers know only.
//! - `top_k` is sent as `top_k` (vLLM and others take it; OpenAI itself
//!   answers 400, which the caller sees).
//! - `extra` is merged into the body last: its keys win.
//!
//! Input the upstream cannot take as given is mapped, not refused: a tool whose
//! `parameters_json` is empty is sent with `parameters: {}`; one whose schema is
//! not valid JSON is sent with `{"type":"object"}` (a loose schema) rather than
//! failing the whole request.
//!
//! Answers (`parse`): the upstream's `id`, `model` and `system_fingerprint`
//! (streams: a `Chunk::Meta` before the first content), reasoning from
//! `reasoning_content` (DeepSeek, vLLM) or `reasoning` (OpenRouter), a
//! refusal as the content, log probabilities, every choice of `n`, and
//! cached and reasoning token counts.

use bytes::Bytes;

use super::endpoint::Call;
use super::wire::{post_stream, post_unary};
use super::{
    ChunkStream, Completion, EmbedRequest, Embeddings, Endpoint, TraceHeaders, UpstreamError,
};

mod body;
mod embed;
mod parse;

#[cfg(test)]
pub(super) mod tests;

pub(super) use body::request_body;
pub(super) use embed::embed_body;
use parse::{Decoder, parse_completion};

/// Asks `{base_url}/embeddings` for one vector per input: a body built by [`embed_body`].
pub(super) async fn send_embed(
    http: &super::Client,
    t: &Endpoint,
    req: &EmbedRequest,
    json: &Bytes,
    trace: &TraceHeaders,
) -> Result<Embeddings, UpstreamError> {
    let (body, rate) = post_unary(http, t, Call::Embeddings, json, trace).await?;
    let mut e = embed::parse_embeddings(&body, req.inputs.len())?;
    e.rate = rate;
    Ok(e)
}

/// Sends a unary body built by [`request_body`].
pub(super) async fn send(
    http: &super::Client,
    t: &Endpoint,
    json: &Bytes,
    trace: &TraceHeaders,
) -> Result<Completion, UpstreamError> {
    let call = Call::Chat { stream: false };
    let (body, rate) = post_unary(http, t, call, json, trace).await?;
    let mut c = parse_completion(&body)?;
    c.meta.rate = rate;
    Ok(c)
}

/// Sends a streaming body built by [`request_body`].
pub(super) async fn send_stream(
    http: &super::Client,
    t: &Endpoint,
    json: &Bytes,
    trace: &TraceHeaders,
) -> Result<ChunkStream, UpstreamError> {
    post_stream(http, t, json, trace, Decoder::default()).await
}

/// The headers every request to `t` carries (its credential as a bearer
/// token, its extra headers).
#[cfg(test)]
fn headers(t: &super::Target) -> Result<http::header::HeaderMap, UpstreamError> {
    super::endpoint::openai_headers(t.credential.as_ref(), &t.extra_headers)
}
