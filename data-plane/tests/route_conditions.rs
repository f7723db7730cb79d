//! Routes that look at the request, on the real binary: a tier whose
//! condition (images, reasoning, tools, a long prompt) the request does not
//! meet is passed over, the request falls through to the next tier, and
//! attempts say which tier served — over gRPC and the OpenAI HTTP door alike.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;
use tonic::Code;

/// Route "auto": 0 vision (images), 1 long (prompt ≥ 2000 tokens; an
/// image counts about 1000),
/// 2 tooling (tools), 3 thinking (reasoning), 4 plain (no condition).
/// Route "only-vision": just the vision tier.
async fn routes(up: &FakeUpstream, prefix: &RedisPrefix, env: &[(&str, &str)]) -> ServerProc {
    let mut config = Config::default();
    config.provider("up", pb::ProviderKind::Openai, &up.base_url(), None);
    for (pool, model) in [
        ("vision", "eye"),
        ("long", "big"),
        ("tooling", "tool"),
        ("thinking", "think"),
        ("plain", "small"),
    ] {
        config.pool(
            pool,
            pb::Strategy::RoundRobin,
            policy(0, 3, 1000),
            &[("up", model, 0)],
        );
    }
    let when = |images, reasoning, tools, min_prompt_tokens| {
        Some(pb::TierCondition {
            images,
            reasoning,
            tools,
            min_prompt_tokens,
        })
    };
    config
        .route_when(
            "auto",
            &[
                ("vision", false, when(true, false, false, 0)),
                ("long", false, when(false, false, false, 2000)),
                ("tooling", false, when(false, false, true, 0)),
                ("thinking", false, when(false, true, false, 0)),
                ("plain", false, None),
            ],
        )
        .route_when(
            "only-vision",
            &[("vision", false, when(true, false, false, 0))],
        );
    config.publish(&redis_url(), prefix, 1, true).await;
    let w = worker(&redis_url(), prefix, env).await;
    wait_revision(&w, 1).await;
    w
}

fn image() -> pb::ContentPart {
    pb::ContentPart {
        part: Some(pb::content_part::Part::Image(pb::ImagePart {
            source: Some(pb::image_part::Source::Url(
                "https://example.test/cat.png".into(),
            )),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn with_image(model: &str) -> pb::GenerateRequest {
    let mut r = ask(model, "");
    r.messages[0].parts = vec![
        pb::ContentPart {
            part: Some(pb::content_part::Part::Text("what is this?".into())),
            ..Default::default()
        },
        image(),
    ];
    r
}

/// (tier, upstream model, outcome) of each attempt.
fn tiers(attempts: &[pb::Attempt]) -> Vec<(u32, String, pb::AttemptOutcome)> {
    attempts
        .iter()
        .map(|a| {
            (
                a.tier,
                a.upstream_model.clone(),
                pb::AttemptOutcome::try_from(a.outcome).unwrap_or(pb::AttemptOutcome::Unspecified),
            )
        })
        .collect()
}

fn ok(tier: u32, model: &str) -> Vec<(u32, String, pb::AttemptOutcome)> {
    vec![(tier, model.to_owned(), pb::AttemptOutcome::Ok)]
}

#[tokio::test]
async fn each_request_goes_to_the_first_tier_whose_condition_it_meets() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let w = routes(&up, &prefix, &[]).await;
    let mut c = client(&w).await;
    let mut call = async |r: pb::GenerateRequest| {
        let r = c
            .generate(r)
            .await
            .unwrap_or_else(|e| panic!("served: {e}"));
        tiers(&r.into_inner().attempts)
    };
    assert_eq!(call(with_image("auto")).await, ok(0, "eye"), "vision");
    assert_eq!(call(ask("auto", "hi")).await, ok(4, "small"), "plain");
    // About 4 characters a token: 8000 characters is the threshold.
    assert_eq!(call(ask("auto", &"x".repeat(7996))).await, ok(4, "small"));
    assert_eq!(
        call(ask("auto", &"x".repeat(8000))).await,
        ok(1, "big"),
        "long"
    );
    let mut tools = ask("auto", "weather?");
    tools.tools = vec![pb::ToolDefinition {
        name: "weather".into(),
        parameters_json: r#"{"type":"object"}"#.into(),
        ..Default::default()
    }];
    assert_eq!(call(tools).await, ok(2, "tool"), "tools");
    let mut thinking = ask("auto", "think hard");
    thinking.reasoning = Some(pb::Reasoning {
        effort: "high".into(),
        budget_tokens: None,
    });
    assert_eq!(call(thinking).await, ok(3, "think"), "reasoning");
    // An image with a long prompt takes the first tier it meets.
    let mut both = with_image("auto");
    both.messages[0].parts[0] = pb::ContentPart {
        part: Some(pb::content_part::Part::Text("x".repeat(8000))),
        ..Default::default()
    };
    assert_eq!(call(both).await, ok(0, "eye"));
    // A stream is routed the same way; its start event names the tier.
    let mut stream = with_image("auto");
    stream.messages[0].parts.truncate(1);
    stream.messages[0].parts[0] = pb::ContentPart {
        part: Some(pb::content_part::Part::Text("x".repeat(8000))),
        ..Default::default()
    };
    let opened = c.generate_stream(stream).await.expect("stream opens");
    let (events, _) = drain_ok(opened.into_inner()).await;
    let Some(pb::generate_stream_event::Event::Start(start)) = &events[0].event else {
        panic!("first event is start")
    };
    assert_eq!(tiers(&start.attempts), ok(1, "big"));
}

#[tokio::test]
async fn a_failed_tier_falls_through_to_the_next_one_the_request_meets() {
    let up = fake().await;
    up.set_fault("eye", status(500));
    let prefix = RedisPrefix::new();
    let w = routes(&up, &prefix, &[]).await;
    let mut c = client(&w).await;
    let r = c
        .generate(with_image("auto"))
        .await
        .expect("served by the plain tier")
        .into_inner();
    assert_eq!(
        tiers(&r.attempts),
        [
            (0, "eye".to_owned(), pb::AttemptOutcome::Transient),
            (4, "small".to_owned(), pb::AttemptOutcome::Ok),
        ]
    );
    assert_eq!(up.calls("big") + up.calls("tool") + up.calls("think"), 0);
}

#[tokio::test]
async fn a_request_no_tier_takes_is_the_callers_to_fix() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let w = routes(&up, &prefix, &[]).await;
    let mut c = client(&w).await;
    let err = c
        .generate(ask("only-vision", "hi"))
        .await
        .expect_err("no tier takes a text-only request");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("tier 0: images"),
        "the message says what the tiers ask for: {}",
        err.message()
    );
    assert_eq!(up.total_calls(), 0);
    assert!(c.generate(with_image("only-vision")).await.is_ok());
}

#[tokio::test]
async fn the_http_door_routes_by_the_same_conditions() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let w = routes(
        &up,
        &prefix,
        &[
            ("SWITCHYARD_INFERENCE_TOKENS", CALLER_TOKEN),
            ("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let base = format!("http://{}", http_addr(&w).await);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let post = async |body: Value| {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(CALLER_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the door answers")
    };
    let vision = json!({"model": "auto", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}},
    ]}]});
    let r = post(vision).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let plain = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(plain).await.status(), 200);
    let long =
        json!({"model": "auto", "messages": [{"role": "user", "content": "x".repeat(8000)}]});
    assert_eq!(post(long).await.status(), 200);
    let tools = json!({"model": "auto", "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]});
    assert_eq!(post(tools).await.status(), 200);
    let thinking = json!({"model": "auto", "reasoning_effort": "high",
        "messages": [{"role": "user", "content": "think hard"}]});
    assert_eq!(post(thinking).await.status(), 200);
    for model in ["eye", "small", "big", "tool", "think"] {
        assert_eq!(up.calls(model), 1, "{model}");
    }
    let none = json!({"model": "only-vision", "messages": [{"role": "user", "content": "hi"}]});
    let r = post(none).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json error");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("tier 0: images")),
        "{body}"
    );
}
