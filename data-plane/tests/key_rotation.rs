//! Master-key rotation as the README's "Rotating the master key" tells it,
//! with the real control plane and workers: workers take the new key and
//! keep the old one as previous, the control plane moves to the new key
//! (and re-signs the stored snapshot), inline credentials are set again and
//! callers get new keys; then the previous key can go.

mod common;

use common::*;
use switchyard_proto::v1 as pb;
use switchyard_shared::seal::{MasterKey, MasterKeys};
use switchyard_shared::signed_snapshot;
use tonic::Code;

const ADMIN: &str = "rotation-admin-token";

async fn stored_verifies_under(prefix: &RedisPrefix, keys: &MasterKeys) -> bool {
    let client = redis::Client::open(redis_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = switchyard_shared::keys::RedisKeys::new(prefix.0.clone()).snapshot();
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    stored.is_some_and(|s| signed_snapshot::verify(Some(keys), &prefix.0, &s).is_ok())
}

async fn set_inline(cp: &mut Cp, secret: &str) -> u64 {
    cp.update_provider(pb::UpdateProviderRequest {
        provider: Some(pb::Provider {
            name: "fake".into(),
            credential: Some(pb::CredentialInput {
                source: Some(pb::credential_input::Source::Inline(secret.into())),
            }),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["credential".into()],
        }),
    })
    .await
    .expect("set the inline credential");
    cp_revision(cp).await
}

#[tokio::test]
async fn rotation_keeps_inline_credentials_caller_keys_and_the_snapshot_working() {
    let up = fake().await;
    let prefix = RedisPrefix::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let old = MASTER_KEY.to_owned();
    let new = MasterKey::generate_base64();
    let old_key = MasterKey::from_base64(&old).expect("key");
    let new_key = MasterKey::from_base64(&new).expect("key");

    // Before: everything under the old key.
    let cp = control_plane(&prefix, dir.path(), ADMIN, &[]).await;
    let mut admin = admin_client(&cp, ADMIN).await;
    two_pools(&mut admin, &up.base_url()).await;
    set_inline(&mut admin, "sk-inline-before-0001").await;
    let caller = admin
        .create_caller(pb::CreateCallerRequest {
            caller: Some(pb::Caller {
                name: "svc".into(),
                models: vec!["*".into()],
                ..Default::default()
            }),
        })
        .await
        .expect("caller")
        .into_inner();
    let old_caller_key = caller.key;
    let rev = cp_revision(&mut admin).await;

    // Step 1: workers get the new key, the old one as previous.
    let rotating = [
        ("SWITCHYARD_MASTER_KEY", new.as_str()),
        ("SWITCHYARD_PREVIOUS_MASTER_KEY", old.as_str()),
        ("SWITCHYARD_NO_AUTH", "false"),
    ];
    let w1 = worker(&redis_url(), &prefix, &rotating).await;
    let mut probe = as_caller(&w1, bearer(&old_caller_key)).await;
    until_revision(&mut probe, rev).await;
    // The snapshot signed with the old key, the inline credential sealed
    // with it and the caller key hashed with it all still work.
    probe
        .generate(ask("coding", "hi"))
        .await
        .expect("served during the rotation");
    assert_eq!(
        upstream_authorization(&up, "m-code").as_deref(),
        Some("Bearer sk-inline-before-0001")
    );

    // Step 2: the control plane moves to the new key; it re-signs the
    // stored snapshot at start, without a config change.
    drop(admin);
    drop(cp);
    let cp = control_plane(
        &prefix,
        dir.path(),
        ADMIN,
        &[("SWITCHYARD_MASTER_KEY", new.as_str())],
    )
    .await;
    let only_new = MasterKeys::new(new_key.clone(), None);
    let mut resigned = false;
    for _ in 0..100 {
        if stored_verifies_under(&prefix, &only_new).await {
            resigned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        resigned,
        "the snapshot was not re-signed; logs:\n{}",
        cp.logs()
    );
    assert!(!stored_verifies_under(&prefix, &MasterKeys::new(old_key, None)).await);

    // A worker with only the new key before step 3: the member whose inline
    // credential was sealed with the old key is refused, visibly.
    let new_only_env = [
        ("SWITCHYARD_MASTER_KEY", new.as_str()),
        ("SWITCHYARD_NO_AUTH", "true"),
    ];
    let early = worker(&redis_url(), &prefix, &new_only_env).await;
    wait_revision(&early, rev).await;
    let err = client(&early)
        .await
        .generate(ask("coding", "hi"))
        .await
        .expect_err("sealed with the old key");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("sealed_with_other_key"),
        "{}",
        err.message()
    );
    drop(early);

    // Step 3: set inline credentials again and give callers new keys.
    let mut admin = admin_client(&cp, ADMIN).await;
    set_inline(&mut admin, "sk-inline-after-0002").await;
    let rotated = admin
        .rotate_caller_key(pb::RotateCallerKeyRequest {
            id_or_name: "svc".into(),
            grace_seconds: 0,
            etag: String::new(),
        })
        .await
        .expect("rotate")
        .into_inner();
    let rev = cp_revision(&mut admin).await;

    // Step 4: the previous key can go.
    let strict = [
        ("SWITCHYARD_MASTER_KEY", new.as_str()),
        ("SWITCHYARD_NO_AUTH", "false"),
    ];
    let w2 = worker(&redis_url(), &prefix, &strict).await;
    let mut after = as_caller(&w2, bearer(&rotated.key)).await;
    until_revision(&mut after, rev).await;
    after
        .generate(ask("coding", "hi"))
        .await
        .expect("served after the rotation");
    assert_eq!(
        upstream_authorization(&up, "m-code").as_deref(),
        Some("Bearer sk-inline-after-0002")
    );
    let err = as_caller(&w2, bearer(&old_caller_key))
        .await
        .generate(ask("coding", "hi"))
        .await
        .expect_err("the old caller key is gone");
    assert_eq!(err.code(), Code::Unauthenticated);
    drop(w1);
}
