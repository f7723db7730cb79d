//! Reading answers: a whole Messages response, or its SSE stream, into
//! borrowed, lenient structs (`lenient`). A forced tool (`response_format`
//! JSON) comes back as content, not as a tool call.

use std::collections::HashMap;

use eventsource_stream::Event;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::super::lenient::{List, Num, Obj, Str, read};
use super::super::wire::{SseDecoder, error_of, event_message, sat};
use super::super::{
    Chunk, Completion, ReasoningBlock, ResponseMeta, ToolCall, UpstreamError, Usage,
};

pub(super) fn map_stop_reason(reason: &str) -> String {
    match reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_string()
}

/// The finish reason; a forced tool's use is the answer, so it is a stop.
fn finish_reason(reason: &str, forced: bool) -> String {
    match reason {
        "tool_use" if forced => "stop".to_string(),
        other => map_stop_reason(other),
    }
}

/// A whole answer, or a stream event (`message_start` carries a whole
/// answer's head in `message`).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Answer<'a> {
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    model: Str<'a>,
    #[serde(borrow)]
    content: List<Obj<BlockIn<'a>>>,
    #[serde(borrow)]
    stop_reason: Str<'a>,
    usage: Obj<CountsIn>,
    /// Stream events from here on.
    index: Num,
    #[serde(borrow)]
    message: Obj<Box<Answer<'a>>>,
    #[serde(borrow)]
    content_block: Obj<BlockIn<'a>>,
    #[serde(borrow)]
    delta: Obj<DeltaIn<'a>>,
}

/// A content block (whole, or as a stream starts it).
#[derive(Default, Deserialize)]
#[serde(default)]
struct BlockIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    name: Str<'a>,
    /// Tool input, passed on as JSON text the way it always was written
    /// (compact, keys sorted); only tool_use blocks carry it.
    input: Option<Value>,
    #[serde(borrow)]
    thinking: Str<'a>,
    #[serde(borrow)]
    signature: Str<'a>,
    #[serde(borrow)]
    data: Str<'a>,
}

/// A stream's `content_block_delta` or `message_delta` delta.
#[derive(Default, Deserialize)]
#[serde(default)]
struct DeltaIn<'a> {
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow)]
    partial_json: Str<'a>,
    #[serde(borrow)]
    thinking: Str<'a>,
    #[serde(borrow)]
    signature: Str<'a>,
    #[serde(borrow)]
    stop_reason: Str<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CountsIn {
    input_tokens: Num,
    cache_creation_input_tokens: Num,
    cache_read_input_tokens: Num,
    output_tokens: Num,
}

/// Tool input as JSON text (`null` when absent).
fn input_json(input: Option<&Value>) -> String {
    input.map_or_else(|| "null".to_owned(), Value::to_string)
}

/// Token counts as Anthropic gives them (each field cumulative, any of them
/// possibly absent from one event).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    input: u64,
    cache_write: u64,
    cache_read: u64,
    output: u64,
}

impl Counts {
    /// Takes the fields present in `u` (message_start / message_delta / unary).
    fn add(&mut self, u: &Obj<CountsIn>) {
        let Some(u) = &u.0 else { return };
        let fields = [
            (&mut self.input, u.input_tokens),
            (&mut self.cache_write, u.cache_creation_input_tokens),
            (&mut self.cache_read, u.cache_read_input_tokens),
            (&mut self.output, u.output_tokens),
        ];
        for (slot, n) in fields {
            if let Some(n) = n.0 {
                *slot = n;
            }
        }
    }

    fn usage(&self) -> Usage {
        let input = self
            .input
            .saturating_add(self.cache_write)
            .saturating_add(self.cache_read);
        Usage {
            input_tokens: sat(input),
            output_tokens: sat(self.output),
            cached_input_tokens: sat(self.cache_read),
            cache_write_input_tokens: sat(self.cache_write),
            // Anthropic does not count thinking apart.
            reasoning_tokens: 0,
        }
    }
}

fn meta_of(id: Str<'_>, model: Str<'_>) -> ResponseMeta {
    ResponseMeta {
        id: id.owned(),
        model: model.owned(),
        system_fingerprint: None,
        rate: None,
    }
}

/// `forced`: the tool a JSON response_format was forced through.
pub(super) fn parse_completion(
    body: &[u8],
    forced: Option<&str>,
) -> Result<Completion, UpstreamError> {
    let v: Answer<'_> = read(body)?;
    if let Some(message) = error_of(v.error) {
        return Err(UpstreamError::Event { message });
    }
    let Some(blocks) = v.content.0 else {
        return Err(UpstreamError::Protocol("response has no content".into()));
    };
    let mut c = Completion::default();
    for b in blocks {
        let b = b.0.unwrap_or_default();
        match b.kind.as_str() {
            Some("text") => c.content.push_str(b.text.as_str().unwrap_or_default()),
            Some("tool_use") if forced.is_some() && b.name.as_str() == forced => {
                c.content.push_str(&input_json(b.input.as_ref()));
            }
            Some("tool_use") => c.tool_calls.push(ToolCall {
                arguments_json: input_json(b.input.as_ref()),
                id: b.id.owned().unwrap_or_default(),
                name: b.name.owned().unwrap_or_default(),
            }),
            Some("thinking") => c.reasoning.push(ReasoningBlock {
                text: b.thinking.owned().unwrap_or_default(),
                signature: b.signature.nonempty(),
                redacted: None,
            }),
            Some("redacted_thinking") => c.reasoning.push(ReasoningBlock {
                redacted: Some(b.data.owned().unwrap_or_default()),
                ..ReasoningBlock::default()
            }),
            _ => {}
        }
    }
    c.meta = meta_of(v.id, v.model);
    let reason = v.stop_reason.as_str().unwrap_or("end_turn");
    c.finish_reason = finish_reason(reason, forced.is_some());
    if v.usage.0.is_some() {
        let mut counts = Counts::default();
        counts.add(&v.usage);
        c.usage = Some(counts.usage());
    }
    Ok(c)
}

/// What a content block index stands for in a stream.
#[derive(Clone, Copy, Debug)]
enum Block {
    /// A tool call, by ordinal.
    Tool(u32),
    /// Thinking, by reasoning block ordinal.
    Reasoning(u32),
    /// The forced tool: its input is the content.
    Forced,
}

#[derive(Default)]
pub(super) struct Decoder {
    /// The tool a JSON response_format was forced through.
    forced: Option<String>,
    counts: Counts,
    stop_reason: Option<String>,
    /// Content block index -> what it is.
    blocks: HashMap<u64, Block>,
    tool_calls: u32,
    reasoning_blocks: u32,
    stopped: bool,
}

impl Decoder {
    pub(super) fn forcing(forced: Option<&str>) -> Self {
        Self {
            forced: forced.map(str::to_string),
            ..Self::default()
        }
    }

    fn next_reasoning(&mut self) -> u32 {
        let n = self.reasoning_blocks;
        self.reasoning_blocks = n.saturating_add(1);
        n
    }

    fn block_start(&mut self, index: u64, block: BlockIn<'_>, out: &mut Vec<Chunk>) {
        let text = |s: Str<'_>| s.owned().unwrap_or_default();
        match block.kind.as_str() {
            Some("text") => {
                let text = text(block.text);
                if !text.is_empty() {
                    out.push(Chunk::Text(text));
                }
            }
            Some("tool_use")
                if self.forced.is_some() && block.name.as_str() == self.forced.as_deref() =>
            {
                self.blocks.insert(index, Block::Forced);
            }
            Some("tool_use") => {
                let ordinal = self.tool_calls;
                self.tool_calls = ordinal.saturating_add(1);
                self.blocks.insert(index, Block::Tool(ordinal));
                out.push(Chunk::ToolCall {
                    index: ordinal,
                    id: block.id.owned(),
                    name: block.name.owned(),
                    arguments: String::new(),
                });
            }
            Some("thinking") => {
                let ordinal = self.next_reasoning();
                self.blocks.insert(index, Block::Reasoning(ordinal));
                let (thinking, signature) = (text(block.thinking), text(block.signature));
                if !thinking.is_empty() {
                    out.push(reasoning(ordinal, thinking, None, None));
                }
                if !signature.is_empty() {
                    out.push(reasoning(ordinal, String::new(), Some(signature), None));
                }
            }
            Some("redacted_thinking") => {
                let ordinal = self.next_reasoning();
                out.push(reasoning(
                    ordinal,
                    String::new(),
                    None,
                    Some(text(block.data)),
                ));
            }
            _ => {} // server tool blocks and kinds added later are not forwarded
        }
    }

    fn block_delta(&self, index: u64, delta: DeltaIn<'_>, out: &mut Vec<Chunk>) {
        let block = self.blocks.get(&index).copied();
        match (delta.kind.as_str(), block) {
            (Some("text_delta"), _) => out.extend(delta.text.nonempty().map(Chunk::Text)),
            (Some("input_json_delta"), Some(Block::Tool(index))) => {
                let args = delta.partial_json.nonempty();
                out.extend(args.map(|arguments| Chunk::ToolCall {
                    index,
                    id: None,
                    name: None,
                    arguments,
                }));
            }
            (Some("input_json_delta"), Some(Block::Forced)) => {
                out.extend(delta.partial_json.nonempty().map(Chunk::Text));
            }
            (Some("thinking_delta"), Some(Block::Reasoning(ordinal))) => {
                let text = delta.thinking.nonempty();
                out.extend(text.map(|t| reasoning(ordinal, t, None, None)));
            }
            (Some("signature_delta"), Some(Block::Reasoning(ordinal))) => {
                let sig = delta.signature.nonempty();
                out.extend(sig.map(|s| reasoning(ordinal, String::new(), Some(s), None)));
            }
            // Deltas of blocks not forwarded (e.g. server_tool_use) are dropped.
            _ => {}
        }
    }
}

fn reasoning(
    index: u32,
    text: String,
    signature: Option<String>,
    redacted: Option<String>,
) -> Chunk {
    Chunk::Reasoning {
        index,
        text,
        signature,
        redacted,
    }
}

impl SseDecoder for Decoder {
    fn event(&mut self, ev: &Event, out: &mut Vec<Chunk>) -> Result<bool, UpstreamError> {
        if ev.event == "error" {
            return Err(UpstreamError::Event {
                message: event_message(&ev.data),
            });
        }
        if ev.data.trim().is_empty() {
            return Ok(false);
        }
        let v: Answer<'_> = read(ev.data.as_bytes())?;
        let kind = v.kind.as_str().unwrap_or(ev.event.as_str());
        let index = v.index.0.unwrap_or(u64::MAX);
        match kind {
            "message_start" => {
                let message = *v.message.0.unwrap_or_default();
                self.counts.add(&message.usage);
                let meta = meta_of(message.id, message.model);
                if !meta.is_empty() {
                    out.push(Chunk::Meta(meta));
                }
            }
            "content_block_start" => {
                self.block_start(index, v.content_block.0.unwrap_or_default(), out);
            }
            "content_block_delta" => self.block_delta(index, v.delta.0.unwrap_or_default(), out),
            "message_delta" => {
                if let Some(r) = v.delta.0.and_then(|d| d.stop_reason.owned()) {
                    self.stop_reason = Some(r);
                }
                self.counts.add(&v.usage);
            }
            "message_stop" => {
                out.push(Chunk::Usage(self.counts.usage()));
                self.stopped = true;
                return Ok(true);
            }
            "error" => {
                return Err(UpstreamError::Event {
                    message: event_message(&ev.data),
                });
            }
            _ => {} // ping, content_block_stop, and event types added later
        }
        Ok(false)
    }

    fn end(&mut self) -> Result<Chunk, UpstreamError> {
        if !self.stopped {
            return Err(UpstreamError::Truncated);
        }
        let reason = self.stop_reason.as_deref().unwrap_or("end_turn");
        Ok(Chunk::Finish(finish_reason(reason, self.forced.is_some())))
    }
}
