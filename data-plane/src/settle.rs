//! Settle: what a served request is charged — the caller's budgets and the
//! serving member's tpm window — once its usage is known (or is not).

use crate::access::Admission;
use crate::fleet::Fleet;
use crate::model::{Candidate, Pool};
use crate::observe::metrics::Metrics;

/// What a served request reserved on the member that served it, and the
/// most it can have used there.
pub(crate) struct Reserved<'a> {
    pub pool: &'a Pool,
    pub member: &'a Candidate,
    /// Tokens taken ahead from the member's tpm window.
    pub tokens: u64,
    /// The request's upper bound on that member (`token_bound`).
    pub bound: u64,
    /// What it was seen to use at least (a stream: the prompt estimate plus
    /// what it streamed, at ~4 characters a token); charged when more than
    /// the bound (an upstream that ignored the cap, or no cap was set).
    pub seen: u64,
}

impl Reserved<'_> {
    /// Settles the caller's budgets and the member's tpm window on the
    /// tokens used: what the upstream reported, or, when it reported
    /// nothing, the upper bound (counted in `switchyard_usage_missing`), so
    /// an answer without usage never costs less than it may have. Dropped
    /// unsettled (an error before this, the caller leaving), an admission
    /// gives its estimate back.
    pub(crate) fn settle(
        self,
        fleet: &Fleet,
        metrics: &Metrics,
        admission: Option<Admission>,
        used: Option<u64>,
    ) {
        let used = used.unwrap_or_else(|| {
            metrics.usage_missing(&self.pool.name, &self.member.member_id);
            self.bound.max(self.seen)
        });
        if let Some(a) = admission {
            a.settle(used);
        }
        if self.member.limits.any() {
            fleet.settle(&self.member.member_id, used, self.tokens);
        }
    }
}
