//! Prometheus metrics and the operator's own HTTP endpoint: /metrics, /healthz, /readyz.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, info};

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

/// Answers one request.
pub fn respond(
    metrics: &Metrics,
    method: &Method,
    path: &str,
) -> (StatusCode, &'static str, String) {
    if method != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if metrics.ready.load(Ordering::SeqCst) => {
            (StatusCode::OK, "text/plain", "ready\n".into())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "starting\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

async fn handle(
    metrics: Arc<Metrics>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = respond(&metrics, request.method(), request.uri().path());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// Binds the endpoint (so a bad address fails at start, not later).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::ServeMetrics {
            addr: addr.to_string(),
            source,
        })
}

/// Serves /metrics, /healthz and /readyz until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(%addr, "serving /metrics, /healthz and /readyz");
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|source| Error::ServeMetrics {
                addr: addr.clone(),
                source,
            })?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(metrics.clone(), request));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, "metrics connection");
            }
        });
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

    #[test]
    fn readyz_waits_for_the_controller() {
        let metrics = Metrics::new();
        assert_eq!(
            respond(&metrics, &Method::GET, "/healthz").0,
            StatusCode::OK
        );
        assert_eq!(
            respond(&metrics, &Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        metrics.set_ready();
        assert_eq!(respond(&metrics, &Method::GET, "/readyz").0, StatusCode::OK);
        assert_eq!(
            respond(&metrics, &Method::GET, "/nope").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&metrics, &Method::POST, "/metrics").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn the_endpoint_answers_over_http() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("binds");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::new());
        let server = tokio::spawn(serve(listener, metrics));
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("writes");
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .expect("answers in time")
            .expect("reads");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("tributary_operator_reconciles_total"),
            "{response}"
        );
        server.abort();
    }
}
