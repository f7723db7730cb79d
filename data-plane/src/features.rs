//! Features: what a request has that a route tier may ask for (image or
//! document parts, reasoning, tools, a long prompt), computed once per
//! request, and the tier conditions matched against them. A tier whose
//! condition the request does not meet is passed over; the request falls
//! through to the next tier (docs/adr/005-live-signals.md, "Routes that
//! look at the request").

use switchyard_proto::v1 as pb;

use crate::upstream::{ChatRequest, PartKind};

/// What one request has, as tier conditions read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Image or document parts in any message.
    pub images: bool,
    /// Reasoning (effort or budget) asked for.
    pub reasoning: bool,
    /// Tools offered.
    pub tools: bool,
    /// The prompt's estimated tokens (the same estimate limits and context
    /// windows use).
    pub prompt_tokens: u64,
}

impl Features {
    /// A chat request's features.
    pub fn of(req: &ChatRequest) -> Self {
        Self {
            images: req.messages.iter().any(|m| {
                m.parts
                    .iter()
                    .any(|p| matches!(p.kind, PartKind::Image { .. } | PartKind::Document { .. }))
            }),
            reasoning: req
                .reasoning
                .is_some_and(|r| r.effort.is_some() || r.budget_tokens.is_some()),
            tools: !req.tools.is_empty(),
            prompt_tokens: req.prompt_estimate(),
        }
    }

    /// An embeddings request: text only, `tokens` of it.
    pub fn text(tokens: u64) -> Self {
        Self {
            prompt_tokens: tokens,
            ..Self::default()
        }
    }
}

/// What a request must have for a tier to take it; the default asks nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    pub images: bool,
    pub reasoning: bool,
    pub tools: bool,
    /// 0: no condition.
    pub min_prompt_tokens: u64,
}

impl From<&pb::TierCondition> for Condition {
    fn from(c: &pb::TierCondition) -> Self {
        Self {
            images: c.images,
            reasoning: c.reasoning,
            tools: c.tools,
            min_prompt_tokens: c.min_prompt_tokens,
        }
    }
}

impl Condition {
    /// Whether a request with `f` has every feature this asks for.
    pub fn matches(&self, f: &Features) -> bool {
        (!self.images || f.images)
            && (!self.reasoning || f.reasoning)
            && (!self.tools || f.tools)
            && f.prompt_tokens >= self.min_prompt_tokens
    }

    /// Whether this asks for anything at all.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }

    /// What it asks for, for messages: "images, prompt ≥ 1000 tokens".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for (on, name) in [
            (self.images, "images"),
            (self.reasoning, "reasoning"),
            (self.tools, "tools"),
        ] {
            if on {
                parts.push(name.to_owned());
            }
        }
        if self.min_prompt_tokens > 0 {
            parts.push(format!(
                "a prompt of at least {} tokens",
                self.min_prompt_tokens
            ));
        }
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Message, Part, Reasoning, Role, Source, Tool};

    fn text(n: usize) -> ChatRequest {
        ChatRequest {
            messages: vec![Message::text(Role::User, "x".repeat(n))],
            ..ChatRequest::default()
        }
    }

    #[test]
    fn features_are_read_from_the_request() {
        assert_eq!(
            Features::of(&text(40)),
            Features {
                prompt_tokens: 10,
                ..Features::default()
            }
        );
        let mut req = text(4);
        req.messages[0].parts = vec![Part {
            kind: PartKind::Document {
                source: Source::Url("https://example.test/a.pdf".into()),
                filename: None,
            },
            cache: None,
        }];
        req.reasoning = Some(Reasoning {
            effort: None,
            budget_tokens: Some(1024),
        });
        req.tools = vec![Tool {
            name: "f".into(),
            description: String::new(),
            parameters_json: "{}".into(),
            strict: false,
            cache: None,
        }];
        let f = Features::of(&req);
        assert!(f.images && f.reasoning && f.tools, "{f:?}");
        // Reasoning present but asking for nothing is not reasoning.
        req.reasoning = Some(Reasoning::default());
        assert!(!Features::of(&req).reasoning);
    }

    #[test]
    fn a_condition_matches_a_request_with_every_feature_it_names() {
        let plain = Features::text(100);
        let vision = Features {
            images: true,
            ..plain
        };
        let none = Condition::default();
        assert!(none.matches(&plain) && !none.any());
        let images = Condition {
            images: true,
            ..none
        };
        assert!(images.matches(&vision) && !images.matches(&plain));
        let long = Condition {
            min_prompt_tokens: 100,
            ..none
        };
        assert!(long.matches(&plain), "at least N: N itself matches");
        assert!(!long.matches(&Features::text(99)));
        let both = Condition {
            tools: true,
            min_prompt_tokens: 50,
            ..none
        };
        assert!(!both.matches(&plain), "tools missing");
        assert!(both.matches(&Features {
            tools: true,
            ..plain
        }));
        assert_eq!(both.describe(), "tools, a prompt of at least 50 tokens");
    }
}
