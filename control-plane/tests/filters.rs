//! List filters an operator needs: providers by kind, pools by name prefix,
//! members by status, routes using a pool. On Postgres and SQLite.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

both_backends!(lists_filter_by_what_operators_ask);

fn route(name: &str, pools: &[&str]) -> pb::CreateRouteRequest {
    pb::CreateRouteRequest {
        route: Some(pb::Route {
            name: name.into(),
            tiers: pools
                .iter()
                .map(|p| pb::RouteTier {
                    target: Some(pb::route_tier::Target::Pool((*p).into())),
                    backup: false,
                    when: None,
                })
                .collect(),
            ..Default::default()
        }),
    }
}

async fn lists_filter_by_what_operators_ask(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(&mut c, openai_provider("oa", "sk-0123456789abcdef")).await;
    create_provider(
        &mut c,
        pb::Provider {
            kind: pb::ProviderKind::Anthropic.into(),
            ..openai_provider("an", "sk-ant-0123456789abcdef")
        },
    )
    .await;
    for p in ["coding", "coding-fast", "co_de", "coxde", "chat"] {
        create_pool(&mut c, pool(p)).await;
    }
    let a = create_member(&mut c, member("coding", "oa", "m1")).await;
    create_member(&mut c, member("coding", "oa", "m2")).await;
    create_member(&mut c, member("chat", "an", "m3")).await;
    c.update_member(pb::UpdateMemberRequest {
        member: Some(pb::Member {
            id: a.id.clone(),
            status: pb::MemberStatus::Draining.into(),
            ..Default::default()
        }),
        update_mask: mask(&["status"]),
    })
    .await
    .expect("drain");
    c.create_route(route("r-coding", &["coding"]))
        .await
        .expect("route");
    c.create_route(route("r-both", &["chat", "coding-fast"]))
        .await
        .expect("route");

    let kinds = c
        .list_providers(pb::ListProvidersRequest {
            kind: pb::ProviderKind::Anthropic.into(),
            ..Default::default()
        })
        .await
        .expect("providers")
        .into_inner();
    let names: Vec<_> = kinds.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["an"]);

    let by_prefix = |p: &'static str| pb::ListPoolsRequest {
        name_prefix: p.into(),
        ..Default::default()
    };
    let pools = c
        .list_pools(by_prefix("coding"))
        .await
        .expect("pools")
        .into_inner();
    let names: Vec<_> = pools.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["coding", "coding-fast"]);
    let pools = c
        .list_pools(by_prefix("co_"))
        .await
        .expect("pools")
        .into_inner();
    let names: Vec<_> = pools.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["co_de"], "'_' is a character, not a wildcard");

    let members = c
        .list_members(pb::ListMembersRequest {
            pool: "coding".into(),
            status: pb::MemberStatus::Draining.into(),
            ..Default::default()
        })
        .await
        .expect("members")
        .into_inner();
    let ids: Vec<_> = members.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [a.id.as_str()]);

    let routes = c
        .list_routes(pb::ListRoutesRequest {
            pool: "coding-fast".into(),
            ..Default::default()
        })
        .await
        .expect("routes")
        .into_inner();
    let names: Vec<_> = routes.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["r-both"]);

    // Mistakes are named.
    let err = c
        .list_providers(pb::ListProvidersRequest {
            kind: 42,
            ..Default::default()
        })
        .await
        .expect_err("unknown kind");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kind 42"), "{}", err.message());
    let err = c
        .list_routes(pb::ListRoutesRequest {
            pool: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown pool");
    assert_eq!(err.code(), Code::NotFound);
}
