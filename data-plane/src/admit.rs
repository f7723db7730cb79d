//! Admission: a request that found every member it may still try at its
//! concurrency cap waits for a slot in its pool's bounded FIFO queue
//! (`fleet::slots`), woken when one frees, for as long as its deadline
//! allows; a full queue or the deadline ends the wait, and the caller
//! hears RESOURCE_EXHAUSTED with a retry hint (docs/adr/005-live-signals.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::fleet::slots::{Place, Slots};
use crate::model::Pool;
use crate::observe::metrics::Metrics;

/// Longest a request without a deadline waits in a queue.
pub const NO_DEADLINE_WAIT: Duration = Duration::from_secs(30);

/// The most a wait ends before the request's deadline.
const MAX_MARGIN: Duration = Duration::from_millis(500);
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
                // Once more before waiting: a slot freed between the last
                // try and joining woke nobody.
                return Ok(());
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
    let until = wait_until(deadline, p.joined());
    if Instant::now() < until && p.wait(until).await {
        return Ok(());
    }
    *place = None;
    metrics.admission(&pool.name, false);
    Err(Refused::TimedOut)
}

/// When a request that joined a queue at `joined` stops waiting: a little
/// before its deadline (a twentieth of the time it had, at most half a
/// second), so it hears why before its own deadline fires; without one,
/// after [`NO_DEADLINE_WAIT`].
pub fn wait_until(deadline: Option<Instant>, joined: Instant) -> Instant {
    match deadline {
        Some(d) => {
            let margin = (d.saturating_duration_since(joined) / 20).min(MAX_MARGIN);
            d.checked_sub(margin).unwrap_or(d)
        }
        None => joined + NO_DEADLINE_WAIT,
    }
}

/// About when a slot of a busy member frees: the shortest of their recent
/// total latencies (a second when none is known), within bounds.
pub fn retry_hint(latencies: impl IntoIterator<Item = Option<Duration>>) -> Duration {
    latencies
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(MIN_HINT, MAX_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_a_little_before_the_deadline() {
        let now = Instant::now();
        assert_eq!(
            wait_until(Some(now + Duration::from_secs(2)), now),
            now + Duration::from_millis(1900)
        );
        assert_eq!(
            wait_until(Some(now + Duration::from_secs(60)), now),
            now + Duration::from_millis(59_500),
            "at most half a second early"
        );
        assert_eq!(wait_until(None, now), now + NO_DEADLINE_WAIT);
    }

    #[test]
    fn the_retry_hint_is_the_quickest_busy_member_s_latency_within_bounds() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            retry_hint([ms(700), None, ms(900)]),
            Duration::from_millis(700)
        );
        assert_eq!(
            retry_hint([None]),
            Duration::from_secs(1),
            "a second when nothing is known"
        );
        assert_eq!(retry_hint([ms(5)]), MIN_HINT);
        assert_eq!(retry_hint([ms(120_000)]), MAX_HINT);
    }
}
