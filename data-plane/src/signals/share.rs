//! The exchange: a few times a second, each worker writes its report into
//! one shared Redis hash (`{P:load}:members`, field = worker id) and reads
//! everyone's in the same round trip; the merged view replaces the one the
//! request path reads. Never on the request path: while Redis is away the
//! others' reports age out and the view is this worker's own.

use std::sync::Arc;
use std::time::Duration;

use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Conn, Redis, Timeouts};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Signals;
use super::peers::{FORGET, Peers, Report};

/// How often a worker publishes its report and reads the others'.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// Longest one exchange waits on Redis.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(1);

/// The shared hash of reports.
pub struct Board {
    redis: Redis,
    key: String,
    conn: tokio::sync::OnceCell<Conn>,
}

impl Board {
    pub fn new(redis: Redis, keys: &RedisKeys) -> Self {
        Self {
            redis,
            key: keys.load_reports(),
            conn: tokio::sync::OnceCell::new(),
        }
    }

    async fn conn(&self) -> Result<Conn, String> {
        let timeouts = Timeouts {
            connect: Duration::from_secs(1),
            response: EXCHANGE_TIMEOUT,
        };
        self.conn
            .get_or_try_init(|| self.redis.connect(timeouts))
            .await
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// Writes `report` as `me`, deletes the `forgotten` fields, and reads the
    /// whole hash back; one key, one round trip.
    async fn exchange(
        &self,
        me: &str,
        report: &str,
        forgotten: &[String],
    ) -> Result<Vec<(String, String)>, String> {
        let mut pipe = redis::pipe();
        pipe.hset(&self.key, me, report).ignore();
        if !forgotten.is_empty() {
            pipe.hdel(&self.key, forgotten).ignore();
        }
        // The hash goes when the last worker does.
        pipe.pexpire(
            &self.key,
            i64::try_from(FORGET.as_millis()).unwrap_or(30_000),
        )
        .ignore();
        pipe.hgetall(&self.key);
        let mut conn = self.conn().await?;
        let (read,): (Vec<(String, String)>,) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(read)
    }

    async fn leave(&self, me: &str) -> Result<(), String> {
        let mut conn = self.conn().await?;
        redis::cmd("HDEL")
            .arg(&self.key)
            .arg(me)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Publishes this worker's signals and reads the fleet's until `stop`; then
/// withdraws its report, so the others stop counting its load at once.
pub async fn run(signals: Arc<Signals>, board: Board, me: String, stop: CancellationToken) {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers = Peers::default();
    let mut seq: u64 = 0;
    // Whether the last read succeeded: after a failed one, a worker may look
    // gone only because this one could not see it, so nothing is deleted.
    let mut read_last = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        seq += 1;
        let now = Instant::now();
        let report = Report::of(seq, signals.local(now));
        let encoded = serde_json::to_string(&report).unwrap_or_default();
        let forgotten = if read_last {
            peers.forgotten(now)
        } else {
            Vec::new()
        };
        match tokio::time::timeout(EXCHANGE_TIMEOUT, board.exchange(&me, &encoded, &forgotten))
            .await
        {
            Ok(Ok(read)) => {
                peers.update(&me, read, Instant::now());
                read_last = true;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "live signals not exchanged");
                read_last = false;
            }
            Err(_) => {
                tracing::debug!("live signals not exchanged: timed out");
                read_last = false;
            }
        }
        // Reports that stopped changing age out even while Redis is away.
        signals.set_others(peers.merged(Instant::now()));
    }
    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, board.leave(&me)).await;
}
