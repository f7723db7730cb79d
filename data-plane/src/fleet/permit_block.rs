//! One key's block of leased permits (`permits.rs`): what is in hand, the
//! window it belongs to, and the worker's recent rate that sizes the next.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::Limits;

/// A block lasts about this long at the worker's recent rate.
const BLOCK_SPAN: Duration = Duration::from_secs(5);
/// Traffic is measured over windows this long.
pub(super) const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Largest block (requests) one worker leases at a time.
pub const MAX_BLOCK: u64 = 1024;

/// Permits asked of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    pub requests: u64,
    pub tokens: u64,
}

/// The window a block was leased from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// A member's or caller's rpm/tpm minute: this worker's minute when
    /// the block was leased.
    Minute(i64),
    /// A caller's token budgets: their window fields (`d:<day>`, `m:<month>`).
    Budget(Vec<String>),
    /// No block yet.
    #[default]
    None,
}

/// Permits leased but not used, to give back to the window they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unused {
    pub origin: Origin,
    pub requests: u64,
    pub tokens: u64,
}

#[derive(Debug)]
pub(super) struct Block {
    pub(super) limits: Limits,
    pub(super) requests: u64,
    pub(super) tokens: u64,
    /// The end of the window the block belongs to (none: no block).
    pub(super) until: Option<Instant>,
    pub(super) origin: Origin,
    pub(super) fetching: bool,
    /// A refused lease: believed until the first instant, with the
    /// window's counts, the window ending at the second.
    pub(super) denied: Option<(Instant, u64, u64, Instant)>,
    pub(super) window_start: Instant,
    pub(super) in_window: (u64, u64),
    pub(super) last_rate: (u64, u64),
    /// What the window had left fleet-wide (requests, tokens) after this
    /// worker's last lease, and when that window ends.
    pub(super) fleet_left: Option<(u64, u64, Instant)>,
}

impl Block {
    pub(super) fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            requests: 0,
            tokens: 0,
            until: None,
            origin: Origin::None,
            fetching: false,
            denied: None,
            fleet_left: None,
            window_start: now,
            in_window: (0, 0),
            last_rate: (0, 0),
        }
    }

    /// Ends a block whose window is over; returns what it did not use.
    pub(super) fn roll(&mut self, now: Instant) -> Option<Unused> {
        if self.until.is_some_and(|u| u <= now) {
            return self.end();
        }
        None
    }

    pub(super) fn end(&mut self) -> Option<Unused> {
        self.until = None;
        let unused = Unused {
            origin: std::mem::take(&mut self.origin),
            requests: std::mem::take(&mut self.requests),
            tokens: std::mem::take(&mut self.tokens),
        };
        (unused.requests > 0 || unused.tokens > 0).then_some(unused)
    }

    pub(super) fn count(&mut self, now: Instant, tokens: u64) {
        let span = now.duration_since(self.window_start);
        if span >= RATE_WINDOW {
            // An idle window counts as no traffic.
            self.last_rate = if span < RATE_WINDOW * 2 {
                self.in_window
            } else {
                (0, 0)
            };
            self.in_window = (0, 0);
            self.window_start = now;
        }
        self.in_window.0 += 1;
        self.in_window.1 = self.in_window.1.saturating_add(tokens);
    }

    /// A block for `BLOCK_SPAN` of this worker's recent traffic, at most
    /// its share of the limit (`workers` live).
    pub(super) fn size(&self, estimate: u64, workers: u64) -> Want {
        let span = BLOCK_SPAN.as_secs() / RATE_WINDOW.as_secs().max(1);
        let rate = (
            self.last_rate.0.max(self.in_window.0),
            self.last_rate.1.max(self.in_window.1),
        );
        let share = |l: Option<u64>| l.map_or(u64::MAX, |l| l.div_ceil(workers.max(1)).max(1));
        let requests = rate
            .0
            .saturating_mul(span)
            .clamp(1, MAX_BLOCK)
            .min(share(self.limits.rpm));
        let tokens = if self.limits.tpm.is_some() {
            rate.1
                .saturating_mul(span)
                .max(estimate)
                .max(1)
                .min(share(self.limits.tpm).max(estimate))
        } else {
            0
        };
        Want { requests, tokens }
    }

    /// Whether the worker's traffic fills its share of a limit: leasing
    /// ahead would then hold permits another worker needs now, so the
    /// block is leased when it is empty only.
    pub(super) fn tight(&self, want: Want, workers: u64) -> bool {
        let share = |l: u64| l.div_ceil(workers.max(1));
        self.limits.rpm.is_some_and(|l| want.requests >= share(l))
            || self.limits.tpm.is_some_and(|l| want.tokens >= share(l))
    }

    pub(super) fn has_room(&self, estimate: u64) -> bool {
        self.until.is_some()
            && self.requests > 0
            && (self.limits.tpm.is_none() || self.tokens >= estimate)
    }
}
