//! The plan's unit tests: each strategy's order, health, ramping.
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
