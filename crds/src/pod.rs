//! The contract between the operator and the worker inside a pod: where the rendered manifest
//! is mounted, which environment variables say who the worker is, and which labels select it.
//! Both sides use these constants, so they cannot drift apart.

/// Directory the operator mounts the rendered ingestion ConfigMap at (read-only).
pub const CONFIG_DIR: &str = "/etc/tributary";
/// Key of the ConfigMap (and file name under [`CONFIG_DIR`]) holding the StreamingIngestion manifest.
pub const CONFIG_FILE: &str = "ingestion.yaml";
/// Writable scratch space (an emptyDir: the root filesystem is read-only).
pub const SCRATCH_DIR: &str = "/tmp";
/// Names of the volumes the operator gives every worker pod; `spec.worker.volumes` may not use
/// them, nor names starting with [`SECRET_VOLUME_PREFIX`].
pub const RESERVED_VOLUMES: [&str; 5] = [
    "config",
    "scratch",
    "checkpoint",
    "lake",
    "spark-checkpoint",
];
/// Prefix of the volumes of referenced Secrets (`secret-0`, `secret-1`, ...).
pub const SECRET_VOLUME_PREFIX: &str = "secret-";

/// The StreamingIngestion's name (set by the operator).
pub const ENV_INGESTION_NAME: &str = "TRIBUTARY_INGESTION_NAME";
/// The StreamingIngestion's namespace (downward API).
pub const ENV_INGESTION_NAMESPACE: &str = "TRIBUTARY_INGESTION_NAMESPACE";
/// The worker pod's name (downward API); names the worker's entry in status.workers.
pub const ENV_POD_NAME: &str = "TRIBUTARY_POD_NAME";
/// "true" when the worker should report progress into the resource's status.
pub const ENV_REPORT_STATUS: &str = "TRIBUTARY_REPORT_STATUS";
/// Port of /metrics, /healthz and /readyz.
pub const ENV_METRICS_PORT: &str = "TRIBUTARY_METRICS_PORT";
/// text or json.
pub const ENV_LOG_FORMAT: &str = "TRIBUTARY_LOG_FORMAT";
/// Default port of /metrics, /healthz and /readyz.
pub const DEFAULT_METRICS_PORT: i32 = 9090;

/// Label naming the ingestion on every object the operator creates (and the pod selector).
pub const LABEL_INGESTION: &str = "tributary.dev/ingestion";
/// Standard labels.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Pod-template annotation carrying the hash of the rendered configuration: a spec change
/// changes it and so rolls the workers.
pub const ANNOTATION_CONFIG_HASH: &str = "tributary.dev/config-hash";
/// Annotation a user sets on the StreamingIngestion (any new value) to restart its workers
/// without a spec change, like `kubectl rollout restart`.
pub const ANNOTATION_RESTARTED_AT: &str = "tributary.dev/restartedAt";
