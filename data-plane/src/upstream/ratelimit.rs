//! The providers' own rate-limit headers, read on every answer (success or
//! error, unary or stream): how many requests and tokens the key has left
//! and when each refills. Headers only, never body text; junk is ignored
//! and a missing header means unknown.

use std::time::{Duration, SystemTime};

use http::header::HeaderMap;

use super::classify::{capped_secs, parse_reset_duration};

/// What one answer's rate-limit headers said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateHeaders {
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    /// From when the answer arrived until the request count refills.
    pub requests_reset: Option<Duration>,
    /// From when the answer arrived until the token count refills.
    pub tokens_reset: Option<Duration>,
}

impl RateHeaders {
    pub fn is_empty(&self) -> bool {
        self.remaining_requests.is_none() && self.remaining_tokens.is_none()
    }
}

/// An answer that may carry rate-limit headers.
pub trait Rated {
    fn rate(&self) -> Option<RateHeaders>;
}

impl Rated for super::Completion {
    fn rate(&self) -> Option<RateHeaders> {
        self.meta.rate
    }
}

impl Rated for super::Embeddings {
    fn rate(&self) -> Option<RateHeaders> {
        self.rate
    }
}

/// Reads OpenAI's `x-ratelimit-*` or Anthropic's `anthropic-ratelimit-*`
/// headers (`now`: the wall clock, for Anthropic's RFC 3339 resets). `None`
/// when the answer carried no remaining count.
pub fn read(headers: &HeaderMap, now: SystemTime) -> Option<RateHeaders> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let count = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
    let duration = |name: &str| get(name).and_then(parse_reset_duration);
    let at = |name: &str| {
        get(name)
            .and_then(|v| humantime::parse_rfc3339_weak(v).ok())
            .map(|t| t.duration_since(now).unwrap_or_default())
            .and_then(|d| capped_secs(d.as_secs_f64()))
    };
    let mut h = RateHeaders {
        remaining_requests: count("x-ratelimit-remaining-requests"),
        remaining_tokens: count("x-ratelimit-remaining-tokens"),
        requests_reset: duration("x-ratelimit-reset-requests"),
        tokens_reset: duration("x-ratelimit-reset-tokens"),
    };
    if h.remaining_requests.is_none() {
        h.remaining_requests = count("anthropic-ratelimit-requests-remaining");
        h.requests_reset = at("anthropic-ratelimit-requests-reset");
    }
    if h.remaining_tokens.is_none() {
        // Anthropic counts input and output tokens apart (and sometimes
        // together): the scarcest one limits the next request.
        let mut least: Option<(u64, Option<Duration>)> = None;
        for kind in ["tokens", "input-tokens", "output-tokens"] {
            if let Some(n) = count(&format!("anthropic-ratelimit-{kind}-remaining"))
                && least.is_none_or(|(l, _)| n < l)
            {
                least = Some((n, at(&format!("anthropic-ratelimit-{kind}-reset"))));
            }
        }
        if let Some((n, reset)) = least {
            h.remaining_tokens = Some(n);
            h.tokens_reset = reset;
        }
    }
    (!h.is_empty()).then_some(h)
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn openai_counts_and_go_durations() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ]);
        assert_eq!(
            read(&h, SystemTime::now()),
            Some(RateHeaders {
                remaining_requests: Some(59),
                remaining_tokens: Some(149_984),
                requests_reset: Some(Duration::from_secs(360)),
                tokens_reset: Some(Duration::from_millis(20)),
            })
        );
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1.5s"),
        ]);
        let r = read(&h, SystemTime::now()).unwrap();
        assert_eq!(r.requests_reset, Some(Duration::from_millis(1500)));
        assert_eq!(r.remaining_tokens, None, "missing is unknown");
    }

    #[test]
    fn anthropic_counts_and_rfc3339_resets_with_the_scarcest_tokens() {
        let now = SystemTime::now();
        let in_30s = humantime::format_rfc3339_seconds(now + Duration::from_secs(30)).to_string();
        let in_5s = humantime::format_rfc3339_seconds(now + Duration::from_secs(5)).to_string();
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", &in_30s),
            ("anthropic-ratelimit-input-tokens-remaining", "9000"),
            ("anthropic-ratelimit-input-tokens-reset", &in_30s),
            ("anthropic-ratelimit-output-tokens-remaining", "800"),
            ("anthropic-ratelimit-output-tokens-reset", &in_5s),
        ]);
        let r = read(&h, now).unwrap();
        assert_eq!(r.remaining_requests, Some(3));
        assert_eq!(r.remaining_tokens, Some(800));
        let near = |d: Option<Duration>, s: u64| {
            d.is_some_and(|d| {
                d <= Duration::from_secs(s) && d + Duration::from_secs(1) >= Duration::from_secs(s)
            })
        };
        assert!(near(r.requests_reset, 30), "{r:?}");
        assert!(near(r.tokens_reset, 5), "{r:?}");
    }

    #[test]
    fn junk_is_ignored_and_nothing_is_unknown() {
        assert_eq!(read(&HeaderMap::new(), SystemTime::now()), None);
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "-3"),
            ("x-ratelimit-remaining-tokens", "lots"),
            ("x-ratelimit-reset-requests", "6x"),
            ("anthropic-ratelimit-requests-remaining", "7"),
            ("anthropic-ratelimit-requests-reset", "tomorrow"),
        ]);
        let r = read(&h, SystemTime::now()).unwrap();
        assert_eq!(
            r.remaining_requests,
            Some(7),
            "a bad OpenAI count is unknown"
        );
        assert_eq!(r.requests_reset, None, "a bad reset is unknown");
        assert_eq!(r.remaining_tokens, None);
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "99999999999999999999999"),
            ("x-ratelimit-reset-requests", "1e400s"),
        ]);
        assert_eq!(read(&h, SystemTime::now()), None, "overflow is junk");
    }
}
