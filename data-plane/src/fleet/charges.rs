//! Token charges on their way to the backend: summed per window key (a
//! member's or caller's rpm/tpm minute, a caller's budget windows) until
//! they are sent, so a Redis outage or a full report queue loses none of
//! them. Bounded: past `MAX_KEYS` distinct keys a new key's charge is
//! dropped and counted; the request path only takes a lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinct keys held at most (about 100 bytes each): a worker serving
/// 10,000 limited members and callers through an outage keeps them all.
pub const MAX_KEYS: usize = 10_000;

/// Where a charge goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ChargeKey {
    /// A limited member's (or caller's) rpm/tpm window: its quota key and
    /// the Unix minute of this worker's clock the charge belongs to.
    Window { key: String, minute: i64 },
    /// A caller's token budgets: its key and the window fields
    /// (`d:<day>`, `m:<month>`) of the day the request was made.
    Budget { key: String, fields: Vec<String> },
}

/// Charges summed under one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum {
    /// Requests counted (a reservation made locally while the backend was
    /// away; negative: leased permits given back).
    pub requests: i64,
    /// Tokens (negative: an estimate given back).
    pub tokens: i64,
    /// How many charges were summed (what a drop counts).
    pub charges: u64,
}

impl Sum {
    fn add(&mut self, other: Sum) {
        self.requests = self.requests.saturating_add(other.requests);
        self.tokens = self.tokens.saturating_add(other.tokens);
        self.charges = self.charges.saturating_add(other.charges);
    }

    /// Whether sending it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.tokens == 0
    }
}

/// Why charges were dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The store held `MAX_KEYS` other keys.
    pub full: u64,
    /// Their rpm/tpm minute had left the sliding window before they could be sent.
    pub expired: u64,
}

pub struct Charges {
    pending: Mutex<HashMap<ChargeKey, Sum>>,
    cap: usize,
    full: AtomicU64,
    expired: AtomicU64,
}

impl Default for Charges {
    fn default() -> Self {
        Self::with_cap(MAX_KEYS)
    }
}

impl Charges {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            cap,
            full: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChargeKey, Sum>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds one charge to its key's sum. False when it was dropped: a new
    /// key with the store full.
    pub fn add(&self, key: ChargeKey, requests: i64, tokens: i64) -> bool {
        let one = Sum {
            requests,
            tokens,
            charges: 1,
        };
        self.merge(&mut self.lock(), key, one)
    }

    fn merge(&self, pending: &mut HashMap<ChargeKey, Sum>, key: ChargeKey, sum: Sum) -> bool {
        let len = pending.len();
        match pending.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().add(sum),
            std::collections::hash_map::Entry::Vacant(_) if len >= self.cap => {
                self.full.fetch_add(sum.charges, Ordering::Relaxed);
                return false;
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(sum);
            }
        }
        true
    }

    /// Takes everything out to send; what is not sent goes back with `put_back`.
    pub fn take(&self) -> Vec<(ChargeKey, Sum)> {
        self.lock().drain().collect()
    }

    /// Puts back sums that were not sent (summed with what came in meanwhile).
    pub fn put_back(&self, items: impl IntoIterator<Item = (ChargeKey, Sum)>) {
        let mut pending = self.lock();
        for (k, s) in items {
            self.merge(&mut pending, k, s);
        }
    }

    /// Counts a sum dropped because its minute no longer counts.
    pub fn expire(&self, sum: Sum) {
        self.expired.fetch_add(sum.charges, Ordering::Relaxed);
    }

    /// Distinct keys waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn dropped(&self) -> Dropped {
        Dropped {
            full: self.full.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
        }
    }
}

/// Sums taken out to send; whatever is left when it is dropped (an error,
/// a timeout, a cancelled future) goes back. A sum whose send was cut
/// midway goes back too: a charge may count twice, never not at all.
pub(super) struct Batch<'a> {
    store: &'a Charges,
    items: Vec<(ChargeKey, Sum)>,
}

impl<'a> Batch<'a> {
    pub(super) fn take(store: &'a Charges) -> Self {
        Self {
            items: store.take(),
            store,
        }
    }

    /// The next sum to send (it stays in the batch until `sent`).
    pub(super) fn next(&self) -> Option<&(ChargeKey, Sum)> {
        self.items.last()
    }

    /// The sum `next` gave was sent (or dropped on purpose).
    pub(super) fn sent(&mut self) {
        self.items.pop();
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if !self.items.is_empty() {
            self.store.put_back(self.items.drain(..));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(key: &str, minute: i64) -> ChargeKey {
        ChargeKey::Window {
            key: key.into(),
            minute,
        }
    }

    #[test]
    fn charges_to_one_key_are_summed() {
        let c = Charges::default();
        assert!(c.add(window("m", 7), 1, 100));
        assert!(c.add(window("m", 7), 0, 40));
        assert!(c.add(window("m", 7), 0, -30));
        assert!(c.add(window("m", 8), 1, 5));
        let budget = ChargeKey::Budget {
            key: "caller:c".into(),
            fields: vec!["d:2026-12-07".into(), "m:2026-12".into()],
        };
        assert!(c.add(budget.clone(), 0, 20));
        assert!(c.add(budget.clone(), 0, 22));
        assert_eq!(c.len(), 3, "one sum per key");
        let mut all = c.take();
        all.sort_by_key(|(k, _)| format!("{k:?}"));
        assert_eq!(
            all,
            vec![
                (
                    budget,
                    Sum {
                        requests: 0,
                        tokens: 42,
                        charges: 2
                    }
                ),
                (
                    window("m", 7),
                    Sum {
                        requests: 1,
                        tokens: 110,
                        charges: 3
                    }
                ),
                (
                    window("m", 8),
                    Sum {
                        requests: 1,
                        tokens: 5,
                        charges: 1
                    }
                ),
            ]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn past_the_bound_new_keys_are_dropped_and_counted_while_known_keys_still_sum() {
        let c = Charges::with_cap(2);
        assert!(c.add(window("a", 1), 0, 10));
        assert!(c.add(window("b", 1), 0, 10));
        assert!(!c.add(window("c", 1), 0, 10), "a third key does not fit");
        assert!(!c.add(window("c", 1), 0, 10));
        assert!(c.add(window("a", 1), 0, 5), "a known key still sums");
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.dropped(),
            Dropped {
                full: 2,
                expired: 0
            }
        );
        c.expire(Sum {
            requests: 0,
            tokens: 3,
            charges: 4,
        });
        assert_eq!(c.dropped().expired, 4);
    }

    #[test]
    fn a_batch_not_sent_goes_back_summed_with_what_came_meanwhile() {
        let c = Charges::default();
        c.add(window("a", 1), 0, 10);
        c.add(window("b", 1), 0, 7);
        let sent = {
            let mut batch = Batch::take(&c);
            assert!(c.is_empty(), "taken out");
            let sent = batch.next().map(|(_, s)| s.tokens).unwrap_or_default();
            batch.sent();
            // Meanwhile a request charges both keys again.
            c.add(window("a", 1), 0, 1);
            c.add(window("b", 1), 0, 1);
            sent
        }; // the rest of the batch fails to send
        let left: i64 = c.take().iter().map(|(_, s)| s.tokens).sum();
        assert_eq!(
            left,
            17 - sent + 2,
            "the unsent sum is back, added to the new charge"
        );
    }
}
