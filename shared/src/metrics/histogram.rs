//! A histogram whose `observe` takes no lock: prometheus-client's own
//! `Histogram` takes a write lock per observation (its source says "consider
//! using atomics"), and every request of a pool observes the same series
//! from every runtime thread, so they queued on it. Here each bucket, the
//! count and the sum are atomics; a scrape reads them without stopping
//! writers (a scrape racing an observation may see it in some fields first).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Debug)]
struct Inner {
    /// Upper bounds, ascending; one more bucket past the last holds the rest.
    bounds: Arc<[f64]>,
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    /// f64 bits.
    sum: AtomicU64,
}

/// Cheap to clone: clones share the series.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(Arc<Inner>);

impl AtomicHistogram {
    pub fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Inner {
            bounds,
            counts,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, v: f64) {
        let i = self.0.bounds.partition_point(|b| *b < v);
        if let Some(c) = self.0.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.0.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .0
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = f64::from_bits(self.0.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn observations_land_in_their_buckets_and_encode_cumulatively() {
        let h = AtomicHistogram::new(Arc::from(vec![1.0, 2.0, 4.0]));
        for v in [0.5, 1.5, 1.5, 3.0, 100.0] {
            h.observe(v);
        }
        assert_eq!(h.count(), 5);
        let mut r = Registry::default();
        r.register("t", "test", h);
        let text = crate::metrics::render(&r);
        for line in [
            r#"t_bucket{le="1.0"} 1"#,
            r#"t_bucket{le="2.0"} 3"#,
            r#"t_bucket{le="4.0"} 4"#,
            r#"t_bucket{le="+Inf"} 5"#,
            "t_count 5",
            "t_sum 106.5",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
