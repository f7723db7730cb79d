//! Anthropic Messages adapter: `POST {base_url}/messages`, unary or SSE
//! streaming. HTTP and SSE plumbing is shared with `openai.rs`; the request
//! body is built in `body.rs`, answers and streams are read in `decode.rs`.
//!
//! Mapping notes (request):
//! - system messages go in the top-level `system`: joined (blank line
//!   between) into one string, or, when one carries a cache marker, as an
//!   array of text blocks (one per system message or text part);
//! - consecutive messages that map to the same role are merged into one turn,
//!   so several tool results answer one assistant turn in a single user
//!   message; an assistant turn's reasoning (thinking) blocks come first;
//! - reasoning blocks without a signature that are not redacted came from
//!   another provider: Anthropic refuses unsigned thinking, so they are
//!   dropped;
//! - image `detail` has no Anthropic equivalent and is ignored; a `data:`
//!   URL is sent as a base64 source (it must be `;base64`);
//! - tool call arguments and tool schemas that are empty or not a JSON object
//!   are sent as `{}` / `{"type":"object"}` (Anthropic requires objects);
//! - `max_tokens` is the request's, else the member's `default_max_tokens`,
//!   else 4096; with reasoning (extended thinking, `budget_tokens` from the
//!   budget or from the effort: minimal/low 1024, medium 4096, high 16384) it
//!   must exceed the budget, and when unset is the budget plus that default;
//! - `response_format` JSON is a forced tool (`json_response`, or the schema's
//!   name) whose input comes back as the content, finish "stop"; it cannot
//!   be combined with tools, tool_choice or reasoning;
//! - `parallel_tool_calls: false` is `disable_parallel_tool_use` (not with
//!   tool_choice none); tool_choice and it are only sent with tools;
//! - `seed`, penalties, `n` > 1 and logprobs have no Anthropic equivalent,
//!   nor do, with reasoning, a forcing tool_choice, `temperature` other
//!   than 1, `top_k` or `top_p` below 0.95: the member refuses the request
//!   (`Unsupported`) before sending anything;
//! - `extra` keys are merged into the body last and win.
//!
//! Mapping notes (answer):
//! - tool call chunk `index` counts tool_use blocks (0, 1, ...) like OpenAI's,
//!   not Anthropic's content block index (which also counts text blocks);
//!   reasoning chunk `index` counts thinking and redacted_thinking blocks;
//! - input tokens include cache reads and writes, as OpenAI's `prompt_tokens`
//!   do; `cached_input_tokens` are the reads, `cache_write_input_tokens` the
//!   writes.

mod body;
mod decode;
#[cfg(test)]
// Canned HTTP servers in the tests.
#[allow(clippy::disallowed_methods)]
mod tests;

use bytes::Bytes;

use super::endpoint::Call;
use super::wire::{post_stream, post_unary};
use super::{ChatRequest, ChunkStream, Completion, Endpoint, TraceHeaders, UpstreamError};

use body::forced_tool_name;
pub(super) use body::request_body;
use decode::{Decoder, parse_completion};

/// Builds and sends in one go (the adapter's over-HTTP tests; the engine
/// prepares the body once per member: `upstream::prepare`).
#[cfg(test)]
pub(super) async fn complete(
    http: &super::Client,
    t: &super::Target,
    req: &ChatRequest,
    trace: &TraceHeaders,
) -> Result<Completion, UpstreamError> {
    let body = super::written(&request_body(t, req, false)?)?;
    send(http, &Endpoint::new(t.clone()), req, &body, trace).await
}

#[cfg(test)]
pub(super) async fn stream(
    http: &super::Client,
    t: &super::Target,
    req: &ChatRequest,
    trace: &TraceHeaders,
) -> Result<ChunkStream, UpstreamError> {
    let body = super::written(&request_body(t, req, true)?)?;
    send_stream(http, &Endpoint::new(t.clone()), req, &body, trace).await
}

/// Sends a unary body built by [`request_body`] for `req`.
pub(super) async fn send(
    http: &super::Client,
    t: &Endpoint,
    req: &ChatRequest,
    json: &Bytes,
    trace: &TraceHeaders,
) -> Result<Completion, UpstreamError> {
    let call = Call::Chat { stream: false };
    let (body, rate) = post_unary(http, t, call, json, trace).await?;
    let mut c = parse_completion(&body, forced_tool_name(req))?;
    c.meta.rate = rate;
    Ok(c)
}

/// Sends a streaming body built by [`request_body`] for `req`.
pub(super) async fn send_stream(
    http: &super::Client,
    t: &Endpoint,
    req: &ChatRequest,
    json: &Bytes,
    trace: &TraceHeaders,
) -> Result<ChunkStream, UpstreamError> {
    let decoder = Decoder::forcing(forced_tool_name(req));
    post_stream(http, t, json, trace, decoder).await
}
