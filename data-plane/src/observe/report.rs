//! `GetPoolStats`: the fleet's statistics over a window, joined with the
//! config (which pools and members exist) and the health this worker holds.

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use super::stats::{PoolAgg, Totals};
use crate::fleet::State;
use crate::fleet::health::Entry;
use crate::model::Pool;

/// Failed over reached, 0 when nothing reached.
fn rate(failed: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = failed as f64 / of as f64;
        r
    }
}

/// The label of a state, as `switchyard_member_state` has it.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Available => "available",
        State::Benched { .. } => "benched",
        State::HalfOpen | State::Probing => "probing",
    }
}

/// One pool's statistics; its configured members first (in config order),
/// then any the window saw that the config no longer has.
pub fn pool(
    p: &Pool,
    agg: Option<&PoolAgg>,
    health: &HashMap<String, Entry>,
    now: Instant,
    unix_ms: impl Fn(Instant) -> i64,
) -> pb::PoolStats {
    let empty = PoolAgg::default();
    let agg = agg.unwrap_or(&empty);
    let failed: u64 = agg.failures.values().sum();
    let mut members = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let member = |id: &str, c: Option<&Arc<crate::model::Candidate>>| {
        let m = agg.members.get(id).cloned().unwrap_or_default();
        let e = health.get(id);
        let state = e.map_or(State::Available, |e| {
            e.state(now, p.policy.failure_threshold)
        });
        let attempts = m.attempts();
        pb::MemberStats {
            member_id: id.to_owned(),
            provider: c.map(|c| c.provider.clone()).unwrap_or_default(),
            upstream_model: c.map(|c| c.upstream_model.clone()).unwrap_or_default(),
            attempts,
            served: m.served(),
            error_rate: rate(attempts - m.served().min(attempts), attempts),
            outcomes: m.outcomes.clone().into_iter().collect(),
            latency: Some(m.latency.percentiles()),
            input_tokens: m.input,
            output_tokens: m.output,
            state: state_name(state).to_owned(),
            consecutive_failures: e.map_or(0, |e| e.fails),
            benched_until_ms: match state {
                State::Benched { until } => unix_ms(until),
                _ => 0,
            },
        }
    };
    for c in &p.members {
        seen.insert(c.member_id.as_str());
        members.push(member(&c.member_id, Some(c)));
    }
    for id in agg.members.keys() {
        if !seen.contains(id.as_str()) {
            members.push(member(id, None));
        }
    }
    pb::PoolStats {
        pool: p.name.clone(),
        requests: agg.requests,
        failed,
        error_rate: rate(failed, agg.requests),
        failures: agg.failures.clone().into_iter().collect(),
        failovers: agg.failovers,
        latency: Some(agg.latency.percentiles()),
        ttft: Some(agg.ttft.percentiles()),
        input_tokens: agg.input,
        output_tokens: agg.output,
        members,
    }
}

/// Every configured pool (or the one named), in name order.
pub fn pools(
    configured: &[Arc<Pool>],
    totals: &Totals,
    health: &HashMap<String, Entry>,
    now: Instant,
    unix_ms: impl Fn(Instant) -> i64 + Copy,
) -> Vec<pb::PoolStats> {
    configured
        .iter()
        .map(|p| pool(p, totals.get(&p.name), health, now, unix_ms))
        .collect()
}
