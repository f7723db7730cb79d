//! The request body: `body.rs`.

use serde_json::{Value, json};

use super::super::super::openai::tests::{msg, target, tool};
use super::super::super::{
    Cache, ChatRequest, Detail, Message, Part, PartKind, ReasoningBlock, Role, Source, Target,
    Tool, ToolCall, UpstreamError,
};
use super::super::body::request_body;

pub(super) fn body(req: &ChatRequest) -> Value {
    request_body(&target("x"), req, false).expect("a body")
}

pub(super) fn body_for(t: &Target, req: &ChatRequest) -> Value {
    request_body(t, req, false).expect("a body")
}

/// The message of the `Unsupported` a request gets.
pub(super) fn refused(req: &ChatRequest) -> String {
    match request_body(&target("x"), req, false) {
        Err(UpstreamError::Unsupported(m)) => m,
        other => panic!("not refused: {other:?}"),
    }
}

pub(super) fn hi() -> ChatRequest {
    ChatRequest {
        messages: vec![msg(Role::User, "hi")],
        ..Default::default()
    }
}

pub(super) fn hi_json() -> Value {
    json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
}

pub(super) fn cache(ttl: Option<&str>) -> Option<Cache> {
    Some(Cache {
        ttl: ttl.map(str::to_string),
    })
}

pub(super) fn part(kind: PartKind) -> Part {
    Part { kind, cache: None }
}

pub(super) fn text(t: &str) -> PartKind {
    PartKind::Text(t.into())
}

pub(super) fn url(u: &str) -> Source {
    Source::Url(u.into())
}

pub(super) fn data(media_type: &str, bytes: &[u8]) -> Source {
    Source::Data {
        media_type: media_type.into(),
        data: bytes.to_vec(),
    }
}

pub(super) fn image(source: Source) -> PartKind {
    PartKind::Image {
        source,
        detail: None,
    }
}

pub(super) fn document(source: Source, filename: Option<&str>) -> PartKind {
    PartKind::Document {
        source,
        filename: filename.map(str::to_string),
    }
}

pub(super) fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments_json: arguments.into(),
    }
}

pub(super) fn answer(id: &str, content: &str) -> Message {
    Message {
        tool_call_id: Some(id.into()),
        ..msg(Role::Tool, content)
    }
}

pub(super) fn with_parts(role: Role, parts: Vec<Part>) -> Message {
    Message {
        parts,
        ..msg(role, "")
    }
}

/// `{"type":"ephemeral"}`, with a ttl when given.
pub(super) fn cc(ttl: Option<&str>) -> Value {
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
