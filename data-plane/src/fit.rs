//! Fit: which of a plan's members can take this request now, before
//! anything is claimed or sent — a member whose context window is below the
//! request's estimate is skipped; one whose provider headers say it has no
//! request or fewer tokens than the estimate left is skipped "near limit"
//! (before any 429), unless every member is, then all are tried in headroom
//! order (the headers may be stale). After a provider's context-too-long
//! error, larger windows go first (docs/adr/005-live-signals.md).

use std::sync::Arc;
use std::time::Duration;

use crate::fleet::headroom::Headroom;
use crate::model::{Candidate, Live};
use crate::plan::{self, Step};

/// Why a member sits this request out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// Its window (`window` tokens) is below the request's estimate.
    Context { window: u64 },
    /// Its provider says it is out of room until `left` from now.
    NearLimit { left: Duration },
}

/// The steps that fit a request of `estimate` tokens (prompt + max output),
/// in order, and the members left out with why.
pub fn screen(
    steps: Vec<Step>,
    estimate: u64,
    headroom: &Headroom,
) -> (Vec<Step>, Vec<(Arc<Candidate>, Unfit)>) {
    let mut unfit = Vec::new();
    let mut fits = Vec::with_capacity(steps.len());
    for s in steps {
        match s.candidate.context_tokens {
            Some(window) if window < estimate => {
                unfit.push((s.candidate, Unfit::Context { window }));
            }
            _ => fits.push(s),
        }
    }
    let (room, near): (Vec<_>, Vec<_>) = fits
        .into_iter()
        .map(|s| {
            let left = headroom.near_limit(&s.candidate.member_id, estimate);
            (s, left)
        })
        .partition(|(_, left)| left.is_none());
    if room.is_empty() {
        // Every member is near its limit: the headers may be stale (another
        // client's burst, a reset just passed), so try them all anyway, the
        // most headroom first.
        let mut all: Vec<Step> = near.into_iter().map(|(s, _)| s).collect();
        all.sort_by_cached_key(|s| {
            let (remaining_requests, remaining_tokens) = headroom.view(&s.candidate.member_id);
            let room = Live {
                remaining_requests,
                remaining_tokens,
                ..Live::default()
            };
            plan::quota_key(&s.candidate, &room)
        });
        return (all, unfit);
    }
    for (s, left) in near {
        if let Some(left) = left {
            unfit.push((s.candidate, Unfit::NearLimit { left }));
        }
    }
    (room.into_iter().map(|(s, _)| s).collect(), unfit)
}

/// The rest of a plan after a provider said the prompt is too long for a
/// member whose window is `failed` (if known): windows larger than it first,
/// largest first, then unknown windows, then known windows no larger than
/// the one that just refused (hopeless unless its window was misconfigured,
/// so last rather than gone). Stable within each group.
pub fn larger_first(mut rest: Vec<Step>, failed: Option<u64>) -> Vec<Step> {
    rest.sort_by_key(|s| match (s.candidate.context_tokens, failed) {
        (Some(w), Some(f)) if w <= f => (2, std::cmp::Reverse(w)),
        (Some(w), _) => (0, std::cmp::Reverse(w)),
        (None, _) => (1, std::cmp::Reverse(0)),
    });
    rest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::RateHeaders;

    fn step(id: &str, context_tokens: Option<u64>) -> Step {
        Step {
            candidate: Arc::new(Candidate {
                context_tokens,
                ..Candidate::for_test(id)
            }),
            probe: false,
        }
    }

    fn ids(steps: &[Step]) -> Vec<&str> {
        steps
            .iter()
            .map(|s| s.candidate.member_id.as_str())
            .collect()
    }

    fn seen(h: &Headroom, id: &str, requests: u64, tokens: u64) {
        h.observe(
            id,
            &RateHeaders {
                remaining_requests: Some(requests),
                remaining_tokens: Some(tokens),
                requests_reset: Some(Duration::from_secs(20)),
                tokens_reset: Some(Duration::from_secs(4)),
            },
        );
    }

    #[test]
    fn a_window_below_the_estimate_is_skipped() {
        let h = Headroom::default();
        let steps = vec![
            step("small", Some(1000)),
            step("big", Some(100_000)),
            step("?", None),
        ];
        let (fits, unfit) = screen(steps, 1500, &h);
        assert_eq!(ids(&fits), vec!["big", "?"]);
        assert_eq!(unfit.len(), 1);
        assert_eq!(unfit[0].0.member_id, "small");
        assert_eq!(unfit[0].1, Unfit::Context { window: 1000 });
        let (fits, _) = screen(vec![step("small", Some(1000))], 1000, &h);
        assert_eq!(ids(&fits), vec!["small"], "exactly the window fits");
    }

    #[tokio::test(start_paused = true)]
    async fn near_limit_members_are_skipped_before_any_429() {
        let h = Headroom::default();
        seen(&h, "empty", 0, 90_000);
        seen(&h, "few-tokens", 50, 100);
        seen(&h, "room", 50, 90_000);
        let steps = vec![
            step("empty", None),
            step("few-tokens", None),
            step("room", None),
            step("?", None),
        ];
        let (fits, unfit) = screen(steps, 500, &h);
        assert_eq!(ids(&fits), vec!["room", "?"]);
        let why: Vec<_> = unfit
            .iter()
            .map(|(c, u)| (c.member_id.as_str(), *u))
            .collect();
        assert_eq!(
            why,
            vec![
                (
                    "empty",
                    Unfit::NearLimit {
                        left: Duration::from_secs(20)
                    }
                ),
                (
                    "few-tokens",
                    Unfit::NearLimit {
                        left: Duration::from_secs(4)
                    }
                ),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_member_is_near_all_are_tried_most_headroom_first() {
        let h = Headroom::default();
        seen(&h, "a", 0, 90_000);
        seen(&h, "b", 2, 10);
        let (fits, unfit) = screen(vec![step("a", None), step("b", None)], 500, &h);
        assert_eq!(ids(&fits), vec!["b", "a"], "headroom order");
        assert!(unfit.is_empty());
        // The reset passed: the counts are stale, both have room again.
        tokio::time::advance(Duration::from_secs(20)).await;
        let (fits, _) = screen(vec![step("a", None), step("b", None)], 500, &h);
        assert_eq!(ids(&fits), vec!["a", "b"], "the plan's order");
    }

    #[test]
    fn after_context_too_long_larger_windows_go_first() {
        let rest = || {
            vec![
                step("?", None),
                step("8k", Some(8_000)),
                step("200k", Some(200_000)),
                step("32k", Some(32_000)),
                step("??", None),
            ]
        };
        assert_eq!(
            ids(&larger_first(rest(), None)),
            vec!["200k", "32k", "8k", "?", "??"],
            "the failed window unknown: larger known ones first"
        );
        assert_eq!(
            ids(&larger_first(rest(), Some(8_000))),
            vec!["200k", "32k", "?", "??", "8k"],
            "an 8k window refused: unknown windows before a known 8k"
        );
    }
}
