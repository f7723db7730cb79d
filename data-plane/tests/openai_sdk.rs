//! The OpenAI-compatible HTTP door with the official `openai` Python SDK as
//! its client (in the venv `switchyard_testkit::tools` makes): chat,
//! streams, tools, structured output, an image, embeddings, models, errors,
//! failover in the headers and a broken stream. The real control plane,
//! worker and a fake upstream on loopback; the caller holds a caller key.
// Spawns python and reads its env.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use serde_json::json;
use switchyard_proto::v1 as pb;

const ADMIN: &str = "sdk-admin-token";

fn member(pool: &str, provider: &str, model: &str, priority: i32) -> pb::Member {
    pb::Member {
        pool: pool.into(),
        provider: provider.into(),
        upstream_model: model.into(),
        priority,
        ..Default::default()
    }
}

fn pool(name: &str) -> pb::Pool {
    pb::Pool {
        name: name.into(),
        strategy: pb::Strategy::Priority.into(),
        failover: Some(pb::FailoverPolicy {
            transient_retries: 0,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A canned tool call (unary and streamed), as OpenAI sends it.
fn tool_call_reply() -> Fault {
    let unary = json!({"id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": "gpt-tools",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}});
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        let c = json!({"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": "gpt-tools",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let sse = [
        chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), None),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}), None),
        chunk(json!({}), Some("tool_calls")),
        "data: [DONE]\n\n".to_owned(),
    ]
    .concat();
    Fault::Reply {
        json: unary.to_string(),
        sse,
    }
}

/// Anthropic answering a forced tool with the JSON asked for.
fn structured_reply() -> Fault {
    let unary = json!({"id": "msg_j", "type": "message", "role": "assistant", "model": "claude-json",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "Weather", "input": {"city": "Oslo", "celsius": -3}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 10}});
    Fault::Reply {
        json: unary.to_string(),
        sse: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_through_the_http_door_unchanged() {
    // First, before any server: the first call may make the tools' venv.
    let python = switchyard_testkit::tools::python();
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = control_plane(&prefix, dir.path(), ADMIN, &[]).await;
    let w = worker(
        &redis_url(),
        &prefix,
        &[
            // The harness waits for revisions with the deprecated token;
            // the SDK presents a caller key.
            ("SWITCHYARD_INFERENCE_TOKENS", CALLER_TOKEN),
            ("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let http = http_addr(&w).await;
    let mut admin = admin_client(&cp, ADMIN).await;
    let provider = |name: &str, kind: pb::ProviderKind| pb::Provider {
        name: name.into(),
        kind: kind.into(),
        base_url: fake.base_url(),
        ..Default::default()
    };
    admin
        .apply_config(pb::ApplyConfigRequest {
            config: Some(pb::ConfigDocument {
                providers: vec![
                    provider("fake", pb::ProviderKind::Openai),
                    provider("ant", pb::ProviderKind::Anthropic),
                ],
                pools: [
                    "chat",
                    "failing",
                    "tools",
                    "structured",
                    "claude",
                    "emb",
                    "broken",
                ]
                .map(pool)
                .to_vec(),
                members: vec![
                    member("chat", "fake", "gpt-a", 0),
                    member("failing", "fake", "bad", 10),
                    member("failing", "fake", "gpt-b", 0),
                    member("tools", "fake", "gpt-tools", 0),
                    member("structured", "ant", "claude-json", 0),
                    member("claude", "ant", "claude-a", 0),
                    member("emb", "fake", "emb-1", 0),
                    member("broken", "fake", "gpt-broken", 0),
                ],
                routes: vec![],
            }),
            ..Default::default()
        })
        .await
        .expect("apply");
    let created = admin
        .create_caller(pb::CreateCallerRequest {
            caller: Some(pb::Caller {
                name: "sdk-app".into(),
                models: vec!["*".into()],
                ..Default::default()
            }),
        })
        .await
        .expect("caller")
        .into_inner();
    let snapshot = admin
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let member_id = |model: &str| {
        snapshot
            .pools
            .iter()
            .flat_map(|p| &p.members)
            .find(|m| m.upstream_model == model)
            .map(|m| m.id.clone())
            .expect("member")
    };
    wait_revision(&w, snapshot.revision).await;
    fake.set_fault("bad", status(503));
    fake.set_fault("gpt-tools", tool_call_reply());
    fake.set_fault("claude-json", structured_reply());
    fake.set_fault("gpt-broken", Fault::DropAfter(2));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_door.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("SWITCHYARD_BASE_URL", format!("http://{http}/v1"))
        .env("SWITCHYARD_KEY", &created.key)
        .env("FAILING_MEMBER", member_id("bad"))
        .env("SERVING_MEMBER", member_id("gpt-b"))
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nworker logs:\n{}",
        w.logs()
    );
    let passed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ok "))
        .collect();
    assert_eq!(
        passed,
        [
            "chat",
            "stream",
            "tools",
            "json_schema",
            "image",
            "embeddings",
            "models",
            "errors",
            "failover",
            "broken_stream"
        ]
    );
    // What the SDK sent reached the upstreams translated.
    let structured = fake.last_body("claude-json").expect("called");
    assert_eq!(
        structured["tool_choice"],
        json!({"type": "tool", "name": "Weather"})
    );
    let image = fake.last_body("claude-a").expect("called");
    assert_eq!(
        image["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}})
    );
    let tools = fake.last_body("gpt-tools").expect("called");
    assert_eq!(tools["tool_choice"], "required");
    assert_eq!(tools["tools"][0]["function"]["strict"], true);
    // The key is the caller's (not the deprecated token the worker also
    // takes), and never shows in the worker's logs.
    assert!(w.logs().contains(r#""caller":"sdk-app""#), "{}", w.logs());
    assert!(!w.logs().contains(&created.key));
}
