//! One vocabulary of condition types, statuses and reasons, shared by the operator (which sets
//! them), the CRD schema (which makes the API server enforce their shape, as controller-gen does
//! for `metav1.Condition`) and anything that reads them (the Argo CD health check, tests,
//! `kubectl wait`).

use schemars::{Schema, SchemaGenerator, json_schema};

/// A condition's status. Kubernetes spells it as a string; the CRD admits exactly these three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    /// Every status, in the order the CRD's enum lists them.
    pub const ALL: [Status; 3] = [Status::True, Status::False, Status::Unknown];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    /// Parses the wire spelling; anything else is not a condition status.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Condition types.
pub mod types {
    /// The ingestion is doing its job: workers ready and committing, or a run succeeded.
    pub const READY: &str = "Ready";
    /// A rollout, a run or a catch-up is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a person: a bad spec, a missing Secret, crash-looping workers, a failed run.
    pub const DEGRADED: &str = "Degraded";

    /// Every type the operator sets.
    pub const ALL: [&str; 3] = [READY, PROGRESSING, DEGRADED];
}

/// Condition reasons (CamelCase, as Kubernetes requires).
pub mod reasons {
    pub const RECONCILING: &str = "Reconciling";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const CHECKPOINT_IN_USE: &str = "CheckpointInUse";
    pub const WORKERS_READY: &str = "WorkersReady";
    pub const WORKERS_NOT_READY: &str = "WorkersNotReady";
    pub const ROLLING_OUT: &str = "RollingOut";
    pub const CRASH_LOOPING: &str = "CrashLooping";
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// A worker container cannot start: its image cannot be pulled, or its configuration
    /// (a Secret or ConfigMap it mounts) is missing.
    pub const WORKERS_CANNOT_START: &str = "WorkersCannotStart";
    /// The Deployment's rollout passed its progress deadline.
    pub const ROLLOUT_STUCK: &str = "RolloutStuck";
    /// A continuous worker restarted spec.maxRestarts times: the workers are stopped until
    /// the spec changes.
    pub const RESTART_LIMIT_REACHED: &str = "RestartLimitReached";
    /// A worker has records waiting and has committed no batch for minutes.
    pub const STALLED: &str = "Stalled";
    pub const RUN_IN_PROGRESS: &str = "RunInProgress";
    pub const RUN_SUCCEEDED: &str = "RunSucceeded";
    pub const RUN_FAILED: &str = "RunFailed";
    pub const SCHEDULED: &str = "Scheduled";
    pub const SUSPENDED: &str = "Suspended";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const UNKNOWN: &str = "Unknown";
    /// The Unity Catalog of `sink.delta.table` refuses the workers' token or OAuth client, or
    /// their principal lacks a privilege.
    pub const CATALOG_UNAUTHORIZED: &str = "CatalogUnauthorized";
    /// The catalog named in `sink.delta.table` does not exist.
    pub const CATALOG_NOT_FOUND: &str = "CatalogNotFound";
    /// The schema named in `sink.delta.table` does not exist.
    pub const SCHEMA_NOT_FOUND: &str = "SchemaNotFound";
    /// The table does not exist and may not be created (tableMustExist, or no storageRoot).
    pub const TABLE_NOT_FOUND: &str = "TableNotFound";
    /// The table exists but the workers may not write it (a view, not Delta, managed).
    pub const TABLE_NOT_WRITABLE: &str = "TableNotWritable";
    /// The catalog's endpoint cannot be reached.
    pub const CATALOG_UNREACHABLE: &str = "CatalogUnreachable";
    /// Any other refusal by the catalog.
    pub const CATALOG_ERROR: &str = "CatalogError";

    /// The reasons a worker reports for a catalog's refusal (`status.workers[].errorReason`),
    /// most actionable first.
    pub const CATALOG: [&str; 7] = [
        CATALOG_UNAUTHORIZED,
        CATALOG_NOT_FOUND,
        SCHEMA_NOT_FOUND,
        TABLE_NOT_FOUND,
        TABLE_NOT_WRITABLE,
        CATALOG_UNREACHABLE,
        CATALOG_ERROR,
    ];

    /// Every reason the operator sets.
    pub const ALL: [&str; 27] = [
        RECONCILING,
        INVALID_SPEC,
        SECRET_NOT_FOUND,
        CHECKPOINT_IN_USE,
        WORKERS_READY,
        WORKERS_NOT_READY,
        ROLLING_OUT,
        CRASH_LOOPING,
        UNSCHEDULABLE,
        WORKERS_CANNOT_START,
        ROLLOUT_STUCK,
        RESTART_LIMIT_REACHED,
        STALLED,
        RUN_IN_PROGRESS,
        RUN_SUCCEEDED,
        RUN_FAILED,
        SCHEDULED,
        SUSPENDED,
        AS_EXPECTED,
        UNKNOWN,
        CATALOG_UNAUTHORIZED,
        CATALOG_NOT_FOUND,
        SCHEMA_NOT_FOUND,
        TABLE_NOT_FOUND,
        TABLE_NOT_WRITABLE,
        CATALOG_UNREACHABLE,
        CATALOG_ERROR,
    ];
}

/// The limits and patterns of `metav1.Condition`, as controller-gen writes them into a CRD
/// (from the `+kubebuilder:validation` markers in k8s.io/apimachinery's types.go).
pub mod limits {
    /// `type`: CamelCase, or a DNS-subdomain prefix and `/CamelCase`.
    pub const TYPE_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$";
    pub const TYPE_MAX_LENGTH: u64 = 316;
    /// `reason`: a CamelCase identifier (letters first; digits, `_`, `,` and `:` inside).
    pub const REASON_PATTERN: &str = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";
    pub const REASON_MIN_LENGTH: u64 = 1;
    pub const REASON_MAX_LENGTH: u64 = 1024;
    pub const MESSAGE_MAX_LENGTH: u64 = 32768;
}

/// The schema of `status.conditions`: a list-map keyed by type (so server-side apply merges
/// each condition by its type) of `metav1.Condition`, validated as controller-gen emits it.
/// k8s-openapi's own schema for `Condition` carries the descriptions but none of the limits.
pub fn schema(_: &mut SchemaGenerator) -> Schema {
    let statuses: Vec<&str> = Status::ALL.into_iter().map(Status::as_str).collect();
    json_schema!({
        "description": "Ready, Progressing and Degraded, each with a CamelCase reason and a message.",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "lastTransitionTime is the last time the condition transitioned from one status to another. This should be when the underlying condition changed.  If that is not known, then using the time when the API field changed is acceptable.",
                    "type": "string",
                    "format": "date-time"
                },
                "message": {
                    "description": "message is a human readable message indicating details about the transition. This may be an empty string.",
                    "type": "string",
                    "maxLength": limits::MESSAGE_MAX_LENGTH
                },
                "observedGeneration": {
                    "description": "observedGeneration represents the .metadata.generation that the condition was set based upon. For instance, if .metadata.generation is currently 12, but the .status.conditions[x].observedGeneration is 9, the condition is out of date with respect to the current state of the instance.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "reason": {
                    "description": "reason contains a programmatic identifier indicating the reason for the condition's last transition. Producers of specific condition types may define expected values and meanings for this field, and whether the values are considered a guaranteed API. The value should be a CamelCase string. This field may not be empty.",
                    "type": "string",
                    "minLength": limits::REASON_MIN_LENGTH,
                    "maxLength": limits::REASON_MAX_LENGTH,
                    "pattern": limits::REASON_PATTERN
                },
                "status": {
                    "description": "status of the condition, one of True, False, Unknown.",
                    "type": "string",
                    "enum": statuses
                },
                "type": {
                    "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": limits::TYPE_MAX_LENGTH,
                    "pattern": limits::TYPE_PATTERN
                }
            }
        }
    })
}

/// The field manager names used for server-side apply of the status.
pub mod field_managers {
    pub const OPERATOR: &str = "tributary-operator";
    /// Prefix of the workers' field managers; see [`worker`].
    pub const WORKER: &str = "tributary-worker";

    /// The field manager of one worker pod. Each worker needs its own: with a shared manager,
    /// one worker's apply of its `status.workers` entry would remove every other worker's entry
    /// (server-side apply removes what a manager owned and no longer sends).
    pub fn worker(pod_name: &str) -> String {
        // Field manager names are limited to 128 characters; pod names to 253.
        let mut name = format!("{WORKER}-{pod_name}");
        name.truncate(128);
        name
    }
}
