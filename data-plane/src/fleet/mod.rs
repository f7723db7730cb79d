//! Fleet state: what every worker shares — member health, round-robin
//! tickets, leased rpm/tpm and budget permits, half-open probes — held in
//! memory and kept live by a [`Backend`]: Redis in production
//! ([`redis::RedisBackend`]), memory in the embedded default
//! ([`memory::MemoryBackend`]).
//!
//! The request path reads memory. What a request learns (a failure, a
//! recovery) is applied to the worker's copy at once and pushed to the
//! backend in the background, in order, by one task; the backend's answer
//! (and its broadcast to every other worker) replaces the local guess. Only
//! two things wait on the backend, each one bounded round trip: leasing a
//! block of a limited member's or caller's permits when the worker's block
//! is empty ([`permits`]; refilled in the background before that, so
//! rarely), and claiming a half-open member's probe.
//! While the backend is unreachable ([`Link`]), decisions are local.
//!
//! Concurrency caps ([`slots`]) are leased shares, renewed in the
//! background straight against Redis (not through the [`Backend`]): the
//! request path takes a slot from memory.
//!
//! Token charges do not queue as reports: they are summed per window key
//! ([`charges`]) and sent as soon as the backend can take them, so a full
//! queue or an outage loses none (docs/adr/004-failover-and-health.md).

mod backend;
pub mod budget;
pub mod charges;
pub mod follow;
pub mod headroom;
pub mod health;
pub mod link;
pub mod memory;
mod permit_block;
pub mod permits;
mod push;
pub mod quota;
pub mod redis;
mod scripts;
pub mod slots;
pub mod tickets;
pub mod timed;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use backend::{Backend, BackendError, BudgetLease, Reservation};
pub use health::{Entry, Failure, HealthTable, State};
pub use link::{Link, LinkState};
pub use quota::Budget;

use crate::model::{Limits, Policy};

/// Longest a request waits on the backend (quota reservation, probe claim).
const REQUEST_PATH_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest a background push waits.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);
/// Reports waiting for the background task; beyond this they are kept
/// aside (`FleetCore::not_delivered`) until the backend is reachable again.
const QUEUE: usize = 4096;

/// What a request learned, pushed to the backend in the background.
#[derive(Debug)]
enum Report {
    Failure {
        member: String,
        failure: Failure,
        probe_owner: Option<String>,
    },
    Success {
        member: String,
        probe_owner: Option<String>,
    },
    Release {
        member: String,
        owner: String,
    },
    Refill {
        pool_id: String,
        n: u64,
    },
    /// A limited key's next block of permits.
    Permits {
        key: String,
        limits: Limits,
        want: permits::Want,
    },
    /// A caller's next block of its token budgets (the first window resets
    /// in `left`).
    Budget {
        key: String,
        windows: Vec<(String, u64)>,
        left: Duration,
        want: permits::Want,
    },
}

/// A half-open probe this request holds; given back when dropped unless a
/// success or failure report settled it.
pub struct ProbeHold {
    member: String,
    owner: String,
    fleet: Arc<FleetCore>,
    settled: bool,
}

impl ProbeHold {
    /// A success or failure report settles the probe: returns its owner.
    fn settle(mut self) -> String {
        self.settled = true;
        std::mem::take(&mut self.owner)
    }
}

impl Drop for ProbeHold {
    fn drop(&mut self) {
        if !self.settled {
            let now = Instant::now();
            self.fleet
                .table
                .modify(&self.member, now, |e| e.release(now, &self.owner));
            self.fleet.send(Report::Release {
                member: std::mem::take(&mut self.member),
                owner: std::mem::take(&mut self.owner),
            });
        }
    }
}

struct FleetCore {
    table: Arc<HealthTable>,
    tickets: tickets::Tickets,
    /// Leased blocks of limited members' and callers' rpm/tpm windows.
    permits: permits::Permits,
    budgets: budget::RetryBudgets,
    backend: Arc<dyn Backend>,
    link: Arc<Link>,
    reports: mpsc::Sender<Report>,
    /// Token charges not sent yet, summed per key; the pusher is woken for them.
    charges: charges::Charges,
    charges_waiting: tokio::sync::Notify,
    /// What did not reach the backend, to push when it is back.
    pending: Mutex<Pending>,
    /// This worker's id (probe owners are per request; this is per process).
    worker: String,
    /// Live workers at the last heartbeat: while the backend is unreachable a
    /// limit is split between them.
    workers: std::sync::atomic::AtomicU64,
    /// Usage of limited members as this worker knows it: (member, minute) →
    /// (requests, tokens). Counts alone while the backend is unreachable.
    usage: Mutex<HashMap<(String, i64), (u64, u64)>>,
    /// Members' headroom from their providers' rate-limit headers.
    headroom: Arc<headroom::Headroom>,
}

impl FleetCore {
    fn send(&self, r: Report) {
        if let Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) =
            self.reports.try_send(r)
        {
            self.not_delivered(&r);
        }
    }

    /// A report that did not reach the backend. A failure is merged when the
    /// backend is back (from this worker's entry then); a probe release is
    /// retried; a ticket fetch is given up. A success is dropped: the fleet's
    /// entry keeps the member benched or half-open until a success that can
    /// be told clears it (never clearing a bench another worker set since).
    fn not_delivered(&self, r: &Report) {
        let mut p = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match r {
            Report::Failure { member, .. } => {
                p.failures.insert(member.clone());
            }
            Report::Release { member, owner } => {
                p.releases.push((member.clone(), owner.clone()));
            }
            Report::Refill { pool_id, .. } => self.tickets.filled(pool_id, None),
            Report::Permits { key, limits, .. } => {
                self.permits
                    .filled(key, *limits, None, permits::Origin::None, true);
            }
            Report::Budget {
                key, windows, left, ..
            } => {
                let ask = quota::BudgetAsk::new(key, windows, *left);
                self.permits
                    .filled(&ask.block, ask.limits, None, ask.origin(), true);
            }
            Report::Success { .. } => {}
        }
    }
}

/// What waits for the backend to be reachable again.
#[derive(Default)]
struct Pending {
    failures: HashSet<String>,
    /// (member, owner) of probes to give back.
    releases: Vec<(String, String)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.releases.is_empty()
    }
}

/// Pending work taken out to push; whatever is left when it is dropped (an
/// error, a timeout, a cancelled future) goes back.
struct Taken<'a> {
    core: &'a FleetCore,
    failures: Vec<String>,
    releases: Vec<(String, String)>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut p = self
            .core
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.failures.extend(self.failures.drain(..));
        p.releases.append(&mut self.releases);
    }
}

/// The fleet state a worker holds; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    core: Arc<FleetCore>,
}

/// What a reported failure did to its member.
pub struct Reported {
    /// The member's entry after it.
    pub entry: Entry,
    /// This failure benched the member (it was not benched just before):
    /// a bench counts once however many failures land while it lasts.
    pub benched_it: bool,
}

impl Fleet {
    /// A fleet over `backend`; the returned task pushes reports until `stop`.
    pub fn new(
        backend: Arc<dyn Backend>,
        link: Arc<Link>,
        budget: budget::BudgetPolicy,
        stop: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let core = Arc::new(FleetCore {
            table: Arc::new(HealthTable::default()),
            tickets: tickets::Tickets::default(),
            permits: permits::Permits::default(),
            budgets: budget::RetryBudgets::new(budget),
            backend,
            link,
            reports: tx,
            charges: charges::Charges::default(),
            charges_waiting: tokio::sync::Notify::new(),
            pending: Mutex::new(Pending::default()),
            worker: uuid::Uuid::new_v4().simple().to_string(),
            workers: std::sync::atomic::AtomicU64::new(1),
            usage: Mutex::new(HashMap::new()),
            headroom: Arc::default(),
        });
        let pusher = push::run(core.clone(), rx, stop);
        (Self { core }, pusher)
    }

    /// A fleet of one worker kept in this process's memory (no Redis), with
    /// the default retry budget; the returned task pushes its reports (run
    /// it on the caller's runtime). For an engine without a fleet to share.
    pub fn in_memory() -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        Self::new(
            Arc::new(memory::MemoryBackend::default()),
            Arc::new(Link::default()),
            budget::BudgetPolicy::default(),
            CancellationToken::new(),
        )
    }

    pub fn table(&self) -> &Arc<HealthTable> {
        &self.core.table
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.core.link
    }

    /// Members' headroom from their providers' rate-limit headers.
    pub fn headroom(&self) -> &Arc<headroom::Headroom> {
        &self.core.headroom
    }

    /// A member's requests and tokens left this minute: the least of what
    /// its provider's rate-limit headers last said and what its own rpm/tpm
    /// limits have left fleet-wide (as of this worker's last lease); `None`:
    /// unknown. Memory only.
    pub fn remaining(&self, member: &str, limits: Limits) -> (Option<u64>, Option<u64>) {
        let (hr, ht) = self.core.headroom.view(member);
        if !limits.any() {
            return (hr, ht);
        }
        let (lr, lt) = self.core.permits.remaining(member);
        let least = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (least(hr, lr), least(ht, lt))
    }

    /// The next round-robin ticket of a pool; never waits.
    pub fn ticket(&self, pool_id: &str) -> u64 {
        let (t, refill) = self.core.tickets.take(pool_id);
        if let Some(r) = refill {
            if self.core.link.is_up() {
                self.core.send(Report::Refill {
                    pool_id: pool_id.to_owned(),
                    n: r.n,
                });
            } else {
                self.core.tickets.filled(pool_id, None);
            }
        }
        t
    }

    /// Leases the first tickets of pools that have none yet (after a config load).
    pub fn prefetch<'a>(&self, pool_ids: impl IntoIterator<Item = &'a str>) {
        if !self.core.link.is_up() {
            return;
        }
        for id in pool_ids {
            if let Some(r) = self.core.tickets.prefetch(id) {
                self.core.send(Report::Refill {
                    pool_id: id.to_owned(),
                    n: r.n,
                });
            }
        }
    }

    /// A request's first attempt on a pool (it earns retry budget).
    pub fn first_attempt(&self, pool_id: &str) {
        self.core.budgets.first_attempt(pool_id);
    }

    /// Whether the pool's retry budget allows one more attempt (and spends it).
    pub fn try_retry(&self, pool_id: &str) -> bool {
        self.core.budgets.try_retry(pool_id)
    }

    /// Gives back a retry the request did not make (the member was over its limit).
    pub fn refund_retry(&self, pool_id: &str) {
        self.core.budgets.refund(pool_id);
    }

    /// A transient failure: applied here at once, pushed to the fleet.
    /// Returns the member's entry as this worker now sees it.
    pub fn failure(
        &self,
        member: &str,
        policy: &Policy,
        retry_after: Option<Duration>,
        probe: Option<ProbeHold>,
    ) -> Reported {
        self.report_failure(member, Failure::new(policy, retry_after), probe)
    }

    fn report_failure(&self, member: &str, f: Failure, probe: Option<ProbeHold>) -> Reported {
        let owner = probe.map(ProbeHold::settle);
        let now = Instant::now();
        let (was_benched, entry) = self.core.table.modify(member, now, |e| {
            let was = e.benched_at(now);
            e.fail(now, &f, owner.as_deref());
            was
        });
        self.core.send(Report::Failure {
            member: member.to_owned(),
            failure: f,
            probe_owner: owner,
        });
        Reported {
            benched_it: !was_benched && entry.benched_at(now),
            entry,
        }
    }

    /// Benches a member at once, fleet-wide, for `d` (a rate limit, a refused
    /// credential): no threshold, no doubling; a longer bench is kept.
    pub fn bench_for(&self, member: &str, d: Duration, probe: Option<ProbeHold>) -> Reported {
        self.report_failure(member, Failure::bench_for(d), probe)
    }

    /// A success: ends the member's failures, bench and probe if it had any
    /// (no backend call otherwise).
    pub fn success(&self, member: &str, probe: Option<ProbeHold>) {
        let owner = probe.map(ProbeHold::settle);
        let now = Instant::now();
        if self
            .core
            .table
            .get(member)
            .is_some_and(|e| e.needs_success(now, owner.as_deref()))
        {
            self.core
                .table
                .modify(member, now, |e| e.succeed(now, owner.as_deref()));
            self.core.send(Report::Success {
                member: member.to_owned(),
                probe_owner: owner,
            });
        }
    }

    /// Claims a half-open member's probe for this request (one fleet-wide).
    pub async fn claim(&self, member: &str, policy: &Policy, ttl: Duration) -> Option<ProbeHold> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let now = Instant::now();
        let stale = Failure::new(policy, None).stale_after();
        let (granted, _) = self
            .core
            .table
            .modify(member, now, |e| e.claim(now, &owner, ttl, stale));
        if !granted {
            return None;
        }
        let hold = ProbeHold {
            member: member.to_owned(),
            owner,
            fleet: self.core.clone(),
            settled: false,
        };
        if !self.core.link.usable() {
            return Some(hold);
        }
        let asked = tokio::time::timeout(
            REQUEST_PATH_TIMEOUT,
            self.core.backend.claim(member, &hold.owner, ttl, stale),
        )
        .await;
        match asked {
            Ok(Ok((granted, entry))) => {
                self.core.link.ok();
                self.core.table.apply(member, entry);
                if granted {
                    Some(hold)
                } else {
                    // Someone else probes it; the fleet's entry already says so.
                    hold.settle();
                    None
                }
            }
            Ok(Err(e)) => {
                self.core.link.failed(&e.0);
                Some(hold)
            }
            Err(_) => {
                self.core.link.failed("probe claim timed out");
                Some(hold)
            }
        }
    }

    /// Pushes what this worker learned while the backend was unreachable:
    /// its failures (merged: the worse of both wins), its probe releases and
    /// its token charges. Each call is bounded; what is not done stays pending.
    pub async fn push_pending(&self) -> Result<(), BackendError> {
        let mut taken = {
            let mut p = self
                .core
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Taken {
                core: &self.core,
                failures: p.failures.drain().collect(),
                releases: std::mem::take(&mut p.releases),
            }
        };
        while let Some(m) = taken.failures.last().cloned() {
            // The entry may be gone (a reload replaced the table): nothing to merge.
            if let Some(local) = self.core.table.get(&m) {
                let merged =
                    tokio::time::timeout(BACKGROUND_TIMEOUT, self.core.backend.merge(&m, &local))
                        .await
                        .map_err(|_| BackendError("merge timed out".into()))??;
                self.core.table.apply(&m, merged);
            }
            taken.failures.pop();
        }
        while let Some((m, owner)) = taken.releases.last().cloned() {
            let released =
                tokio::time::timeout(BACKGROUND_TIMEOUT, self.core.backend.release(&m, &owner))
                    .await
                    .map_err(|_| BackendError("release timed out".into()))??;
            self.core.table.apply(&m, released);
            taken.releases.pop();
        }
        drop(taken);
        push::send_charges(&self.core).await
    }

    pub fn has_pending(&self) -> bool {
        !self.core.charges.is_empty()
            || !self
                .core
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_empty()
    }

    /// Distinct keys (member minutes, caller budgets) with charges not sent yet.
    pub fn pending_charges(&self) -> usize {
        self.core.charges.len()
    }

    /// Leased permits held and not used yet.
    pub fn permits_held(&self) -> permits::Held {
        self.core.permits.held()
    }

    /// Charges given up: past the store's bound, or too old to count.
    pub fn dropped_charges(&self) -> charges::Dropped {
        self.core.charges.dropped()
    }

    /// Loads the whole table from the backend, replacing this worker's copy;
    /// what only this worker knows is pushed first.
    /// Returns the change counter the table is now at.
    pub async fn reload(&self) -> Result<u64, BackendError> {
        if let Err(e) = self.push_pending().await {
            tracing::debug!(error = %e, "pending fleet reports not pushed yet");
        }
        let (entries, version) = self.core.backend.load().await?;
        self.core.table.replace(entries, version);
        Ok(version)
    }

    /// This worker's id in the fleet's list of live workers.
    pub fn worker_id(&self) -> &str {
        &self.core.worker
    }

    /// How many workers were live at the last heartbeat.
    pub fn set_live_workers(&self, n: u64) {
        self.core
            .workers
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets the tickets and retry budgets of pools that are gone.
    pub fn retain_pools(&self, keep: impl Fn(&str) -> bool) {
        self.core.tickets.retain(&keep);
        self.core.budgets.retain(&keep);
    }
}
