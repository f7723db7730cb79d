//! Failover: one request over the tiers of its plan, member after member,
//! until one serves (docs/adr/004-failover-and-health.md).
//!
//! - Transient error: retry the member per policy, then the next; every
//!   failure counts toward its bench. Model not found or a misconfigured
//!   member: next, no penalty. Permanent: return at once unless the pool
//!   advances on it.
//! - Benched members are skipped. A member whose bench is over is probed by
//!   the one request (fleet-wide) that claims it; the rest skip it.
//! - A member over its rpm/tpm limit is skipped without penalty; so is one
//!   at its concurrency cap. When every member left is at its cap, the
//!   request waits for a slot in its pool's queue (`admit`), within its
//!   deadline, then tries those members again.
//! - The caller's deadline bounds everything: no attempt starts after it,
//!   and an attempt it cuts is not held against the member.
//! - Attempts are bounded by members × (1 + retries) and a global cap.
//!
//! What a request holds (a probe, a concurrency slot, a place in a queue)
//! is released by its guard, on every path.
//!
//! # Layout
//! The loop over the tiers is here; a member's way through it:
//! - `deadline`: a member too slow for the caller's time left is passed
//!   over; the error when the deadline is why nothing served.
//! - `member`: one member's try — probe or slot, quota, the attempt with
//!   its retries, and what its failure means.
//! - `busy`: members at their cap, tried again once a slot frees (`admit`).
//! - `run`: the state the request carries across members; `tried`: the
//!   record of its attempts, and the error they add up to.

mod busy;
mod deadline;
mod member;
mod run;
mod tried;
pub(crate) mod verdict;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use crate::attempt::{self, HttpClients, OpenStream};
use crate::catalog::Catalog;
use crate::error::DpError;
use crate::features::Features;
use crate::fit;
use crate::fleet::Fleet;
use crate::fleet::slots::Slots;
use crate::model::{Candidate, Live, Pool};
use crate::observe::trace::Incoming;
use crate::observe::{Observer, Operation};
use crate::plan::{self, Step};
use crate::signals::{Carry, Signals};
use crate::upstream::{
    self, ChatRequest, Completion, EmbedRequest, Embeddings, Prepared, TraceHeaders, UpstreamError,
};
use run::{Outcome, Run, outcome_of};
pub use tried::Failed;
use tried::Log;

/// Shared by every request of a worker (built with `Engine::new`).
pub struct Engine {
    catalog: Arc<ArcSwap<Catalog>>,
    fleet: Fleet,
    http: HttpClients,
    rules: Rules,
    observer: Arc<Observer>,
    /// Spans are exported (OTLP): each attempt gets a span of its own.
    export_spans: bool,
    /// Members' live signals (in flight, latency), fleet-wide.
    signals: Arc<Signals>,
    /// Capped members' concurrency slots and the pools' admission queues.
    slots: Arc<Slots>,
}

/// The worker-wide rules of failover.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Global cap on attempts per request.
    pub max_attempts: u32,
    /// A rate-limited member without a Retry-After is benched this long.
    pub rate_limit_cooldown: Duration,
    /// A member whose credential or account is refused is benched this long.
    pub auth_cooldown: Duration,
    /// First backoff between retries of one member (doubled each retry, jittered).
    pub retry_backoff: Duration,
}

/// What an engine is built from: the worker's live config, fleet state and
/// observer, and its rules.
pub struct Parts {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub fleet: Fleet,
    pub observer: Arc<Observer>,
    pub signals: Arc<Signals>,
    pub slots: Arc<Slots>,
    pub rules: Rules,
    /// Spans are exported (OTLP): each attempt gets a span of its own.
    pub export_spans: bool,
}

impl Engine {
    pub fn new(p: Parts) -> Self {
        Self {
            catalog: p.catalog,
            fleet: p.fleet,
            http: HttpClients::default(),
            rules: p.rules,
            observer: p.observer,
            export_spans: p.export_spans,
            signals: p.signals,
            slots: p.slots,
        }
    }

    /// The config this worker serves, swapped whole on each revision.
    pub fn catalog(&self) -> &Arc<ArcSwap<Catalog>> {
        &self.catalog
    }

    /// What the fleet shares (health, limits, signals' transport).
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Metrics and statistics.
    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// Whether spans are exported: requests then carry the GenAI attributes.
    pub fn exports_spans(&self) -> bool {
        self.export_spans
    }

    /// The failover rules, for a test that changes one.
    pub fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    /// The failover rules.
    /// Carries out what a member's failure means for it (`verdict`).
    pub(crate) fn judge(&self) -> verdict::Judge<'_> {
        verdict::Judge {
            fleet: &self.fleet,
            metrics: &self.observer.metrics,
            rules: &self.rules,
        }
    }

    pub fn rules(&self) -> Rules {
        self.rules
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
    /// Tokens reserved from the member's `tpm_limit` (an estimate), to settle
    /// against the answer's usage.
    pub reserved_tokens: u64,
}

/// What one request asks of the engine, whatever its kind.
struct Ask<'a> {
    operation: Operation,
    model: &'a str,
    deadline: Option<Instant>,
    /// The request's token estimate (reserved from limited members).
    estimate: u64,
    /// What route tiers' conditions read of the request.
    features: Features,
    /// The caller's trace context, continued by each attempt.
    trace: &'a Incoming,
}

impl<'a> Ask<'a> {
    /// A chat request, unary or streamed.
    fn chat(
        model: &'a str,
        req: &ChatRequest,
        deadline: Option<Instant>,
        trace: &'a Incoming,
    ) -> Self {
        Self {
            operation: Operation::Chat,
            model,
            deadline,
            estimate: req.token_estimate(),
            features: Features::of(req),
            trace,
        }
    }
}

impl Engine {
    pub async fn generate(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Option<Instant>,
        trace: &Incoming,
    ) -> Result<Served<Completion>, Failed> {
        // Each attempt borrows the request and shares the member (no copies per attempt).
        self.run(
            Ask::chat(model, req, deadline, trace),
            |c| upstream::prepare(&c.target, req, false),
            |c, body, t| attempt::complete(&self.http, c, req, body, t),
        )
        .await
    }

    pub async fn open_stream(
        &self,
        model: &str,
        req: &ChatRequest,
        deadline: Option<Instant>,
        trace: &Incoming,
    ) -> Result<Served<OpenStream>, Failed> {
        self.run(
            Ask::chat(model, req, deadline, trace),
            |c| upstream::prepare(&c.target, req, true),
            |c, body, t| attempt::open_stream(&self.http, c, req, body, t),
        )
        .await
    }

    pub async fn embed(
        &self,
        model: &str,
        req: &EmbedRequest,
        deadline: Option<Instant>,
        trace: &Incoming,
    ) -> Result<Served<Embeddings>, Failed> {
        let estimate = req.token_estimate();
        let ask = Ask {
            operation: Operation::Embeddings,
            model,
            deadline,
            estimate,
            features: Features::text(estimate),
            trace,
        };
        self.run(
            ask,
            |c| upstream::prepare_embed(&c.target, req),
            |c, body, t| attempt::embed(&self.http, c, req, body, t),
        )
        .await
    }

    async fn run<T, P, F, Fut>(
        &self,
        ask: Ask<'_>,
        prepare: P,
        attempt: F,
    ) -> Result<Served<T>, Failed>
    where
        P: Fn(&Candidate) -> Result<Prepared, UpstreamError>,
        F: Fn(Arc<Candidate>, Arc<Prepared>, TraceHeaders) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
        T: Carry + upstream::Rated,
    {
        let catalog = self.catalog.load_full();
        if !catalog.loaded {
            return Err(Log::default().fail(DpError::NotReady));
        }
        let Ask {
            operation,
            model,
            deadline,
            estimate,
            features,
            trace,
        } = ask;
        let resolved = catalog
            .resolve(model, &features)
            .map_err(|e| Log::default().fail(e))?;
        let mut run = Run {
            operation,
            model,
            deadline,
            budget: self.rules.max_attempts.max(1),
            first_pool: None,
            free_hop: false,
            estimate,
            reserved: 0,
            slow_skips: 0,
            too_long: false,
            place: None,
            busy_seen: false,
            log: Log::watched(self.observer.clone(), operation),
            trace,
        };
        let tiers: Vec<&(u32, Arc<Pool>)> = resolved
            .tiers
            .iter()
            .filter(|(_, p)| !p.active.is_empty())
            .collect();
        // Members at their cap, tried again when a slot frees.
        let mut busy: Vec<(usize, Step, Arc<Prepared>)> = Vec::new();
        for (tier, (index, pool)) in tiers.iter().enumerate() {
            run.log.tier = *index;
            let ticket = if pool.takes_tickets() {
                self.fleet.ticket(&pool.id)
            } else {
                0
            };
            let plan = plan::plan(
                pool,
                ticket,
                &self.fleet.table().load(),
                Instant::now(),
                &|c| self.live(c),
            );
            for (c, skip) in &plan.skipped {
                run.log.skipped(pool, c, *skip);
            }
            let (steps, unfit) = fit::screen(plan.steps, run.estimate, self.fleet.headroom());
            for (c, why) in &unfit {
                run.log.unfit(pool, c, *why, run.estimate);
            }
            let mut steps = steps.into_iter();
            while let Some(step) = steps.next() {
                let member = step.candidate.clone();
                // A member that cannot take the request is passed over before
                // anything is claimed, reserved, spent or sent.
                let body = match prepare(&member) {
                    Ok(body) => Arc::new(body),
                    Err(err) => {
                        run.log
                            .push(pool, &member, outcome_of(err.class()), Some(&err), None);
                        run.log.reason(&member, err.to_string());
                        continue;
                    }
                };
                match self.try_member(pool, step, body, &mut run, &attempt).await {
                    Outcome::Served(value) => return Ok(served(value, pool, member, &mut run)),
                    Outcome::Busy(step, body) => busy.push((tier, step, body)),
                    Outcome::Next if std::mem::take(&mut run.too_long) => {
                        steps =
                            fit::larger_first(steps.collect(), member.context_tokens).into_iter();
                    }
                    Outcome::Next => {}
                    Outcome::Stop(e) => return Err(run.log.fail(e)),
                    outcome @ (Outcome::GiveUp | Outcome::Cap) => {
                        // The final error names every member, those never reached too.
                        let why = if matches!(outcome, Outcome::Cap) {
                            "not reached: the attempt cap was reached first"
                        } else {
                            "not reached: the retry budget was spent first"
                        };
                        for rest in steps {
                            run.log.reason(&rest.candidate, why);
                        }
                        for (_, later) in &tiers[tier + 1..] {
                            for c in &later.active {
                                run.log.reason(c, why);
                            }
                        }
                        return Err(if matches!(outcome, Outcome::Cap) {
                            run.log.capped(&resolved.model, self.rules.max_attempts)
                        } else {
                            run.log.gave_up(&resolved.model)
                        });
                    }
                }
            }
        }
        // Members at their cap: tried again as slots free.
        if let Some(served) = self
            .retry_busy(&tiers, busy, &mut run, &resolved.model, &attempt)
            .await?
        {
            return Ok(served);
        }
        if run.slow_skips > 0 {
            // Members were left for the time left: the caller's deadline is
            // why nothing served, so it hears so now, not after a hopeless try.
            let e = self.deadline(&run);
            return Err(run.log.fail(e));
        }
        Err(run.log.exhausted(&resolved.model))
    }

    /// A member's live signals, fleet-wide, as the plan reads them: load
    /// and latency, and its headroom (provider headers and own limits).
    pub fn live(&self, c: &Candidate) -> Live {
        let (remaining_requests, remaining_tokens) = self.fleet.remaining(&c.member_id, c.limits);
        Live {
            remaining_requests,
            remaining_tokens,
            ..self.signals.live(&c.member_id)
        }
    }
}

/// A success: who served it, and what was tried.
fn served<T>(value: T, pool: &Arc<Pool>, member: Arc<Candidate>, run: &mut Run<'_>) -> Served<T> {
    let served_by = pb::ServedBy {
        pool: pool.name.clone(),
        member_id: member.member_id.clone(),
        provider: member.provider.clone(),
        upstream_model: member.upstream_model.clone(),
    };
    Served {
        value,
        served_by,
        attempts: run.log.take_attempts(),
        member,
        pool: Arc::clone(pool),
        reserved_tokens: run.reserved,
    }
}
