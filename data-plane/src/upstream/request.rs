//! The provider-neutral request: what a caller asked for, checked, before
//! any wire format. Adapters translate it; a field an adapter cannot honour
//! is `UpstreamError::Unsupported` (the member is passed over), never
//! silently dropped.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON object text.
    pub arguments_json: String,
}

/// A prompt-caching breakpoint (Anthropic `cache_control`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cache {
    /// `None`: the provider's default; or e.g. `"1h"`.
    pub ttl: Option<String>,
}

/// Where an image or document comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `https:` or `data:` URL.
    Url(String),
    Data {
        media_type: String,
        data: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    Auto,
    Low,
    High,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartKind {
    Text(String),
    Image {
        source: Source,
        detail: Option<Detail>,
    },
    Document {
        source: Source,
        filename: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub kind: PartKind,
    pub cache: Option<Cache>,
}

/// Reasoning that came with an answer; Anthropic's signed (or redacted)
/// thinking must go back unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasoningBlock {
    pub text: String,
    pub signature: Option<String>,
    /// Anthropic `redacted_thinking` data (then `text` is empty).
    pub redacted: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Message {
    pub role: Role,
    /// Text content; used when `parts` is empty.
    pub content: String,
    /// Content as parts, in order (when not empty, `content` is empty).
    pub parts: Vec<Part>,
    /// Assistant messages: calls it made.
    pub tool_calls: Vec<ToolCall>,
    /// Tool messages: the call answered.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
    /// Assistant messages: reasoning as received.
    pub reasoning: Vec<ReasoningBlock>,
    /// Tool messages: the result is an error.
    pub is_error: bool,
    /// A caching breakpoint after this message.
    pub cache: Option<Cache>,
}

impl Message {
    /// A text message with nothing else set.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            parts: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning: Vec::new(),
            is_error: false,
            cache: None,
        }
    }

    /// Characters of text this message carries (for token estimates).
    fn chars(&self) -> usize {
        let parts: usize = self
            .parts
            .iter()
            .map(|p| match &p.kind {
                PartKind::Text(t) => t.len(),
                // Images and documents: a flat allowance each.
                PartKind::Image { .. } | PartKind::Document { .. } => 4 * 1000,
            })
            .sum();
        self.content.len()
            + parts
            + self
                .tool_calls
                .iter()
                .map(|t| t.arguments_json.len())
                .sum::<usize>()
            + self.reasoning.iter().map(|r| r.text.len()).sum::<usize>()
    }
}

#[derive(Clone, Debug)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema text.
    pub parameters_json: String,
    pub strict: bool,
    pub cache: Option<Cache>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    Required,
    Function(String),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum ResponseFormat {
    #[default]
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        description: Option<String>,
        /// The schema (an object).
        schema: Value,
        strict: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effort {
    Minimal,
    Low,
    Medium,
    High,
}

impl Effort {
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasoning {
    pub effort: Option<Effort>,
    pub budget_tokens: Option<u32>,
}

/// The provider-neutral chat request.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    /// Output tokens at most (reasoning included); adapters send it as the
    /// API wants it (`max_completion_tokens`, Anthropic's required field).
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub response_format: ResponseFormat,
    pub reasoning: Option<Reasoning>,
    pub user: Option<String>,
    /// Choices wanted (unary only; `None` = 1).
    pub n: Option<u32>,
    pub logprobs: bool,
    pub top_logprobs: Option<u32>,
    /// Merged into the upstream body last (its keys win).
    pub extra: Option<Map<String, Value>>,
}

/// The output cap where neither the request nor the member sets one: sent
/// to Anthropic members (which require one), and the bound an answer without
/// usage is charged.
pub const DEFAULT_MAX_OUTPUT: u32 = 4096;

impl ChatRequest {
    /// Tokens this request may use, estimated before it is sent: the prompt
    /// at about four characters a token, plus `max_tokens`. A member's
    /// `tpm_limit` reserves this much, then settles on the real count.
    pub fn token_estimate(&self) -> u64 {
        self.prompt_estimate()
            .saturating_add(u64::from(self.max_tokens.unwrap_or(0)))
    }

    /// The prompt's tokens at about four characters a token.
    pub fn prompt_estimate(&self) -> u64 {
        let chars: usize = self.messages.iter().map(Message::chars).sum::<usize>()
            + self
                .tools
                .iter()
                .map(|t| t.description.len() + t.parameters_json.len())
                .sum::<usize>();
        u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
    }

    /// The most tokens this request can use on a member whose output cap is
    /// `member_max` (its `max_output_tokens`): the prompt estimate plus the
    /// effective output cap (`max_tokens`, else the member's, else
    /// [`DEFAULT_MAX_OUTPUT`], plus a thinking budget), times `n`. What an
    /// answer that reports no usage is charged.
    pub fn token_bound(&self, member_max: Option<u32>) -> u64 {
        let output = match self.max_tokens {
            Some(m) => u64::from(m),
            None => {
                let thinking = self.reasoning.as_ref().and_then(|r| r.budget_tokens);
                u64::from(member_max.unwrap_or(DEFAULT_MAX_OUTPUT))
                    + u64::from(thinking.unwrap_or(0))
            }
        };
        self.prompt_estimate()
            .saturating_add(output.saturating_mul(u64::from(self.n.unwrap_or(1).max(1))))
    }
}

/// One embedding input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// The provider-neutral embeddings request.
#[derive(Clone, Debug, Default)]
pub struct EmbedRequest {
    pub inputs: Vec<EmbedInput>,
    pub dimensions: Option<u32>,
    pub user: Option<String>,
    pub extra: Option<Map<String, Value>>,
}

impl EmbedRequest {
    pub fn token_estimate(&self) -> u64 {
        let n: usize = self
            .inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => t.len().div_ceil(4),
                EmbedInput::Tokens(t) => t.len(),
            })
            .sum();
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}
