//! Caller keys end to end, with the real binaries: the control plane makes
//! a caller and shows its key once; a worker checks the key from its memory
//! (the snapshot carries only keyed hashes), enforces the caller's models,
//! direct access and rpm limit, and stops a revoked or rotated-out key within
//! a config propagation. Redis, Postgres dumps and logs never hold the key.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

const ADMIN: &str = "callers-admin-token";

async fn create_caller(cp: &mut Cp, caller: pb::Caller) -> (pb::Caller, String, u64) {
    let r = cp
        .create_caller(pb::CreateCallerRequest {
            caller: Some(caller),
        })
        .await
        .expect("create caller")
        .into_inner();
    let rev = cp
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner()
        .revision;
    (r.caller.expect("caller"), r.key, rev)
}

async fn code_of(c: &mut Dp, model: &str) -> (Code, String) {
    match c.generate(ask(model, "hi")).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

#[tokio::test]
async fn each_service_gets_its_own_key_scope_and_limit_and_a_revoked_key_stops_everywhere() {
    let fake = fake().await;
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let cp = control_plane(&prefix, dir.path(), ADMIN, &[]).await;
    // Caller keys, with the deprecated flat token list still set (the
    // harness waits for revisions with it: the migration path).
    let env = [("SWITCHYARD_INFERENCE_TOKENS", CALLER_TOKEN)];
    let w1 = worker(&redis_url(), &prefix, &env).await;
    let w2 = worker(&redis_url(), &prefix, &env).await;
    assert!(
        w1.logs()
            .contains("SWITCHYARD_INFERENCE_TOKENS is deprecated")
    );
    let mut admin = admin_client(&cp, ADMIN).await;
    two_pools(&mut admin, &fake.base_url()).await;
    let (billing, key, rev) = create_caller(
        &mut admin,
        pb::Caller {
            name: "billing-svc".into(),
            models: vec!["coding".into()],
            rpm_limit: Some(3),
            ..Default::default()
        },
    )
    .await;
    assert!(key.starts_with("sy_") && key.len() == 46, "{key}");
    assert!(key.starts_with(&billing.key_prefix));
    wait_revision(&w1, rev).await;
    wait_revision(&w2, rev).await;

    // The key works on every worker, for its model only.
    let mut c1 = as_caller(&w1, bearer(&key)).await;
    let mut c2 = as_caller(&w2, bearer(&key)).await;
    let ok = c1.generate(ask("coding", "hi")).await.expect("in scope");
    assert_eq!(
        ok.metadata()
            .get("x-switchyard-caller")
            .and_then(|v| v.to_str().ok()),
        Some("billing-svc")
    );
    assert!(!ok.into_inner().content.is_empty());
    let (code, msg) = code_of(&mut c2, "secret-pool").await;
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(
        msg.contains("caller 'billing-svc' may not use model 'secret-pool'")
            && msg.contains("its models are: coding"),
        "{msg}"
    );
    let (code, msg) = code_of(&mut c1, "fake/m-secret").await;
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(msg.contains("directly"), "{msg}");
    assert_eq!(
        fake.calls("m-secret"),
        0,
        "nothing out of scope reached the upstream"
    );
    // Pool statistics, too, cover only its pools.
    let stats = c1
        .get_pool_stats(pb::GetPoolStatsRequest {
            window_seconds: 60,
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(
        stats
            .pools
            .iter()
            .map(|p| p.pool.as_str())
            .collect::<Vec<_>>(),
        ["coding"]
    );
    // ListModels shows what the key may use.
    let models = c1
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("list")
        .into_inner()
        .models;
    assert_eq!(
        models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        ["coding"]
    );

    // Its rpm limit is fleet-wide: 3 across both workers, then RESOURCE_EXHAUSTED.
    let mut refused = None;
    for i in 0..6 {
        let c = if i % 2 == 0 { &mut c1 } else { &mut c2 };
        match c.generate(ask("coding", "hi")).await {
            Ok(_) => {}
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let refused = refused.expect("the limit holds");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused
            .metadata()
            .get("x-switchyard-caller")
            .and_then(|v| v.to_str().ok()),
        Some("billing-svc"),
        "a refusal names the caller too"
    );
    assert!(
        refused
            .message()
            .contains("caller 'billing-svc' used its limit for this minute")
            && refused.message().contains("of 3 requests"),
        "{}",
        refused.message()
    );
    assert!(refused.metadata().get("grpc-retry-pushback-ms").is_some());

    // A daily token budget, fleet-wide: spent, then RESOURCE_EXHAUSTED until midnight UTC.
    let (_, batch_key, rev) = create_caller(
        &mut admin,
        pb::Caller {
            name: "batch-svc".into(),
            models: vec!["*".into()],
            daily_token_budget: Some(5),
            ..Default::default()
        },
    )
    .await;
    wait_revision(&w1, rev).await;
    wait_revision(&w2, rev).await;
    let mut b1 = as_caller(&w1, bearer(&batch_key)).await;
    let mut b2 = as_caller(&w2, bearer(&batch_key)).await;
    let mut spent = None;
    for i in 0..20 {
        let c = if i % 2 == 0 { &mut b1 } else { &mut b2 };
        let (code, msg) = code_of(c, "coding").await;
        if code != Code::Ok {
            spent = Some((code, msg, i));
            break;
        }
        // The real usage settles in the background.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, msg, served) = spent.expect("the budget runs out");
    assert_eq!(code, Code::ResourceExhausted, "{msg}");
    assert!(
        msg.contains("caller 'batch-svc' spent its daily token budget")
            && msg.contains("of 5 tokens"),
        "{msg}"
    );
    assert!(served >= 1, "the first request is within the budget");

    // Bad and unknown keys: UNAUTHENTICATED, never INTERNAL.
    for header in [
        None,
        Some("Basic abc".to_owned()),
        Some("Bearer".to_owned()),
        bearer("sy_not-a-real-key"),
        Some(format!("Bearer {}", &key[..20])),
    ] {
        let mut c = as_caller(&w1, header.clone()).await;
        let (code, msg) = code_of(&mut c, "coding").await;
        assert_eq!(code, Code::Unauthenticated, "{header:?}: {msg}");
        assert!(!msg.contains(&key), "{msg}");
    }

    // Rotation with a grace period: old and new both work; then revoke the
    // old one at once by rotating again with no grace.
    let other = create_caller(
        &mut admin,
        pb::Caller {
            name: "search-svc".into(),
            models: vec!["*".into()],
            ..Default::default()
        },
    )
    .await;
    let (old_key, _) = (other.1.clone(), other.0);
    let rotated = admin
        .rotate_caller_key(pb::RotateCallerKeyRequest {
            id_or_name: "search-svc".into(),
            grace_seconds: 3600,
            ..Default::default()
        })
        .await
        .expect("rotate")
        .into_inner();
    assert_ne!(rotated.key, old_key);
    assert!(
        rotated
            .caller
            .as_ref()
            .and_then(|c| c.previous_key_expire_time)
            .is_some()
    );
    let rev = admin
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snap")
        .into_inner()
        .revision;
    wait_revision(&w1, rev).await;
    let mut old = as_caller(&w1, bearer(&old_key)).await;
    let mut new = as_caller(&w1, bearer(&rotated.key)).await;
    assert_eq!(code_of(&mut old, "secret-pool").await.0, Code::Ok, "grace");
    assert_eq!(code_of(&mut new, "secret-pool").await.0, Code::Ok);

    // Revocation reaches both workers within a config propagation.
    admin
        .update_caller(pb::UpdateCallerRequest {
            caller: Some(pb::Caller {
                name: "billing-svc".into(),
                enabled: Some(false),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["enabled".into()],
            }),
        })
        .await
        .expect("disable");
    let revoked_at = std::time::Instant::now();
    let mut stopped = [false, false];
    for _ in 0..100 {
        for (i, c) in [&mut c1, &mut c2].into_iter().enumerate() {
            if !stopped[i] {
                stopped[i] = code_of(c, "coding").await.0 == Code::Unauthenticated;
            }
        }
        if stopped.iter().all(|s| *s) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stopped.iter().all(|s| *s), "revoked on every worker");
    // Per-caller usage and refused keys, in each worker's metrics.
    let text = scrape(&w1).await + &scrape(&w2).await;
    let served = sample(
        &text,
        "switchyard_caller_requests_total",
        &[("caller", "billing-svc"), ("status", "ok")],
    );
    assert!(served.unwrap_or(0.0) >= 3.0, "{text}");
    assert!(
        sample(
            &text,
            "switchyard_caller_tokens_total",
            &[("caller", "billing-svc")]
        )
        .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "switchyard_caller_requests_total",
            &[("caller", "billing-svc"), ("status", "permission_denied")]
        )
        .is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "switchyard_auth_failures_total", &[]).unwrap_or(0.0) >= 5.0,
        "{text}"
    );
    assert!(!text.contains(&key[3..]), "no key in the metrics");
    eprintln!(
        "revocation took {:?} to reach both workers",
        revoked_at.elapsed()
    );

    // The key is nowhere but in the one response that showed it.
    let dump = redis_dump(&prefix).await;
    for k in [&key, &old_key, &rotated.key] {
        assert!(!dump.contains(k.as_str()), "a key in Redis");
        assert!(!w1.logs().contains(k.as_str()) && !w2.logs().contains(k.as_str()));
        assert!(
            !cp.logs().contains(k.as_str()),
            "a key in the control-plane logs"
        );
    }
    let listed = admin
        .list_callers(pb::ListCallersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(!format!("{listed:?}").contains(&key[3..]));
    let snap = admin
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snap")
        .into_inner();
    assert!(
        snap.callers
            .iter()
            .all(|c| c.key_hash.is_empty() && c.previous_key_hash.is_empty()),
        "GetSnapshot shows no key hashes"
    );
    let db = std::fs::read(dir.path().join("cp.db")).expect("sqlite file");
    assert!(
        !String::from_utf8_lossy(&db).contains(&key),
        "the database holds no key"
    );
}

/// Every key and value under the test's prefix, as text.
async fn redis_dump(prefix: &RedisPrefix) -> String {
    let client = redis::Client::open(redis_url()).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", prefix.0))
        .query_async(&mut c)
        .await
        .expect("keys");
    let mut out = String::new();
    for k in keys {
        let t: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut c)
            .await
            .expect("type");
        if t == "string" {
            let v: Vec<u8> = redis::cmd("GET")
                .arg(&k)
                .query_async(&mut c)
                .await
                .expect("get");
            out.push_str(&String::from_utf8_lossy(&v));
        }
        out.push_str(&k);
    }
    out
}

#[tokio::test]
async fn a_worker_that_would_check_nobody_refuses_to_start() {
    let prefix = RedisPrefix::new();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard-data-plane"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .env("REDIS_URL", redis_url())
        .env("SWITCHYARD_REDIS_PREFIX", &prefix.0)
        .env("SWITCHYARD_METRICS_LISTEN", "127.0.0.1:0")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("exits")
        .expect("runs");
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("nothing would check who calls"), "{text}");
    assert!(text.contains("--no-auth"), "{text}");

    // With --no-auth it starts, and says so.
    let w = worker(&redis_url(), &prefix, &[("SWITCHYARD_NO_AUTH", "true")]).await;
    assert!(w.logs().contains("authentication is OFF"), "{}", w.logs());
}
