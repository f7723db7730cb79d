//! The provider-neutral answer: a whole completion, stream chunks, usage,
//! and embeddings.

use super::request::{ReasoningBlock, ToolCall};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every prompt token, cached ones included.
    pub input_tokens: u32,
    /// Every generated token, reasoning included.
    pub output_tokens: u32,
    /// Of the input: read from the prompt cache.
    pub cached_input_tokens: u32,
    /// Of the input: written to the prompt cache.
    pub cache_write_input_tokens: u32,
    /// Of the output: reasoning.
    pub reasoning_tokens: u32,
}

impl Usage {
    pub fn new(input_tokens: u32, output_tokens: u32) -> Self {
        Self {
            input_tokens,
            output_tokens,
            ..Self::default()
        }
    }

    pub fn total(&self) -> u64 {
        u64::from(self.input_tokens) + u64::from(self.output_tokens)
    }
}

/// What the upstream said about its answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseMeta {
    /// The upstream's id for the answer (`chatcmpl-…`, `msg_…`).
    pub id: Option<String>,
    /// The model the upstream says answered.
    pub model: Option<String>,
    pub system_fingerprint: Option<String>,
    /// The answer's rate-limit headers (not part of the answer itself).
    pub rate: Option<super::RateHeaders>,
}

impl ResponseMeta {
    pub fn is_empty(&self) -> bool {
        self.id.is_none() && self.model.is_none() && self.system_fingerprint.is_none()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
    pub top: Vec<TopLogprob>,
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// The upstream's id, model and fingerprint, before any content. Not a
    /// first chunk: a stream commits on content, not on this.
    Meta(ResponseMeta),
    Text(String),
    /// Reasoning of block `index` (0, 1, ...): text in pieces, the
    /// signature at the block's end, a redacted block whole.
    Reasoning {
        index: u32,
        text: String,
        signature: Option<String>,
        redacted: Option<String>,
    },
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    Usage(Usage),
    /// The upstream finished; "stop", "length", "tool_calls", "content_filter".
    Finish(String),
}

/// One more choice of a completion asked for with `n` > 1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    pub reasoning: Vec<ReasoningBlock>,
    pub logprobs: Vec<TokenLogprob>,
}

/// A whole (unary) answer: its first choice, and any others.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    pub usage: Option<Usage>,
    pub reasoning: Vec<ReasoningBlock>,
    pub logprobs: Vec<TokenLogprob>,
    pub meta: ResponseMeta,
    /// With n > 1: choices 1.. (choice 0 is the fields above).
    pub more_choices: Vec<Choice>,
}

/// An embeddings answer: one vector per input, in input order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub usage: Option<Usage>,
    pub model: Option<String>,
    /// The answer's rate-limit headers.
    pub rate: Option<super::RateHeaders>,
}
