//! Prometheus metrics. The names are a contract (docs/contract.md,
//! "Metrics"): operators build dashboards and alerts on them. Nothing secret
//! is ever a label: tenants appear only by their configured name, and only
//! for configured tenants; credentials by certificate thumbprint.
//!
//! Exposed in the Prometheus text format 0.0.4 (the `prometheus` crate's
//! encoder), which `promtool check metrics` and Grafana read with every
//! counter's help text; OpenMetrics, as prometheus-client writes it, drops
//! `_total` from counters' HELP/TYPE lines and promtool complains.

use crate::authority::{UpstreamObserver, UpstreamOutcome};
use crate::cache::{CacheKey, CacheObserver, CachedToken, Lookup, Trigger};
use crate::config::{Config, Resource, TenantId, TenantKey};
use crate::route::Route;
use arc_swap::ArcSwap;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

mod registry;

pub use registry::MetricDesc;
use registry::{counter_vec, gauge_vec, latency_buckets, register, unreachable_metric, Registrar};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Consent states of a tenant, as the `state` label (docs/contract.md, "Operations").
pub const CONSENT_STATES: [&str; 4] = ["granted", "missing", "disabled", "unknown"];

/// Which (app, tenant) pairs get per-tenant series: configured tenants, by
/// name, with each app they consented to.
#[derive(Debug, Default)]
struct Configured {
    /// Lower-case tenant id → configured name.
    names: HashMap<TenantKey, String>,
    /// Each app's Graph resource, by app name: the per-tenant expiry is for
    /// Graph tokens.
    graphs: HashMap<String, Resource>,
    /// (app name, tenant name) with series.
    pairs: HashSet<(String, String)>,
}

impl Configured {
    /// The (app, tenant) labels of `tenant` for `app`, when configured.
    fn labels(&self, app: &str, tenant: &TenantKey) -> Option<[String; 2]> {
        let name = self.names.get(tenant)?;
        let pair = (app.to_owned(), name.clone());
        self.pairs.contains(&pair).then_some([pair.0, pair.1])
    }

    /// The labels of `key` when it is a configured pair's Graph token.
    fn graph_labels(&self, key: &CacheKey) -> Option<[String; 2]> {
        let app = key.app.name.as_str();
        (self.graphs.get(app) == Some(&key.resource))
            .then(|| self.labels(app, &key.tenant))
            .flatten()
    }
}

/// Every metric of the daemon, and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Every metric of `registry`, described (for the manual).
    descs: Vec<MetricDesc>,
    /// The standard `process_*` series (no `tokenbroker_` prefix: the
    /// names dashboards and alerts for any process use).
    process: Registry,
    http_requests: IntCounterVec,
    /// `http_requests` with status 200, per route (by discriminant).
    http_ok: [std::sync::OnceLock<IntCounter>; Route::ALL.len()],
    /// Per-route histograms in [`Route::ALL`] order, resolved once: the hot
    /// path skips the label lookup.
    route_durations: Vec<Histogram>,
    /// hit, refreshing, miss (in [`Lookup`] order), resolved once.
    lookups: [IntCounter; 3],
    upstream_requests: IntCounterVec,
    upstream_duration: Histogram,
    refreshes: IntCounterVec,
    cached_tokens: IntGauge,
    certificate_expiry: GaugeVec,
    tenant_expiry: GaugeVec,
    tenant_consent: GaugeVec,
    tenant_upstream: IntCounterVec,
    auth_failures: IntCounterVec,
    config_reloads: IntCounterVec,
    last_reload: Gauge,
    last_reload_ok: IntGauge,
    credential_rejections: IntCounterVec,
    forced_refreshes: IntCounterVec,
    connections_rejected: IntCounterVec,
    graph_requests: IntCounterVec,
    graph_denied: IntCounterVec,
    graph_duration: HistogramVec,
    graph_rewrite_skipped: IntCounter,
    shared_ops: IntCounterVec,
    /// success, failure.
    token_file_writes: [IntCounter; 2],
    /// Registered only with `[shared_cache]`.
    shared_up: Option<IntGauge>,
    configured: ArcSwap<Configured>,
}

impl Metrics {
    /// Registers every metric; per-tenant series only for `config`'s tenants.
    pub fn new(config: &Config) -> Metrics {
        let registry = Registrar {
            registry: Registry::new_custom(Some("tokenbroker".into()), None)
                .unwrap_or_else(|e| unreachable_metric("registry", e)),
            descs: std::cell::RefCell::new(Vec::new()),
        };
        let http_requests = counter_vec(
            &registry,
            "http_requests_total",
            "HTTP requests answered, by route and status",
            &["route", "status"],
        );
        let http_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time to answer an HTTP request, by route",
                )
                .buckets(latency_buckets()),
                &["route"],
            )
            .unwrap_or_else(|e| unreachable_metric("http_request_duration_seconds", e)),
        );
        let route_durations = Route::ALL
            .iter()
            .map(|route| http_duration.with_label_values(&[route.label()]))
            .collect();
        let cache_lookups = counter_vec(
            &registry,
            "cache_lookups_total",
            "Token cache lookups: hit, miss (waited on Entra), refreshing (served while a refresh runs)",
            &["result"],
        );
        let lookups = [Lookup::Hit, Lookup::Refreshing, Lookup::Miss]
            .map(|l| cache_lookups.with_label_values(&[l.as_str()]));
        let upstream_requests = counter_vec(
            &registry,
            "upstream_requests_total",
            "Token requests sent to Entra, by outcome",
            &["outcome"],
        );
        let upstream_duration = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "upstream_request_duration_seconds",
                    "Time Entra took to answer a token request",
                )
                .buckets(latency_buckets()),
            )
            .unwrap_or_else(|e| unreachable_metric("upstream_request_duration_seconds", e)),
        );
        let refreshes = counter_vec(
            &registry,
            "token_refreshes_total",
            "Token loads started, by trigger (demand: a caller had no usable token; background: scheduled refresh)",
            &["trigger"],
        );
        let cached_tokens = register(
            &registry,
            IntGauge::new("cached_tokens", "Unexpired tokens in the cache")
                .unwrap_or_else(|e| unreachable_metric("cached_tokens", e)),
        );
        let certificate_expiry = gauge_vec(
            &registry,
            "certificate_expiry_timestamp_seconds",
            "notAfter of each loaded app certificate (unix seconds); in_use=\"true\" for the one signing now",
            &["thumbprint", "in_use"],
        );
        let tenant_expiry = gauge_vec(
            &registry,
            "tenant_token_expiry_timestamp_seconds",
            "Expiry of the newest Graph token of each configured tenant, per app (unix seconds)",
            &["app", "tenant"],
        );
        let tenant_consent = gauge_vec(
            &registry,
            "tenant_consent",
            "Consent state of each configured tenant to each app, from what Entra last said: 1 for the current state",
            &["app", "tenant", "state"],
        );
        let tenant_upstream = counter_vec(
            &registry,
            "tenant_upstream_requests_total",
            "Token requests sent to Entra for each configured tenant, per app, by outcome",
            &["app", "tenant", "outcome"],
        );
        let auth_failures = counter_vec(
            &registry,
            "auth_failures_total",
            "Requests refused before any token lookup, by reason",
            &["reason"],
        );
        let config_reloads = counter_vec(
            &registry,
            "config_reloads_total",
            "Configuration reloads (SIGHUP, admin API, file watch), by result",
            &["result"],
        );
        let last_reload = register(
            &registry,
            Gauge::new(
                "config_last_reload_success_timestamp_seconds",
                "When the configuration in force was loaded (unix seconds)",
            )
            .unwrap_or_else(|e| {
                unreachable_metric("config_last_reload_success_timestamp_seconds", e)
            }),
        );
        let last_reload_ok = register(
            &registry,
            IntGauge::new(
                "config_last_reload_successful",
                "1 if the last configuration reload succeeded (or none was tried), 0 if it was refused",
            )
            .unwrap_or_else(|e| unreachable_metric("config_last_reload_successful", e)),
        );
        last_reload_ok.set(1);
        let credential_rejections = counter_vec(
            &registry,
            "credential_rejections_total",
            "Credentials Entra refused (AADSTS700027 and kin), by credential and AADSTS code",
            &["credential", "aadsts"],
        );
        let forced_refreshes = counter_vec(
            &registry,
            "forced_refreshes_total",
            "Refreshes forced past a cached token, by trigger (admin API, or a caller's token_sha256_to_refresh)",
            &["trigger"],
        );
        let connections_rejected = counter_vec(
            &registry,
            "connections_rejected_total",
            "Connections closed by the broker, by listener and reason (cap: refused at the cap; displaced: an unauthenticated one, or the busiest account's idle one, gave way to a new connection; header_timeout; idle)",
            &["listener", "reason"],
        );
        let graph_requests = counter_vec(
            &registry,
            "graph_requests_total",
            "Requests through the Graph gateway, by account, method and status class (2xx, 3xx, 4xx, 5xx)",
            &["account", "method", "status"],
        );
        let graph_denied = counter_vec(
            &registry,
            "graph_denied_total",
            "Graph gateway requests refused before any upstream request, by account and reason (no_rule, no_graph_rules, bad_request, forbidden_tenant, forbidden_app, too_large, directory)",
            &["account", "reason"],
        );
        let graph_duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "graph_request_duration_seconds",
                    "Time to answer a Graph gateway request (until Graph's headers), by account",
                )
                .buckets(latency_buckets()),
                &["account"],
            )
            .unwrap_or_else(|e| unreachable_metric("graph_request_duration_seconds", e)),
        );
        let graph_rewrite_skipped = register(
            &registry,
            IntCounter::new(
                "graph_rewrite_skipped_total",
                "JSON answers larger than graph.max_rewrite_bytes, passed on with their links to Graph unchanged",
            )
            .unwrap_or_else(|e| unreachable_metric("graph_rewrite_skipped_total", e)),
        );
        let shared_ops = counter_vec(
            &registry,
            "shared_cache_operations_total",
            "Operations on the fleet's shared cache, by op (get, set, delete, lease) and result (hit, miss, ok, busy: a lease another host holds, error, timeout, rejected: a value that failed decryption or verification)",
            &["op", "result"],
        );
        let token_file_writes = counter_vec(
            &registry,
            "token_file_writes_total",
            "Token files written ([[token_files]]), by result (failure: no token could be had, or the file could not be replaced; the status says why)",
            &["result"],
        );
        let token_file_writes =
            ["success", "failure"].map(|r| token_file_writes.with_label_values(&[r]));
        let shared_up = config.shared_cache.as_ref().map(|_| {
            register(
                &registry,
                IntGauge::new(
                    "shared_cache_up",
                    "1 while the shared cache (Redis) answers, 0 while this host goes on alone",
                )
                .unwrap_or_else(|e| unreachable_metric("shared_cache_up", e)),
            )
        });
        // Every fixed label value exists from the start, so dashboards and
        // rates see zeros rather than absent series.
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        for trigger in ["admin", "token_hash"] {
            forced_refreshes.with_label_values(&[trigger]);
        }
        register(
            &registry,
            prometheus::IntGaugeVec::new(
                Opts::new("build_info", "Always 1; the labels say which build runs"),
                &["version", "commit"],
            )
            .inspect(|info| {
                info.with_label_values(&[crate::VERSION, crate::COMMIT])
                    .set(1);
            })
            .unwrap_or_else(|e| unreachable_metric("build_info", e)),
        );
        let process = Registry::new();
        if let Err(e) = process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )) {
            tracing::warn!("the process_* metrics are not available: {e}");
        }
        let descs = registry.descs.into_inner();
        let metrics = Metrics {
            registry: registry.registry,
            descs,
            process,
            http_requests,
            http_ok: Default::default(),
            route_durations,
            lookups,
            upstream_requests,
            upstream_duration,
            refreshes,
            cached_tokens,
            certificate_expiry,
            tenant_expiry,
            tenant_consent,
            tenant_upstream,
            auth_failures,
            config_reloads,
            last_reload,
            last_reload_ok,
            credential_rejections,
            forced_refreshes,
            connections_rejected,
            graph_requests,
            graph_denied,
            graph_duration,
            graph_rewrite_skipped,
            shared_ops,
            token_file_writes,
            shared_up,
            configured: ArcSwap::default(),
        };
        metrics.set_configured(config);
        metrics
    }

    /// Follows a (re)loaded configuration: per-tenant series for its
    /// tenants (with each app they consented to) only; the series of pairs
    /// that left are removed.
    pub fn set_configured(&self, config: &Config) {
        let names: HashMap<TenantKey, String> = config
            .tenants
            .iter()
            .map(|t| (t.id.key(), t.name.as_str().to_owned()))
            .collect();
        let pairs: HashSet<(String, String)> = config
            .consents()
            .map(|(a, t)| (a.name.as_str().to_owned(), t.name.as_str().to_owned()))
            .collect();
        let graphs = config
            .apps
            .iter()
            .map(|a| (a.name.as_str().to_owned(), a.graph()))
            .collect();
        let old = self.configured.swap(Arc::new(Configured {
            names,
            graphs,
            pairs: pairs.clone(),
        }));
        for (app, tenant) in pairs.difference(&old.pairs) {
            for state in CONSENT_STATES {
                self.tenant_consent
                    .with_label_values(&[app.as_str(), tenant.as_str(), state])
                    .set(if state == "unknown" { 1.0 } else { 0.0 });
            }
        }
        for (app, tenant) in old.pairs.difference(&pairs) {
            let _ = self.tenant_expiry.remove_label_values(&[app, tenant]);
            for state in CONSENT_STATES {
                let _ = self
                    .tenant_consent
                    .remove_label_values(&[app, tenant, state]);
            }
            for outcome in UpstreamOutcome::ALL {
                let _ = self
                    .tenant_upstream
                    .remove_label_values(&[app, tenant, outcome.as_str()]);
            }
        }
    }

    /// Counts an answered HTTP request.
    pub fn http_request(&self, route: Route, status: u16, elapsed: Duration) {
        // The common answer skips the label lookup (a hash and a lock); the
        // series still appears only once a route first answers 200.
        match self.http_ok.get(route as usize) {
            Some(ok) if status == 200 => ok
                .get_or_init(|| {
                    self.http_requests
                        .with_label_values(&[route.label(), "200"])
                })
                .inc(),
            _ => self
                .http_requests
                .with_label_values(&[route.label(), &status_label(status)])
                .inc(),
        }
        if let Some(histogram) = self.route_durations.get(route as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a refused caller (`missing`, `unknown_secret`, `unknown_uid`,
    /// `bad_host`, `forbidden_tenant`, `forbidden_resource`, `graph_only`).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    /// One series per loaded certificate (the previous set is replaced).
    pub fn set_certificates(&self, certificates: &[(String, u64, bool)]) {
        self.certificate_expiry.reset();
        for (thumbprint, not_after, in_use) in certificates {
            self.certificate_expiry
                .with_label_values(&[thumbprint.as_str(), if *in_use { "true" } else { "false" }])
                .set(*not_after as f64);
        }
    }

    /// Sets the cached-tokens gauge (computed at scrape time).
    pub fn set_cached_tokens(&self, count: usize) {
        self.cached_tokens
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets the consent state of a configured tenant to `app` (others are
    /// ignored).
    fn set_consent(&self, app: &str, tenant: &TenantKey, state: &str) {
        let Some([app, tenant]) = self.configured.load().labels(app, tenant) else {
            return;
        };
        for s in CONSENT_STATES {
            self.tenant_consent
                .with_label_values(&[app.as_str(), tenant.as_str(), s])
                .set(if s == state { 1.0 } else { 0.0 });
        }
    }

    /// The configuration in force was loaded at `at_unix` (start-up).
    pub fn config_loaded(&self, at_unix: u64) {
        self.last_reload.set(at_unix as f64);
    }

    /// Counts a configuration reload.
    fn config_reload(&self, success: bool, at_unix: u64) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
        self.last_reload_ok.set(i64::from(success));
        if success {
            self.last_reload.set(at_unix as f64);
        }
    }

    /// Counts a forced refresh (`admin` or `token_hash`).
    fn forced_refresh(&self, trigger: &'static str) {
        self.forced_refreshes.with_label_values(&[trigger]).inc();
    }

    /// Counts a connection the broker closed or refused: `listener` is `tcp`,
    /// `unix`, `metrics` or `admin`; `reason` is `cap`, `displaced`,
    /// `header_timeout` or `idle`.
    pub fn connection_rejected(&self, listener: &'static str, reason: &'static str) {
        self.connections_rejected
            .with_label_values(&[listener, reason])
            .inc();
    }

    /// Counts a Graph gateway answer. `method` is one the rules can name, or
    /// `other`, so callers cannot grow the label set.
    pub fn graph_request(&self, account: &str, method: &str, status: u16, elapsed: Duration) {
        let method = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
            .into_iter()
            .find(|m| m.eq_ignore_ascii_case(method))
            .unwrap_or("other");
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.graph_requests
            .with_label_values(&[account, method, class])
            .inc();
        self.graph_duration
            .with_label_values(&[account])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a gateway request refused before any upstream request.
    pub fn graph_denied(&self, account: &str, reason: &'static str) {
        self.graph_denied
            .with_label_values(&[account, reason])
            .inc();
    }

    /// Counts a JSON answer too large to rewrite.
    pub fn graph_rewrite_skipped(&self) {
        self.graph_rewrite_skipped.inc();
    }

    /// Every metric of the broker, also those with no series yet, and the
    /// process ones.
    pub fn describe(&self) -> Vec<MetricDesc> {
        let mut all = self.descs.clone();
        for d in self.process.gather() {
            all.push(MetricDesc {
                name: d.name().to_owned(),
                help: d.help().to_owned(),
                labels: Vec::new(),
            });
        }
        all
    }

    fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        families
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.families(), &mut out) {
            tracing::error!("encoding the metrics failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The status code as a label value; the codes the broker answers with
/// need no allocation.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Borrowed(match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        421 => "421",
        429 => "429",
        431 => "431",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return std::borrow::Cow::Owned(other.to_string()),
    })
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
        self.refreshes.with_label_values(&[trigger]).inc();
    }

    fn forced_by_hash(&self) {
        self.forced_refresh("token_hash");
    }

    fn dropped(&self, key: &CacheKey) {
        if let Some([app, tenant]) = self.configured.load().graph_labels(key) {
            // No token, no expiry: a stale one would look like a failing refresh.
            let _ = self.tenant_expiry.remove_label_values(&[&app, &tenant]);
        }
    }

    fn token_stored(&self, key: &CacheKey, token: &CachedToken) {
        if let Some([app, tenant]) = self.configured.load().graph_labels(key) {
            self.tenant_expiry
                .with_label_values(&[&app, &tenant])
                .set(token.expires_on as f64);
        }
    }
}

impl crate::broker::Observer for Metrics {
    fn consent(&self, key: &CacheKey, consent: crate::broker::status::Consent) {
        self.set_consent(key.app.name.as_str(), &key.tenant, consent.as_str());
    }

    fn forced_by_admin(&self) {
        self.forced_refresh("admin");
    }

    fn reloaded(&self, config: Option<&Config>, at_unix: u64) {
        if let Some(config) = config {
            self.set_configured(config);
        }
        self.config_reload(config.is_some(), at_unix);
    }

    fn token_file_written(&self, ok: bool) {
        self.token_file_writes[usize::from(!ok)].inc();
    }
}

impl crate::fleet::FleetObserver for Metrics {
    fn shared_op(&self, op: crate::fleet::Op, result: crate::fleet::OpResult) {
        self.shared_ops
            .with_label_values(&[op.as_str(), result.as_str()])
            .inc();
    }

    fn shared_up(&self, up: bool) {
        if let Some(gauge) = &self.shared_up {
            gauge.set(i64::from(up));
        }
    }
}

impl UpstreamObserver for Metrics {
    fn credential_rejected(&self, thumbprint: &str, aadsts: Option<&str>) {
        self.credential_rejections
            .with_label_values(&[thumbprint, aadsts.unwrap_or("none")])
            .inc();
    }

    fn upstream(&self, app: &str, tenant: &TenantId, outcome: UpstreamOutcome, elapsed: Duration) {
        self.upstream_requests
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.upstream_duration.observe(elapsed.as_secs_f64());
        if let Some([app, tenant]) = self.configured.load().labels(app, &tenant.key()) {
            self.tenant_upstream
                .with_label_values(&[&app, &tenant, outcome.as_str()])
                .inc();
        }
    }
}
