//! The status when nothing runs: a reconcile stopped by a [`Blocker`], or a suspended run to
//! completion (which has no workload at all).

use tributary_crds::conditions::{Status, reasons};
use tributary_crds::{Phase, StreamingIngestion, StreamingIngestionStatus};

use super::{Assessment, Blocker, ConditionState, Conditions};

/// A reconcile stopped before applying anything. Every condition carries the blocker's reason,
/// so `kubectl get` and `kubectl wait` show it whichever condition they read.
pub fn assess(
    ingestion: &StreamingIngestion,
    previous: &StreamingIngestionStatus,
    blocker: &Blocker,
) -> Assessment {
    let (reason, message) = match blocker {
        Blocker::InvalidSpec(messages) => (
            reasons::INVALID_SPEC,
            format!("the spec is invalid: {messages}"),
        ),
        Blocker::SecretsMissing(secrets) => (
            reasons::SECRET_NOT_FOUND,
            format!(
                "Secret {} not found in namespace {}",
                secrets.join(", "),
                ingestion.metadata.namespace.as_deref().unwrap_or_default()
            ),
        ),
        Blocker::CheckpointInUse(other) => (
            reasons::CHECKPOINT_IN_USE,
            format!(
                "checkpoint location {} is already used by StreamingIngestion {other}; each query needs its own checkpoint",
                ingestion.spec.checkpoint.location
            ),
        ),
    };
    let conditions = Conditions {
        ready: ConditionState::new(Status::False, reason, message.clone()),
        progressing: ConditionState::new(Status::False, reason, message.clone()),
        degraded: ConditionState::new(Status::True, reason, message),
    };
    if matches!(blocker, Blocker::CheckpointInUse(_)) {
        // Its workload was removed: two writers must never share a checkpoint.
        Assessment {
            phase: Phase::Pending,
            conditions,
            workload: None,
            replicas: Some(0),
            ready_replicas: Some(0),
            last_run: None,
        }
    } else {
        // Nothing was touched: whatever ran before still runs.
        Assessment {
            phase: Phase::Pending,
            conditions,
            workload: previous.workload.clone(),
            replicas: previous.replicas,
            ready_replicas: previous.ready_replicas,
            last_run: previous.last_run.clone(),
        }
    }
}

/// A suspended run to completion: no Job exists; the last run's outcome stays visible.
pub fn suspended_run(previous: &StreamingIngestionStatus) -> Assessment {
    Assessment {
        phase: Phase::Suspended,
        conditions: Conditions::suspended(),
        workload: None,
        replicas: Some(0),
        ready_replicas: Some(0),
        last_run: previous.last_run.clone(),
    }
}
