//! The request body: `body.rs`.

use serde_json::{Map, Value, json};

use super::super::super::openai::tests::{msg, target, tool};
use super::super::super::{
    Cache, ChatRequest, Detail, Effort, Message, Part, PartKind, Reasoning, ReasoningBlock,
    ResponseFormat, Role, Source, Target, Tool, ToolCall, ToolChoice, UpstreamError,
};
use super::super::body::request_body;

fn body(req: &ChatRequest) -> Value {
    request_body(&target("x"), req, false).expect("a body")
}

fn body_for(t: &Target, req: &ChatRequest) -> Value {
    request_body(t, req, false).expect("a body")
}

/// The message of the `Unsupported` a request gets.
fn refused(req: &ChatRequest) -> String {
    match request_body(&target("x"), req, false) {
        Err(UpstreamError::Unsupported(m)) => m,
        other => panic!("not refused: {other:?}"),
    }
}

fn hi() -> ChatRequest {
    ChatRequest {
        messages: vec![msg(Role::User, "hi")],
        ..Default::default()
    }
}

fn hi_json() -> Value {
    json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
}

fn cache(ttl: Option<&str>) -> Option<Cache> {
    Some(Cache {
        ttl: ttl.map(str::to_string),
    })
}

fn part(kind: PartKind) -> Part {
    Part { kind, cache: None }
}

fn text(t: &str) -> PartKind {
    PartKind::Text(t.into())
}

fn url(u: &str) -> Source {
    Source::Url(u.into())
}

fn data(media_type: &str, bytes: &[u8]) -> Source {
    Source::Data {
        media_type: media_type.into(),
        data: bytes.to_vec(),
    }
}

fn image(source: Source) -> PartKind {
    PartKind::Image {
        source,
        detail: None,
    }
}

fn document(source: Source, filename: Option<&str>) -> PartKind {
    PartKind::Document {
        source,
        filename: filename.map(str::to_string),
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments_json: arguments.into(),
    }
}

fn answer(id: &str, content: &str) -> Message {
    Message {
        tool_call_id: Some(id.into()),
        ..msg(Role::Tool, content)
    }
}

fn with_parts(role: Role, parts: Vec<Part>) -> Message {
    Message {
        parts,
        ..msg(role, "")
    }
}

/// `{"type":"ephemeral"}`, with a ttl when given.
fn cc(ttl: Option<&str>) -> Value {
    match ttl {
        Some(ttl) => json!({"type": "ephemeral", "ttl": ttl}),
        None => json!({"type": "ephemeral"}),
    }
}

#[test]
fn request_body_maps_system_roles_and_tools() {
    let req = ChatRequest {
        messages: vec![
            msg(Role::System, "be brief"),
            msg(Role::User, "hi"),
            Message {
                tool_calls: vec![call("t1", "f", r#"{"x":1}"#), call("t2", "g", "oops")],
                ..msg(Role::Assistant, "")
            },
            answer("t1", "1"),
            answer("t2", "2"),
            msg(Role::System, "in French"),
            msg(Role::User, "thanks"),
        ],
        tools: vec![
            tool("f", "does f", r#"{"type":"object","properties":{}}"#),
            tool("g", "", ""),
        ],
        stop: vec!["END".into()],
        temperature: Some(0.3),
        ..Default::default()
    };
    let want = json!({
        "model": "m-1",
        "max_tokens": 4096,
        "system": "be brief\n\nin French",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "1"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "2"},
                {"type": "text", "text": "thanks"}]},
        ],
        "tools": [
            {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {}}},
            {"name": "g", "input_schema": {"type": "object"}},
        ],
        "stop_sequences": ["END"],
        "temperature": 0.3,
        "stream": true,
    });
    assert_eq!(request_body(&target("x"), &req, true).expect("body"), want);
    let req = ChatRequest {
        max_tokens: Some(5),
        messages: vec![msg(Role::Assistant, "ok")],
        ..req
    };
    let body = body(&req);
    assert_eq!((&body["max_tokens"], body.get("stream")), (&json!(5), None));
    assert_eq!(
        body["messages"],
        json!([{"role": "assistant", "content": [{"type": "text", "text": "ok"}]}])
    );
}

#[test]
fn parts_of_every_kind_become_blocks() {
    let req = ChatRequest {
        messages: vec![
            with_parts(
                Role::User,
                vec![
                    part(text("look")),
                    part(PartKind::Image {
                        source: url("https://x/cat.png"),
                        // No Anthropic equivalent: ignored.
                        detail: Some(Detail::High),
                    }),
                    part(image(url("data:image/png;base64,iVBORw0KGgo="))),
                    part(image(data("image/jpeg", b"\xff\xd8"))),
                    part(document(data("application/pdf", b"%PDF"), Some("a.pdf"))),
                    part(document(url("https://x/b.pdf"), None)),
                    part(document(
                        data("text/plain", "héllo".as_bytes()),
                        Some("notes.txt"),
                    )),
                    part(document(
                        url("data:text/plain;charset=utf-8;base64,aGk="),
                        None,
                    )),
                    part(document(url("data:application/pdf;base64,JVBERg=="), None)),
                ],
            ),
            Message {
                tool_calls: vec![call("t1", "shot", "{}"), call("t2", "f", "{}")],
                ..msg(Role::Assistant, "")
            },
            Message {
                is_error: true,
                tool_call_id: Some("t1".into()),
                ..with_parts(
                    Role::Tool,
                    vec![
                        part(text("failed; see")),
                        part(image(url("https://x/err.png"))),
                    ],
                )
            },
            Message {
                is_error: true,
                ..answer("t2", "no such file")
            },
        ],
        ..Default::default()
    };
    let want = json!([
        {"role": "user", "content": [
            {"type": "text", "text": "look"},
            {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9g="}},
            {"type": "document", "title": "a.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERg=="}},
            {"type": "document", "source": {"type": "url", "url": "https://x/b.pdf"}},
            {"type": "document", "title": "notes.txt",
             "source": {"type": "text", "media_type": "text/plain", "data": "héllo"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERg=="}},
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "shot", "input": {}},
            {"type": "tool_use", "id": "t2", "name": "f", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "is_error": true, "content": [
                {"type": "text", "text": "failed; see"},
                {"type": "image", "source": {"type": "url", "url": "https://x/err.png"}},
            ]},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": true, "content": "no such file"},
        ]},
    ]);
    assert_eq!(body(&req)["messages"], want);

    let one = |kind: PartKind| ChatRequest {
        messages: vec![with_parts(Role::User, vec![part(kind)])],
        ..Default::default()
    };
    let not_base64 = refused(&one(image(url("data:image/png,rawbytes"))));
    assert!(
        not_base64.contains("base64") && not_base64.contains("Anthropic members"),
        "{not_base64}"
    );
    let not_utf8 = refused(&one(document(data("text/plain", b"\xff\xfe"), None)));
    assert!(not_utf8.contains("UTF-8"), "{not_utf8}");
    let odd = refused(&one(document(url("data:image/png;base64,AAAA"), None)));
    assert!(odd.contains("'image/png'"), "{odd}");
}

#[test]
fn cache_markers_on_parts_messages_system_and_tools() {
    let req = ChatRequest {
        messages: vec![
            Message {
                cache: cache(None),
                ..msg(Role::System, "rules")
            },
            msg(Role::System, "more rules"),
            with_parts(
                Role::User,
                vec![
                    Part {
                        kind: text("a"),
                        cache: cache(Some("1h")),
                    },
                    Part {
                        kind: text("b"),
                        cache: cache(Some("5m")),
                    },
                    part(text("c")),
                ],
            ),
            Message {
                cache: cache(Some("1h")),
                tool_calls: vec![call("t1", "f", "{}")],
                ..msg(Role::Assistant, "calling")
            },
            Message {
                cache: cache(None),
                ..answer("t1", "42")
            },
            Message {
                cache: cache(Some("5m")),
                ..msg(Role::User, "and?")
            },
        ],
        tools: vec![
            Tool {
                cache: cache(Some("1h")),
                strict: true,
                ..tool("f", "does f", r#"{"type":"object"}"#)
            },
            Tool {
                cache: cache(None),
                ..tool("g", "", "")
            },
        ],
        ..Default::default()
    };
    let want = json!({
        "model": "m-1",
        "max_tokens": 4096,
        "system": [
            {"type": "text", "text": "rules", "cache_control": cc(None)},
            {"type": "text", "text": "more rules"},
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "a", "cache_control": cc(Some("1h"))},
                {"type": "text", "text": "b", "cache_control": cc(None)},
                {"type": "text", "text": "c"},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}, "cache_control": cc(Some("1h"))},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "42", "cache_control": cc(None)},
                {"type": "text", "text": "and?", "cache_control": cc(None)},
            ]},
        ],
        "tools": [
            {"name": "f", "description": "does f", "input_schema": {"type": "object"},
             "strict": true, "cache_control": cc(Some("1h"))},
            {"name": "g", "input_schema": {"type": "object"}, "cache_control": cc(None)},
        ],
    });
    assert_eq!(body(&req), want);

    // System text parts: one block each, a cached part marks its own block;
    // the message's marker goes on its last block.
    let parts = |cached: bool, whole: bool| ChatRequest {
        messages: vec![
            Message {
                cache: whole.then_some(Cache { ttl: None }),
                ..with_parts(
                    Role::System,
                    vec![
                        Part {
                            kind: text("x"),
                            cache: cached.then_some(Cache { ttl: None }),
                        },
                        part(text("y")),
                    ],
                )
            },
            msg(Role::System, "z"),
            msg(Role::User, "hi"),
        ],
        ..Default::default()
    };
    assert_eq!(body(&parts(false, false))["system"], json!("xy\n\nz"));
    assert_eq!(
        body(&parts(true, false))["system"],
        json!([
            {"type": "text", "text": "x", "cache_control": cc(None)},
            {"type": "text", "text": "y"},
            {"type": "text", "text": "z"},
        ])
    );
    assert_eq!(
        body(&parts(false, true))["system"],
        json!([
            {"type": "text", "text": "x"},
            {"type": "text", "text": "y", "cache_control": cc(None)},
            {"type": "text", "text": "z"},
        ])
    );
}

#[test]
fn reasoning_blocks_go_back_first_signed_or_redacted() {
    let thought = |text: &str, signature: Option<&str>, redacted: Option<&str>| ReasoningBlock {
        text: text.into(),
        signature: signature.map(str::to_string),
        redacted: redacted.map(str::to_string),
    };
    let req = ChatRequest {
        messages: vec![
            msg(Role::User, "weather?"),
            Message {
                reasoning: vec![
                    thought("Oslo, then.", Some("sig-1"), None),
                    thought("", None, Some("EmwKAhgB")),
                    // From another provider: Anthropic refuses unsigned thinking.
                    thought("unsigned musing", None, None),
                ],
                tool_calls: vec![call("t1", "weather", r#"{"city":"Oslo"}"#)],
                ..msg(Role::Assistant, "Checking.")
            },
            answer("t1", "-3C"),
            // Two assistant messages in a row make one turn; its thinking goes first.
            msg(Role::Assistant, "Cold"),
            Message {
                reasoning: vec![thought("Add a tip.", Some("sig-2"), None)],
                ..msg(Role::Assistant, ", wear a hat.")
            },
            Message {
                reasoning: vec![thought("only unsigned", None, None)],
                ..msg(Role::User, "thanks")
            },
        ],
        ..Default::default()
    };
    let want = json!([
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Oslo, then.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "-3C"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Add a tip.", "signature": "sig-2"},
            {"type": "text", "text": "Cold"},
            {"type": "text", "text": ", wear a hat."},
        ]},
        // Reasoning on other roles is not sent (intake refuses it anyway).
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
    ]);
    assert_eq!(body(&req)["messages"], want);
}

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
