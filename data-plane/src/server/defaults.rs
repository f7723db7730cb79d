//! Worker defaults, one home: the flags' default values (`config::Args`),
//! [`Settings::new`](super::Settings::new) and the tests all read these.

use std::time::Duration;

/// Most attempts one request may make, across members and retries.
pub const MAX_ATTEMPTS: u32 = 10;
/// Requests one pool's admission queue holds (the slots module's own default).
pub const ADMISSION_QUEUE: usize = crate::fleet::slots::DEFAULT_QUEUE;
/// A rate-limited member without a Retry-After is benched this long.
pub const RATE_LIMIT_COOLDOWN_MS: u64 = 5_000;
/// A member whose credential or account is refused is benched this long.
pub const AUTH_COOLDOWN_MS: u64 = 300_000;
/// First backoff between retries of one member.
pub const RETRY_BACKOFF_MS: u64 = 50;
/// Retries a pool may make, in percent of its recent first attempts (the
/// budget module's own default).
pub const RETRY_BUDGET_PERCENT: u32 = crate::fleet::budget::DEFAULT_PERCENT;
/// Retries a pool may make per second whatever its traffic.
pub const RETRY_BUDGET_MIN_PER_SEC: u32 = crate::fleet::budget::DEFAULT_MIN_PER_SEC;
/// Longest silence between chunks of a committed stream.
pub const STREAM_IDLE_MS: u64 = 30_000;
/// How often the stored config revision is checked.
pub const CONFIG_CHECK_MS: u64 = 1_000;
/// What in-flight requests and streams get to finish after SIGTERM.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;
/// Largest gRPC request message.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// How often pool statistics are flushed to the fleet's store.
pub const STATS_FLUSH_MS: u64 = 5_000;
/// Largest request body the HTTP door takes.
pub const HTTP_MAX_BODY_BYTES: usize = 32 << 20;
/// Longest the HTTP door waits for a whole request head.
pub const HTTP_HEADER_TIMEOUT_MS: u64 = 10_000;
/// An HTTP door connection with no request in flight is closed after this.
pub const HTTP_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Most connections the HTTP door keeps open.
pub const HTTP_MAX_CONNECTIONS: usize = 4096;

/// How the HTTP door bounds its connections, by default.
pub fn http_limits() -> crate::door::Limits {
    crate::door::Limits {
        header_timeout: Duration::from_millis(HTTP_HEADER_TIMEOUT_MS),
        idle_timeout: Duration::from_millis(HTTP_IDLE_TIMEOUT_MS),
        max_connections: HTTP_MAX_CONNECTIONS,
    }
}

/// The failover rules a worker starts with.
pub fn rules() -> crate::failover::Rules {
    use std::time::Duration;
    crate::failover::Rules {
        max_attempts: MAX_ATTEMPTS,
        rate_limit_cooldown: Duration::from_millis(RATE_LIMIT_COOLDOWN_MS),
        auth_cooldown: Duration::from_millis(AUTH_COOLDOWN_MS),
        retry_backoff: Duration::from_millis(RETRY_BACKOFF_MS),
    }
}
