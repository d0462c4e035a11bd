//! Registering metrics: each one described as it is registered (the
//! manual lists them all, also those with no series yet), under the
//! `tokenbroker_` prefix.

use prometheus::{exponential_buckets, GaugeVec, IntCounterVec, Opts, Registry};

pub(super) fn latency_buckets() -> Vec<f64> {
    // 100 µs to ~26 s: cache hits are sub-millisecond, Entra calls take 100s of ms.
    exponential_buckets(0.0001, 4.0, 10).unwrap_or_default()
}

/// A metric as the manual lists it: every one, also those with no series yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDesc {
    /// The full name (`tokenbroker_…`).
    pub name: String,
    pub help: String,
    pub labels: Vec<String>,
}

/// The registry being filled, and a description of each metric put in it.
pub(super) struct Registrar {
    pub(super) registry: Registry,
    pub(super) descs: std::cell::RefCell<Vec<MetricDesc>>,
}

/// Registers `collector` (names are fixed and unique, so this cannot clash).
pub(super) fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registrar,
    c: C,
) -> C {
    registry
        .descs
        .borrow_mut()
        .extend(c.desc().into_iter().map(|d| MetricDesc {
            name: format!("tokenbroker_{}", d.fq_name),
            help: d.help.clone(),
            labels: d.variable_labels.clone(),
        }));
    if let Err(e) = registry.registry.register(Box::new(c.clone())) {
        tracing::error!("registering a metric failed: {e}");
    }
    c
}

pub(super) fn counter_vec(
    registry: &Registrar,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, vec)
}

pub(super) fn gauge_vec(registry: &Registrar, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let vec = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, vec)
}

/// The metric definitions are constants checked by the tests; a failure
/// here is a programming error caught before release.
#[track_caller]
pub(super) fn unreachable_metric<T>(name: &str, e: prometheus::Error) -> T {
    panic!("metric {name} is malformed: {e}")
}
