//! What the control plane lets into the config workers serve: credential
//! references only within the allow-list (the workers' own check is the
//! authority, this one tells the admin at once), and a snapshot signed
//! under the master key.

mod common;

use common::*;
use switchyard_proto::v1 as pb;
use switchyard_shared::seal::{MasterKey, MasterKeys};
use switchyard_shared::signed_snapshot;
use tonic::Code;

fn with_reference(name: &str, reference: &str) -> pb::Provider {
    pb::Provider {
        credential: Some(pb::CredentialInput {
            source: Some(pb::credential_input::Source::Reference(reference.into())),
        }),
        ..openai_provider(name, "")
    }
}

#[tokio::test]
async fn references_to_server_secrets_or_outside_the_allow_list_are_invalid_argument() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    for (reference, rule) in [
        ("env:SWITCHYARD_MASTER_KEY", "never sent upstream"),
        ("env:REDIS_URL", "never sent upstream"),
        ("env:DATABASE_URL", "never sent upstream"),
        ("env:OPENAI_API_KEY", "starting with SWITCHYARD_CRED_"),
        ("file:/etc/passwd", "inside /run/secrets"),
        ("file:/run/secrets/../../etc/passwd", "inside /run/secrets"),
        (
            "file:/var/run/secrets/kubernetes.io/serviceaccount/token",
            "inside /run/secrets",
        ),
    ] {
        let err = c
            .create_provider(pb::CreateProviderRequest {
                provider: Some(with_reference("p", reference)),
            })
            .await
            .expect_err(reference);
        assert_eq!(err.code(), Code::InvalidArgument, "{reference}: {err:?}");
        assert!(
            err.message()
                .starts_with("provider.credential.reference is refused: ")
                && err.message().contains(rule),
            "{reference}: {}",
            err.message()
        );
    }
    // The allowed forms are stored as given.
    for (name, reference) in [
        ("env-ok", "env:SWITCHYARD_CRED_OPENAI"),
        ("file-ok", "file:/run/secrets/openai"),
    ] {
        let p = create_provider(&mut c, with_reference(name, reference)).await;
        assert_eq!(
            p.credential_info.map(|i| i.reference).as_deref(),
            Some(reference)
        );
    }
    // An update and a whole-config apply are held to the same rule.
    let p = create_provider(&mut c, with_reference("later", "env:SWITCHYARD_CRED_X")).await;
    let err = c
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                id: p.id.clone(),
                ..with_reference("later", "env:REDIS_URL")
            }),
            update_mask: mask(&["credential"]),
        })
        .await
        .expect_err("update");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = c
        .apply_config(pb::ApplyConfigRequest {
            config: Some(pb::ConfigDocument {
                providers: vec![with_reference("applied", "env:SWITCHYARD_MASTER_KEY")],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("apply");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("never sent upstream"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn the_prefix_flag_moves_the_allow_list_but_never_onto_server_settings() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let mut launch = Launch::new(&db, &prefix);
    launch
        .extra_env
        .push(("SWITCHYARD_CREDENTIAL_ENV_PREFIX", "ACME_LLM_".into()));
    let cp = launch.start().await;
    let mut c = cp.admin().await;
    create_provider(&mut c, with_reference("ok", "env:ACME_LLM_OPENAI")).await;
    for reference in ["env:SWITCHYARD_CRED_OPENAI", "env:SWITCHYARD_MASTER_KEY"] {
        let err = c
            .create_provider(pb::CreateProviderRequest {
                provider: Some(with_reference("p", reference)),
            })
            .await
            .expect_err(reference);
        assert_eq!(err.code(), Code::InvalidArgument, "{reference}");
    }
}

#[tokio::test]
async fn the_stored_snapshot_is_signed_under_the_master_key_and_prefix() {
    let db = TestDb::postgres().await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(&mut c, openai_provider("p", "sk-0123456789abcdef")).await;
    wait_snapshot(&prefix, 1).await;
    let key = switchyard_shared::keys::RedisKeys::new(prefix.0.clone()).snapshot();
    let stored = redis_get(&key).await.expect("stored");
    let ours = MasterKeys::new(MasterKey::from_base64(MASTER_KEY).expect("key"), None);
    assert!(signed_snapshot::verify(Some(&ours), &prefix.0, &stored).is_ok());
    let other = MasterKeys::new(
        MasterKey::from_base64(&MasterKey::generate_base64()).expect("key"),
        None,
    );
    assert_eq!(
        signed_snapshot::verify(Some(&other), &prefix.0, &stored),
        Err(signed_snapshot::Rejected::UnknownKey)
    );
    assert_eq!(
        signed_snapshot::verify(Some(&ours), "elsewhere", &stored),
        Err(signed_snapshot::Rejected::BadSignature)
    );
}
