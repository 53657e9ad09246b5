//! The outputs stage: what a committed batch tells the world. The progress record (stdout and
//! the checkpoint), Prometheus metrics with /metrics, /healthz and /readyz, and, in a pod, the
//! StreamingIngestion's status.

pub mod metrics;
pub mod progress;
pub mod report;
mod telemetry;

pub use telemetry::Telemetry;
