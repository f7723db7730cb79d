//! The production path end to end: the real control plane publishes through
//! Redis, a real worker follows it and serves from a fake upstream with the
//! credential the control plane sealed.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use switchyard_proto::v1::control_plane_client::ControlPlaneClient;
use tonic::Code;

const ADMIN: &str = "e2e-admin-token";

fn admin<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("header"),
    );
    r
}

#[tokio::test]
async fn a_change_made_through_the_control_plane_reaches_a_running_worker() {
    let up = FakeUpstream::start(FakeConfig::default()).await;
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = control_plane(&prefix, dir.path(), ADMIN, &[]).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    let mut admin_client = ControlPlaneClient::connect(format!("http://{}", cp.addr))
        .await
        .expect("connect");

    admin_client
        .create_provider(admin(pb::CreateProviderRequest {
            provider: Some(pb::Provider {
                name: "fake".into(),
                kind: pb::ProviderKind::Openai.into(),
                base_url: up.base_url(),
                credential: Some(pb::CredentialInput {
                    source: Some(pb::credential_input::Source::Inline(
                        "sk-e2e-sealed-secret-42".into(),
                    )),
                }),
                ..Default::default()
            }),
        }))
        .await
        .expect("provider");
    admin_client
        .create_pool(admin(pb::CreatePoolRequest {
            pool: Some(pb::Pool {
                name: "coding".into(),
                ..Default::default()
            }),
        }))
        .await
        .expect("pool");
    let member = admin_client
        .create_member(admin(pb::CreateMemberRequest {
            member: Some(pb::Member {
                pool: "coding".into(),
                provider: "fake".into(),
                upstream_model: "gpt-e2e".into(),
                ..Default::default()
            }),
        }))
        .await
        .expect("member")
        .into_inner();
    wait_revision(&w, 3).await;

    let mut c = client(&w).await;
    let r = c
        .generate(ask("coding", "hello"))
        .await
        .expect("served")
        .into_inner();
    assert!(r.content.starts_with("gpt-e2e says hello"), "{}", r.content);
    let auth = up.last_headers("gpt-e2e").and_then(|h| {
        h.get("authorization")
            .map(|v| v.to_str().unwrap_or("").to_owned())
    });
    assert_eq!(
        auth.as_deref(),
        Some("Bearer sk-e2e-sealed-secret-42"),
        "the worker opened what the control plane sealed"
    );

    admin_client
        .update_member(admin(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                id: member.id.clone(),
                status: pb::MemberStatus::Inactive.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["status".into()],
            }),
        }))
        .await
        .expect("deactivate");
    wait_revision(&w, 4).await;
    let err = c
        .generate(ask("coding", "hello"))
        .await
        .expect_err("no active member");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "no active member in pool 'coding'");
    for log in [cp.logs(), w.logs()] {
        assert!(!log.contains("sk-e2e-sealed-secret-42"), "secret in logs");
    }
}

/// The family a sample belongs to (`x_total` → `x`, `x_bucket` → `x`, …).
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

fn family_of(sample: &str) -> Vec<String> {
    let mut out = vec![sample.to_owned()];
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            out.push(base.to_owned());
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboards_and_alerts_use_is_one_the_servers_export() {
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = control_plane(&prefix, dir.path(), ADMIN, &[]).await;
    // A series appears with its first event: one write on the control plane…
    let mut admin_client = ControlPlaneClient::connect(format!("http://{}", cp.addr))
        .await
        .expect("connect");
    admin_client
        .create_provider(admin(pb::CreateProviderRequest {
            provider: Some(pb::Provider {
                name: "fake".into(),
                kind: pb::ProviderKind::Openai.into(),
                base_url: "http://127.0.0.1:9/v1".into(),
                ..Default::default()
            }),
        }))
        .await
        .expect("created");
    // …and, on a worker of its own (its own prefix), a failover that
    // benches member a, a probe that brings it back, and a stream.
    let s = setup(policy(0, 1, 200), &[]).await;
    s.fake.set_fault("a", status(503));
    let mut c = client(&s.worker).await;
    c.generate(ask("p", "fails over")).await.expect("b serves");
    s.fake.clear_fault("a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.generate(ask("p", "probes a")).await.expect("a serves");
    let stream = c
        .generate_stream(ask("p", "stream"))
        .await
        .expect("stream")
        .into_inner();
    drain_ok(stream).await;
    let mut exported = std::collections::BTreeSet::new();
    for _ in 0..50 {
        exported = families(&scrape(&cp).await)
            .into_iter()
            .chain(families(&scrape(&s.worker).await))
            .collect();
        if exported.contains("switchyard_control_plane_publish_lag_seconds")
            && exported.contains("switchyard_probes")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let used = switchyard_testkit::dashboards::metrics_used();
    assert!(used.len() > 20, "the deploy files use metrics: {used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|s| !family_of(s).iter().any(|f| exported.contains(f)))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/ uses metrics no server exports: {missing:?}; exported families: {exported:?}"
    );
}
