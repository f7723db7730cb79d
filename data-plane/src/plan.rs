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
mod tests {
    use super::*;
    use crate::model::Policy;

    fn members(spec: &[(u32, i32)]) -> Vec<Arc<Candidate>> {
        spec.iter()
            .enumerate()
            .map(|(i, &(weight, priority))| {
                Arc::new(Candidate {
                    weight,
                    priority,
                    ..Candidate::for_test(&format!("m{i}"))
                })
            })
            .collect()
    }

    #[test]
    fn quota_aware_puts_unlimited_first_then_most_headroom_and_empty_last() {
        let m = members(&[(1, 0), (1, 0), (1, 0), (1, 0), (1, 0)]);
        let live = |c: &Candidate| {
            let (r, t) = match c.member_id.as_str() {
                "m0" => (Some(0), Some(5000)),
                "m1" => (Some(10), Some(100)),
                "m2" => (None, None),
                "m3" => (Some(10), Some(900)),
                _ => (Some(40), Some(1)),
            };
            Live {
                remaining_requests: r,
                remaining_tokens: t,
                ..Live::default()
            }
        };
        let mut idx = order(Strategy::QuotaAware, &m, 0, &[]);
        by_signal(Strategy::QuotaAware, &m, &mut idx, &live);
        assert_eq!(idx, vec![2, 4, 3, 1, 0]);
        // Ties keep the rotation.
        let same = |_: &Candidate| Live::default();
        let mut idx = order(Strategy::QuotaAware, &m, 2, &[]);
        by_signal(Strategy::QuotaAware, &m, &mut idx, &same);
        assert_eq!(idx, vec![2, 3, 4, 0, 1]);
        // Relative to the limit where one is known: 10 of 20 beats 40 of 1000.
        let mut limited = members(&[(1, 0), (1, 0)]);
        for (c, rpm) in limited.iter_mut().zip([1000, 20]) {
            if let Some(c) = Arc::get_mut(c) {
                c.limits.rpm = Some(rpm);
            }
        }
        let live = |c: &Candidate| Live {
            remaining_requests: Some(if c.member_id == "m0" { 40 } else { 10 }),
            ..Live::default()
        };
        let mut idx = order(Strategy::QuotaAware, &limited, 0, &[]);
        by_signal(Strategy::QuotaAware, &limited, &mut idx, &live);
        assert_eq!(idx, vec![1, 0]);
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

    fn view(spec: &[(u32, Option<u64>)]) -> impl Fn(&Candidate) -> Live + '_ {
        move |c: &Candidate| {
            let i: usize = c.member_id[1..].parse().unwrap();
            let (in_flight, ttft_ms) = spec[i];
            Live {
                in_flight,
                ttft: ttft_ms.map(Duration::from_millis),
                ..Live::default()
            }
        }
    }

    #[test]
    fn least_busy_takes_the_fewest_in_flight_per_capacity_ties_by_rotation() {
        let m = members(&[(1, 0), (1, 0), (1, 0), (1, 0)]);
        let live = view(&[(3, None), (1, None), (0, None), (1, None)]);
        let mut idx = order(Strategy::LeastBusy, &m, 1, &[]);
        assert_eq!(idx, vec![1, 2, 3, 0], "the rotation");
        by_signal(Strategy::LeastBusy, &m, &mut idx, &live);
        assert_eq!(
            idx,
            vec![2, 1, 3, 0],
            "idle first, ties (1, 3) in rotation order"
        );
        let mut idx = order(Strategy::LeastBusy, &m, 3, &[]);
        by_signal(Strategy::LeastBusy, &m, &mut idx, &live);
        assert_eq!(idx, vec![2, 3, 1, 0], "another ticket rotates the ties");
        // Weight 4 with 3 in flight is less busy than weight 1 with 1.
        let m = members(&[(4, 0), (1, 0)]);
        let live = view(&[(3, None), (1, None)]);
        let mut idx = vec![1, 0];
        by_signal(Strategy::LeastBusy, &m, &mut idx, &live);
        assert_eq!(idx, vec![0, 1]);
    }

    #[test]
    fn least_busy_uses_max_concurrency_as_capacity_when_every_member_has_one() {
        let mut m = members(&[(1, 0), (1, 0)]);
        Arc::get_mut(&mut m[0]).unwrap().max_concurrency = Some(10);
        let live = view(&[(5, None), (1, None)]);
        let mut idx = vec![1, 0];
        by_signal(Strategy::LeastBusy, &m, &mut idx, &live);
        assert_eq!(idx, vec![1, 0], "one capped, one not: weights, 1 beats 5");
        Arc::get_mut(&mut m[1]).unwrap().max_concurrency = Some(1);
        by_signal(Strategy::LeastBusy, &m, &mut idx, &live);
        assert_eq!(idx, vec![0, 1], "both capped: 5/10 beats 1/1");
    }

    #[test]
    fn latency_p2c_picks_the_faster_of_the_two_and_orders_the_rest() {
        let m = members(&[(1, 0), (1, 0), (1, 0), (1, 0)]);
        // m3 is fastest but not among the two picked: m1 beats m0.
        let live = view(&[
            (0, Some(400)),
            (0, Some(100)),
            (0, Some(300)),
            (0, Some(50)),
        ]);
        let mut idx = vec![0, 1, 2, 3];
        by_latency(&m, &mut idx, &live, (0, 1));
        assert_eq!(idx, vec![1, 3, 2, 0]);
        // Load counts: 100 ms × 5 in flight loses to 300 ms idle.
        let live = view(&[
            (0, Some(400)),
            (4, Some(100)),
            (0, Some(300)),
            (0, Some(50)),
        ]);
        let mut idx = vec![0, 1, 2, 3];
        by_latency(&m, &mut idx, &live, (1, 2));
        assert_eq!(idx, vec![2, 3, 0, 1]);
        // A member with no data counts as the best known: tried before slow ones.
        let live = view(&[(0, Some(400)), (0, None), (0, Some(100)), (0, Some(900))]);
        let mut idx = vec![0, 1, 2, 3];
        by_latency(&m, &mut idx, &live, (0, 1));
        assert_eq!(idx, vec![1, 2, 0, 3]);
    }

    #[test]
    fn latency_strategy_is_a_permutation_of_the_pool_and_favours_the_fast() {
        let m = members(&[(1, 0), (1, 0), (1, 0)]);
        let live = view(&[(0, Some(800)), (0, Some(20)), (0, Some(400))]);
        let mut firsts = [0usize; 3];
        for t in 0..3000 {
            let mut idx = order(Strategy::Latency, &m, t, &[]);
            by_signal(Strategy::Latency, &m, &mut idx, &live);
            let mut all = idx.clone();
            all.sort_unstable();
            assert_eq!(all, vec![0, 1, 2], "every member once, none other");
            firsts[idx[0]] += 1;
        }
        // P2C: the slowest never wins a pair; the fastest wins every pair it is in.
        assert_eq!(firsts[0], 0);
        assert!(firsts[1] > 1800, "{firsts:?}");
        let one = members(&[(1, 0)]);
        let mut idx = vec![0];
        by_signal(Strategy::Latency, &one, &mut idx, &live);
        assert_eq!(idx, vec![0]);
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
