//! The classification table over real HTTP: each kind of upstream answer,
//! what failover does with it, and whether the member is benched.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use pb::AttemptOutcome as O;
use switchyard_proto::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn model_not_found_moves_on_without_penalty() {
    let s = setup(policy(1, 1, 60_000), &[]).await;
    s.fake.set_fault("a", Fault::UnknownModel);
    let r = client(&s.worker)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("served by b")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![("a".into(), O::ModelNotFound), ("b".into(), O::Ok)]
    );
    let models = client(&s.worker)
        .await
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("models")
        .into_inner();
    let p = models
        .models
        .iter()
        .find(|m| m.name == "p")
        .expect("pool listed");
    let a = p
        .members
        .iter()
        .find(|m| m.upstream_model == "a")
        .expect("member a");
    assert!(
        a.available && a.consecutive_failures == 0,
        "not benched by a 404: {a:?}"
    );
}

#[tokio::test]
async fn bad_requests_return_at_once_refused_credentials_move_on() {
    let s = setup(policy(1, 10, 1000), &[]).await;
    s.fake.set_fault("a", status(400));
    let err = client(&s.worker)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect_err("400 is the caller's");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(
        s.fake.calls("b"),
        0,
        "another member would fail the same way"
    );
    assert!(err.metadata().get("x-switchyard-attempts").is_some());

    s.fake.set_fault("a", status(401));
    // A refused credential is the member's problem, not the caller's: it is
    // benched (for long) and another member serves.
    let r = client(&s.worker)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("b serves")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![("a".into(), O::Auth), ("b".into(), O::Ok)]
    );
    let r = client(&s.worker)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect("b serves")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![("a".into(), O::SkippedBenched), ("b".into(), O::Ok)],
        "benched: not asked again"
    );
    // Only when no member serves does the caller see the upstream's code.
    s.fake.set_fault("b", status(401));
    let err = client(&s.worker)
        .await
        .generate(ask("p", "hi"))
        .await
        .expect_err("401 everywhere");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    s.fake.set_fault("a", status(400));
    s.fake.clear_fault("b");

    let mut config = s.config.clone();
    let mut advancing = policy(1, 10, 1000);
    advancing.advance_on_permanent = true;
    config.pool(
        "adv",
        pb::Strategy::Priority,
        advancing,
        &[("up", "a", 10), ("up", "b", 0)],
    );
    config.publish(&redis_url(), &s.prefix, 2, true).await;
    wait_revision(&s.worker, 2).await;
    let r = client(&s.worker)
        .await
        .generate(ask("adv", "hi"))
        .await
        .expect("advances")
        .into_inner();
    assert_eq!(
        outcomes(&r.attempts),
        vec![("a".into(), O::Permanent), ("b".into(), O::Ok)]
    );
}

/// Every row of the classification table, over real HTTP: what the member's
/// answer is classed as, and whether it is then benched.
#[tokio::test]
async fn each_row_of_the_classification_table_over_http() {
    let s = setup(policy(0, 10, 60_000), &[]).await;
    let mut config = s.config.clone();
    config.provider(
        "claude",
        pb::ProviderKind::Anthropic,
        &s.fake.base_url(),
        Some("sk-ant-test-key-9999"),
    );
    let status = |code, retry_after_secs, body: Option<&str>| Fault::Status {
        code,
        retry_after_secs,
        body: body.map(Into::into),
    };
    // (pool, provider, failing model, its fault, class, benched afterwards)
    let rows = [
        (
            "rl",
            "up",
            "rl-x",
            status(429, Some(20), None),
            O::RateLimited,
            true,
        ),
        (
            "quota",
            "up",
            "quota-x",
            status(
                429,
                None,
                Some(
                    r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
                ),
            ),
            O::Auth,
            true,
        ),
        (
            "overload",
            "claude",
            "overload-x",
            status(529, None, None),
            O::RateLimited,
            true,
        ),
        (
            "path",
            "up",
            "path-x",
            status(404, None, None),
            O::Transient,
            false,
        ),
        (
            "unknown",
            "up",
            "unknown-x",
            Fault::UnknownModel,
            O::ModelNotFound,
            false,
        ),
        (
            "ctx",
            "up",
            "ctx-x",
            status(
                400,
                None,
                Some(
                    r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
                ),
            ),
            O::ContextTooLong,
            false,
        ),
        (
            "down",
            "up",
            "down-x",
            status(503, None, None),
            O::Transient,
            false,
        ),
    ];
    for (pool, provider, model, _, _, _) in &rows {
        config.pool(
            pool,
            pb::Strategy::Priority,
            policy(0, 10, 60_000),
            &[(provider, model, 10), ("up", "b", 0)],
        );
    }
    config.publish(&redis_url(), &s.prefix, 2, true).await;
    wait_revision(&s.worker, 2).await;
    for (pool, _, model, fault, class, benched) in rows {
        s.fake.set_fault(model, fault);
        let mut c = client(&s.worker).await;
        let r = c
            .generate(ask(pool, "hi"))
            .await
            .unwrap_or_else(|e| panic!("{pool}: b serves: {e:?}"))
            .into_inner();
        assert_eq!(
            outcomes(&r.attempts),
            vec![(model.into(), class), ("b".into(), O::Ok)],
            "{pool}"
        );
        let r = c.generate(ask(pool, "hi")).await.expect("b").into_inner();
        let again = outcomes(&r.attempts)[0].1;
        assert_eq!(
            again == O::SkippedBenched,
            benched,
            "{pool}: benched afterwards? {again:?}"
        );
    }
}
