//! One reconcile per test against the scripted API server, checking the exact requests and
//! counting them. The namespace's ingestions, the workloads and the worker pods come from the
//! reconcile's caches, so no test answers a list: each `api_calls` below is the number of
//! requests one reconcile sends, events included. Before the caches, every reconcile also
//! listed the namespace's ingestions, the other workload kinds and the pods (3 or 4 lists
//! more: a steady-state reconcile of a Deployment made 11 requests, now 7).

use http::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tributary_crds::conditions::{reasons, types};
use tributary_operator::cache::Contents;

use crate::harness::*;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/iot/deployments";
const JOBS: &str = "/apis/batch/v1/namespaces/iot/jobs";

fn typed<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// A workload carrying the ingestion's label, in its namespace, without an owner.
fn labelled(api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {
        "name": name, "namespace": "iot", "labels": {"tributary.dev/ingestion": "sensors"}}})
}

/// A workload the ingestion controls.
fn workload(api_version: &str, kind: &str, name: &str) -> Value {
    let mut object = labelled(api_version, kind, name);
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "tributary.dev/v1alpha1", "kind": "StreamingIngestion", "name": "sensors",
        "uid": "5f0c0a4e-0000-4000-8000-00000000abcd", "controller": true, "blockOwnerDeletion": true
    }]);
    object
}

#[tokio::test]
async fn create_continuous_applies_everything_then_writes_status() {
    let si = ingestion("  replicas: 2\n");
    let cached = only(&[&si]);
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;

        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        deployment.assert_apply();
        assert_eq!(deployment.body["spec"]["replicas"], 2);
        assert_eq!(
            deployment.str_at("/metadata/ownerReferences/0/kind"),
            "StreamingIngestion"
        );
        assert_eq!(
            deployment.body["metadata"]["ownerReferences"][0]["controller"],
            true
        );
        let template = &deployment.body["spec"]["template"];
        assert!(template["metadata"]["annotations"]["tributary.dev/config-hash"].is_string());
        assert_eq!(
            template["spec"]["containers"][0]["image"],
            "registry.test/worker:1"
        );
        assert_eq!(template["spec"]["serviceAccountName"], "sensors-worker");
        deployment.echo();

        // Workloads of other kinds and the pods come from the caches: straight to the status.
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["phase"], "Pending");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["trigger"], "default");
        assert_eq!(
            status["workload"],
            json!({"kind": "Deployment", "name": "sensors"})
        );
        assert_eq!(status["labelSelector"], POD_SELECTOR);
        assert_eq!(condition(&status, types::READY)["status"], "Unknown");
        assert_eq!(
            condition(&status, types::PROGRESSING)["reason"],
            reasons::ROLLING_OUT
        );
        assert_eq!(condition(&status, types::DEGRADED)["observedGeneration"], 2);

        let (reason, note) = event_published(&mut h).await;
        assert_eq!(
            (reason.as_str(), note.as_str()),
            ("Created", "created Deployment sensors")
        );
        h
    })
    .await;
    assert_eq!(
        outcome.result.expect("reconcile succeeds"),
        kube::runtime::controller::Action::requeue(tributary_operator::reconcile::REQUEUE_ACTIVE)
    );
    assert_eq!(outcome.api_calls, 10);
}

#[tokio::test]
async fn invalid_spec_writes_only_the_status() {
    // processingTime and once together: refused by validation.
    let si = ingestion("  trigger: {processingTime: 10s, once: true}\n");
    let cached = only(&[&si]);
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["phase"], "Pending");
        let ready = condition(&status, types::READY);
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some(reasons::INVALID_SPEC))
        );
        let degraded = condition(&status, types::DEGRADED);
        assert_eq!(degraded["status"], "True");
        assert!(
            degraded["message"]
                .as_str()
                .is_some_and(|m| m.contains("spec.trigger")),
            "{degraded}"
        );
        assert!(status.get("workload").is_none());
        let (reason, _) = event_published(&mut h).await;
        assert_eq!(reason, reasons::INVALID_SPEC);
        h
    })
    .await;
    outcome
        .result
        .expect("an invalid spec is a status, not an error");
    assert_eq!(outcome.api_calls, 2);
}

#[tokio::test]
async fn missing_secret_stops_before_applying() {
    let si = ingestion("");
    let cached = only(&[&si]);
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        expect(
            &mut h,
            Method::GET,
            "/api/v1/namespaces/iot/secrets/kafka-creds",
        )
        .await
        .not_found();
        let status = status_applied(&mut h, &si_for_script).await;
        let ready = condition(&status, types::READY);
        assert_eq!(ready["reason"], reasons::SECRET_NOT_FOUND);
        assert_eq!(
            ready["message"],
            "Secret kafka-creds not found in namespace iot"
        );
        assert_eq!(condition(&status, types::DEGRADED)["status"], "True");
        let (reason, note) = event_published(&mut h).await;
        assert_eq!(reason, reasons::SECRET_NOT_FOUND);
        assert!(note.contains("kafka-creds"));
        h
    })
    .await;
    outcome
        .result
        .expect("a missing Secret is a status, not an error");
    assert_eq!(outcome.api_calls, 3);
}

#[tokio::test]
async fn checkpoint_in_use_refuses_the_later_ingestion_and_removes_its_workload() {
    let si = ingestion("");
    let mut older = ingestion("");
    older.metadata.name = Some("first-owner".into());
    older.metadata.uid = Some("11111111-0000-4000-8000-000000000000".into());
    older.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().expect("time"),
    ));
    // The same claim and path: both use an existing claim "cp".
    let shared = tributary_crds::VolumeSource {
        claim_name: Some("cp".into()),
        mount_path: Some("/checkpoints".into()),
        ..Default::default()
    };
    older.spec.checkpoint.volume = Some(shared.clone());
    let mut si = si;
    si.spec.checkpoint.volume = Some(shared);
    let cached = Contents {
        ingestions: vec![older, si.clone()],
        deployments: vec![typed(workload("apps/v1", "Deployment", "sensors"))],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        // A Deployment it had before the conflict is deleted; nothing is applied.
        let delete = expect(&mut h, Method::DELETE, &format!("{DEPLOYMENTS}/sensors")).await;
        assert_eq!(delete.body["propagationPolicy"], "Background");
        delete.ok(&json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}));

        let status = status_applied(&mut h, &si_for_script).await;
        let ready = condition(&status, types::READY);
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some(reasons::CHECKPOINT_IN_USE))
        );
        assert!(
            ready["message"]
                .as_str()
                .is_some_and(|m| m.contains("first-owner")),
            "{ready}"
        );
        assert!(status.get("workload").is_none());
        assert_eq!(status["replicas"], 0);
        let mut reasons_seen = vec![
            event_published(&mut h).await.0,
            event_published(&mut h).await.0,
        ];
        reasons_seen.sort();
        assert_eq!(reasons_seen, ["CheckpointInUse", "Deleted"]);
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 5);
}

#[tokio::test]
async fn suspend_scales_the_deployment_to_zero() {
    let si = ingestion("  suspend: true\n");
    let cached = only(&[&si]);
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        deployment.assert_apply();
        assert_eq!(deployment.body["spec"]["replicas"], 0);
        let mut answer = deployment.body.clone();
        answer["metadata"]["generation"] = json!(4);
        answer["status"] = json!({"observedGeneration": 4, "replicas": 0});
        deployment.ok(&answer);
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["phase"], "Suspended");
        assert_eq!(
            condition(&status, types::READY)["reason"],
            reasons::SUSPENDED
        );
        assert_eq!(status["replicas"], 0);
        let (reason, _) = event_published(&mut h).await;
        assert_eq!(reason, "Created");
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 10);
}

/// The Job's name, from the builder (its hash is unit-tested there).
fn job_name(si: &tributary_crds::StreamingIngestion) -> String {
    let settings = tributary_operator::resources::Settings {
        worker_image: "registry.test/worker:1".into(),
        ..Default::default()
    };
    match tributary_operator::resources::build(si, &settings)
        .expect("builds")
        .workload
    {
        Some(tributary_operator::resources::Workload::Job(job)) => job.metadata.name.expect("name"),
        other => panic!("expected a Job, got {other:?}"),
    }
}

/// A run to completion whose Job reports `job_status`; an older run's Job is deleted.
/// Returns the applied status and the events' reasons.
async fn job_scenario(job_status: Value) -> (Value, Vec<String>) {
    let si = ingestion("  trigger: {availableNow: true}\n");
    let name = job_name(&si);
    assert!(name.starts_with("sensors-2-"), "{name}");
    let cached = Contents {
        ingestions: vec![si.clone()],
        jobs: vec![
            typed(workload("batch/v1", "Job", &name)),
            typed(workload("batch/v1", "Job", "sensors-1-00000000")),
        ],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let job = expect(&mut h, Method::PATCH, &format!("{JOBS}/{name}")).await;
        job.assert_apply();
        assert_eq!(job.body["spec"]["completions"], 1);
        assert_eq!(
            job.body["spec"]["template"]["spec"]["restartPolicy"],
            "Never"
        );
        assert_eq!(job.str_at("/metadata/ownerReferences/0/name"), "sensors");
        let mut answer = job.body.clone();
        answer["status"] = job_status;
        job.ok(&answer);

        // The earlier run's Job (in the cache) is deleted; the current one is kept.
        let delete = expect(
            &mut h,
            Method::DELETE,
            &format!("{JOBS}/sensors-1-00000000"),
        )
        .await;
        assert_eq!(delete.body["propagationPolicy"], "Background");
        delete.ok(&json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}));

        let status = status_applied(&mut h, &si_for_script).await;
        let mut reasons_seen = Vec::new();
        for _ in 0..3 {
            reasons_seen.push(event_published(&mut h).await.0);
        }
        tx.send((status, reasons_seen)).expect("the test waits");
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 13);
    rx.await.expect("the script reported")
}

#[tokio::test]
async fn job_success_is_succeeded() {
    let (status, events) = job_scenario(json!({
        "startTime": "2026-02-02T10:00:00Z",
        "completionTime": "2026-02-02T10:05:00Z",
        "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"}
        ]
    }))
    .await;
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["trigger"], "availableNow");
    assert_eq!(condition(&status, types::READY)["status"], "True");
    assert_eq!(
        condition(&status, types::READY)["reason"],
        reasons::RUN_SUCCEEDED
    );
    assert_eq!(status["lastRun"]["result"], "Succeeded");
    assert_eq!(status["lastRun"]["completionTime"], "2026-02-02T10:05:00Z");
    assert_eq!(status["workload"]["kind"], "Job");
    assert_eq!(events, ["Deleted", "Created", reasons::RUN_SUCCEEDED]);
}

#[tokio::test]
async fn job_failure_is_failed() {
    let (status, events) = job_scenario(json!({
        "startTime": "2026-02-02T10:00:00Z",
        "failed": 4,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
        ]
    }))
    .await;
    assert_eq!(status["phase"], "Failed");
    let degraded = condition(&status, types::DEGRADED);
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some(reasons::RUN_FAILED))
    );
    assert!(
        degraded["message"]
            .as_str()
            .is_some_and(|m| m.contains("BackoffLimitExceeded"))
    );
    assert_eq!(condition(&status, types::READY)["status"], "False");
    assert_eq!(status["lastRun"]["result"], "Failed");
    assert_eq!(events, ["Deleted", "Created", reasons::RUN_FAILED]);
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    // First reconcile: capture the status the operator applies.
    let si = ingestion("");
    let cached = only(&[&si]);
    let si_for_script = si.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let ready_deployment = |mut body: Value| {
        body["metadata"]["generation"] = json!(1);
        body["status"] = json!({"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        body
    };
    let first = run_scenario(si.clone(), cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        let answer = ready_deployment(deployment.body.clone());
        deployment.ok(&answer);
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["phase"], "Running");
        assert_eq!(condition(&status, types::READY)["status"], "True");
        event_published(&mut h).await;
        tx.send(status).expect("the test waits");
        h
    })
    .await;
    first.result.expect("first reconcile succeeds");
    let status = rx.await.expect("status captured");

    // Second reconcile of the same object with that status: applies again (idempotent), but
    // neither the status nor an event is written. This is the steady state of a healthy
    // continuous ingestion: one Secret check and six applies.
    let mut again = si;
    again.status = Some(serde_json::from_value(status).expect("status parses"));
    let cached = only(&[&again]);
    let second = run_scenario(again, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        let answer = ready_deployment(deployment.body.clone());
        deployment.ok(&answer);
        // Nothing else: a status PATCH or an event would be an unexpected request.
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), h.next_request())
                .await
                .is_err(),
            "no request after the workload"
        );
        h
    })
    .await;
    assert_eq!(
        second.result.expect("second reconcile succeeds"),
        kube::runtime::controller::Action::requeue(tributary_operator::reconcile::REQUEUE_QUIET)
    );
    assert_eq!(first.api_calls, 10);
    assert_eq!(second.api_calls, 8);
}

#[tokio::test]
async fn trigger_change_replaces_the_deployment_with_a_job() {
    let si = ingestion("  trigger: {once: true}\n");
    let name = job_name(&si);
    let cached = Contents {
        ingestions: vec![si.clone()],
        deployments: vec![typed(workload("apps/v1", "Deployment", "sensors"))],
        // A Job of someone else carrying the same label is left alone (no controller ref to us).
        jobs: vec![typed(labelled("batch/v1", "Job", "unrelated"))],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        expect(&mut h, Method::PATCH, &format!("{JOBS}/{name}"))
            .await
            .echo();
        expect(&mut h, Method::DELETE, &format!("{DEPLOYMENTS}/sensors"))
            .await
            .ok(&json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}));
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["workload"], json!({"kind": "Job", "name": name}));
        assert_eq!(status["trigger"], "once");
        let first = event_published(&mut h).await;
        assert_eq!(first.0, "Deleted");
        assert!(first.1.contains("Deployment sensors"));
        assert_eq!(event_published(&mut h).await.0, "Created");
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 12);
}

#[tokio::test]
async fn a_workload_already_gone_is_not_announced_again() {
    // The cache still holds a Deployment this ingestion's previous reconcile deleted (its
    // watch event has not arrived): the DELETE finds nothing, and no second Deleted event.
    let si = ingestion("  trigger: {once: true}\n");
    let name = job_name(&si);
    let cached = Contents {
        ingestions: vec![si.clone()],
        deployments: vec![typed(workload("apps/v1", "Deployment", "sensors"))],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        expect(&mut h, Method::PATCH, &format!("{JOBS}/{name}"))
            .await
            .echo();
        expect(&mut h, Method::DELETE, &format!("{DEPLOYMENTS}/sensors"))
            .await
            .not_found();
        status_applied(&mut h, &si_for_script).await;
        assert_eq!(event_published(&mut h).await.0, "Created");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), h.next_request())
                .await
                .is_err(),
            "no Deleted event for what was already gone"
        );
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
}

#[tokio::test]
async fn a_deleted_ingestion_is_left_to_the_garbage_collector() {
    let mut si = ingestion("");
    si.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-02-03T00:00:00Z".parse().expect("time"),
    ));
    let cached = only(&[&si]);
    let outcome = run_scenario(si, cached, |mut h| async move {
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(300), h.next_request())
                .await
                .is_err(),
            "a deleted ingestion makes no request"
        );
        h
    })
    .await;
    assert_eq!(
        outcome.result.expect("reconcile succeeds"),
        kube::runtime::controller::Action::await_change()
    );
    assert_eq!(outcome.api_calls, 0);
}

#[tokio::test]
async fn schedule_applies_a_cron_job_and_reports_its_last_run() {
    let si = ingestion("  trigger: {availableNow: true}\n  schedule: \"0 * * * *\"\n");
    // Two runs of the CronJob (owned by it, not by the ingestion): the newer one counts.
    let run = |name: &str, created: &str, outcome: &str| {
        let mut job = labelled("batch/v1", "Job", name);
        job["metadata"]["creationTimestamp"] = json!(created);
        job["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob", "name": "sensors", "uid": "c", "controller": true}]);
        job["status"] = json!({"conditions": [{"type": outcome, "status": "True", "reason": "BackoffLimitExceeded"}]});
        typed(job)
    };
    let cached = Contents {
        ingestions: vec![si.clone()],
        jobs: vec![
            run("sensors-100", "2026-02-02T09:00:00Z", "Complete"),
            run("sensors-200", "2026-02-02T10:00:00Z", "Failed"),
        ],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let cron = expect(
            &mut h,
            Method::PATCH,
            "/apis/batch/v1/namespaces/iot/cronjobs/sensors",
        )
        .await;
        cron.assert_apply();
        assert_eq!(cron.body["spec"]["schedule"], "0 * * * *");
        assert_eq!(cron.body["spec"]["concurrencyPolicy"], "Forbid");
        assert_eq!(cron.body["spec"]["suspend"], false);
        let mut answer = cron.body.clone();
        answer["status"] = json!({"lastScheduleTime": "2026-02-02T10:00:00Z"});
        cron.ok(&answer);
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["trigger"], "availableNow@0 * * * *");
        assert_eq!(
            status["workload"],
            json!({"kind": "CronJob", "name": "sensors"})
        );
        assert_eq!(status["lastRun"]["jobName"], "sensors-200");
        assert_eq!(status["lastRun"]["result"], "Failed");
        assert_eq!(
            condition(&status, types::DEGRADED)["reason"],
            reasons::RUN_FAILED
        );
        let mut reasons_seen = vec![
            event_published(&mut h).await.0,
            event_published(&mut h).await.0,
        ];
        reasons_seen.sort();
        assert_eq!(reasons_seen, ["Created", reasons::RUN_FAILED]);
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 11);
}

#[tokio::test]
async fn spec_change_rolls_the_workers_and_says_so() {
    // Generation 2 with a status observed at generation 1: the config hash on the template
    // differs from generation 1's (a new processingTime), and an Updated event follows.
    let before = ingestion("");
    let after = ingestion("  trigger: {processingTime: 1m}\n");
    let settings = tributary_operator::resources::Settings {
        worker_image: "registry.test/worker:1".into(),
        ..Default::default()
    };
    let old_hash = tributary_operator::resources::build(&before, &settings)
        .expect("builds")
        .config_hash;
    let mut si = after;
    si.status = Some(tributary_crds::StreamingIngestionStatus {
        observed_generation: Some(1),
        workload: Some(tributary_crds::WorkloadRef {
            kind: "Deployment".into(),
            name: "sensors".into(),
        }),
        ..Default::default()
    });
    let cached = Contents {
        ingestions: vec![si.clone()],
        deployments: vec![typed(workload("apps/v1", "Deployment", "sensors"))],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        let hash = deployment
            .str_at("/spec/template/metadata/annotations/tributary.dev~1config-hash")
            .to_string();
        assert_ne!(hash, old_hash, "a spec change must change the pod template");
        deployment.echo();
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["trigger"], "processingTime=1m");
        let (reason, note) = event_published(&mut h).await;
        assert_eq!(
            (reason.as_str(), note.as_str()),
            ("Updated", "applied generation 2")
        );
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 10);
}

#[tokio::test]
async fn a_crash_looping_worker_in_the_cache_degrades_the_status() {
    let si = ingestion("");
    let pod: k8s_openapi::api::core::v1::Pod = typed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sensors-7d9-abc", "namespace": "iot", "labels": {
            "app.kubernetes.io/name": "tributary-worker", "tributary.dev/ingestion": "sensors"}},
        "status": {"containerStatuses": [{
            "name": "worker", "image": "w", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 2, "message": "broker unreachable"}}
        }]}
    }));
    let cached = Contents {
        ingestions: vec![si.clone()],
        pods: vec![pod],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        let mut answer = deployment.body.clone();
        answer["metadata"]["generation"] = json!(1);
        answer["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1});
        deployment.ok(&answer);
        let status = status_applied(&mut h, &si_for_script).await;
        let degraded = condition(&status, types::DEGRADED);
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some(reasons::CRASH_LOOPING))
        );
        assert!(
            degraded["message"]
                .as_str()
                .is_some_and(|m| m.contains("sensors-7d9-abc") && m.contains("exit code 2")),
            "{degraded}"
        );
        let mut reasons_seen = vec![
            event_published(&mut h).await.0,
            event_published(&mut h).await.0,
        ];
        reasons_seen.sort();
        assert_eq!(reasons_seen, [reasons::CRASH_LOOPING, "Created"]);
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 11);
}

#[tokio::test]
async fn api_errors_back_off_per_object_and_are_counted_by_kind() {
    use std::sync::Arc;
    use tributary_operator::reconcile::{Context, error_policy, reconcile};

    let (service, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let metrics = Arc::new(tributary_operator::metrics::Metrics::new());
    let ctx = Arc::new(Context::new(
        kube::Client::new(service, "default"),
        tributary_operator::resources::Settings::default(),
        metrics.clone(),
        tributary_operator::cache::Cache::preloaded(Contents::default()),
    ));
    let si = Arc::new(ingestion(""));
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            expect(&mut handle, Method::GET, "/api/v1/namespaces/iot/secrets/kafka-creds")
                .await
                .respond(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"}),
                );
        }
        handle
    });
    let mut delays = Vec::new();
    for _ in 0..2 {
        let error = tokio::time::timeout(WAIT, reconcile(si.clone(), ctx.clone()))
            .await
            .expect("in time")
            .expect_err("the API failed");
        assert!(
            error.to_string().contains("cannot read Secret kafka-creds"),
            "{error}"
        );
        assert_eq!(error.kind(), "read_secret");
        delays.push(error_policy(si.clone(), &error, ctx.clone()));
    }
    tokio::time::timeout(WAIT, server)
        .await
        .expect("script finished")
        .expect("checks passed");
    assert_eq!(
        delays,
        [
            kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5)),
            kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(10)),
        ]
    );
    let text = metrics.encode();
    assert!(
        text.contains("tributary_operator_failures_total{error=\"read_secret\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("tributary_operator_reconciles_total 2"),
        "{text}"
    );
}

#[tokio::test]
async fn entries_of_gone_workers_are_pruned_with_a_guarded_json_patch() {
    let mut si = ingestion("");
    si.status = Some(tributary_crds::StreamingIngestionStatus {
        workers: vec![tributary_crds::WorkerStatus {
            name: "sensors-5d8f-gone".into(),
            lag: Some(40),
            ..Default::default()
        }],
        ..Default::default()
    });
    let cached = only(&[&si]);
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors"))
            .await
            .echo();

        let prune = expect(
            &mut h,
            Method::PATCH,
            "/apis/tributary.dev/v1alpha1/namespaces/iot/streamingingestions/sensors/status",
        )
        .await;
        assert_eq!(
            prune.content_type.as_deref(),
            Some("application/json-patch+json")
        );
        assert_eq!(
            prune.body,
            json!([
                {"op": "test", "path": "/status/workers/0/name", "value": "sensors-5d8f-gone"},
                {"op": "remove", "path": "/status/workers/0"}
            ])
        );
        prune.ok(&to_value(&si_for_script));

        let status = status_applied(&mut h, &si_for_script).await;
        assert!(
            status.get("lag").is_none(),
            "a gone worker's lag is not counted"
        );
        event_published(&mut h).await;
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 11);
}

/// An ingestion into a Unity Catalog table whose worker reported the catalog's refusal.
fn refused_by_the_catalog(
    reason: &str,
    error: &str,
) -> (tributary_crds::StreamingIngestion, Contents) {
    use tributary_crds::{SecretKeyRef, SecretValueSource, UnityCatalog};
    let mut si = ingestion("");
    let delta = &mut si.spec.sink.delta;
    delta.uri = None;
    delta.volume = None;
    delta.table = Some("bronze.iot.sensors".into());
    delta.unity_catalog = Some(UnityCatalog {
        endpoint: "https://adb-1.2.azuredatabricks.net".into(),
        token: Some(SecretValueSource {
            secret_key_ref: SecretKeyRef {
                name: "uc".into(),
                key: "token".into(),
            },
        }),
        storage_root: Some("abfss://lake@acct.dfs.core.windows.net/tables".into()),
        ..UnityCatalog::default()
    });
    tributary_crds::validate(&si).expect("a valid spec");
    si.status = Some(tributary_crds::StreamingIngestionStatus {
        workers: vec![tributary_crds::WorkerStatus {
            name: "sensors-7d9-abc".into(),
            error: Some(error.into()),
            error_reason: Some(reason.into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let pod: k8s_openapi::api::core::v1::Pod = typed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sensors-7d9-abc", "namespace": "iot", "labels": {
            "app.kubernetes.io/name": "tributary-worker", "tributary.dev/ingestion": "sensors"}},
        "status": {"containerStatuses": [{
            "name": "worker", "image": "w", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1}}
        }]}
    }));
    let cached = Contents {
        ingestions: vec![si.clone()],
        pods: vec![pod],
        ..Contents::default()
    };
    (si, cached)
}

/// One reconcile of [`refused_by_the_catalog`]: the Degraded condition and the events' reasons.
async fn catalog_scenario(reason: &str, error: &str) -> (Value, Vec<String>) {
    let (si, cached) = refused_by_the_catalog(reason, error);
    let si_for_script = si.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new((Value::Null, Vec::new())));
    let record = seen.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        expect(&mut h, Method::GET, "/api/v1/namespaces/iot/secrets/uc")
            .await
            .ok(&json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "uc", "namespace": "iot"}}));
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        let mut answer = deployment.body.clone();
        answer["metadata"]["generation"] = json!(1);
        answer["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1});
        deployment.ok(&answer);
        let status = status_applied(&mut h, &si_for_script).await;
        let degraded = condition(&status, types::DEGRADED).clone();
        let mut reasons_seen = vec![
            event_published(&mut h).await.0,
            event_published(&mut h).await.0,
        ];
        reasons_seen.sort();
        *record.lock().expect("record") = (degraded, reasons_seen);
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    seen.lock().expect("seen").clone()
}

#[tokio::test]
async fn a_catalog_refusing_the_token_is_the_degraded_reason_with_the_catalogs_message() {
    let error = "Unity Catalog at https://adb-1.2.azuredatabricks.net: cannot look up table bronze.iot.sensors: HTTP 401, UNAUTHENTICATED: Invalid access token. (check the token in Secret uc/token: it must be valid for this catalog, ...)";
    let (degraded, events) = catalog_scenario(reasons::CATALOG_UNAUTHORIZED, error).await;
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some(reasons::CATALOG_UNAUTHORIZED)),
        "the catalog's refusal, not the crash loop it causes: {degraded}"
    );
    assert_eq!(
        degraded["message"],
        format!("the Unity Catalog refuses the workers' credentials: sensors-7d9-abc: {error}")
    );
    assert_eq!(events, [reasons::CATALOG_UNAUTHORIZED, "Created"]);
}

#[tokio::test]
async fn a_catalog_not_knowing_the_table_is_the_degraded_reason_with_the_catalogs_message() {
    let error = "Unity Catalog at https://adb-1.2.azuredatabricks.net: cannot find table bronze.iot.sensors: the table does not exist (create it first, or unset spec.sink.delta.unityCatalog.tableMustExist and set storageRoot so Tributary creates it)";
    let (degraded, events) = catalog_scenario(reasons::TABLE_NOT_FOUND, error).await;
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some(reasons::TABLE_NOT_FOUND))
    );
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("the Unity Catalog has no such table: sensors-7d9-abc: ")
            && message.ends_with(error),
        "{message}"
    );
    assert_eq!(events, ["Created", reasons::TABLE_NOT_FOUND]);
}

#[tokio::test]
async fn an_unknown_error_reason_is_left_to_the_crash_loop() {
    let (degraded, _) = catalog_scenario("SomethingElse", "the worker failed").await;
    assert_eq!(degraded["reason"], reasons::CRASH_LOOPING, "{degraded}");
}

/// A live worker pod of the ingestion, with its container's restart count.
fn worker_pod(name: &str, restarts: i32) -> k8s_openapi::api::core::v1::Pod {
    typed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "iot", "labels": {
            "app.kubernetes.io/name": "tributary-worker", "tributary.dev/ingestion": "sensors"}},
        "status": {"containerStatuses": [{
            "name": "worker", "image": "w", "imageID": "", "ready": restarts == 0,
            "restartCount": restarts,
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "message": "error: cannot reach kafka:9092"}}
        }]}
    }))
}

/// The config hash the builder gives an ingestion.
fn config_hash(si: &tributary_crds::StreamingIngestion) -> String {
    let settings = tributary_operator::resources::Settings {
        worker_image: "registry.test/worker:1".into(),
        ..Default::default()
    };
    tributary_operator::resources::build(si, &settings)
        .expect("builds")
        .config_hash
}

#[tokio::test]
async fn lag_the_workers_report_scales_the_deployment_without_restarting_them() {
    let mut si =
        ingestion("  autoscaling: {minReplicas: 1, maxReplicas: 4, targetLagPerWorker: 1000}\n");
    // One worker owns the topic's six partitions and is 4,500 offsets behind.
    si.status = Some(typed(json!({
        "observedGeneration": 2,
        "workload": {"kind": "Deployment", "name": "sensors"},
        "autoscaling": {"desiredReplicas": 1, "lastScaleTime": "2026-01-01T00:00:00Z"},
        "workers": [{"name": "sensors-7d9-abc", "lag": 4500,
                     "partitions": ["sensors-0", "sensors-1", "sensors-2", "sensors-3", "sensors-4", "sensors-5"]}]
    })));
    let cached = Contents {
        ingestions: vec![si.clone()],
        pods: vec![worker_pod("sensors-7d9-abc", 0)],
        ..Contents::default()
    };
    // The workers' manifest leaves the count out: the same hash as a fixed count of one.
    let unscaled_hash = config_hash(&ingestion("  replicas: 1\n"));
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        deployment.assert_apply();
        // ceil(4500 / 1000) = 5, bounded by maxReplicas.
        assert_eq!(deployment.body["spec"]["replicas"], 4);
        assert_eq!(
            deployment.str_at("/spec/template/metadata/annotations/tributary.dev~1config-hash"),
            unscaled_hash
        );
        deployment.echo();
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["autoscaling"]["desiredReplicas"], 4);
        let message = status["autoscaling"]["message"]
            .as_str()
            .expect("a message");
        assert!(
            message.starts_with(
                "1 -> 4 workers: lag 4500 with a target of 1000 per worker asks for 5 (bounds 1..4)"
            ),
            "{message}"
        );
        assert!(status["autoscaling"]["lastScaleTime"].is_string());
        assert_eq!(status["lag"], 4500);
        let (reason, note) = event_published(&mut h).await;
        assert_eq!((reason.as_str(), note.as_str()), ("ScaledUp", message));
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 10);
}

#[tokio::test]
async fn a_worker_past_max_restarts_stops_the_ingestion_with_its_last_error() {
    let mut si = ingestion("  maxRestarts: 3\n");
    si.status = Some(typed(json!({
        "observedGeneration": 2,
        "workload": {"kind": "Deployment", "name": "sensors"},
    })));
    let cached = Contents {
        ingestions: vec![si.clone()],
        pods: vec![worker_pod("sensors-7d9-abc", 3)],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        let deployment = expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors")).await;
        assert_eq!(deployment.body["spec"]["replicas"], 0, "the workers stop");
        let mut answer = deployment.body.clone();
        answer["metadata"]["generation"] = json!(5);
        answer["status"] = json!({"observedGeneration": 5, "replicas": 1});
        deployment.ok(&answer);
        let status = status_applied(&mut h, &si_for_script).await;
        assert_eq!(status["phase"], "Failed");
        let degraded = condition(&status, types::DEGRADED);
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some(reasons::RESTART_LIMIT_REACHED))
        );
        let message = degraded["message"].as_str().expect("a message");
        assert!(
            message.starts_with("worker sensors-7d9-abc restarted 3 times (spec.maxRestarts 3); last exit code 1: error: cannot reach kafka:9092"),
            "{message}"
        );
        assert_eq!(
            condition(&status, types::READY)["reason"],
            reasons::RESTART_LIMIT_REACHED
        );
        let (reason, note) = event_published(&mut h).await;
        assert_eq!((reason.as_str(), note.as_str()), (reasons::RESTART_LIMIT_REACHED, message));
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 10);
}

/// A running worker pod of the ingestion, as the cache holds it.
fn running_worker(name: &str) -> k8s_openapi::api::core::v1::Pod {
    typed(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "iot", "labels": {
            "app.kubernetes.io/name": "tributary-worker", "tributary.dev/ingestion": "sensors"}},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "worker", "image": "w", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}
        }]}
    }))
}

#[tokio::test]
async fn a_reset_in_the_spec_is_requested_then_applied_with_an_event_each() {
    const RESET: &str = "  reset: {id: replay-1, timestamp: '2026-11-30T12:00:00Z'}\n";
    // The spec gains a reset (generation 2; the status saw generation 1): the workers roll
    // with it, and the status says it is requested.
    let mut si = ingestion(RESET);
    si.status = Some(tributary_crds::StreamingIngestionStatus {
        observed_generation: Some(1),
        workload: Some(tributary_crds::WorkloadRef {
            kind: "Deployment".into(),
            name: "sensors".into(),
        }),
        ..Default::default()
    });
    let cached = Contents {
        ingestions: vec![si.clone()],
        deployments: vec![typed(workload("apps/v1", "Deployment", "sensors"))],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let requested = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    let record = requested.clone();
    let outcome = run_scenario(si.clone(), cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors"))
            .await
            .echo();
        let status = status_applied(&mut h, &si_for_script).await;
        let reset = status["reset"].clone();
        assert_eq!(reset["id"], "replay-1");
        assert_eq!(reset["state"], "Requested");
        assert_eq!(reset["to"], "timestamp 2026-11-30T12:00:00Z");
        assert!(reset["requestedAt"].is_string(), "{reset}");
        assert!(reset.get("appliedAt").is_none(), "{reset}");
        let mut events = [event_published(&mut h).await, event_published(&mut h).await];
        events.sort();
        assert_eq!(events[0].0, "ResetRequested");
        assert!(
            events[0]
                .1
                .contains("offset reset replay-1 to timestamp 2026-11-30T12:00:00Z requested"),
            "{}",
            events[0].1
        );
        assert_eq!(events[1].0, "Updated");
        *record.lock().expect("record") = status;
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 11);

    // A worker reports that the table records it: Applied, once.
    let mut status: tributary_crds::StreamingIngestionStatus =
        serde_json::from_value(requested.lock().expect("status").clone()).expect("status");
    let requested_at = status.reset.as_ref().and_then(|r| r.requested_at.clone());
    status.workers = vec![tributary_crds::WorkerStatus {
        name: "sensors-5d8f-a".into(),
        reset: Some(tributary_crds::AppliedReset {
            id: "replay-1".into(),
            applied_at: "2026-11-30T12:00:07+00:00".into(),
            delta_version: Some(41),
        }),
        ..Default::default()
    }];
    si.status = Some(status);
    let cached = Contents {
        ingestions: vec![si.clone()],
        deployments: vec![typed(workload("apps/v1", "Deployment", "sensors"))],
        pods: vec![running_worker("sensors-5d8f-a")],
        ..Contents::default()
    };
    let si_for_script = si.clone();
    let outcome = run_scenario(si, cached, move |mut h| async move {
        secret_exists(&mut h).await;
        support_objects_applied(&mut h).await;
        expect(&mut h, Method::PATCH, &format!("{DEPLOYMENTS}/sensors"))
            .await
            .echo();
        let status = status_applied(&mut h, &si_for_script).await;
        let reset = &status["reset"];
        assert_eq!(reset["state"], "Applied");
        assert_eq!(reset["appliedAt"], "2026-11-30T12:00:07+00:00");
        assert_eq!(reset["deltaVersion"], 41);
        assert_eq!(
            reset["requestedAt"].as_str(),
            requested_at.as_deref(),
            "the request keeps its time"
        );
        let (reason, note) = event_published(&mut h).await;
        assert_eq!(reason, "ResetApplied");
        assert!(
            note.contains("offset reset replay-1 to timestamp 2026-11-30T12:00:00Z applied at 2026-11-30T12:00:07+00:00, table version 41"),
            "{note}"
        );
        h
    })
    .await;
    outcome.result.expect("reconcile succeeds");
    assert_eq!(outcome.api_calls, 10);
}
