//! The status of scheduled runs (`availableNow` on a `schedule`), run by a CronJob.

use k8s_openapi::api::batch::v1::CronJobStatus;
use tributary_crds::conditions::{Status, reasons};
use tributary_crds::{Phase, StreamingIngestionSpec, WorkloadRef};

use super::job::{Outcome, outcome, run_status};
use super::pods::{PodProblem, degraded_by_pods};
use super::{Assessment, ConditionState, Conditions, ObservedJob};

/// Ready while on schedule and the last run did not fail; Progressing while a run is active;
/// Degraded by a failed last run, then by the workers' problems.
pub fn assess(
    spec: &StreamingIngestionSpec,
    name: &str,
    observed: Option<&CronJobStatus>,
    last_job: Option<&ObservedJob>,
    problems: &[PodProblem],
) -> Assessment {
    let active = observed.and_then(|s| s.active.as_ref()).map_or(0, Vec::len);
    let active = i32::try_from(active).unwrap_or(i32::MAX);
    let ready_replicas = last_job
        .and_then(|j| j.status.as_ref())
        .and_then(|s| s.ready)
        .unwrap_or(0);
    let (phase, conditions) = if spec.suspended() {
        (Phase::Suspended, Conditions::suspended())
    } else {
        (
            Phase::Running,
            scheduled_conditions(spec, active, last_job, problems),
        )
    };
    Assessment {
        phase,
        conditions,
        workload: Some(WorkloadRef {
            kind: "CronJob".into(),
            name: name.to_string(),
        }),
        replicas: Some(active),
        ready_replicas: Some(ready_replicas),
        last_run: last_job.map(run_status),
    }
}

fn scheduled_conditions(
    spec: &StreamingIngestionSpec,
    active: i32,
    last_job: Option<&ObservedJob>,
    problems: &[PodProblem],
) -> Conditions {
    let schedule = spec.schedule.clone().unwrap_or_default();
    let last = last_job.map(|j| j.name.clone()).unwrap_or_default();
    let progressing = if active > 0 {
        ConditionState::new(
            Status::True,
            reasons::RUN_IN_PROGRESS,
            format!("run {last} in progress"),
        )
    } else {
        ConditionState::new(
            Status::False,
            reasons::SCHEDULED,
            format!("next run on schedule \"{schedule}\""),
        )
    };
    match last_job.and_then(|j| outcome(j.status.as_ref())) {
        Some(Outcome::Failed(why)) => {
            let message = format!("the last run {last} failed: {why}");
            Conditions {
                ready: ConditionState::new(Status::False, reasons::RUN_FAILED, message.clone()),
                progressing,
                degraded: ConditionState::new(Status::True, reasons::RUN_FAILED, message),
            }
        }
        Some(Outcome::Succeeded) => Conditions {
            ready: ConditionState::new(
                Status::True,
                reasons::SCHEDULED,
                format!("runs on schedule \"{schedule}\"; the last run {last} succeeded"),
            ),
            progressing,
            degraded: degraded_by_pods(problems).unwrap_or_else(ConditionState::healthy),
        },
        None => Conditions {
            ready: ConditionState::new(
                Status::True,
                reasons::SCHEDULED,
                format!("runs on schedule \"{schedule}\""),
            ),
            progressing,
            degraded: degraded_by_pods(problems).unwrap_or_else(ConditionState::healthy),
        },
    }
}
