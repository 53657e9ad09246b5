//! Autoscaling and the restart limit, one situation per test.
use super::*;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use tributary_crds::WorkerStatus;

use crate::resources::test_support::ingestion;

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().expect("timestamp")
}

fn later(seconds: i64) -> Timestamp {
    now() + SignedDuration::from_secs(seconds)
}

fn policy(min: i32, max: i32, target: i64) -> Autoscaling {
    Autoscaling {
        min_replicas: Some(min),
        max_replicas: max,
        target_lag_per_worker: Some(target),
        target_seconds_behind: None,
        scale_down_delay_seconds: Some(300),
    }
}

fn decided(replicas: i32, at: Timestamp) -> AutoscalingStatus {
    AutoscalingStatus {
        desired_replicas: replicas,
        message: None,
        last_scale_time: Some(rfc3339(at)),
        low_lag_since: None,
    }
}

fn pod(name: &str, restarts: i32) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "worker".into(),
                restart_count: restarts,
                last_state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: 1,
                        message: Some("error: cannot open table s3://lake/t".into()),
                        ..ContainerStateTerminated::default()
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

#[test]
fn before_any_lag_is_reported_the_minimum_runs() {
    let status = autoscale(&policy(2, 6, 1000), None, None, None, now());
    assert_eq!(status.desired_replicas, 2);
    assert_eq!(status.last_scale_time, None);
    let message = status.message.expect("message");
    assert!(
        message.contains("waiting for the workers to report their lag"),
        "{message}"
    );
}

#[test]
fn lag_above_the_target_adds_workers_at_once() {
    let status = autoscale(
        &policy(1, 6, 1000),
        Some(&decided(1, later(-600))),
        Some(4500),
        Some(12),
        now(),
    );
    assert_eq!(status.desired_replicas, 5);
    assert_eq!(
        status.last_scale_time.as_deref(),
        Some("2026-03-01T12:00:00Z")
    );
    let message = status.message.expect("message");
    assert!(message.starts_with("1 -> 5 workers: lag 4500"), "{message}");
}

#[test]
fn never_more_workers_than_max_replicas_or_partitions() {
    let to_max = autoscale(&policy(1, 6, 10), None, Some(1_000_000), Some(12), now());
    assert_eq!(to_max.desired_replicas, 6);
    let to_partitions = autoscale(&policy(1, 6, 10), None, Some(1_000_000), Some(4), now());
    assert_eq!(to_partitions.desired_replicas, 4);
    assert!(
        to_partitions
            .message
            .as_deref()
            .is_some_and(|m| m.contains("at most one worker per partition (4)")),
        "{:?}",
        to_partitions.message
    );
    // A minimum above the partitions is cut to them too: a worker without a partition idles.
    let min_cut = autoscale(&policy(5, 6, 10), None, Some(0), Some(3), now());
    assert_eq!(min_cut.desired_replicas, 3);
}

#[test]
fn no_second_increase_before_the_last_one_settled() {
    let previous = decided(2, later(-30));
    let status = autoscale(
        &policy(1, 6, 1000),
        Some(&previous),
        Some(5000),
        None,
        now(),
    );
    assert_eq!(status.desired_replicas, 2);
    assert_eq!(status.last_scale_time, previous.last_scale_time);
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for the last change to settle"))
    );
    let settled = autoscale(
        &policy(1, 6, 1000),
        Some(&previous),
        Some(5000),
        None,
        later(31),
    );
    assert_eq!(settled.desired_replicas, 5);
}

#[test]
fn an_increase_capped_by_the_partitions_then_known_goes_on_once_every_worker_reported() {
    let p = policy(1, 5, 100);
    // One worker had reported 2 of the topic's 3 partitions: 2 workers, not the 5 asked for.
    let first = autoscale(
        &p,
        Some(&decided(1, later(-600))),
        Some(5000),
        Some(2),
        now(),
    );
    assert_eq!(first.desired_replicas, 2);
    let observed = |reported: Vec<Timestamp>| Observed {
        lag: Some(4800),
        partitions: Some(3),
        reported,
        ..Observed::default()
    };
    // 20 s on, the third partition is known; one worker reported since (the other reported
    // in the second of the change, which does not count): still waiting.
    let one = observed(vec![now(), later(15)]);
    let waiting = autoscale_observed(&p, Some(&first), &one, later(20));
    assert_eq!(waiting.desired_replicas, 2, "{waiting:?}");
    // Both reported after the change: their lag is the one after it, so on at once.
    let both = observed(vec![later(12), later(15)]);
    let on = autoscale_observed(&p, Some(&first), &both, later(20));
    assert_eq!(on.desired_replicas, 3, "{on:?}");
    assert_eq!(on.last_scale_time, Some(rfc3339(later(20))));
}

#[test]
fn workers_are_removed_only_after_the_lag_stayed_low_for_the_delay() {
    let p = policy(1, 6, 1000);
    let first = autoscale(&p, Some(&decided(4, later(-3600))), Some(100), None, now());
    assert_eq!(first.desired_replicas, 4, "not yet");
    assert_eq!(first.low_lag_since.as_deref(), Some("2026-03-01T12:00:00Z"));
    let message = first.message.clone().expect("message");
    assert!(
        message.contains("1 will do if the lag stays low until 2026-03-01T12:05:00Z"),
        "{message}"
    );

    let waiting = autoscale(&p, Some(&first), Some(100), None, later(200));
    assert_eq!(
        waiting, first,
        "unchanged while waiting: no status write per visit"
    );

    let done = autoscale(&p, Some(&waiting), Some(120), None, later(300));
    assert_eq!(done.desired_replicas, 1);
    assert_eq!(done.low_lag_since, None);
    assert_eq!(
        done.last_scale_time.as_deref(),
        Some("2026-03-01T12:05:00Z")
    );
}

#[test]
fn lag_rising_again_restarts_the_wait() {
    let p = policy(1, 6, 1000);
    let low = autoscale(&p, Some(&decided(4, later(-3600))), Some(100), None, now());
    assert!(low.low_lag_since.is_some());
    let busy = autoscale(&p, Some(&low), Some(3900), None, later(200));
    assert_eq!(busy.desired_replicas, 4);
    assert_eq!(busy.low_lag_since, None);
    let low_again = autoscale(&p, Some(&busy), Some(100), None, later(400));
    assert_eq!(
        low_again.desired_replicas, 4,
        "the delay counts from the new low"
    );
    assert_eq!(
        low_again.low_lag_since.as_deref(),
        Some("2026-03-01T12:06:40Z")
    );
}

#[test]
fn a_lag_near_the_target_does_not_flap() {
    let p = policy(1, 6, 1000);
    // 3 workers carry 2900: within the target, but too much for 2 workers at 80 % of it.
    let held = autoscale(&p, Some(&decided(3, later(-3600))), Some(2900), None, now());
    assert_eq!(held.desired_replicas, 3);
    assert_eq!(held.low_lag_since, None);
    // At 2300, 2 workers at 80 % (1600 each) still cannot take it: 3 stay.
    let still = autoscale(&p, Some(&held), Some(2300), None, later(3600));
    assert_eq!(still.desired_replicas, 3);
}

#[test]
fn decide_sets_the_replicas_of_a_continuous_ingestion_only() {
    let mut si =
        ingestion("  autoscaling: {minReplicas: 2, maxReplicas: 8, targetLagPerWorker: 100}\n");
    si.spec.replicas = None;
    si.status = Some(StreamingIngestionStatus {
        workers: vec![WorkerStatus {
            name: "sensors-a".into(),
            partitions: (0..6).map(|p| format!("t-{p}")).collect(),
            lag: Some(450),
            ..WorkerStatus::default()
        }],
        ..StreamingIngestionStatus::default()
    });
    let scale = decide(&si, &[pod("sensors-a", 0)], now());
    assert_eq!(scale.replicas, Some(5));
    let effective = scale.apply(&si);
    assert_eq!(effective.spec.replicas, Some(5));
    assert_eq!(effective.spec.autoscaling, None);
    assert_eq!(effective.metadata, si.metadata);

    // A gone pod's entry does not count: no lag known, the minimum.
    let scale = decide(&si, &[], now());
    assert_eq!(scale.replicas, Some(2));

    // Changed to 2 a moment ago: held, until both workers have reported since.
    let status = si.status.as_mut().expect("status");
    status.autoscaling = Some(decided(2, now()));
    let entry = |name: &str, partitions: [i32; 3], reported: Timestamp| WorkerStatus {
        name: name.into(),
        partitions: partitions.iter().map(|p| format!("t-{p}")).collect(),
        lag: Some(225),
        timestamp: Some(reported.to_string()),
        ..WorkerStatus::default()
    };
    status.workers = vec![
        entry("sensors-a", [0, 1, 2], later(3)),
        entry("sensors-b", [3, 4, 5], now()),
    ];
    let pods = [pod("sensors-a", 0), pod("sensors-b", 0)];
    assert_eq!(decide(&si, &pods, later(10)).replicas, Some(2));
    let status = si.status.as_mut().expect("status");
    status.workers[1].timestamp = Some(later(4).to_string());
    assert_eq!(decide(&si, &pods, later(10)).replicas, Some(5));

    si.spec.trigger = Some(tributary_crds::Trigger {
        available_now: Some(true),
        ..Default::default()
    });
    assert_eq!(decide(&si, &[pod("sensors-a", 0)], now()), Scale::default());
}

#[test]
fn a_target_in_seconds_behind_is_a_lag_target_at_the_workers_rate() {
    let p = Autoscaling {
        min_replicas: Some(1),
        max_replicas: 8,
        target_lag_per_worker: None,
        target_seconds_behind: Some(60),
        scale_down_delay_seconds: Some(300),
    };
    // 900000 behind at 5000 rows/s per worker: 3 workers keep it within 60 s.
    let at = |lag: i64, rate: Option<f64>| Observed {
        lag: Some(lag),
        rate_per_worker: rate,
        ..Observed::default()
    };
    let status = autoscale_observed(&p, None, &at(900_000, Some(5000.0)), now());
    assert_eq!(status.desired_replicas, 3);
    assert!(
        status.message.as_deref().is_some_and(|m| m.contains(
            "lag 900000 with a target of 60s behind at 5000 rows/s per worker (300000 per worker) asks for 3"
        )),
        "{status:?}"
    );
    // Faster workers, fewer of them.
    let status = autoscale_observed(&p, None, &at(900_000, Some(20_000.0)), now());
    assert_eq!(status.desired_replicas, 1);
    // No rate reported yet: nothing is decided from the lag alone.
    let waiting = autoscale_observed(
        &p,
        Some(&decided(2, later(-3600))),
        &at(900_000, None),
        now(),
    );
    assert_eq!(waiting.desired_replicas, 2);
    assert!(
        waiting
            .message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for the workers to report their processing rate")),
        "{waiting:?}"
    );
}

#[test]
fn the_rate_per_worker_is_the_live_workers_mean_to_two_digits() {
    let entry = |name: &str, rate: Option<f64>| WorkerStatus {
        name: name.into(),
        processed_rows_per_second: rate,
        ..WorkerStatus::default()
    };
    let status = StreamingIngestionStatus {
        workers: vec![
            entry("sensors-a", Some(4870.0)),
            entry("sensors-b", Some(5180.0)),
            entry("sensors-c", None),
            entry("sensors-gone", Some(90_000.0)),
        ],
        ..StreamingIngestionStatus::default()
    };
    let pods = [
        pod("sensors-a", 0),
        pod("sensors-b", 0),
        pod("sensors-c", 0),
    ];
    assert_eq!(rate_per_worker(&status, &pods), Some(5000.0));
    assert_eq!(rate_per_worker(&status, &pods[2..]), None);
    let one = StreamingIngestionStatus {
        workers: vec![entry("sensors-a", Some(1234.5))],
        ..StreamingIngestionStatus::default()
    };
    assert_eq!(rate_per_worker(&one, &pods), Some(1200.0));

    let mut si = ingestion(
        "  autoscaling: {maxReplicas: 8, targetSecondsBehind: 30}
",
    );
    si.spec.replicas = None;
    si.status = Some(StreamingIngestionStatus {
        workers: vec![WorkerStatus {
            lag: Some(600_000),
            partitions: (0..8).map(|p| format!("t-{p}")).collect(),
            ..entry("sensors-a", Some(5000.0))
        }],
        ..StreamingIngestionStatus::default()
    });
    // 600000 behind at 5000 rows/s: 4 workers for 30 s.
    assert_eq!(decide(&si, &[pod("sensors-a", 0)], now()).replicas, Some(4));
}

#[test]
fn a_worker_that_restarted_max_restarts_times_stops_the_workers() {
    let mut si = ingestion("  maxRestarts: 5\n");
    si.metadata.generation = Some(3);
    assert_eq!(decide(&si, &[pod("sensors-a", 4)], now()).replicas, None);
    let scale = decide(&si, &[pod("sensors-a", 4), pod("sensors-b", 5)], now());
    assert_eq!(scale.replicas, Some(0));
    let message = scale.restart_limit.expect("stopped");
    assert!(
        message.starts_with("worker sensors-b restarted 5 times (spec.maxRestarts 5); last exit code 1: error: cannot open table"),
        "{message}"
    );
}

#[test]
fn the_stop_holds_until_the_spec_changes() {
    let mut si = ingestion("  maxRestarts: 5\n");
    si.metadata.generation = Some(3);
    let stopped = |generation| StreamingIngestionStatus {
        conditions: vec![Condition {
            type_: types::DEGRADED.into(),
            status: "True".into(),
            reason: reasons::RESTART_LIMIT_REACHED.into(),
            message: "worker sensors-b restarted 5 times".into(),
            observed_generation: Some(generation),
            last_transition_time: Time(now()),
        }],
        ..StreamingIngestionStatus::default()
    };
    // The pods are gone once scaled to 0; the condition of this generation keeps them stopped.
    si.status = Some(stopped(3));
    let scale = decide(&si, &[], now());
    assert_eq!(scale.replicas, Some(0));
    assert_eq!(
        scale.restart_limit.as_deref(),
        Some("worker sensors-b restarted 5 times")
    );
    // A new generation starts them again.
    si.status = Some(stopped(2));
    assert_eq!(decide(&si, &[], now()), Scale::default());
}

#[test]
fn partitions_come_from_live_assignments_or_the_last_batch() {
    let mut status = StreamingIngestionStatus {
        workers: vec![
            WorkerStatus {
                name: "a".into(),
                partitions: vec!["t-0".into(), "t-1".into()],
                ..WorkerStatus::default()
            },
            WorkerStatus {
                name: "gone".into(),
                partitions: vec!["t-2".into()],
                ..WorkerStatus::default()
            },
        ],
        ..StreamingIngestionStatus::default()
    };
    assert_eq!(known_partitions(&status, &[pod("a", 0)]), Some(2));
    assert_eq!(known_partitions(&status, &[]), None);
    status.last_progress = Some(tributary_crds::StreamingQueryProgress {
        sources: vec![tributary_crds::SourceProgress {
            latest_offset: [(
                "t".to_string(),
                (0..3).map(|p| (p.to_string(), 10)).collect(),
            )]
            .into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert_eq!(known_partitions(&status, &[pod("a", 0)]), Some(3));
}
