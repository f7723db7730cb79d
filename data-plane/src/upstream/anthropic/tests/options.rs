//! The request body's options: tool choice, structured output, reasoning
//! and max_tokens, the options Anthropic refuses, and `extra`.

use serde_json::{Map, Value, json};

use super::super::super::openai::tests::{target, tool};
use super::super::super::{
    ChatRequest, Effort, Reasoning, ResponseFormat, Target, Tool, ToolChoice,
};

use super::body::*;

#[test]
fn tool_choice_parallel_calls_and_strict_tools() {
    let auto = json!({"type": "auto"});
    let off = |mut v: Value| {
        v["disable_parallel_tool_use"] = json!(true);
        v
    };
    let f = || ToolChoice::Function("f".into());
    let cases = [
        (None, None, None),
        (None, Some(true), None),
        (Some(ToolChoice::Auto), None, Some(auto.clone())),
        (Some(ToolChoice::None), None, Some(json!({"type": "none"}))),
        (
            Some(ToolChoice::Required),
            None,
            Some(json!({"type": "any"})),
        ),
        (Some(f()), None, Some(json!({"type": "tool", "name": "f"}))),
        (None, Some(false), Some(off(auto.clone()))),
        (Some(ToolChoice::Auto), Some(false), Some(off(auto.clone()))),
        (
            Some(ToolChoice::Required),
            Some(false),
            Some(off(json!({"type": "any"}))),
        ),
        (
            Some(f()),
            Some(false),
            Some(off(json!({"type": "tool", "name": "f"}))),
        ),
        // Nothing is called, so nothing is parallel.
        (
            Some(ToolChoice::None),
            Some(false),
            Some(json!({"type": "none"})),
        ),
    ];
    let tools = vec![
        Tool {
            strict: true,
            ..tool("f", "", r#"{"type":"object"}"#)
        },
        tool("g", "", ""),
    ];
    for (choice, parallel, want) in cases {
        let req = ChatRequest {
            tools: tools.clone(),
            tool_choice: choice.clone(),
            parallel_tool_calls: parallel,
            ..hi()
        };
        let b = body(&req);
        assert_eq!(
            b.get("tool_choice"),
            want.as_ref(),
            "{choice:?} {parallel:?}"
        );
        assert_eq!(
            b["tools"],
            json!([
                {"name": "f", "input_schema": {"type": "object"}, "strict": true},
                {"name": "g", "input_schema": {"type": "object"}},
            ])
        );
    }
    // Without tools, neither is sent (Anthropic refuses tool_choice alone).
    let req = ChatRequest {
        tool_choice: Some(ToolChoice::Auto),
        parallel_tool_calls: Some(false),
        ..hi()
    };
    assert_eq!(
        body(&req),
        json!({"model": "m-1", "max_tokens": 4096, "messages": hi_json()})
    );
}

#[test]
fn structured_output_is_a_forced_tool() {
    let schema =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let req = ChatRequest {
        response_format: ResponseFormat::JsonSchema {
            name: "place".into(),
            description: Some("A place".into()),
            schema: schema.clone(),
            strict: true,
        },
        ..hi()
    };
    let want = json!({
        "model": "m-1",
        "max_tokens": 4096,
        "messages": hi_json(),
        "tools": [{"name": "place", "description": "A place", "input_schema": schema, "strict": true}],
        "tool_choice": {"type": "tool", "name": "place"},
    });
    assert_eq!(body(&req), want);
    let req = ChatRequest {
        response_format: ResponseFormat::JsonSchema {
            name: "place".into(),
            description: None,
            schema: schema.clone(),
            strict: false,
        },
        ..hi()
    };
    assert_eq!(
        body(&req)["tools"],
        json!([{"name": "place", "description": "Respond with JSON", "input_schema": schema}])
    );
    let json_object = ChatRequest {
        response_format: ResponseFormat::JsonObject,
        ..hi()
    };
    let want = json!({
        "model": "m-1",
        "max_tokens": 4096,
        "messages": hi_json(),
        "tools": [{"name": "json_response", "description": "Respond with JSON",
                   "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "json_response"},
    });
    assert_eq!(body(&json_object), want);

    let with_tools = refused(&ChatRequest {
        tools: vec![tool("f", "", "")],
        ..json_object.clone()
    });
    assert_eq!(
        with_tools,
        "Anthropic members take response_format JSON as a forced tool, which cannot be \
         combined with tools or tool_choice; drop them or the response_format"
    );
    let with_choice = refused(&ChatRequest {
        tool_choice: Some(ToolChoice::None),
        ..json_object.clone()
    });
    assert_eq!(with_choice, with_tools);
    let with_reasoning = refused(&ChatRequest {
        reasoning: Some(Reasoning {
            effort: Some(Effort::Low),
            budget_tokens: None,
        }),
        ..json_object
    });
    assert_eq!(
        with_reasoning,
        "Anthropic members cannot combine response_format JSON (sent as a forced tool) \
         with reasoning (extended thinking); drop one of them"
    );
}

fn reasoning(effort: Option<Effort>, budget_tokens: Option<u32>) -> Option<Reasoning> {
    Some(Reasoning {
        effort,
        budget_tokens,
    })
}

#[test]
fn reasoning_budgets_and_max_tokens() {
    let thinking = |b: u32| json!({"type": "enabled", "budget_tokens": b});
    let req = ChatRequest {
        reasoning: reasoning(None, Some(2000)),
        ..hi()
    };
    let want = json!({
        "model": "m-1",
        "max_tokens": 6096,
        "messages": hi_json(),
        "thinking": thinking(2000),
    });
    assert_eq!(body(&req), want);

    // From the effort; max_tokens unset is the budget plus the member's default.
    let member = Target {
        default_max_tokens: Some(1000),
        ..target("x")
    };
    let efforts = [
        (Effort::Minimal, 1024),
        (Effort::Low, 1024),
        (Effort::Medium, 4096),
        (Effort::High, 16384),
    ];
    for (effort, budget) in efforts {
        let req = ChatRequest {
            reasoning: reasoning(Some(effort), None),
            ..hi()
        };
        let b = body_for(&member, &req);
        assert_eq!(
            (&b["thinking"], &b["max_tokens"]),
            (&thinking(budget), &json!(budget + 1000)),
            "{effort:?}"
        );
    }
    // A budget wins over an effort; a max_tokens above it is kept.
    let req = ChatRequest {
        reasoning: reasoning(Some(Effort::High), Some(3000)),
        max_tokens: Some(3001),
        ..hi()
    };
    let b = body_for(&member, &req);
    assert_eq!(
        (&b["thinking"], &b["max_tokens"]),
        (&thinking(3000), &json!(3001))
    );
    let req = ChatRequest {
        max_tokens: Some(3000),
        ..req
    };
    assert_eq!(
        refused(&req),
        "max_tokens (3000) must be greater than the thinking budget (3000) on Anthropic members"
    );

    // What Anthropic refuses with thinking.
    let thinking_with = |req: ChatRequest| ChatRequest {
        tools: vec![tool("f", "", "")],
        reasoning: reasoning(Some(Effort::Low), None),
        ..req
    };
    let refusals = [
        (
            ChatRequest {
                tool_choice: Some(ToolChoice::Required),
                ..hi()
            },
            "tool_choice",
        ),
        (
            ChatRequest {
                tool_choice: Some(ToolChoice::Function("f".into())),
                ..hi()
            },
            "tool_choice",
        ),
        (
            ChatRequest {
                temperature: Some(0.5),
                ..hi()
            },
            "temperature (0.5)",
        ),
        (
            ChatRequest {
                top_k: Some(5),
                ..hi()
            },
            "top_k",
        ),
        (
            ChatRequest {
                top_p: Some(0.9),
                ..hi()
            },
            "top_p (0.9)",
        ),
    ];
    for (req, field) in refusals {
        let m = refused(&thinking_with(req));
        let named = m.contains(field) && m.contains("Anthropic members");
        assert!(named && m.contains("reasoning (extended thinking)"), "{m}");
    }
    let fine = thinking_with(ChatRequest {
        tool_choice: Some(ToolChoice::Auto),
        temperature: Some(1.0),
        top_p: Some(0.95),
        ..hi()
    });
    let b = body(&fine);
    assert_eq!(
        (&b["temperature"], &b["top_p"], &b["tool_choice"]),
        (&json!(1.0), &json!(0.95), &json!({"type": "auto"}))
    );
}

#[test]
fn max_tokens_comes_from_the_request_the_member_or_4096() {
    let member = Target {
        default_max_tokens: Some(777),
        ..target("x")
    };
    assert_eq!(body(&hi())["max_tokens"], json!(4096));
    assert_eq!(body_for(&member, &hi())["max_tokens"], json!(777));
    let req = ChatRequest {
        max_tokens: Some(5),
        ..hi()
    };
    assert_eq!(body_for(&member, &req)["max_tokens"], json!(5));
}

#[test]
fn top_k_user_refused_options_and_extra() {
    let req = ChatRequest {
        top_k: Some(40),
        top_p: Some(0.9),
        user: Some("user-7".into()),
        n: Some(1),
        ..hi()
    };
    let want = json!({
        "model": "m-1",
        "max_tokens": 4096,
        "messages": hi_json(),
        "top_k": 40,
        "top_p": 0.9,
        "metadata": {"user_id": "user-7"},
    });
    assert_eq!(body(&req), want);

    let refusals = [
        (
            ChatRequest {
                seed: Some(7),
                ..hi()
            },
            "seed",
        ),
        (
            ChatRequest {
                presence_penalty: Some(0.5),
                ..hi()
            },
            "presence_penalty",
        ),
        (
            ChatRequest {
                frequency_penalty: Some(-0.5),
                ..hi()
            },
            "frequency_penalty",
        ),
        (ChatRequest { n: Some(2), ..hi() }, "n > 1"),
        (
            ChatRequest {
                logprobs: true,
                ..hi()
            },
            "logprobs",
        ),
    ];
    for (req, field) in refusals {
        assert_eq!(
            refused(&req),
            format!("{field} is not supported by Anthropic members; leave it out to use them")
        );
    }

    let mut extra = Map::new();
    extra.insert("top_k".into(), json!(3));
    extra.insert("max_tokens".into(), json!(9));
    extra.insert("service_tier".into(), json!("auto"));
    extra.insert("metadata".into(), json!({"user_id": "from-extra"}));
    let req = ChatRequest {
        extra: Some(extra),
        ..req
    };
    let want = json!({
        "model": "m-1",
        "max_tokens": 9,
        "messages": hi_json(),
        "top_k": 3,
        "top_p": 0.9,
        "metadata": {"user_id": "from-extra"},
        "service_tier": "auto",
    });
    assert_eq!(body(&req), want);
}
