//! The endpoint every Tributary process serves for Kubernetes and Prometheus: `/metrics` (the
//! Prometheus text exposition of a registry), `/healthz` (liveness) and `/readyz` (readiness).
//!
//! A process implements [`Probe`] for whatever holds its registry and knows its health, binds
//! a [`Server`] at start-up (so a bad address fails at once, not later) and serves it:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use prometheus_client::registry::Registry;
//! struct Health { registry: Registry }
//! impl tributary_http::Probe for Health {
//!     fn registry(&self) -> &Registry { &self.registry }
//!     fn readiness(&self) -> Result<(), String> { Ok(()) }
//! }
//! # async fn start() -> Result<(), tributary_http::Error> {
//! let server = tributary_http::Server::bind("0.0.0.0:9090".parse().expect("address")).await?;
//! tokio::spawn(server.serve(Arc::new(Health { registry: Registry::default() })));
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The content type of the OpenMetrics text format prometheus-client writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoint reports about a process.
pub trait Probe: Send + Sync + 'static {
    /// The registry `/metrics` encodes.
    fn registry(&self) -> &Registry;

    /// `Ok` when the process should get work; otherwise why not (`/readyz` answers 503 with
    /// it: a Service stops routing to the pod, a rollout waits).
    fn readiness(&self) -> Result<(), String>;

    /// `Ok` while the process is alive; otherwise why not (`/healthz` answers 503 with it and
    /// the kubelet restarts the container). Alive by default: answering at all is the proof.
    fn liveness(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Everything that can go wrong serving the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} for /metrics, /healthz and /readyz: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the /metrics, /healthz and /readyz endpoint on {addr} stopped: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The routes, for a process that runs its own server (or a test that calls it directly).
pub fn router(probe: Arc<dyn Probe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probe)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn metrics(State(probe): State<Arc<dyn Probe>>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, probe.registry()) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(error) => {
            warn!(%error, "cannot encode the metrics");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the metrics: {error}\n"),
            )
        }
    }
}

fn verdict(result: Result<(), String>, ok: &str, failing: &str) -> Response {
    match result {
        Ok(()) => text(StatusCode::OK, format!("{ok}\n")),
        Err(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{failing}: {why}\n"),
        ),
    }
}

async fn healthz(State(probe): State<Arc<dyn Probe>>) -> Response {
    verdict(probe.liveness(), "ok", "not alive")
}

async fn readyz(State(probe): State<Arc<dyn Probe>>) -> Response {
    verdict(probe.readiness(), "ready", "not ready")
}

/// A bound, not yet serving endpoint.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Binds the address (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        Ok(Server { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the task is dropped or the listener fails.
    pub async fn serve(self, probe: Arc<dyn Probe>) -> Result<(), Error> {
        self.serve_until(probe, std::future::pending()).await
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn serve_until<F>(self, probe: Arc<dyn Probe>, shutdown: F) -> Result<(), Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let addr = self.addr;
        info!(%addr, "serving /metrics, /healthz and /readyz");
        axum::serve(self.listener, router(probe))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Serve { addr, source })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct TestProbe {
        registry: Registry,
        ready: AtomicBool,
        alive: AtomicBool,
    }

    impl Probe for TestProbe {
        fn registry(&self) -> &Registry {
            &self.registry
        }
        fn readiness(&self) -> Result<(), String> {
            if self.ready.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("still starting".into())
            }
        }
        fn liveness(&self) -> Result<(), String> {
            if self.alive.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("stalled".into())
            }
        }
    }

    /// Sends one raw HTTP/1.1 request; returns the status line and the whole response.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects");
            let head =
                format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.expect("writes");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("reads");
            response
        };
        let response = tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .expect("answers in time");
        let status = response.lines().next().unwrap_or_default().to_string();
        (status, response)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_until_shut_down() {
        let mut registry = Registry::with_prefix("test");
        let counter = Counter::<u64>::default();
        registry.register("events", "Events seen", counter.clone());
        counter.inc_by(3);
        let probe = Arc::new(TestProbe {
            registry,
            ready: AtomicBool::new(false),
            alive: AtomicBool::new(true),
        });
        let server = Server::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("binds");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve_until(probe.clone(), async {
            let _ = stopped.await;
        }));

        let (status, body) = request(addr, "GET", "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        assert!(body.contains(METRICS_CONTENT_TYPE), "{body}");
        assert!(body.contains("test_events_total 3"), "{body}");

        let (status, body) = request(addr, "GET", "/readyz").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
        assert!(body.contains("not ready: still starting"), "{body}");
        probe.ready.store(true, Ordering::SeqCst);
        assert_eq!(request(addr, "GET", "/readyz").await.0, "HTTP/1.1 200 OK");

        assert_eq!(request(addr, "GET", "/healthz").await.0, "HTTP/1.1 200 OK");
        probe.alive.store(false, Ordering::SeqCst);
        let (status, body) = request(addr, "GET", "/healthz").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
        assert!(body.contains("not alive: stalled"), "{body}");

        assert_eq!(
            request(addr, "GET", "/nope").await.0,
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            request(addr, "POST", "/metrics").await.0,
            "HTTP/1.1 405 Method Not Allowed"
        );

        stop.send(()).expect("the server waits");
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("stops in time")
            .expect("the task ran")
            .expect("served without error");
    }

    #[tokio::test]
    async fn an_address_in_use_is_an_error_naming_it() {
        let first = Server::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("binds");
        let error = Server::bind(first.local_addr())
            .await
            .err()
            .expect("the port is taken");
        assert!(
            error.to_string().contains(&first.local_addr().to_string()),
            "{error}"
        );
    }
}
