//! One member's try: its probe claimed or its concurrency slot taken, its
//! quota reserved, then the attempt, retried per policy, and what each
//! failure means for the member and the request (ADR 004's table).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::Engine;
use super::run::{Outcome, Run, outcome_of};
use super::verdict::Verdict;
use crate::error::DpError;
use crate::fleet::{ProbeHold, Reservation};
use crate::model::{Candidate, Pool};
use crate::observe::metrics::outcome_name;
use crate::plan::{Skip, Step};
use crate::signals::Carry;
use crate::upstream::{self, ErrorClass, Prepared, TraceHeaders, UpstreamError};

/// Longest wait between two retries of one member.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

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
    /// One member: claim its probe or reserve its quota if it needs either,
    /// then try it (with retries per policy).
    pub(super) async fn try_member<'a, T, F, Fut>(
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
        if self.too_slow(pool, c, run, T::STREAM) {
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
                        hold.timed_out(T::STREAM);
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
                    value.carry(hold.with_permit(permit.take()));
                    span.record("switchyard.outcome", "ok");
                    span.record(
                        "switchyard.ttfb_ms",
                        u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                    );
                    run.log
                        .push(pool, c, pb::AttemptOutcome::Ok, None, Some(start));
                    // A stream's health success is its clean finish (the
                    // pump reports it): a member whose streams break after
                    // their first chunk keeps counting failures. A probe
                    // ends here all the same: the member answers again.
                    if !c.ephemeral && (!T::STREAM || probe.is_some()) {
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
                        hold.timed_out(T::STREAM);
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
            let verdict = self
                .judge()
                .failed(pool, c, class, err.retry_after(), probe.take());
            match (class, verdict) {
                (ErrorClass::Transient, Verdict::Counted { benched }) => {
                    if benched || n + 1 == tries || !self.back_off(n, run).await {
                        run.log.reason(c, err.to_string());
                        return Outcome::Next;
                    }
                }
                (ErrorClass::RateLimited, Verdict::Benched(d)) => {
                    run.log.due_back(d);
                    run.log
                        .reason(c, format!("{err} (benched for {:.1}s)", d.as_secs_f64()));
                    return Outcome::Next;
                }
                (ErrorClass::AuthBilling(refusal), Verdict::Benched(d)) => {
                    run.log.refused(refusal, c, &err);
                    run.log
                        .reason(c, format!("{err} (benched for {:.0}s)", d.as_secs_f64()));
                    return Outcome::Next;
                }
                (ErrorClass::Declined(refusal), _) => {
                    // Said in a 400, which a caller can cause: no bench.
                    run.log.refused(refusal, c, &err);
                    run.log.reason(c, err.to_string());
                    run.free_hop = true;
                    return Outcome::Next;
                }
                (ErrorClass::ContextTooLong, _) => {
                    run.log.reason(c, err.to_string());
                    run.free_hop = true;
                    run.too_long = true;
                    return Outcome::Next;
                }
                (
                    ErrorClass::ModelNotFound | ErrorClass::Misconfigured | ErrorClass::Unsupported,
                    _,
                ) => {
                    run.log.reason(c, err.to_string());
                    run.free_hop = true;
                    return Outcome::Next;
                }
                (ErrorClass::Permanent(refusal), _) => {
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
                // The verdict follows the class (`Judge::failed`): no other pair.
                (
                    ErrorClass::Transient | ErrorClass::RateLimited | ErrorClass::AuthBilling(_),
                    _,
                ) => {
                    run.log.reason(c, err.to_string());
                    return Outcome::Next;
                }
            }
        }
        Outcome::Next
    }

    /// Waits before retry `n + 1` of a member: exponential backoff with full
    /// jitter. False when the caller's deadline would pass first (move on).
    async fn back_off(&self, n: u32, run: &Run<'_>) -> bool {
        let cap = self
            .rules
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
}
