//! Publishing committed changes: the outbox publisher and its sinks.
//!
//! A write commits its change to the outbox table in the same transaction
//! (no change can be lost between commit and publish). This task drains the
//! outbox in revision order into a sink:
//! - Redis: one Lua script per batch stores the snapshot — signed under the
//!   master key (`shared::signed_snapshot`) — (only if newer than
//!   the stored one) and PUBLISHes each event, atomically, so a subscriber
//!   that sees revision N and reads the snapshot gets revision >= N.
//! - Local: the embedded default's in-process bus.
//!
//! While Redis is down, rows stay unpublished and the task retries with
//! backoff; a periodic check re-stores the snapshot if Redis lost it
//! (docs/adr/003-change-publishing.md).

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use switchyard_proto::v1 as pb;
use switchyard_shared::change::ChangeMessage;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::redis_client::{Conn, Redis, Timeouts};
use switchyard_shared::seal::MasterKey;
use switchyard_shared::signed_snapshot;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use tracing::Instrument as _;

use crate::metrics::CpMetrics;
use crate::store::Store;
use crate::store::snapshot::DrainError;

const BATCH: u64 = 256;
/// History kept for WatchChanges replays.
const RETAIN_REVISIONS: u64 = 10_000;
/// How often the stored snapshot is checked: a Redis that restarted empty
/// gets it back within this (plus one publish).
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// How often old outbox rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `KEYS[1]` snapshot, `KEYS[2]` snapshot revision; `ARGV[1]` revision,
/// `ARGV[2]` snapshot bytes, `ARGV[3]` channel, `ARGV[4..]` events.
const PUBLISH_SCRIPT: &str = r"
local stored = tonumber(redis.call('GET', KEYS[2]) or '-1')
local rev = tonumber(ARGV[1])
if rev > stored then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SET', KEYS[2], ARGV[1])
end
for i = 4, #ARGV do
  redis.call('PUBLISH', ARGV[3], ARGV[i])
end
return stored
";

/// `KEYS[1]` snapshot, `KEYS[2]` snapshot revision; `ARGV[1]` revision,
/// `ARGV[2]` snapshot bytes: replaces the stored snapshot only while the
/// stored revision is this one (a newer one, from another replica, stays).
const RESIGN_SCRIPT: &str = r"
if tonumber(redis.call('GET', KEYS[2]) or '-1') == tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// The in-process bus of the embedded default: the latest snapshot and the
/// live change feed, shared with in-process subscribers.
#[derive(Clone)]
pub struct LocalBus {
    pub snapshot: watch::Sender<Option<Arc<pb::Snapshot>>>,
    pub changes: broadcast::Sender<ChangeMessage>,
}

impl LocalBus {
    pub fn new(changes: broadcast::Sender<ChangeMessage>) -> Self {
        Self {
            snapshot: watch::Sender::new(None),
            changes,
        }
    }
}

/// Where committed changes go.
pub enum Sink {
    Redis(Box<RedisSink>),
    Local(LocalBus),
}

impl Sink {
    async fn publish(
        &mut self,
        events: Vec<ChangeMessage>,
        snapshot: pb::Snapshot,
    ) -> Result<(), String> {
        match self {
            Sink::Redis(r) => r.publish(&events, &snapshot).await,
            Sink::Local(bus) => {
                bus.snapshot.send_replace(Some(Arc::new(snapshot)));
                for e in events {
                    // No receiver is fine: nobody is watching.
                    let _ = bus.changes.send(e);
                }
                Ok(())
            }
        }
    }

    /// Stores `snapshot` again under the current key (a control plane
    /// started with a new master key re-signs what an older key signed, so
    /// workers can drop the previous key). Nothing to do in-process.
    async fn resign(&mut self, snapshot: &pb::Snapshot) -> Result<(), String> {
        match self {
            Sink::Redis(r) => r.resign(snapshot).await,
            Sink::Local(_) => Ok(()),
        }
    }

    /// The snapshot revision the sink holds, when it can say.
    async fn stored_revision(&mut self) -> Result<Option<u64>, String> {
        match self {
            Sink::Redis(r) => r.stored_revision().await,
            Sink::Local(bus) => Ok(bus.snapshot.borrow().as_ref().map(|s| s.revision)),
        }
    }
}

/// Redis: snapshot keys and the changes channel under the configured prefix.
pub struct RedisSink {
    client: Redis,
    conn: Option<Conn>,
    keys: RedisKeys,
    /// The master key and prefix the stored snapshot is signed with
    /// (`shared::signed_snapshot`); unsigned without a master key.
    signer: Option<(MasterKey, String)>,
    script: redis::Script,
}

impl RedisSink {
    pub fn new(client: Redis, keys: RedisKeys, signer: Option<(MasterKey, String)>) -> Self {
        Self {
            client,
            conn: None,
            keys,
            signer,
            script: redis::Script::new(PUBLISH_SCRIPT),
        }
    }

    async fn conn(&mut self) -> Result<Conn, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(5),
        };
        let c = self
            .client
            .connect(timeouts)
            .await
            .map_err(|e| format!("connect to redis: {e}"))?;
        tracing::info!(cluster = self.client.is_cluster(), "redis client ready");
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// The snapshot as stored: signed when there is a master key.
    fn stored_form(&self, snapshot: &pb::Snapshot) -> Vec<u8> {
        let encoded = snapshot.encode_to_vec();
        match &self.signer {
            Some((key, prefix)) => signed_snapshot::sign(key, prefix, &encoded),
            None => encoded,
        }
    }

    async fn resign(&mut self, snapshot: &pb::Snapshot) -> Result<(), String> {
        if self.signer.is_none() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let res: redis::RedisResult<i64> = redis::Script::new(RESIGN_SCRIPT)
            .key(self.keys.snapshot())
            .key(self.keys.snapshot_revision())
            .arg(snapshot.revision)
            .arg(self.stored_form(snapshot))
            .invoke_async(&mut conn)
            .await;
        match res {
            Ok(n) => {
                tracing::info!(
                    revision = snapshot.revision,
                    resigned = n == 1,
                    "config snapshot signed with the current master key"
                );
                Ok(())
            }
            Err(e) => {
                self.conn = None;
                Err(format!("redis re-sign: {e}"))
            }
        }
    }

    async fn publish(
        &mut self,
        events: &[ChangeMessage],
        snapshot: &pb::Snapshot,
    ) -> Result<(), String> {
        let mut conn = self.conn().await?;
        let stored = self.stored_form(snapshot);
        let mut inv = self.script.key(self.keys.snapshot());
        inv.key(self.keys.snapshot_revision())
            .arg(snapshot.revision)
            .arg(stored)
            .arg(self.keys.changes_channel());
        for e in events {
            inv.arg(serde_json::to_string(e).map_err(|e| e.to_string())?);
        }
        let res: redis::RedisResult<i64> = inv.invoke_async(&mut conn).await;
        if let Err(e) = res {
            self.conn = None;
            return Err(format!("redis publish: {e}"));
        }
        Ok(())
    }

    async fn stored_revision(&mut self) -> Result<Option<u64>, String> {
        let mut conn = self.conn().await?;
        let res: redis::RedisResult<Option<u64>> = redis::cmd("GET")
            .arg(self.keys.snapshot_revision())
            .query_async(&mut conn)
            .await;
        res.map_err(|e| {
            self.conn = None;
            format!("redis get: {e}")
        })
    }
}

/// Drains the outbox into the sink until shutdown.
pub struct Publisher {
    store: Store,
    sink: Sink,
    metrics: Arc<CpMetrics>,
    /// The last revision the sink took.
    published: u64,
    /// Whether the stored snapshot was signed again with this process's
    /// key (once, at the first reconcile).
    resigned: bool,
}

impl Publisher {
    pub fn new(store: Store, sink: Sink, metrics: Arc<CpMetrics>) -> Self {
        Self {
            store,
            sink,
            metrics,
            published: 0,
            resigned: false,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        // What the sink already holds, so the backlog gauge starts true.
        self.published = self
            .sink
            .stored_revision()
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let committed = self.store.committed();
        let mut backoff = Duration::from_millis(100);
        let mut last_reconcile: Option<tokio::time::Instant> = None;
        let mut last_prune: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = committed.notified() => {}
                _ = tick.tick() => {}
            }
            let mut result = self
                .drain()
                .instrument(tracing::info_span!("publish"))
                .await;
            if result.is_ok() && last_reconcile.is_none_or(|t| t.elapsed() >= RECONCILE_EVERY / 2) {
                result = self.reconcile().await;
                last_reconcile = Some(tokio::time::Instant::now());
            }
            if result.is_ok() && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                result = self
                    .store
                    .prune_outbox(RETAIN_REVISIONS)
                    .await
                    .map(|_| ())
                    .map_err(DrainError::from);
                last_prune = Some(tokio::time::Instant::now());
            }
            let committed = self.store.revision().await.unwrap_or(self.published);
            if result.is_ok() {
                self.published = self.published.max(committed);
            }
            self.metrics
                .round(result.is_ok(), committed, self.published);
            match result {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "publishing config changes failed; will retry");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        // One last bounded attempt, so a change committed just before
        // shutdown is not left for the next start.
        match tokio::time::timeout(Duration::from_secs(2), self.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "final publish failed; unpublished changes go out on the next start")
            }
            Err(_) => tracing::warn!(
                "final publish timed out; unpublished changes go out on the next start"
            ),
        }
        tracing::info!("publisher stopped");
    }

    async fn drain(&mut self) -> Result<(), DrainError> {
        loop {
            let sink = &mut self.sink;
            let metrics = &self.metrics;
            let published = &mut self.published;
            let n = self
                .store
                .drain_outbox(BATCH, |events, snap| async move {
                    let commits: Vec<i64> = events.iter().map(|e| e.commit_time_ms).collect();
                    let revision = snap.revision;
                    sink.publish(events, snap).await?;
                    *published = revision;
                    for t in commits {
                        metrics.published(t);
                    }
                    Ok(())
                })
                .await?;
            if n == 0 {
                break;
            }
            tracing::debug!(events = n, "published config changes");
        }
        Ok(())
    }

    /// Re-stores the snapshot if the sink lost it or is behind (Redis
    /// restarted empty).
    async fn reconcile(&mut self) -> Result<(), DrainError> {
        let revision = self.store.revision().await?;
        let stored = self
            .sink
            .stored_revision()
            .await
            .map_err(DrainError::Publish)?;
        if stored.is_none_or(|s| s < revision) {
            let snapshot = self.store.snapshot(true).await?;
            tracing::info!(revision = snapshot.revision, stored = ?stored, "storing config snapshot");
            self.sink
                .publish(Vec::new(), snapshot)
                .await
                .map_err(DrainError::Publish)?;
        } else if !self.resigned {
            // Signed by whichever key the last writer had: after a
            // master-key rotation, sign it with ours.
            let snapshot = self.store.snapshot(true).await?;
            self.sink
                .resign(&snapshot)
                .await
                .map_err(DrainError::Publish)?;
        }
        self.resigned = true;
        Ok(())
    }
}
