//! Leader election against the scripted API server.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use serde_json::json;
use tributary_operator::leader::LeaderElector;

use crate::harness::{Handle, expect};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/tributary-system/leases";

async fn attempt<F, Fut>(script: F) -> bool
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Handle> + Send + 'static,
{
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let elector = LeaderElector::new(
        kube::Client::new(service, "default"),
        "tributary-system",
        "operator-a".into(),
    );
    let server = tokio::spawn(script(handle));
    let held = tokio::time::timeout(Duration::from_secs(10), elector.try_acquire())
        .await
        .expect("the attempt finished in time");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the script finished")
        .expect("the script's checks passed");
    held.expect("no API error")
}

fn lease(holder: &str, renewed: Timestamp) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "tributary-operator", "namespace": "tributary-system", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": holder, "leaseDurationSeconds": 15,
            "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        }
    })
}

#[tokio::test]
async fn a_missing_lease_is_created_and_held() {
    assert!(
        attempt(|mut h| async move {
            expect(&mut h, Method::GET, &format!("{LEASES}/tributary-operator"))
                .await
                .not_found();
            let create = expect(&mut h, Method::POST, LEASES).await;
            assert_eq!(create.str_at("/metadata/name"), "tributary-operator");
            assert_eq!(create.str_at("/spec/holderIdentity"), "operator-a");
            assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
            let body = create.body.clone();
            create.respond(StatusCode::CREATED, &body);
            h
        })
        .await
    );
}

#[tokio::test]
async fn a_fresh_lease_of_another_replica_is_not_touched() {
    assert!(
        !attempt(|mut h| async move {
            expect(&mut h, Method::GET, &format!("{LEASES}/tributary-operator"))
                .await
                .ok(&lease("operator-b", Timestamp::now()));
            assert!(
                tokio::time::timeout(Duration::from_millis(300), h.next_request())
                    .await
                    .is_err(),
                "a standby must not write the Lease"
            );
            h
        })
        .await
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_with_optimistic_concurrency() {
    let stale = Timestamp::now() - SignedDuration::from_secs(60);
    assert!(
        !attempt(move |mut h| async move {
            expect(&mut h, Method::GET, &format!("{LEASES}/tributary-operator"))
                .await
                .ok(&lease("operator-b", stale));
            let replace = expect(&mut h, Method::PUT, &format!("{LEASES}/tributary-operator")).await;
            assert_eq!(replace.str_at("/metadata/resourceVersion"), "7");
            assert_eq!(replace.str_at("/spec/holderIdentity"), "operator-a");
            assert_eq!(replace.body["spec"]["leaseTransitions"], 1);
            // Another replica won the race: a conflict, which is "not leader", not an error.
            replace.respond(
                StatusCode::CONFLICT,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
            );
            h
        })
        .await
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
    use tributary_operator::leader::{LEASE_DURATION, RENEW_DEADLINE};

    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let elector = LeaderElector::new(
        kube::Client::new(service, "default"),
        "tributary-system",
        "operator-a".into(),
    );
    // Every renewal attempt fails: the API server answers 500.
    let server = tokio::spawn(async move {
        let mut attempts = 0;
        while let Ok(Some((request, send))) =
            tokio::time::timeout(Duration::from_secs(60), handle.next_request()).await
        {
            assert_eq!(request.method(), Method::GET);
            assert_eq!(request.uri().path(), format!("{LEASES}/tributary-operator"));
            attempts += 1;
            let body = serde_json::to_vec(&json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is down"}))
                .expect("serialisable");
            send.send_response(
                Response::builder()
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .expect("response builds"),
            );
        }
        attempts
    });
    let started = tokio::time::Instant::now();
    let lost = tokio::time::timeout(Duration::from_secs(60), elector.keep())
        .await
        .expect("the leader gives up");
    let held_for = started.elapsed();
    assert!(
        matches!(lost, tributary_operator::Error::LeadershipLost(_)),
        "{lost}"
    );
    assert!(
        held_for >= RENEW_DEADLINE && held_for < LEASE_DURATION,
        "stepped down after {held_for:?}: must be after the renew deadline and before a standby may take over"
    );
    drop(elector);
    let attempts = server.await.expect("the script ran");
    assert!(attempts >= 2, "{attempts} renewal attempts");
}
