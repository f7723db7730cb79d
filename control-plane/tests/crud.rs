//! Every CRUD path, stale etags and reference-aware deletes, over gRPC
//! against the real binary, on Postgres and on SQLite (bad input:
//! `bad_input.rs`).
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

both_backends!(crud_round_trip);
both_backends!(stale_etag_is_aborted);
both_backends!(deletes_respect_references);

async fn crud_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;

    // Providers: create, get by name and id, update with a mask.
    let p = create_provider(
        &mut c,
        openai_provider("openai-main", "sk-live-0123456789WXYZ"),
    )
    .await;
    assert_eq!(p.name, "openai-main");
    assert!(p.credential.is_none());
    let info = p.credential_info.clone().expect("credential info");
    assert_eq!(info.fingerprint, "...WXYZ");
    assert_eq!(p.enabled, Some(true));
    let by_id = c
        .get_provider(pb::GetRequest {
            id_or_name: p.id.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    let by_name = c
        .get_provider(pb::GetRequest {
            id_or_name: "openai-main".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(by_id, by_name);
    let updated = c
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(pb::Provider {
                id: p.id.clone(),
                base_url: "https://eu.example.test/v1".into(),
                timeouts: Some(pb::Timeouts {
                    first_byte_ms: 5000,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: mask(&["base_url", "timeouts.first_byte_ms"]),
        })
        .await
        .expect("update provider")
        .into_inner();
    assert_eq!(updated.base_url, "https://eu.example.test/v1");
    assert_eq!(
        updated.timeouts.as_ref().map(|t| t.first_byte_ms),
        Some(5000)
    );
    assert_eq!(
        updated.kind,
        pb::ProviderKind::Openai as i32,
        "unmasked fields keep their value"
    );
    assert_eq!(
        updated
            .credential_info
            .as_ref()
            .map(|i| i.fingerprint.as_str()),
        Some("...WXYZ")
    );
    assert_ne!(updated.etag, p.etag);
    create_provider(
        &mut c,
        pb::Provider {
            name: "anthropic".into(),
            kind: pb::ProviderKind::Anthropic.into(),
            base_url: "https://api.anthropic.example/v1".into(),
            credential: Some(pb::CredentialInput {
                source: Some(pb::credential_input::Source::Reference(
                    "env:SWITCHYARD_CRED_ANTHROPIC".into(),
                )),
            }),
            ..Default::default()
        },
    )
    .await;

    // Pools: defaults applied, update strategy and one failover field.
    let pool = create_pool(
        &mut c,
        pb::Pool {
            description: "code models".into(),
            ..common::pool("coding")
        },
    )
    .await;
    let fo = pool.failover.expect("failover");
    assert_eq!(
        (
            fo.transient_retries,
            fo.failure_threshold,
            fo.cooldown_base_ms
        ),
        (1, 3, 1000)
    );
    let pool = c
        .update_pool(pb::UpdatePoolRequest {
            pool: Some(pb::Pool {
                name: "coding".into(),
                strategy: pb::Strategy::Priority.into(),
                failover: Some(pb::FailoverPolicy {
                    failure_threshold: 5,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: mask(&["strategy", "failover.failure_threshold"]),
        })
        .await
        .expect("update pool")
        .into_inner();
    assert_eq!(pool.strategy, pb::Strategy::Priority as i32);
    assert_eq!(
        pool.failover
            .as_ref()
            .map(|f| (f.failure_threshold, f.transient_retries)),
        Some((5, 1))
    );

    // Members: create three, page through them, filter, update.
    let mut ids = Vec::new();
    for model in ["gpt-4o", "gpt-4o-mini"] {
        ids.push(
            create_member(&mut c, member("coding", "openai-main", model))
                .await
                .id,
        );
    }
    let m3 = create_member(
        &mut c,
        pb::Member {
            weight: 3,
            priority: 10,
            rpm_limit: Some(600),
            ..member("coding", "anthropic", "claude-sonnet")
        },
    )
    .await;
    assert_eq!(
        (m3.pool_name.as_str(), m3.provider_name.as_str(), m3.weight),
        ("coding", "anthropic", 3)
    );
    assert_eq!(m3.rpm_limit, Some(600));
    ids.push(m3.id.clone());
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = c
            .list_members(pb::ListMembersRequest {
                page_size: 1,
                page_token: token.clone(),
                pool: "coding".into(),
                ..Default::default()
            })
            .await
            .expect("list members")
            .into_inner();
        seen.extend(page.members.into_iter().map(|m| m.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen, ids,
        "paging returns every member once, in creation order"
    );
    let by_provider = c
        .list_members(pb::ListMembersRequest {
            provider: "anthropic".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(by_provider.members.len(), 1);
    let m3u = c
        .update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                id: m3.id.clone(),
                status: pb::MemberStatus::Draining.into(),
                rpm_limit: None,
                ..Default::default()
            }),
            update_mask: mask(&["status", "rpm_limit"]),
        })
        .await
        .expect("update member")
        .into_inner();
    assert_eq!(m3u.status, pb::MemberStatus::Draining as i32);
    assert_eq!(m3u.rpm_limit, None);
    assert_eq!(m3u.weight, 3);

    // Routes: a pool tier and a direct backup tier, shown by name.
    let route = c
        .create_route(pb::CreateRouteRequest {
            route: Some(pb::Route {
                name: "coding-fast".into(),
                tiers: vec![
                    pb::RouteTier {
                        target: Some(pb::route_tier::Target::Pool("coding".into())),
                        backup: false,
                        when: None,
                    },
                    pb::RouteTier {
                        target: Some(pb::route_tier::Target::Direct(
                            "anthropic/claude-haiku".into(),
                        )),
                        backup: true,
                        when: None,
                    },
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("create route")
        .into_inner();
    assert_eq!(route.tiers.len(), 2);
    let got = c
        .get_route(pb::GetRequest {
            id_or_name: "coding-fast".into(),
        })
        .await
        .expect("get route")
        .into_inner();
    assert_eq!(got.tiers, route.tiers);
    assert_eq!(
        got.tiers[1].target,
        Some(pb::route_tier::Target::Direct(
            "anthropic/claude-haiku".into()
        ))
    );
    let listed = c
        .list_routes(pb::ListRoutesRequest::default())
        .await
        .expect("list routes")
        .into_inner();
    assert_eq!(listed.routes.len(), 1);

    // The snapshot holds all of it at the latest revision, without secrets.
    let snap = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let coding = snap
        .pools
        .iter()
        .find(|p| p.name == "coding")
        .expect("pool in snapshot");
    assert_eq!(coding.members.len(), 3);
    assert_eq!(snap.routes.len(), 1);
    assert!(
        snap.providers
            .iter()
            .all(|p| p.credential.as_ref().is_some_and(|c| c.sealed.is_empty()))
    );

    // Deletes: a member, the route, then the pool takes its members along.
    c.delete_member(pb::DeleteMemberRequest {
        id: ids[0].clone(),
        etag: String::new(),
    })
    .await
    .expect("delete member");
    let err = c
        .get_member(pb::GetRequest {
            id_or_name: ids[0].clone(),
        })
        .await
        .expect_err("gone");
    assert_eq!(err.code(), Code::NotFound);
    c.delete_route(pb::DeleteRouteRequest {
        id_or_name: "coding-fast".into(),
        etag: String::new(),
    })
    .await
    .expect("delete route");
    c.delete_pool(pb::DeletePoolRequest {
        id_or_name: "coding".into(),
        ..Default::default()
    })
    .await
    .expect("delete pool");
    let left = c
        .list_members(pb::ListMembersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(left.members.is_empty(), "pool delete cascades to members");
    c.delete_provider(pb::DeleteProviderRequest {
        id_or_name: "openai-main".into(),
        ..Default::default()
    })
    .await
    .expect("delete provider");
    let providers = c
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        providers
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["anthropic"]
    );

    // Workers see the final state through Redis.
    let last = revision(&mut c).await;
    let stored = wait_snapshot(&prefix, last).await;
    assert_eq!(stored.revision, last);
    assert!(stored.pools.is_empty() && stored.routes.is_empty());
    assert_eq!(stored.providers.len(), 1);
}

async fn stale_etag_is_aborted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    let p = create_pool(&mut c, pool("chat")).await;
    let first = c
        .update_pool(pb::UpdatePoolRequest {
            pool: Some(pb::Pool {
                id: p.id.clone(),
                etag: p.etag.clone(),
                description: "one".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .expect("first writer wins")
        .into_inner();
    let stale = c
        .update_pool(pb::UpdatePoolRequest {
            pool: Some(pb::Pool {
                id: p.id.clone(),
                etag: p.etag.clone(),
                description: "two".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .expect_err("second writer with the old etag");
    assert_eq!(stale.code(), Code::Aborted, "{}", stale.message());
    let del = c
        .delete_pool(pb::DeletePoolRequest {
            id_or_name: p.id.clone(),
            force: false,
            etag: p.etag.clone(),
        })
        .await
        .expect_err("stale delete");
    assert_eq!(del.code(), Code::Aborted);
    let now = c
        .get_pool(pb::GetRequest {
            id_or_name: "chat".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now.description, "one");
    assert_eq!(now.etag, first.etag);
}

async fn deletes_respect_references(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(&mut c, openai_provider("shared", "sk-0123456789abcdef")).await;
    create_pool(&mut c, pool("alpha")).await;
    create_pool(&mut c, pool("beta")).await;
    create_member(&mut c, member("alpha", "shared", "m")).await;
    create_member(&mut c, member("beta", "shared", "m")).await;
    c.create_route(pb::CreateRouteRequest {
        route: Some(pb::Route {
            name: "front".into(),
            tiers: vec![pb::RouteTier {
                target: Some(pb::route_tier::Target::Pool("alpha".into())),
                backup: false,
                when: None,
            }],
            ..Default::default()
        }),
    })
    .await
    .expect("route");

    let both = c
        .create_route(pb::CreateRouteRequest {
            route: Some(pb::Route {
                name: "both".into(),
                tiers: vec![
                    pb::RouteTier {
                        target: Some(pb::route_tier::Target::Pool("alpha".into())),
                        backup: false,
                        when: None,
                    },
                    pb::RouteTier {
                        target: Some(pb::route_tier::Target::Pool("beta".into())),
                        backup: true,
                        when: None,
                    },
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("route over both pools")
        .into_inner();
    let err = c
        .delete_provider(pb::DeleteProviderRequest {
            id_or_name: "shared".into(),
            ..Default::default()
        })
        .await
        .expect_err("provider in use");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("alpha, beta"), "{}", err.message());
    let err = c
        .delete_pool(pb::DeletePoolRequest {
            id_or_name: "alpha".into(),
            ..Default::default()
        })
        .await
        .expect_err("pool in a route");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("front"), "{}", err.message());

    c.delete_provider(pb::DeleteProviderRequest {
        id_or_name: "shared".into(),
        force: true,
        etag: String::new(),
    })
    .await
    .expect("forced delete");
    let members = c
        .list_members(pb::ListMembersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(
        members.members.is_empty(),
        "forced provider delete removes its members"
    );
    c.delete_pool(pb::DeletePoolRequest {
        id_or_name: "alpha".into(),
        force: true,
        etag: String::new(),
    })
    .await
    .expect("forced pool delete");
    let routes = c
        .list_routes(pb::ListRoutesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let names: Vec<&str> = routes.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["both"], "a route left with no tier is deleted");
    let kept = &routes.routes[0];
    assert_eq!(
        kept.tiers.len(),
        1,
        "the tier naming the deleted pool is gone"
    );
    assert_ne!(
        kept.etag, both.etag,
        "a route whose tiers changed gets a new etag"
    );
}
