//! Members found at their concurrency cap: the request waits for a slot in
//! a pool's admission queue (`admit`), within its deadline, then tries them
//! again, in order.

use std::future::Future;
use std::sync::Arc;

use super::run::{Outcome, Run};
use super::tried::Failed;
use super::{Engine, Served, served};
use crate::model::{Candidate, Pool};
use crate::plan::Step;
use crate::signals::Carry;
use crate::upstream::{self, Prepared, TraceHeaders, UpstreamError};

impl Engine {
    /// Every member left is at its cap (`busy`: each with its tier's index
    /// in `tiers`): waits for a slot in the first one's pool queue, then
    /// tries them again, until one serves, the request stops, or none is
    /// left at its cap (`None`). An error ends the run: its log is taken to
    /// make the answer.
    pub(super) async fn retry_busy<'a, T, F, Fut>(
        &self,
        tiers: &[&'a (u32, Arc<Pool>)],
        mut busy: Vec<(usize, Step, Arc<Prepared>)>,
        run: &mut Run<'a>,
        model: &str,
        attempt: &F,
    ) -> Result<Option<Served<T>>, Failed>
    where
        F: Fn(Arc<Candidate>, Arc<Prepared>, TraceHeaders) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
        T: Carry + upstream::Rated,
    {
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
                    busy.iter()
                        .map(|(_, s, _)| self.signals.live(&s.candidate.member_id).latency),
                );
                return Err(std::mem::take(&mut run.log).busy(model, refused.why(), hint));
            }
            for (tier, step, body) in std::mem::take(&mut busy) {
                let (index, pool) = tiers[tier];
                run.log.tier = *index;
                let member = step.candidate.clone();
                match self.try_member(pool, step, body, run, attempt).await {
                    Outcome::Served(value) => return Ok(Some(served(value, pool, member, run))),
                    Outcome::Busy(step, body) => busy.push((tier, step, body)),
                    Outcome::Next => {}
                    Outcome::Stop(e) => return Err(std::mem::take(&mut run.log).fail(e)),
                    Outcome::Cap => {
                        return Err(
                            std::mem::take(&mut run.log).capped(model, self.rules.max_attempts)
                        );
                    }
                    Outcome::GiveUp => return Err(std::mem::take(&mut run.log).gave_up(model)),
                }
            }
        }
        Ok(None)
    }
}
