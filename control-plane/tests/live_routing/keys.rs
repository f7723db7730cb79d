//! A provider's named keys (sealed or referenced like its own credential,
//! never returned) and members' max_concurrency / context_tokens / key.

use super::*;

both_backends!(provider_keys_and_member_fields);

async fn provider_keys_and_member_fields(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;

    // Create with two keys: one sealed, one referenced.
    let created = create_provider(
        &mut c,
        pb::Provider {
            keys: vec![
                key("second", inline(SECOND)),
                key("third", reference("env:SWITCHYARD_CRED_THIRD")),
            ],
            ..openai_provider("prov", OWN)
        },
    )
    .await;
    assert_eq!(names(&created), ["second", "third"]);
    let info = |p: &pb::Provider, i: usize| p.keys[i].credential_info.clone().expect("info");
    assert_eq!(
        info(&created, 0).source,
        pb::credential_info::Source::Inline as i32
    );
    assert_eq!(info(&created, 0).fingerprint, "...wxyz");
    assert_eq!(info(&created, 1).reference, "env:SWITCHYARD_CRED_THIRD");
    assert!(created.keys.iter().all(|k| k.credential.is_none()));
    let shown = format!("{created:?}");
    assert!(!shown.contains(SECOND) && !shown.contains(OWN), "{shown}");

    // Get and list show them too, never the secret.
    let got = provider_named(&mut c, "prov").await;
    assert_eq!(got.keys, created.keys);
    let listed = c
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.providers[0].keys, created.keys);
    assert!(!format!("{listed:?}").contains(SECOND));

    // Bad keys: each refused with what to fix, nothing written.
    let before = revision(&mut c).await;
    for (keys, says) in [
        (
            vec![key("x", inline(SECOND)), key("x", inline(SECOND))],
            "'x' is given twice",
        ),
        (vec![key("default", inline(SECOND))], "'default' is taken"),
        (
            vec![key("bad name", inline(SECOND))],
            "provider.keys[0].name",
        ),
        (
            vec![key("new", None)],
            "provider.keys[0].credential is required for the new key 'new'",
        ),
        (
            vec![key("new", reference("env:DATABASE_URL"))],
            "provider.keys[0].credential.reference is refused",
        ),
    ] {
        let (code, msg) = refused(update_keys(&mut c, "prov", keys).await);
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        assert!(msg.contains(says), "{says} not in: {msg}");
        assert!(!msg.contains(SECOND), "{msg}");
    }
    assert_eq!(revision(&mut c).await, before, "refusals write nothing");

    // Members: caps, window and a pinned key; bad ones refused.
    let pool_name = "p";
    create_pool(&mut c, pool(pool_name)).await;
    let pinned = create_member(
        &mut c,
        pb::Member {
            max_concurrency: Some(8),
            context_tokens: Some(128_000),
            key: "second".into(),
            ..member(pool_name, "prov", "m1")
        },
    )
    .await;
    assert_eq!(
        (
            pinned.max_concurrency,
            pinned.context_tokens,
            pinned.key.as_str()
        ),
        (Some(8), Some(128_000), "second")
    );
    let plain = create_member(&mut c, member(pool_name, "prov", "m2")).await;
    assert_eq!(
        (
            plain.max_concurrency,
            plain.context_tokens,
            plain.key.as_str()
        ),
        (None, None, "")
    );
    for (m, says) in [
        (
            pb::Member {
                key: "nope".into(),
                ..member(pool_name, "prov", "m3")
            },
            "member.key 'nope' is not a key of provider 'prov'; use one of: default, second, third",
        ),
        (
            pb::Member {
                max_concurrency: Some(0),
                ..member(pool_name, "prov", "m3")
            },
            "member.max_concurrency is 0; it must be between 1 and 100000",
        ),
        (
            pb::Member {
                max_concurrency: Some(100_001),
                ..member(pool_name, "prov", "m3")
            },
            "member.max_concurrency is 100001",
        ),
        (
            pb::Member {
                context_tokens: Some(10_000_001),
                ..member(pool_name, "prov", "m3")
            },
            "member.context_tokens is 10000001; it must be between 1 and 10000000",
        ),
    ] {
        let (code, msg) = refused(
            c.create_member(pb::CreateMemberRequest { member: Some(m) })
                .await,
        );
        assert_eq!(code, Code::InvalidArgument, "{msg}");
        assert!(msg.contains(says), "{says} not in: {msg}");
    }
    let default_key = create_member(
        &mut c,
        pb::Member {
            key: "default".into(),
            ..member(pool_name, "prov", "m4")
        },
    )
    .await;
    assert_eq!(default_key.key, "default");
    // A provider whose only keys are named: "default" is no key of it.
    create_provider(
        &mut c,
        pb::Provider {
            credential: None,
            keys: vec![key("only", inline(SECOND))],
            ..openai_provider("keyonly", OWN)
        },
    )
    .await;
    let (code, msg) = refused(
        c.create_member(pb::CreateMemberRequest {
            member: Some(pb::Member {
                key: "default".into(),
                ..member(pool_name, "keyonly", "m5")
            }),
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    assert!(
        msg.contains("provider 'keyonly' has none; use one of: only"),
        "{msg}"
    );

    // Update with a mask: set, clear, re-pin; a bad key refused.
    let before = revision(&mut c).await;
    let updated = c
        .update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                id: plain.id.clone(),
                max_concurrency: Some(4),
                key: "third".into(),
                ..Default::default()
            }),
            update_mask: mask(&["max_concurrency", "context_tokens", "key"]),
        })
        .await
        .expect("update member")
        .into_inner();
    assert_eq!(
        (
            updated.max_concurrency,
            updated.context_tokens,
            updated.key.as_str()
        ),
        (Some(4), None, "third")
    );
    assert_eq!(
        revision(&mut c).await,
        before + 1,
        "one change, one revision"
    );
    let (code, msg) = refused(
        c.update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                id: plain.id.clone(),
                key: "gone".into(),
                ..Default::default()
            }),
            update_mask: mask(&["key"]),
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("not a key of provider 'prov'"), "{msg}");

    // A key a member is pinned to cannot go; the message names the member.
    let before = revision(&mut c).await;
    let (code, msg) = refused(update_keys(&mut c, "prov", vec![key("third", None)]).await);
    assert_eq!(code, Code::FailedPrecondition, "{msg}");
    assert!(
        msg.contains(&format!(
            "member p/prov/m1 ({}) uses key 'second'",
            pinned.id
        )),
        "{msg}"
    );
    assert_eq!(revision(&mut c).await, before);

    // Replace: a key named again with no credential keeps its secret; an
    // unused one goes; a new one comes.
    c.update_member(pb::UpdateMemberRequest {
        member: Some(pb::Member {
            id: updated.id.clone(),
            ..Default::default()
        }),
        update_mask: mask(&["key"]),
    })
    .await
    .expect("unpin");
    let before = revision(&mut c).await;
    let replaced = update_keys(
        &mut c,
        "prov",
        vec![
            key("fourth", reference("env:SWITCHYARD_CRED_FOURTH")),
            key("second", None),
        ],
    )
    .await
    .expect("replace keys")
    .into_inner();
    assert_eq!(names(&replaced), ["fourth", "second"]);
    assert_eq!(info(&replaced, 1).fingerprint, "...wxyz", "secret kept");
    assert_eq!(revision(&mut c).await, before + 1);
    // The provider's own credential is untouched by a keys update.
    assert_eq!(
        replaced.credential_info.expect("own").fingerprint,
        "...cdef"
    );

    // The snapshot workers load: keys sealed with the provider's id, like
    // its own credential; members' fields. The API's copy has no secrets.
    let rev = revision(&mut c).await;
    let snap = wait_snapshot(&prefix, rev).await;
    let p = snap
        .providers
        .iter()
        .find(|p| p.name == "prov")
        .expect("prov");
    let k: Vec<&str> = p.keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(k, ["fourth", "second"]);
    let master = switchyard_shared::seal::MasterKey::from_base64(MASTER_KEY).expect("key");
    let sealed = &p.keys[1].credential.as_ref().expect("cred").sealed;
    let opened = master
        .open(p.id.as_bytes(), sealed)
        .expect("opens like the provider's own");
    assert_eq!(opened.expose_secret(), SECOND);
    let fourth = p.keys[0].credential.as_ref().expect("cred");
    assert!(fourth.sealed.is_empty());
    assert_eq!(
        fourth.info.as_ref().expect("info").reference,
        "env:SWITCHYARD_CRED_FOURTH"
    );
    let members = &snap
        .pools
        .iter()
        .find(|p| p.name == pool_name)
        .expect("pool")
        .members;
    let m1 = members.iter().find(|m| m.id == pinned.id).expect("m1");
    assert_eq!(
        (m1.max_concurrency, m1.context_tokens, m1.key.as_str()),
        (Some(8), Some(128_000), "second")
    );
    let m2 = members.iter().find(|m| m.id == plain.id).expect("m2");
    assert_eq!((m2.max_concurrency, m2.key.as_str()), (Some(4), ""));
    let api = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let p = api
        .providers
        .iter()
        .find(|p| p.name == "prov")
        .expect("prov");
    assert!(
        p.keys
            .iter()
            .all(|k| k.credential.as_ref().is_some_and(|c| c.sealed.is_empty())),
        "GetSnapshot carries no sealed secret"
    );

    // Deleting the provider (force) takes its keys along.
    c.delete_provider(pb::DeleteProviderRequest {
        id_or_name: "prov".into(),
        force: true,
        ..Default::default()
    })
    .await
    .expect("delete provider");
    create_provider(&mut c, openai_provider("prov", OWN)).await;
    let again = provider_named(&mut c, "prov").await;
    assert!(again.keys.is_empty());
}
