//! The operator's part of the status, as pure functions: from what was observed (the spec, the
//! workload's status, the worker pods, and whatever blocked the reconcile) to phase, conditions,
//! workload, replicas and the aggregates of the workers' own entries.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::api::batch::v1::{CronJobStatus, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use tributary_crds::conditions::{reasons, types};
use tributary_crds::{
    Phase, RunStatus, StreamingIngestion, StreamingIngestionStatus, TriggerKind, WorkloadRef,
};

use crate::resources::selector_string;

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
    pub now: Timestamp,
}

/// A worker pod that needs a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodProblem {
    CrashLooping {
        pod: String,
        message: String,
    },
    Unschedulable {
        pod: String,
        message: String,
    },
    /// Waiting on something that does not fix itself: an image that cannot be pulled, a
    /// missing Secret or ConfigMap.
    CannotStart {
        pod: String,
        message: String,
    },
}

/// Container waiting reasons that need a person rather than time.
const CANNOT_START_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Crash-looping and unschedulable worker pods.
pub fn pod_problems(pods: &[Pod]) -> Vec<PodProblem> {
    let mut problems = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(status) = &pod.status else { continue };
        for container in status.container_statuses.iter().flatten() {
            let waiting = container.state.as_ref().and_then(|s| s.waiting.as_ref());
            let waiting_reason = waiting.and_then(|w| w.reason.as_deref());
            if let Some(reason) = waiting_reason.filter(|r| CANNOT_START_REASONS.contains(r)) {
                let detail = waiting
                    .and_then(|w| w.message.as_deref())
                    .map(|m| format!(": {}", m.trim()))
                    .unwrap_or_default();
                problems.push(PodProblem::CannotStart {
                    pod: name.clone(),
                    message: format!(
                        "container {} is waiting with {reason}{detail}",
                        container.name
                    ),
                });
            }
            if waiting_reason == Some("CrashLoopBackOff") {
                let last = container
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref());
                let detail = match last {
                    Some(t) => format!(
                        "exit code {}{}",
                        t.exit_code,
                        t.message
                            .as_deref()
                            .or(t.reason.as_deref())
                            .map(|m| format!(": {}", m.trim()))
                            .unwrap_or_default()
                    ),
                    None => "back-off restarting".to_string(),
                };
                problems.push(PodProblem::CrashLooping {
                    pod: name.clone(),
                    message: format!(
                        "container {} restarted {} times, {detail}",
                        container.name, container.restart_count
                    ),
                });
            }
        }
        for condition in status.conditions.iter().flatten() {
            if condition.type_ == "PodScheduled"
                && condition.status == "False"
                && condition.reason.as_deref() == Some("Unschedulable")
            {
                problems.push(PodProblem::Unschedulable {
                    pod: name.clone(),
                    message: condition.message.clone().unwrap_or_default(),
                });
            }
        }
    }
    problems
}

/// Entries of `status.workers` whose pod no longer exists, as (index, pod name), highest index
/// first so that removing them in order keeps the other indices valid. Each worker owns its
/// entry under its own field manager, so nobody else would ever remove it.
pub fn stale_worker_entries(ingestion: &StreamingIngestion, pods: &[Pod]) -> Vec<(usize, String)> {
    let live: BTreeSet<&str> = pods
        .iter()
        .filter_map(|pod| pod.metadata.name.as_deref())
        .collect();
    let mut stale: Vec<(usize, String)> = ingestion
        .status
        .iter()
        .flat_map(|status| status.workers.iter().enumerate())
        .filter(|(_, worker)| !live.contains(worker.name.as_str()))
        .map(|(index, worker)| (index, worker.name.clone()))
        .collect();
    stale.reverse();
    stale
}

/// The JSON patch that removes those entries, each guarded by a test of its name: if a worker
/// rewrote the list in between, the API server refuses the whole patch instead of removing
/// the wrong entry.
pub fn prune_workers_patch(stale: &[(usize, String)]) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{PatchOperation, RemoveOperation, TestOperation};
    let operations = stale
        .iter()
        .flat_map(|(index, name)| {
            let entry = index.to_string();
            [
                PatchOperation::Test(TestOperation {
                    path: PointerBuf::from_tokens(["status", "workers", entry.as_str(), "name"]),
                    value: serde_json::Value::String(name.clone()),
                }),
                PatchOperation::Remove(RemoveOperation {
                    path: PointerBuf::from_tokens(["status", "workers", entry.as_str()]),
                }),
            ]
        })
        .collect();
    json_patch::Patch(operations)
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

struct Conditions {
    ready: (&'static str, &'static str, String),
    progressing: (&'static str, &'static str, String),
    degraded: (&'static str, &'static str, String),
}

const TRUE: &str = "True";
const FALSE: &str = "False";
const UNKNOWN: &str = "Unknown";

fn job_outcome(status: Option<&JobStatus>) -> Option<(bool, String)> {
    let conditions = status?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == TRUE)
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some((true, String::new())),
            "Failed" => Some((
                false,
                [c.reason.as_deref(), c.message.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": "),
            )),
            _ => None,
        })
}

fn rfc3339(time: Option<&Time>) -> Option<String> {
    time.map(|t| t.0.to_string())
}

fn run_status(job: &ObservedJob) -> RunStatus {
    let status = job.status.as_ref();
    let (result, message) = match job_outcome(status) {
        Some((true, _)) => ("Succeeded", None),
        Some((false, message)) => ("Failed", Some(message)),
        None => ("Running", None),
    };
    RunStatus {
        job_name: Some(job.name.clone()),
        start_time: rfc3339(status.and_then(|s| s.start_time.as_ref())),
        completion_time: rfc3339(status.and_then(|s| s.completion_time.as_ref())),
        result: Some(result.to_string()),
        message,
    }
}

impl PodProblem {
    /// The Degraded reason of this kind of problem (see [`POD_PROBLEM_PRIORITY`]).
    fn reason(&self) -> &'static str {
        match self {
            PodProblem::CannotStart { .. } => reasons::WORKERS_CANNOT_START,
            PodProblem::CrashLooping { .. } => reasons::CRASH_LOOPING,
            PodProblem::Unschedulable { .. } => reasons::UNSCHEDULABLE,
        }
    }

    fn describe(&self) -> String {
        match self {
            PodProblem::CannotStart { pod, message }
            | PodProblem::CrashLooping { pod, message }
            | PodProblem::Unschedulable { pod, message } => format!("{pod}: {message}"),
        }
    }
}

/// Pod problem reasons, most actionable first, with the summary a Degraded message starts with.
const POD_PROBLEM_PRIORITY: [(&str, &str); 3] = [
    (reasons::WORKERS_CANNOT_START, "workers cannot start"),
    (reasons::CRASH_LOOPING, "workers crash-looping"),
    (reasons::UNSCHEDULABLE, "workers cannot be scheduled"),
];

/// The most actionable kind of pod problem present, as a Degraded condition.
fn degraded_by_pods(problems: &[PodProblem]) -> Option<(&'static str, &'static str, String)> {
    POD_PROBLEM_PRIORITY
        .into_iter()
        .find_map(|(reason, summary)| {
            let found: Vec<String> = problems
                .iter()
                .filter(|p| p.reason() == reason)
                .map(PodProblem::describe)
                .collect();
            (!found.is_empty()).then(|| (TRUE, reason, format!("{summary}: {}", found.join("; "))))
        })
}

/// A Deployment whose rollout passed its progress deadline, as a Degraded condition.
fn degraded_by_rollout(status: &DeploymentStatus) -> Option<(&'static str, &'static str, String)> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "Progressing"
                && c.status == FALSE
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| {
            (
                TRUE,
                reasons::ROLLOUT_STUCK,
                c.message
                    .clone()
                    .unwrap_or_else(|| "the rollout passed its progress deadline".to_string()),
            )
        })
}

fn healthy() -> (&'static str, &'static str, String) {
    (FALSE, reasons::AS_EXPECTED, "no problem seen".to_string())
}

/// Computes the operator's status fields. `previous` conditions keep their
/// lastTransitionTime while their status does not change.
pub fn compute(observation: &Observation<'_>) -> StreamingIngestionStatus {
    let ingestion = observation.ingestion;
    let spec = &ingestion.spec;
    let name = ingestion.metadata.name.clone().unwrap_or_default();
    let previous = ingestion.status.clone().unwrap_or_default();
    let problems = pod_problems(observation.pods);
    let mut status = StreamingIngestionStatus {
        observed_generation: ingestion.metadata.generation,
        trigger: trigger_text(ingestion),
        label_selector: Some(selector_string(&name)),
        ..StreamingIngestionStatus::default()
    };

    let phase;
    let conditions;
    match (&observation.blocker, &observation.workload) {
        (Some(blocker), _) => {
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
                        spec.checkpoint.location
                    ),
                ),
            };
            phase = Phase::Pending;
            if matches!(blocker, Blocker::CheckpointInUse(_)) {
                // Its workload was removed: two writers must never share a checkpoint.
                status.replicas = Some(0);
                status.ready_replicas = Some(0);
            } else {
                // Nothing was touched: whatever ran before still runs.
                status.workload = previous.workload.clone();
                status.replicas = previous.replicas;
                status.ready_replicas = previous.ready_replicas;
                status.last_run = previous.last_run.clone();
            }
            conditions = Conditions {
                ready: (FALSE, reason, message.clone()),
                progressing: (FALSE, reason, message.clone()),
                degraded: (TRUE, reason, message),
            };
        }
        (None, ObservedWorkload::None) => {
            // Only a suspended run to completion has no workload.
            phase = Phase::Suspended;
            status.replicas = Some(0);
            status.ready_replicas = Some(0);
            status.last_run = previous.last_run.clone();
            conditions = suspended_conditions();
        }
        (
            None,
            ObservedWorkload::Deployment {
                name,
                generation,
                status: observed,
            },
        ) => {
            status.workload = Some(WorkloadRef {
                kind: "Deployment".into(),
                name: name.clone(),
            });
            let desired = if spec.suspended() { 0 } else { spec.replicas() };
            let s = observed.clone().unwrap_or_default();
            let replicas = s.replicas.unwrap_or(0);
            let ready = s.ready_replicas.unwrap_or(0);
            let updated = s.updated_replicas.unwrap_or(0);
            let available = s.available_replicas.unwrap_or(0);
            status.replicas = Some(replicas);
            status.ready_replicas = Some(ready);
            let seen = s.observed_generation.is_some() && s.observed_generation >= *generation;
            let rolled_out =
                seen && updated >= desired && replicas == desired && available >= desired;
            if spec.suspended() {
                phase = Phase::Suspended;
                conditions = suspended_conditions();
            } else if observed.is_none() || s.observed_generation.is_none() {
                phase = Phase::Pending;
                let message = format!("waiting for Deployment {name} to report");
                conditions = Conditions {
                    ready: (UNKNOWN, reasons::RECONCILING, message.clone()),
                    progressing: (TRUE, reasons::ROLLING_OUT, message.clone()),
                    degraded: degraded_by_pods(&problems).unwrap_or((
                        UNKNOWN,
                        reasons::RECONCILING,
                        message,
                    )),
                };
            } else {
                phase = if ready > 0 || desired == 0 {
                    Phase::Running
                } else {
                    Phase::Pending
                };
                let counts = format!("{ready}/{desired} workers ready");
                conditions = Conditions {
                    ready: if ready >= desired {
                        (TRUE, reasons::WORKERS_READY, counts)
                    } else {
                        (FALSE, reasons::WORKERS_NOT_READY, counts)
                    },
                    progressing: if rolled_out {
                        (
                            FALSE,
                            reasons::AS_EXPECTED,
                            "all workers run the current spec".to_string(),
                        )
                    } else {
                        (
                            TRUE,
                            reasons::ROLLING_OUT,
                            format!("{updated}/{desired} workers run the current spec"),
                        )
                    },
                    degraded: degraded_by_pods(&problems)
                        .or_else(|| degraded_by_rollout(&s))
                        .unwrap_or_else(healthy),
                };
            }
        }
        (None, ObservedWorkload::Job(job)) => {
            status.workload = Some(WorkloadRef {
                kind: "Job".into(),
                name: job.name.clone(),
            });
            let s = job.status.clone().unwrap_or_default();
            status.replicas = Some(s.active.unwrap_or(0));
            status.ready_replicas = Some(s.ready.unwrap_or(0));
            status.last_run = Some(run_status(job));
            match job_outcome(job.status.as_ref()) {
                Some((true, _)) => {
                    phase = Phase::Succeeded;
                    let message = format!("run {} completed", job.name);
                    conditions = Conditions {
                        ready: (TRUE, reasons::RUN_SUCCEEDED, message.clone()),
                        progressing: (FALSE, reasons::RUN_SUCCEEDED, message),
                        degraded: healthy(),
                    };
                }
                Some((false, why)) => {
                    phase = Phase::Failed;
                    let message = format!("run {} failed: {why}", job.name);
                    conditions = Conditions {
                        ready: (FALSE, reasons::RUN_FAILED, message.clone()),
                        progressing: (FALSE, reasons::RUN_FAILED, message.clone()),
                        degraded: (TRUE, reasons::RUN_FAILED, message),
                    };
                }
                None => {
                    phase = if s.active.unwrap_or(0) > 0 {
                        Phase::Running
                    } else {
                        Phase::Pending
                    };
                    let message = format!("run {} in progress", job.name);
                    conditions = Conditions {
                        ready: (FALSE, reasons::RUN_IN_PROGRESS, message.clone()),
                        progressing: (TRUE, reasons::RUN_IN_PROGRESS, message),
                        degraded: degraded_by_pods(&problems).unwrap_or_else(healthy),
                    };
                }
            }
        }
        (
            None,
            ObservedWorkload::CronJob {
                name,
                status: observed,
                last_job,
            },
        ) => {
            status.workload = Some(WorkloadRef {
                kind: "CronJob".into(),
                name: name.clone(),
            });
            let active = observed
                .as_ref()
                .and_then(|s| s.active.as_ref())
                .map_or(0, Vec::len);
            let active = i32::try_from(active).unwrap_or(i32::MAX);
            status.replicas = Some(active);
            status.ready_replicas = Some(
                last_job
                    .as_ref()
                    .and_then(|j| j.status.as_ref())
                    .and_then(|s| s.ready)
                    .unwrap_or(0),
            );
            status.last_run = last_job.as_ref().map(run_status);
            let schedule = spec.schedule.clone().unwrap_or_default();
            if spec.suspended() {
                phase = Phase::Suspended;
                conditions = suspended_conditions();
            } else {
                phase = Phase::Running;
                let outcome = last_job
                    .as_ref()
                    .and_then(|j| job_outcome(j.status.as_ref()));
                let last = last_job
                    .as_ref()
                    .map(|j| j.name.clone())
                    .unwrap_or_default();
                let progressing = if active > 0 {
                    (
                        TRUE,
                        reasons::RUN_IN_PROGRESS,
                        format!("run {last} in progress"),
                    )
                } else {
                    (
                        FALSE,
                        reasons::SCHEDULED,
                        format!("next run on schedule \"{schedule}\""),
                    )
                };
                conditions = match outcome {
                    Some((false, why)) => {
                        let message = format!("the last run {last} failed: {why}");
                        Conditions {
                            ready: (FALSE, reasons::RUN_FAILED, message.clone()),
                            progressing,
                            degraded: (TRUE, reasons::RUN_FAILED, message),
                        }
                    }
                    Some((true, _)) => Conditions {
                        ready: (
                            TRUE,
                            reasons::SCHEDULED,
                            format!(
                                "runs on schedule \"{schedule}\"; the last run {last} succeeded"
                            ),
                        ),
                        progressing,
                        degraded: degraded_by_pods(&problems).unwrap_or_else(healthy),
                    },
                    None => Conditions {
                        ready: (
                            TRUE,
                            reasons::SCHEDULED,
                            format!("runs on schedule \"{schedule}\""),
                        ),
                        progressing,
                        degraded: degraded_by_pods(&problems).unwrap_or_else(healthy),
                    },
                };
            }
        }
    }

    status.phase = Some(phase);
    let generation = ingestion.metadata.generation;
    let now = Time(Timestamp::from_second(observation.now.as_second()).unwrap_or(observation.now));
    status.conditions = [
        (types::READY, conditions.ready),
        (types::PROGRESSING, conditions.progressing),
        (types::DEGRADED, conditions.degraded),
    ]
    .into_iter()
    .map(|(type_, (cond_status, reason, message))| {
        let kept = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == cond_status)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_string(),
            status: cond_status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: kept.unwrap_or_else(|| now.clone()),
        }
    })
    .collect();

    // The workers' entries, summed over pods that exist now: a rolled or deleted pod's entry
    // stays in the status (the worker owns it) but must not count twice.
    if observation.blocker.is_none() {
        let live: BTreeSet<&str> = observation
            .pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let entries: Vec<_> = previous
            .workers
            .iter()
            .filter(|w| live.contains(w.name.as_str()))
            .collect();
        let lags: Vec<i64> = entries.iter().filter_map(|w| w.lag).collect();
        if !lags.is_empty() {
            status.lag = Some(lags.iter().sum());
        }
        let rates: Vec<f64> = entries
            .iter()
            .filter_map(|w| w.processed_rows_per_second)
            .collect();
        if !rates.is_empty() {
            status.processed_rows_per_second = Some(rates.iter().sum());
        }
    }
    status
}

fn suspended_conditions() -> Conditions {
    let message = "suspended: no workers run (spec.suspend)".to_string();
    Conditions {
        ready: (FALSE, reasons::SUSPENDED, message.clone()),
        progressing: (FALSE, reasons::SUSPENDED, message),
        degraded: healthy(),
    }
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
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentCondition;
    use k8s_openapi::api::batch::v1::JobCondition;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::SignedDuration;
    use tributary_crds::WorkerStatus;

    use crate::resources::test_support::ingestion;

    fn now() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().expect("timestamp")
    }

    fn compute_with(
        si: &StreamingIngestion,
        blocker: Option<Blocker>,
        workload: ObservedWorkload,
        pods: &[Pod],
    ) -> StreamingIngestionStatus {
        compute(&Observation {
            ingestion: si,
            blocker,
            workload,
            pods,
            now: now(),
        })
    }

    fn condition<'a>(status: &'a StreamingIngestionStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("condition {type_} missing"))
    }

    fn assert_condition(
        status: &StreamingIngestionStatus,
        type_: &str,
        expected: &str,
        reason: &str,
    ) {
        let c = condition(status, type_);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (expected, reason),
            "{type_}: {}",
            c.message
        );
        assert_eq!(c.observed_generation, Some(3));
    }

    fn deployment(replicas: i32, ready: i32, updated: i32) -> ObservedWorkload {
        ObservedWorkload::Deployment {
            name: "sensors".into(),
            generation: Some(2),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(replicas),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                available_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
        }
    }

    fn pod(name: &str, status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(status),
        }
    }

    fn job(conditions: Vec<(&str, &str)>, active: i32) -> ObservedJob {
        ObservedJob {
            name: "sensors-3-abcdef12".into(),
            status: Some(JobStatus {
                active: Some(active),
                start_time: Some(Time("2026-03-01T11:00:00Z".parse().expect("time"))),
                completion_time: conditions
                    .iter()
                    .any(|(t, _)| *t == "Complete")
                    .then(|| Time("2026-03-01T11:30:00Z".parse().expect("time"))),
                conditions: Some(
                    conditions
                        .into_iter()
                        .map(|(type_, reason)| JobCondition {
                            type_: type_.into(),
                            status: "True".into(),
                            reason: Some(reason.into()),
                            message: Some("Job has reached the specified backoff limit".into()),
                            ..JobCondition::default()
                        })
                        .collect(),
                ),
                ..JobStatus::default()
            }),
        }
    }

    #[test]
    fn first_visit_sets_every_condition_with_unknown_readiness() {
        let si = ingestion("");
        let status = compute_with(
            &si,
            None,
            ObservedWorkload::Deployment {
                name: "sensors".into(),
                generation: Some(1),
                status: None,
            },
            &[],
        );
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.trigger.as_deref(), Some("default"));
        assert_eq!(
            status.workload,
            Some(WorkloadRef {
                kind: "Deployment".into(),
                name: "sensors".into()
            })
        );
        assert_eq!(
            status.label_selector.as_deref(),
            Some("app.kubernetes.io/name=tributary-worker,tributary.dev/ingestion=sensors")
        );
        assert_condition(&status, types::READY, "Unknown", reasons::RECONCILING);
        assert_condition(&status, types::PROGRESSING, "True", reasons::ROLLING_OUT);
        assert_condition(&status, types::DEGRADED, "Unknown", reasons::RECONCILING);
        assert_eq!(
            condition(&status, types::READY).last_transition_time,
            Time(now())
        );
    }

    #[test]
    fn ready_deployment_is_running() {
        let si = ingestion("  replicas: 2\n");
        let status = compute_with(&si, None, deployment(2, 2, 2), &[]);
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(2)));
        assert_condition(&status, types::READY, "True", reasons::WORKERS_READY);
        assert_eq!(
            condition(&status, types::READY).message,
            "2/2 workers ready"
        );
        assert_condition(&status, types::PROGRESSING, "False", reasons::AS_EXPECTED);
        assert_condition(&status, types::DEGRADED, "False", reasons::AS_EXPECTED);
    }

    #[test]
    fn rolling_deployment_is_progressing_and_not_ready() {
        let si = ingestion("  replicas: 2\n");
        let status = compute_with(&si, None, deployment(2, 1, 1), &[]);
        assert_eq!(status.phase, Some(Phase::Running));
        assert_condition(&status, types::READY, "False", reasons::WORKERS_NOT_READY);
        assert_condition(&status, types::PROGRESSING, "True", reasons::ROLLING_OUT);
        let none_ready = compute_with(&si, None, deployment(2, 0, 2), &[]);
        assert_eq!(none_ready.phase, Some(Phase::Pending));
    }

    #[test]
    fn workers_that_cannot_start_degrade_before_crash_loops() {
        let si = ingestion("");
        let waiting = |reason: &str, message: &str| {
            pod(
                "sensors-xyz",
                PodStatus {
                    container_statuses: Some(vec![ContainerStatus {
                        name: "worker".into(),
                        state: Some(ContainerState {
                            waiting: Some(ContainerStateWaiting {
                                reason: Some(reason.into()),
                                message: Some(message.into()),
                            }),
                            ..ContainerState::default()
                        }),
                        ..ContainerStatus::default()
                    }]),
                    ..PodStatus::default()
                },
            )
        };
        for reason in ["ImagePullBackOff", "CreateContainerConfigError"] {
            let status = compute_with(
                &si,
                None,
                deployment(1, 0, 1),
                &[waiting(reason, "details from the kubelet")],
            );
            assert_condition(
                &status,
                types::DEGRADED,
                "True",
                reasons::WORKERS_CANNOT_START,
            );
            let message = &condition(&status, types::DEGRADED).message;
            assert!(
                message.contains(&format!(
                    "sensors-xyz: container worker is waiting with {reason}: details from the kubelet"
                )),
                "{message}"
            );
        }
        // Waiting for an image that is still being pulled is not a problem.
        let pulling = compute_with(
            &si,
            None,
            deployment(1, 0, 1),
            &[waiting("ContainerCreating", "")],
        );
        assert_condition(&pulling, types::DEGRADED, "False", reasons::AS_EXPECTED);
    }

    #[test]
    fn a_stuck_rollout_degrades() {
        let si = ingestion("");
        let mut stuck = deployment(1, 0, 1);
        if let ObservedWorkload::Deployment {
            status: Some(status),
            ..
        } = &mut stuck
        {
            status.conditions = Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet \"sensors-7d9\" has timed out progressing.".into()),
                ..DeploymentCondition::default()
            }]);
        }
        let status = compute_with(&si, None, stuck, &[]);
        assert_condition(&status, types::DEGRADED, "True", reasons::ROLLOUT_STUCK);
        assert!(
            condition(&status, types::DEGRADED)
                .message
                .contains("has timed out progressing")
        );
    }

    #[test]
    fn crash_looping_workers_degrade_with_the_exit_reason() {
        let si = ingestion("");
        let crashing = pod(
            "sensors-abc",
            PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "worker".into(),
                    restart_count: 5,
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("CrashLoopBackOff".into()),
                            ..ContainerStateWaiting::default()
                        }),
                        ..ContainerState::default()
                    }),
                    last_state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 2,
                            message: Some("broker unreachable\n".into()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            },
        );
        let status = compute_with(&si, None, deployment(1, 0, 1), &[crashing]);
        assert_condition(&status, types::DEGRADED, "True", reasons::CRASH_LOOPING);
        let message = &condition(&status, types::DEGRADED).message;
        assert!(message.contains("sensors-abc"), "{message}");
        assert!(
            message.contains("exit code 2: broker unreachable"),
            "{message}"
        );
        assert!(message.contains("restarted 5 times"), "{message}");
    }

    #[test]
    fn unschedulable_workers_degrade_with_the_scheduler_message() {
        let si = ingestion("");
        let pending = pod(
            "sensors-xyz",
            PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/3 nodes are available: 3 Insufficient memory.".into()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            },
        );
        let status = compute_with(&si, None, deployment(1, 0, 1), &[pending]);
        assert_condition(&status, types::DEGRADED, "True", reasons::UNSCHEDULABLE);
        assert!(
            condition(&status, types::DEGRADED)
                .message
                .contains("Insufficient memory")
        );
    }

    #[test]
    fn invalid_spec_degrades_with_the_validation_messages_and_keeps_the_workload() {
        let mut si = ingestion("");
        si.status = Some(StreamingIngestionStatus {
            workload: Some(WorkloadRef {
                kind: "Deployment".into(),
                name: "sensors".into(),
            }),
            replicas: Some(1),
            ..StreamingIngestionStatus::default()
        });
        let messages = "spec.trigger: may set only one of processingTime, availableNow or once";
        let status = compute_with(
            &si,
            Some(Blocker::InvalidSpec(messages.into())),
            ObservedWorkload::None,
            &[],
        );
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_condition(&status, types::READY, "False", reasons::INVALID_SPEC);
        assert_condition(&status, types::DEGRADED, "True", reasons::INVALID_SPEC);
        assert_condition(&status, types::PROGRESSING, "False", reasons::INVALID_SPEC);
        assert!(
            condition(&status, types::DEGRADED)
                .message
                .contains(messages)
        );
        assert_eq!(
            status.workload.map(|w| w.name).as_deref(),
            Some("sensors"),
            "nothing was touched"
        );
        assert_eq!(status.lag, None);
    }

    #[test]
    fn missing_secret_is_named() {
        let si = ingestion("");
        let status = compute_with(
            &si,
            Some(Blocker::SecretsMissing(vec!["kafka-creds".into()])),
            ObservedWorkload::None,
            &[],
        );
        assert_condition(&status, types::READY, "False", reasons::SECRET_NOT_FOUND);
        assert_condition(&status, types::DEGRADED, "True", reasons::SECRET_NOT_FOUND);
        assert_eq!(
            condition(&status, types::READY).message,
            "Secret kafka-creds not found in namespace iot"
        );
    }

    #[test]
    fn checkpoint_in_use_names_the_other_ingestion_and_has_no_workload() {
        let si = ingestion("");
        let status = compute_with(
            &si,
            Some(Blocker::CheckpointInUse("older".into())),
            ObservedWorkload::None,
            &[],
        );
        assert_condition(&status, types::READY, "False", reasons::CHECKPOINT_IN_USE);
        let message = &condition(&status, types::READY).message;
        assert!(message.contains("StreamingIngestion older"), "{message}");
        assert!(message.contains("/checkpoints/sensors"), "{message}");
        assert_eq!(status.workload, None);
        assert_eq!(status.replicas, Some(0));
    }

    #[test]
    fn suspended_ingestions_are_suspended_whatever_the_workload() {
        let continuous = ingestion("  suspend: true\n");
        let status = compute_with(&continuous, None, deployment(0, 0, 0), &[]);
        assert_eq!(status.phase, Some(Phase::Suspended));
        assert_condition(&status, types::READY, "False", reasons::SUSPENDED);
        assert_condition(&status, types::DEGRADED, "False", reasons::AS_EXPECTED);
        let run = ingestion("  suspend: true\n  trigger: {availableNow: true}\n");
        let status = compute_with(&run, None, ObservedWorkload::None, &[]);
        assert_eq!(status.phase, Some(Phase::Suspended));
        assert_eq!(status.workload, None);
        assert_eq!(status.trigger.as_deref(), Some("availableNow"));
    }

    #[test]
    fn finished_job_succeeds_with_last_run() {
        let si = ingestion("  trigger: {availableNow: true}\n");
        let status = compute_with(
            &si,
            None,
            ObservedWorkload::Job(job(vec![("Complete", "CompletionsReached")], 0)),
            &[],
        );
        assert_eq!(status.phase, Some(Phase::Succeeded));
        assert_condition(&status, types::READY, "True", reasons::RUN_SUCCEEDED);
        assert_condition(&status, types::PROGRESSING, "False", reasons::RUN_SUCCEEDED);
        assert_condition(&status, types::DEGRADED, "False", reasons::AS_EXPECTED);
        let run = status.last_run.expect("lastRun");
        assert_eq!(run.job_name.as_deref(), Some("sensors-3-abcdef12"));
        assert_eq!(run.result.as_deref(), Some("Succeeded"));
        assert_eq!(run.start_time.as_deref(), Some("2026-03-01T11:00:00Z"));
        assert_eq!(run.completion_time.as_deref(), Some("2026-03-01T11:30:00Z"));
        assert_eq!(status.workload.map(|w| w.kind).as_deref(), Some("Job"));
    }

    #[test]
    fn failed_job_fails_with_the_reason() {
        let si = ingestion("  trigger: {once: true}\n");
        let status = compute_with(
            &si,
            None,
            ObservedWorkload::Job(job(vec![("Failed", "BackoffLimitExceeded")], 0)),
            &[],
        );
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.trigger.as_deref(), Some("once"));
        assert_condition(&status, types::READY, "False", reasons::RUN_FAILED);
        assert_condition(&status, types::DEGRADED, "True", reasons::RUN_FAILED);
        assert!(
            condition(&status, types::DEGRADED)
                .message
                .contains("BackoffLimitExceeded")
        );
        let run = status.last_run.expect("lastRun");
        assert_eq!(run.result.as_deref(), Some("Failed"));
        assert!(run.message.expect("message").contains("backoff limit"));
    }

    #[test]
    fn running_job_is_running_and_progressing() {
        let si = ingestion("  trigger: {availableNow: true}\n");
        let status = compute_with(&si, None, ObservedWorkload::Job(job(vec![], 1)), &[]);
        assert_eq!(status.phase, Some(Phase::Running));
        assert_condition(&status, types::READY, "False", reasons::RUN_IN_PROGRESS);
        assert_condition(
            &status,
            types::PROGRESSING,
            "True",
            reasons::RUN_IN_PROGRESS,
        );
        assert_eq!(
            status.last_run.and_then(|r| r.result).as_deref(),
            Some("Running")
        );
        assert_eq!(status.replicas, Some(1));
    }

    #[test]
    fn cron_job_is_scheduled_and_a_failed_run_degrades_it() {
        let si = ingestion("  trigger: {availableNow: true}\n  schedule: \"*/15 * * * *\"\n");
        let waiting = compute_with(
            &si,
            None,
            ObservedWorkload::CronJob {
                name: "sensors".into(),
                status: None,
                last_job: None,
            },
            &[],
        );
        assert_eq!(waiting.phase, Some(Phase::Running));
        assert_eq!(
            waiting.trigger.as_deref(),
            Some("availableNow@*/15 * * * *")
        );
        assert_condition(&waiting, types::READY, "True", reasons::SCHEDULED);
        assert_condition(&waiting, types::PROGRESSING, "False", reasons::SCHEDULED);
        let failed = compute_with(
            &si,
            None,
            ObservedWorkload::CronJob {
                name: "sensors".into(),
                status: Some(CronJobStatus::default()),
                last_job: Some(job(vec![("Failed", "BackoffLimitExceeded")], 0)),
            },
            &[],
        );
        assert_condition(&failed, types::READY, "False", reasons::RUN_FAILED);
        assert_condition(&failed, types::DEGRADED, "True", reasons::RUN_FAILED);
        assert_eq!(
            failed.last_run.and_then(|r| r.result).as_deref(),
            Some("Failed")
        );
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds_and_writes_stop() {
        let mut si = ingestion("");
        let first = compute_with(&si, None, deployment(1, 1, 1), &[]);
        si.status = Some(first.clone());
        let later = compute(&Observation {
            ingestion: &si,
            blocker: None,
            workload: deployment(1, 1, 1),
            pods: &[],
            now: now() + SignedDuration::from_secs(600),
        });
        assert_eq!(later, first, "same observation, same status");
        assert!(!needs_write(&si, &later), "no write, no hot loop");
        let broken = compute(&Observation {
            ingestion: &si,
            blocker: None,
            workload: deployment(1, 0, 1),
            pods: &[],
            now: now() + SignedDuration::from_secs(600),
        });
        assert!(needs_write(&si, &broken));
        let ready = condition(&broken, types::READY);
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.last_transition_time,
            Time(now() + SignedDuration::from_secs(600))
        );
        assert_eq!(
            condition(&broken, types::DEGRADED).last_transition_time,
            Time(now()),
            "Degraded stayed False"
        );
    }

    #[test]
    fn entries_of_gone_pods_are_pruned_highest_index_first() {
        let mut si = ingestion("");
        si.status = Some(StreamingIngestionStatus {
            workers: ["gone-a", "live", "gone-b"]
                .into_iter()
                .map(|name| WorkerStatus {
                    name: name.into(),
                    ..WorkerStatus::default()
                })
                .collect(),
            ..StreamingIngestionStatus::default()
        });
        let live = pod("live", PodStatus::default());
        let stale = stale_worker_entries(&si, &[live]);
        assert_eq!(
            stale,
            vec![(2, "gone-b".to_string()), (0, "gone-a".to_string())]
        );
        assert_eq!(
            serde_json::to_value(prune_workers_patch(&stale)).expect("serialises"),
            serde_json::json!([
                {"op": "test", "path": "/status/workers/2/name", "value": "gone-b"},
                {"op": "remove", "path": "/status/workers/2"},
                {"op": "test", "path": "/status/workers/0/name", "value": "gone-a"},
                {"op": "remove", "path": "/status/workers/0"},
            ])
        );
        assert!(stale_worker_entries(&ingestion(""), &[]).is_empty());
    }

    #[test]
    fn worker_entries_of_live_pods_are_summed() {
        let mut si = ingestion("  trigger: {processingTime: 10s}\n");
        let entry = |name: &str, lag, rate| WorkerStatus {
            name: name.into(),
            lag: Some(lag),
            processed_rows_per_second: Some(rate),
            ..WorkerStatus::default()
        };
        si.status = Some(StreamingIngestionStatus {
            workers: vec![
                entry("w-1", 10, 100.0),
                entry("w-2", 5, 50.5),
                entry("gone", 1000, 1.0),
            ],
            ..StreamingIngestionStatus::default()
        });
        let pods = [
            pod("w-1", PodStatus::default()),
            pod("w-2", PodStatus::default()),
        ];
        let status = compute_with(&si, None, deployment(2, 2, 2), &pods);
        assert_eq!(status.lag, Some(15));
        assert_eq!(status.processed_rows_per_second, Some(150.5));
        assert_eq!(status.trigger.as_deref(), Some("processingTime=10s"));
        assert!(
            status.workers.is_empty(),
            "the workers' entries are theirs, never applied by the operator"
        );
        let no_pods = compute_with(&si, None, deployment(0, 0, 0), &[]);
        assert_eq!(no_pods.lag, None);
    }
}
