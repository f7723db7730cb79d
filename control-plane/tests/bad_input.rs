//! Every kind of bad input, refused with the field named and nothing
//! written, over gRPC against the real binary, on Postgres and on SQLite.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use common::*;
use switchyard_proto::v1 as pb;
use tonic::Code;

both_backends!(bad_input_is_refused_and_nothing_is_written);

async fn bad_input_is_refused_and_nothing_is_written(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(&mut c, openai_provider("prov", "sk-0123456789abcdef")).await;
    create_pool(&mut c, pool("chat")).await;
    c.create_route(pb::CreateRouteRequest {
        route: Some(pb::Route {
            name: "chat-route".into(),
            tiers: vec![pb::RouteTier {
                target: Some(pb::route_tier::Target::Pool("chat".into())),
                backup: false,
                when: None,
            }],
            ..Default::default()
        }),
    })
    .await
    .expect("route");
    let existing = create_member(&mut c, member("chat", "prov", "m1")).await;
    let before = revision(&mut c).await;

    let cases: Vec<(&str, Result<(), tonic::Status>, Code, &str)> = vec![
        (
            "empty name",
            c.create_pool(pb::CreatePoolRequest {
                pool: Some(pool("")),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "pool.name",
        ),
        (
            "long name",
            c.create_pool(pb::CreatePoolRequest {
                pool: Some(pool(&"a".repeat(64))),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "pool.name",
        ),
        (
            "charset",
            c.create_pool(pb::CreatePoolRequest {
                pool: Some(pool("no spaces")),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "letters, digits",
        ),
        (
            "unknown enum",
            c.create_pool(pb::CreatePoolRequest {
                pool: Some(pb::Pool {
                    strategy: 42,
                    ..pool("x")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "pool.strategy 42",
        ),
        (
            "missing kind",
            c.create_provider(pb::CreateProviderRequest {
                provider: Some(pb::Provider {
                    kind: 0,
                    ..openai_provider("p2", "sk-0123456789abcdef")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "provider.kind is required",
        ),
        (
            "url without scheme",
            c.create_provider(pb::CreateProviderRequest {
                provider: Some(pb::Provider {
                    base_url: "api.example.test/v1".into(),
                    ..openai_provider("p2", "sk-0123456789abcdef")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "provider.base_url",
        ),
        (
            "url without host",
            c.create_provider(pb::CreateProviderRequest {
                provider: Some(pb::Provider {
                    base_url: "https://".into(),
                    ..openai_provider("p2", "sk-0123456789abcdef")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "provider.base_url",
        ),
        (
            "weight out of range",
            c.create_member(pb::CreateMemberRequest {
                member: Some(pb::Member {
                    weight: 20_000,
                    ..member("chat", "prov", "m2")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "member.weight is 20000",
        ),
        (
            "limit out of range",
            c.create_member(pb::CreateMemberRequest {
                member: Some(pb::Member {
                    rpm_limit: Some(0),
                    ..member("chat", "prov", "m2")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "member.rpm_limit",
        ),
        (
            "max_output_tokens of zero",
            c.create_member(pb::CreateMemberRequest {
                member: Some(pb::Member {
                    max_output_tokens: Some(0),
                    ..member("chat", "prov", "m2")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "member.max_output_tokens is 0",
        ),
        (
            "max_output_tokens over a million",
            c.create_member(pb::CreateMemberRequest {
                member: Some(pb::Member {
                    max_output_tokens: Some(1_000_001),
                    ..member("chat", "prov", "m2")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "member.max_output_tokens is 1000001",
        ),
        (
            "max_output_tokens out of range on update",
            c.update_member(pb::UpdateMemberRequest {
                member: Some(pb::Member {
                    id: existing.id.clone(),
                    max_output_tokens: Some(u32::MAX),
                    ..Default::default()
                }),
                update_mask: mask(&["max_output_tokens"]),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "member.max_output_tokens",
        ),
        (
            "missing pool",
            c.create_member(pb::CreateMemberRequest {
                member: Some(member("nope", "prov", "m2")),
            })
            .await
            .map(|_| ()),
            Code::NotFound,
            "pool 'nope' not found",
        ),
        (
            "missing provider",
            c.create_member(pb::CreateMemberRequest {
                member: Some(member("chat", "nope", "m2")),
            })
            .await
            .map(|_| ()),
            Code::NotFound,
            "provider 'nope' not found",
        ),
        (
            "duplicate member",
            c.create_member(pb::CreateMemberRequest {
                member: Some(member("chat", "prov", "m1")),
            })
            .await
            .map(|_| ()),
            Code::AlreadyExists,
            "already has a member",
        ),
        (
            "duplicate provider",
            c.create_provider(pb::CreateProviderRequest {
                provider: Some(openai_provider("prov", "sk-0123456789abcdef")),
            })
            .await
            .map(|_| ()),
            Code::AlreadyExists,
            "provider 'prov' already exists",
        ),
        (
            "pool named like a route",
            c.create_pool(pb::CreatePoolRequest {
                pool: Some(pool("chat-route")),
            })
            .await
            .map(|_| ()),
            Code::AlreadyExists,
            "a route named 'chat-route'",
        ),
        (
            "route named like a pool",
            c.create_route(pb::CreateRouteRequest {
                route: Some(pb::Route {
                    name: "chat".into(),
                    tiers: vec![pb::RouteTier {
                        target: Some(pb::route_tier::Target::Pool("chat".into())),
                        backup: false,
                        when: None,
                    }],
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ()),
            Code::AlreadyExists,
            "a pool named 'chat'",
        ),
        (
            "route tier to a missing pool",
            c.create_route(pb::CreateRouteRequest {
                route: Some(pb::Route {
                    name: "r2".into(),
                    tiers: vec![pb::RouteTier {
                        target: Some(pb::route_tier::Target::Pool("ghost".into())),
                        backup: false,
                        when: None,
                    }],
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ()),
            Code::NotFound,
            "pool 'ghost' not found",
        ),
        (
            "route with only backup tiers",
            c.create_route(pb::CreateRouteRequest {
                route: Some(pb::Route {
                    name: "r3".into(),
                    tiers: vec![pb::RouteTier {
                        target: Some(pb::route_tier::Target::Pool("chat".into())),
                        backup: true,
                        when: None,
                    }],
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "backup=false",
        ),
        (
            "unknown id",
            c.get_pool(pb::GetRequest {
                id_or_name: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .map(|_| ()),
            Code::NotFound,
            "not found",
        ),
        (
            "member id not a uuid",
            c.get_member(pb::GetRequest {
                id_or_name: "m1".into(),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "not a member id",
        ),
        (
            "empty update mask",
            c.update_pool(pb::UpdatePoolRequest {
                pool: Some(pool("chat")),
                update_mask: None,
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "update_mask is required",
        ),
        (
            "unknown mask path",
            c.update_pool(pb::UpdatePoolRequest {
                pool: Some(pool("chat")),
                update_mask: mask(&["colour"]),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "'colour' is not an updatable pool field",
        ),
        (
            "member cannot move pools",
            c.update_member(pb::UpdateMemberRequest {
                member: Some(pb::Member {
                    id: existing.id.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["pool"]),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "member.pool cannot change",
        ),
        (
            "bad page token",
            c.list_pools(pb::ListPoolsRequest {
                page_size: 1,
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "page_token",
        ),
        (
            "page too large",
            c.list_pools(pb::ListPoolsRequest {
                page_size: 5000,
                ..Default::default()
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "page_size",
        ),
        (
            "credential in extra headers",
            c.create_provider(pb::CreateProviderRequest {
                provider: Some(pb::Provider {
                    extra_headers: [("Authorization".to_owned(), "Bearer x".to_owned())].into(),
                    ..openai_provider("p3", "sk-0123456789abcdef")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "credential field",
        ),
        (
            "bad credential reference",
            c.create_provider(pb::CreateProviderRequest {
                provider: Some(pb::Provider {
                    credential: Some(pb::CredentialInput {
                        source: Some(pb::credential_input::Source::Reference("vault:x".into())),
                    }),
                    ..openai_provider("p4", "")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "env:VARIABLE_NAME",
        ),
        (
            "oversized message",
            c.create_pool(pb::CreatePoolRequest {
                pool: Some(pb::Pool {
                    description: "x".repeat(2 << 20),
                    ..pool("big")
                }),
            })
            .await
            .map(|_| ()),
            Code::ResourceExhausted,
            "",
        ),
        (
            "over-long description",
            c.create_pool(pb::CreatePoolRequest {
                pool: Some(pb::Pool {
                    description: "x".repeat(2000),
                    ..pool("big")
                }),
            })
            .await
            .map(|_| ()),
            Code::InvalidArgument,
            "pool.description",
        ),
    ];
    for (what, result, code, needle) in cases {
        let err = result.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(
            err.message().contains(needle),
            "{what}: message '{}' lacks '{needle}'",
            err.message()
        );
    }
    assert_eq!(
        revision(&mut c).await,
        before,
        "refused calls wrote nothing"
    );
    let members = c
        .list_members(pb::ListMembersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(members.members.len(), 1);
}
