//! Ingestions end to end in the real control plane: the chart's operator turns the examples
//! into Deployments and Jobs, the kubelet runs their worker pods as processes against an Apache
//! Kafka broker on 127.0.0.1 (the shared harness, testkit/src/kafka.rs), the workers write Delta tables on the
//! claims' directories and their status through their own ServiceAccount's RBAC, and what a
//! user sees (`kubectl wait`, `kubectl get streams`, `kubectl describe`, the Argo CD health) is
//! checked at each step: continuous, availableNow, suspend and resume, scaling, a missing
//! Secret, deletion with garbage collection by the real controller manager.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_crds::conditions::reasons;
use tributary_e2e::bench::produce::produce_all;
use tributary_e2e::cluster::Cluster;

use super::*;
use tributary_testkit::kafka::Kafka;

pub(super) const NAMESPACE: &str = "iot";
pub(super) const TOPIC: &str = "sensor-readings";
pub(super) const PARTITIONS: i32 = 3;
const FIRST: u64 = 3000;
const SECOND: u64 = 2000;
const THIRD: u64 = 1000;
/// Records produced while autoscaling watches: at 30 offsets a batch, a lag well above the
/// target of 100 per worker for long enough to be reported.
const AUTOSCALED: u64 = 6000;
/// Records per round while waiting for the three workers to report their partitions.
const ROUND: u64 = 300;
pub(super) const WAIT: Duration = Duration::from_secs(180);

/// An example with its broker replaced by the test's.
pub(super) fn example(name: &str, bootstrap: &str) -> String {
    let text = std::fs::read_to_string(repo().join("examples").join(name)).expect("example");
    assert!(
        text.contains("kafka.kafka.svc.cluster.local:9092"),
        "{name} names another broker"
    );
    text.replace("kafka.kafka.svc.cluster.local:9092", bootstrap)
}

/// Rows in a Delta table, replaying its log (adds less removes, so compaction counts once).
fn table_rows(table: &Path) -> Option<u64> {
    Some(live_files(table)?.values().sum())
}

/// The live data files of a Delta table and their row counts, replaying its log.
fn live_files(table: &Path) -> Option<BTreeMap<String, u64>> {
    let log = table.join("_delta_log");
    let mut files: Vec<_> = std::fs::read_dir(&log)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut live: BTreeMap<String, u64> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).ok()?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: Value = serde_json::from_str(line).ok()?;
            if let Some(add) = action.get("add") {
                let stats: Value = serde_json::from_str(add["stats"].as_str()?).ok()?;
                live.insert(
                    add["path"].as_str()?.to_string(),
                    stats["numRecords"].as_u64()?,
                );
            } else if let Some(remove) = action.get("remove") {
                live.remove(remove["path"].as_str()?);
            }
        }
    }
    Some(live)
}

/// (partition, offset) of every row of a Delta table, read from its live Parquet files: the
/// `kafka_*` metadata columns the examples ask for, each row naming the record it came from.
fn table_offsets(table: &Path, topic: &str) -> Vec<(i32, i64)> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::{Int32Type, Int64Type};
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let files = live_files(table).unwrap_or_else(|| panic!("no Delta log in {}", table.display()));
    let mut keys = Vec::new();
    for file in files.keys() {
        let path = table.join(file);
        let reader = std::fs::File::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| e.to_string()))
            .and_then(|b| b.build().map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for batch in reader {
            let batch = batch.unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("{} has no column {name}", path.display()))
                    .clone()
            };
            let topics = column("kafka_topic");
            let partitions = column("kafka_partition");
            let offsets = column("kafka_offset");
            let topics = topics.as_string::<i32>();
            let partitions = partitions.as_primitive::<Int32Type>();
            let offsets = offsets.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                assert_eq!(topics.value(row), topic, "a row from another topic");
                keys.push((partitions.value(row), offsets.value(row)));
            }
        }
    }
    keys
}

/// Exactly once, record by record: every offset the topic holds is in the table once, none
/// twice, none missing.
fn assert_each_record_once(table: &Path, broker: &Kafka, topic: &str) {
    let mut keys = table_offsets(table, topic);
    let rows = keys.len();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        keys.len(),
        rows,
        "{} holds {} duplicate rows",
        table.display(),
        rows - keys.len()
    );
    for partition in 0..PARTITIONS {
        let (low, high) = broker.watermarks(topic, partition);
        let offsets: Vec<i64> = keys
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        let expected: Vec<i64> = (low..high).collect();
        assert!(
            offsets == expected,
            "{topic}-{partition}: the table holds {} offsets, the broker {low}..{high}",
            offsets.len()
        );
    }
}

async fn wait_rows(cluster: &Cluster, table: &Path, expected: u64) {
    wait_until(
        cluster,
        &format!(
            "{} holding {expected} rows (now {:?})",
            table.display(),
            table_rows(table)
        ),
        WAIT,
        || async { table_rows(table) == Some(expected) },
    )
    .await;
    // Exactly once: the count stays (a duplicate commit would show up as more rows).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        table_rows(table),
        Some(expected),
        "{} changed after reaching {expected}",
        table.display()
    );
}

pub(super) async fn stream(cluster: &Cluster, name: &str) -> Value {
    get_json(cluster, &["-n", NAMESPACE, "get", "stream", name]).await
}

pub(super) fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Worker pods of an ingestion that are not being deleted.
pub(super) async fn worker_pods(cluster: &Cluster, name: &str) -> Vec<Value> {
    let selector = format!("tributary.dev/ingestion={name}");
    let pods = get_json(cluster, &["-n", NAMESPACE, "get", "pods", "-l", &selector]).await;
    pods["items"]
        .as_array()
        .expect("pods")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Every pod of an ingestion, terminating ones included: a terminating worker may still finish
/// its micro-batch.
async fn any_pods(cluster: &Cluster, name: &str) -> usize {
    let selector = format!("tributary.dev/ingestion={name}");
    let pods = get_json(cluster, &["-n", NAMESPACE, "get", "pods", "-l", &selector]).await;
    pods["items"].as_array().map_or(0, Vec::len)
}

fn pod_name(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until `replicas` ready worker pods run and none of them is one of `old`: the workers
/// were replaced.
async fn wait_replaced(cluster: &Cluster, name: &str, old: &[String], replicas: usize, what: &str) {
    wait_until(cluster, what, WAIT, || async {
        let pods = worker_pods(cluster, name).await;
        let ready = pods.iter().filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        pods.len() == replicas
            && ready.count() == replicas
            && pods.iter().all(|p| !old.contains(&pod_name(p)))
    })
    .await;
}

pub(super) async fn assert_health(cluster: &Cluster, name: &str, expected: &str) {
    wait_until(
        cluster,
        &format!("Argo CD health of {name} = {expected}"),
        Duration::from_secs(60),
        || async { argocd_health(cluster, NAMESPACE, name).await.0 == expected },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestions_run_as_a_user_sees_them() {
    let cluster = start_cluster().await;
    let installed = install_chart(&cluster, &[]).await;
    capture(
        "helm-install",
        "helm install tributary charts/tributary -n tributary-system --create-namespace --wait",
        &installed,
    );

    let broker = Kafka::start();
    broker.topic(TOPIC, PARTITIONS);
    produce_all(&broker.bootstrap, TOPIC, PARTITIONS, FIRST).expect("produce");

    kubectl(&cluster, &["create", "namespace", NAMESPACE]).await;
    let lake_claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "lake", "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    let output = cluster
        .kubectl_stdin(["apply", "-f", "-"], &lake_claim.to_string())
        .await
        .expect("kubectl");
    assert!(output.status.success(), "{}", output_text(&output));
    let lake = cluster.claim_dir(NAMESPACE, "lake");
    let stream_table = lake.join("bronze/iot/sensor_readings");
    let batch_table = lake.join("bronze/iot/sensor_readings_batch");

    // --- continuous ------------------------------------------------------------------------------
    let continuous = write_manifest(
        &cluster,
        "continuous.yaml",
        &example("sensor-readings.yaml", &broker.bootstrap),
    );
    kubectl(
        &cluster,
        &["apply", "-f", continuous.to_str().expect("utf-8")],
    )
    .await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=condition=Ready",
            "stream/sensor-readings",
            "--timeout=240s",
        ],
    )
    .await;
    let object = stream(&cluster, "sensor-readings").await;
    assert_eq!(
        object["status"]["workload"]["kind"], "Deployment",
        "{}",
        object["status"]
    );
    let deployment_name = object["status"]["workload"]["name"]
        .as_str()
        .expect("workload name")
        .to_string();
    let deployment = get_json(
        &cluster,
        &["-n", NAMESPACE, "get", "deployment", &deployment_name],
    )
    .await;
    assert_eq!(
        deployment["status"]["readyReplicas"], 1,
        "{}",
        deployment["status"]
    );
    wait_rows(&cluster, &stream_table, FIRST).await;

    // The workers' progress, written with their own ServiceAccount.
    wait_until(
        &cluster,
        "status.lastProgress with every row",
        WAIT,
        || async {
            let object = stream(&cluster, "sensor-readings").await;
            let progress = &object["status"]["lastProgress"];
            progress["batchId"].as_u64().is_some()
                && progress["sink"]["deltaVersion"].as_u64().unwrap_or(0) >= 1
        },
    )
    .await;
    let object = stream(&cluster, "sensor-readings").await;
    assert!(
        object["status"]["queryId"]
            .as_str()
            .is_some_and(|q| !q.is_empty()),
        "{}",
        object["status"]
    );
    assert_eq!(object["status"]["phase"], "Running");

    let table = kubectl(&cluster, &["get", "streams", "-n", NAMESPACE]).await;
    let header = table.lines().next().unwrap_or_default().to_string();
    for column in [
        "NAME",
        "PHASE",
        "READY",
        "TRIGGER",
        "REPLICAS",
        "LAG",
        "ROWS/S",
        "LAST BATCH",
        "AGE",
    ] {
        assert!(
            header.contains(column),
            "kubectl get streams has no {column}:\n{table}"
        );
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("sensor-readings "))
        .unwrap_or_else(|| panic!("no sensor-readings row:\n{table}"));
    assert!(
        row.contains("Running") && row.contains("True"),
        "row: {row}"
    );
    capture("get-streams", "kubectl get streams -n iot", &table);
    let wide = kubectl(&cluster, &["get", "si", "-n", NAMESPACE, "-o", "wide"]).await;
    capture("get-si-wide", "kubectl get si -n iot -o wide", &wide);
    assert!(wide.contains("sensor-readings"), "{wide}");
    assert_health(&cluster, "sensor-readings", "Healthy").await;

    // --- availableNow: a Job that succeeds --------------------------------------------------------------
    let batch = write_manifest(
        &cluster,
        "available-now.yaml",
        &example("sensor-readings-available-now.yaml", &broker.bootstrap),
    );
    kubectl(&cluster, &["apply", "-f", batch.to_str().expect("utf-8")]).await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "stream/sensor-readings-batch",
            "--timeout=240s",
        ],
    )
    .await;
    let object = stream(&cluster, "sensor-readings-batch").await;
    assert_eq!(
        object["status"]["workload"]["kind"], "Job",
        "{}",
        object["status"]
    );
    let job_name = object["status"]["workload"]["name"]
        .as_str()
        .expect("job name")
        .to_string();
    let job = get_json(&cluster, &["-n", NAMESPACE, "get", "job", &job_name]).await;
    assert_eq!(job["status"]["succeeded"], 1, "{}", job["status"]);
    assert_eq!(
        table_rows(&batch_table),
        Some(FIRST),
        "the availableNow table"
    );
    assert_health(&cluster, "sensor-readings-batch", "Healthy").await;
    let both = kubectl(&cluster, &["get", "streams", "-n", NAMESPACE]).await;
    assert!(
        both.lines()
            .any(|l| l.starts_with("sensor-readings-batch ") && l.contains("Succeeded")),
        "{both}"
    );
    capture("get-streams-both", "kubectl get streams -n iot", &both);
    let progress = kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "stream/sensor-readings",
            "-o",
            "jsonpath={.status.lastProgress}",
        ],
    )
    .await;
    let parsed: Value = serde_json::from_str(&progress).expect("lastProgress is JSON");
    assert!(parsed["numInputRows"].as_u64().is_some(), "{progress}");
    capture(
        "last-progress",
        "kubectl get stream/sensor-readings -n iot -o jsonpath='{.status.lastProgress}'",
        &progress,
    );

    // --- availableNow on a schedule: a CronJob; a run started by hand completes ----------------------
    // A schedule that does not come round during the test (1 January, 00:00): the run under test
    // is the one started with `kubectl create job --from`.
    let scheduled = example("sensor-readings-scheduled.yaml", &broker.bootstrap)
        .replace("\"*/15 * * * *\"", "\"0 0 1 1 *\"");
    assert!(
        scheduled.contains("0 0 1 1 *"),
        "the scheduled example's schedule moved"
    );
    let scheduled = write_manifest(&cluster, "scheduled.yaml", &scheduled);
    kubectl(
        &cluster,
        &["apply", "-f", scheduled.to_str().expect("utf-8")],
    )
    .await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=condition=Ready",
            "stream/sensor-readings-hourly",
            "--timeout=240s",
        ],
    )
    .await;
    let object = stream(&cluster, "sensor-readings-hourly").await;
    assert_eq!(
        object["status"]["workload"]["kind"], "CronJob",
        "{}",
        object["status"]
    );
    let cron_job = object["status"]["workload"]["name"]
        .as_str()
        .expect("CronJob name")
        .to_string();
    let from = format!("--from=cronjob/{cron_job}");
    let created = kubectl(
        &cluster,
        &["-n", NAMESPACE, "create", "job", "hourly-by-hand", &from],
    )
    .await;
    capture(
        "create-job-from-cronjob",
        &format!("kubectl create job hourly-by-hand --from=cronjob/{cron_job} -n iot"),
        &created,
    );
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=condition=Complete",
            "job/hourly-by-hand",
            "--timeout=240s",
        ],
    )
    .await;
    assert_eq!(
        table_rows(&lake.join("bronze/iot/sensor_readings_hourly")),
        Some(FIRST),
        "the scheduled run's table"
    );
    wait_until(
        &cluster,
        "status.lastRun of sensor-readings-hourly naming the run by hand, Succeeded",
        WAIT,
        || async {
            let object = stream(&cluster, "sensor-readings-hourly").await;
            let run = &object["status"]["lastRun"];
            run["jobName"] == "hourly-by-hand" && run["result"] == "Succeeded"
        },
    )
    .await;
    assert_health(&cluster, "sensor-readings-hourly", "Healthy").await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "delete",
            "stream",
            "sensor-readings-hourly",
            "--wait=true",
        ],
    )
    .await;

    // --- suspend and resume ----------------------------------------------------------------------------
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "patch",
            "stream",
            "sensor-readings",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ],
    )
    .await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=jsonpath={.status.phase}=Suspended",
            "stream/sensor-readings",
            "--timeout=120s",
        ],
    )
    .await;
    // Until the last worker has exited, not only been asked to: it finishes its batch first.
    wait_until(&cluster, "no worker pods while suspended", WAIT, || async {
        any_pods(&cluster, "sensor-readings").await == 0
    })
    .await;
    assert_health(&cluster, "sensor-readings", "Suspended").await;
    produce_all(&broker.bootstrap, TOPIC, PARTITIONS, SECOND).expect("produce");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        table_rows(&stream_table),
        Some(FIRST),
        "a suspended ingestion wrote rows"
    );
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "patch",
            "stream",
            "sensor-readings",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    )
    .await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=condition=Ready",
            "stream/sensor-readings",
            "--timeout=240s",
        ],
    )
    .await;
    wait_rows(&cluster, &stream_table, FIRST + SECOND).await;

    // --- the restart annotation replaces the workers, as `kubectl rollout restart` would ---------
    let before: Vec<String> = worker_pods(&cluster, "sensor-readings")
        .await
        .iter()
        .map(pod_name)
        .collect();
    assert_eq!(before.len(), 1, "{before:?}");
    let restarted = format!(
        "{}={}",
        tributary_crds::pod::ANNOTATION_RESTARTED_AT,
        chrono::Utc::now().to_rfc3339()
    );
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "annotate",
            "stream",
            "sensor-readings",
            &restarted,
            "--overwrite",
        ],
    )
    .await;
    wait_replaced(
        &cluster,
        "sensor-readings",
        &before,
        1,
        "a new worker after the restart annotation",
    )
    .await;

    // --- a spec change rolls the workers onto the new configuration -------------------------------
    let before: Vec<String> = worker_pods(&cluster, "sensor-readings")
        .await
        .iter()
        .map(pod_name)
        .collect();
    let generation = stream(&cluster, "sensor-readings").await["metadata"]["generation"].clone();
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "patch",
            "stream",
            "sensor-readings",
            "--type=merge",
            "-p",
            r#"{"spec":{"source":{"kafka":{"maxOffsetsPerTrigger":100000}}}}"#,
        ],
    )
    .await;
    wait_replaced(
        &cluster,
        "sensor-readings",
        &before,
        1,
        "a new worker after the spec change",
    )
    .await;
    let object = stream(&cluster, "sensor-readings").await;
    assert_ne!(object["metadata"]["generation"], generation);
    wait_until(
        &cluster,
        "status.observedGeneration of the changed spec",
        WAIT,
        || async {
            let object = stream(&cluster, "sensor-readings").await;
            object["status"]["observedGeneration"] == object["metadata"]["generation"]
        },
    )
    .await;
    let config = get_json(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "configmaps",
            "-l",
            "tributary.dev/ingestion=sensor-readings",
        ],
    )
    .await;
    assert!(
        config.to_string().contains("100000"),
        "the workers' configuration does not carry the new maxOffsetsPerTrigger: {config}"
    );

    // --- kubectl scale: three workers share the partitions, exactly once --------------------------
    // Scaling changes the count only: the worker that runs keeps running.
    let before_scale: Vec<String> = worker_pods(&cluster, "sensor-readings")
        .await
        .iter()
        .map(pod_name)
        .collect();
    assert_eq!(before_scale.len(), 1, "{before_scale:?}");
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "scale",
            "stream/sensor-readings",
            "--replicas=3",
        ],
    )
    .await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "wait",
            "--for=jsonpath={.status.readyReplicas}=3",
            "stream/sensor-readings",
            "--timeout=240s",
        ],
    )
    .await;
    let scaled: Vec<String> = worker_pods(&cluster, "sensor-readings")
        .await
        .iter()
        .map(pod_name)
        .collect();
    assert_eq!(scaled.len(), 3);
    assert!(
        scaled.contains(&before_scale[0]),
        "kubectl scale restarted the running worker {}: now {scaled:?}",
        before_scale[0]
    );
    // Each worker comes to own one partition (the group shares three among three). A worker
    // reports its partitions with a committed batch, so records keep coming, a round at a time,
    // until all three have reported; every round must land in the table exactly once.
    let mut total = FIRST + SECOND;
    let mut round = THIRD;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        produce_all(&broker.bootstrap, TOPIC, PARTITIONS, round).expect("produce");
        total += round;
        round = ROUND;
        wait_rows(&cluster, &stream_table, total).await;
        let object = stream(&cluster, "sensor-readings").await;
        let workers = &object["status"]["workers"];
        let mut owned: Vec<String> = workers
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|w| w["partitions"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        owned.sort();
        let each_one = workers.as_array().is_some_and(|w| {
            w.len() == 3
                && w.iter()
                    .all(|w| w["partitions"].as_array().is_some_and(|p| p.len() == 1))
        });
        let expected: Vec<String> = (0..PARTITIONS).map(|p| format!("{TOPIC}-{p}")).collect();
        if each_one && owned == expected {
            break;
        }
        if std::time::Instant::now() >= deadline {
            fail(
                &cluster,
                &format!(
                    "three workers each reporting one partition: not within {} s; status.workers = {workers}",
                    WAIT.as_secs()
                ),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_each_record_once(&stream_table, &broker, TOPIC);

    // --- autoscaling on lag: small batches leave a lag the workers report, the operator adds
    // workers up to the partitions, and removes them once the lag is gone, exactly once ---------
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "patch",
            "stream",
            "sensor-readings",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":null,"source":{"kafka":{"maxOffsetsPerTrigger":30}},"autoscaling":{"minReplicas":1,"maxReplicas":5,"targetLagPerWorker":100,"scaleDownDelaySeconds":0}}}"#,
        ],
    )
    .await;
    // Idle workers report no lag: the minimum, once the spec is seen.
    wait_until(
        &cluster,
        "autoscaling down to its minimum of 1 worker",
        WAIT,
        || async {
            let object = stream(&cluster, "sensor-readings").await;
            object["status"]["autoscaling"]["desiredReplicas"] == 1
                && worker_pods(&cluster, "sensor-readings").await.len() == 1
        },
    )
    .await;
    produce_all(&broker.bootstrap, TOPIC, PARTITIONS, AUTOSCALED).expect("produce");
    total += AUTOSCALED;
    wait_until(
        &cluster,
        "autoscaling up to one worker per partition (3, under maxReplicas 5)",
        WAIT,
        || async {
            let object = stream(&cluster, "sensor-readings").await;
            object["status"]["autoscaling"]["desiredReplicas"] == 3
        },
    )
    .await;
    wait_rows(&cluster, &stream_table, total).await;
    wait_until(
        &cluster,
        "autoscaling back to 1 worker with no lag left",
        WAIT,
        || async {
            let object = stream(&cluster, "sensor-readings").await;
            object["status"]["autoscaling"]["desiredReplicas"] == 1
        },
    )
    .await;
    let events = kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=sensor-readings",
        ],
    )
    .await;
    assert!(
        events.contains("ScaledUp") && events.contains("ScaledDown"),
        "no ScaledUp and ScaledDown events:\n{events}"
    );
    let wide = kubectl(&cluster, &["get", "si", "-n", NAMESPACE, "-o", "wide"]).await;
    assert!(
        wide.lines().next().is_some_and(|h| h.contains("DESIRED")),
        "{wide}"
    );
    assert_each_record_once(&stream_table, &broker, TOPIC);

    // --- spec.reset: one partition rewound by the workers, once; the status, the events and the
    // table's history say so, and a restart with the same spec does not rewind again ------------
    const REWOUND: i64 = 50;
    let (_, high) = broker.watermarks(TOPIC, 0);
    let rewind_to = high - REWOUND;
    let patch = json!({"spec": {"reset": {
        "id": "e2e-rewind-1",
        "offsets": format!("{{\"{TOPIC}\":{{\"0\":{rewind_to}}}}}"),
    }}});
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "patch",
            "stream",
            "sensor-readings",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
    )
    .await;
    wait_until(&cluster, "status.reset Applied", WAIT, || async {
        let object = stream(&cluster, "sensor-readings").await;
        object["status"]["reset"]["state"] == "Applied"
    })
    .await;
    let object = stream(&cluster, "sensor-readings").await;
    let reset = &object["status"]["reset"];
    assert_eq!(reset["id"], "e2e-rewind-1", "{reset}");
    assert!(
        reset["appliedAt"].is_string() && reset["requestedAt"].is_string(),
        "{reset}"
    );
    total += REWOUND as u64;
    wait_rows(&cluster, &stream_table, total).await;
    let events = kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=sensor-readings",
        ],
    )
    .await;
    assert!(
        events.contains("ResetRequested") && events.contains("ResetApplied"),
        "no ResetRequested and ResetApplied events:\n{events}"
    );
    let reset_commits = || {
        std::fs::read_dir(stream_table.join("_delta_log"))
            .expect("the table's log")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains("\"operation\":\"RESET STREAMING OFFSETS\"")
            })
            .count()
    };
    assert_eq!(reset_commits(), 1);
    let before: Vec<String> = worker_pods(&cluster, "sensor-readings")
        .await
        .iter()
        .map(pod_name)
        .collect();
    let restarted = format!(
        "{}={}",
        tributary_crds::pod::ANNOTATION_RESTARTED_AT,
        chrono::Utc::now().to_rfc3339()
    );
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "annotate",
            "stream",
            "sensor-readings",
            &restarted,
            "--overwrite",
        ],
    )
    .await;
    wait_replaced(
        &cluster,
        "sensor-readings",
        &before,
        before.len(),
        "new workers after a restart with the same reset",
    )
    .await;
    produce_all(&broker.bootstrap, TOPIC, PARTITIONS, ROUND).expect("produce");
    total += ROUND;
    wait_rows(&cluster, &stream_table, total).await;
    assert_eq!(reset_commits(), 1, "the same reset was applied again");
    let mut offsets = table_offsets(&stream_table, TOPIC);
    offsets.sort_unstable();
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for key in offsets {
        *seen.entry(key).or_insert(0) += 1;
    }
    for ((partition, offset), count) in &seen {
        let expected = if *partition == 0 && (rewind_to..high).contains(offset) {
            2
        } else {
            1
        };
        assert_eq!(*count, expected, "{TOPIC}-{partition} at {offset}");
    }

    // --- a missing Secret: a condition with its reason, in describe, with an Event ------------------
    let mut missing = example_value("sensor-readings.yaml", &broker.bootstrap);
    missing["metadata"]["name"] = json!("needs-secret");
    missing["spec"]["checkpoint"]["location"] = json!("/checkpoints/needs-secret");
    missing["spec"]["sink"]["delta"]["uri"] = json!("/lake/bronze/iot/needs_secret");
    missing["spec"]["source"]["kafka"]["secretOptions"] = json!({"sasl.password": {"secretKeyRef": {"name": "kafka-credentials", "key": "password"}}});
    let output = cluster
        .kubectl_stdin(["apply", "-f", "-"], &missing.to_string())
        .await
        .expect("kubectl");
    assert!(output.status.success(), "{}", output_text(&output));
    wait_until(
        &cluster,
        "Degraded/SecretNotFound on needs-secret",
        WAIT,
        || async {
            let object = stream(&cluster, "needs-secret").await;
            condition(&object, "Degraded")
                .is_some_and(|c| c["status"] == "True" && c["reason"] == reasons::SECRET_NOT_FOUND)
        },
    )
    .await;
    let describe = kubectl(
        &cluster,
        &["-n", NAMESPACE, "describe", "stream", "needs-secret"],
    )
    .await;
    assert!(
        describe.contains(reasons::SECRET_NOT_FOUND) && describe.contains("kafka-credentials"),
        "{describe}"
    );
    capture(
        "describe-missing-secret",
        "kubectl describe stream needs-secret -n iot",
        &describe,
    );
    let events = kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=needs-secret",
        ],
    )
    .await;
    assert!(
        events.contains("kafka-credentials"),
        "no Event names the missing Secret:\n{events}"
    );
    assert_health(&cluster, "needs-secret", "Degraded").await;
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "delete",
            "stream",
            "needs-secret",
            "--wait=true",
        ],
    )
    .await;

    // --- deletion: the real garbage collector removes what the ingestion owned ------------------
    let selector = "tributary.dev/ingestion=sensor-readings";
    let owned = kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "get",
            "deployments,replicasets,configmaps,serviceaccounts,roles,rolebindings",
            "-l",
            selector,
            "-o",
            "name",
        ],
    )
    .await;
    for kind in [
        "deployment.apps/",
        "configmap/",
        "serviceaccount/",
        "role.rbac",
        "rolebinding.rbac",
    ] {
        assert!(
            owned.contains(kind),
            "no {kind} owned by sensor-readings before deletion:\n{owned}"
        );
    }
    kubectl(
        &cluster,
        &[
            "-n",
            NAMESPACE,
            "delete",
            "stream",
            "sensor-readings",
            "--wait=true",
            "--timeout=120s",
        ],
    )
    .await;
    wait_until(
        &cluster,
        "objects owned by sensor-readings garbage-collected",
        WAIT,
        || async {
            let left = cluster
                .kubectl([
                    "-n",
                    NAMESPACE,
                    "get",
                    "deployments,replicasets,pods,configmaps,serviceaccounts,roles,rolebindings",
                    "-l",
                    selector,
                    "-o",
                    "name",
                ])
                .await
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_else(|_| "kubectl failed".into());
            left.is_empty()
        },
    )
    .await;
    // The checkpoint claim the operator created is kept (spec.checkpoint.volume.retain defaults
    // to keeping it), so the query can resume where it stopped.
    let claims = kubectl(&cluster, &["-n", NAMESPACE, "get", "pvc", "-o", "name"]).await;
    assert!(
        claims.contains("persistentvolumeclaim/sensor-readings-checkpoint"),
        "{claims}"
    );
    assert_eq!(table_rows(&stream_table), Some(total));
}

pub(super) fn example_value(name: &str, bootstrap: &str) -> Value {
    serde_saphyr::from_str(&example(name, bootstrap)).expect("example parses")
}
