//! The link to the fleet's backend, with a circuit breaker: after a failed
//! call the backend is left alone for a moment (calls are not even tried),
//! then one call at a time tests it. Transitions are logged once and
//! published for grpc.health (`switchyard.fleet`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long the backend is left alone after a failure.
const OPEN_FOR: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Shared state is live.
    Up,
    /// The backend is unreachable: decisions are local until it returns.
    Degraded,
}

pub struct Link {
    state: watch::Sender<LinkState>,
    retry_at: Mutex<Option<Instant>>,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            state: watch::Sender::new(LinkState::Up),
            retry_at: Mutex::new(None),
        }
    }
}

impl Link {
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Whether the link is up (asks nothing of the breaker: for callers that
    /// would not report how a call went).
    pub fn is_up(&self) -> bool {
        self.state() == LinkState::Up
    }

    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// Whether a call may go to the backend now: the link is up, or the
    /// breaker's pause is over (then only one caller gets to test it).
    pub fn usable(&self) -> bool {
        let mut retry = self
            .retry_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *retry {
            None => true,
            Some(at) if Instant::now() >= at => {
                // This caller tests the backend; others wait for the next window.
                *retry = Some(Instant::now() + OPEN_FOR);
                true
            }
            Some(_) => false,
        }
    }

    /// A call succeeded.
    pub fn ok(&self) {
        let mut retry = self
            .retry_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *retry = None;
        self.state.send_if_modified(|s| {
            if *s == LinkState::Degraded {
                tracing::info!("fleet state reachable again; catching up");
                *s = LinkState::Up;
                return true;
            }
            false
        });
    }

    /// A call failed or timed out.
    pub fn failed(&self, why: &str) {
        let mut retry = self
            .retry_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *retry = Some(Instant::now() + OPEN_FOR);
        self.state.send_if_modified(|s| {
            if *s == LinkState::Up {
                tracing::warn!(reason = why, "fleet state unreachable; deciding locally");
                *s = LinkState::Degraded;
                return true;
            }
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_opens_the_breaker_then_one_caller_tests_it() {
        let l = Link::default();
        assert!(l.usable());
        l.failed("boom");
        assert_eq!(l.state(), LinkState::Degraded);
        assert!(!l.usable(), "left alone for a moment");
        tokio::time::advance(OPEN_FOR).await;
        assert!(l.usable(), "one test call");
        assert!(!l.usable(), "only one");
        l.ok();
        assert_eq!(l.state(), LinkState::Up);
        assert!(l.usable());
    }
}
