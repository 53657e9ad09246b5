//! One vocabulary of condition types and reasons, shared by the operator (which sets them) and
//! anything that reads them (the Argo CD health check, tests, `kubectl wait`).

/// Condition types.
pub mod types {
    /// The ingestion is doing its job: workers ready and committing, or a run succeeded.
    pub const READY: &str = "Ready";
    /// A rollout, a run or a catch-up is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a person: a bad spec, a missing Secret, crash-looping workers, a failed run.
    pub const DEGRADED: &str = "Degraded";
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
    pub const RUN_IN_PROGRESS: &str = "RunInProgress";
    pub const RUN_SUCCEEDED: &str = "RunSucceeded";
    pub const RUN_FAILED: &str = "RunFailed";
    pub const SCHEDULED: &str = "Scheduled";
    pub const SUSPENDED: &str = "Suspended";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const UNKNOWN: &str = "Unknown";
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
