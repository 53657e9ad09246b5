//! The chart, the API and the examples against the real API server: helm's values schema,
//! `helm install` with the operator running under the chart's ServiceAccount, its RBAC as the
//! real authorizer sees it, every example accepted by `kubectl apply`, every CEL rule refused
//! with the message the crds tests expect, `kubectl explain`, `helm upgrade` and
//! `helm uninstall`.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// Namespace the operator watches in this test; the examples go elsewhere, so no workers start
/// for them (their brokers and storage accounts do not exist here).
const WATCHED: &str = "watched";
const EXAMPLES_NAMESPACE: &str = "iot";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_examples_and_cel_rules_against_a_real_api_server() {
    let cluster = start_cluster().await;
    let chart = repo().join("charts/tributary");
    let chart = chart.to_str().expect("utf-8 path");

    // --- helm enforces values.schema.json ------------------------------------------------------
    let refused = cluster
        .helm([
            "install",
            RELEASE,
            chart,
            "--namespace",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "--set",
            "replicas=two",
        ])
        .await
        .expect("helm runs");
    let text = output_text(&refused);
    assert!(
        !refused.status.success(),
        "helm accepted replicas=two: {text}"
    );
    assert!(
        text.contains("values don't meet the specifications of the schema")
            && text.contains("replicas"),
        "helm's refusal should name replicas: {text}"
    );

    // --- install, the operator runs as the chart's ServiceAccount -------------------------------
    kubectl(&cluster, &["create", "namespace", WATCHED]).await;
    let watch = format!("watchNamespaces={{{WATCHED}}}");
    let installed = install_chart(&cluster, &["--set", &watch]).await;
    assert!(
        installed.contains("STATUS: deployed"),
        "helm install output: {installed}"
    );
    kubectl(
        &cluster,
        &[
            "-n",
            RELEASE_NAMESPACE,
            "wait",
            "--for=condition=Available",
            "deployment/tributary-operator",
            "--timeout=120s",
        ],
    )
    .await;
    let operator_pod = get_json(
        &cluster,
        &[
            "-n",
            RELEASE_NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=tributary",
        ],
    )
    .await;
    let pods = operator_pod["items"].as_array().expect("pod list");
    assert_eq!(pods.len(), 1, "one operator pod: {operator_pod}");
    assert_eq!(pods[0]["spec"]["serviceAccountName"], "tributary-operator");
    assert_eq!(pods[0]["status"]["phase"], "Running");

    // The operator's RBAC as the real authorizer decides it: least privilege, namespaced.
    let operator = "system:serviceaccount:tributary-system:tributary-operator";
    for (question, namespace, expected) in [
        (&["get", "secrets"][..], WATCHED, "yes"),
        (&["list", "secrets"][..], WATCHED, "no"),
        (
            &["patch", "streamingingestions", "--subresource=status"][..],
            WATCHED,
            "yes",
        ),
        (&["patch", "streamingingestions"][..], WATCHED, "no"),
        (&["delete", "streamingingestions"][..], WATCHED, "no"),
        (&["create", "deployments"][..], WATCHED, "yes"),
        (&["create", "deployments"][..], EXAMPLES_NAMESPACE, "no"),
        // Leases only with leader election, which is off by default.
        (&["create", "leases"][..], RELEASE_NAMESPACE, "no"),
    ] {
        let mut args = vec!["auth", "can-i"];
        args.extend_from_slice(question);
        args.extend(["-n", namespace, "--as", operator]);
        let output = cluster.kubectl(args).await.expect("kubectl runs");
        let answer = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert_eq!(
            answer,
            expected,
            "can the operator {} in {namespace}? {}",
            question.join(" "),
            output_text(&output)
        );
    }

    // --- kubectl explain shows the schema's descriptions -------------------------------------------
    let explain = kubectl(
        &cluster,
        &["explain", "streamingingestion.spec.source.kafka"],
    )
    .await;
    capture(
        "explain-kafka",
        "kubectl explain streamingingestion.spec.source.kafka",
        &explain,
    );
    let crd = get_json(
        &cluster,
        &["get", "crd", "streamingingestions.tributary.dev"],
    )
    .await;
    let kafka = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["source"]["properties"]["kafka"];
    let description = kafka["properties"]["bootstrapServers"]["description"]
        .as_str()
        .expect("bootstrapServers has a description");
    // kubectl wraps descriptions: compare with whitespace collapsed.
    let flat = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let first_words = description
        .split_whitespace()
        .take(8)
        .collect::<Vec<_>>()
        .join(" ");
    let explained = flat(&explain);
    for expected in [
        "GROUP: tributary.dev",
        "KIND: StreamingIngestion",
        "FIELDS:",
        "bootstrapServers",
        "subscribe",
        &first_words,
    ] {
        assert!(
            explained.contains(expected),
            "kubectl explain lacks {expected:?}:\n{explain}"
        );
    }

    // --- every example is accepted -------------------------------------------------------------------
    kubectl(&cluster, &["create", "namespace", EXAMPLES_NAMESPACE]).await;
    let mut names = Vec::new();
    let mut examples: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 5, "examples/: {examples:?}");
    for example in &examples {
        let file = example.to_str().expect("utf-8 path");
        let applied = kubectl(&cluster, &["apply", "-f", file]).await;
        for line in applied.lines() {
            if let Some(name) = line.strip_prefix("streamingingestion.tributary.dev/") {
                names.push(name.trim_end_matches(" created").to_string());
            }
        }
    }
    assert_eq!(
        names.len(),
        examples.len(),
        "one StreamingIngestion per example: {names:?}"
    );
    let listed = kubectl(
        &cluster,
        &["get", "streams", "-n", EXAMPLES_NAMESPACE, "-o", "name"],
    )
    .await;
    for name in &names {
        assert!(
            listed.contains(&format!("streamingingestion.tributary.dev/{name}")),
            "{name} not listed by kubectl get streams: {listed}"
        );
    }
    // Defaults are read, not written: the stored spec is what the user applied (no drift).
    let stored = get_json(
        &cluster,
        &["-n", EXAMPLES_NAMESPACE, "get", "stream", "sensor-readings"],
    )
    .await;
    assert!(
        stored["spec"].get("suspend").is_none(),
        "a default was written: {}",
        stored["spec"]
    );

    // --- every CEL rule refuses a bad spec with its message ---------------------------------------
    let valid = example_json("sensor-readings.yaml");
    for (mutate, message) in cel_violations() {
        let mut object = valid.clone();
        mutate(&mut object);
        object["metadata"]["name"] = json!("cel-violation");
        object["metadata"]["namespace"] = json!(EXAMPLES_NAMESPACE);
        let output = cluster
            .kubectl_stdin(["apply", "-f", "-"], &object.to_string())
            .await
            .expect("kubectl runs");
        let text = output_text(&output);
        assert!(
            !output.status.success(),
            "the API server accepted a spec violating {message:?}"
        );
        if message.starts_with("spec.schedule") {
            capture(
                "cel-refusal",
                "kubectl apply -f scheduled-without-availableNow.yaml",
                &text,
            );
        }
        assert!(
            text.contains("is invalid") && text.contains(message),
            "refusal should say {message:?}:\n{text}"
        );
    }

    // --- helm upgrade rolls the operator with the new values ------------------------------------
    let before = operator_pod_names(&cluster).await;
    let upgraded = helm(
        &cluster,
        &[
            "upgrade",
            RELEASE,
            chart,
            "--namespace",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--set",
            "logLevel=warn",
            "--wait",
            "--timeout",
            "240s",
        ],
    )
    .await;
    assert!(
        upgraded.contains("REVISION: 2"),
        "helm upgrade output: {upgraded}"
    );
    let deployment = get_json(
        &cluster,
        &[
            "-n",
            RELEASE_NAMESPACE,
            "get",
            "deployment",
            "tributary-operator",
        ],
    )
    .await;
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "RUST_LOG" && e["value"] == "warn"),
        "upgrade did not reach the Deployment: {env}"
    );
    wait_until(
        &cluster,
        "the operator pod replaced after helm upgrade",
        Duration::from_secs(120),
        || async {
            let now = operator_pod_names(&cluster).await;
            now.len() == 1 && !before.contains(&now[0])
        },
    )
    .await;

    // --- helm uninstall: the operator goes, the CRD and the ingestions stay (README) ----------------
    helm(
        &cluster,
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            RELEASE_NAMESPACE,
            "--wait",
        ],
    )
    .await;
    wait_until(
        &cluster,
        "the operator's pods gone after helm uninstall",
        Duration::from_secs(90),
        || async { operator_pod_names(&cluster).await.is_empty() },
    )
    .await;
    kubectl(
        &cluster,
        &["get", "crd", "streamingingestions.tributary.dev"],
    )
    .await;
    let left = kubectl(
        &cluster,
        &["get", "streams", "-n", EXAMPLES_NAMESPACE, "-o", "name"],
    )
    .await;
    assert_eq!(
        left.lines().count(),
        names.len(),
        "ingestions after uninstall: {left}"
    );
}

async fn operator_pod_names(cluster: &tributary_e2e::cluster::Cluster) -> Vec<String> {
    let pods = get_json(
        cluster,
        &[
            "-n",
            RELEASE_NAMESPACE,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=tributary",
        ],
    )
    .await;
    pods["items"]
        .as_array()
        .expect("pod list")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn example_json(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("examples").join(name)).expect("example");
    serde_saphyr::from_str(&text).expect("example parses")
}

type Mutation = Box<dyn Fn(&mut Value)>;

/// One violation per CEL rule, with the message crds/tests/api.rs expects.
fn cel_violations() -> Vec<(Mutation, &'static str)> {
    vec![
        (
            Box::new(|o: &mut Value| {
                o["spec"]["source"]["eventHubs"] = json!({"namespace": "ns", "eventHub": "t",
                    "connectionString": {"secretKeyRef": {"name": "s", "key": "k"}}})
            }),
            "spec.source must set exactly one of kafka or eventHubs",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["source"]["kafka"]["subscribePattern"] = json!("sensor-.*")
            }),
            "spec.source.kafka must set exactly one of subscribe, subscribePattern or assign",
        ),
        (
            Box::new(|o: &mut Value| o["spec"]["schedule"] = json!("*/15 * * * *")),
            "spec.schedule runs the ingestion as a CronJob and needs spec.trigger: {availableNow: true}",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["trigger"] = json!({"availableNow": true});
                o["spec"]["replicas"] = json!(3);
            }),
            "spec.replicas must be 0 or 1 with trigger availableNow or once",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["trigger"] = json!({"processingTime": "10 fortnights"})
            }),
            "processingTime must be a duration such as 10s",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["trigger"] = json!({"processingTime": "10s", "availableNow": true})
            }),
            "spec.trigger may set only one of processingTime, availableNow or once",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["source"]["kafka"]["startingOffsets"] = json!("beginning")
            }),
            "startingOffsets must be earliest, latest, or per-partition JSON",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["source"]["kafka"]["options"] = json!({"enable.auto.commit": "true"})
            }),
            "options must not set auto.offset.reset, enable.auto.commit",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["source"]["kafka"]["options"] = json!({"sasl.password": "hunter2"})
            }),
            tributary_crds::secrets::SECRET_OPTIONS_RULE_MESSAGE,
        ),
        (
            Box::new(|o: &mut Value| o["spec"]["format"]["json"]["onError"] = json!("deadLetter")),
            "onError: deadLetter needs format.json.deadLetter.uri",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["format"]["json"]["deadLetter"] = json!({"uri": "/lake/dlq"})
            }),
            "format.json.deadLetter is only used with onError: deadLetter",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["format"]["json"]["schema"][0]["name"] = json!("device id")
            }),
            "schema field names must not contain spaces",
        ),
        (
            Box::new(|o: &mut Value| o["spec"]["sink"]["delta"]["table"] = json!("main.bronze.t")),
            "spec.sink.delta.uri and spec.sink.delta.table both name the table",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["sink"]["delta"] = json!({"table": "main.bronze.t"})
            }),
            "spec.sink.delta.table is a Unity Catalog name and needs spec.sink.delta.unityCatalog",
        ),
        (
            Box::new(|o: &mut Value| o["spec"]["runs"] = json!({"backoffLimit": 1})),
            tributary_crds::spec::RUNS_NEED_A_RUN_TO_COMPLETION,
        ),
        (
            Box::new(|o: &mut Value| o["spec"]["sink"]["delta"]["outputMode"] = json!("complete")),
            "outputMode complete rewrites the whole result of a streaming aggregation",
        ),
        (
            Box::new(|o: &mut Value| {
                if let Some(checkpoint) = o["spec"]["checkpoint"].as_object_mut() {
                    checkpoint.remove("volume");
                }
            }),
            "spec.checkpoint.location is a path, so spec.checkpoint.volume must name the claim",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["checkpoint"]["volume"] = json!({"claimName": "c", "size": "1Gi"})
            }),
            "volume needs exactly one of claimName (an existing claim) or size",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["checkpoint"]["volume"] = json!({"claimName": "c", "mountPath": "/data"})
            }),
            "spec.checkpoint.location must be under spec.checkpoint.volume.mountPath",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["checkpoint"]["queryId"] = json!("Sensor-Ingestion")
            }),
            tributary_crds::spec::QUERY_ID_MESSAGE,
        ),
        (
            Box::new(|o: &mut Value| o["spec"]["reset"] = json!({"id": "r1"})),
            tributary_crds::spec::RESET_ONE_OF_MESSAGE,
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["reset"] = json!({"id": "r 1", "offsets": "latest"})
            }),
            tributary_crds::spec::RESET_ID_MESSAGE,
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["reset"] = json!({"id": "r1", "timestamp": "yesterday"})
            }),
            tributary_crds::spec::RESET_TIMESTAMP_MESSAGE,
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["reset"] = json!({"id": "r1", "offsets": "from the start"})
            }),
            "spec.reset.offsets must be earliest, latest, or per-partition JSON",
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["sink"]["delta"]["logRetentionDuration"] = json!("30 days")
            }),
            tributary_crds::spec::DELTA_INTERVAL_MESSAGE,
        ),
        (
            Box::new(|o: &mut Value| {
                o["spec"]["sink"]["delta"]["deletedFileRetentionDuration"] =
                    json!("interval 167 hours")
            }),
            tributary_crds::spec::DELETED_FILE_RETENTION_MESSAGE,
        ),
        (
            Box::new(|o: &mut Value| {
                if let Some(spec) = o["spec"].as_object_mut() {
                    spec.remove("replicas");
                }
                o["spec"]["autoscaling"] =
                    json!({"maxReplicas": 4, "targetLagPerWorker": 10, "targetSecondsBehind": 60})
            }),
            tributary_crds::spec::AUTOSCALING_TARGET_MESSAGE,
        ),
    ]
}
