//! Prometheus metrics. The names are a contract (docs/contract.md, "Metrics"): operators build
//! dashboards on them. Nothing secret is ever a label: tenants appear only
//! by their configured name, and only for configured tenants.

use crate::authority::{UpstreamObserver, UpstreamOutcome};
use crate::cache::{CacheKey, CacheObserver, CachedToken, Lookup, Trigger};
use crate::config::{Config, Resource, TenantId};
use crate::server::Route;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// Every metric of the daemon, and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RouteStatus, Counter>,
    /// Per-route histograms in [`Route::ALL`] order, looked up once: the
    /// hot path skips the family map.
    route_durations: Vec<Histogram>,
    /// hit, refreshing, miss (in [`Lookup`] order), looked up once.
    lookups: [Counter; 3],
    upstream_requests: Family<Outcome, Counter>,
    upstream_duration: Histogram,
    refreshes: Family<TriggerLabel, Counter>,
    cached_tokens: Gauge,
    certificate_expiry: Gauge,
    tenant_expiry: Family<TenantLabel, Gauge<f64, AtomicU64>>,
    auth_failures: Family<Reason, Counter>,
    /// Lower-case tenant id → configured name: only these get a series.
    configured: HashMap<TenantId, String>,
    /// The cloud's Graph resource: the per-tenant series is for Graph tokens.
    graph: Resource,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s: cache hits are sub-millisecond, Entra calls take 100s of ms.
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

impl Metrics {
    /// Registers every metric; per-tenant series only for `config`'s tenants.
    pub fn new(config: &Config) -> Metrics {
        let mut registry = Registry::with_prefix("tokenbroker");
        let http_requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            http_duration.clone(),
        );
        let route_durations = Route::ALL
            .iter()
            .map(|route| {
                http_duration
                    .get_or_create(&RouteLabel {
                        route: route.label(),
                    })
                    .clone()
            })
            .collect();
        let cache_lookups = Family::<ResultLabel, Counter>::default();
        registry.register("cache_lookups", "Token cache lookups: hit, miss (waited on Entra), refreshing (served while a refresh runs)", cache_lookups.clone());
        let upstream_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "upstream_requests",
            "Token requests sent to Entra, by outcome",
            upstream_requests.clone(),
        );
        let upstream_duration = latency_histogram();
        registry.register(
            "upstream_request_duration_seconds",
            "Time Entra took to answer a token request",
            upstream_duration.clone(),
        );
        let refreshes = Family::<TriggerLabel, Counter>::default();
        registry.register("token_refreshes", "Token loads started, by trigger (demand: a caller had no usable token; background: scheduled refresh)", refreshes.clone());
        let cached_tokens = Gauge::default();
        registry.register(
            "cached_tokens",
            "Unexpired tokens in the cache",
            cached_tokens.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the app certificate in use (unix seconds)",
            certificate_expiry.clone(),
        );
        let tenant_expiry = Family::<TenantLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "tenant_token_expiry_timestamp_seconds",
            "Expiry of the newest Graph token of each configured tenant (unix seconds)",
            tenant_expiry.clone(),
        );
        let auth_failures = Family::<Reason, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused before any token lookup, by reason",
            auth_failures.clone(),
        );
        let configured = config
            .tenants
            .iter()
            .map(|t| (t.id.to_lowercase(), t.name.as_str().to_owned()))
            .collect();
        let lookups = [Lookup::Hit, Lookup::Refreshing, Lookup::Miss].map(|l| {
            cache_lookups
                .get_or_create(&ResultLabel { result: l.as_str() })
                .clone()
        });
        Metrics {
            registry,
            http_requests,
            route_durations,
            lookups,
            upstream_requests,
            upstream_duration,
            refreshes,
            cached_tokens,
            certificate_expiry,
            tenant_expiry,
            auth_failures,
            configured,
            graph: config.app.graph(),
        }
    }

    /// Counts an answered HTTP request.
    pub fn http_request(&self, route: Route, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&RouteStatus {
                route: route.label(),
                status,
            })
            .inc();
        if let Some(histogram) = self.route_durations.get(route as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a refused caller (`missing`, `unknown_secret`, `unknown_uid`,
    /// `bad_host`, `forbidden_tenant`, `forbidden_resource`).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&Reason { reason }).inc();
    }

    /// Sets the certificate expiry gauge.
    pub fn set_certificate_expiry(&self, unix_seconds: u64) {
        self.certificate_expiry
            .set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    }

    /// Sets the cached-tokens gauge (computed at scrape time).
    pub fn set_cached_tokens(&self, count: usize) {
        self.cached_tokens
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl CacheObserver for Metrics {
    fn lookup(&self, result: Lookup) {
        let index = match result {
            Lookup::Hit => 0,
            Lookup::Refreshing => 1,
            Lookup::Miss => 2,
        };
        self.lookups[index].inc();
    }

    fn load_started(&self, trigger: Trigger) {
        let trigger = match trigger {
            Trigger::Demand => "demand",
            Trigger::Background => "background",
        };
        self.refreshes
            .get_or_create(&TriggerLabel { trigger })
            .inc();
    }

    fn token_stored(&self, key: &CacheKey, token: &CachedToken) {
        if key.resource != self.graph {
            return;
        }
        if let Some(name) = self.configured.get(&key.tenant) {
            self.tenant_expiry
                .get_or_create(&TenantLabel {
                    tenant: name.clone(),
                })
                .set(token.expires_on as f64);
        }
    }
}

impl UpstreamObserver for Metrics {
    fn upstream(&self, outcome: UpstreamOutcome, elapsed: Duration) {
        self.upstream_requests
            .get_or_create(&Outcome {
                outcome: outcome.as_str(),
            })
            .inc();
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }
}
