//! What the worker pods say that needs a person: containers that cannot start, crash loops,
//! pods the scheduler cannot place, workers that stalled, and workers a Unity Catalog refuses.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tributary_crds::WorkerStatus;
use tributary_crds::conditions::{Status, reasons};

use super::ConditionState;

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
    /// The worker has records waiting and committed no batch for longer than [`stall_bound`].
    Stalled {
        pod: String,
        message: String,
    },
    /// The worker stopped because the Unity Catalog refused it (its own report, with the
    /// catalog's message; one of [`reasons::CATALOG`]).
    CatalogRefused {
        pod: String,
        reason: &'static str,
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

/// Crash-looping, unstartable and unschedulable worker pods.
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
                let detail =
                    last_exit(container).unwrap_or_else(|| "back-off restarting".to_string());
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
                && condition.status == Status::False.as_str()
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

/// How a container last ended, as "exit code N: its message (or reason)".
pub fn last_exit(container: &ContainerStatus) -> Option<String> {
    let terminated = container.last_state.as_ref()?.terminated.as_ref()?;
    let detail = terminated
        .message
        .as_deref()
        .or(terminated.reason.as_deref())
        .map(|m| format!(": {}", m.trim()))
        .unwrap_or_default();
    Some(format!("exit code {}{detail}", terminated.exit_code))
}

/// Workers of live pods that stopped because the Unity Catalog refused them, from their own
/// `status.workers` entries. The worker reports the catalog's message with secret values
/// redacted, so the condition can quote it; its crash loop is the symptom, this the cause.
pub fn catalog_problems(entries: &[WorkerStatus], pods: &[Pod]) -> Vec<PodProblem> {
    super::workers::live_entries(entries, pods)
        .filter_map(|entry| {
            let reason = reasons::CATALOG
                .into_iter()
                .find(|r| entry.error_reason.as_deref() == Some(*r))?;
            Some(PodProblem::CatalogRefused {
                pod: entry.name.clone(),
                reason,
                message: entry.error.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// How long a worker with records waiting may go without committing a batch before it counts as
/// stalled. Its own liveness probe restarts it after ten minutes; the condition says so before.
pub const STALL_AFTER: SignedDuration = SignedDuration::from_secs(5 * 60);

/// The stall bound of a trigger: [`STALL_AFTER`], or three intervals of a slower processingTime.
pub fn stall_bound(interval: Option<std::time::Duration>) -> SignedDuration {
    let intervals = interval
        .and_then(|i| SignedDuration::try_from(i.saturating_mul(3)).ok())
        .unwrap_or(SignedDuration::ZERO);
    STALL_AFTER.max(intervals)
}

/// Live workers whose own entries say records wait (lag above 0) while their last batch is
/// older than `bound`. A worker reports its lag after every batch and at once after a
/// rebalance, so an entry's lag is its partitions' lag, not partitions it gave away.
pub fn stalled_problems(
    entries: &[WorkerStatus],
    pods: &[Pod],
    bound: SignedDuration,
    now: Timestamp,
) -> Vec<PodProblem> {
    super::workers::live_entries(entries, pods)
        .filter(|entry| entry.error.is_none())
        .filter_map(|entry| {
            let lag = entry.lag.filter(|lag| *lag > 0)?;
            let last = entry.timestamp.as_deref()?.parse::<Timestamp>().ok()?;
            (now.duration_since(last) > bound).then(|| PodProblem::Stalled {
                pod: entry.name.clone(),
                message: format!(
                    "{lag} offsets wait and no batch was committed since {}",
                    entry.timestamp.as_deref().unwrap_or_default()
                ),
            })
        })
        .collect()
}

impl PodProblem {
    /// The Degraded reason of this kind of problem (see [`PRIORITY`]).
    fn reason(&self) -> &'static str {
        match self {
            PodProblem::CannotStart { .. } => reasons::WORKERS_CANNOT_START,
            PodProblem::CrashLooping { .. } => reasons::CRASH_LOOPING,
            PodProblem::Stalled { .. } => reasons::STALLED,
            PodProblem::Unschedulable { .. } => reasons::UNSCHEDULABLE,
            PodProblem::CatalogRefused { reason, .. } => reason,
        }
    }

    fn describe(&self) -> String {
        match self {
            PodProblem::CannotStart { pod, message }
            | PodProblem::CrashLooping { pod, message }
            | PodProblem::Stalled { pod, message }
            | PodProblem::Unschedulable { pod, message }
            | PodProblem::CatalogRefused { pod, message, .. } => format!("{pod}: {message}"),
        }
    }
}

/// Pod problem reasons, most actionable first, with the summary a Degraded message starts with.
/// A catalog's refusal comes first: it is why such workers crash-loop.
const PRIORITY: [(&str, &str); 11] = [
    (
        reasons::CATALOG_UNAUTHORIZED,
        "the Unity Catalog refuses the workers' credentials",
    ),
    (
        reasons::CATALOG_NOT_FOUND,
        "the Unity Catalog has no such catalog",
    ),
    (
        reasons::SCHEMA_NOT_FOUND,
        "the Unity Catalog has no such schema",
    ),
    (
        reasons::TABLE_NOT_FOUND,
        "the Unity Catalog has no such table",
    ),
    (
        reasons::TABLE_NOT_WRITABLE,
        "the workers may not write the Unity Catalog table",
    ),
    (
        reasons::CATALOG_UNREACHABLE,
        "the workers cannot reach the Unity Catalog",
    ),
    (
        reasons::CATALOG_ERROR,
        "the Unity Catalog refuses the workers' requests",
    ),
    (reasons::WORKERS_CANNOT_START, "workers cannot start"),
    (reasons::CRASH_LOOPING, "workers crash-looping"),
    (reasons::STALLED, "workers stalled"),
    (reasons::UNSCHEDULABLE, "workers cannot be scheduled"),
];

/// The most actionable kind of pod problem present, as a Degraded condition.
pub fn degraded_by_pods(problems: &[PodProblem]) -> Option<ConditionState> {
    PRIORITY.into_iter().find_map(|(reason, summary)| {
        let found: Vec<String> = problems
            .iter()
            .filter(|p| p.reason() == reason)
            .map(PodProblem::describe)
            .collect();
        (!found.is_empty()).then(|| {
            ConditionState::new(
                Status::True,
                reason,
                format!("{summary}: {}", found.join("; ")),
            )
        })
    })
}
