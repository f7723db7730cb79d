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
        Strategy::LeastBusy | Strategy::Latency | Strategy::QuotaAware => {
            let _ = (members, idx, live);
        }
        Strategy::RoundRobin | Strategy::Weighted | Strategy::Priority | Strategy::Random => {}
    }
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
mod tests {
    use switchyard_proto::v1 as pb;

    use super::*;
    use crate::model::{Limits, Policy};
    use crate::upstream::{Kind, Target, Timeouts};

    fn members(spec: &[(u32, i32)]) -> Vec<Arc<Candidate>> {
        spec.iter()
            .enumerate()
            .map(|(i, &(weight, priority))| {
                Arc::new(Candidate {
                    member_id: format!("m{i}"),
                    provider: "p".into(),
                    upstream_model: "x".into(),
                    weight,
                    priority,
                    status: pb::MemberStatus::Active,
                    limits: Limits::default(),
                    max_concurrency: None,
                    context_tokens: None,
                    key: "default".into(),
                    ephemeral: false,
                    target: Target {
                        kind: Kind::Mock,
                        base_url: String::new(),
                        model: "x".into(),
                        credential: None,
                        extra_headers: vec![],
                        timeouts: Timeouts {
                            connect: Duration::from_secs(1),
                            first_byte: Duration::from_secs(1),
                            total: Duration::from_secs(1),
                        },
                        default_max_tokens: None,
                        allow_extra: true,
                    },
                })
            })
            .collect()
    }

    #[test]
    fn round_robin_spreads_evenly_and_lists_everyone() {
        let m = members(&[(1, 0), (1, 0), (1, 0)]);
        let firsts: Vec<usize> = (0..6)
            .map(|c| order(Strategy::RoundRobin, &m, c, &[])[0])
            .collect();
        assert_eq!(firsts, vec![0, 1, 2, 0, 1, 2]);
        let mut all = order(Strategy::RoundRobin, &m, 1, &[]);
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2]);
    }

    #[test]
    fn weighted_follows_weights_smoothly() {
        let m = members(&[(5, 0), (1, 0), (1, 0)]);
        let seq = weighted_sequence(&[5, 1, 1]);
        let firsts: Vec<usize> = (0..7)
            .map(|c| order(Strategy::Weighted, &m, c, &seq)[0])
            .collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(firsts, vec![0, 0, 1, 0, 2, 0, 0], "nginx's smooth sequence");
    }

    #[test]
    fn big_weights_are_reduced_and_capped() {
        assert_eq!(weighted_sequence(&[2000, 2000]).len(), 2, "gcd reduces");
        let seq = weighted_sequence(&[10_000, 9_999, 1]);
        assert!(seq.len() <= 1100);
        let zeros = seq.iter().filter(|&&i| i == 0).count();
        assert!(zeros > seq.len() / 3, "ratio kept");
    }

    #[test]
    fn priority_takes_the_highest_level_first_and_rotates_within_it() {
        let m = members(&[(1, 1), (1, 10), (1, 10), (1, 5)]);
        assert_eq!(order(Strategy::Priority, &m, 0, &[]), vec![1, 2, 3, 0]);
        assert_eq!(order(Strategy::Priority, &m, 1, &[]), vec![2, 1, 3, 0]);
    }

    #[test]
    fn random_is_a_permutation() {
        let m = members(&[(1, 0), (1, 0), (1, 0), (1, 0)]);
        let mut v = order(Strategy::Random, &m, 0, &[]);
        v.sort_unstable();
        assert_eq!(v, vec![0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn benched_members_are_skipped_and_half_open_ones_are_probes() {
        let active = members(&[(1, 0), (1, 0), (1, 0)]);
        let pool = Pool {
            name: "p".into(),
            id: "p".into(),
            strategy: Strategy::RoundRobin,
            policy: Policy {
                failure_threshold: 1,
                ..Policy::default()
            },
            enabled: true,
            members: active.clone(),
            active,
            sequence: vec![],
        };
        let now = Instant::now();
        let mut benched = Entry::new(now);
        benched.fails = 1;
        benched.benched_until = Some(now + Duration::from_secs(2));
        let mut half_open = Entry::new(now);
        half_open.fails = 1;
        half_open.benched_until = Some(now);
        let health = HashMap::from([("m0".to_owned(), benched), ("m2".to_owned(), half_open)]);
        let p = plan(&pool, 0, &health, now, &|_| Live::default());
        let steps: Vec<_> = p
            .steps
            .iter()
            .map(|s| (s.candidate.member_id.as_str(), s.probe))
            .collect();
        assert_eq!(steps, vec![("m1", false), ("m2", true)]);
        assert_eq!(
            p.skipped
                .iter()
                .map(|(c, why)| (c.member_id.as_str(), *why))
                .collect::<Vec<_>>(),
            vec![(
                "m0",
                Skip::Benched {
                    left: Duration::from_secs(2)
                }
            )]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_back_from_a_bench_gets_a_doubling_share() {
        let active = members(&[(1, 0), (1, 0)]);
        let pool = Pool {
            name: "p".into(),
            id: "p".into(),
            strategy: Strategy::RoundRobin,
            policy: Policy::default(),
            enabled: true,
            members: active.clone(),
            active,
            sequence: vec![],
        };
        let mut back = Entry::new(Instant::now());
        back.benches = 1; // its probe just succeeded
        let health = HashMap::from([("m0".to_owned(), back)]);
        let firsts = |now: Instant| {
            (0..4000u64)
                .filter(|&t| {
                    plan(&pool, t, &health, now, &|_| Live::default()).steps[0]
                        .candidate
                        .member_id
                        == "m0"
                })
                .count()
        };
        let at_once = firsts(Instant::now());
        assert!(
            (60..=200).contains(&at_once),
            "about 1/16 of its half at first: {at_once}"
        );
        tokio::time::advance(crate::fleet::health::RAMP_STEP * 2).await;
        let later = firsts(Instant::now());
        assert!((350..=650).contains(&later), "1/4 after two steps: {later}");
        tokio::time::advance(crate::fleet::health::RAMP_STEP * 2).await;
        assert_eq!(firsts(Instant::now()), 2000, "its full half after four");
        let all = plan(&pool, 0, &health, Instant::now(), &|_| Live::default());
        assert_eq!(all.steps.len(), 2, "a ramping member is still a fallback");
    }
}
