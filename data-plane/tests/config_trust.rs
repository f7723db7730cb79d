//! What a worker takes from the config it is given: credential references
//! only within the allow-list (never a server setting, never sent
//! upstream), and only snapshots the control plane signed — a forged or
//! tampered snapshot written straight into Redis is refused, counted, and
//! the last good config keeps serving.

mod common;

use common::*;
use prost::Message as _;
use switchyard_proto::v1 as pb;
use switchyard_shared::seal::MasterKey;
use switchyard_shared::signed_snapshot;

/// The master key every harness worker is started with (common::MASTER_KEY).
fn harness_key() -> MasterKey {
    MasterKey::from_base64(MASTER_KEY).expect("key")
}

#[tokio::test]
async fn a_reference_to_a_server_setting_is_refused_and_never_sent_upstream() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::default();
    config
        .provider_reference("allowed", &up.base_url(), "env:SWITCHYARD_CRED_FAKE")
        .provider_reference("leak-master", &up.base_url(), "env:SWITCHYARD_MASTER_KEY")
        .provider_reference("leak-redis", &up.base_url(), "env:REDIS_URL")
        .provider_reference("leak-home", &up.base_url(), "env:HOME")
        .provider_reference("leak-file", &up.base_url(), "file:/etc/hostname")
        .pool(
            "good",
            pb::Strategy::RoundRobin,
            policy(0, 3, 1000),
            &[("allowed", "good-model", 0)],
        )
        .pool(
            "master",
            pb::Strategy::RoundRobin,
            policy(0, 3, 1000),
            &[("leak-master", "m-master", 0)],
        )
        .pool(
            "redis",
            pb::Strategy::RoundRobin,
            policy(0, 3, 1000),
            &[("leak-redis", "m-redis", 0)],
        )
        .pool(
            "home",
            pb::Strategy::RoundRobin,
            policy(0, 3, 1000),
            &[("leak-home", "m-home", 0)],
        )
        .pool(
            "file",
            pb::Strategy::RoundRobin,
            policy(0, 3, 1000),
            &[("leak-file", "m-file", 0)],
        );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(
        &redis_url(),
        &prefix,
        &[
            ("SWITCHYARD_CRED_FAKE", "sk-allowed-0000"),
            ("HOME", "/home/not-a-secret-9f2c"),
        ],
    )
    .await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;

    // The allowed reference goes out as the key.
    c.generate(ask("good", "hi"))
        .await
        .expect("good pool serves");
    assert_eq!(
        upstream_authorization(&up, "good-model").as_deref(),
        Some("Bearer sk-allowed-0000")
    );

    // Each refused provider: the pool says why, and nothing reaches the upstream.
    // Callers see the rule's label (the detail, naming flags and variables,
    // is in the worker's log).
    for (pool, model, why) in [
        ("master", "m-master", "server_setting"),
        ("redis", "m-redis", "server_setting"),
        ("home", "m-home", "outside_env_prefix"),
        ("file", "m-file", "file_references_off"),
        ("leak-master/m-master", "m-master", "server_setting"),
    ] {
        let err = c.generate(ask(pool, "hi")).await.expect_err(pool);
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{pool}: {err:?}"
        );
        assert!(err.message().contains(why), "{pool}: {}", err.message());
        assert_eq!(up.calls(model), 0, "{pool} reached the upstream");
    }
    assert_eq!(up.total_calls(), 1, "only the allowed provider was called");
    for secret in [MASTER_KEY, "/home/not-a-secret-9f2c"] {
        assert!(!w.logs().contains(secret), "a refused value was logged");
    }

    // Visible: ListModels gives the reason, switchyard.config is not
    // SERVING (the config is not served in full), a gauge counts it, the log says it.
    let models = c
        .list_models(pb::ListModelsRequest {})
        .await
        .expect("list")
        .into_inner();
    let master = models
        .models
        .iter()
        .find(|m| m.name == "master")
        .expect("master pool");
    assert_eq!(master.members.len(), 1);
    assert!(!master.members[0].available);
    assert!(
        master.members[0].refused == "server_setting",
        "{:?}",
        master.members[0]
    );
    let good = models
        .models
        .iter()
        .find(|m| m.name == "good")
        .expect("good pool");
    assert!(good.members[0].refused.is_empty() && good.members[0].available);
    assert_eq!(
        health_status(&w, "switchyard.config").await,
        2,
        "NOT_SERVING"
    );
    assert_eq!(health_status(&w, "").await, 1, "the worker itself serves");
    let metrics = scrape(&w).await;
    assert_eq!(
        sample(
            &metrics,
            "switchyard_config_refused_providers",
            &[("reason", "server_setting")]
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "switchyard_config_refused_providers",
            &[("reason", "outside_env_prefix")]
        ),
        Some(1.0)
    );
    assert!(w.logs().contains("provider refused"), "{}", w.logs());
}

#[tokio::test]
async fn a_forged_or_tampered_snapshot_is_refused_and_the_last_good_config_serves() {
    let good_up = fake().await;
    let attacker = fake().await;
    let prefix = RedisPrefix::new();
    let mut config = Config::one_pool(
        &good_up.base_url(),
        pb::Strategy::RoundRobin,
        policy(0, 3, 1000),
        &[("up", "served", 0)],
    );
    config.publish(&redis_url(), &prefix, 1, true).await;
    let w = worker(&redis_url(), &prefix, &[]).await;
    wait_revision(&w, 1).await;
    let mut c = client(&w).await;
    c.generate(ask("p", "hi")).await.expect("serves");
    assert_eq!(good_up.calls("served"), 1);

    // What someone with Redis write access (and no master key) would write:
    // the same pool pointed at their own server.
    let mut forged = config.snap.clone();
    forged.revision = 2;
    forged.providers[0].base_url = attacker.base_url();
    let payload = forged.encode_to_vec();
    let other_key = MasterKey::from_base64(&MasterKey::generate_base64()).expect("key");
    let mut tampered =
        signed_snapshot::sign(&harness_key(), &prefix.0, &config.snap.encode_to_vec());
    // A signed snapshot with its payload changed after signing.
    tampered.truncate(tampered.len() - config.snap.encode_to_vec().len());
    tampered.extend_from_slice(&payload);
    let cfg = RedisConfig {
        url: redis_url(),
        ..RedisConfig::default()
    };
    for (stored, reason) in [
        (payload.clone(), "unsigned"),
        (
            signed_snapshot::sign(&other_key, &prefix.0, &payload),
            "unknown_key",
        ),
        (tampered, "bad_signature"),
        (
            signed_snapshot::sign(&harness_key(), "another-deployment", &payload),
            "bad_signature",
        ),
    ] {
        let before = sample(
            &scrape(&w).await,
            "switchyard_config_rejected_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0);
        store_snapshot(&cfg, &prefix, 2, stored, true).await;
        let mut after = before;
        for _ in 0..100 {
            after = sample(
                &scrape(&w).await,
                "switchyard_config_rejected_total",
                &[("reason", reason)],
            )
            .unwrap_or(0.0);
            if after > before {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            after,
            before + 1.0,
            "{reason}: the refusal is counted once; logs:\n{}",
            w.logs()
        );
        // Still the old config: revision 1, calls to the real upstream.
        let models = c
            .list_models(pb::ListModelsRequest {})
            .await
            .expect("list")
            .into_inner();
        assert_eq!(models.revision, 1, "{reason}");
        c.generate(ask("p", "hi")).await.expect("still serves");
        assert_eq!(
            attacker.total_calls(),
            0,
            "{reason}: the forged upstream was called"
        );
        assert_eq!(
            health_status(&w, "switchyard.config").await,
            2,
            "{reason}: NOT_SERVING"
        );
    }
    assert!(
        w.logs()
            .contains("config snapshot refused; serving the last good config")
    );
    // Read again every check period, still counted once per snapshot.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let rejected = |m: &str, r| sample(m, "switchyard_config_rejected_total", &[("reason", r)]);
    let m = scrape(&w).await;
    assert_eq!(rejected(&m, "bad_signature"), Some(2.0));
    assert_eq!(rejected(&m, "unsigned"), Some(1.0));

    // A change the control plane signed is applied.
    config.snap.providers[0].base_url = attacker.base_url();
    config.publish(&redis_url(), &prefix, 3, true).await;
    wait_revision(&w, 3).await;
    c.generate(ask("p", "hi"))
        .await
        .expect("serves the signed change");
    assert_eq!(attacker.calls("served"), 1);
    assert_eq!(
        health_status(&w, "switchyard.config").await,
        1,
        "SERVING again"
    );
}
