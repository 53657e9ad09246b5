//! The operator's part of the status, as pure functions: from what was observed (the spec, the
//! workload's status, the worker pods, and whatever blocked the reconcile) to phase, conditions,
//! workload, replicas and the aggregates of the workers' own entries.
//!
//! [`compute`] hands the observation to the assessor of its situation ([`blocked`], or the
//! workload kind: [`deployment`], [`job`], [`cron_job`]), each of which returns an
//! [`Assessment`] with typed [`Conditions`]; the shared part (timestamps, observed generation,
//! the workers' aggregates) is done once, here.

pub mod blocked;
pub mod cron_job;
pub mod deployment;
pub mod job;
pub mod pods;
pub mod reset;
pub mod workers;

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::batch::v1::{CronJobStatus, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use tributary_crds::conditions::{Status, reasons, types};
use tributary_crds::{
    Phase, RunStatus, StreamingIngestion, StreamingIngestionStatus, TriggerKind, WorkloadRef,
};

use crate::resources::selector_string;
use crate::scaling::Scale;

pub use pods::{PodProblem, catalog_problems, pod_problems};
pub use workers::{prune_workers_patch, stale_worker_entries};

/// Why the reconcile stopped before applying anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// The validation messages, joined.
    InvalidSpec(String),
    /// Names of referenced Secrets that do not exist.
    SecretsMissing(Vec<String>),
    /// The older ingestion that owns the checkpoint location.
    CheckpointInUse(String),
}

/// A Job as observed.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ObservedJob {
    pub name: String,
    pub status: Option<JobStatus>,
}

/// The workload as observed after applying it.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum ObservedWorkload {
    /// No workload (blocked, or a suspended run to completion).
    #[default]
    None,
    Deployment {
        name: String,
        /// The Deployment's `metadata.generation`, to tell a finished rollout from a new one.
        generation: Option<i64>,
        status: Option<DeploymentStatus>,
    },
    Job(ObservedJob),
    CronJob {
        name: String,
        status: Option<CronJobStatus>,
        /// The newest Job the CronJob started.
        last_job: Option<ObservedJob>,
    },
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub ingestion: &'a StreamingIngestion,
    pub blocker: Option<Blocker>,
    pub workload: ObservedWorkload,
    /// The worker pods (selected by the ingestion's selector labels).
    pub pods: &'a [Pod],
    /// What autoscaling and the restart limit decided.
    pub scale: Scale,
    pub now: Timestamp,
}

/// One condition as decided, before it gets its timestamps and generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    pub status: Status,
    /// One of [`reasons`].
    pub reason: &'static str,
    pub message: String,
}

impl ConditionState {
    pub fn new(status: Status, reason: &'static str, message: impl Into<String>) -> Self {
        ConditionState {
            status,
            reason,
            message: message.into(),
        }
    }

    /// Degraded=False: nothing needs a person.
    pub fn healthy() -> Self {
        ConditionState::new(Status::False, reasons::AS_EXPECTED, "no problem seen")
    }
}

/// The three conditions every ingestion carries from the first visit on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conditions {
    pub ready: ConditionState,
    pub progressing: ConditionState,
    pub degraded: ConditionState,
}

impl Conditions {
    /// Nothing runs because the spec says so.
    pub fn suspended() -> Self {
        let message = "suspended: no workers run (spec.suspend)";
        Conditions {
            ready: ConditionState::new(Status::False, reasons::SUSPENDED, message),
            progressing: ConditionState::new(Status::False, reasons::SUSPENDED, message),
            degraded: ConditionState::healthy(),
        }
    }

    /// The workers crashed too often and are stopped until the spec changes.
    pub fn restart_limit_reached(message: &str) -> Self {
        Conditions {
            ready: ConditionState::new(Status::False, reasons::RESTART_LIMIT_REACHED, message),
            progressing: ConditionState::new(
                Status::False,
                reasons::RESTART_LIMIT_REACHED,
                "no workers run until the spec changes",
            ),
            degraded: ConditionState::new(Status::True, reasons::RESTART_LIMIT_REACHED, message),
        }
    }

    /// As Kubernetes conditions. A condition keeps its `lastTransitionTime` from `previous`
    /// while its status does not change, so an unchanged observation makes an unchanged status.
    pub fn to_kubernetes(
        &self,
        previous: &[Condition],
        generation: Option<i64>,
        now: &Time,
    ) -> Vec<Condition> {
        [
            (types::READY, &self.ready),
            (types::PROGRESSING, &self.progressing),
            (types::DEGRADED, &self.degraded),
        ]
        .into_iter()
        .map(|(type_, state)| {
            let status = state.status.as_str();
            let kept = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone());
            Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: state.reason.to_string(),
                message: state.message.clone(),
                observed_generation: generation,
                last_transition_time: kept.unwrap_or_else(|| now.clone()),
            }
        })
        .collect()
    }
}

/// What the situation (a blocker, or the workload of one kind) says about the ingestion.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub phase: Phase,
    pub conditions: Conditions,
    pub workload: Option<WorkloadRef>,
    pub replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub last_run: Option<RunStatus>,
}

/// The trigger in words, for `kubectl get`.
pub fn trigger_text(ingestion: &StreamingIngestion) -> Option<String> {
    let spec = &ingestion.spec;
    Some(match spec.trigger_kind().ok()? {
        TriggerKind::Default => "default".to_string(),
        TriggerKind::ProcessingTime(_) => format!(
            "processingTime={}",
            spec.trigger
                .as_ref()
                .and_then(|t| t.processing_time.as_deref())
                .unwrap_or_default()
                .trim()
        ),
        TriggerKind::AvailableNow => match &spec.schedule {
            Some(schedule) => format!("availableNow@{schedule}"),
            None => "availableNow".to_string(),
        },
        TriggerKind::Once => "once".to_string(),
    })
}

/// The status fields the operator owns, nothing else: what it applies (under its own field
/// manager) and what it compares to decide whether a write is needed.
pub fn operator_fields(status: &StreamingIngestionStatus) -> StreamingIngestionStatus {
    StreamingIngestionStatus {
        query_id: None,
        last_progress: None,
        workers: Vec::new(),
        ..status.clone()
    }
}

/// Computes the operator's status fields.
pub fn compute(observation: &Observation<'_>) -> StreamingIngestionStatus {
    let ingestion = observation.ingestion;
    let name = ingestion.metadata.name.clone().unwrap_or_default();
    let previous = ingestion.status.clone().unwrap_or_default();
    let mut problems = pod_problems(observation.pods);
    problems.extend(catalog_problems(&previous.workers, observation.pods));
    let interval = match ingestion.spec.trigger_kind() {
        Ok(TriggerKind::ProcessingTime(interval)) => Some(interval),
        _ => None,
    };
    problems.extend(pods::stalled_problems(
        &previous.workers,
        observation.pods,
        pods::stall_bound(interval),
        observation.now,
    ));

    let mut assessment = match (&observation.blocker, &observation.workload) {
        (Some(blocker), _) => blocked::assess(ingestion, &previous, blocker),
        // Only a suspended run to completion has no workload.
        (None, ObservedWorkload::None) => blocked::suspended_run(&previous),
        (
            None,
            ObservedWorkload::Deployment {
                name,
                generation,
                status,
            },
        ) => deployment::assess(
            &ingestion.spec,
            name,
            *generation,
            status.as_ref(),
            &problems,
        ),
        (None, ObservedWorkload::Job(observed)) => job::assess(observed, &problems),
        (
            None,
            ObservedWorkload::CronJob {
                name,
                status,
                last_job,
            },
        ) => cron_job::assess(
            &ingestion.spec,
            name,
            status.as_ref(),
            last_job.as_ref(),
            &problems,
        ),
    };

    if observation.blocker.is_none()
        && let Some(message) = &observation.scale.restart_limit
    {
        assessment.phase = Phase::Failed;
        assessment.conditions = Conditions::restart_limit_reached(message);
    }

    let now = Time(Timestamp::from_second(observation.now.as_second()).unwrap_or(observation.now));
    let mut status = StreamingIngestionStatus {
        phase: Some(assessment.phase),
        conditions: assessment.conditions.to_kubernetes(
            &previous.conditions,
            ingestion.metadata.generation,
            &now,
        ),
        observed_generation: ingestion.metadata.generation,
        trigger: trigger_text(ingestion),
        workload: assessment.workload,
        replicas: assessment.replicas,
        ready_replicas: assessment.ready_replicas,
        label_selector: Some(selector_string(&name)),
        last_run: assessment.last_run,
        ..StreamingIngestionStatus::default()
    };
    if observation.blocker.is_none() {
        status.autoscaling = observation.scale.autoscaling.clone();
    }
    // A blocked spec starts no worker: its reset is not requested yet.
    status.reset = match observation.blocker {
        None => reset::follow(
            ingestion.spec.reset.as_ref(),
            previous.reset.as_ref(),
            &previous.workers,
            &now.0.to_string(),
        ),
        Some(_) => previous.reset.clone(),
    };
    if observation.blocker.is_none() {
        let totals = workers::totals(&previous.workers, observation.pods);
        status.lag = totals.lag;
        status.processed_rows_per_second = totals.processed_rows_per_second;
    }
    status
}

/// Whether the status needs a write: only when the operator's fields changed (no hot loop).
pub fn needs_write(ingestion: &StreamingIngestion, computed: &StreamingIngestionStatus) -> bool {
    let current = ingestion
        .status
        .as_ref()
        .map(operator_fields)
        .unwrap_or_default();
    current != *computed
}

#[cfg(test)]
mod tests;
