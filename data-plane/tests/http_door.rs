//! The HTTP door on the wire, with a plain HTTP client: limits, keys,
//! deadlines, a client that leaves, streams that fail over before their
//! first chunk and break after it, and the statuses an SDK's retry logic
//! reads (429/503 with Retry-After, 504).
// Tests read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use switchyard_proto::v1 as pb;

struct Door {
    fake: FakeUpstream,
    _prefix: RedisPrefix,
    worker: ServerProc,
    base: String,
}

/// Pools: "p" (PRIORITY: "bad" then "good"), "one" (just "solo"), "limited"
/// ("lim", 1 request a minute). Callers present the deprecated token.
async fn door() -> Door {
    let fake = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let policy = policy(0, 3, 1000);
    let mut config = Config::default();
    config
        .provider("up", pb::ProviderKind::Openai, &fake.base_url(), None)
        .pool(
            "p",
            pb::Strategy::Priority,
            policy,
            &[("up", "bad", 10), ("up", "good", 0)],
        )
        .pool("one", pb::Strategy::Priority, policy, &[("up", "solo", 0)])
        .pool(
            "limited",
            pb::Strategy::Priority,
            policy,
            &[("up", "lim", 0)],
        )
        .member_limits("limited", "lim", Some(1), None);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let worker = worker(
        &redis_url(),
        &prefix,
        &[
            ("SWITCHYARD_INFERENCE_TOKENS", CALLER_TOKEN),
            ("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0"),
            ("SWITCHYARD_HTTP_MAX_BODY_BYTES", "4000"),
        ],
    )
    .await;
    wait_revision(&worker, 1).await;
    let base = format!("http://{}", http_addr(&worker).await);
    Door {
        fake,
        _prefix: prefix,
        worker,
        base,
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

async fn post(d: &Door, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = http()
        .post(format!("{}/v1/chat/completions", d.base))
        .bearer_auth(CALLER_TOKEN)
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("the door answers")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn keys_limits_and_unknown_paths_get_openai_errors() {
    let d = door().await;
    let c = http();
    // No key: 401, OpenAI's error shape.
    let r = c
        .post(format!("{}/v1/chat/completions", d.base))
        .json(&chat("p", false))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["type"], "authentication_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("Bearer")),
        "{e}"
    );
    // A wrong key: 401 too, nothing served.
    let r = c
        .get(format!("{}/v1/models", d.base))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    // Too large: 413 before anything is read into the engine.
    let big = json!({"model": "p", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let r = post(&d, &big, &[]).await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "request_too_large");
    // A path the door does not serve: 404 saying what it serves.
    let r = c
        .post(format!("{}/v1/completions", d.base))
        .bearer_auth(CALLER_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.expect("json");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/v1/chat/completions"))
    );
    // Health for load balancers: open, 200 with a config.
    let r = c
        .get(format!("{}/healthz", d.base))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert_eq!(d.fake.total_calls(), 0);
}

#[tokio::test]
async fn a_member_over_its_limit_is_429_with_retry_after_and_a_benched_pool_503() {
    let d = door().await;
    let r = post(&d, &chat("limited", false), &[]).await;
    assert_eq!(r.status(), 200);
    let r = post(&d, &chat("limited", false), &[]).await;
    assert_eq!(r.status(), 429);
    let after: u64 = header(&r, "retry-after")
        .parse()
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&after), "{after}");
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["type"], "rate_limit_error");
    // The only member says 429 with Retry-After: benched, and the caller is
    // told when it is due back (503 + Retry-After), without another call.
    d.fake.set_fault(
        "solo",
        Fault::Status {
            code: 429,
            retry_after_secs: Some(7),
            body: None,
        },
    );
    let r = post(&d, &chat("one", false), &[]).await;
    assert_eq!(r.status(), 503, "{:?}", r.text().await);
    let r = post(&d, &chat("one", false), &[]).await;
    assert_eq!(r.status(), 503);
    let after: u64 = header(&r, "retry-after").parse().expect("Retry-After");
    assert!((1..=7).contains(&after), "{after}");
    assert_eq!(
        d.fake.calls("solo"),
        1,
        "a benched member is not called again"
    );
    // Every member failing without a hint: 502 naming each failure.
    d.fake.set_fault("bad", status(500));
    d.fake.set_fault("good", status(500));
    let r = post(&d, &chat("p", false), &[]).await;
    assert_eq!(r.status(), 502);
    let e: Value = r.json().await.expect("json");
    let m = e["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains("bad") && m.contains("good"), "{m}");
}

#[tokio::test]
async fn streams_fail_over_before_the_first_chunk_and_end_with_an_error_when_cut_after() {
    let d = door().await;
    d.fake.set_fault("bad", status(503));
    let r = post(&d, &chat("p", true), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let attempts = header(&r, "x-switchyard-attempts");
    assert!(
        attempts.ends_with(":ok") && attempts.contains(":transient,"),
        "{attempts}"
    );
    assert_eq!(header(&r, "x-switchyard-upstream"), "up/good");
    let body = r.text().await.expect("body");
    assert!(body.contains(r#"{"content":"good"}"#), "{body}");
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    // Cut after two chunks: the chunks, then an error event, and no [DONE].
    d.fake.set_fault("solo", Fault::DropAfter(2));
    let r = post(&d, &chat("one", true), &[]).await;
    assert_eq!(r.status(), 200, "committed before it broke");
    let body = r.text().await.expect("body");
    let events: Vec<&str> = body.split("\n\n").filter(|e| !e.is_empty()).collect();
    let last: Value = serde_json::from_str(
        events
            .last()
            .and_then(|e| e.strip_prefix("data: "))
            .unwrap_or("{}"),
    )
    .expect("the last event is JSON");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("mid-stream")),
        "{body}"
    );
    assert!(!body.contains("[DONE]"), "{body}");
    assert_eq!(d.fake.calls("solo"), 1, "never replayed elsewhere");
}

#[tokio::test]
async fn a_deadline_from_the_headers_bounds_the_call_and_a_client_that_leaves_cancels_it() {
    let d = door().await;
    d.fake.set_fault("solo", Fault::StallAfter(0));
    let started = std::time::Instant::now();
    let r = post(
        &d,
        &chat("one", false),
        &[("x-switchyard-timeout-ms", "400")],
    )
    .await;
    assert_eq!(r.status(), 504);
    assert!(header(&r, "x-switchyard-attempts").ends_with(":deadline"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The OpenAI SDKs send their timeout as x-stainless-timeout (seconds).
    let r = post(&d, &chat("one", false), &[("x-stainless-timeout", "0.4")]).await;
    assert_eq!(r.status(), 504);
    // A client that gives up without saying: the upstream call is cut too.
    let before = d.fake.cancelled();
    let gone = http()
        .post(format!("{}/v1/chat/completions", d.base))
        .bearer_auth(CALLER_TOKEN)
        .timeout(Duration::from_millis(300))
        .json(&chat("one", false))
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out");
    eventually("the upstream call is cancelled", || {
        d.fake.cancelled() > before
    })
    .await;
    eventually("nothing in flight upstream", || d.fake.in_flight() == 0).await;
    assert!(d.worker.logs().contains("\"caller\":\"token\""));
}
