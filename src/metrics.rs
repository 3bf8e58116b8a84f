//! Prometheus metrics, one registry per gateway (no global state). No label ever carries a device id,
//! an address or a secret: only fixed sets of outcomes, codes, roles and actions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectLabels {
    outcome: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

pub use crate::store::latency_histogram;

pub struct Metrics {
    registry: Registry,
    connects: Family<ConnectLabels, Counter>,
    handshake_seconds: Histogram,
    live_sockets: Family<RoleLabels, Gauge>,
    pending_requests: Gauge,
    decisions: Family<ActionLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `store` holds the store's own write-latency histogram and device-cache counters.
    pub fn new(store: crate::store::StoreMetrics) -> Self {
        let mut registry = Registry::with_prefix("pairgate");
        let connects = Family::<ConnectLabels, Counter>::default();
        registry.register("connects", "Completed connect attempts by outcome and error code", connects.clone());
        let handshake_seconds = latency_histogram();
        registry.register("handshake_seconds", "From the connect frame to the reply", handshake_seconds.clone());
        let live_sockets = Family::<RoleLabels, Gauge>::default();
        registry.register("live_sockets", "Connected sockets by role", live_sockets.clone());
        let pending_requests = Gauge::default();
        registry.register("pending_requests", "Pairing requests waiting for an operator", pending_requests.clone());
        let decisions = Family::<ActionLabels, Counter>::default();
        registry.register("decisions", "Approvals, rejections, revocations, rotations and removals", decisions.clone());
        registry.register(
            "store_transaction_seconds",
            "Store write transactions, begin to commit",
            store.write_latency,
        );
        registry.register("device_cache_hits", "Device lookups answered by the cache", store.device_cache_hits);
        registry.register("device_cache_misses", "Device lookups read from the database", store.device_cache_misses);
        registry.register(
            "approval_commits",
            "Transactions that committed approvals (approvals committed together share one)",
            store.approval_commits,
        );
        Metrics { registry, connects, handshake_seconds, live_sockets, pending_requests, decisions }
    }

    /// One finished connect; `code` is the refusal's `details.code` (or error code), `None` when let in.
    pub fn connect(&self, code: Option<&str>, seconds: f64) {
        let labels = match code {
            None => ConnectLabels { outcome: "ok", code: "none".into() },
            Some(code) => ConnectLabels { outcome: "refused", code: code.to_owned() },
        };
        self.connects.get_or_create(&labels).inc();
        self.handshake_seconds.observe(seconds);
    }

    pub fn socket_opened(&self, role: &'static str) {
        self.live_sockets.get_or_create(&RoleLabels { role }).inc();
    }

    pub fn socket_closed(&self, role: &'static str) {
        self.live_sockets.get_or_create(&RoleLabels { role }).dec();
    }

    /// approve, reject, silent_approve, revoke, rotate, remove.
    pub fn decision(&self, action: &'static str) {
        self.decisions.get_or_create(&ActionLabels { action }).inc();
    }

    /// The text exposition, with the pending-request gauge set from the store just before.
    pub fn render(&self, pending_requests: i64) -> String {
        self.pending_requests.set(pending_requests);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
