//! The status as computed from observations, one situation per test.
use super::*;
use k8s_openapi::api::apps::v1::DeploymentCondition;
use k8s_openapi::api::batch::v1::JobCondition;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodCondition,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::SignedDuration;
use tributary_crds::WorkerStatus;

use crate::resources::test_support::ingestion;
use crate::scaling::Scale;

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
        scale: Scale::default(),
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

fn assert_condition(status: &StreamingIngestionStatus, type_: &str, expected: &str, reason: &str) {
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
        scale: Scale::default(),
        now: now() + SignedDuration::from_secs(600),
    });
    assert_eq!(later, first, "same observation, same status");
    assert!(!needs_write(&si, &later), "no write, no hot loop");
    let broken = compute(&Observation {
        ingestion: &si,
        blocker: None,
        workload: deployment(1, 0, 1),
        pods: &[],
        scale: Scale::default(),
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
            entry("w-2", 5, 50.5378),
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
    // Rounded to 0.1 rows/s for the printer column.
    assert_eq!(status.processed_rows_per_second, Some(150.5));
    assert_eq!(status.trigger.as_deref(), Some("processingTime=10s"));
    assert!(
        status.workers.is_empty(),
        "the workers' entries are theirs, never applied by the operator"
    );
    let no_pods = compute_with(&si, None, deployment(0, 0, 0), &[]);
    assert_eq!(no_pods.lag, None);
}

#[test]
fn every_condition_computed_passes_the_crds_condition_schema() {
    let crd = serde_json::to_value(tributary_crds::crd::crd()).expect("serialises");
    let item = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["conditions"]["items"]["properties"];
    let pattern = |field: &str| {
        regex::Regex::new(item[field]["pattern"].as_str().expect("pattern")).expect("compiles")
    };
    let (type_pattern, reason_pattern) = (pattern("type"), pattern("reason"));
    let statuses = item["status"]["enum"].as_array().expect("an enum").clone();
    let max_message = item["message"]["maxLength"].as_u64().expect("a limit");

    let si = ingestion("");
    let run = ingestion("  trigger: {availableNow: true}\n");
    let scheduled = ingestion("  trigger: {availableNow: true}\n  schedule: \"*/15 * * * *\"\n");
    let observed = [
        compute_with(&si, None, deployment(1, 1, 1), &[]),
        compute_with(&si, None, deployment(2, 1, 1), &[]),
        compute_with(
            &si,
            None,
            ObservedWorkload::Deployment {
                name: "sensors".into(),
                generation: Some(1),
                status: None,
            },
            &[],
        ),
        compute_with(
            &si,
            Some(Blocker::InvalidSpec("spec.trigger: bad".into())),
            ObservedWorkload::None,
            &[],
        ),
        compute_with(
            &si,
            Some(Blocker::SecretsMissing(vec!["a".into()])),
            ObservedWorkload::None,
            &[],
        ),
        compute_with(
            &si,
            Some(Blocker::CheckpointInUse("older".into())),
            ObservedWorkload::None,
            &[],
        ),
        compute_with(&run, None, ObservedWorkload::Job(job(vec![], 1)), &[]),
        compute_with(
            &run,
            None,
            ObservedWorkload::Job(job(vec![("Failed", "BackoffLimitExceeded")], 0)),
            &[],
        ),
        compute_with(
            &scheduled,
            None,
            ObservedWorkload::CronJob {
                name: "sensors".into(),
                status: None,
                last_job: Some(job(vec![("Complete", "CompletionsReached")], 0)),
            },
            &[],
        ),
        compute_with(
            &ingestion("  suspend: true\n"),
            None,
            deployment(0, 0, 0),
            &[],
        ),
    ];
    for status in &observed {
        assert_eq!(status.conditions.len(), 3, "{status:?}");
        for c in &status.conditions {
            assert!(type_pattern.is_match(&c.type_), "{c:?}");
            assert!(reason_pattern.is_match(&c.reason), "{c:?}");
            assert!(statuses.contains(&serde_json::json!(c.status)), "{c:?}");
            assert!(c.message.len() as u64 <= max_message, "{c:?}");
            assert!(c.observed_generation.is_some_and(|g| g >= 0), "{c:?}");
        }
    }
}

#[test]
fn each_kind_assesses_into_typed_conditions() {
    let si = ingestion("");
    let ready = deployment::assess(
        &si.spec,
        "sensors",
        Some(2),
        match &deployment(1, 1, 1) {
            ObservedWorkload::Deployment { status, .. } => status.as_ref(),
            _ => None,
        },
        &[],
    );
    assert_eq!(ready.phase, Phase::Running);
    assert_eq!(
        ready.conditions.ready,
        ConditionState::new(Status::True, reasons::WORKERS_READY, "1/1 workers ready")
    );
    assert_eq!(ready.conditions.degraded, ConditionState::healthy());

    let failed = job::assess(&job(vec![("Failed", "BackoffLimitExceeded")], 0), &[]);
    assert_eq!(failed.phase, Phase::Failed);
    assert_eq!(failed.conditions.degraded.status, Status::True);
    assert_eq!(failed.conditions.degraded.reason, reasons::RUN_FAILED);

    let blocked = blocked::assess(
        &si,
        &StreamingIngestionStatus::default(),
        &Blocker::SecretsMissing(vec!["kafka-creds".into()]),
    );
    assert_eq!(
        [
            blocked.conditions.ready.status,
            blocked.conditions.progressing.status,
            blocked.conditions.degraded.status
        ],
        [Status::False, Status::False, Status::True]
    );
}

fn worker_entry(name: &str, lag: i64, minutes_ago: i64) -> WorkerStatus {
    WorkerStatus {
        name: name.into(),
        partitions: vec!["sensors-0".into()],
        lag: Some(lag),
        timestamp: Some((now() - SignedDuration::from_mins(minutes_ago)).to_string()),
        ..WorkerStatus::default()
    }
}

#[test]
fn a_worker_with_records_waiting_and_no_batch_for_minutes_is_stalled() {
    let mut si = ingestion("");
    let pods = [
        pod("sensors-a", PodStatus::default()),
        pod("sensors-b", PodStatus::default()),
    ];
    si.status = Some(StreamingIngestionStatus {
        workers: vec![
            worker_entry("sensors-a", 120, 6),
            worker_entry("sensors-b", 5, 1),
        ],
        ..StreamingIngestionStatus::default()
    });
    let status = compute_with(&si, None, deployment(2, 2, 2), &pods);
    assert_condition(&status, types::DEGRADED, "True", reasons::STALLED);
    let message = &condition(&status, types::DEGRADED).message;
    assert_eq!(
        message,
        "workers stalled: sensors-a: 120 offsets wait and no batch was committed since 2026-03-01T11:54:00Z"
    );
}

#[test]
fn an_idle_worker_a_recent_batch_or_a_gone_pod_is_not_stalled() {
    let mut si = ingestion("");
    let pods = [pod("sensors-a", PodStatus::default())];
    for entry in [
        worker_entry("sensors-a", 0, 60), // nothing waits: idle, not stalled
        worker_entry("sensors-a", 120, 4), // within the bound
        worker_entry("sensors-gone", 120, 60), // its pod is gone
    ] {
        si.status = Some(StreamingIngestionStatus {
            workers: vec![entry.clone()],
            ..StreamingIngestionStatus::default()
        });
        let status = compute_with(&si, None, deployment(1, 1, 1), &pods);
        assert_condition(&status, types::DEGRADED, "False", reasons::AS_EXPECTED);
    }
    // A slow processingTime trigger waits three intervals.
    let mut slow = ingestion("  trigger: {processingTime: 10 minutes}\n");
    slow.status = Some(StreamingIngestionStatus {
        workers: vec![worker_entry("sensors-a", 120, 20)],
        ..StreamingIngestionStatus::default()
    });
    let status = compute_with(&slow, None, deployment(1, 1, 1), &pods);
    assert_condition(&status, types::DEGRADED, "False", reasons::AS_EXPECTED);
    slow.status = Some(StreamingIngestionStatus {
        workers: vec![worker_entry("sensors-a", 120, 31)],
        ..StreamingIngestionStatus::default()
    });
    let status = compute_with(&slow, None, deployment(1, 1, 1), &pods);
    assert_condition(&status, types::DEGRADED, "True", reasons::STALLED);
}

#[test]
fn restart_limit_and_autoscaling_reach_the_status() {
    let si = ingestion("  maxRestarts: 2\n");
    let status = compute(&Observation {
        ingestion: &si,
        blocker: None,
        workload: deployment(0, 0, 0),
        pods: &[],
        scale: Scale {
            replicas: Some(0),
            autoscaling: Some(tributary_crds::AutoscalingStatus {
                desired_replicas: 3,
                ..Default::default()
            }),
            restart_limit: Some("worker sensors-a restarted 2 times".into()),
        },
        now: now(),
    });
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_condition(
        &status,
        types::DEGRADED,
        "True",
        reasons::RESTART_LIMIT_REACHED,
    );
    assert_condition(
        &status,
        types::READY,
        "False",
        reasons::RESTART_LIMIT_REACHED,
    );
    assert_condition(
        &status,
        types::PROGRESSING,
        "False",
        reasons::RESTART_LIMIT_REACHED,
    );
    assert_eq!(status.autoscaling.map(|a| a.desired_replicas), Some(3));
}
