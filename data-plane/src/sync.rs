//! Config sync: load the snapshot, then follow changes, without Postgres.
//!
//! Redis: subscribe to the changes channel first, then load the snapshot,
//! so no change falls in between. Any message newer than what we serve, a
//! reconnect, or the periodic check (the stored revision moved) reloads the
//! whole snapshot — so a lost message heals within one check period. While
//! Redis is unreachable the worker keeps serving its last config.
//!
//! A worker with a master key takes only snapshots the control plane
//! signed (`shared::signed_snapshot`): one that does not verify is refused,
//! counted (`switchyard_config_rejected_total{reason}`) and logged once, and
//! the last good config keeps serving. Change messages carry only a
//! revision, a reason to read the (verified) snapshot: a forged one costs a
//! read, nothing more.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt as _;
use prost::Message as _;
use switchyard_proto::v1 as pb;
use switchyard_shared::change::ChangeMessage;
use switchyard_shared::keys::RedisKeys;
use switchyard_shared::metrics::names as n;
use switchyard_shared::redis_client::{Conn, Redis, Timeouts};
use switchyard_shared::signed_snapshot;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::credentials::Resolver;

/// How often a worker without a config looks for the snapshot.
const WAITING_CHECK: Duration = Duration::from_millis(100);

/// Health of the sync itself, reported to grpc.health.v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    /// No config yet: the worker is NOT_SERVING.
    Loading,
    /// Following changes.
    Live,
    /// Serving the last config; the source is unreachable.
    Stale,
    /// Serving, but the latest config was refused in whole (a stored
    /// snapshot that does not verify) or in part (providers refused at load).
    Degraded,
}

/// Builds catalogs from snapshots and swaps them in.
pub struct Loader {
    /// When the catalog last changed (for the config-age gauge).
    pub applied: Arc<ArcSwap<tokio::time::Instant>>,
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// Opens credentials; its keys also verify stored snapshots.
    pub resolver: Resolver,
    /// Stored snapshots refused, by reason.
    pub rejected: prometheus_client::metrics::family::Family<
        n::Reason,
        prometheus_client::metrics::counter::Counter,
    >,
    /// The digest of the last stored snapshot refused: one bad snapshot is
    /// logged and counted once, however often it is read again.
    pub last_rejected: std::sync::Mutex<Option<[u8; 32]>>,
    pub state: watch::Sender<SyncState>,
    /// Told of every new catalog (to lease round-robin tickets ahead).
    pub fleet: crate::fleet::Fleet,
}

impl Loader {
    /// Swaps in `snap` if it is newer than what is served.
    pub fn apply(&self, snap: &pb::Snapshot) {
        let current = self.catalog.load().revision;
        let first = *self.state.borrow() == SyncState::Loading;
        if snap.revision <= current && !first {
            // Reachable again, or the stored snapshot verifies again.
            if matches!(*self.state.borrow(), SyncState::Stale | SyncState::Degraded) {
                if *self.state.borrow() == SyncState::Stale {
                    tracing::info!(revision = current, "config source reachable again");
                }
                self.state.send_replace(self.served_state());
            }
            return;
        }
        let catalog = Catalog::build(snap, &self.resolver);
        let catalog = Arc::new(catalog);
        self.catalog.store(catalog.clone());
        self.applied.store(Arc::new(tokio::time::Instant::now()));
        let (pools, _) = catalog.models();
        let ids: std::collections::HashSet<&str> = pools.iter().map(|p| p.id.as_str()).collect();
        self.fleet.retain_pools(|id| ids.contains(id));
        self.fleet.prefetch(
            pools
                .iter()
                .filter(|p| p.takes_tickets())
                .map(|p| p.id.as_str()),
        );
        tracing::info!(
            revision = snap.revision,
            pools = snap.pools.len(),
            routes = snap.routes.len(),
            refused_providers = catalog.refused().len(),
            "config loaded"
        );
        self.state.send_replace(self.served_state());
    }

    /// Live, or Degraded while the served config refuses a provider (or a
    /// provider's key).
    fn served_state(&self) -> SyncState {
        if !self.catalog.load().degraded() {
            SyncState::Live
        } else {
            SyncState::Degraded
        }
    }

    /// Verifies and decodes a stored snapshot, then applies it; a snapshot
    /// that does not verify or decode is refused and the served config kept.
    pub fn accept(&self, prefix: &str, stored: &[u8]) {
        let decoded = signed_snapshot::verify(self.resolver.keys.as_ref(), prefix, stored)
            .map_err(|r| (r.label(), r.to_string()))
            .and_then(|bytes| {
                pb::Snapshot::decode(bytes)
                    .map_err(|e| ("undecodable", format!("the snapshot does not decode: {e}")))
            });
        match decoded {
            Ok(snap) => self.apply(&snap),
            Err((reason, why)) => self.reject(stored, reason, &why),
        }
    }

    fn reject(&self, stored: &[u8], reason: &'static str, why: &str) {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(stored).into();
        let mut last = self
            .last_rejected
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == Some(digest) {
            return;
        }
        *last = Some(digest);
        self.rejected.get_or_create(&n::Reason { reason }).inc();
        tracing::error!(
            reason,
            serving_revision = self.catalog.load().revision,
            "config snapshot refused; serving the last good config: {why}"
        );
        if *self.state.borrow() != SyncState::Loading {
            self.state.send_replace(SyncState::Degraded);
        }
    }

    fn stale(&self, why: &str) {
        if matches!(*self.state.borrow(), SyncState::Live | SyncState::Degraded) {
            tracing::warn!(
                reason = why,
                revision = self.catalog.load().revision,
                "config source unreachable; serving the last config"
            );
            self.state.send_replace(SyncState::Stale);
        }
    }
}

/// The stored snapshot as Redis holds it (signed, not yet verified).
async fn load_redis(conn: &mut Conn, keys: &RedisKeys) -> Result<Option<Vec<u8>>, String> {
    redis::cmd("GET")
        .arg(keys.snapshot())
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())
}

async fn stored_revision(conn: &mut Conn, keys: &RedisKeys) -> Result<Option<u64>, String> {
    redis::cmd("GET")
        .arg(keys.snapshot_revision())
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())
}

/// Follows Redis until shutdown.
pub async fn follow_redis(
    client: Redis,
    prefix: String,
    keys: RedisKeys,
    loader: Loader,
    check_every: Duration,
    shutdown: CancellationToken,
) {
    let channel = keys.changes_channel();
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let timeouts = Timeouts {
                connect: Duration::from_secs(2),
                response: Duration::from_secs(5),
            };
            let mut conn = client.connect(timeouts).await.map_err(|e| e.to_string())?;
            // The pub/sub connection takes no config: bound it here.
            let subscribe = async {
                let mut pubsub = client.pubsub(Duration::from_secs(5)).await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::time::timeout(Duration::from_secs(5), subscribe)
                .await
                .map_err(|_| "subscribing to config changes timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            match load_redis(&mut conn, &keys).await? {
                Some(s) => loader.accept(&prefix, &s),
                None => {
                    tracing::info!("no config snapshot in Redis yet; waiting for the control plane")
                }
            }
            Ok::<_, String>((conn, pubsub))
        };
        let started = tokio::select! {
            () = shutdown.cancelled() => return,
            s = session => s,
        };
        match started {
            Ok((mut conn, pubsub)) => {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                // Without a config the worker looks every 100 ms, so it serves
                // as soon as the control plane (re)stores the snapshot.
                let mut tick = tokio::time::interval(check_every.min(WAITING_CHECK));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_check = tokio::time::Instant::now();
                let why = loop {
                    let reload = tokio::select! {
                        () = shutdown.cancelled() => return,
                        m = messages.next() => match m {
                            None => break "change subscription lost".to_owned(),
                            Some(msg) => match serde_json::from_slice::<ChangeMessage>(msg.get_payload_bytes()) {
                                Ok(ev) => ev.revision > loader.catalog.load().revision,
                                Err(err) => {
                                    tracing::warn!(error = %err, "undecodable change message; reloading");
                                    true
                                }
                            },
                        },
                        _ = tick.tick() => {
                            let waiting = *loader.state.borrow() == SyncState::Loading;
                            if !waiting && last_check.elapsed() < check_every {
                                continue;
                            }
                            last_check = tokio::time::Instant::now();
                            match stored_revision(&mut conn, &keys).await {
                                Ok(Some(r)) => r > loader.catalog.load().revision
                                    || matches!(*loader.state.borrow(), SyncState::Loading | SyncState::Stale),
                                Ok(None) => false,
                                Err(e) => break e,
                            }
                        },
                    };
                    if reload {
                        match load_redis(&mut conn, &keys).await {
                            Ok(Some(s)) => loader.accept(&prefix, &s),
                            Ok(None) => {}
                            Err(e) => break e,
                        }
                    }
                };
                loader.stale(&why);
            }
            Err(e) => {
                loader.stale(&e);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach Redis for config");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Follows the in-process bus of the embedded default until shutdown.
pub async fn follow_local(
    mut rx: watch::Receiver<Option<Arc<pb::Snapshot>>>,
    loader: Loader,
    shutdown: CancellationToken,
) {
    loop {
        let snap = rx.borrow_and_update().clone();
        if let Some(s) = snap {
            loader.apply(&s);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}
