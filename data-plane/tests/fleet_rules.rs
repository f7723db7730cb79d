//! The fleet state's own rules on paused tokio time, against the in-memory
//! backend (made unreachable at will): round-robin tickets at a low rate,
//! probe releases while the fleet is unreachable, the pusher's drain on
//! shutdown, each worker's share of a limit, charges kept while it is away.
// Tests spawn callers freely and read their env overrides.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_data_plane::fleet::budget::BudgetPolicy;
use switchyard_data_plane::fleet::memory::MemoryBackend;
use switchyard_data_plane::fleet::permits::{Grant, Want};
use switchyard_data_plane::fleet::{
    Backend, BackendError, Entry, Failure, Fleet, Link, Reservation,
};
use switchyard_data_plane::model::Limits;
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn a_single_worker_at_one_request_per_second_still_rotates() {
    let (fleet, pusher) = Fleet::new(
        Arc::new(MemoryBackend::default()),
        Arc::new(Link::default()),
        BudgetPolicy::default(),
        CancellationToken::new(),
    );
    tokio::spawn(pusher);
    fleet.prefetch(["pool"]);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut tickets = Vec::new();
    for _ in 0..6 {
        tickets.push(fleet.ticket("pool") % 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let first = tickets[0];
    let expected: Vec<u64> = (0..6).map(|i| (first + i) % 3).collect();
    assert_eq!(
        tickets, expected,
        "consecutive shared tickets, one per second"
    );
}

/// A backend that can be made unreachable, for the fleet's own rules.
struct Flaky {
    inner: MemoryBackend,
    down: std::sync::atomic::AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), BackendError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(BackendError("down".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Backend for Flaky {
    async fn fail(&self, m: &str, f: &Failure, p: Option<&str>) -> Result<Entry, BackendError> {
        self.check()?;
        self.inner.fail(m, f, p).await
    }
    async fn succeed(&self, m: &str, p: Option<&str>) -> Result<Entry, BackendError> {
        self.check()?;
        self.inner.succeed(m, p).await
    }
    async fn claim(
        &self,
        m: &str,
        o: &str,
        ttl: Duration,
        stale: Duration,
    ) -> Result<(bool, Entry), BackendError> {
        self.check()?;
        self.inner.claim(m, o, ttl, stale).await
    }
    async fn release(&self, m: &str, o: &str) -> Result<Entry, BackendError> {
        self.check()?;
        self.inner.release(m, o).await
    }
    async fn merge(&self, m: &str, l: &Entry) -> Result<Entry, BackendError> {
        self.check()?;
        self.inner.merge(m, l).await
    }
    async fn lease(&self, p: &str, n: u64) -> Result<u64, BackendError> {
        self.check()?;
        self.inner.lease(p, n).await
    }
    async fn charge(&self, m: &str, ago: i64, r: i64, t: i64) -> Result<(), BackendError> {
        self.check()?;
        self.inner.charge(m, ago, r, t).await
    }
    async fn permits(&self, k: &str, l: Limits, w: Want) -> Result<Grant, BackendError> {
        self.check()?;
        self.inner.permits(k, l, w).await
    }
    async fn usage(&self, m: &str) -> Result<(u64, u64), BackendError> {
        self.check()?;
        self.inner.usage(m).await
    }
    async fn load(&self) -> Result<(HashMap<String, Entry>, u64), BackendError> {
        self.check()?;
        self.inner.load().await
    }
}

fn flaky_fleet(stop: CancellationToken) -> (Fleet, Arc<Flaky>) {
    let backend = Arc::new(Flaky {
        inner: MemoryBackend::default(),
        down: false.into(),
    });
    let (fleet, pusher) = Fleet::new(
        backend.clone(),
        Arc::new(Link::default()),
        BudgetPolicy::default(),
        stop,
    );
    tokio::spawn(pusher);
    (fleet, backend)
}

async fn settle() {
    for _ in 0..5 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Benches `m` (threshold 1, 1 s) and waits the bench out: it is half-open.
async fn half_open(fleet: &Fleet, p: &switchyard_data_plane::model::Policy) {
    fleet.failure("m", p, None, None);
    settle().await;
    tokio::time::advance(Duration::from_millis(1100)).await;
}

fn one_second() -> switchyard_data_plane::model::Policy {
    switchyard_data_plane::model::Policy {
        failure_threshold: 1,
        cooldown_base: Duration::from_secs(1),
        cooldown_max: Duration::from_secs(4),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_probe_given_back_while_the_fleet_is_unreachable_is_released_when_it_returns() {
    let (fleet, backend) = flaky_fleet(CancellationToken::new());
    let p = one_second();
    half_open(&fleet, &p).await;
    let hold = fleet
        .claim("m", &p, Duration::from_secs(60))
        .await
        .expect("probe");
    backend
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    drop(hold); // e.g. the request hit its deadline
    settle().await;
    let (t, _) = backend.inner.load().await.expect("load");
    assert!(
        t.get("m").is_some_and(|e| e.probe.is_some()),
        "not released yet"
    );
    backend
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    fleet.push_pending().await.expect("pushed");
    let (t, _) = backend.inner.load().await.expect("load");
    assert!(
        t.get("m").is_some_and(|e| e.probe.is_none()),
        "released once it is back"
    );
}

#[tokio::test(start_paused = true)]
async fn on_shutdown_what_in_flight_requests_report_still_goes_out() {
    let stop = CancellationToken::new();
    let (fleet, backend) = flaky_fleet(stop.clone());
    let p = one_second();
    half_open(&fleet, &p).await;
    let hold = fleet
        .claim("m", &p, Duration::from_secs(60))
        .await
        .expect("probe");
    // The last in-flight request ends, and the worker stops at once: its
    // report is still in the queue when the pusher is told to stop.
    drop(hold);
    stop.cancel();
    settle().await;
    let (t, _) = backend.inner.load().await.expect("load");
    assert!(
        t.get("m").is_some_and(|e| e.probe.is_none()),
        "the probe's release was pushed during the drain"
    );
}

#[tokio::test(start_paused = true)]
async fn with_the_fleet_unreachable_each_worker_takes_its_share_of_a_limit() {
    let (fleet, backend) = flaky_fleet(CancellationToken::new());
    fleet.set_live_workers(3);
    backend
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let limits = Limits {
        rpm: Some(10),
        tpm: None,
    };
    let mut granted = 0;
    for _ in 0..10 {
        if fleet.reserve("m", limits, 0).await == Reservation::Granted {
            granted += 1;
        }
    }
    assert_eq!(granted, 4, "10 split over 3 live workers, rounded up");
}

#[tokio::test(start_paused = true)]
async fn charges_made_while_the_fleet_is_unreachable_are_kept_summed_and_sent_when_it_returns() {
    let (fleet, backend) = flaky_fleet(CancellationToken::new());
    backend
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let limits = Limits {
        rpm: None,
        tpm: Some(1_000_000),
    };
    for _ in 0..3 {
        // Reserved locally (an estimate of 10), then 25 tokens used.
        assert_eq!(fleet.reserve("m", limits, 10).await, Reservation::Granted);
        fleet.settle("m", 25, 10);
    }
    settle().await;
    assert_eq!(fleet.pending_charges(), 1, "one member minute, summed");
    assert!(fleet.push_pending().await.is_err(), "still unreachable");
    assert_eq!(fleet.pending_charges(), 1, "kept");
    backend
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    fleet.push_pending().await.expect("pushed");
    assert_eq!(fleet.pending_charges(), 0);
    assert_eq!(
        backend.inner.usage("m").await.expect("usage"),
        (3, 75),
        "the fleet counts the three requests and what they used"
    );
    assert_eq!(fleet.dropped_charges().full, 0);
}
