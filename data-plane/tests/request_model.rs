//! The full request model over gRPC, end to end: the real worker, Redis,
//! and a fake upstream on loopback speaking both wire formats. Each case
//! checks the exact body an upstream received and how the exact body it
//! answered was read back.

mod common;

use common::*;
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use tonic::Code;

const PNG: [u8; 4] = [137, 80, 78, 71];

struct World {
    fake: FakeUpstream,
    _prefix: RedisPrefix,
    worker: ServerProc,
}

/// Pools over one fake upstream: "o" (OpenAI kind), "a" (Anthropic kind),
/// "mixed" (an Anthropic member first, then an OpenAI one).
async fn world() -> World {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let policy = policy(0, 3, 1000);
    let mut config = Config::default();
    config
        .provider(
            "oai",
            pb::ProviderKind::Openai,
            &fake.base_url(),
            Some("sk-oai"),
        )
        .provider(
            "ant",
            pb::ProviderKind::Anthropic,
            &fake.base_url(),
            Some("sk-ant"),
        )
        .pool("o", pb::Strategy::Priority, policy, &[("oai", "gpt-x", 0)])
        .pool(
            "a",
            pb::Strategy::Priority,
            policy,
            &[("ant", "claude-x", 0)],
        )
        .pool(
            "mixed",
            pb::Strategy::Priority,
            policy,
            &[("ant", "claude-m", 10), ("oai", "gpt-m", 0)],
        )
        .pool(
            "long",
            pb::Strategy::Priority,
            policy,
            &[("ant", "claude-long", 0)],
        )
        .member_max_output("long", "claude-long", 8192)
        .pool(
            "locked",
            pb::Strategy::Priority,
            policy,
            &[("oai", "gpt-locked", 0)],
        )
        .pool_allows_extra("locked", false)
        .route("guarded", &[("locked", false), ("o", true)]);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let worker = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&worker, 1).await;
    World {
        fake,
        _prefix: prefix,
        worker,
    }
}

fn reply(fake: &FakeUpstream, model: &str, json: Value, sse: &str) {
    fake.set_fault(
        model,
        Fault::Reply {
            json: json.to_string(),
            sse: sse.to_owned(),
        },
    );
}

fn text(role: pb::Role, content: &str) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role.into(),
        content: content.into(),
        ..Default::default()
    }
}

fn image_part(detail: pb::ImageDetail, cache: bool) -> pb::ContentPart {
    pb::ContentPart {
        part: Some(pb::content_part::Part::Image(pb::ImagePart {
            source: Some(pb::image_part::Source::Data(PNG.to_vec())),
            media_type: "image/png".into(),
            detail: detail.into(),
        })),
        cache_control: cache.then(pb::CacheControl::default),
    }
}

fn text_part(t: &str) -> pb::ContentPart {
    pb::ContentPart {
        part: Some(pb::content_part::Part::Text(t.into())),
        cache_control: None,
    }
}

#[tokio::test]
async fn an_openai_member_gets_parts_tools_reasoning_and_extra_and_its_answer_is_read_whole() {
    let w = world().await;
    reply(
        &w.fake,
        "gpt-x",
        json!({"id": "chatcmpl-up1", "object": "chat.completion", "created": 1, "model": "gpt-x-2026",
               "system_fingerprint": "fp_1",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat.", "reasoning_content": "Looks feline."}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                         "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 12}}}),
        "",
    );
    let mut c = client(&w.worker).await;
    let req = pb::GenerateRequest {
        model: "o".into(),
        messages: vec![
            text(pb::Role::System, "be brief"),
            pb::ChatMessage {
                role: pb::Role::User.into(),
                parts: vec![
                    text_part("what is this?"),
                    image_part(pb::ImageDetail::High, true),
                ],
                ..Default::default()
            },
        ],
        tools: vec![pb::ToolDefinition {
            name: "f".into(),
            parameters_json: r#"{"type":"object"}"#.into(),
            strict: true,
            ..Default::default()
        }],
        tool_choice: Some(pb::ToolChoice {
            mode: pb::ToolChoiceMode::Required.into(),
            function: String::new(),
        }),
        reasoning: Some(pb::Reasoning {
            effort: "low".into(),
            budget_tokens: None,
        }),
        max_tokens: Some(50),
        presence_penalty: Some(0.5),
        user: "u-1".into(),
        extra_json: r#"{"service_tier":"flex"}"#.into(),
        ..Default::default()
    };
    let r = c.generate(req).await.expect("served").into_inner();
    let sent = w.fake.last_body("gpt-x").expect("the member was called");
    assert_eq!(
        sent,
        json!({
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw==", "detail": "high"}}]}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": "required",
            "reasoning_effort": "low",
            "max_completion_tokens": 50,
            "presence_penalty": 0.5,
            "user": "u-1",
            "service_tier": "flex",
        })
    );
    assert_eq!(r.content, "A cat.");
    assert_eq!(r.reasoning, "Looks feline.");
    assert_eq!(
        (
            r.upstream_id.as_str(),
            r.response_model.as_str(),
            r.system_fingerprint.as_str()
        ),
        ("chatcmpl-up1", "gpt-x-2026", "fp_1")
    );
    let u = r.usage.expect("usage");
    assert_eq!(
        (
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.reasoning_tokens
        ),
        (100, 20, 64, 12)
    );
}

#[tokio::test]
async fn an_anthropic_member_gets_cache_marks_thinking_and_error_results_and_keeps_signatures() {
    let w = world().await;
    reply(
        &w.fake,
        "claude-x",
        json!({"id": "msg_up2", "type": "message", "role": "assistant", "model": "claude-x-2026",
               "content": [
                   {"type": "thinking", "thinking": "Check the tool.", "signature": "sig-abc"},
                   {"type": "redacted_thinking", "data": "REDACTED"},
                   {"type": "text", "text": "Done."}],
               "stop_reason": "end_turn",
               "usage": {"input_tokens": 10, "cache_read_input_tokens": 50, "cache_creation_input_tokens": 30, "output_tokens": 7}}),
        "",
    );
    let mut c = client(&w.worker).await;
    let req = pb::GenerateRequest {
        model: "a".into(),
        messages: vec![
            pb::ChatMessage {
                cache_control: Some(pb::CacheControl::default()),
                ..text(pb::Role::System, "be brief")
            },
            pb::ChatMessage {
                role: pb::Role::User.into(),
                parts: vec![
                    text_part("look"),
                    image_part(pb::ImageDetail::Unspecified, true),
                ],
                ..Default::default()
            },
            pb::ChatMessage {
                role: pb::Role::Assistant.into(),
                reasoning: vec![pb::ReasoningBlock {
                    text: "prior".into(),
                    signature: "sig-0".into(),
                    redacted_data: String::new(),
                }],
                tool_calls: vec![pb::ToolCall {
                    id: "t1".into(),
                    name: "lookup".into(),
                    arguments_json: r#"{"q":"x"}"#.into(),
                }],
                ..Default::default()
            },
            pb::ChatMessage {
                tool_call_id: "t1".into(),
                is_error: true,
                ..text(pb::Role::Tool, "not found")
            },
            text(pb::Role::User, "go on"),
        ],
        tools: vec![pb::ToolDefinition {
            name: "lookup".into(),
            parameters_json: r#"{"type":"object","properties":{"q":{"type":"string"}}}"#.into(),
            strict: true,
            ..Default::default()
        }],
        reasoning: Some(pb::Reasoning {
            effort: String::new(),
            budget_tokens: Some(2048),
        }),
        max_tokens: Some(4000),
        user: "u-42".into(),
        ..Default::default()
    };
    let r = c.generate(req).await.expect("served").into_inner();
    let sent = w.fake.last_body("claude-x").expect("the member was called");
    assert_eq!(
        sent,
        json!({
            "model": "claude-x",
            "max_tokens": 4000,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
                     "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "prior", "signature": "sig-0"},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "not found", "is_error": true},
                    {"type": "text", "text": "go on"}]}],
            "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true}],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "u-42"},
        })
    );
    assert_eq!(
        (r.content.as_str(), r.finish_reason.as_str()),
        ("Done.", "stop")
    );
    assert_eq!(r.reasoning, "Check the tool.");
    let blocks: Vec<_> = r
        .reasoning_blocks
        .iter()
        .map(|b| {
            (
                b.text.as_str(),
                b.signature.as_str(),
                b.redacted_data.as_str(),
            )
        })
        .collect();
    assert_eq!(
        blocks,
        [("Check the tool.", "sig-abc", ""), ("", "", "REDACTED")]
    );
    assert_eq!(
        (r.upstream_id.as_str(), r.response_model.as_str()),
        ("msg_up2", "claude-x-2026")
    );
    let u = r.usage.expect("usage");
    assert_eq!(
        (
            u.input_tokens,
            u.cached_input_tokens,
            u.cache_write_input_tokens,
            u.output_tokens
        ),
        (90, 50, 30, 7)
    );
}

#[tokio::test]
async fn structured_output_on_anthropic_is_a_forced_tool_read_back_as_content() {
    let w = world().await;
    reply(
        &w.fake,
        "claude-x",
        json!({"id": "msg_3", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "tool_use", "id": "toolu_1", "name": "answer", "input": {"n": 1}}],
               "stop_reason": "tool_use", "usage": {"input_tokens": 5, "output_tokens": 3}}),
        "",
    );
    let mut c = client(&w.worker).await;
    let req = pb::GenerateRequest {
        response_format: pb::ResponseFormat::JsonSchema.into(),
        json_schema: Some(pb::JsonSchema {
            name: "answer".into(),
            description: String::new(),
            schema_json: r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#.into(),
            strict: false,
        }),
        ..ask("a", "count")
    };
    let r = c.generate(req).await.expect("served").into_inner();
    let sent = w.fake.last_body("claude-x").expect("called");
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "answer"})
    );
    assert_eq!(sent["tools"][0]["name"], "answer");
    assert_eq!(
        sent["tools"][0]["input_schema"],
        json!({"type": "object", "properties": {"n": {"type": "integer"}}})
    );
    assert_eq!(
        serde_json::from_str::<Value>(&r.content).ok(),
        Some(json!({"n": 1}))
    );
    assert!(
        r.tool_calls.is_empty(),
        "the forced tool is not a tool call"
    );
    assert_eq!(r.finish_reason, "stop");
}

#[tokio::test]
async fn thinking_streams_apart_from_content_with_its_signature() {
    let w = world().await;
    let ev = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    let sse = [
        ev("message_start", json!({"type": "message_start", "message": {"id": "msg_s", "model": "claude-x-2026", "role": "assistant", "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}}})),
        ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm"}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig-s"}})),
        ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
        ev("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}})),
        ev("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Yes"}})),
        ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}})),
        ev("message_stop", json!({"type": "message_stop"})),
    ]
    .concat();
    reply(&w.fake, "claude-x", json!({}), &sse);
    let mut c = client(&w.worker).await;
    let req = pb::GenerateRequest {
        reasoning: Some(pb::Reasoning {
            effort: "low".into(),
            budget_tokens: None,
        }),
        ..ask("a", "think")
    };
    let stream = c.generate_stream(req).await.expect("stream").into_inner();
    let (events, _) = drain_ok(stream).await;
    use pb::generate_stream_event::Event;
    let Some(Event::Start(start)) = &events[0].event else {
        panic!("starts with StreamStart: {events:?}");
    };
    assert_eq!(
        (start.upstream_id.as_str(), start.response_model.as_str()),
        ("msg_s", "claude-x-2026")
    );
    let reasoning: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(Event::ReasoningDelta(r)) => Some((r.index, r.text.clone(), r.signature.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasoning,
        [
            (0, "Hmm".into(), String::new()),
            (0, String::new(), "sig-s".into())
        ]
    );
    assert_eq!(text_of(&events), "Yes", "reasoning is not content");
    let sent = w.fake.last_body("claude-x").expect("called");
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(
        sent["max_tokens"],
        json!(1024 + 4096),
        "budget + the default answer length"
    );
}

#[tokio::test]
async fn an_option_a_member_cannot_honour_moves_to_one_that_can_or_fails_clearly() {
    let w = world().await;
    let mut c = client(&w.worker).await;
    // The Anthropic member comes first but has no seed: the OpenAI one serves.
    let r = c
        .generate(pb::GenerateRequest {
            seed: Some(7),
            ..ask("mixed", "hi")
        })
        .await
        .expect("served")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        [
            ("claude-m".into(), pb::AttemptOutcome::Unsupported),
            ("gpt-m".into(), pb::AttemptOutcome::Ok)
        ]
    );
    assert_eq!(
        w.fake.calls("claude-m"),
        0,
        "nothing was sent to the member that cannot"
    );
    assert_eq!(
        w.fake.last_body("gpt-m").map(|b| b["seed"].clone()),
        Some(json!(7))
    );
    // Nobody in "a" can: INVALID_ARGUMENT naming the option and the member kind.
    let e = c
        .generate(pb::GenerateRequest {
            seed: Some(7),
            ..ask("a", "hi")
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("seed") && e.message().contains("Anthropic"),
        "{}",
        e.message()
    );
    assert_eq!(w.fake.calls("claude-x"), 0);
    // A request mistake is refused before any member is tried.
    let e = c
        .generate(pb::GenerateRequest {
            json_schema: Some(pb::JsonSchema {
                name: "bad name!".into(),
                schema_json: "{}".into(),
                ..Default::default()
            }),
            ..ask("o", "hi")
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("json_schema.name"),
        "{}",
        e.message()
    );
}

#[tokio::test]
async fn operators_set_max_tokens_per_member_and_may_forbid_extra_per_pool() {
    let w = world().await;
    let mut c = client(&w.worker).await;
    // Anthropic needs max_tokens: the member's setting, else 4096 (never a silent 1024).
    c.generate(ask("long", "hi")).await.expect("served");
    assert_eq!(
        w.fake
            .last_body("claude-long")
            .map(|b| b["max_tokens"].clone()),
        Some(json!(8192))
    );
    c.generate(ask("a", "hi")).await.expect("served");
    assert_eq!(
        w.fake
            .last_body("claude-x")
            .map(|b| b["max_tokens"].clone()),
        Some(json!(4096))
    );
    c.generate(pb::GenerateRequest {
        max_tokens: Some(77),
        ..ask("long", "hi")
    })
    .await
    .expect("served");
    assert_eq!(
        w.fake
            .last_body("claude-long")
            .map(|b| b["max_tokens"].clone()),
        Some(json!(77))
    );
    // A pool that forbids extra fields is passed over (the backup tier
    // serves), and alone it refuses clearly; without extra it serves.
    let extra = |model: &str| pb::GenerateRequest {
        extra_json: r#"{"logit_bias":{"50256":-100}}"#.into(),
        ..ask(model, "hi")
    };
    let r = c
        .generate(extra("guarded"))
        .await
        .expect("served")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        [
            ("gpt-locked".into(), pb::AttemptOutcome::Unsupported),
            ("gpt-x".into(), pb::AttemptOutcome::Ok)
        ]
    );
    assert_eq!(
        w.fake.last_body("gpt-x").map(|b| b["logit_bias"].clone()),
        Some(json!({"50256": -100}))
    );
    let e = c.generate(extra("locked")).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("allow_request_extra"),
        "{}",
        e.message()
    );
    assert_eq!(w.fake.calls("gpt-locked"), 0);
    c.generate(ask("locked", "hi"))
        .await
        .expect("served without extra");
}
