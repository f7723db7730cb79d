//! Certificate rotation: the resolver each handshake asks, and the loop
//! that re-reads the certificate and key files.
//!
//! Rules: the files are opened by path at every look (a Kubernetes secret
//! is rotated by swapping a symlink) and compared by content. A pair that
//! loads replaces the served one for new handshakes; connections already
//! open keep theirs. A pair that does not load (unreadable, bad PEM, key
//! not matching) is looked at once more before it is reported — the two
//! files may be mid-write — and then reported once; the served pair stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::{CertInfo, TlsMetrics, parse_pair};
use crate::metrics::names as n;

/// A certificate and key that load, and what the certificate says.
pub(super) struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

/// Serves whichever pair was loaded last.
pub(super) struct ReloadingCert {
    current: ArcSwap<Loaded>,
}

impl ReloadingCert {
    pub fn new(loaded: Loaded) -> Self {
        Self {
            current: ArcSwap::from_pointee(loaded),
        }
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    fn replace(&self, loaded: Loaded) {
        self.current.store(Arc::new(loaded));
    }
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("subject", &self.current.load().info.subject)
            .finish()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().key.clone())
    }
}

/// What the two files held at one look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    Pair {
        cert: Vec<u8>,
        key: Vec<u8>,
    },
    /// Either file could not be read: why.
    Unreadable(String),
}

/// What one look decided.
#[derive(Debug)]
pub(super) enum Step {
    /// The files hold the pair in use.
    Same,
    /// A new pair that loads: serve it.
    Reload(Loaded),
    /// A new pair that does not load, seen for the first time.
    NotYet,
    /// The same bad pair a second time in a row: report it (once).
    Refuse(String),
    /// The bad pair already reported.
    StillRefused,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("subject", &self.info.subject)
            .finish()
    }
}

/// The files' state between looks.
pub(super) struct Watcher {
    cert_path: PathBuf,
    key_path: PathBuf,
    in_use: Seen,
    /// A bad pair seen last time, and whether it was reported.
    bad: Option<(Seen, bool)>,
}

impl Watcher {
    pub fn new(cert_path: PathBuf, key_path: PathBuf, in_use: (Vec<u8>, Vec<u8>)) -> Self {
        Self {
            cert_path,
            key_path,
            in_use: Seen::Pair {
                cert: in_use.0,
                key: in_use.1,
            },
            bad: None,
        }
    }

    /// Reads both files again, by path.
    pub async fn look(&self) -> Seen {
        let read = |path: PathBuf| async move {
            tokio::fs::read(&path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        match (
            read(self.cert_path.clone()).await,
            read(self.key_path.clone()).await,
        ) {
            (Ok(cert), Ok(key)) => Seen::Pair { cert, key },
            (Err(e), _) | (_, Err(e)) => Seen::Unreadable(e),
        }
    }

    pub fn step(&mut self, seen: Seen) -> Step {
        if seen == self.in_use {
            self.bad = None;
            return Step::Same;
        }
        let loaded = match &seen {
            Seen::Pair { cert, key } => {
                parse_pair(&self.cert_path, cert, &self.key_path, key).map_err(|e| e.to_string())
            }
            Seen::Unreadable(why) => Err(why.clone()),
        };
        match loaded {
            Ok(loaded) => {
                self.in_use = seen;
                self.bad = None;
                Step::Reload(loaded)
            }
            Err(why) => match &mut self.bad {
                Some((last, reported)) if *last == seen => {
                    if *reported {
                        Step::StillRefused
                    } else {
                        *reported = true;
                        Step::Refuse(why)
                    }
                }
                _ => {
                    self.bad = Some((seen, false));
                    Step::NotYet
                }
            },
        }
    }
}

/// Looks at the files every `every` until `stop`; swaps in a new pair that loads.
pub(super) async fn watch(
    resolver: Arc<ReloadingCert>,
    mut watcher: Watcher,
    every: Duration,
    metrics: TlsMetrics,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let seen = watcher.look().await;
        match watcher.step(seen) {
            Step::Same | Step::StillRefused => {}
            Step::NotYet => {
                tracing::debug!("tls certificate or key changed but do not load yet; looking again")
            }
            Step::Reload(loaded) => {
                tracing::info!(
                    subject = %loaded.info.subject,
                    serial = %loaded.info.serial,
                    not_after = %loaded.info.not_after,
                    "tls certificate reloaded"
                );
                metrics.not_after.set(loaded.info.not_after_unix);
                metrics
                    .reloads
                    .get_or_create(&n::Outcome { result: "ok" })
                    .inc();
                resolver.replace(loaded);
            }
            Step::Refuse(why) => {
                tracing::warn!(
                    error = %why,
                    serving = %resolver.current().info.subject,
                    "new tls certificate or key refused; new handshakes keep the one in use"
                );
                metrics
                    .reloads
                    .get_or_create(&n::Outcome { result: "error" })
                    .inc();
            }
        }
    }
}
