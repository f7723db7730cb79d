//! ListModels: the virtual models a caller may use, each member with the
//! health, load, latency and headroom this worker holds for it.

use switchyard_proto::v1 as pb;

use super::member_view::HealthView;
use crate::callers::Grant;
use crate::failover::Engine;
use crate::model::{Live, Pool};

/// The pools and routes `grant` may see, with their members.
pub(super) async fn list(engine: &Engine, grant: Option<&Grant>) -> pb::ListModelsResponse {
    let catalog = engine.catalog().load_full();
    let (mut pools, mut routes) = catalog.models();
    // A caller sees the models its key may use.
    if let Some(g) = grant {
        pools.retain(|p| g.sees(&p.name));
        routes.retain(|r| g.sees(&r.name));
    }
    // Health as this worker holds it: the fleet's table, kept live.
    let health = engine.fleet().table().load();
    let now = tokio::time::Instant::now();
    // Usage of limited members, from the fleet (one read each).
    let mut usage = std::collections::HashMap::new();
    let mut limited: Vec<String> = Vec::new();
    for p in &pools {
        limited.extend(
            p.members
                .iter()
                .filter(|m| m.limits.any())
                .map(|m| m.member_id.clone()),
        );
    }
    for r in &routes {
        for t in &r.tiers {
            limited.extend(
                t.pool
                    .members
                    .iter()
                    .filter(|m| m.limits.any())
                    .map(|m| m.member_id.clone()),
            );
        }
    }
    limited.sort_unstable();
    limited.dedup();
    // One pipelined read for all of them (bounded).
    let counts = engine.fleet().usage(&limited).await;
    usage.extend(limited.into_iter().zip(counts));
    let members_of = |pool: &Pool| -> Vec<pb::MemberHealth> {
        pool.members
            .iter()
            .map(|m| {
                let h = HealthView::of(&health, &m.member_id, pool.policy.failure_threshold, now);
                let (requests, tokens) = usage.get(&m.member_id).copied().unwrap_or_default();
                let live = engine.live(m);
                let ms = |d: Option<std::time::Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
                pb::MemberHealth {
                    in_flight: live.in_flight,
                    ttft_ms: ms(live.ttft),
                    latency_ms: ms(live.latency),
                    member_id: m.member_id.clone(),
                    provider: m.provider.clone(),
                    upstream_model: m.upstream_model.clone(),
                    status: m.status.into(),
                    available: h.available(),
                    consecutive_failures: h.fails,
                    benched_until_ms: h.benched_until_ms,
                    requests_this_minute: requests,
                    tokens_this_minute: tokens,
                    refused: String::new(),
                    key: m.key.clone(),
                    context_tokens: m.context_tokens,
                    max_concurrency: m.max_concurrency,
                    ..headroom_of(engine.fleet(), &m.member_id, &live)
                }
            })
            .chain(
                catalog
                    .refused_members(&pool.name)
                    .iter()
                    .map(|r| pb::MemberHealth {
                        member_id: r.member_id.clone(),
                        provider: r.provider.clone(),
                        upstream_model: r.upstream_model.clone(),
                        status: r.status.into(),
                        available: false,
                        refused: r.reason.label().to_owned(),
                        key: r.key.clone(),
                        remaining_requests: -1,
                        remaining_tokens: -1,
                        ..Default::default()
                    }),
            )
            .collect()
    };
    let mut models = Vec::new();
    for p in &pools {
        models.push(pb::VirtualModel {
            name: p.name.clone(),
            kind: "pool".into(),
            enabled: p.enabled,
            members: members_of(p),
        });
    }
    for r in &routes {
        models.push(pb::VirtualModel {
            name: r.name.clone(),
            kind: "route".into(),
            enabled: r.enabled,
            members: r.tiers.iter().flat_map(|t| members_of(&t.pool)).collect(),
        });
    }
    pb::ListModelsResponse {
        revision: catalog.revision,
        models,
    }
}

/// A member's headroom as ListModels shows it (-1: unknown), from its
/// live view.
fn headroom_of(fleet: &crate::fleet::Fleet, member: &str, live: &Live) -> pb::MemberHealth {
    let shown = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    pb::MemberHealth {
        remaining_requests: shown(live.remaining_requests),
        remaining_tokens: shown(live.remaining_tokens),
        near_limit: fleet.headroom().near_limit(member, 1).is_some(),
        ..Default::default()
    }
}
