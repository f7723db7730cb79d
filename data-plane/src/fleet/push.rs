//! The background pusher: what requests learned goes to the backend one
//! report at a time, in order; the backend's answer replaces the local guess.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{BACKGROUND_TIMEOUT, BackendError, FleetCore, Report};

/// The background task: pushes reports to the backend one at a time, in order.
pub(super) async fn run(
    core: Arc<FleetCore>,
    mut rx: mpsc::Receiver<Report>,
    stop: CancellationToken,
) {
    loop {
        let report = tokio::select! {
            () = stop.cancelled() => break,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        push_one(&core, &report).await;
    }
    // Stopping (after in-flight requests finished): what they reported still
    // goes out — probe releases above all — within a short grace.
    rx.close();
    let until = Instant::now() + DRAIN;
    while let Ok(Some(report)) = tokio::time::timeout_at(until, rx.recv()).await {
        push_one(&core, &report).await;
    }
}

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
        Report::Charge { member, tokens } => core.backend.charge(member, *tokens).await?,
        Report::BudgetCharge {
            key,
            fields,
            tokens,
        } => core.backend.budget_charge(key, fields, *tokens).await?,
        Report::Refill { pool_id, n } => {
            let first = core.backend.lease(pool_id, *n).await?;
            core.tickets.filled(pool_id, Some((first, *n)));
        }
    }
    Ok(())
}
