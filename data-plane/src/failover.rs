//! One request over its ordered candidates: retries, failover, health and
//! the half-open probe (docs/adr/004-failover-and-health.md).
//!
//! - Transient error: retry the member per policy, then the next; every
//!   failure counts toward its bench. Model not found: next member, no
//!   penalty. Permanent: return at once unless the pool advances on it.
//! - Benched members are skipped; when a pool has nothing but benched
//!   members, one probe request at a time (fleet-wide) goes to the member
//!   whose bench ends first.
//! - The caller's deadline bounds everything: no attempt starts after it.
//! - Attempts are bounded by members × (1 + retries) and a global cap.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt as _;
use switchyard_proto::v1 as pb;
use tokio_util::task::TaskTracker;

use crate::catalog::{Candidate, Catalog, Pool, Strategy};
use crate::error::DpError;
use crate::health::Fleet;
use crate::upstream::{
    self, ChatRequest, Chunk, ChunkStream, Completion, ErrorClass, UpstreamError,
};

/// Shared by every request of a worker.
pub struct Engine {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub fleet: Arc<Fleet>,
    pub http: HttpClients,
    /// Global cap on attempts per request.
    pub max_attempts: u32,
    /// Where probe-token releases run when a request is dropped mid-attempt.
    pub tasks: TaskTracker,
}

/// Pooled HTTP clients, one per distinct provider connect timeout (reqwest
/// sets it per client), kept across config changes so connection pools
/// survive them. Clients make no retries of their own and have no overall
/// timeout: failover decides both, per attempt.
pub struct HttpClients {
    clients: std::sync::Mutex<std::collections::HashMap<Duration, reqwest::Client>>,
}

impl Default for HttpClients {
    fn default() -> Self {
        Self {
            clients: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl HttpClients {
    pub fn for_connect_timeout(&self, connect: Duration) -> reqwest::Client {
        let mut map = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(&connect) {
            return c.clone();
        }
        let built = reqwest::Client::builder()
            .connect_timeout(connect)
            // A redirect would carry the credential headers to another host,
            // and turn a POST into a GET: an upstream that redirects is misconfigured.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build();
        match built {
            Ok(c) => {
                map.insert(connect, c.clone());
                c
            }
            Err(err) => {
                // Only TLS back-end initialisation can fail here; fall back to defaults.
                tracing::error!(error = %err, "cannot build an HTTP client; using defaults");
                reqwest::Client::new()
            }
        }
    }
}

/// A success, with who served it and what was tried.
pub struct Served<T> {
    pub value: T,
    pub served_by: pb::ServedBy,
    pub attempts: Vec<pb::Attempt>,
    /// The member, for health reports after the first chunk.
    pub member: Arc<Candidate>,
    pub pool: Arc<Pool>,
}

/// A failure, with what was tried.
pub struct Failed {
    pub error: DpError,
    pub attempts: Vec<pb::Attempt>,
}

/// An open stream: its first chunk is in hand, so it is committed.
pub struct OpenStream {
    pub first: Chunk,
    pub rest: ChunkStream,
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn record(
    pool: &Pool,
    c: &Candidate,
    outcome: pb::AttemptOutcome,
    err: Option<&UpstreamError>,
    start: Option<Instant>,
) -> pb::Attempt {
    pb::Attempt {
        pool: pool.name.clone(),
        member_id: c.member_id.clone(),
        provider: c.provider.clone(),
        upstream_model: c.upstream_model.clone(),
        outcome: outcome.into(),
        http_status: err
            .and_then(UpstreamError::http_status)
            .map_or(0, u32::from),
        detail: err.map(ToString::to_string).unwrap_or_default(),
        duration_ms: start.map_or(0, elapsed_ms),
    }
}

fn label(c: &Candidate) -> String {
    format!(
        "{}/{} (member {})",
        c.provider, c.upstream_model, c.member_id
    )
}

/// Releases a held probe token on every path, including a dropped request.
struct ProbeGuard {
    fleet: Arc<Fleet>,
    pool_id: String,
    token: String,
    tasks: TaskTracker,
    released: bool,
}

impl ProbeGuard {
    async fn release(mut self) {
        // Marked only once done: if this future is dropped mid-call, Drop
        // releases again (the compare-and-delete makes that harmless).
        self.fleet.release_probe(&self.pool_id, &self.token).await;
        self.released = true;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.released {
            let (fleet, pool, token) = (
                self.fleet.clone(),
                std::mem::take(&mut self.pool_id),
                std::mem::take(&mut self.token),
            );
            self.tasks
                .spawn(async move { fleet.release_probe(&pool, &token).await });
        }
    }
}

impl Engine {
    pub async fn generate(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<Served<Completion>, Failed> {
        // Each attempt borrows the request and shares the member (no deep copies per attempt).
        self.run(model, deadline, move |c: Arc<Candidate>| {
            let http = self.http.for_connect_timeout(c.target.timeouts.connect);
            async move {
                let t = &c.target;
                tokio::time::timeout(t.timeouts.total, upstream::complete(&http, t, req))
                    .await
                    .unwrap_or(Err(UpstreamError::RequestTimeout))
            }
        })
        .await
    }

    pub async fn open_stream(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<Served<OpenStream>, Failed> {
        self.run(model, deadline, move |c: Arc<Candidate>| {
            let http = self.http.for_connect_timeout(c.target.timeouts.connect);
            async move {
                let t = &c.target;
                // Failover is allowed until the first chunk: peek it, bounded
                // by the first-byte timeout, then commit.
                let budget = t.timeouts.first_byte;
                let open = async {
                    let mut s = upstream::stream(&http, t, req).await?;
                    match s.next().await {
                        Some(Ok(first)) => Ok(OpenStream { first, rest: s }),
                        Some(Err(e)) => Err(e),
                        None => Err(UpstreamError::Truncated),
                    }
                };
                tokio::time::timeout(budget, open)
                    .await
                    .unwrap_or(Err(UpstreamError::FirstByteTimeout))
            }
        })
        .await
    }

    async fn run<T, F, Fut>(
        &self,
        model: &str,
        deadline: Option<Instant>,
        attempt: F,
    ) -> Result<Served<T>, Failed>
    where
        F: Fn(Arc<Candidate>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let catalog = self.catalog.load_full();
        if !catalog.loaded {
            return Err(Failed {
                error: DpError::NotReady(
                    "this worker has not loaded a config yet; retry shortly".into(),
                ),
                attempts: Vec::new(),
            });
        }
        let plan = catalog.resolve(model).map_err(|error| Failed {
            error,
            attempts: Vec::new(),
        })?;
        let mut attempts: Vec<pb::Attempt> = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        let mut budget = self.max_attempts.max(1);

        for pool in &plan.tiers {
            if pool.active.is_empty() {
                continue;
            }
            let members: Vec<_> = pool.active.iter().map(|c| c.as_member()).collect();
            // A pool of one needs no counter (and a direct provider/model, whose
            // name the caller picks, must not create Redis keys).
            let counts = pool.strategy != Strategy::Random && pool.active.len() > 1;
            let begin = self.fleet.begin(&pool.id, &members, counts).await;
            let order =
                crate::select::order(pool.strategy, &pool.active, begin.counter, &pool.sequence);
            let health = |i: usize| begin.health.get(i).copied().unwrap_or_default();
            // Members over their rpm/tpm limit sit this minute out (no penalty).
            let mut order = order;
            order.retain(|&i| {
                let c = &pool.active[i];
                match c.over_quota(&health(i)) {
                    None => true,
                    Some(why) => {
                        attempts.push(record(
                            pool,
                            c,
                            pb::AttemptOutcome::SkippedQuota,
                            None,
                            None,
                        ));
                        reasons.push(format!("{}: {why}", label(c)));
                        false
                    }
                }
            });
            let (mut ready, benched): (Vec<usize>, Vec<usize>) = order
                .into_iter()
                .partition(|&i| !health(i).benched(begin.now_ms));

            let mut probe: Option<ProbeGuard> = None;
            if ready.is_empty() && !benched.is_empty() {
                // Half-open: one probe at a time, fleet-wide, to the member back soonest.
                let token = uuid::Uuid::new_v4().to_string();
                let ttl = pool
                    .active
                    .iter()
                    .map(|c| c.target.timeouts.total)
                    .max()
                    .unwrap_or(Duration::from_secs(60))
                    .min(Duration::from_secs(120));
                if self.fleet.try_probe(&pool.id, &token, ttl).await {
                    probe = Some(ProbeGuard {
                        fleet: self.fleet.clone(),
                        pool_id: pool.id.clone(),
                        token,
                        tasks: self.tasks.clone(),
                        released: false,
                    });
                    if let Some(&soonest) =
                        benched.iter().min_by_key(|&&i| health(i).benched_until_ms)
                    {
                        ready.push(soonest);
                    }
                }
            }
            for &i in &benched {
                if ready.contains(&i) {
                    continue;
                }
                let c = &pool.active[i];
                attempts.push(record(
                    pool,
                    c,
                    pb::AttemptOutcome::SkippedBenched,
                    None,
                    None,
                ));
                let secs = (health(i).benched_until_ms - begin.now_ms).max(0) as f64 / 1000.0;
                reasons.push(format!("{}: benched for {secs:.1}s more", label(c)));
            }

            for &i in &ready {
                let c = &pool.active[i];
                let mut failed_here = false;
                let tries = if probe.is_some() {
                    1
                } else {
                    1 + pool.policy.transient_retries
                };
                for n in 0..tries {
                    if budget == 0 {
                        reasons.push(format!("attempt cap of {} reached", self.max_attempts));
                        return self
                            .fail(plan.model.as_str(), attempts, reasons, probe)
                            .await;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        attempts.push(record(pool, c, pb::AttemptOutcome::Deadline, None, None));
                        if let Some(p) = probe.take() {
                            p.release().await;
                        }
                        return Err(Failed {
                            error: DpError::Deadline(format!(
                                "deadline passed after {} attempts for '{}'",
                                attempts
                                    .iter()
                                    .filter(|a| a.duration_ms > 0
                                        || a.outcome == pb::AttemptOutcome::Ok as i32)
                                    .count(),
                                plan.model
                            )),
                            attempts,
                        });
                    }
                    budget -= 1;
                    let start = Instant::now();
                    if c.limited() {
                        // Counted before the call, so concurrent requests see it.
                        self.fleet.record_usage(&c.member_id, 1, 0).await;
                    }
                    let call = attempt(c.clone());
                    let result = match deadline {
                        Some(d) => match tokio::time::timeout_at(d.into(), call).await {
                            Ok(r) => r,
                            Err(_) => {
                                // Cut by the caller's deadline: not the member's fault.
                                attempts.push(record(
                                    pool,
                                    c,
                                    pb::AttemptOutcome::Deadline,
                                    None,
                                    Some(start),
                                ));
                                if let Some(p) = probe.take() {
                                    p.release().await;
                                }
                                return Err(Failed {
                                    error: DpError::Deadline(format!(
                                        "deadline passed during attempt {} for '{}'",
                                        attempts.len(),
                                        plan.model
                                    )),
                                    attempts,
                                });
                            }
                        },
                        None => call.await,
                    };
                    match result {
                        Ok(value) => {
                            attempts.push(record(
                                pool,
                                c,
                                pb::AttemptOutcome::Ok,
                                None,
                                Some(start),
                            ));
                            if failed_here
                                || health(i).consecutive_failures > 0
                                || health(i).benched_until_ms > 0
                            {
                                self.fleet.success(&c.member_id).await;
                            }
                            if let Some(p) = probe.take() {
                                p.release().await;
                            }
                            let served_by = pb::ServedBy {
                                pool: pool.name.clone(),
                                member_id: c.member_id.clone(),
                                provider: c.provider.clone(),
                                upstream_model: c.upstream_model.clone(),
                            };
                            return Ok(Served {
                                value,
                                served_by,
                                attempts,
                                member: c.clone(),
                                pool: pool.clone(),
                            });
                        }
                        Err(err) => {
                            let class = err.class();
                            let outcome = match class {
                                ErrorClass::Transient => pb::AttemptOutcome::Transient,
                                ErrorClass::ModelNotFound => pb::AttemptOutcome::ModelNotFound,
                                ErrorClass::Permanent(_) | ErrorClass::Misconfigured => {
                                    pb::AttemptOutcome::Permanent
                                }
                            };
                            attempts.push(record(pool, c, outcome, Some(&err), Some(start)));
                            tracing::info!(pool = %pool.name, member = %c.member_id, provider = %c.provider, attempt = n + 1, error = %err, "upstream attempt failed");
                            match class {
                                ErrorClass::Transient => {
                                    failed_here = true;
                                    let f = self
                                        .fleet
                                        .failure(
                                            &c.member_id,
                                            &pool.policy,
                                            err.retry_after(),
                                            probe.is_some(),
                                        )
                                        .await;
                                    if f.benched || n + 1 == tries {
                                        if f.benched {
                                            tracing::warn!(pool = %pool.name, member = %c.member_id, until_ms = f.benched_until_ms, "member benched");
                                        }
                                        reasons.push(format!("{}: {err}", label(c)));
                                        break;
                                    }
                                }
                                ErrorClass::ModelNotFound | ErrorClass::Misconfigured => {
                                    reasons.push(format!("{}: {err}", label(c)));
                                    break;
                                }
                                ErrorClass::Permanent(code) => {
                                    if pool.policy.advance_on_permanent {
                                        reasons.push(format!("{}: {err}", label(c)));
                                        break;
                                    }
                                    if let Some(p) = probe.take() {
                                        p.release().await;
                                    }
                                    return Err(Failed {
                                        error: DpError::Upstream {
                                            code,
                                            message: format!("{}: {err}", label(c)),
                                        },
                                        attempts,
                                    });
                                }
                            }
                        }
                    }
                }
            }
            if let Some(p) = probe.take() {
                p.release().await;
            }
        }
        self.fail(plan.model.as_str(), attempts, reasons, None)
            .await
    }

    async fn fail<T>(
        &self,
        model: &str,
        attempts: Vec<pb::Attempt>,
        reasons: Vec<String>,
        probe: Option<ProbeGuard>,
    ) -> Result<Served<T>, Failed> {
        if let Some(p) = probe {
            p.release().await;
        }
        let all_quota = !attempts.is_empty()
            && attempts
                .iter()
                .all(|a| a.outcome == pb::AttemptOutcome::SkippedQuota as i32);
        if all_quota {
            return Err(Failed {
                error: DpError::QuotaExhausted(format!(
                    "every member of '{model}' used up its limit for this minute: {}",
                    reasons.join("; ")
                )),
                attempts,
            });
        }
        let all_unknown = !attempts.is_empty()
            && attempts
                .iter()
                .all(|a| a.outcome == pb::AttemptOutcome::ModelNotFound as i32);
        if all_unknown {
            return Err(Failed {
                error: DpError::NotFound(format!(
                    "no member of '{model}' knows the model: {}",
                    reasons.join("; ")
                )),
                attempts,
            });
        }
        let detail = if reasons.is_empty() {
            "no candidate could be tried".to_owned()
        } else {
            reasons.join("; ")
        };
        Err(Failed {
            error: DpError::Exhausted(format!("every candidate for '{model}' failed: {detail}")),
            attempts,
        })
    }
}
