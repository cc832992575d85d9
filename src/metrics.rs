//! What `/metrics` exposes, in the Prometheus text format (prometheus-client). Each request's
//! outcome is counted where its access-log line is written, so the two always agree.

use std::sync::{LazyLock, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;

use crate::config::Target;
use crate::route::Reason;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub upstream: &'static str,
    pub method: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub upstream: String,
    pub server: String,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    /// Per-request handles, looked up once: a `Family` lookup hashes its labels with SipHash
    /// (callgrind: ~1,800 instructions a request for three lookups).
    request_cache: Box<[OnceLock<Counter>]>,
    duration_cache: Box<[OnceLock<Histogram>]>,
    first_byte_cache: Box<[OnceLock<Histogram>]>,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Histograms,
    pub first_byte: Histograms,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub connections: Gauge,
    pub handshakes: Family<ResultLabels, Counter>,
    pub server_up: Family<ServerLabels, Gauge>,
    pub backfill_copies: Family<ResultLabels, Counter>,
    pub backfill_bytes: Counter,
    pub certificate_not_after: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub last_reload_ok: Gauge,
}

/// 1 ms to ~65 s: a manifest HEAD to a multi-GB layer.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dockgate");
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            first_byte: Family::new_with_constructor(latency),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            connections: Gauge::default(),
            handshakes: Family::default(),
            server_up: Family::default(),
            backfill_copies: Family::default(),
            backfill_bytes: Counter::default(),
            certificate_not_after: Gauge::default(),
            reloads: Family::default(),
            last_reload_ok: Gauge::default(),
            registry: Registry::default(),
            request_cache: (0..ROUTES.len() * UPSTREAMS.len() * METHODS.len() * CLASSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            duration_cache: (0..ROUTES.len()).map(|_| OnceLock::new()).collect(),
            first_byte_cache: (0..ROUTES.len()).map(|_| OnceLock::new()).collect(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Requests answered, by routing row, upstream, method and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "From the request's arrival to the end of its response body",
            m.duration.clone(),
        );
        r.register(
            "time_to_first_byte_seconds",
            "From the request's arrival to its response headers",
            m.first_byte.clone(),
        );
        r.register(
            "received_bytes",
            "Request body bytes read from clients",
            m.bytes_in.clone(),
        );
        r.register(
            "sent_bytes",
            "Response body bytes sent to clients",
            m.bytes_out.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now",
            m.connections.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes, by result (ok, failed, timeout)",
            m.handshakes.clone(),
        );
        r.register(
            "upstream_server_up",
            "1 when the upstream server is healthy (probes and real requests)",
            m.server_up.clone(),
        );
        r.register(
            "backfill_copies",
            "Blobs copied from get into put, by result",
            m.backfill_copies.clone(),
        );
        r.register(
            "backfill_bytes",
            "Bytes copied from get into put",
            m.backfill_bytes.clone(),
        );
        r.register(
            "certificate_not_after_seconds",
            "Expiry of the served certificate, Unix time",
            m.certificate_not_after.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result",
            m.reloads.clone(),
        );
        r.register(
            "config_last_reload_successful",
            "1 when the last reload succeeded (or none was asked for)",
            m.last_reload_ok.clone(),
        );
        m.last_reload_ok.set(1);
        Metrics { registry, ..m }
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        route: Option<Reason>,
        upstream: Option<Target>,
        method: &http::Method,
        status: u16,
    ) {
        let (r, u, m, c) = (
            route_index(route),
            upstream.map_or(UPSTREAMS.len() - 1, Target::index),
            index(METHODS, method_label(method)),
            index(CLASSES, status_class(status)),
        );
        let slot = ((r * UPSTREAMS.len() + u) * METHODS.len() + m) * CLASSES.len() + c;
        self.request_cache[slot]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: ROUTES[r],
                        upstream: UPSTREAMS[u],
                        method: METHODS[m],
                        status: CLASSES[c],
                    })
                    .clone()
            })
            .inc();
    }

    /// Observes a request's duration, and its time to first byte, by routing row.
    pub fn duration(&self, route: Option<Reason>, seconds: f64) {
        self.histogram(&self.duration_cache, &self.duration, route)
            .observe(seconds);
    }

    pub fn first_byte(&self, route: Option<Reason>, seconds: f64) {
        self.histogram(&self.first_byte_cache, &self.first_byte, route)
            .observe(seconds);
    }

    fn histogram<'a>(
        &self,
        cache: &'a [OnceLock<Histogram>],
        family: &Histograms,
        route: Option<Reason>,
    ) -> &'a Histogram {
        let r = route_index(route);
        cache[r].get_or_init(|| {
            family
                .get_or_create(&RouteLabels { route: ROUTES[r] })
                .clone()
        })
    }

    /// The text exposition `/metrics` serves.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The label values the caches are indexed by; the last entry of each catches anything else.
const ROUTES: &[&str] = &[
    "rule",
    "token",
    "web",
    "search",
    "write",
    "upload-start",
    "manifest-push",
    "upload",
    "blob-check",
    "manifest",
    "tags",
    "catalog",
    "read",
    "-",
];
const UPSTREAMS: &[&str] = &["put", "get", "web", "token", "-"];
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
];
const CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A routing row's place in `ROUTES`, without comparing strings on every request.
fn route_index(route: Option<Reason>) -> usize {
    match route {
        Some(Reason::UserRule(_)) => 0,
        Some(Reason::Token) => 1,
        Some(Reason::Web) => 2,
        Some(Reason::Search) => 3,
        Some(Reason::Write) => 4,
        Some(Reason::UploadStart) => 5,
        Some(Reason::ManifestPush) => 6,
        Some(Reason::Upload) => 7,
        Some(Reason::BlobCheck) => 8,
        Some(Reason::Manifest) => 9,
        Some(Reason::Tags) => 10,
        Some(Reason::Catalog) => 11,
        Some(Reason::Read) => 12,
        None => 13,
    }
}

fn index(values: &[&'static str], value: &str) -> usize {
    values
        .iter()
        .position(|v| *v == value)
        .unwrap_or(values.len() - 1)
}

/// `2xx`, `4xx`, ...: a label with five values rather than one per status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Registry methods by name; anything else is refused before it is counted twice.
pub fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache index and the label agree for every routing row.
    #[test]
    fn route_indexes_name_their_rows() {
        let rows = [
            Reason::UserRule(0),
            Reason::Token,
            Reason::Web,
            Reason::Search,
            Reason::Write,
            Reason::UploadStart,
            Reason::ManifestPush,
            Reason::Upload,
            Reason::BlobCheck,
            Reason::Manifest,
            Reason::Tags,
            Reason::Catalog,
            Reason::Read,
        ];
        for r in rows {
            assert_eq!(ROUTES[route_index(Some(r))], r.as_str());
        }
        assert_eq!(ROUTES[route_index(None)], "-");
        for t in Target::ALL {
            assert_eq!(UPSTREAMS[t.index()], t.as_str());
        }
    }
}
