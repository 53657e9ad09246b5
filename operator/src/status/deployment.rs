//! The status of a continuous ingestion, run by a Deployment.

use k8s_openapi::api::apps::v1::DeploymentStatus;
use tributary_crds::conditions::{Status, reasons};
use tributary_crds::{Phase, StreamingIngestionSpec, WorkloadRef};

use super::pods::{PodProblem, degraded_by_pods};
use super::{Assessment, ConditionState, Conditions};

/// Ready when every desired worker is ready; Progressing while a rollout is under way;
/// Degraded by the worker pods' problems first, then by a rollout past its deadline.
pub fn assess(
    spec: &StreamingIngestionSpec,
    name: &str,
    generation: Option<i64>,
    observed: Option<&DeploymentStatus>,
    problems: &[PodProblem],
) -> Assessment {
    let desired = if spec.suspended() { 0 } else { spec.replicas() };
    let s = observed.cloned().unwrap_or_default();
    let replicas = s.replicas.unwrap_or(0);
    let ready = s.ready_replicas.unwrap_or(0);
    let updated = s.updated_replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    let seen = s.observed_generation.is_some() && s.observed_generation >= generation;
    let rolled_out = seen && updated >= desired && replicas == desired && available >= desired;

    let (phase, conditions) = if spec.suspended() {
        (Phase::Suspended, Conditions::suspended())
    } else if observed.is_none() || s.observed_generation.is_none() {
        let message = format!("waiting for Deployment {name} to report");
        (
            Phase::Pending,
            Conditions {
                ready: ConditionState::new(Status::Unknown, reasons::RECONCILING, message.clone()),
                progressing: ConditionState::new(
                    Status::True,
                    reasons::ROLLING_OUT,
                    message.clone(),
                ),
                degraded: degraded_by_pods(problems).unwrap_or_else(|| {
                    ConditionState::new(Status::Unknown, reasons::RECONCILING, message)
                }),
            },
        )
    } else {
        let phase = if ready > 0 || desired == 0 {
            Phase::Running
        } else {
            Phase::Pending
        };
        let counts = format!("{ready}/{desired} workers ready");
        let ready_condition = if ready >= desired {
            ConditionState::new(Status::True, reasons::WORKERS_READY, counts)
        } else {
            ConditionState::new(Status::False, reasons::WORKERS_NOT_READY, counts)
        };
        let progressing = if rolled_out {
            ConditionState::new(
                Status::False,
                reasons::AS_EXPECTED,
                "all workers run the current spec",
            )
        } else {
            ConditionState::new(
                Status::True,
                reasons::ROLLING_OUT,
                format!("{updated}/{desired} workers run the current spec"),
            )
        };
        (
            phase,
            Conditions {
                ready: ready_condition,
                progressing,
                degraded: degraded_by_pods(problems)
                    .or_else(|| degraded_by_rollout(&s))
                    .unwrap_or_else(ConditionState::healthy),
            },
        )
    };
    Assessment {
        phase,
        conditions,
        workload: Some(WorkloadRef {
            kind: "Deployment".into(),
            name: name.to_string(),
        }),
        replicas: Some(replicas),
        ready_replicas: Some(ready),
        last_run: None,
    }
}

/// A Deployment whose rollout passed its progress deadline, as a Degraded condition.
fn degraded_by_rollout(status: &DeploymentStatus) -> Option<ConditionState> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "Progressing"
                && c.status == Status::False.as_str()
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| {
            ConditionState::new(
                Status::True,
                reasons::ROLLOUT_STUCK,
                c.message
                    .clone()
                    .unwrap_or_else(|| "the rollout passed its progress deadline".to_string()),
            )
        })
}
