//! The trust boundary on the request path (issue 17), against real workers,
//! real Redis and a fake upstream that answers like the real APIs (an
//! unknown body field gets a 400 naming it): no text a caller shapes
//! benches a member; `extra_json` cannot switch off what limits and budgets
//! count; an answer without usage is charged its upper bound; hops with no
//! fault spend no retry budget.
// Tests spawn callers freely.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use pb::AttemptOutcome as O;
use switchyard_proto::v1 as pb;
use tonic::Code;

fn with_extra(model: &str, extra: &str) -> pb::GenerateRequest {
    pb::GenerateRequest {
        extra_json: extra.into(),
        ..ask(model, "hi")
    }
}

/// A round-robin pool "p" of `members` on the fake `up` (threshold 1),
/// `tune`d, and one worker serving it.
async fn one_worker(
    up: &FakeUpstream,
    members: &[(&str, &str, i32)],
    tune: impl FnOnce(&mut Config),
) -> (RedisPrefix, ServerProc) {
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &up.base_url(),
        pb::Strategy::RoundRobin,
        policy(0, 1, 60_000),
        members,
    );
    tune(&mut config);
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(
        &redis_url(),
        &prefix,
        &[("SWITCHYARD_HTTP_LISTEN", "127.0.0.1:0")],
    )
    .await;
    wait_revision(&w, 1).await;
    (prefix, w)
}

#[tokio::test]
async fn a_field_named_like_a_provider_error_benches_no_member() {
    let up = fake().await;
    let (_prefix, w) = one_worker(&up, &[("up", "a", 0), ("up", "b", 0)], |_| {}).await;
    for m in ["a", "b"] {
        up.set_fault(m, Fault::StrictFields);
    }
    let mut c = client(&w).await;

    // The upstream answers 400 "Unrecognized request argument supplied:
    // insufficient_quota": the caller's own mistake, returned at once.
    for field in [
        "insufficient_quota",
        "billing_not_active",
        "context_length_exceeded",
        "model_not_found",
    ] {
        let err = c
            .generate(with_extra("p", &format!(r#"{{"{field}": 1}}"#)))
            .await
            .expect_err("the upstream refuses the field");
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{}", err.message());
    }
    assert_eq!(
        up.total_calls(),
        4,
        "each refused once, by the first member; nothing failed over"
    );
    // Every member is still in service: ordinary requests are served by both.
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = c
            .generate(ask("p", "hi"))
            .await
            .expect("ordinary requests are served")
            .into_inner();
        assert_eq!(r.attempts.len(), 1, "{:?}", outcomes(&r.attempts));
        served.insert(r.served_by.map(|s| s.upstream_model).unwrap_or_default());
    }
    assert_eq!(served.len(), 2, "no member was benched: {served:?}");

    // Field names that are not identifiers never reach an upstream.
    let before = up.total_calls();
    for extra in [
        r#"{"credit balance": 1}"#,
        r#"{"maximum context length": 1}"#,
        r#"{"The model `x` does not exist": 1}"#,
        r#"{"": 1}"#,
    ] {
        let err = c
            .generate(with_extra("p", extra))
            .await
            .expect_err("not a field name");
        assert_eq!(err.code(), Code::InvalidArgument, "{extra}");
        assert!(
            err.message().contains("not a field name"),
            "{}",
            err.message()
        );
    }
    assert_eq!(up.total_calls(), before, "nothing was sent upstream");

    // The same over the HTTP door, where unknown body fields are extra fields.
    let door = format!("http://{}/v1/chat/completions", http_addr(&w).await);
    let http = reqwest::Client::new();
    for (field, from_upstream) in [("insufficient_quota", true), ("credit balance", false)] {
        let before = up.total_calls();
        let r = http
            .post(&door)
            .json(&serde_json::json!({
                "model": "p",
                "messages": [{"role": "user", "content": "hi"}],
                field: 1
            }))
            .send()
            .await
            .expect("door");
        assert_eq!(r.status(), 400, "{field}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        if from_upstream {
            assert_eq!(up.total_calls(), before + 1, "refused by the first member");
        } else {
            assert_eq!(body["error"]["param"], field, "{body}");
            assert_eq!(up.total_calls(), before, "never sent");
        }
    }
    for _ in 0..4 {
        let r = c.generate(ask("p", "hi")).await.expect("still served");
        assert_eq!(r.into_inner().attempts.len(), 1);
    }
}

#[tokio::test]
async fn extra_json_cannot_set_what_limits_and_budgets_count() {
    let up = fake().await;
    let (_prefix, w) = one_worker(&up, &[("up", "a", 0)], |_| {}).await;
    let mut c = client(&w).await;
    for (key, extra) in [
        (
            "stream_options",
            r#"{"stream_options": {"include_usage": false}}"#,
        ),
        ("stream", r#"{"stream": false}"#),
        ("max_tokens", r#"{"max_tokens": 100000}"#),
        (
            "max_completion_tokens",
            r#"{"max_completion_tokens": 100000}"#,
        ),
        ("n", r#"{"n": 8}"#),
    ] {
        let err = c
            .generate_stream(with_extra("p", extra))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{key}");
        assert!(
            err.message().contains(&format!("extra_json.{key} ")),
            "names the key: {}",
            err.message()
        );
    }
    assert_eq!(up.total_calls(), 0);
    // A stream always asks an OpenAI-compatible member for its usage frame.
    let s = c
        .generate_stream(with_extra("p", r#"{"service_tier": "flex"}"#))
        .await
        .expect("stream")
        .into_inner();
    drain_ok(s).await;
    let body = up.last_body("a").expect("sent");
    assert_eq!(body["stream_options"]["include_usage"], true, "{body}");
    assert_eq!(body["service_tier"], "flex", "other extra fields pass");
}

/// The tokens this (only) worker has charged `model` this minute, once they
/// are `at_least` (charges travel in the background): what ListModels says
/// the minute counts (permits are counted when leased) less the leased
/// tokens the worker still holds unused, read while that holding is steady.
async fn tokens_this_minute(w: &ServerProc, model: &str, at_least: u64) -> u64 {
    let mut c = client(w).await;
    let held = |text: String| {
        sample(&text, "switchyard_fleet_permits_held_tokens", &[]).unwrap_or(0.0) as u64
    };
    let mut seen = 0;
    for _ in 0..100 {
        let before = held(scrape(w).await);
        let models = c
            .list_models(pb::ListModelsRequest {})
            .await
            .expect("models")
            .into_inner();
        let leased = models
            .models
            .iter()
            .flat_map(|m| m.members.iter())
            .filter(|m| m.upstream_model == model)
            .map(|m| m.tokens_this_minute)
            .max()
            .unwrap_or(0);
        if held(scrape(w).await) == before {
            seen = leased.saturating_sub(before);
            if seen >= at_least {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

#[tokio::test]
async fn an_answer_without_usage_is_charged_its_upper_bound() {
    let up = fake().await;
    let (_prefix, w) = one_worker(&up, &[("up", "quiet", 0)], |config| {
        config
            .member_limits("p", "quiet", None, Some(1_000_000))
            .member_max_output("p", "quiet", 500);
    })
    .await;
    up.set_fault("quiet", Fault::NoUsage);
    let mut c = client(&w).await;

    // A stream whose upstream never sends usage: the prompt estimate plus the
    // member's max output (500), not the prompt alone.
    let s = c
        .generate_stream(ask("p", "hi"))
        .await
        .expect("stream")
        .into_inner();
    let (events, _) = drain_ok(s).await;
    assert!(!text_of(&events).is_empty());
    let after_stream = tokens_this_minute(&w, "quiet", 500).await;
    assert!(
        (500..520).contains(&after_stream),
        "a stream without usage is charged its bound: {after_stream}"
    );
    // A unary answer without usage, with max_tokens set: that cap is the bound.
    c.generate(pb::GenerateRequest {
        max_tokens: Some(40),
        ..ask("p", "hi")
    })
    .await
    .expect("unary");
    let after_unary = tokens_this_minute(&w, "quiet", after_stream + 40).await;
    assert!(
        (after_stream + 40..after_stream + 60).contains(&after_unary),
        "{after_stream} → {after_unary}"
    );
    let text = scrape(&w).await;
    assert_eq!(
        sample(
            &text,
            "switchyard_usage_missing_total",
            &[("pool", "p"), ("member", "p-quiet")]
        ),
        Some(2.0),
        "{text}"
    );
    // With usage reported, the upstream's count is what is charged.
    up.clear_fault("quiet");
    c.generate(ask("p", "hi")).await.expect("unary");
    let settled = tokens_this_minute(&w, "quiet", after_unary + 1).await;
    assert!(
        settled > after_unary && settled < after_unary + 100,
        "{after_unary} → {settled}"
    );
}

/// A pool mixing wire formats, where callers send options one member's
/// format cannot take (`seed` on Anthropic) and a member that does not know
/// its model: every request is served, none is refused for a spent retry
/// budget, and the member that cannot take the request is never called.
#[tokio::test(flavor = "multi_thread")]
async fn hops_with_no_fault_spend_no_retry_budget() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider("oai", pb::ProviderKind::Openai, &up.base_url(), None)
        .provider(
            "ant",
            pb::ProviderKind::Anthropic,
            &up.base_url(),
            Some("sk-ant"),
        )
        .pool(
            "mixed",
            pb::Strategy::RoundRobin,
            policy(0, 3, 60_000),
            &[("ant", "claude", 0), ("oai", "ghost", 0), ("oai", "gpt", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let workers = fleet_of(2, &prefix).await;
    up.set_fault("ghost", Fault::UnknownModel);
    let clients = [client(&workers[0]).await, client(&workers[1]).await];

    // 50 requests a second for 4 s, spread over both workers.
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..200 {
        tick.tick().await;
        let mut c = clients[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            c.generate(pb::GenerateRequest {
                seed: Some(7),
                ..ask("mixed", "hi")
            })
            .await
            .map(tonic::Response::into_inner)
        }));
    }
    let mut unsupported = 0;
    for t in tasks {
        let r = t
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("every request is served: {e:?}"));
        assert_eq!(
            r.served_by.map(|s| s.upstream_model).as_deref(),
            Some("gpt")
        );
        for (model, outcome) in outcomes(&r.attempts) {
            assert_ne!(outcome, O::BudgetRefused);
            if model == "claude" {
                assert_eq!(outcome, O::Unsupported);
                unsupported += 1;
            }
        }
    }
    assert!(unsupported > 0, "the Anthropic member was passed over");
    assert_eq!(up.calls("claude"), 0, "nothing was sent to it");
    assert!(up.calls("ghost") > 0);
}

/// No cap on either side and no usage: a stream that streamed more than the
/// default bound is charged what it streamed, not the bound.
#[tokio::test]
async fn a_long_stream_without_usage_is_charged_at_least_what_it_streamed() {
    let up = FakeUpstream::start(FakeConfig {
        chunks: 6000,
        ..FakeConfig::default()
    })
    .await;
    let (_prefix, w) = one_worker(&up, &[("up", "long", 0)], |config| {
        config.member_limits("p", "long", None, Some(10_000_000));
    })
    .await;
    up.set_fault("long", Fault::NoUsage);
    let s = client(&w)
        .await
        .generate_stream(ask("p", "hi"))
        .await
        .expect("stream")
        .into_inner();
    let (events, _) = drain_ok(s).await;
    let streamed = u64::try_from(text_of(&events).len()).expect("len");
    let expected = streamed.div_ceil(4);
    assert!(
        expected > 4096,
        "the answer is longer than the default bound"
    );
    let charged = tokens_this_minute(&w, "long", expected).await;
    assert!(
        (expected..expected + 10).contains(&charged),
        "streamed ~{expected} tokens, charged {charged}"
    );
}

/// A direct `provider/model` call to a model no member serves: the name is
/// the caller's, so its failures leave no health entry in Redis (the old
/// code made one per made-up name, without bound).
#[tokio::test]
async fn a_made_up_direct_name_leaves_no_health_state() {
    let up = fake().await;
    let (prefix, w) = one_worker(&up, &[("up", "a", 0)], |_| {}).await;
    up.set_fault("made-up-1", status(503));
    up.set_fault("a", status(503));
    let mut c = client(&w).await;
    let err = c
        .generate(ask("up/made-up-1", "hi"))
        .await
        .expect_err("the upstream fails");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // The configured member's failure does reach the fleet's table.
    c.generate(ask("p", "hi")).await.expect_err("fails");
    let keys = switchyard_shared::keys::RedisKeys::new(prefix.0.clone());
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut fields: Vec<String> = Vec::new();
    for _ in 0..50 {
        fields = redis::cmd("HKEYS")
            .arg(keys.health_table())
            .query_async(&mut conn)
            .await
            .expect("HKEYS");
        if !fields.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fields, vec!["p-a".to_owned()], "only the member's entry");
}
