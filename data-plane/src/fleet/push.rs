//! The background pusher: what requests learned goes to the backend one
//! report at a time, in order; the backend's answer replaces the local guess.
//! Token charges go as sums per key whenever the backend can take them.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::charges::{Batch, ChargeKey};
use super::permits::Origin;
use super::quota::{BudgetAsk, lease_grant, queue_unused};
use super::{BACKGROUND_TIMEOUT, BackendError, FleetCore, Report};

/// The background task: pushes reports to the backend one at a time, in order.
pub(super) async fn run(
    core: Arc<FleetCore>,
    mut rx: mpsc::Receiver<Report>,
    stop: CancellationToken,
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            r = rx.recv() => match r {
                Some(r) => push_one(&core, &r).await,
                None => return,
            },
            () = core.charges_waiting.notified() => {}
            _ = sweep.tick() => {
                // Not `usable`: the sweep must not take the breaker's test call.
                if core.link.is_up() {
                    let workers = core.workers.load(std::sync::atomic::Ordering::Relaxed);
                    for (key, unused) in core.permits.sweep(workers) {
                        queue_unused(&core, &key, Some(unused));
                    }
                } else {
                    core.permits.forfeit();
                }
            }
        }
        push_charges(&core).await;
    }
    // Permits leased but not used go back to the fleet.
    for (key, unused) in core.permits.drain() {
        queue_unused(&core, &key, Some(unused));
    }
    // Stopping (after in-flight requests finished): what they reported still
    // goes out — probe releases above all, then charges — within a short grace.
    rx.close();
    let until = Instant::now() + DRAIN;
    while let Ok(Some(report)) = tokio::time::timeout_at(until, rx.recv()).await {
        push_one(&core, &report).await;
    }
    let _ = tokio::time::timeout_at(until, push_charges(&core)).await;
}

/// Sends the pending charges when the breaker lets a call through; what
/// fails stays pending (the follower pushes it when the backend is back).
async fn push_charges(core: &FleetCore) {
    if core.charges.is_empty() || !core.link.usable() {
        return;
    }
    match send_charges(core).await {
        Ok(()) => core.link.ok(),
        Err(e) => core.link.failed(&e.0),
    }
}

/// Sends every pending charge sum, one bounded call each. A minute that
/// has left the sliding window (older than the previous one) is dropped and
/// counted: it no longer decides anything, and charging it to the current
/// minute would refuse requests for usage that is over. A budget's sum goes
/// to the day and month it was spent in. On an error the rest stays pending.
pub(super) async fn send_charges(core: &FleetCore) -> Result<(), BackendError> {
    let mut batch = Batch::take(&core.charges);
    let minute = super::quota::minute();
    while let Some((key, sum)) = batch.next() {
        if sum.is_empty() {
            batch.sent();
            continue;
        }
        let call = match key {
            ChargeKey::Window { key, minute: m } => {
                let ago = (minute - m).max(0);
                if ago > 1 {
                    core.charges.expire(*sum);
                    batch.sent();
                    continue;
                }
                tokio::time::timeout(
                    BACKGROUND_TIMEOUT,
                    core.backend.charge(key, ago, sum.requests, sum.tokens),
                )
                .await
            }
            ChargeKey::Budget { key, fields } => {
                tokio::time::timeout(
                    BACKGROUND_TIMEOUT,
                    core.backend.budget_charge(key, fields, sum.tokens),
                )
                .await
            }
        };
        call.map_err(|_| BackendError("charge timed out".into()))??;
        batch.sent();
    }
    Ok(())
}

/// How often blocks of permits are checked for a window that ended or a
/// share that shrank.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the pusher may take to send what is queued when the worker stops.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

async fn push_one(core: &FleetCore, report: &Report) {
    if !core.link.usable() {
        core.not_delivered(report);
        return;
    }
    let outcome = tokio::time::timeout(BACKGROUND_TIMEOUT, apply(core, report)).await;
    let error = match outcome {
        Ok(Ok(())) => {
            core.link.ok();
            return;
        }
        Ok(Err(e)) => e.0,
        Err(_) => "timed out".to_owned(),
    };
    core.link.failed(&error);
    core.not_delivered(report);
}

async fn apply(core: &FleetCore, report: &Report) -> Result<(), BackendError> {
    match report {
        Report::Failure {
            member,
            failure,
            probe_owner,
        } => {
            let e = core
                .backend
                .fail(member, failure, probe_owner.as_deref())
                .await?;
            if e.benches > 0 && e.benched_until.is_some_and(|u| u > Instant::now()) {
                tracing::debug!(member = %member, benches = e.benches, "member benched fleet-wide");
            }
            core.table.apply(member, e);
        }
        Report::Success {
            member,
            probe_owner,
        } => {
            let e = core.backend.succeed(member, probe_owner.as_deref()).await?;
            core.table.apply(member, e);
        }
        Report::Release { member, owner } => {
            let e = core.backend.release(member, owner).await?;
            core.table.apply(member, e);
        }
        Report::Refill { pool_id, n } => {
            let first = core.backend.lease(pool_id, *n).await?;
            core.tickets.filled(pool_id, Some((first, *n)));
        }
        Report::Permits { key, limits, want } => {
            let minute = super::quota::minute();
            let grant = core.backend.permits(key, *limits, *want).await?;
            let origin = Origin::Minute(minute);
            let unused = core.permits.filled(key, *limits, Some(grant), origin, true);
            queue_unused(core, key, unused);
        }
        Report::Budget {
            key,
            windows,
            left,
            want,
        } => {
            let ask = BudgetAsk::new(key, windows, *left);
            let lease = core.backend.budget(key, windows, want.tokens).await?;
            let grant = lease_grant(lease, *left);
            let unused =
                core.permits
                    .filled(&ask.block, ask.limits, Some(grant), ask.origin(), true);
            queue_unused(core, &ask.block, unused);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::super::charges::ChargeKey;
    use super::super::memory::MemoryBackend;
    use super::super::{Backend as _, Fleet, Link, budget::BudgetPolicy};

    #[tokio::test(start_paused = true)]
    async fn a_minute_that_left_the_window_is_dropped_and_counted_the_previous_one_still_counts() {
        let backend = Arc::new(MemoryBackend::default());
        let (fleet, _pusher) = Fleet::new(
            backend.clone(),
            Arc::new(Link::default()),
            BudgetPolicy::default(),
            CancellationToken::new(),
        );
        let now = crate::fleet::quota::minute();
        let window = |minute| ChargeKey::Window {
            key: "m".into(),
            minute,
        };
        fleet.core.charges.add(window(now - 5), 1, 500);
        fleet.core.charges.add(window(now - 5), 0, 20);
        fleet.core.charges.add(window(now), 1, 7);
        fleet.push_pending().await.expect("pushed");
        assert_eq!(
            fleet.dropped_charges().expired,
            2,
            "both charges of that minute"
        );
        assert_eq!(fleet.pending_charges(), 0);
        let (r, t) = backend.usage("m").await.expect("usage");
        // The current minute's charge arrived (unless the minute turned
        // meanwhile: `usage` then reads the next one).
        if crate::fleet::quota::minute() == now {
            assert_eq!((r, t), (1, 7));
        }
    }
}
