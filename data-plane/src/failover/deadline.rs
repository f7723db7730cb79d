//! The caller's deadline: a member too slow for the time left is passed
//! over, and the error a request fails with when the deadline is why
//! nothing served.

use switchyard_proto::v1 as pb;
use tokio::time::Instant;

use super::Engine;
use super::run::Run;
use crate::error::DpError;
use crate::model::{Candidate, Pool};

impl Engine {
    /// Whether what the caller waits for — a stream's first token, a unary
    /// call's whole answer — took the member longer at p90 recently than the
    /// caller's time left (no data, no deadline: try it); if so the skip is
    /// recorded, with no penalty.
    pub(super) fn too_slow(
        &self,
        pool: &Pool,
        c: &Candidate,
        run: &mut Run<'_>,
        stream: bool,
    ) -> bool {
        // Latency only: the headroom half of `Engine::live` is not needed here.
        let live = self.signals.live(&c.member_id);
        let (p90, what) = if stream {
            (live.ttft_p90, "time to first token")
        } else {
            (live.answer_p90, "answer time")
        };
        let (Some(deadline), Some(p90)) = (run.deadline, p90) else {
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
                "skipped: its recent p90 {what} ({} ms) exceeds the time left ({} ms)",
                p90.as_millis(),
                left.as_millis()
            ),
        );
        true
    }

    /// The error of a request the caller's deadline cut, with what was tried.
    pub(super) fn deadline(&self, run: &Run<'_>) -> DpError {
        DpError::Deadline {
            model: run.model.to_owned(),
            attempts: run.log.tried(),
        }
    }
}
