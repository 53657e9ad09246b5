//! What a user sees when an ingestion cannot run, in the real control plane: an unreachable
//! broker, a worker that crash-loops, and a checkpoint two ingestions name. Each shows its
//! condition and reason in `kubectl describe`, an Event says it, and Argo CD's health check
//! reads Degraded.

use std::net::TcpListener;

use serde_json::{Value, json};
use tributary_crds::conditions::reasons;

use super::ingestion::{
    NAMESPACE, PARTITIONS, TOPIC, WAIT, assert_health, condition, example_value, stream,
    worker_pods,
};
use super::*;
use tributary_testkit::kafka::Kafka;

/// The continuous example as `name`, with its own table and checkpoint.
fn ingestion(name: &str, bootstrap: &str) -> Value {
    let mut object = example_value("sensor-readings.yaml", bootstrap);
    object["metadata"]["name"] = json!(name);
    object["spec"]["checkpoint"]["location"] = json!(format!("/checkpoints/{name}"));
    object["spec"]["sink"]["delta"]["uri"] = json!(format!("/lake/bronze/iot/{name}"));
    object
}

async fn apply(cluster: &Cluster, object: &Value) {
    let output = cluster
        .kubectl_stdin(["apply", "-f", "-"], &object.to_string())
        .await
        .expect("kubectl runs");
    if !output.status.success() {
        fail(cluster, &format!("kubectl apply: {}", output_text(&output)));
    }
}

/// Waits for Degraded=True with `reason` on `name`; its message.
async fn wait_degraded(cluster: &Cluster, name: &str, reason: &str) -> String {
    wait_until(
        cluster,
        &format!("Degraded/{reason} on {name}"),
        WAIT,
        || async {
            let object = stream(cluster, name).await;
            condition(&object, "Degraded")
                .is_some_and(|c| c["status"] == "True" && c["reason"] == reason)
        },
    )
    .await;
    let object = stream(cluster, name).await;
    condition(&object, "Degraded")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// `kubectl describe` shows the reason and `detail`; a Warning Event with the reason names
/// the ingestion. Returns the describe output.
async fn assert_described(cluster: &Cluster, name: &str, reason: &str, detail: &str) -> String {
    let describe = kubectl(cluster, &["-n", NAMESPACE, "describe", "stream", name]).await;
    assert!(
        describe.contains(reason) && describe.contains(detail),
        "kubectl describe stream {name} should show {reason} and {detail:?}:\n{describe}"
    );
    let selector = format!("involvedObject.name={name},reason={reason},type=Warning");
    wait_until(
        cluster,
        &format!("a Warning Event {reason} on {name}"),
        Duration::from_secs(60),
        || async {
            let events = kubectl(
                cluster,
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "events",
                    "--field-selector",
                    &selector,
                    "-o",
                    "name",
                ],
            )
            .await;
            !events.trim().is_empty()
        },
    )
    .await;
    assert_health(cluster, name, "Degraded").await;
    describe
}

fn closed_port() -> u16 {
    // Bound and released: nothing listens there while the test runs (the kernel hands out
    // ephemeral ports in order, so it is not reused within the test).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    listener.local_addr().expect("local address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_show_their_reason_in_describe_with_an_event() {
    let cluster = start_cluster().await;
    install_chart(&cluster, &[]).await;
    let broker = Kafka::start();
    broker.topic(TOPIC, PARTITIONS);
    kubectl(&cluster, &["create", "namespace", NAMESPACE]).await;
    for claim in ["lake", "checkpoints"] {
        apply(
            &cluster,
            &json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": NAMESPACE},
                "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
            }),
        )
        .await;
    }

    // --- an unreachable broker: the worker gives up after its connection bound and restarts --------
    let nowhere = format!("127.0.0.1:{}", closed_port());
    apply(&cluster, &ingestion("unreachable", &nowhere)).await;
    let message = wait_degraded(&cluster, "unreachable", reasons::CRASH_LOOPING).await;
    assert!(
        message.contains(&format!("cannot reach Kafka at {nowhere}")),
        "the Degraded message should carry the worker's error: {message}"
    );
    let describe = assert_described(
        &cluster,
        "unreachable",
        reasons::CRASH_LOOPING,
        &format!("cannot reach Kafka at {nowhere}"),
    )
    .await;
    capture(
        "describe-unreachable-broker",
        "kubectl describe stream unreachable -n iot",
        &describe,
    );
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "delete",
            "stream",
            "unreachable",
            "--wait=true",
        ],
    )
    .await;

    // --- a worker that crash-loops: its topic does not exist (a typo in subscribe) ----------------
    let mut typo = ingestion("typo", &broker.bootstrap);
    typo["spec"]["source"]["kafka"]["subscribe"] = json!(["sensor-reading"]);
    apply(&cluster, &typo).await;
    let message = wait_degraded(&cluster, "typo", reasons::CRASH_LOOPING).await;
    assert!(
        message.contains("topic sensor-reading does not exist") && message.contains("exit code"),
        "the Degraded message should carry the exit code and the worker's error: {message}"
    );
    let describe = assert_described(
        &cluster,
        "typo",
        reasons::CRASH_LOOPING,
        "topic sensor-reading does not exist",
    )
    .await;
    capture(
        "describe-crash-looping",
        "kubectl describe stream typo -n iot",
        &describe,
    );
    kubectl(
        &cluster,
        &["-n", NAMESPACE, "delete", "stream", "typo", "--wait=true"],
    )
    .await;

    // --- one checkpoint named by two ingestions: the younger one is refused, the older runs ------
    let shared = |name: &str| {
        let mut object = ingestion(name, &broker.bootstrap);
        object["spec"]["checkpoint"] = json!({
            "location": "/checkpoints/shared",
            "volume": {"claimName": "checkpoints", "mountPath": "/checkpoints"},
        });
        object
    };
    apply(&cluster, &shared("first-writer")).await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=condition=Ready",
            "stream/first-writer",
            "--timeout=240s",
        ],
    )
    .await;
    apply(&cluster, &shared("second-writer")).await;
    let message = wait_degraded(&cluster, "second-writer", reasons::CHECKPOINT_IN_USE).await;
    assert!(message.contains("first-writer"), "{message}");
    let describe = assert_described(
        &cluster,
        "second-writer",
        reasons::CHECKPOINT_IN_USE,
        "already used by StreamingIngestion first-writer",
    )
    .await;
    capture(
        "describe-checkpoint-in-use",
        "kubectl describe stream second-writer -n iot",
        &describe,
    );
    assert!(
        worker_pods(&cluster, "second-writer").await.is_empty(),
        "the refused ingestion has workers"
    );
    let first = stream(&cluster, "first-writer").await;
    assert!(
        condition(&first, "Ready").is_some_and(|c| c["status"] == "True"),
        "the older ingestion stopped: {}",
        first["status"]
    );
}
