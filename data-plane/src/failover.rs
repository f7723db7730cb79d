//! Failover: one request over the tiers of its plan, member after member,
//! until one serves (docs/adr/004-failover-and-health.md).
//!
//! - Transient error: retry the member per policy, then the next; every
//!   failure counts toward its bench. Model not found or a misconfigured
//!   member: next, no penalty. Permanent: return at once unless the pool
//!   advances on it.
//! - Benched members are skipped. A member whose bench is over is probed by
//!   the one request (fleet-wide) that claims it; the rest skip it.
//! - A member over its rpm/tpm limit is skipped without penalty.
//! - The caller's deadline bounds everything: no attempt starts after it,
//!   and an attempt it cuts is not held against the member.
//! - Attempts are bounded by members × (1 + retries) and a global cap.
//!
//! What a request holds (a probe) is released by its guard, on every path.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use crate::attempt::{self, HttpClients, OpenStream};
use crate::catalog::Catalog;
use crate::error::{DpError, Reason};
use crate::fleet::{Fleet, ProbeHold, Reservation};
use crate::model::{Candidate, Pool};
use crate::plan::{self, Skip, Step};
use crate::upstream::{ChatRequest, Completion, ErrorClass, UpstreamError};

/// Shared by every request of a worker.
pub struct Engine {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub fleet: Fleet,
    pub http: HttpClients,
    /// Global cap on attempts per request.
    pub max_attempts: u32,
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

/// What happened to a request so far: the attempts (for the caller) and
/// why each member did not serve (for the error).
#[derive(Default)]
struct Log {
    attempts: Vec<pb::Attempt>,
    reasons: Vec<Reason>,
}

impl Log {
    fn push(
        &mut self,
        pool: &Pool,
        c: &Candidate,
        outcome: pb::AttemptOutcome,
        err: Option<&UpstreamError>,
        start: Option<Instant>,
    ) {
        self.attempts.push(pb::Attempt {
            pool: pool.name.clone(),
            member_id: c.member_id.clone(),
            provider: c.provider.clone(),
            upstream_model: c.upstream_model.clone(),
            outcome: outcome.into(),
            http_status: err
                .and_then(UpstreamError::http_status)
                .map_or(0, u32::from),
            detail: err.map(ToString::to_string).unwrap_or_default(),
            duration_ms: start.map_or(0, |s| {
                u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)
            }),
        });
    }

    fn reason(&mut self, c: &Candidate, why: impl Into<String>) {
        self.reasons.push(Reason {
            member: c.label(),
            why: why.into(),
        });
    }

    fn skipped(&mut self, pool: &Pool, c: &Candidate, skip: Skip) {
        self.push(pool, c, pb::AttemptOutcome::SkippedBenched, None, None);
        match skip {
            Skip::Benched { left } => {
                self.reason(c, format!("benched for {:.1}s more", left.as_secs_f64()));
            }
            Skip::Probing => self.reason(c, "benched; another request is probing it"),
        }
    }

    /// Attempts that reached (or were cut on the way to) an upstream.
    fn tried(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| {
                a.duration_ms > 0
                    || a.outcome == pb::AttemptOutcome::Ok as i32
                    || a.outcome == pb::AttemptOutcome::Transient as i32
                    || a.outcome == pb::AttemptOutcome::Permanent as i32
                    || a.outcome == pb::AttemptOutcome::ModelNotFound as i32
            })
            .count()
    }

    fn all(&self, outcome: pb::AttemptOutcome) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(|a| a.outcome == outcome as i32)
    }

    fn fail(self, error: DpError) -> Failed {
        Failed {
            error,
            attempts: self.attempts,
        }
    }

    /// Nobody served: say why, as precisely as the attempts allow.
    fn exhausted(self, model: &str) -> Failed {
        let model = model.to_owned();
        let error = if self.all(pb::AttemptOutcome::SkippedQuota) {
            DpError::QuotaExhausted {
                model,
                reasons: self.reasons.clone(),
            }
        } else if self.all(pb::AttemptOutcome::ModelNotFound) {
            DpError::NoMemberKnowsModel {
                model,
                reasons: self.reasons.clone(),
            }
        } else {
            DpError::AllCandidatesFailed {
                model,
                reasons: self.reasons.clone(),
            }
        };
        self.fail(error)
    }
}

/// What one member did for the request.
enum Outcome<T> {
    Served(T),
    /// Try the next member.
    Next,
    /// Stop: the request fails with this.
    Stop(DpError),
}

/// The request's running state across members.
struct Run<'a> {
    model: &'a str,
    deadline: Option<Instant>,
    budget: u32,
    cap: u32,
    log: Log,
}

/// How long a probe is held at most: the longest request of the pool, plus
/// time for its outcome to reach the fleet (so it never lapses first).
fn probe_ttl(pool: &Pool) -> Duration {
    pool.active
        .iter()
        .map(|c| c.target.timeouts.total)
        .max()
        .unwrap_or(Duration::from_secs(60))
        .min(Duration::from_secs(120))
        + Duration::from_secs(5)
}

impl Engine {
    pub async fn generate(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<Served<Completion>, Failed> {
        // Each attempt borrows the request and shares the member (no copies per attempt).
        self.run(model, deadline, |c| attempt::complete(&self.http, c, req))
            .await
    }

    pub async fn open_stream(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Option<Instant>,
    ) -> Result<Served<OpenStream>, Failed> {
        self.run(model, deadline, |c| {
            attempt::open_stream(&self.http, c, req)
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
            return Err(Log::default().fail(DpError::NotReady));
        }
        let resolved = catalog.resolve(model).map_err(|e| Log::default().fail(e))?;
        let mut run = Run {
            model,
            deadline,
            budget: self.max_attempts.max(1),
            cap: self.max_attempts,
            log: Log::default(),
        };
        for pool in &resolved.tiers {
            if pool.active.is_empty() {
                continue;
            }
            let ticket = if pool.takes_tickets() {
                self.fleet.ticket(&pool.id)
            } else {
                0
            };
            let plan = plan::plan(pool, ticket, &self.fleet.table().load(), Instant::now());
            for (c, skip) in &plan.skipped {
                run.log.skipped(pool, c, *skip);
            }
            for step in plan.steps {
                let member = step.candidate.clone();
                match self.try_member(pool, step, &mut run, &attempt).await {
                    Outcome::Served(value) => {
                        let served_by = pb::ServedBy {
                            pool: pool.name.clone(),
                            member_id: member.member_id.clone(),
                            provider: member.provider.clone(),
                            upstream_model: member.upstream_model.clone(),
                        };
                        return Ok(Served {
                            value,
                            served_by,
                            attempts: run.log.attempts,
                            member,
                            pool: pool.clone(),
                        });
                    }
                    Outcome::Next => {}
                    Outcome::Stop(e) => return Err(run.log.fail(e)),
                }
            }
        }
        Err(run.log.exhausted(&resolved.model))
    }

    /// One member: claim its probe or reserve its quota if it needs either,
    /// then try it (with retries per policy).
    async fn try_member<T, F, Fut>(
        &self,
        pool: &Pool,
        step: Step,
        run: &mut Run<'_>,
        attempt: &F,
    ) -> Outcome<T>
    where
        F: Fn(Arc<Candidate>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let c = &step.candidate;
        // Released by its guard on every path that does not settle it.
        let mut probe: Option<ProbeHold> = None;
        if step.probe {
            match self
                .fleet
                .claim(&c.member_id, &pool.policy, probe_ttl(pool))
                .await
            {
                Some(hold) => probe = Some(hold),
                None => {
                    run.log.skipped(pool, c, Skip::Probing);
                    return Outcome::Next;
                }
            }
        }
        let tries = if probe.is_some() {
            1
        } else {
            1 + pool.policy.transient_retries
        };
        for n in 0..tries {
            if run.budget == 0 {
                return Outcome::Stop(DpError::AttemptCap {
                    model: run.model.to_owned(),
                    cap: run.cap,
                    reasons: std::mem::take(&mut run.log.reasons),
                });
            }
            if run.deadline.is_some_and(|d| Instant::now() >= d) {
                run.log
                    .push(pool, c, pb::AttemptOutcome::Deadline, None, None);
                return Outcome::Stop(self.deadline(run));
            }
            // Every try of a limited member takes one request of its limit.
            if c.limits.any() && self.over_limit(pool, c, run).await {
                return Outcome::Next;
            }
            run.budget -= 1;
            let start = Instant::now();
            let result = match run.deadline {
                Some(d) => match tokio::time::timeout_at(d, attempt(c.clone())).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Cut by the caller's deadline: not the member's fault.
                        run.log
                            .push(pool, c, pb::AttemptOutcome::Deadline, None, Some(start));
                        return Outcome::Stop(self.deadline(run));
                    }
                },
                None => attempt(c.clone()).await,
            };
            let err = match result {
                Ok(value) => {
                    run.log
                        .push(pool, c, pb::AttemptOutcome::Ok, None, Some(start));
                    self.fleet.success(&c.member_id, probe.take());
                    return Outcome::Served(value);
                }
                Err(err) => err,
            };
            let class = err.class();
            let outcome = match class {
                ErrorClass::Transient => pb::AttemptOutcome::Transient,
                ErrorClass::ModelNotFound => pb::AttemptOutcome::ModelNotFound,
                ErrorClass::Permanent(_) | ErrorClass::Misconfigured => {
                    pb::AttemptOutcome::Permanent
                }
            };
            run.log.push(pool, c, outcome, Some(&err), Some(start));
            tracing::info!(pool = %pool.name, member = %c.member_id, provider = %c.provider, attempt = n + 1, error = %err, "upstream attempt failed");
            match class {
                ErrorClass::Transient => {
                    let entry = self.fleet.failure(
                        &c.member_id,
                        &pool.policy,
                        err.retry_after(),
                        probe.take(),
                    );
                    let benched = entry.benched_at(Instant::now());
                    if benched {
                        tracing::warn!(pool = %pool.name, member = %c.member_id, benches = entry.benches, "member benched");
                    }
                    if benched || n + 1 == tries {
                        run.log.reason(c, err.to_string());
                        return Outcome::Next;
                    }
                }
                ErrorClass::ModelNotFound | ErrorClass::Misconfigured => {
                    run.log.reason(c, err.to_string());
                    return Outcome::Next;
                }
                ErrorClass::Permanent(refusal) => {
                    if pool.policy.advance_on_permanent {
                        run.log.reason(c, err.to_string());
                        return Outcome::Next;
                    }
                    return Outcome::Stop(DpError::Refused {
                        refusal,
                        member: c.label(),
                        message: err.to_string(),
                    });
                }
            }
        }
        Outcome::Next
    }

    /// Reserves one request of `c`'s limit; when it is refused, records the
    /// skip (no penalty) and says so.
    async fn over_limit(&self, pool: &Pool, c: &Candidate, run: &mut Run<'_>) -> bool {
        let Reservation::Denied { requests, tokens } =
            self.fleet.reserve(&c.member_id, c.limits).await
        else {
            return false;
        };
        run.log
            .push(pool, c, pb::AttemptOutcome::SkippedQuota, None, None);
        let why = match c.limits.rpm {
            Some(l) if requests >= l => {
                format!("over its rpm limit ({requests} of {l} this minute)")
            }
            _ => format!(
                "over its tpm limit ({tokens} of {} tokens this minute)",
                c.limits.tpm.unwrap_or_default()
            ),
        };
        run.log.reason(c, why);
        true
    }

    fn deadline(&self, run: &Run<'_>) -> DpError {
        DpError::Deadline {
            model: run.model.to_owned(),
            attempts: run.log.tried(),
        }
    }
}
