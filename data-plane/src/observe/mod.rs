//! Observe: what each request leaves behind for operators — Prometheus
//! metrics, fleet-wide pool and caller statistics, and its trace context.

mod meters;
pub mod metrics;
pub mod stats;
mod store;
mod totals;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use switchyard_proto::v1 as pb;
use tokio::time::Instant;

pub use metrics::Metrics;

use crate::upstream::Usage;

/// What a request asks of its model: GenAI's `gen_ai.operation.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Embeddings,
}

impl Operation {
    pub fn name(self) -> &'static str {
        use switchyard_shared::metrics::names as n;
        match self {
            Self::Chat => n::OPERATION_CHAT,
            Self::Embeddings => n::OPERATION_EMBEDDINGS,
        }
    }

    /// Its slot in per-operation arrays.
    pub(crate) fn index(self) -> usize {
        match self {
            Self::Chat => 0,
            Self::Embeddings => 1,
        }
    }
}

/// How a request ended.
pub struct Finished<'a> {
    pub operation: Operation,
    /// The virtual model asked for.
    pub model: &'a str,
    /// Who asked (the caller's name, never a key).
    pub caller: &'a str,
    pub code: tonic::Code,
    pub elapsed: Duration,
    /// Streams: until the first chunk was handed over.
    pub ttft: Option<Duration>,
    pub served: Option<&'a pb::ServedBy>,
    pub usage: Option<Usage>,
    pub attempts: &'a [pb::Attempt],
}

/// Metrics and statistics, shared by every request of a worker.
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub stats: stats::Recorder,
}

impl Observer {
    /// Metrics nobody serves and statistics kept in memory: for an engine
    /// run without a server (the engine's rule tests).
    pub fn detached() -> Arc<Self> {
        Arc::new(Self {
            metrics: Metrics::register(&mut prometheus_client::registry::Registry::default()),
            stats: stats::Recorder::new(Arc::new(stats::MemoryStore::default())),
        })
    }

    /// Everything a finished request adds up to, in the metrics and the
    /// statistics, under one label of the model asked for.
    fn finished(&self, f: &Finished<'_>) {
        let model = self.metrics.model_label(f.model);
        self.stats.record(f, &model);
        self.metrics.finish(f, model);
    }

    /// Starts watching one inference RPC: it counts as in flight until it
    /// is finished, and as cancelled if it is dropped unfinished (the caller left).
    pub fn start(self: &Arc<Self>, model: &str, operation: Operation) -> Watch {
        Watch {
            observer: self.clone(),
            operation,
            model: model.to_owned(),
            caller: String::from(crate::callers::ANONYMOUS),
            started: Instant::now(),
            _inflight: self.metrics.request_started(),
            done: false,
        }
    }
}

/// One RPC being watched.
pub struct Watch {
    observer: Arc<Observer>,
    operation: Operation,
    model: String,
    caller: String,
    started: Instant,
    _inflight: metrics::Inflight,
    done: bool,
}

impl Watch {
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Who is calling, for the per-caller counts.
    pub fn set_caller(&mut self, name: &str) {
        name.clone_into(&mut self.caller);
    }

    /// The request ended with `code`, after `attempts`.
    pub fn finish(
        mut self,
        code: tonic::Code,
        served: Option<&pb::ServedBy>,
        usage: Option<Usage>,
        ttft: Option<Duration>,
        attempts: &[pb::Attempt],
    ) {
        self.done = true;
        let f = Finished {
            operation: self.operation,
            model: &self.model,
            caller: &self.caller,
            code,
            elapsed: self.started.elapsed(),
            ttft,
            served,
            usage,
            attempts,
        };
        self.observer.finished(&f);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            let f = Finished {
                operation: self.operation,
                model: &self.model,
                caller: &self.caller,
                code: tonic::Code::Cancelled,
                elapsed: self.started.elapsed(),
                ttft: None,
                served: None,
                usage: None,
                attempts: &[],
            };
            // Counts for its caller; pools count only what was finished.
            self.observer.finished(&f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_the_caller_left_counts_for_its_caller_not_for_a_pool() {
        let o = Observer::detached();
        let mut w = o.start("coding", Operation::Chat);
        w.set_caller("billing-svc");
        drop(w);
        o.stats.flush().await.expect("memory");
        let (t, ..) = o.stats.read(Duration::from_secs(60)).await.expect("memory");
        assert!(t.pools.is_empty());
        let u = &t.callers["billing-svc"]["coding"];
        assert_eq!((u.requests, u.failures.get("cancelled")), (1, Some(&1)));
    }
}
