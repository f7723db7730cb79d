//! Plan: the order in which one request tries a pool's active members — by
//! the pool's strategy and the fleet's round-robin ticket, without benched
//! members, with a half-open member marked as a probe, and a member just
//! back from a bench ramped up (tried last by most requests at first). The
//! first is the pick; the rest is the failover order. Reads memory only.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom as _;
use tokio::time::Instant;

use crate::fleet::{Entry, State};
use crate::model::{Candidate, Live, Pool, Strategy};

/// One member to try.
#[derive(Debug)]
pub struct Step {
    pub candidate: Arc<Candidate>,
    /// Its bench is over: this request may probe it, if it wins the claim.
    pub probe: bool,
}

/// Why a member is left out of this request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    Benched {
        left: Duration,
    },
    /// Another request is probing it.
    Probing,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub skipped: Vec<(Arc<Candidate>, Skip)>,
}

/// Plans one request over `pool` with `ticket`, against the health table
/// and, for the live-signal strategies, each member's live signals.
pub fn plan(
    pool: &Pool,
    ticket: u64,
    health: &HashMap<String, Entry>,
    now: Instant,
    live: &dyn Fn(&Candidate) -> Live,
) -> Plan {
    let mut out = Plan::default();
    // Members back from a bench that sit this request out: still tried, last.
    let mut ramping = Vec::new();
    let mut idx = order(pool.strategy, &pool.active, ticket, &pool.sequence);
    by_signal(pool.strategy, &pool.active, &mut idx, live);
    for i in idx {
        let c = &pool.active[i];
        let entry = health.get(&c.member_id);
        let state = entry.map_or(State::Available, |e| {
            e.state(now, pool.policy.failure_threshold)
        });
        match state {
            State::Available
                if entry
                    .and_then(|e| e.ramp_share(now))
                    .is_some_and(|share| rand::random::<f64>() >= share) =>
            {
                ramping.push(Step {
                    candidate: c.clone(),
                    probe: false,
                });
            }
            State::Available | State::HalfOpen => out.steps.push(Step {
                candidate: c.clone(),
                probe: state == State::HalfOpen,
            }),
            State::Benched { until } => out.skipped.push((
                c.clone(),
                Skip::Benched {
                    left: until.saturating_duration_since(now),
                },
            )),
            State::Probing => out.skipped.push((c.clone(), Skip::Probing)),
        }
    }
    out.steps.extend(ramping);
    out
}

/// Reorders `idx` (the rotation) by the live-signal strategies' signal; the
/// others keep their order. A stable sort, so ties keep the rotation.
pub fn by_signal(
    strategy: Strategy,
    members: &[Arc<Candidate>],
    idx: &mut [usize],
    live: &dyn Fn(&Candidate) -> Live,
) {
    match strategy {
        Strategy::LeastBusy => least_busy(members, idx, live),
        Strategy::Latency => {
            let n = idx.len();
            if n > 1 {
                let a = rand::random_range(0..n);
                let b = (a + rand::random_range(1..n)) % n;
                by_latency(members, idx, live, (a, b));
            }
        }
        Strategy::QuotaAware => {
            idx.sort_by_cached_key(|&i| quota_key(&members[i], &live(&members[i])));
        }
        Strategy::RoundRobin | Strategy::Weighted | Strategy::Priority | Strategy::Random => {}
    }
}

/// Fewest fleet in-flight per unit of capacity first; ties keep the
/// rotation. The capacity is `max_concurrency` when every member has one,
/// else the weight: one unit across the pool (a cap of 8 beside uncapped
/// members of weight 1 would otherwise take 8 times their load — the cap
/// itself is held by the slots, not by the order).
fn least_busy(members: &[Arc<Candidate>], idx: &mut [usize], live: &dyn Fn(&Candidate) -> Live) {
    let by_cap = idx.iter().all(|&i| members[i].max_concurrency.is_some());
    let load: Vec<(u64, u64)> = idx
        .iter()
        .map(|&i| {
            let c = &members[i];
            let capacity = match c.max_concurrency {
                Some(cap) if by_cap => cap,
                _ => c.weight,
            }
            .max(1);
            (u64::from(live(c).in_flight), u64::from(capacity))
        })
        .collect();
    let mut order: Vec<usize> = (0..idx.len()).collect();
    // a/ca < b/cb  ⇔  a·cb < b·ca (no division, no float).
    order.sort_by(|&x, &y| {
        let ((a, ca), (b, cb)) = (load[x], load[y]);
        (a * cb).cmp(&(b * ca))
    });
    let sorted: Vec<usize> = order.iter().map(|&k| idx[k]).collect();
    idx.copy_from_slice(&sorted);
}

/// Power of two choices: of the members at positions `pick` of `idx`, the
/// one with the lower peak-EWMA time to first token × (in flight + 1) goes
/// first; the rest follow by the same score (ties keep the rotation). A
/// member with no data counts as the pool's best known latency, so a new
/// member gets tried.
fn by_latency(
    members: &[Arc<Candidate>],
    idx: &mut [usize],
    live: &dyn Fn(&Candidate) -> Live,
    pick: (usize, usize),
) {
    let views: Vec<Live> = idx.iter().map(|&i| live(&members[i])).collect();
    let known = |l: &Live| l.ttft.or(l.latency);
    let best = views
        .iter()
        .filter_map(known)
        .min()
        .unwrap_or(Duration::from_millis(1));
    let score: Vec<f64> = views
        .iter()
        .map(|l| known(l).unwrap_or(best).as_secs_f64().max(1e-6) * (f64::from(l.in_flight) + 1.0))
        .collect();
    let (a, b) = pick;
    let first = if score[b] < score[a] { b } else { a };
    let mut rest: Vec<usize> = (0..idx.len()).filter(|&k| k != first).collect();
    rest.sort_by(|&x, &y| score[x].total_cmp(&score[y]));
    let sorted: Vec<usize> = std::iter::once(first).chain(rest).map(|k| idx[k]).collect();
    idx.copy_from_slice(&sorted);
}

/// QUOTA_AWARE's order (the model-groups rule), smallest first: members
/// nothing limits (no rpm/tpm limit, no rate-limit headers: unlimited as
/// far as anyone knows), then members with known room, then those with
/// nothing left; within a class, most remaining requests first, then most
/// remaining tokens — relative to the member's rpm/tpm limit where it has
/// one (parts per million), else absolute. A limited member thus takes
/// traffic only while it has more room than the others, and is spared as
/// it empties, before any 429.
pub fn quota_key(
    c: &Candidate,
    live: &Live,
) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>) {
    let share = |left: Option<u64>, limit: Option<u64>| match (left, limit) {
        (Some(n), Some(l)) if l > 0 => n.saturating_mul(1_000_000) / l,
        (Some(n), _) => n,
        (None, _) => 0,
    };
    let (r, t) = (live.remaining_requests, live.remaining_tokens);
    let class = if r == Some(0) || t == Some(0) {
        2
    } else if r.is_none() && t.is_none() {
        0
    } else {
        1
    };
    (
        class,
        std::cmp::Reverse(share(r, c.limits.rpm)),
        std::cmp::Reverse(share(t, c.limits.tpm)),
    )
}

/// Indexes into `members`, in the order to try them. `counter` is the pool's
/// shared counter, so N workers together spread requests evenly; `sequence`
/// is the pool's precomputed weighted sequence ([`weighted_sequence`]).
pub fn order(
    strategy: Strategy,
    members: &[Arc<Candidate>],
    counter: u64,
    sequence: &[u32],
) -> Vec<usize> {
    let n = members.len();
    if n == 0 {
        return Vec::new();
    }
    match strategy {
        // The live-signal strategies start from the rotation; their order
        // by signal is applied over it (ties keep the rotation).
        Strategy::RoundRobin | Strategy::LeastBusy | Strategy::Latency | Strategy::QuotaAware => {
            rotate((0..n).collect(), counter)
        }
        Strategy::Random => {
            let mut v: Vec<usize> = (0..n).collect();
            v.shuffle(&mut rand::rng());
            v
        }
        Strategy::Priority => {
            let mut levels: Vec<i32> = members.iter().map(|m| m.priority).collect();
            levels.sort_unstable_by(|a, b| b.cmp(a));
            levels.dedup();
            levels
                .into_iter()
                .flat_map(|p| {
                    rotate(
                        (0..n).filter(|&i| members[i].priority == p).collect(),
                        counter,
                    )
                })
                .collect()
        }
        Strategy::Weighted => {
            let weights: Vec<u64> = members.iter().map(|m| u64::from(m.weight.max(1))).collect();
            let first = match sequence.len() {
                0 => 0,
                len => sequence[usize::try_from(counter % len as u64).unwrap_or(0)] as usize,
            }
            .min(n - 1);
            let mut rest: Vec<usize> = (0..n).filter(|&i| i != first).collect();
            rest.sort_by(|a, b| weights[*b].cmp(&weights[*a]));
            let mut out = vec![first];
            out.extend(rest);
            out
        }
    }
}

fn rotate(mut v: Vec<usize>, counter: u64) -> Vec<usize> {
    if !v.is_empty() {
        let k = usize::try_from(counter % v.len() as u64).unwrap_or(0);
        v.rotate_left(k);
    }
    v
}

/// Longest weighted sequence kept per pool; larger weight sums are scaled
/// down (ratios kept to within rounding).
const MAX_SEQUENCE: u64 = 1024;

/// nginx's smooth weighted round robin, unrolled once per config load: one
/// full cycle of picks, interleaved rather than bursty. A request then costs
/// one index into it with the shared counter, so every worker agrees.
pub fn weighted_sequence(weights: &[u32]) -> Vec<u32> {
    let g = weights
        .iter()
        .fold(0u64, |g, &w| gcd(g, u64::from(w.max(1))));
    let mut w: Vec<u64> = weights
        .iter()
        .map(|&x| u64::from(x.max(1)) / g.max(1))
        .collect();
    let total: u64 = w.iter().sum();
    if total > MAX_SEQUENCE {
        w = w
            .iter()
            .map(|&x| (x * MAX_SEQUENCE / total).max(1))
            .collect();
    }
    let total: i64 = w.iter().map(|&x| i64::try_from(x).unwrap_or(1)).sum();
    let w: Vec<i64> = w.iter().map(|&x| i64::try_from(x).unwrap_or(1)).collect();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let pick = current
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |(i, _)| i);
        current[pick] -= total;
        out.push(u32::try_from(pick).unwrap_or(0));
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests;
