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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_proto::v1 as pb;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::attempt::{self, HttpClients, OpenStream};
use crate::catalog::Catalog;
use crate::error::DpError;
use crate::features::Features;
use crate::fit;
use crate::fleet::slots::{Place, Slots};
use crate::fleet::{Fleet, ProbeHold, Reservation};
use crate::model::{Candidate, Live, Pool};
use crate::observe::metrics::outcome_name;
use crate::observe::trace::Incoming;
use crate::observe::{Observer, Operation};
use crate::plan::{self, Skip, Step};
use crate::signals::{Carry, Signals};
pub use crate::tried::Failed;
use crate::tried::Log;
use crate::upstream::{
    self, ChatRequest, Completion, EmbedRequest, Embeddings, ErrorClass, Prepared, TraceHeaders,
    UpstreamError,
};

/// Shared by every request of a worker.
pub struct Engine {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub fleet: Fleet,
    pub http: HttpClients,
    /// Global cap on attempts per request.
    pub max_attempts: u32,
    /// A rate-limited member without a Retry-After is benched this long.
    pub rate_limit_cooldown: Duration,
    /// A member whose credential or account is refused is benched this long.
    pub auth_cooldown: Duration,
    /// First backoff between retries of one member (doubled each retry, jittered).
    pub retry_backoff: Duration,
    pub observer: Arc<Observer>,
    /// Spans are exported (OTLP): each attempt gets a span of its own.
    pub export_spans: bool,
    /// Members' live signals (in flight, latency), fleet-wide.
    pub signals: Arc<Signals>,
    /// Capped members' concurrency slots and the pools' admission queues.
    pub slots: Arc<Slots>,
}

/// Longest wait between two retries of one member.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

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

/// What one member did for the request.
enum Outcome<T> {
    Served(T),
    /// Try the next member.
    Next,
    /// Stop: the request fails with this.
    Stop(DpError),
    /// Stop trying: the retry budget is spent.
    GiveUp,
    /// Stop trying: the attempt cap is reached.
    Cap,
    /// The member is at its concurrency cap: try it again when a slot frees.
    Busy(Step, Arc<Prepared>),
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

/// The request's running state across members.
struct Run<'a> {
    operation: Operation,
    model: &'a str,
    deadline: Option<Instant>,
    budget: u32,
    /// The pool of the request's first attempt (its retries spend that
    /// pool's budget, which its first attempts feed), once there was one.
    first_pool: Option<&'a str>,
    /// The last member moved on with no fault (model unknown there, prompt
    /// too long for it, its account declined, misconfigured): the next try
    /// is free of the retry budget and the attempt cap.
    free_hop: bool,
    /// The request's token estimate (reserved from limited members).
    estimate: u64,
    /// What the serving member's reservation took.
    reserved: u64,
    /// Members skipped as too slow for the time left.
    slow_skips: u32,
    /// The last member said the prompt is too long for it: larger windows next.
    too_long: bool,
    /// This request's place in a pool's admission queue, while it waits.
    place: Option<Place>,
    /// Members found at their cap are recorded once, not at every retry.
    busy_seen: bool,
    log: Log,
    /// The caller's trace context, continued by each attempt.
    trace: &'a Incoming,
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
        trace: &Incoming,
    ) -> Result<Served<Completion>, Failed> {
        // Each attempt borrows the request and shares the member (no copies per attempt).
        let ask = Ask {
            operation: Operation::Chat,
            model,
            deadline,
            estimate: req.token_estimate(),
            features: Features::of(req),
            trace,
        };
        self.run(
            ask,
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
        let ask = Ask {
            operation: Operation::Chat,
            model,
            deadline,
            estimate: req.token_estimate(),
            features: Features::of(req),
            trace,
        };
        self.run(
            ask,
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
            budget: self.max_attempts.max(1),
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
                        steps = fit::larger_first(steps.collect()).into_iter();
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
                            run.log.capped(&resolved.model, self.max_attempts)
                        } else {
                            run.log.gave_up(&resolved.model)
                        });
                    }
                }
            }
        }
        // Every member left is at its cap: wait for a slot in the first
        // one's pool queue, then try them again, in order.
        run.busy_seen = true;
        while let Some(&(tier, ..)) = busy.first() {
            let (_, pool) = tiers[tier];
            if let Err(refused) = crate::admit::wait(
                &self.slots,
                &self.observer.metrics,
                pool,
                &mut run.place,
                run.deadline,
            )
            .await
            {
                let hint = crate::admit::retry_hint(
                    busy.iter().map(|(_, s, _)| self.live(&s.candidate).latency),
                );
                return Err(run.log.busy(&resolved.model, refused.why(), hint));
            }
            for (tier, step, body) in std::mem::take(&mut busy) {
                let (index, pool) = tiers[tier];
                run.log.tier = *index;
                let member = step.candidate.clone();
                match self.try_member(pool, step, body, &mut run, &attempt).await {
                    Outcome::Served(value) => return Ok(served(value, pool, member, &mut run)),
                    Outcome::Busy(step, body) => busy.push((tier, step, body)),
                    Outcome::Next => {}
                    Outcome::Stop(e) => return Err(run.log.fail(e)),
                    Outcome::Cap => {
                        return Err(run.log.capped(&resolved.model, self.max_attempts));
                    }
                    Outcome::GiveUp => return Err(run.log.gave_up(&resolved.model)),
                }
            }
        }
        if run.slow_skips > 0 {
            // Members were left for the time left: the caller's deadline is
            // why nothing served, so it hears so now, not after a hopeless try.
            let e = self.deadline(&run);
            return Err(run.log.fail(e));
        }
        Err(run.log.exhausted(&resolved.model))
    }

    /// A member's live signals, fleet-wide, as the plan reads them.
    pub fn live(&self, c: &Candidate) -> Live {
        let room = fit::live(self.fleet.headroom(), c);
        Live {
            remaining_requests: room.remaining_requests,
            remaining_tokens: room.remaining_tokens,
            ..self.signals.live(&c.member_id)
        }
    }

    /// Whether the member's recent p90 time to first token exceeds the
    /// caller's time left (no data, no deadline: try it); if so the skip is
    /// recorded, with no penalty.
    fn too_slow(&self, pool: &Pool, c: &Candidate, run: &mut Run<'_>) -> bool {
        let (Some(deadline), Some(p90)) = (run.deadline, self.live(c).ttft_p90) else {
            return false;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if p90 <= left {
            return false;
        }
        run.slow_skips += 1;
        run.log
            .push(pool, c, pb::AttemptOutcome::SkippedSlow, None, None);
        run.log.reason(
            c,
            format!(
                "skipped: its recent p90 time to first token ({} ms) exceeds the time left ({} ms)",
                p90.as_millis(),
                left.as_millis()
            ),
        );
        true
    }

    /// One member: claim its probe or reserve its quota if it needs either,
    /// then try it (with retries per policy).
    async fn try_member<'a, T, F, Fut>(
        &self,
        pool: &'a Pool,
        step: Step,
        body: Arc<Prepared>,
        run: &mut Run<'a>,
        attempt: &F,
    ) -> Outcome<T>
    where
        F: Fn(Arc<Candidate>, Arc<Prepared>, TraceHeaders) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
        T: Carry + upstream::Rated,
    {
        let c = &step.candidate;
        if self.too_slow(pool, c, run) {
            return Outcome::Next;
        }
        // A slot of a capped member, taken from memory; freed when the
        // attempt's hold (a stream's: when it ends) or this function drops it.
        let cap = c.max_concurrency.filter(|_| !c.ephemeral);
        let mut permit = match self.slots.take(&c.member_id, cap, &pool.id, &mut run.place) {
            Ok(p) => p,
            Err(_at_cap) => {
                if !run.busy_seen {
                    run.log.busy_skip(pool, c);
                }
                return Outcome::Busy(step, body);
            }
        };
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
            // The first try after a hop with no fault (the member did not
            // know the model, the prompt did not fit it, its account
            // declined) is free: it spends neither the retry budget nor the
            // attempt cap.
            let free = std::mem::take(&mut run.free_hop);
            if run.budget == 0 && !free {
                return Outcome::Cap;
            }
            if run.deadline.is_some_and(|d| Instant::now() >= d) {
                run.log
                    .push(pool, c, pb::AttemptOutcome::Deadline, None, None);
                return Outcome::Stop(self.deadline(run));
            }
            // Every other attempt after the request's first spends the retry
            // budget of the pool it started in.
            let retry_of = run.first_pool.filter(|_| !free);
            if let Some(first) = retry_of
                && !self.fleet.try_retry(first)
            {
                run.log
                    .push(pool, c, pb::AttemptOutcome::BudgetRefused, None, None);
                run.log
                    .reason(c, "not tried: the request's pool spent its retry budget");
                return Outcome::GiveUp;
            }
            // Every try of a limited member takes one request of its limit.
            if c.limits.any() && self.over_limit(pool, c, run).await {
                if let Some(first) = retry_of {
                    self.fleet.refund_retry(first);
                }
                // Still the hop after a no-fault outcome for the next member.
                run.free_hop = free;
                return Outcome::Next;
            }
            // What this try took from the member's tpm window, given back
            // unless it is the answer that settles it.
            let reserved = if c.limits.any() { run.estimate } else { 0 };
            if run.first_pool.is_none() {
                self.fleet.first_attempt(&pool.id);
                run.first_pool = Some(&pool.id);
            }
            if !free {
                run.budget = run.budget.saturating_sub(1);
            }
            let start = Instant::now();
            // The attempt's span (when spans are exported): the parent the
            // upstream sees in traceparent.
            let span = if !self.export_spans {
                tracing::Span::none()
            } else {
                tracing::info_span!(
                "attempt",
                otel.name = %format_args!("{} {}", run.operation.name(), c.upstream_model),
                otel.kind = "client",
                gen_ai.operation.name = run.operation.name(),
                gen_ai.provider.name = %c.provider,
                gen_ai.request.model = %c.upstream_model,
                switchyard.pool = %pool.name,
                switchyard.member = %c.member_id,
                switchyard.try = n + 1,
                switchyard.outcome = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                switchyard.ttfb_ms = tracing::field::Empty,
                )
            };
            let probing = probe.is_some();
            let busy = self.observer.metrics.attempt_started(c, &pool.name);
            // Counts the attempt in flight until dropped, on every path.
            let hold = self.signals.hold(c);
            let call = attempt(c.clone(), body.clone(), run.trace.outgoing(&span))
                .instrument(span.clone());
            let result = match run.deadline {
                Some(d) => match tokio::time::timeout_at(d, call).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Cut by the caller's deadline: not the member's fault.
                        busy.done();
                        hold.timed_out();
                        span.record("switchyard.outcome", "deadline");
                        run.log
                            .push(pool, c, pb::AttemptOutcome::Deadline, None, Some(start));
                        self.give_back(c, reserved);
                        return Outcome::Stop(self.deadline(run));
                    }
                },
                None => call.await,
            };
            busy.done();
            if !c.ephemeral
                && let Some(rate) = match &result {
                    Ok(v) => v.rate(),
                    Err(e) => e.rate(),
                }
            {
                self.fleet.headroom().observe(&c.member_id, &rate);
            }
            if probing {
                self.observer
                    .metrics
                    .probed(&pool.name, &c.member_id, result.is_ok());
            }
            let err = match result {
                Ok(mut value) => {
                    hold.first_byte();
                    value.carry(hold.with_permit(permit.take()));
                    span.record("switchyard.outcome", "ok");
                    span.record(
                        "switchyard.ttfb_ms",
                        u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                    );
                    run.log
                        .push(pool, c, pb::AttemptOutcome::Ok, None, Some(start));
                    if !c.ephemeral {
                        self.fleet.success(&c.member_id, probe.take());
                    }
                    run.reserved = reserved;
                    return Outcome::Served(value);
                }
                Err(err) => {
                    self.give_back(c, reserved);
                    if matches!(
                        err,
                        UpstreamError::FirstByteTimeout | UpstreamError::RequestTimeout
                    ) {
                        hold.timed_out();
                    }
                    err
                }
            };
            let class = err.class();
            let outcome = outcome_of(class);
            let outcome_label = outcome_name(outcome as i32);
            span.record("switchyard.outcome", outcome_label);
            span.record("error.type", outcome_label);
            if let Some(status) = err.http_status() {
                span.record("http.response.status_code", status);
            }
            run.log.push(pool, c, outcome, Some(&err), Some(start));
            tracing::info!(pool = %pool.name, member = %c.member_id, provider = %c.provider, attempt = n + 1, error = %err, "upstream attempt failed");
            if c.ephemeral {
                // A direct call to a model no member serves: the caller named
                // it, so its failures leave no health state behind.
                if class == ErrorClass::Transient && n + 1 < tries && self.back_off(n, run).await {
                    continue;
                }
                if let Some(d) = err.retry_after() {
                    run.log.due_back(d);
                }
                if let ErrorClass::AuthBilling(refusal) | ErrorClass::Declined(refusal) = class {
                    run.log.refused(refusal, c, &err);
                }
                if let ErrorClass::Permanent(refusal) = class {
                    return Outcome::Stop(DpError::Refused {
                        refusal,
                        member: c.label(),
                        message: err.to_string(),
                    });
                }
                run.log.reason(c, err.to_string());
                return Outcome::Next;
            }
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
                        self.observer.metrics.benched(&pool.name, &c.member_id);
                        tracing::warn!(pool = %pool.name, member = %c.member_id, benches = entry.benches, "member benched");
                    }
                    if benched || n + 1 == tries || !self.back_off(n, run).await {
                        run.log.reason(c, err.to_string());
                        return Outcome::Next;
                    }
                }
                ErrorClass::RateLimited => {
                    // Benched at once, fleet-wide, for as long as it said.
                    let d = err.retry_after().unwrap_or(self.rate_limit_cooldown);
                    self.fleet.bench_for(&c.member_id, d, probe.take());
                    self.observer.metrics.benched(&pool.name, &c.member_id);
                    tracing::warn!(pool = %pool.name, member = %c.member_id, for_ms = d.as_millis() as u64, "member rate-limited: benched");
                    run.log.due_back(d);
                    run.log
                        .reason(c, format!("{err} (benched for {:.1}s)", d.as_secs_f64()));
                    return Outcome::Next;
                }
                ErrorClass::AuthBilling(refusal) => {
                    let d = self.auth_cooldown;
                    self.fleet.bench_for(&c.member_id, d, probe.take());
                    self.observer.metrics.benched(&pool.name, &c.member_id);
                    tracing::warn!(pool = %pool.name, member = %c.member_id, for_ms = d.as_millis() as u64, "member refused its credential or account: benched");
                    run.log.refused(refusal, c, &err);
                    run.log
                        .reason(c, format!("{err} (benched for {:.0}s)", d.as_secs_f64()));
                    return Outcome::Next;
                }
                ErrorClass::Declined(refusal) => {
                    // Said in a 400, which a caller can cause: no bench.
                    run.log.refused(refusal, c, &err);
                    run.log.reason(c, err.to_string());
                    run.free_hop = true;
                    return Outcome::Next;
                }
                ErrorClass::ContextTooLong => {
                    run.log.reason(c, err.to_string());
                    run.free_hop = true;
                    run.too_long = true;
                    return Outcome::Next;
                }
                ErrorClass::ModelNotFound | ErrorClass::Misconfigured | ErrorClass::Unsupported => {
                    run.log.reason(c, err.to_string());
                    run.free_hop = true;
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

    /// Waits before retry `n + 1` of a member: exponential backoff with full
    /// jitter. False when the caller's deadline would pass first (move on).
    async fn back_off(&self, n: u32, run: &Run<'_>) -> bool {
        let cap = self
            .retry_backoff
            .saturating_mul(1 << n.min(10))
            .min(MAX_BACKOFF);
        let wait = cap.mul_f64(rand::random::<f64>());
        if run.deadline.is_some_and(|d| Instant::now() + wait >= d) {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// Gives a failed try's token estimate back to the member's window.
    fn give_back(&self, c: &Candidate, reserved: u64) {
        if reserved > 0 {
            self.fleet
                .charge(&c.member_id, -i64::try_from(reserved).unwrap_or(i64::MAX));
        }
    }

    /// Reserves one request of `c`'s limit; when it is refused, records the
    /// skip (no penalty) and says so.
    async fn over_limit(&self, pool: &Pool, c: &Candidate, run: &mut Run<'_>) -> bool {
        let Reservation::Denied {
            requests,
            tokens,
            retry_after,
        } = self
            .fleet
            .reserve(&c.member_id, c.limits, run.estimate)
            .await
        else {
            return false;
        };
        run.log.due_back(retry_after);
        run.log
            .push(pool, c, pb::AttemptOutcome::SkippedQuota, None, None);
        let limit = |l: Option<u64>| l.map_or_else(|| "none".to_owned(), |v| v.to_string());
        let why = format!(
            "over its limit this minute ({requests} requests, {tokens} tokens; rpm {}, tpm {})",
            limit(c.limits.rpm),
            limit(c.limits.tpm)
        );
        run.log.reason(c, why);
        true
    }

    /// What the plan reads of `c`'s live signals.
    fn deadline(&self, run: &Run<'_>) -> DpError {
        DpError::Deadline {
            model: run.model.to_owned(),
            attempts: run.log.tried(),
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

/// The attempt outcome callers see for a class (`x-switchyard-attempts`, metrics).
fn outcome_of(class: ErrorClass) -> pb::AttemptOutcome {
    match class {
        ErrorClass::Transient => pb::AttemptOutcome::Transient,
        ErrorClass::RateLimited => pb::AttemptOutcome::RateLimited,
        ErrorClass::AuthBilling(_) | ErrorClass::Declined(_) => pb::AttemptOutcome::Auth,
        ErrorClass::ModelNotFound => pb::AttemptOutcome::ModelNotFound,
        ErrorClass::ContextTooLong => pb::AttemptOutcome::ContextTooLong,
        ErrorClass::Permanent(_) | ErrorClass::Misconfigured => pb::AttemptOutcome::Permanent,
        ErrorClass::Unsupported => pb::AttemptOutcome::Unsupported,
    }
}
