//! apply → export round trips carry keys, caps and conditions.

use super::*;

both_backends!(apply_and_export_carry_keys_caps_and_conditions);

async fn apply(
    c: &mut Client,
    doc: pb::ConfigDocument,
    prune: bool,
) -> Result<pb::ApplyConfigResponse, tonic::Status> {
    c.apply_config(pb::ApplyConfigRequest {
        config: Some(doc),
        prune,
        dry_run: false,
        expected_revision: 0,
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn export(c: &mut Client) -> pb::ConfigDocument {
    c.export_config(pb::ExportConfigRequest {})
        .await
        .expect("export")
        .into_inner()
        .config
        .expect("document")
}

fn document() -> pb::ConfigDocument {
    pb::ConfigDocument {
        providers: vec![pb::Provider {
            name: "prov".into(),
            kind: pb::ProviderKind::Openai.into(),
            base_url: "https://api.example.test/v1".into(),
            credential: reference("env:SWITCHYARD_CRED_OWN"),
            keys: vec![
                key("b", reference("env:SWITCHYARD_CRED_B")),
                key("c", reference("file:/run/secrets/c")),
            ],
            ..Default::default()
        }],
        pools: vec![pb::Pool {
            name: "p".into(),
            strategy: pb::Strategy::LeastBusy.into(),
            ..Default::default()
        }],
        members: vec![pb::Member {
            pool: "p".into(),
            provider: "prov".into(),
            upstream_model: "m".into(),
            max_concurrency: Some(8),
            context_tokens: Some(200_000),
            key: "b".into(),
            ..Default::default()
        }],
        routes: vec![pb::Route {
            name: "r".into(),
            tiers: vec![
                tier(
                    "p",
                    Some(pb::TierCondition {
                        images: true,
                        ..Default::default()
                    }),
                ),
                tier("p", None),
            ],
            ..Default::default()
        }],
    }
}

async fn apply_and_export_carry_keys_caps_and_conditions(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;

    let first = apply(&mut c, document(), false).await.expect("apply");
    assert!(first.applied);
    let keys_change = first
        .changes
        .iter()
        .flat_map(|ch| ch.fields.iter())
        .find(|f| f.field == "keys")
        .expect("keys in the plan");
    assert_eq!(
        keys_change.to,
        "b=env:SWITCHYARD_CRED_B, c=file:/run/secrets/c"
    );

    // Export gives back what was applied (normalised), and re-applying it
    // changes nothing.
    let exported = export(&mut c).await;
    let p = &exported.providers[0];
    assert_eq!(p.keys, document().providers[0].keys);
    let m = &exported.members[0];
    assert_eq!(
        (m.max_concurrency, m.context_tokens, m.key.as_str()),
        (Some(8), Some(200_000), "b")
    );
    assert_eq!(exported.routes[0].tiers, document().routes[0].tiers);
    assert_eq!(exported.pools[0].strategy, pb::Strategy::LeastBusy as i32);
    let again = apply(&mut c, exported.clone(), false).await.expect("apply");
    assert!(
        again.changes.is_empty() && !again.applied,
        "{:?}",
        again.changes
    );

    // An inline key set over the API: export shows it by name only, and
    // applying that export keeps its secret.
    let rev = revision(&mut c).await;
    update_keys(
        &mut c,
        "prov",
        vec![
            key("b", None),
            key("c", None),
            key("sealed", inline(SECOND)),
        ],
    )
    .await
    .expect("add an inline key");
    assert_eq!(revision(&mut c).await, rev + 1);
    let exported = export(&mut c).await;
    let sealed = exported.providers[0]
        .keys
        .iter()
        .find(|k| k.name == "sealed")
        .expect("listed by name");
    assert_eq!(sealed.credential, None);
    assert!(!format!("{exported:?}").contains(SECOND));
    let again = apply(&mut c, exported, false).await.expect("apply");
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    let got = provider_named(&mut c, "prov").await;
    let kept = got.keys.iter().find(|k| k.name == "sealed").expect("kept");
    assert_eq!(
        kept.credential_info.as_ref().expect("info").fingerprint,
        "...wxyz"
    );

    // One apply may move a member off a key and drop that key.
    let mut moved = document();
    moved.providers[0].keys = vec![key("c", None)];
    moved.members[0].key = "c".into();
    let out = apply(&mut c, moved, false).await.expect("move and drop");
    assert!(out.applied);
    let got = provider_named(&mut c, "prov").await;
    assert_eq!(names(&got), ["c"]);
    assert_eq!(export(&mut c).await.members[0].key, "c");

    // Dropping a key a member keeps is refused, naming the member; inline
    // keys and unknown member keys are refused too.
    let mut dropped = document();
    dropped.providers[0].keys = vec![];
    dropped.members[0].key = "c".into();
    let s = apply(&mut c, dropped, false).await.expect_err("refused");
    assert_eq!(s.code(), Code::FailedPrecondition, "{}", s.message());
    assert!(s.message().contains("member p/prov/m"), "{}", s.message());
    let mut secret = document();
    secret.providers[0].keys[0].credential = inline(SECOND);
    let s = apply(&mut c, secret, false).await.expect_err("refused");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(!s.message().contains(SECOND), "{}", s.message());
    let mut unknown = document();
    unknown.members[0].key = "zzz".into();
    let s = apply(&mut c, unknown, false).await.expect_err("refused");
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message()
            .contains("member.key 'zzz' is not a key of provider 'prov'"),
        "{}",
        s.message()
    );
}
