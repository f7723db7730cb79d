//! Issue 18's configuration over gRPC against the real binary, on Postgres
//! and on SQLite: a provider's named keys (sealed or referenced like its
//! own credential, never returned), members' max_concurrency /
//! context_tokens / key, route tiers' conditions, the snapshot workers
//! load, and apply → export round trips.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use common::*;
use secrecy::ExposeSecret as _;
use switchyard_proto::v1 as pb;
use tonic::Code;

both_backends!(
    provider_keys_and_member_fields,
    tier_conditions,
    apply_and_export_carry_keys_caps_and_conditions,
);

const OWN: &str = "sk-own-0123456789abcdef";
const SECOND: &str = "sk-second-0123456789wxyz";

fn inline(secret: &str) -> Option<pb::CredentialInput> {
    Some(pb::CredentialInput {
        source: Some(pb::credential_input::Source::Inline(secret.into())),
    })
}

fn reference(r: &str) -> Option<pb::CredentialInput> {
    Some(pb::CredentialInput {
        source: Some(pb::credential_input::Source::Reference(r.into())),
    })
}

fn key(name: &str, credential: Option<pb::CredentialInput>) -> pb::ProviderKey {
    pb::ProviderKey {
        name: name.into(),
        credential,
        credential_info: None,
    }
}

fn names(p: &pb::Provider) -> Vec<&str> {
    p.keys.iter().map(|k| k.name.as_str()).collect()
}

/// The status code and message of a refused call.
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let s = r.expect_err("refused");
    (s.code(), s.message().to_owned())
}

async fn update_keys(
    c: &mut Client,
    provider: &str,
    keys: Vec<pb::ProviderKey>,
) -> Result<tonic::Response<pb::Provider>, tonic::Status> {
    c.update_provider(pb::UpdateProviderRequest {
        provider: Some(pb::Provider {
            name: provider.into(),
            keys,
            ..Default::default()
        }),
        update_mask: mask(&["keys"]),
    })
    .await
}

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
    let got = c
        .get_provider(pb::GetRequest {
            id_or_name: "prov".into(),
        })
        .await
        .expect("get")
        .into_inner();
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
    let again = c
        .get_provider(pb::GetRequest {
            id_or_name: "prov".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(again.keys.is_empty());
}

fn tier(pool: &str, when: Option<pb::TierCondition>) -> pb::RouteTier {
    pb::RouteTier {
        target: Some(pb::route_tier::Target::Pool(pool.into())),
        backup: false,
        when,
    }
}

async fn tier_conditions(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_pool(&mut c, pool("vision")).await;
    create_pool(&mut c, pool("long")).await;
    create_pool(&mut c, pool("any")).await;

    let vision = pb::TierCondition {
        images: true,
        tools: true,
        ..Default::default()
    };
    let long = pb::TierCondition {
        reasoning: true,
        min_prompt_tokens: 32_000,
        ..Default::default()
    };
    let route = c
        .create_route(pb::CreateRouteRequest {
            route: Some(pb::Route {
                name: "smart".into(),
                tiers: vec![
                    tier("vision", Some(vision)),
                    tier("long", Some(long)),
                    // Asks nothing: every request (shown as no condition).
                    tier("any", Some(pb::TierCondition::default())),
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("create route")
        .into_inner();
    let whens: Vec<Option<pb::TierCondition>> = route.tiers.iter().map(|t| t.when).collect();
    assert_eq!(whens, [Some(vision), Some(long), None]);
    let got = c
        .get_route(pb::GetRequest {
            id_or_name: "smart".into(),
        })
        .await
        .expect("get route")
        .into_inner();
    assert_eq!(got.tiers, route.tiers);

    let (code, msg) = refused(
        c.update_route(pb::UpdateRouteRequest {
            route: Some(pb::Route {
                name: "smart".into(),
                tiers: vec![tier(
                    "any",
                    Some(pb::TierCondition {
                        min_prompt_tokens: 10_000_001,
                        ..Default::default()
                    }),
                )],
                ..Default::default()
            }),
            update_mask: mask(&["tiers"]),
        })
        .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains(
            "route.tiers[0].when.min_prompt_tokens is 10000001; it must be between 0 and 10000000"
        ),
        "{msg}"
    );

    let rev = revision(&mut c).await;
    let snap = wait_snapshot(&prefix, rev).await;
    let r = snap
        .routes
        .iter()
        .find(|r| r.name == "smart")
        .expect("route");
    let whens: Vec<Option<pb::TierCondition>> = r.tiers.iter().map(|t| t.when).collect();
    assert_eq!(whens, [Some(vision), Some(long), None]);
}

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
    let got = c
        .get_provider(pb::GetRequest {
            id_or_name: "prov".into(),
        })
        .await
        .expect("get")
        .into_inner();
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
    let got = c
        .get_provider(pb::GetRequest {
            id_or_name: "prov".into(),
        })
        .await
        .expect("get")
        .into_inner();
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

both_backends!(m0004_upgrades_stored_config_and_rolls_back);

/// A config stored before m0004 keeps working after it: members get no
/// cap, window or key, tiers no condition, providers no keys. m0004's down
/// migration runs on a populated store, and up again.
async fn m0004_upgrades_stored_config_and_rolls_back(backend: Backend) {
    use sea_orm_migration::MigratorTrait as _;
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let mut cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(
        &mut c,
        pb::Provider {
            keys: vec![key("b", reference("env:SWITCHYARD_CRED_B"))],
            ..openai_provider("prov", OWN)
        },
    )
    .await;
    create_pool(&mut c, pool("p")).await;
    let m = create_member(
        &mut c,
        pb::Member {
            max_concurrency: Some(3),
            key: "b".into(),
            ..member("p", "prov", "m")
        },
    )
    .await;
    c.create_route(pb::CreateRouteRequest {
        route: Some(pb::Route {
            name: "r".into(),
            tiers: vec![tier(
                "p",
                Some(pb::TierCondition {
                    tools: true,
                    ..Default::default()
                }),
            )],
            ..Default::default()
        }),
    })
    .await
    .expect("route");
    cp.terminate().await;

    // Back to m0003 (with rows in every table m0004 touches), then up again.
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    switchyard_migrations::Migrator::down(&conn, Some(1))
        .await
        .expect("m0004 down");
    switchyard_migrations::Migrator::up(&conn, None)
        .await
        .expect("m0004 up");
    drop(conn);

    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let got = c
        .get_member(pb::GetRequest {
            id_or_name: m.id.clone(),
        })
        .await
        .expect("member survives")
        .into_inner();
    assert_eq!(
        (got.max_concurrency, got.context_tokens, got.key.as_str()),
        (None, None, "")
    );
    let r = c
        .get_route(pb::GetRequest {
            id_or_name: "r".into(),
        })
        .await
        .expect("route survives")
        .into_inner();
    assert_eq!(r.tiers[0].when, None, "no condition: every request");
    let p = c
        .get_provider(pb::GetRequest {
            id_or_name: "prov".into(),
        })
        .await
        .expect("provider survives")
        .into_inner();
    assert!(p.keys.is_empty());
    assert_eq!(p.credential_info.expect("own").fingerprint, "...cdef");
}
