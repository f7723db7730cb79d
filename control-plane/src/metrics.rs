//! The control plane's Prometheus metrics (names in
//! `switchyard_shared::metrics::names`): writes, the outbox, publishing.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use switchyard_shared::metrics::AtomicHistogram as Histogram;
use switchyard_shared::metrics::names as n;

pub struct CpMetrics {
    writes: Family<n::Write, Counter>,
    revision: Gauge,
    backlog: Gauge,
    publish_lag: Histogram,
    publishes: Family<n::Outcome, Counter>,
}

impl CpMetrics {
    /// Registers every control-plane metric in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            writes: Family::default(),
            revision: Gauge::default(),
            backlog: Gauge::default(),
            publish_lag: switchyard_shared::metrics::durations(),
            publishes: Family::default(),
        };
        registry.register(
            n::CP_WRITES,
            "Writes (create, update, delete) by resource and result",
            m.writes.clone(),
        );
        registry.register(
            n::CP_REVISION,
            "The last committed config revision",
            m.revision.clone(),
        );
        registry.register(
            n::CP_OUTBOX_BACKLOG,
            "Committed changes not yet published",
            m.backlog.clone(),
        );
        registry.register(
            n::CP_PUBLISH_LAG,
            "From a change's commit to its publication",
            m.publish_lag.clone(),
        );
        registry.register(
            n::CP_PUBLISHES,
            "Publication rounds by result",
            m.publishes.clone(),
        );
        Arc::new(m)
    }

    /// Metrics nobody serves (a server built without a registry).
    pub fn unregistered() -> Arc<Self> {
        Self::register(&mut Registry::default())
    }

    pub fn write(&self, resource: &'static str, code: tonic::Code) {
        let result = if code == tonic::Code::Ok {
            "ok"
        } else {
            switchyard_shared::metrics::code_name(code)
        };
        self.writes
            .get_or_create(&n::Write { resource, result })
            .inc();
    }

    /// A change committed at `commit_time_ms` (Unix) was published now.
    pub fn published(&self, commit_time_ms: i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        #[allow(clippy::cast_precision_loss)]
        let lag = (now - commit_time_ms).max(0) as f64 / 1000.0;
        self.publish_lag.observe(lag);
    }

    /// After a publication round: its result, the committed revision and
    /// how many changes still wait.
    pub fn round(&self, ok: bool, committed: u64, published: u64) {
        self.publishes
            .get_or_create(&n::Outcome {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.revision
            .set(i64::try_from(committed).unwrap_or(i64::MAX));
        self.backlog
            .set(i64::try_from(committed.saturating_sub(published)).unwrap_or(i64::MAX));
    }
}
