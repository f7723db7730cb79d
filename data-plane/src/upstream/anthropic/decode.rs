//! Reading answers: a whole Messages response, or its SSE stream. A forced
//! tool (`response_format` JSON) comes back as content, not as a tool call.

use std::collections::HashMap;

use eventsource_stream::Event;
use serde_json::Value;

use super::super::wire::{SseDecoder, error_in, event_message, parse_json, sat};
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

fn str_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
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
    fn add(&mut self, u: &Value) {
        let fields = [
            (&mut self.input, "input_tokens"),
            (&mut self.cache_write, "cache_creation_input_tokens"),
            (&mut self.cache_read, "cache_read_input_tokens"),
            (&mut self.output, "output_tokens"),
        ];
        for (slot, key) in fields {
            if let Some(n) = u[key].as_u64() {
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

fn meta_of(message: &Value) -> ResponseMeta {
    ResponseMeta {
        id: str_of(&message["id"]),
        model: str_of(&message["model"]),
        system_fingerprint: None,
        rate: None,
    }
}

/// `forced`: the tool a JSON response_format was forced through.
pub(super) fn parse_completion(
    body: &[u8],
    forced: Option<&str>,
) -> Result<Completion, UpstreamError> {
    let v = parse_json(body)?;
    if let Some(message) = error_in(&v) {
        return Err(UpstreamError::Event { message });
    }
    let Some(blocks) = v["content"].as_array() else {
        return Err(UpstreamError::Protocol("response has no content".into()));
    };
    let mut c = Completion::default();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => c.content.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") if forced.is_some() && b["name"].as_str() == forced => {
                c.content.push_str(&b["input"].to_string());
            }
            Some("tool_use") => c.tool_calls.push(ToolCall {
                id: str_of(&b["id"]).unwrap_or_default(),
                name: str_of(&b["name"]).unwrap_or_default(),
                arguments_json: b["input"].to_string(),
            }),
            Some("thinking") => c.reasoning.push(ReasoningBlock {
                text: str_of(&b["thinking"]).unwrap_or_default(),
                signature: str_of(&b["signature"]).filter(|s| !s.is_empty()),
                redacted: None,
            }),
            Some("redacted_thinking") => c.reasoning.push(ReasoningBlock {
                redacted: Some(str_of(&b["data"]).unwrap_or_default()),
                ..ReasoningBlock::default()
            }),
            _ => {}
        }
    }
    c.meta = meta_of(&v);
    let reason = v["stop_reason"].as_str().unwrap_or("end_turn");
    c.finish_reason = finish_reason(reason, forced.is_some());
    if v["usage"].is_object() {
        let mut counts = Counts::default();
        counts.add(&v["usage"]);
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

    fn block_start(&mut self, index: u64, block: &Value, out: &mut Vec<Chunk>) {
        let text = |key: &str| block[key].as_str().unwrap_or_default().to_string();
        match block["type"].as_str() {
            Some("text") => {
                let text = text("text");
                if !text.is_empty() {
                    out.push(Chunk::Text(text));
                }
            }
            Some("tool_use")
                if self.forced.is_some() && block["name"].as_str() == self.forced.as_deref() =>
            {
                self.blocks.insert(index, Block::Forced);
            }
            Some("tool_use") => {
                let ordinal = self.tool_calls;
                self.tool_calls = ordinal.saturating_add(1);
                self.blocks.insert(index, Block::Tool(ordinal));
                out.push(Chunk::ToolCall {
                    index: ordinal,
                    id: str_of(&block["id"]),
                    name: str_of(&block["name"]),
                    arguments: String::new(),
                });
            }
            Some("thinking") => {
                let ordinal = self.next_reasoning();
                self.blocks.insert(index, Block::Reasoning(ordinal));
                let (thinking, signature) = (text("thinking"), text("signature"));
                if !thinking.is_empty() {
                    out.push(reasoning(ordinal, thinking, None, None));
                }
                if !signature.is_empty() {
                    out.push(reasoning(ordinal, String::new(), Some(signature), None));
                }
            }
            Some("redacted_thinking") => {
                let ordinal = self.next_reasoning();
                out.push(reasoning(ordinal, String::new(), None, Some(text("data"))));
            }
            _ => {} // server tool blocks and kinds added later are not forwarded
        }
    }

    fn block_delta(&self, index: u64, delta: &Value, out: &mut Vec<Chunk>) {
        let block = self.blocks.get(&index).copied();
        let field = |key: &str| {
            delta[key]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        match (delta["type"].as_str(), block) {
            (Some("text_delta"), _) => out.extend(field("text").map(Chunk::Text)),
            (Some("input_json_delta"), Some(Block::Tool(index))) => {
                out.extend(field("partial_json").map(|arguments| Chunk::ToolCall {
                    index,
                    id: None,
                    name: None,
                    arguments,
                }));
            }
            (Some("input_json_delta"), Some(Block::Forced)) => {
                out.extend(field("partial_json").map(Chunk::Text));
            }
            (Some("thinking_delta"), Some(Block::Reasoning(ordinal))) => {
                let text = field("thinking");
                out.extend(text.map(|t| reasoning(ordinal, t, None, None)));
            }
            (Some("signature_delta"), Some(Block::Reasoning(ordinal))) => {
                let sig = field("signature");
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
        let v = parse_json(ev.data.as_bytes())?;
        let kind = v["type"].as_str().unwrap_or(ev.event.as_str());
        let index = v["index"].as_u64().unwrap_or(u64::MAX);
        match kind {
            "message_start" => {
                let message = &v["message"];
                self.counts.add(&message["usage"]);
                let meta = meta_of(message);
                if !meta.is_empty() {
                    out.push(Chunk::Meta(meta));
                }
            }
            "content_block_start" => self.block_start(index, &v["content_block"], out),
            "content_block_delta" => self.block_delta(index, &v["delta"], out),
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(r.to_string());
                }
                self.counts.add(&v["usage"]);
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
