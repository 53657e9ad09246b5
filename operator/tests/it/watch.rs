//! The whole controller against a small fake API server: its watches fill the caches, and a
//! worker pod that starts crash-looping reaches the status through the pod watch, within the
//! debounce, long before the 30 s requeue would have found it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tributary_crds::conditions::{reasons, types};
use tributary_operator::controller::{self, DEBOUNCE};
use tributary_operator::metrics::Metrics;
use tributary_operator::reconcile::REQUEUE_ACTIVE;
use tributary_operator::resources::Settings;

use crate::harness::{condition, ingestion, list, to_value};

/// What the fake API server was sent, and the pod event it holds back until the test releases it.
#[derive(Default)]
struct Fake {
    /// Status applies, with when they arrived.
    statuses: Vec<(Instant, Value)>,
    /// Requests that were neither a watch nor a list.
    calls: Vec<String>,
    /// Released by the test: the next pod watch answers with this event.
    pod_event: Option<Value>,
}

fn pod(waiting: Option<&str>) -> Value {
    let state = match waiting {
        Some(reason) => json!({"waiting": {"reason": reason}}),
        None => json!({"running": {"startedAt": "2026-02-02T10:00:00Z"}}),
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sensors-7d9-abc", "namespace": "iot", "resourceVersion": "7",
            "labels": {"app.kubernetes.io/name": "tributary-worker",
                "app.kubernetes.io/managed-by": "tributary-operator",
                "tributary.dev/ingestion": "sensors"}},
        "status": {"containerStatuses": [{
            "name": "worker", "image": "w", "imageID": "", "ready": waiting.is_none(),
            "restartCount": if waiting.is_some() { 3 } else { 0 },
            "state": state,
            "lastState": {"terminated": {"exitCode": 2, "message": "broker unreachable"}}
        }]}
    })
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("serialisable")))
        .expect("response builds")
}

async fn serve(fake: Arc<Mutex<Fake>>, si: Value, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let body = body.collect_bytes().await.expect("request body");
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("JSON body")
    };
    if parts.method == Method::GET && query.contains("watch=true") {
        if path.ends_with("/pods") {
            // Hold the watch until the test releases the crash loop.
            loop {
                let released = fake.lock().expect("lock").pod_event.take();
                if let Some(event) = released {
                    let mut line = serde_json::to_vec(&event).expect("serialisable");
                    line.push(b'\n');
                    return Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(line))
                        .expect("response builds");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Nothing else changes: the other watches stay open and quiet.
        return std::future::pending().await;
    }
    if parts.method == Method::GET && !path.contains("/secrets/") {
        let items = if path.ends_with("/streamingingestions") {
            vec![si]
        } else if path.ends_with("/pods") {
            vec![pod(None)]
        } else {
            vec![]
        };
        return respond(StatusCode::OK, &list(items));
    }
    fake.lock()
        .expect("lock")
        .calls
        .push(format!("{} {path}", parts.method));
    match parts.method {
        Method::GET => respond(
            StatusCode::OK,
            &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "kafka-creds", "namespace": "iot"}}),
        ),
        Method::POST => respond(StatusCode::CREATED, &body),
        Method::PATCH if path.ends_with("/status") => {
            fake.lock()
                .expect("lock")
                .statuses
                .push((Instant::now(), body["status"].clone()));
            let mut answer = si.clone();
            answer["status"] = body["status"].clone();
            respond(StatusCode::OK, &answer)
        }
        _ => respond(StatusCode::OK, &body),
    }
}

/// Waits until the fake has seen `count` status applies; returns the last one.
async fn status_number(
    fake: &Arc<Mutex<Fake>>,
    count: usize,
    within: Duration,
) -> (Instant, Value) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = fake.lock().expect("lock").statuses.get(count - 1).cloned() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "status apply number {count} did not come within {within:?}; requests: {:?}",
            fake.lock().expect("lock").calls
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_crash_loop_reaches_the_status_through_the_pod_watch_within_seconds() {
    let mut si = to_value(&ingestion(""));
    si["metadata"]["resourceVersion"] = json!("5");
    let fake = Arc::new(Mutex::new(Fake::default()));
    let service = {
        let fake = fake.clone();
        tower::service_fn(move |request: Request<Body>| {
            let (fake, si) = (fake.clone(), si.clone());
            async move { Ok::<_, std::convert::Infallible>(serve(fake, si, request).await) }
        })
    };
    let client = kube::Client::new(service, "default");
    let running = tokio::spawn(controller::run(
        client,
        Settings::default(),
        Arc::new(Metrics::new()),
        vec!["iot".to_string()],
    ));

    // The first reconcile: a healthy worker, the Deployment not reporting yet.
    let (_, first) = status_number(&fake, 1, Duration::from_secs(20)).await;
    assert_eq!(
        condition(&first, types::DEGRADED)["status"],
        "Unknown",
        "{first}"
    );

    // The worker starts crash-looping; only the pod watch says so.
    let mut crashing = pod(Some("CrashLoopBackOff"));
    crashing["metadata"]["resourceVersion"] = json!("8");
    let released = Instant::now();
    fake.lock().expect("lock").pod_event = Some(json!({"type": "MODIFIED", "object": crashing}));
    let (seen, second) = status_number(&fake, 2, REQUEUE_ACTIVE / 2).await;
    let degraded = condition(&second, types::DEGRADED);
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some(reasons::CRASH_LOOPING)),
        "{second}"
    );
    let took = seen.duration_since(released);
    eprintln!("the crash loop reached the status {took:?} after the pod changed");
    assert!(
        took < DEBOUNCE + Duration::from_secs(5),
        "the crash loop took {took:?} to reach the status"
    );
    running.abort();
}
