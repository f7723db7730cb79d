//! Admission: a request that found every member it may still try at its
//! concurrency cap waits for a slot in its pool's bounded FIFO queue
//! (`fleet::slots`), woken when one frees, for as long as its deadline
//! allows; a full queue or the deadline ends the wait, and the caller
//! hears RESOURCE_EXHAUSTED with a retry hint (docs/adr/005-live-signals.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::fleet::slots::{Place, Slots};
use crate::model::{Candidate, Live, Pool};
use crate::observe::metrics::Metrics;

/// Longest a request without a deadline waits in a queue.
pub const NO_DEADLINE_WAIT: Duration = Duration::from_secs(30);

/// The retry hint's bounds.
const MIN_HINT: Duration = Duration::from_millis(100);
const MAX_HINT: Duration = Duration::from_secs(30);

/// Why a request stopped waiting for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The pool's queue already holds as many requests as it may.
    Full,
    /// No slot came free before the request's deadline.
    TimedOut,
}

impl Refused {
    pub fn why(self) -> &'static str {
        match self {
            Self::Full => "its admission queue is full",
            Self::TimedOut => "no slot came free within the request's deadline",
        }
    }
}

/// Waits in `pool`'s queue (joining it first, leaving another pool's)
/// until this request is woken to try again, or refused.
pub async fn wait(
    slots: &Arc<Slots>,
    metrics: &Metrics,
    pool: &Pool,
    place: &mut Option<Place>,
    deadline: Option<Instant>,
) -> Result<(), Refused> {
    if place.as_ref().is_none_or(|p| p.pool() != pool.id) {
        *place = None;
        match slots.enqueue(&pool.id) {
            Ok(p) => {
                metrics.admission(&pool.name, true);
                *place = Some(p);
            }
            Err(_) => {
                metrics.admission(&pool.name, false);
                return Err(Refused::Full);
            }
        }
    }
    let Some(p) = place.as_ref() else {
        return Err(Refused::Full);
    };
    let until = deadline.unwrap_or_else(|| p.joined() + NO_DEADLINE_WAIT);
    if Instant::now() < until && p.wait(until).await {
        return Ok(());
    }
    *place = None;
    metrics.admission(&pool.name, false);
    Err(Refused::TimedOut)
}

/// About when a slot of one of `busy` frees: the shortest of their recent
/// total latencies (a second when none is known), within bounds.
pub fn retry_hint<'a>(
    busy: impl IntoIterator<Item = &'a Candidate>,
    live: impl Fn(&Candidate) -> Live,
) -> Duration {
    busy.into_iter()
        .filter_map(|c| live(c).latency)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(MIN_HINT, MAX_HINT)
}
