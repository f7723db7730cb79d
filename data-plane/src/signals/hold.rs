//! The in-flight guard: one per attempt, counted while it lives. Dropping
//! it — success, error, cancellation, panic — is the only way to decrement,
//! so the count cannot leak. It also takes the attempt's latency samples,
//! and carries the attempt's concurrency slot (if its member is capped),
//! which is given back when the hold goes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Member;
use crate::fleet::slots::Permit;
use crate::upstream::{Completion, Embeddings};

/// One attempt in flight at a member.
#[derive(Debug)]
pub struct Hold {
    member: Option<Arc<Member>>,
    start: Instant,
    /// The member's concurrency slot, freed when the hold drops.
    permit: Option<Permit>,
}

impl Hold {
    pub(super) fn new(member: Arc<Member>) -> Self {
        member.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            member: Some(member),
            start: Instant::now(),
            permit: None,
        }
    }

    /// A hold that counts nothing (a member this worker does not track).
    pub fn untracked() -> Self {
        Self {
            member: None,
            start: Instant::now(),
            permit: None,
        }
    }

    /// Takes the attempt's concurrency slot along (a stream's until it ends).
    #[must_use]
    pub fn with_permit(mut self, permit: Option<Permit>) -> Self {
        self.permit = permit;
        self
    }

    fn sample(&self, f: impl FnOnce(&mut super::Estimates, Duration, Instant)) {
        if let Some(m) = &self.member {
            let now = Instant::now();
            let took = now.saturating_duration_since(self.start);
            m.with(|e| f(e, took, now));
        }
    }

    /// A stream's first content chunk arrived now: its time to first token
    /// feeds the estimate and the recent p90 the deadline rule reads.
    pub fn first_byte(&self) {
        self.sample(|e, took, now| {
            e.ttft.observe(took, now);
            e.recent_ttft.push(took, now);
            e.samples += 1;
        });
    }

    /// A unary answer arrived whole now: its first byte is its last, so it
    /// feeds the time-to-first-token estimate (LATENCY ranks unary pools by
    /// it) and the total latency, but not the recent p90 of time to first
    /// token — a long completion would make a member look hopeless to a
    /// streaming caller whose first token comes in milliseconds.
    pub fn answered(self) {
        self.sample(|e, took, now| {
            e.ttft.observe(took, now);
            e.latency.observe(took, now);
            e.recent_answer.push(took, now);
            e.samples += 1;
        });
    }

    /// The attempt's answer is complete (a stream: its finish arrived).
    pub fn finished(self) {
        self.sample(|e, took, now| e.latency.observe(took, now));
    }

    /// The attempt was cut by a timeout (the provider's or the caller's)
    /// before its first byte: it took at least this long, so the member
    /// looks at least this slow (its estimates rise, never fall, by it).
    /// `stream`: what timed out was a stream's first chunk (else a unary
    /// answer); the sample joins the recent p90 of its kind.
    pub fn timed_out(self, stream: bool) {
        self.sample(|e, took, now| {
            e.ttft.at_least(took, now);
            e.latency.at_least(took, now);
            if stream {
                e.recent_ttft.push(took, now);
            } else {
                e.recent_answer.push(took, now);
            }
        });
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(m) = &self.member {
            m.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// An attempt's answer takes its hold: a unary answer is complete (the hold
/// ends with it), a stream carries it until the stream ends.
pub trait Carry {
    /// A stream: the answer's first chunk is what the caller waits for
    /// (else the whole answer).
    const STREAM: bool = false;
    fn carry(&mut self, hold: Hold);
}

impl Carry for Completion {
    fn carry(&mut self, hold: Hold) {
        hold.answered();
    }
}

impl Carry for Embeddings {
    fn carry(&mut self, hold: Hold) {
        hold.answered();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]
    use std::time::Duration;

    use super::*;
    use crate::signals::Signals;

    fn count(s: &Signals) -> u32 {
        s.live("m").in_flight
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_counts_until_dropped_on_every_path() {
        let s = Arc::new(Signals::default());
        let m = s.member("m");
        // Success and error paths: consumed or dropped.
        let h = Hold::new(m.clone());
        assert_eq!(count(&s), 1);
        h.finished();
        assert_eq!(count(&s), 0);
        let h = Hold::new(m.clone());
        h.timed_out(true);
        assert_eq!(count(&s), 0);
        drop(Hold::new(m.clone()));
        assert_eq!(count(&s), 0);

        // A cancelled future (the caller left mid-attempt).
        let held = {
            let m = m.clone();
            async move {
                let _h = Hold::new(m);
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        };
        let r = tokio::time::timeout(Duration::from_millis(10), held).await;
        assert!(r.is_err());
        assert_eq!(count(&s), 0, "cancelled future released its hold");

        // A panic inside catch_unwind.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _h = Hold::new(m.clone());
            panic!("boom");
        }));
        assert!(caught.is_err());
        assert_eq!(count(&s), 0, "unwinding released the hold");

        // A spawned task that panics, and one that is aborted.
        let mm = m.clone();
        let t = tokio::spawn(async move {
            let _h = Hold::new(mm);
            tokio::task::yield_now().await;
            panic!("boom");
        });
        assert!(t.await.is_err());
        assert_eq!(count(&s), 0, "panicked task released its hold");
        let mm = m.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = tokio::spawn(async move {
            let _h = Hold::new(mm);
            let _ = tx.send(());
            std::future::pending::<()>().await;
        });
        rx.await.unwrap();
        assert_eq!(count(&s), 1);
        t.abort();
        assert!(t.await.unwrap_err().is_cancelled());
        assert_eq!(count(&s), 0, "aborted task released its hold");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_samples_first_byte_and_total_latency() {
        let s = Signals::default();
        let h = Hold::new(s.member("m"));
        tokio::time::advance(Duration::from_millis(200)).await;
        h.first_byte();
        tokio::time::advance(Duration::from_millis(300)).await;
        h.finished();
        let live = s.live("m");
        assert_eq!(live.ttft, Some(Duration::from_millis(200)));
        assert_eq!(live.ttft_p90, Some(Duration::from_millis(200)));
        assert_eq!(live.latency, Some(Duration::from_millis(500)));
        let h = Hold::new(s.member("m"));
        tokio::time::advance(Duration::from_secs(5)).await;
        h.timed_out(true);
        assert_eq!(
            s.live("m").ttft,
            Some(Duration::from_secs(5)),
            "a hanging member looks slow"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_unary_answer_does_not_make_the_streams_p90_look_hopeless() {
        let s = Signals::default();
        let h = Hold::new(s.member("m"));
        tokio::time::advance(Duration::from_millis(300)).await;
        h.first_byte();
        h.finished();
        let h = Hold::new(s.member("m"));
        tokio::time::advance(Duration::from_secs(12)).await;
        h.answered();
        let live = s.live("m");
        assert_eq!(
            live.ttft_p90,
            Some(Duration::from_millis(300)),
            "streams' first tokens only"
        );
        assert_eq!(live.answer_p90, Some(Duration::from_secs(12)));
        assert!(
            live.ttft > Some(Duration::from_secs(1)),
            "the estimate counts it"
        );
        assert!(live.latency > Some(Duration::from_secs(1)));
    }
}
