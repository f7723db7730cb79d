//! Tried: the record of one request's attempts (for the caller) and why
//! each member did not serve, and the error they add up to when none did.

use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use crate::error::{DpError, Reason};
use crate::fit::Unfit;
use crate::model::{Candidate, Pool, reached};
use crate::observe::{Observer, Operation};
use crate::plan::Skip;
use crate::upstream::{Refusal, UpstreamError};

/// A failure, with what was tried.
pub struct Failed {
    pub error: DpError,
    pub attempts: Vec<pb::Attempt>,
}

/// What happened to a request so far.
#[derive(Default)]
pub(crate) struct Log {
    pub(crate) attempts: Vec<pb::Attempt>,
    pub(crate) reasons: Vec<Reason>,
    /// When the soonest benched member is due back (the caller's retry hint).
    soonest: Option<Duration>,
    /// The first auth/billing refusal: what the caller sees if nobody serves.
    first_refusal: Option<(Refusal, String, String)>,
    /// Told of the attempts made if the request is dropped before it ends
    /// (the caller left): they still count.
    observer: Option<(Arc<Observer>, Operation)>,
    /// The route tier being tried (0-based, as configured), recorded on
    /// each attempt.
    pub(crate) tier: u32,
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some((o, op)) = &self.observer
            && !self.attempts.is_empty()
        {
            o.metrics.attempts(&self.attempts, *op);
        }
    }
}

impl Log {
    /// A log whose attempts count even if the request is dropped midway.
    pub(crate) fn watched(observer: Arc<Observer>, op: Operation) -> Self {
        let mut log = Self::default();
        log.observer = Some((observer, op));
        log
    }

    /// The attempts, taken by the answer (nothing is left to count at drop).
    pub(crate) fn take_attempts(&mut self) -> Vec<pb::Attempt> {
        std::mem::take(&mut self.attempts)
    }

    pub(crate) fn push(
        &mut self,
        pool: &Pool,
        c: &Candidate,
        outcome: pb::AttemptOutcome,
        err: Option<&UpstreamError>,
        start: Option<Instant>,
    ) {
        let took = start.map_or(Duration::ZERO, |s| s.elapsed());
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
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            key: c.key.clone(),
            tier: self.tier,
        });
    }

    pub(crate) fn reason(&mut self, c: &Candidate, why: impl Into<String>) {
        self.reasons.push(Reason {
            member: c.label(),
            why: why.into(),
        });
    }

    /// A member that is out for `left` more.
    pub(crate) fn due_back(&mut self, left: Duration) {
        self.soonest = Some(self.soonest.map_or(left, |s| s.min(left)));
    }

    pub(crate) fn refused(&mut self, refusal: Refusal, c: &Candidate, err: &UpstreamError) {
        if self.first_refusal.is_none() {
            self.first_refusal = Some((refusal, c.label(), err.to_string()));
        }
    }

    /// A member that cannot take this request now (no penalty).
    pub(crate) fn unfit(&mut self, pool: &Pool, c: &Candidate, why: Unfit, estimate: u64) {
        match why {
            Unfit::Context { window } => {
                self.push(pool, c, pb::AttemptOutcome::SkippedContext, None, None);
                self.reason(
                    c,
                    format!(
                        "about {estimate} tokens (prompt + max output) do not fit its context \
                         window of {window}"
                    ),
                );
            }
            Unfit::NearLimit { left } => {
                self.push(pool, c, pb::AttemptOutcome::SkippedNearLimit, None, None);
                self.due_back(left);
                self.reason(
                    c,
                    format!(
                        "near its provider's rate limit (headers: no room for about {estimate} \
                         tokens; resets in {:.1}s)",
                        left.as_secs_f64()
                    ),
                );
            }
        }
    }

    pub(crate) fn skipped(&mut self, pool: &Pool, c: &Candidate, skip: Skip) {
        self.push(pool, c, pb::AttemptOutcome::SkippedBenched, None, None);
        match skip {
            Skip::Benched { left } => {
                self.due_back(left);
                self.reason(c, format!("benched for {:.1}s more", left.as_secs_f64()));
            }
            Skip::Probing => self.reason(c, "benched; another request is probing it"),
        }
    }

    /// A member at its concurrency cap (no penalty; tried again when a slot frees).
    pub(crate) fn busy_skip(&mut self, pool: &Pool, c: &Candidate) {
        self.push(pool, c, pb::AttemptOutcome::SkippedBusy, None, None);
        let cap = c.max_concurrency.unwrap_or_default();
        self.reason(c, format!("at its concurrency cap ({cap} in flight)"));
    }

    /// Attempts that reached (or were cut on the way to) an upstream.
    pub(crate) fn tried(&self) -> usize {
        self.attempts.iter().filter(|a| reached(a.outcome)).count()
    }

    fn all(&self, outcome: pb::AttemptOutcome) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(|a| a.outcome == outcome as i32)
    }

    /// Whether every attempt that reached an upstream had `outcome`.
    fn all_reached(&self, outcome: pb::AttemptOutcome) -> bool {
        let mut reached_any = false;
        for a in self.attempts.iter().filter(|a| reached(a.outcome)) {
            if a.outcome != outcome as i32 {
                return false;
            }
            reached_any = true;
        }
        reached_any
    }

    pub(crate) fn fail(mut self, error: DpError) -> Failed {
        Failed {
            error,
            attempts: self.take_attempts(),
        }
    }

    /// Nobody served: say why, as precisely as the attempts allow.
    pub(crate) fn exhausted(mut self, model: &str) -> Failed {
        let model = model.to_owned();
        let reasons = std::mem::take(&mut self.reasons);
        let error = if self.all(pb::AttemptOutcome::SkippedQuota) {
            DpError::QuotaExhausted {
                model,
                reasons,
                retry_after: self.soonest,
            }
        } else if self.all(pb::AttemptOutcome::Unsupported) {
            DpError::Unsupported { model, reasons }
        } else if self.all(pb::AttemptOutcome::ModelNotFound) {
            DpError::NoMemberKnowsModel { model, reasons }
        } else if self.all(pb::AttemptOutcome::SkippedContext)
            || self.all_reached(pb::AttemptOutcome::ContextTooLong)
        {
            DpError::ContextTooLong { model, reasons }
        } else if let Some((refusal, member, message)) = self
            .first_refusal
            .take()
            .filter(|_| self.all_reached(pb::AttemptOutcome::Auth))
        {
            DpError::Refused {
                refusal,
                member,
                message,
            }
        } else {
            DpError::AllCandidatesFailed {
                model,
                reasons,
                retry_after: self.soonest,
            }
        };
        self.fail(error)
    }
}

impl Log {
    /// The request reached the attempt cap.
    pub(crate) fn capped(mut self, model: &str, cap: u32) -> Failed {
        let error = DpError::AttemptCap {
            model: model.to_owned(),
            cap,
            reasons: std::mem::take(&mut self.reasons),
        };
        self.fail(error)
    }

    /// Every member left was at its cap and no slot came free (`why`).
    pub(crate) fn busy(mut self, model: &str, why: &'static str, retry_after: Duration) -> Failed {
        let error = DpError::Busy {
            model: model.to_owned(),
            why,
            reasons: std::mem::take(&mut self.reasons),
            retry_after,
        };
        self.fail(error)
    }

    /// The request stopped before trying everything (its retry budget was
    /// spent): unavailable, whatever the members tried so far answered.
    pub(crate) fn gave_up(mut self, model: &str) -> Failed {
        let error = DpError::AllCandidatesFailed {
            model: model.to_owned(),
            reasons: std::mem::take(&mut self.reasons),
            retry_after: self.soonest,
        };
        self.fail(error)
    }
}
