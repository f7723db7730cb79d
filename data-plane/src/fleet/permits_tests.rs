//! Leased permit blocks on paused time.

use super::*;

const RPM10: Limits = Limits {
    rpm: Some(10),
    tpm: None,
};

fn grant(requests: u64, tokens: u64, left: Duration) -> Grant {
    Grant {
        requests,
        tokens,
        used_requests: requests,
        used_tokens: tokens,
        left,
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_block_asks_for_a_lease_and_then_serves_from_memory() {
    let p = Permits::default();
    let t = p.take("m", RPM10, 0, 1, false);
    assert_eq!(t.found, Found::Empty);
    assert_eq!(
        p.want("m", RPM10, 0, 1).requests,
        5,
        "5 s of 1 request a second"
    );
    p.filled(
        "m",
        RPM10,
        Some(grant(5, 0, Duration::from_secs(30))),
        Origin::Minute(7),
        false,
    );
    assert!(matches!(
        p.take("m", RPM10, 0, 1, true).found,
        Found::Served { overshoot: 0 }
    ));
    for _ in 0..4 {
        assert!(matches!(
            p.take("m", RPM10, 0, 1, false).found,
            Found::Served { .. }
        ));
    }
    assert_eq!(p.take("m", RPM10, 0, 1, false).found, Found::Empty);
}

#[tokio::test(start_paused = true)]
async fn blocks_follow_the_recent_rate_capped_by_the_share_of_the_limit() {
    let p = Permits::default();
    let big = Limits {
        rpm: Some(100_000),
        tpm: Some(1_000_000),
    };
    for _ in 0..50 {
        p.take("m", big, 10, 2, false);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        p.want("m", big, 10, 2),
        Want {
            requests: 250,
            tokens: 2500
        },
        "5 s of 50 requests and 500 tokens a second"
    );
    let middling = Limits {
        rpm: Some(1000),
        tpm: Some(10_000),
    };
    assert_eq!(
        p.want("m", middling, 10, 2),
        Want {
            requests: 250,
            tokens: 2500
        },
        "within a worker's share of each limit"
    );
    let small = Limits {
        rpm: Some(10),
        tpm: Some(100),
    };
    assert_eq!(
        p.want("m", small, 10, 2),
        Want {
            requests: 1,
            tokens: 10
        },
        "traffic that fills its share of a limit leases what one request needs"
    );
    let t = p.take("m", small, 10, 2, false);
    assert!(t.refill.is_none(), "and leases nothing ahead");
}

#[tokio::test(start_paused = true)]
async fn a_refill_is_asked_for_in_the_background_below_the_low_water_mark() {
    let p = Permits::default();
    let limits = Limits {
        rpm: Some(10_000),
        tpm: None,
    };
    // 20 requests a second for a while: blocks of 100.
    for _ in 0..20 {
        p.take("m", limits, 0, 1, false);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    p.filled(
        "m",
        limits,
        Some(grant(100, 0, Duration::from_secs(50))),
        Origin::Minute(1),
        false,
    );
    let mut asked = Vec::new();
    for i in 0..60 {
        tokio::time::advance(Duration::from_millis(50)).await;
        let t = p.take("m", limits, 0, 1, false);
        assert!(matches!(t.found, Found::Served { .. }), "request {i}");
        if let Some(w) = t.refill {
            asked.push((i, w));
        }
    }
    assert_eq!(asked.len(), 1, "one refill at a time: {asked:?}");
    let (at, want) = asked[0];
    assert_eq!(at, 49, "asked when half the block is left");
    assert_eq!(want.requests, 100);
    p.filled(
        "m",
        limits,
        Some(grant(100, 0, Duration::from_secs(47))),
        Origin::Minute(1),
        true,
    );
    for i in 0..140 {
        tokio::time::advance(Duration::from_millis(50)).await;
        let t = p.take("m", limits, 0, 1, false);
        assert!(
            matches!(t.found, Found::Served { .. }),
            "request {i}: the refill arrived before the block ran out"
        );
        if t.refill.is_some() {
            p.filled("m", limits, None, Origin::Minute(1), true);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_window_that_ends_gives_back_what_was_not_used() {
    let p = Permits::default();
    p.filled(
        "m",
        RPM10,
        Some(grant(5, 0, Duration::from_secs(10))),
        Origin::Minute(42),
        false,
    );
    p.take("m", RPM10, 0, 1, false);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        p.sweep(1),
        vec![(
            "m".to_owned(),
            Unused {
                origin: Origin::Minute(42),
                requests: 4,
                tokens: 0
            }
        )]
    );
    assert_eq!(
        p.take("m", RPM10, 0, 1, false).found,
        Found::Empty,
        "the next window starts with a lease"
    );
    // A take that finds the window over gives the block back itself.
    p.filled(
        "m",
        RPM10,
        Some(grant(3, 0, Duration::from_secs(5))),
        Origin::Minute(43),
        false,
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    let t = p.take("m", RPM10, 0, 1, false);
    assert_eq!(t.found, Found::Empty);
    assert_eq!(
        t.unused,
        Some(Unused {
            origin: Origin::Minute(43),
            requests: 3,
            tokens: 0
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_share_that_shrinks_gives_the_excess_back() {
    let p = Permits::default();
    let limits = Limits {
        rpm: Some(10_000),
        tpm: Some(1_000_000),
    };
    for _ in 0..100 {
        p.take("m", limits, 100, 1, false);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    p.filled(
        "m",
        limits,
        Some(grant(500, 50_000, Duration::from_secs(55))),
        Origin::Minute(9),
        false,
    );
    assert!(
        p.sweep(1).is_empty(),
        "a block for the current rate is kept"
    );
    // Traffic drops to 1 request a second.
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(1)).await;
        p.take("m", limits, 100, 1, false);
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let back = p.sweep(1);
    assert_eq!(back.len(), 1);
    let (_, u) = back[0].clone();
    assert_eq!(u.origin, Origin::Minute(9));
    assert_eq!(u.requests, 497 - 4 * 5, "keeps 4 blocks of 5 requests");
    assert_eq!(u.tokens, 49_700 - 4 * 500);
}

#[tokio::test(start_paused = true)]
async fn a_refused_lease_refuses_without_asking_again_for_a_moment() {
    let p = Permits::default();
    let refused = Grant {
        requests: 0,
        tokens: 0,
        used_requests: 10,
        used_tokens: 0,
        left: Duration::from_secs(20),
    };
    p.filled("m", RPM10, Some(refused), Origin::Minute(1), false);
    assert_eq!(
        p.take("m", RPM10, 0, 1, false).found,
        Found::Denied {
            requests: 10,
            tokens: 0,
            retry_after: Duration::from_secs(20)
        },
        "the hint is the window's end"
    );
    tokio::time::advance(DENIAL_HOLD).await;
    assert_eq!(p.take("m", RPM10, 0, 1, false).found, Found::Empty);
}

#[tokio::test(start_paused = true)]
async fn tokens_are_settled_in_the_block_and_an_overshoot_is_passed_on() {
    let p = Permits::default();
    let limits = Limits {
        rpm: None,
        tpm: Some(1000),
    };
    p.filled(
        "m",
        limits,
        Some(grant(5, 300, Duration::from_secs(30))),
        Origin::Minute(1),
        false,
    );
    assert_eq!(
        p.take("m", limits, 200, 1, false).found,
        Found::Served { overshoot: 0 }
    );
    assert_eq!(p.settle("m", -150), 0, "an estimate given back stays local");
    assert_eq!(
        p.settle("m", 40),
        0,
        "a small overshoot comes out of the block"
    );
    assert_eq!(p.settle("m", 300), 90, "the rest goes to the backend");
    assert_eq!(
        p.take("m", limits, 10, 1, false).found,
        Found::Empty,
        "the block's tokens are spent"
    );
    p.filled(
        "m",
        limits,
        Some(grant(1, 5, Duration::from_secs(29))),
        Origin::Minute(1),
        false,
    );
    assert_eq!(
        p.take("m", limits, 10, 1, true).found,
        Found::Served { overshoot: 5 },
        "a fresh lease with room serves the request, as a reservation did"
    );
    assert_eq!(p.settle("x", 7), 7, "no block: all to the backend");
}

/// Two workers' blocks over one backend window never hand out more than
/// the limit, whatever the order of their leases.
#[tokio::test(start_paused = true)]
async fn never_more_than_the_limit_across_workers() {
    use crate::fleet::Backend as _;
    let backend = crate::fleet::memory::MemoryBackend::default();
    let workers = [Permits::default(), Permits::default()];
    let mut served = 0;
    for i in 0..60 {
        let p = &workers[i % 2];
        let mut t = p.take("limited", RPM10, 0, 2, false);
        if t.found == Found::Empty {
            let want = p.want("limited", RPM10, 0, 2);
            let g = backend
                .permits("limited", RPM10, want)
                .await
                .expect("memory backend");
            p.filled("limited", RPM10, Some(g), Origin::Minute(0), false);
            t = p.take("limited", RPM10, 0, 2, !g.refused());
        }
        if let Some(want) = t.refill {
            let g = backend
                .permits("limited", RPM10, want)
                .await
                .expect("memory");
            p.filled("limited", RPM10, Some(g), Origin::Minute(0), true);
        }
        if matches!(t.found, Found::Served { .. }) {
            served += 1;
        }
    }
    // Unless the wall-clock minute turned meanwhile (the window slid).
    assert!(served <= 10, "{served} served against rpm 10");
    assert!(served >= 9, "the limit is usable: {served}");
}

#[tokio::test(start_paused = true)]
async fn remaining_is_the_windows_fleet_left_plus_the_own_block_then_the_whole_limit() {
    let p = Permits::default();
    assert_eq!(p.remaining("m"), (None, None), "no lease yet: unknown");
    // Another worker holds 3: after a lease of 4, the window counts 7.
    let g = Grant {
        requests: 4,
        tokens: 0,
        used_requests: 7,
        used_tokens: 0,
        left: Duration::from_secs(20),
    };
    p.filled("m", RPM10, Some(g), Origin::Minute(7), false);
    assert_eq!(p.remaining("m"), (Some(7), None), "3 unleased + 4 in hand");
    p.take("m", RPM10, 0, 1, false);
    assert_eq!(p.remaining("m"), (Some(6), None), "one used from the block");
    tokio::time::advance(Duration::from_secs(21)).await;
    assert_eq!(
        p.remaining("m"),
        (Some(10), None),
        "a new window: all of it"
    );
}
