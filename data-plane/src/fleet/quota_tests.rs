//! Limits and budgets through the fleet: two workers over one backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use super::super::memory::MemoryBackend;
use super::super::permits::{Grant, Want};
use super::super::{Backend, BackendError, BudgetLease, Entry, Failure, Fleet, Link};
use super::*;

/// The memory backend, counting the leases asked of it.
#[derive(Default)]
struct Counting {
    inner: MemoryBackend,
    leases: AtomicU64,
}

#[async_trait::async_trait]
impl Backend for Counting {
    async fn fail(&self, m: &str, f: &Failure, p: Option<&str>) -> Result<Entry, BackendError> {
        self.inner.fail(m, f, p).await
    }
    async fn succeed(&self, m: &str, p: Option<&str>) -> Result<Entry, BackendError> {
        self.inner.succeed(m, p).await
    }
    async fn claim(
        &self,
        m: &str,
        o: &str,
        ttl: Duration,
        stale: Duration,
    ) -> Result<(bool, Entry), BackendError> {
        self.inner.claim(m, o, ttl, stale).await
    }
    async fn release(&self, m: &str, o: &str) -> Result<Entry, BackendError> {
        self.inner.release(m, o).await
    }
    async fn merge(&self, m: &str, l: &Entry) -> Result<Entry, BackendError> {
        self.inner.merge(m, l).await
    }
    async fn lease(&self, p: &str, n: u64) -> Result<u64, BackendError> {
        self.inner.lease(p, n).await
    }
    async fn charge(&self, m: &str, ago: i64, r: i64, t: i64) -> Result<(), BackendError> {
        self.inner.charge(m, ago, r, t).await
    }
    async fn permits(&self, k: &str, l: Limits, w: Want) -> Result<Grant, BackendError> {
        self.leases.fetch_add(1, Ordering::Relaxed);
        self.inner.permits(k, l, w).await
    }
    async fn usage(&self, m: &str) -> Result<(u64, u64), BackendError> {
        self.inner.usage(m).await
    }
    async fn budget(
        &self,
        k: &str,
        w: &[(String, u64)],
        t: u64,
    ) -> Result<BudgetLease, BackendError> {
        self.leases.fetch_add(1, Ordering::Relaxed);
        self.inner.budget(k, w, t).await
    }
    async fn budget_charge(&self, k: &str, f: &[String], t: i64) -> Result<(), BackendError> {
        self.inner.budget_charge(k, f, t).await
    }
    async fn load(&self) -> Result<(std::collections::HashMap<String, Entry>, u64), BackendError> {
        self.inner.load().await
    }
}

fn fleet(backend: Arc<Counting>, stop: &CancellationToken) -> Fleet {
    let (fleet, pusher) = Fleet::new(
        backend,
        Arc::new(Link::default()),
        super::super::budget::BudgetPolicy::default(),
        stop.clone(),
    );
    #[allow(clippy::disallowed_methods)] // the test's runtime ends with it
    tokio::spawn(pusher);
    fleet.set_live_workers(2);
    fleet
}

/// A caller's daily budget of 1,000 tokens over two workers, requests of
/// 10: exactly 100 are taken, then both refuse with the spent window.
#[tokio::test(start_paused = true)]
async fn a_budget_leased_in_blocks_is_never_overspent_across_workers() {
    let backend = Arc::new(Counting::default());
    let stop = CancellationToken::new();
    let workers = [fleet(backend.clone(), &stop), fleet(backend.clone(), &stop)];
    let windows = vec![("d:2026-12-07".to_owned(), 1000)];
    let left = Duration::from_secs(3600);
    let mut taken = 0;
    for i in 0..200 {
        match workers[i % 2].budget("caller:c", &windows, left, 10).await {
            Budget::Taken => taken += 1,
            Budget::Spent { window, used } => {
                assert_eq!(window, 0);
                assert!(used >= 1000, "{used}");
            }
            Budget::Unchecked => panic!("the backend is up"),
        }
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(5)).await;
    }
    assert_eq!(taken, 100, "exactly the budget");
    stop.cancel();
}

/// A member with generous limits at 100 requests a second on one worker:
/// after the first seconds, at most a lease per 200 requests.
#[tokio::test(start_paused = true)]
async fn generous_limits_lease_rarely() {
    let backend = Arc::new(Counting::default());
    let stop = CancellationToken::new();
    let w = fleet(backend.clone(), &stop);
    w.set_live_workers(1);
    let limits = Limits {
        rpm: Some(1_000_000),
        tpm: Some(100_000_000),
    };
    let mut at_warm = 0;
    for i in 0..3000 {
        if i == 500 {
            at_warm = backend.leases.load(Ordering::Relaxed);
        }
        assert_eq!(
            w.reserve("m", limits, 50).await,
            crate::fleet::Reservation::Granted
        );
        w.settle("m", 40, 50);
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let leases = backend.leases.load(Ordering::Relaxed) - at_warm;
    assert!(leases <= 12, "{leases} leases for 2,500 requests");
    stop.cancel();
}
