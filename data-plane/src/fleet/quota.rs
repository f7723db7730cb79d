//! Limits as the worker sees them: one request and an estimate of its
//! tokens per try, taken from a leased block of permits (`permits.rs`) and
//! settled on the real count; a local count, and this worker's share of
//! each limit, while the backend is unreachable.

use std::time::Duration;

use super::charges::ChargeKey;
use super::permits::{Found, Grant, Origin, Unused};
use super::{Fleet, FleetCore, REQUEST_PATH_TIMEOUT, Reservation};
use crate::model::Limits;

/// A caller's budgets, asked about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The estimate was taken from every window.
    Taken,
    /// `window` is spent (`used` tokens).
    Spent { window: usize, used: u64 },
    /// Nothing was asked: the backend is unreachable.
    Unchecked,
}

/// This worker's clock as the rpm/tpm window sees it: the Unix minute, and
/// how far into it we are.
pub(super) fn wall_minute() -> (i64, Duration) {
    let since_epoch = since_epoch();
    let secs = since_epoch.as_secs();
    let into = Duration::from_secs(secs % 60)
        + Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
    (i64::try_from(secs / 60).unwrap_or(0), into)
}

/// Wall-clock time: every worker of the fleet agrees on the minute.
#[cfg(not(test))]
fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unit tests run on paused tokio time: the window's clock follows it, from
/// a fixed wall time 10 s into a minute at the thread's first reading, so a
/// real minute turning over mid-test changes nothing.
#[cfg(test)]
fn since_epoch() -> Duration {
    thread_local! {
        static ANCHOR: tokio::time::Instant = tokio::time::Instant::now();
    }
    let start = Duration::from_secs(29_000_000 * 60 + 10);
    start + ANCHOR.with(|a| a.elapsed())
}

/// The current Unix minute (the rpm/tpm window).
pub(super) fn minute() -> i64 {
    wall_minute().0
}

/// How long until the window moves on to the next minute.
fn until_next_minute() -> Duration {
    Duration::from_secs(60).saturating_sub(wall_minute().1)
}

impl Fleet {
    /// Reserves one request of a limited member's (or caller's) minute from
    /// this worker's leased block of permits (`permits.rs`): memory alone
    /// while the block has room — a refill is asked for in the background
    /// when it runs low — and one bounded round trip when it is empty.
    /// Counted locally while the backend is unreachable.
    pub async fn reserve(&self, member: &str, limits: Limits, tokens: u64) -> Reservation {
        // While the backend is away the local share decides (after a pause,
        // one request tests it with a lease).
        let testing = !self.core.link.is_up();
        if testing && !self.core.link.usable() {
            return self.reserve_unreachable(member, limits, tokens, false);
        }
        if let Some(r) = self.take_permit(member, limits, tokens, false) {
            return r;
        }
        // One lease per key at a time: the others find its permits.
        let leasing = self.core.permits.leasing(member);
        let _one = leasing.lock().await;
        if !testing && !self.core.link.is_up() {
            return self.reserve_unreachable(member, limits, tokens, false);
        }
        if let Some(r) = self.take_permit(member, limits, tokens, false) {
            return r;
        }
        let want = self
            .core
            .permits
            .want(member, limits, tokens, self.live_workers());
        let minute = minute();
        let asked = tokio::time::timeout(
            REQUEST_PATH_TIMEOUT,
            self.core.backend.permits(member, limits, want),
        )
        .await;
        // A timed-out lease may have been counted by the script: the
        // fallback's reservation is not charged again when the backend is back.
        let maybe_counted = match asked {
            Ok(Ok(grant)) => {
                self.core.link.ok();
                let unused = self.core.permits.filled(
                    member,
                    limits,
                    Some(grant),
                    Origin::Minute(minute),
                    false,
                );
                self.give_back(member, unused);
                if let Some(r) = self.take_permit(member, limits, tokens, !grant.refused()) {
                    return r;
                }
                false
            }
            Ok(Err(e)) => {
                self.core.link.failed(&e.0);
                false
            }
            Err(_) => {
                self.core.link.failed("quota lease timed out");
                true
            }
        };
        self.reserve_unreachable(member, limits, tokens, maybe_counted)
    }

    /// A request served from `key`'s block, refused on a recent refusal,
    /// or `None`: the block is empty. Asks for a refill when it runs low.
    fn take_permit(
        &self,
        key: &str,
        limits: Limits,
        tokens: u64,
        fresh: bool,
    ) -> Option<Reservation> {
        let workers = self.live_workers();
        let take = self.core.permits.take(key, limits, tokens, workers, fresh);
        self.give_back(key, take.unused);
        if let Some(want) = take.refill {
            if self.core.link.is_up() {
                self.core.send(super::Report::Permits {
                    key: key.to_owned(),
                    limits,
                    want,
                });
            } else {
                self.core
                    .permits
                    .filled(key, limits, None, Origin::None, true);
            }
        }
        match take.found {
            Found::Served { overshoot } => {
                let minute = minute();
                let overshoot = i64::try_from(overshoot).unwrap_or(i64::MAX);
                let estimate = i64::try_from(tokens).unwrap_or(i64::MAX);
                self.count_locally(key, minute, 1, estimate);
                if overshoot > 0 {
                    let key = key.to_owned();
                    self.keep_charge(ChargeKey::Window { key, minute }, 0, overshoot);
                }
                Some(Reservation::Granted)
            }
            Found::Denied {
                requests,
                tokens,
                retry_after,
            } => Some(Reservation::Denied {
                requests,
                tokens,
                retry_after,
            }),
            Found::Empty => None,
        }
    }

    /// Gives leased permits that were not used back to their window, in
    /// the background.
    fn give_back(&self, key: &str, unused: Option<Unused>) {
        if unused.is_some() {
            queue_unused(&self.core, key, unused);
            self.core.charges_waiting.notify_one();
        }
    }

    fn live_workers(&self) -> u64 {
        self.core
            .workers
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(1)
    }

    /// Unreachable backend: blocks in hand are dropped (`Permits::forfeit`)
    /// and this worker enforces its share of the limit, so the fleet as a
    /// whole does not exceed it by a multiple of its size.
    fn reserve_unreachable(
        &self,
        member: &str,
        limits: Limits,
        tokens: u64,
        maybe_counted: bool,
    ) -> Reservation {
        self.core.permits.forfeit();
        let minute = minute();
        let share = self.live_workers();
        let part = |l: u64| l.div_ceil(share);
        let (r, t) = self.local_usage(member, minute);
        if limits.rpm.is_some_and(|l| r >= part(l)) || limits.tpm.is_some_and(|l| t >= part(l)) {
            return Reservation::Denied {
                requests: r,
                tokens: t,
                retry_after: until_next_minute(),
            };
        }
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.count_locally(member, minute, 1, tokens);
        if maybe_counted {
            return Reservation::Granted;
        }
        // The fleet's count gets it too, once the backend is back.
        self.keep_charge(
            ChargeKey::Window {
                key: member.to_owned(),
                minute,
            },
            1,
            tokens,
        );
        Reservation::Granted
    }

    /// Adds a charge to what the pusher sends (summed per key; never waits).
    fn keep_charge(&self, key: ChargeKey, requests: i64, tokens: i64) {
        if !self.core.charges.add(key, requests, tokens) {
            tracing::debug!("pending charges at their bound: a charge was dropped");
        }
        self.core.charges_waiting.notify_one();
    }

    /// Takes a token estimate from a caller's budgets — `windows`: a hash
    /// field per window and its limit, the first of which resets in `left`
    /// — out of this worker's leased block of them (`permits.rs`), as the
    /// rpm/tpm windows are: memory while the block has room, one bounded
    /// round trip when it is empty. While the backend is unreachable budgets
    /// are not enforced (a day's or a month's count cannot be kept per
    /// worker): `Unchecked`, and the request's real count is charged when
    /// the backend is back.
    pub async fn budget(
        &self,
        key: &str,
        windows: &[(String, u64)],
        left: Duration,
        tokens: u64,
    ) -> Budget {
        let testing = !self.core.link.is_up();
        if testing && !self.core.link.usable() {
            self.core.permits.forfeit();
            return Budget::Unchecked;
        }
        let ask = BudgetAsk::new(key, windows, left);
        if let Some(b) = self.take_budget(&ask, tokens, false) {
            return b;
        }
        let leasing = self.core.permits.leasing(&ask.block);
        let _one = leasing.lock().await;
        if !testing && !self.core.link.is_up() {
            return Budget::Unchecked;
        }
        if let Some(b) = self.take_budget(&ask, tokens, false) {
            return b;
        }
        let want = self
            .core
            .permits
            .want(&ask.block, ask.limits, tokens, self.live_workers());
        match tokio::time::timeout(
            REQUEST_PATH_TIMEOUT,
            self.core.backend.budget(key, windows, want.tokens),
        )
        .await
        {
            Ok(Ok(lease)) => {
                self.core.link.ok();
                let granted = lease_grant(lease, left);
                let unused = self.core.permits.filled(
                    &ask.block,
                    ask.limits,
                    Some(granted),
                    ask.origin(),
                    false,
                );
                self.give_back(&ask.block, unused);
                self.take_budget(&ask, tokens, !granted.refused())
                    .unwrap_or(Budget::Taken)
            }
            Ok(Err(e)) => {
                self.core.link.failed(&e.0);
                Budget::Unchecked
            }
            // The script may have run: count the estimate as taken.
            Err(_) => {
                self.core.link.failed("budget lease timed out");
                Budget::Taken
            }
        }
    }

    /// A request's estimate from a caller's budget block, a refusal on a
    /// recent refusal, or `None`: the block is empty.
    fn take_budget(&self, ask: &BudgetAsk, tokens: u64, fresh: bool) -> Option<Budget> {
        let workers = self.live_workers();
        let take = self
            .core
            .permits
            .take(&ask.block, ask.limits, tokens, workers, fresh);
        self.give_back(&ask.block, take.unused);
        if let Some(want) = take.refill {
            if self.core.link.is_up() {
                self.core.send(super::Report::Budget {
                    key: ask.key.clone(),
                    windows: ask.windows.clone(),
                    left: ask.left,
                    want,
                });
            } else {
                self.core
                    .permits
                    .filled(&ask.block, ask.limits, None, Origin::None, true);
            }
        }
        match take.found {
            Found::Served { overshoot } => {
                if overshoot > 0 {
                    let key = ChargeKey::Budget {
                        key: ask.key.clone(),
                        fields: ask.windows.iter().map(|(f, _)| f.clone()).collect(),
                    };
                    self.keep_charge(key, 0, i64::try_from(overshoot).unwrap_or(i64::MAX));
                }
                Some(Budget::Taken)
            }
            // A budget's refusal carries the spent window and its count.
            Found::Denied {
                requests, tokens, ..
            } => Some(Budget::Spent {
                window: usize::try_from(requests).unwrap_or(0),
                used: tokens,
            }),
            Found::Empty => None,
        }
    }

    /// Settles a caller's budgets: `tokens` more than reserved (negative:
    /// the rest of the estimate given back), in the background.
    /// A budget block in hand absorbs the difference; the rest goes to the backend.
    pub fn budget_charge(&self, key: &str, fields: Vec<String>, tokens: i64) {
        if tokens == 0 || fields.is_empty() {
            return;
        }
        let tokens = self.core.permits.settle(&BudgetAsk::block_of(key), tokens);
        if tokens == 0 {
            return;
        }
        let key = key.to_owned();
        self.keep_charge(ChargeKey::Budget { key, fields }, 0, tokens);
    }

    /// Settles a limited member's minute: `tokens` more than reserved (or,
    /// negative, fewer: the rest of the estimate is given back).
    /// A block in hand absorbs the difference; the rest goes to the backend.
    pub fn charge(&self, member: &str, tokens: i64) {
        if tokens == 0 {
            return;
        }
        let minute = minute();
        self.count_locally(member, minute, 0, tokens);
        let tokens = self.core.permits.settle(member, tokens);
        if tokens == 0 {
            return;
        }
        let key = member.to_owned();
        self.keep_charge(ChargeKey::Window { key, minute }, 0, tokens);
    }

    /// Settles a reservation once the answer's real token count is known:
    /// `reserved` was taken ahead, so only the difference is charged.
    pub fn settle(&self, member: &str, used: u64, reserved: u64) {
        let used = i64::try_from(used).unwrap_or(i64::MAX);
        self.charge(
            member,
            used.saturating_sub(i64::try_from(reserved).unwrap_or(i64::MAX)),
        );
    }

    /// Limited members' usage this minute, in order, read together (one
    /// round trip where the backend can): the fleet's counts, or this
    /// worker's own while the backend is unreachable (not for the request path).
    pub async fn usage(&self, members: &[String]) -> Vec<(u64, u64)> {
        if members.is_empty() {
            return Vec::new();
        }
        if self.core.link.is_up() {
            match tokio::time::timeout(REQUEST_PATH_TIMEOUT, self.core.backend.usage_many(members))
                .await
            {
                Ok(Ok(u)) if u.len() == members.len() => return u,
                Ok(Ok(_)) => self.core.link.failed("usage read: wrong number of answers"),
                Ok(Err(e)) => self.core.link.failed(&e.0),
                Err(_) => self.core.link.failed("usage read timed out"),
            }
        }
        let now = minute();
        members.iter().map(|m| self.local_usage(m, now)).collect()
    }

    fn local_usage(&self, member: &str, minute: i64) -> (u64, u64) {
        self.core
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(member.to_owned(), minute))
            .copied()
            .unwrap_or_default()
    }

    fn count_locally(&self, member: &str, minute: i64, requests: u64, tokens: i64) {
        let mut u = self
            .core
            .usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        u.retain(|(_, m), _| *m >= minute - 1);
        let e = u.entry((member.to_owned(), minute)).or_default();
        e.0 += requests;
        e.1 = e.1.saturating_add_signed(tokens);
    }
}

/// What a budget block's key starts with (then the caller's quota key).
pub(super) const BUDGET_BLOCK: &str = "budget|";

/// A caller's budgets as a block of permits: tokens only, the smallest
/// window's limit deciding the block's size, until the first window resets.
pub(super) struct BudgetAsk {
    key: String,
    pub(super) block: String,
    windows: Vec<(String, u64)>,
    left: Duration,
    pub(super) limits: Limits,
}

impl BudgetAsk {
    pub(super) fn new(key: &str, windows: &[(String, u64)], left: Duration) -> Self {
        Self {
            key: key.to_owned(),
            block: Self::block_of(key),
            windows: windows.to_vec(),
            left,
            limits: Limits {
                rpm: None,
                tpm: windows.iter().map(|(_, l)| *l).min(),
            },
        }
    }

    /// The block's key: apart from the caller's rpm/tpm block.
    fn block_of(key: &str) -> String {
        format!("{BUDGET_BLOCK}{key}")
    }

    pub(super) fn origin(&self) -> Origin {
        Origin::Budget(self.windows.iter().map(|(f, _)| f.clone()).collect())
    }
}

/// A budget lease as a block's grant: requests are not counted (as many as
/// the block could want); a spent window's index and count stand in for the
/// window's counts.
pub(super) fn lease_grant(lease: super::BudgetLease, left: Duration) -> Grant {
    match lease {
        super::BudgetLease::Granted(tokens) => Grant {
            requests: u64::MAX / 4,
            tokens,
            used_requests: 0,
            used_tokens: 0,
            left,
        },
        super::BudgetLease::Spent { window, used } => Grant {
            requests: 0,
            tokens: 0,
            used_requests: u64::try_from(window).unwrap_or(0),
            used_tokens: used,
            left,
        },
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;

/// Queues leased permits that were not used, to give back to their window.
pub(super) fn queue_unused(core: &FleetCore, block: &str, unused: Option<Unused>) {
    let Some(u) = unused else { return };
    let key = match u.origin {
        Origin::Minute(minute) => ChargeKey::Window {
            key: block.to_owned(),
            minute,
        },
        Origin::Budget(fields) => ChargeKey::Budget {
            key: block.strip_prefix(BUDGET_BLOCK).unwrap_or(block).to_owned(),
            fields,
        },
        Origin::None => return,
    };
    let requests = match key {
        ChargeKey::Window { .. } => -i64::try_from(u.requests).unwrap_or(i64::MAX),
        ChargeKey::Budget { .. } => 0,
    };
    let tokens = -i64::try_from(u.tokens).unwrap_or(i64::MAX);
    if !core.charges.add(key, requests, tokens) {
        tracing::debug!("pending charges at their bound: unused permits were not given back");
    }
}
