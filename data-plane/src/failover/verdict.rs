//! What a member's failure means for the member, fleet-wide (ADR 004's
//! table). One home for it: a failed attempt before its stream or answer
//! is committed (failover) and a committed stream that broke or stalled
//! (the pump) are judged by the same rules. What the *request* does next
//! (retry, next member, stop) is the caller's business; this only benches
//! or counts.

use std::time::Duration;

use tokio::time::Instant;

use super::Rules;
use crate::fleet::{Fleet, ProbeHold};
use crate::model::{Candidate, Pool};
use crate::observe::metrics::Metrics;
use crate::upstream::ErrorClass;

/// The member's side of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No health consequence: the fault is the request's (a 400 a caller
    /// can cause, a prompt too long, a model the member does not know) or
    /// the member keeps no health state (a direct call to a named model).
    Kept,
    /// A transient fault, counted toward the member's bench; `benched`
    /// when the member is benched now (by this one or before it).
    Counted { benched: bool },
    /// Benched at once for this long: it said it is rate-limited, or it
    /// refused its credential or account.
    Benched(Duration),
}

/// The rules and the state a verdict is carried out on.
pub(crate) struct Judge<'a> {
    pub fleet: &'a Fleet,
    pub metrics: &'a Metrics,
    pub rules: &'a Rules,
}

impl Judge<'_> {
    /// Judges `class` (the member's failure, with its retry hint) and
    /// carries the verdict out: fleet-wide health, the bench metric, a log
    /// line when the member is benched. A probe held for the member is
    /// settled by the same report.
    pub(crate) fn failed(
        &self,
        pool: &Pool,
        c: &Candidate,
        class: ErrorClass,
        retry_after: Option<Duration>,
        probe: Option<ProbeHold>,
    ) -> Verdict {
        if c.ephemeral {
            return Verdict::Kept;
        }
        let m = &c.member_id;
        let now = Instant::now();
        // Only the failure that benches a member counts and logs a bench:
        // a hundred streams dying with it add one, not a hundred.
        let was_benched = self.fleet.table().get(m).is_some_and(|e| e.benched_at(now));
        match class {
            ErrorClass::Transient => {
                let entry = self.fleet.failure(m, &pool.policy, retry_after, probe);
                let benched = entry.benched_at(now);
                if benched && !was_benched {
                    self.metrics.benched(&pool.name, m);
                    tracing::warn!(pool = %pool.name, member = %m, benches = entry.benches, "member benched");
                }
                Verdict::Counted { benched }
            }
            ErrorClass::RateLimited => {
                // Benched at once, fleet-wide, for as long as it said.
                let d = retry_after.unwrap_or(self.rules.rate_limit_cooldown);
                self.fleet.bench_for(m, d, probe);
                if !was_benched {
                    self.metrics.benched(&pool.name, m);
                    tracing::warn!(pool = %pool.name, member = %m, for_ms = d.as_millis() as u64, "member rate-limited: benched");
                }
                Verdict::Benched(d)
            }
            ErrorClass::AuthBilling(_) => {
                let d = self.rules.auth_cooldown;
                self.fleet.bench_for(m, d, probe);
                if !was_benched {
                    self.metrics.benched(&pool.name, m);
                    tracing::warn!(pool = %pool.name, member = %m, for_ms = d.as_millis() as u64, "member refused its credential or account: benched");
                }
                Verdict::Benched(d)
            }
            // Said in a 400 a caller can cause, or the request's own fault:
            // never a bench. A probe held is released by its guard.
            ErrorClass::Declined(_)
            | ErrorClass::ContextTooLong
            | ErrorClass::ModelNotFound
            | ErrorClass::Misconfigured
            | ErrorClass::Unsupported
            | ErrorClass::Permanent(_) => Verdict::Kept,
        }
    }
}
