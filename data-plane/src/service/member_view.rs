//! A member's health as this worker holds it: the one view ListModels and
//! the pool statistics both show.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::fleet::State;
use crate::fleet::health::Entry;

/// A member's state, failures in a row and bench end (Unix ms, 0: none).
pub(super) struct HealthView {
    pub(super) state: State,
    pub(super) fails: u32,
    pub(super) benched_until_ms: i64,
}

impl HealthView {
    /// Member `id`'s view from the fleet's health table, as of `now`.
    pub(super) fn of(
        health: &HashMap<String, Entry>,
        id: &str,
        failure_threshold: u32,
        now: Instant,
    ) -> Self {
        let e = health.get(id);
        let state = e.map_or(State::Available, |e| e.state(now, failure_threshold));
        Self {
            state,
            fails: e.map_or(0, |e| e.fails),
            benched_until_ms: match state {
                State::Benched { until } => unix_ms(until, now),
                _ => 0,
            },
        }
    }

    /// Whether a request may be sent to it now (a half-open member takes its probe).
    pub(super) fn available(&self) -> bool {
        matches!(self.state, State::Available | State::HalfOpen)
    }
}

/// `at` (this worker's clock) as Unix milliseconds.
fn unix_ms(at: Instant, now: Instant) -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let wall = i64::try_from(wall).unwrap_or(0);
    wall + i64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(0)
}
