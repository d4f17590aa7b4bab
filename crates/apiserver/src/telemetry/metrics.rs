//! `/metrics` in the Prometheus text format (0.0.4): requests by verb, resource and code with
//! latency histograms under upstream's metric names, requests and watches in flight, the
//! store's revision, and the process's memory, CPU and descriptors.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::types::Target;
use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    request: DurationLabels,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: String,
}

/// Upstream's buckets for apiserver_request_duration_seconds.
const BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    inflight: Family<KindLabels, Gauge>,
    long_running: Family<DurationLabels, Gauge>,
    revision: Gauge,
    /// Audit events queued for the log, and those dropped (queue full or write failed).
    pub audit_events: Counter,
    pub audit_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations =
            Family::<DurationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let inflight = Family::<KindLabels, Gauge>::default();
        let long_running = Family::<DurationLabels, Gauge>::default();
        let revision = Gauge::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource and scope",
            durations.clone(),
        );
        registry.register(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind",
            inflight.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component",
            long_running.clone(),
        );
        registry.register(
            "capstan_store_revision",
            "The store's latest committed revision",
            revision.clone(),
        );
        let audit_events = Counter::default();
        let audit_dropped = Counter::default();
        registry.register(
            "apiserver_audit_event",
            "Counter of audit events generated and sent to the audit backend",
            audit_events.clone(),
        );
        registry.register(
            "apiserver_audit_error",
            "Counter of audit events that failed to be audited properly (the log's queue was full or the write failed)",
            audit_dropped.clone(),
        );
        Metrics {
            audit_events,
            audit_dropped,
            registry,
            requests,
            durations,
            inflight,
            long_running,
            revision,
        }
    }
}

/// The verb as upstream's metrics name it.
pub fn verb(method: &axum::http::Method, t: &Target, watch: bool, apply: bool) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET if watch => "WATCH",
        Method::GET if t.name.is_none() => "LIST",
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH if apply => "APPLY",
        Method::PATCH => "PATCH",
        Method::DELETE if t.name.is_none() => "DELETECOLLECTION",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

/// One open long-running request, counted in `apiserver_longrunning_requests` under its
/// own labels until dropped (so a client's watch is told apart from the scheduler's).
pub struct LongRunning(Gauge);

impl Drop for LongRunning {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn labels(t: &Target, verb: &str) -> DurationLabels {
    let scope = if t.name.is_some() {
        "resource"
    } else if t.namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    };
    DurationLabels {
        verb: verb.to_string(),
        group: t.rt.group.clone(),
        version: t.rt.version.clone(),
        resource: t.rt.plural.clone(),
        subresource: t.subresource.clone().unwrap_or_default(),
        scope: scope.to_string(),
    }
}

impl Metrics {
    /// Count one resource request and its latency.
    pub fn observe(&self, t: &Target, verb: &str, code: u16, took: Duration) {
        let d = labels(t, verb);
        // A watch's latency is its lifetime; upstream leaves it out of the histogram too.
        if verb != "WATCH" {
            self.durations.get_or_create(&d).observe(took.as_secs_f64());
        }
        self.requests
            .get_or_create(&RequestLabels {
                request: d,
                code: code.to_string(),
            })
            .inc();
    }

    /// Count a watch as open until the returned guard is dropped.
    pub fn long_running(&self, t: &Target) -> LongRunning {
        let g = self.long_running.get_or_create(&labels(t, "WATCH")).clone();
        g.inc();
        LongRunning(g)
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What the process itself uses, read from /proc at scrape time.
fn process_metrics(out: &mut String) {
    use std::fmt::Write;
    let page = 4096.0;
    let ticks = 100.0; // USER_HZ on every Linux this runs on
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at index 2 (state).
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
        let cpu = (num(11) + num(12)) / ticks; // utime + stime
        let rss = num(21) * page;
        let vsize = num(20);
        let _ = writeln!(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}");
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}");
        let _ = writeln!(out, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {vsize}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let n = fds.count();
        let _ = writeln!(out, "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {n}");
    }
}

pub async fn serve(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    let (requests, _watches) = state.limiter.in_use();
    m.inflight
        .get_or_create(&KindLabels {
            request_kind: "readOnly+mutating".into(),
        })
        .set(requests as i64);
    if let Ok(rev) = state.store.current_revision().await {
        m.revision.set(rev);
    }
    let mut out = m.encode();
    process_metrics(&mut out);
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}
