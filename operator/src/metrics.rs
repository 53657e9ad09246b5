//! The controller's Prometheus metrics and its readiness, served by `tributary-http` on
//! /metrics, /healthz and /readyz.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Error;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

/// The controller's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    /// Set once the controller runs; /readyz answers 503 before.
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tributary_operator");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        // 5 ms .. ~20 s: a reconcile is a handful of API calls.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "failures",
            "Reconciles that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            duration.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            ready: AtomicBool::new(false),
        }
    }

    /// Records one reconcile.
    pub fn observe(&self, elapsed: Duration, error: Option<&Error>) {
        self.reconciles.inc();
        self.duration.observe(elapsed.as_secs_f64());
        if let Some(error) = error {
            self.failures
                .get_or_create(&ErrorLabels {
                    error: error.kind().to_string(),
                })
                .inc();
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an empty page is the worst case.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }
}

impl tributary_http::Probe for Metrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Ready once the process serves: a standby replica waiting for the Lease is ready too,
    /// so readiness never blocks a rollout of the operator's own Deployment.
    fn readiness(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("the controller is starting".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_failures_and_durations_are_exported() {
        let metrics = Metrics::new();
        metrics.observe(Duration::from_millis(20), None);
        metrics.observe(
            Duration::from_millis(30),
            Some(&Error::MissingMetadata("metadata.name")),
        );
        let text = metrics.encode();
        assert!(
            text.contains("tributary_operator_reconciles_total 2"),
            "{text}"
        );
        assert!(
            text.contains("tributary_operator_failures_total{error=\"missing_metadata\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tributary_operator_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_metrics_and_readiness_over_http() {
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        async fn get(addr: std::net::SocketAddr, path: &str) -> String {
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects");
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("writes");
            let mut response = String::new();
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
                .await
                .expect("answers in time")
                .expect("reads");
            response
        }

        let server = tributary_http::Server::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("binds");
        let addr = server.local_addr();
        let metrics = Arc::new(Metrics::new());
        metrics.observe(Duration::from_millis(5), None);
        let serving = tokio::spawn(server.serve(metrics.clone()));
        let response = get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("tributary_operator_reconciles_total 1"),
            "{response}"
        );
        let starting = get(addr, "/readyz").await;
        assert!(starting.starts_with("HTTP/1.1 503"), "{starting}");
        assert!(
            starting.contains("the controller is starting"),
            "{starting}"
        );
        metrics.set_ready();
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        serving.abort();
    }
}
