//! The status of a run to completion (`availableNow` or `once`), run by a Job.

use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tributary_crds::conditions::{Status, reasons};
use tributary_crds::{Phase, RunStatus, WorkloadRef};

use super::pods::{PodProblem, degraded_by_pods};
use super::{Assessment, ConditionState, Conditions, ObservedJob};

/// How a Job ended, as its conditions say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The Job's reason and message, joined.
    Failed(String),
}

/// The Job's outcome; `None` while it runs.
pub fn outcome(status: Option<&JobStatus>) -> Option<Outcome> {
    let conditions = status?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == Status::True.as_str())
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(Outcome::Succeeded),
            "Failed" => Some(Outcome::Failed(
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

/// `status.lastRun` for a Job.
pub fn run_status(job: &ObservedJob) -> RunStatus {
    let status = job.status.as_ref();
    let (result, message) = match outcome(status) {
        Some(Outcome::Succeeded) => ("Succeeded", None),
        Some(Outcome::Failed(message)) => ("Failed", Some(message)),
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

/// Ready once the run succeeded; Progressing while it runs; Degraded when it failed or its
/// workers cannot run.
pub fn assess(job: &ObservedJob, problems: &[PodProblem]) -> Assessment {
    let s = job.status.clone().unwrap_or_default();
    let (phase, conditions) = match outcome(job.status.as_ref()) {
        Some(Outcome::Succeeded) => {
            let message = format!("run {} completed", job.name);
            (
                Phase::Succeeded,
                Conditions {
                    ready: ConditionState::new(
                        Status::True,
                        reasons::RUN_SUCCEEDED,
                        message.clone(),
                    ),
                    progressing: ConditionState::new(
                        Status::False,
                        reasons::RUN_SUCCEEDED,
                        message,
                    ),
                    degraded: ConditionState::healthy(),
                },
            )
        }
        Some(Outcome::Failed(why)) => {
            let message = format!("run {} failed: {why}", job.name);
            (
                Phase::Failed,
                Conditions {
                    ready: ConditionState::new(Status::False, reasons::RUN_FAILED, message.clone()),
                    progressing: ConditionState::new(
                        Status::False,
                        reasons::RUN_FAILED,
                        message.clone(),
                    ),
                    degraded: ConditionState::new(Status::True, reasons::RUN_FAILED, message),
                },
            )
        }
        None => {
            let phase = if s.active.unwrap_or(0) > 0 {
                Phase::Running
            } else {
                Phase::Pending
            };
            let message = format!("run {} in progress", job.name);
            (
                phase,
                Conditions {
                    ready: ConditionState::new(
                        Status::False,
                        reasons::RUN_IN_PROGRESS,
                        message.clone(),
                    ),
                    progressing: ConditionState::new(
                        Status::True,
                        reasons::RUN_IN_PROGRESS,
                        message,
                    ),
                    degraded: degraded_by_pods(problems).unwrap_or_else(ConditionState::healthy),
                },
            )
        }
    };
    Assessment {
        phase,
        conditions,
        workload: Some(WorkloadRef {
            kind: "Job".into(),
            name: job.name.clone(),
        }),
        replicas: Some(s.active.unwrap_or(0)),
        ready_replicas: Some(s.ready.unwrap_or(0)),
        last_run: Some(run_status(job)),
    }
}
