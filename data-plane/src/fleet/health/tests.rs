//! The health rules' unit tests, on paused time.

use super::*;

const STALE: Duration = Duration::from_secs(63);

fn failure(retry_after: Option<Duration>) -> Failure {
    Failure {
        threshold: 2,
        cooldown_base: Duration::from_secs(1),
        cooldown_max: Duration::from_secs(3),
        retry_after,
        escalates: true,
    }
}

#[tokio::test(start_paused = true)]
async fn benches_at_the_threshold_and_doubles_after_each_failed_probe_up_to_the_cap() {
    let start = Instant::now();
    let mut e = Entry::new(start);
    e.fail(start, &failure(None), None);
    assert_eq!(e.state(start, 2), State::Available, "below the threshold");
    e.fail(start, &failure(None), None);
    assert_eq!(e.benched_until, Some(start + Duration::from_secs(1)));
    // In-flight failures while benched do not escalate.
    e.fail(start, &failure(None), None);
    assert_eq!(e.benched_until, Some(start + Duration::from_secs(1)));

    tokio::time::advance(Duration::from_secs(1)).await;
    let now = Instant::now();
    assert_eq!(
        e.state(now, 2),
        State::HalfOpen,
        "the cooldown is waited out first"
    );
    assert!(e.claim(now, "w1", Duration::from_secs(10), STALE));
    assert_eq!(e.state(now, 2), State::Probing);
    assert!(
        !e.claim(now, "w2", Duration::from_secs(10), STALE),
        "one probe at a time"
    );
    e.fail(now, &failure(None), Some("w1"));
    assert_eq!(
        e.benched_until,
        Some(now + Duration::from_secs(2)),
        "doubled"
    );
    assert!(e.probe.is_none(), "a failed probe gives the probe back");

    tokio::time::advance(Duration::from_secs(2)).await;
    let now = Instant::now();
    assert!(e.claim(now, "w1", Duration::from_secs(10), STALE));
    e.fail(now, &failure(None), Some("w1"));
    assert_eq!(
        e.benched_until,
        Some(now + Duration::from_secs(3)),
        "capped"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_a_floor_and_extends_but_nothing_shortens() {
    let now = Instant::now();
    let mut e = Entry::new(now);
    e.fail(now, &failure(None), None);
    e.fail(now, &failure(Some(Duration::from_secs(10))), None);
    assert_eq!(e.benched_until, Some(now + Duration::from_secs(10)));
    e.fail(now, &failure(Some(Duration::from_secs(2))), None);
    assert_eq!(e.benched_until, Some(now + Duration::from_secs(10)));
    e.fail(now, &failure(Some(Duration::from_secs(20))), None);
    assert_eq!(e.benched_until, Some(now + Duration::from_secs(20)));
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_expires_can_be_taken_again_and_only_its_holder_releases_it() {
    let now = Instant::now();
    let mut e = Entry::new(now);
    e.fail(now, &failure(None), None);
    e.fail(now, &failure(None), None);
    tokio::time::advance(Duration::from_secs(1)).await;
    let now = Instant::now();
    assert!(e.claim(now, "w1", Duration::from_secs(5), STALE));
    assert!(!e.release(now, "w2"));
    tokio::time::advance(Duration::from_secs(5)).await;
    let now = Instant::now();
    assert_eq!(
        e.state(now, 2),
        State::HalfOpen,
        "an abandoned probe expires"
    );
    assert!(e.claim(now, "w2", Duration::from_secs(5), STALE));
    assert!(e.release(now, "w2"));
    assert_eq!(e.state(now, 2), State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn old_failures_are_forgotten() {
    let now = Instant::now();
    let mut e = Entry::new(now);
    e.fail(now, &failure(None), None);
    tokio::time::advance(Duration::from_secs(120)).await;
    let now = Instant::now();
    e.fail(now, &failure(None), None);
    assert_eq!(
        e.fails, 1,
        "a failure from long ago does not count toward the threshold"
    );
    assert_eq!(e.state(now, 2), State::Available);
}

#[tokio::test(start_paused = true)]
async fn the_table_keeps_the_newest_version_and_drops_clear_entries() {
    let t = HealthTable::default();
    let now = Instant::now();
    let mut e = Entry::new(now);
    e.fails = 1;
    e.version = 5;
    t.apply("m", e.clone());
    let mut older = e.clone();
    older.fails = 9;
    older.version = 4;
    t.apply("m", older);
    assert_eq!(
        t.get("m").map(|e| e.fails),
        Some(1),
        "an older message loses"
    );
    let mut clear = Entry::new(now);
    clear.version = 6;
    t.apply("m", clear);
    assert!(t.get("m").is_none());
    t.apply("m", older_than_the_clear(now));
    assert!(
        t.get("m").is_none(),
        "a late message does not bring it back"
    );
    t.replace(HashMap::new(), 10);
    let mut before_load = Entry::new(now);
    before_load.fails = 2;
    before_load.version = 9;
    t.apply("x", before_load);
    assert!(
        t.get("x").is_none(),
        "older than the load, which did not have it"
    );
}

fn older_than_the_clear(now: Instant) -> Entry {
    let mut e = Entry::new(now);
    e.fails = 3;
    e.version = 5;
    e
}

#[tokio::test(start_paused = true)]
async fn a_member_that_flaps_is_benched_longer_each_time_until_it_stays_healthy() {
    let f = Failure {
        threshold: 1,
        cooldown_base: Duration::from_secs(1),
        cooldown_max: Duration::from_secs(60),
        retry_after: None,
        escalates: true,
    };
    let now = Instant::now();
    let mut e = Entry::new(now);
    e.fail(now, &f, None);
    assert_eq!(e.benched_until, Some(now + Duration::from_secs(1)));
    tokio::time::advance(Duration::from_secs(2)).await;
    e.succeed(Instant::now(), None);
    assert!(
        !e.needs_success(Instant::now(), None),
        "nothing left to clear"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    let now = Instant::now();
    e.fail(now, &f, None);
    assert_eq!(
        e.benched_until,
        Some(now + Duration::from_secs(2)),
        "flapping: twice as long"
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    e.succeed(Instant::now(), None);
    tokio::time::advance(f.stale_after() + Duration::from_secs(1)).await;
    let now = Instant::now();
    e.fail(now, &f, None);
    assert_eq!(
        e.benched_until,
        Some(now + Duration::from_secs(1)),
        "healthy long enough: back to the base"
    );
}

#[tokio::test(start_paused = true)]
async fn a_probe_after_a_long_quiet_spell_starts_the_doubling_over() {
    let now = Instant::now();
    let mut e = Entry::new(now);
    let f = failure(None);
    e.fail(now, &f, None);
    e.fail(now, &f, None);
    tokio::time::advance(Duration::from_secs(2)).await;
    let now = Instant::now();
    assert!(e.claim(now, "w", Duration::from_secs(1), STALE));
    e.fail(now, &f, Some("w"));
    assert_eq!(e.benches, 2);
    tokio::time::advance(Duration::from_secs(600)).await;
    let now = Instant::now();
    assert!(e.claim(now, "w", Duration::from_secs(1), STALE));
    e.fail(now, &f, Some("w"));
    assert_eq!(e.benches, 1, "the old benches no longer count");
    assert_eq!(e.benched_until, Some(now + Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn a_success_in_flight_does_not_end_a_rate_limit_bench() {
    let now = Instant::now();
    let mut e = Entry::new(now);
    e.fail(now, &Failure::bench_for(Duration::from_secs(20)), None);
    e.fail(now, &Failure::bench_for(Duration::from_secs(20)), None);
    assert_eq!(e.benches, 1, "a rate limit is not doubled");
    assert!(!e.needs_success(now, None));
    e.succeed(now, None);
    assert_eq!(
        e.benched_until,
        Some(now + Duration::from_secs(20)),
        "still out for its Retry-After"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_or_auth_bench_ends_half_open_then_ramps_after_its_probe() {
    // A pool threshold of 5: the bench's one failure is below it.
    for d in [Duration::from_secs(20), Duration::from_secs(300)] {
        let start = Instant::now();
        let mut e = Entry::new(start);
        e.fail(start, &Failure::bench_for(d), None);
        assert_eq!(e.state(start, 5), State::Benched { until: start + d });
        tokio::time::advance(d).await;
        let now = Instant::now();
        assert_eq!(e.state(now, 5), State::HalfOpen, "one probe, not everyone");
        assert!(e.claim(now, "w1", Duration::from_secs(10), STALE));
        assert_eq!(e.state(now, 5), State::Probing);
        assert!(!e.claim(now, "w2", Duration::from_secs(10), STALE));
        e.succeed(now, Some("w1"));
        assert_eq!(e.state(now, 5), State::Available);
        assert_eq!(
            e.ramp_share(now),
            Some(1.0 / 16.0),
            "a long bench ({d:?}) still ramps: its staleness runs from its end"
        );
        tokio::time::advance(RAMP_STEP * 4).await;
        assert_eq!(e.ramp_share(Instant::now()), None, "fully back");
    }
}
