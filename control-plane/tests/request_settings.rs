//! The settings the data plane reads per request: a member's
//! `max_output_tokens` and a pool's `allow_request_extra`, over gRPC
//! against the real binary, on Postgres and on SQLite.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

#[macro_use]
mod common;

use common::*;
use switchyard_proto::v1 as pb;

both_backends!(request_settings_round_trip);

/// A member's `max_output_tokens` and a pool's `allow_request_extra`:
/// create, get, list, update with a mask (and clear), and the snapshot the
/// API serves and the one workers load from Redis.
async fn request_settings_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let prefix = RedisPrefix::new();
    let cp = Launch::new(&db, &prefix).start().await;
    let mut c = cp.admin().await;
    create_provider(&mut c, openai_provider("prov", "sk-0123456789abcdef")).await;

    // Pools: unset = true, false kept.
    let open = create_pool(&mut c, pool("open")).await;
    assert_eq!(
        open.allow_request_extra,
        Some(true),
        "unset on create = true"
    );
    let strict = create_pool(
        &mut c,
        pb::Pool {
            allow_request_extra: Some(false),
            ..pool("strict")
        },
    )
    .await;
    assert_eq!(strict.allow_request_extra, Some(false));
    let got = c
        .get_pool(pb::GetRequest {
            id_or_name: "strict".into(),
        })
        .await
        .expect("get pool")
        .into_inner();
    assert_eq!(got.allow_request_extra, Some(false));

    // Members: set on create, read back by get and list.
    let big = create_member(
        &mut c,
        pb::Member {
            max_output_tokens: Some(8192),
            ..member("strict", "prov", "big")
        },
    )
    .await;
    assert_eq!(big.max_output_tokens, Some(8192));
    let plain = create_member(&mut c, member("open", "prov", "plain")).await;
    assert_eq!(plain.max_output_tokens, None);
    let got = c
        .get_member(pb::GetRequest {
            id_or_name: big.id.clone(),
        })
        .await
        .expect("get member")
        .into_inner();
    assert_eq!(got.max_output_tokens, Some(8192));
    let listed = c
        .list_members(pb::ListMembersRequest {
            pool: "strict".into(),
            ..Default::default()
        })
        .await
        .expect("list members")
        .into_inner();
    assert_eq!(listed.members[0].max_output_tokens, Some(8192));

    // The snapshot carries both.
    let snap = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let by_name = |s: &pb::Snapshot, n: &str| {
        s.pools
            .iter()
            .find(|p| p.name == n)
            .cloned()
            .expect("pool in snapshot")
    };
    assert_eq!(by_name(&snap, "open").allow_request_extra, Some(true));
    let s = by_name(&snap, "strict");
    assert_eq!(s.allow_request_extra, Some(false));
    assert_eq!(s.members[0].max_output_tokens, Some(8192));
    assert_eq!(by_name(&snap, "open").members[0].max_output_tokens, None);

    // Updates: a mask naming the field sets it; one that does not keeps it.
    let up = c
        .update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                id: plain.id.clone(),
                max_output_tokens: Some(1_000_000),
                ..Default::default()
            }),
            update_mask: mask(&["max_output_tokens"]),
        })
        .await
        .expect("set max_output_tokens")
        .into_inner();
    assert_eq!(
        up.max_output_tokens,
        Some(1_000_000),
        "the upper bound is allowed"
    );
    let up = c
        .update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                id: big.id.clone(),
                weight: 4,
                max_output_tokens: Some(1),
                ..Default::default()
            }),
            update_mask: mask(&["weight"]),
        })
        .await
        .expect("update weight")
        .into_inner();
    assert_eq!(
        (up.weight, up.max_output_tokens),
        (4, Some(8192)),
        "a field the mask leaves out keeps its value"
    );
    let up = c
        .update_member(pb::UpdateMemberRequest {
            member: Some(pb::Member {
                id: big.id.clone(),
                max_output_tokens: None,
                ..Default::default()
            }),
            update_mask: mask(&["max_output_tokens"]),
        })
        .await
        .expect("clear max_output_tokens")
        .into_inner();
    assert_eq!(
        up.max_output_tokens, None,
        "named in the mask and unset: cleared"
    );
    let up = c
        .update_pool(pb::UpdatePoolRequest {
            pool: Some(pb::Pool {
                name: "open".into(),
                allow_request_extra: Some(false),
                ..Default::default()
            }),
            update_mask: mask(&["allow_request_extra"]),
        })
        .await
        .expect("refuse extra")
        .into_inner();
    assert_eq!(up.allow_request_extra, Some(false));
    assert_eq!(up.strategy, pb::Strategy::RoundRobin as i32);
    let up = c
        .update_pool(pb::UpdatePoolRequest {
            pool: Some(pb::Pool {
                name: "strict".into(),
                description: "kept strict".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        })
        .await
        .expect("update description")
        .into_inner();
    assert_eq!(
        up.allow_request_extra,
        Some(false),
        "a field the mask leaves out keeps its value"
    );
    let up = c
        .update_pool(pb::UpdatePoolRequest {
            pool: Some(pb::Pool {
                name: "strict".into(),
                allow_request_extra: None,
                ..Default::default()
            }),
            update_mask: mask(&["allow_request_extra"]),
        })
        .await
        .expect("reset extra")
        .into_inner();
    assert_eq!(
        up.allow_request_extra,
        Some(true),
        "named in the mask and unset: the default, as on create"
    );

    // Workers load the final values from Redis.
    let last = revision(&mut c).await;
    let stored = wait_snapshot(&prefix, last).await;
    let open = by_name(&stored, "open");
    assert_eq!(open.allow_request_extra, Some(false));
    assert_eq!(open.members[0].max_output_tokens, Some(1_000_000));
    let strict = by_name(&stored, "strict");
    assert_eq!(strict.allow_request_extra, Some(true));
    assert_eq!(strict.members[0].max_output_tokens, None);
    assert_eq!(strict.members[0].weight, 4);
}
