//! Tables named through Unity Catalog (`sink.delta.table`, Spark's `toTable`): a real catalog
//! server resolves them (see unity_catalog.rs), the worker writes to their storage location.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use serde_json::Value;

use crate::unity_catalog::*;

const TOPIC: &str = "sensor-readings";
const PARTITIONS: i32 = 3;
const TOKEN: &str = "uc-test-token-3f9a7c1e";
const TABLE: &str = "bronze.iot.sensor_readings";

fn produce(broker: &Broker, from: usize, count: usize) {
    for i in from..from + count {
        broker.send(
            TOPIC,
            (i % PARTITIONS as usize) as i32,
            None,
            reading(i, ["oslo", "rome"][i % 2], i as f64).as_bytes(),
        );
    }
    broker.flush();
}

/// A server with catalog `bronze` and schema `iot`, and a proxy that wants [`TOKEN`].
struct Catalog {
    server: UnityCatalogServer,
    proxy: CatalogProxy,
}

impl Catalog {
    fn start(credential_lifetime: Option<Duration>) -> Catalog {
        let server = UnityCatalogServer::start();
        server.create_catalog("bronze");
        server.create_schema("bronze", "iot");
        server.create_external_location(
            "lake",
            &format!("file://{}/external", server.root.display()),
        );
        let proxy = CatalogProxy::start(
            &server.url(),
            ProxyAuth {
                token: TOKEN.into(),
                oauth_client: Some(("tributary-sp".into(), "sp-secret-8d2e4b".into())),
            },
            credential_lifetime,
        );
        Catalog { server, proxy }
    }

    /// Where tables created under the storage root live.
    fn root(&self) -> String {
        format!("file://{}/external", self.server.root.display())
    }

    fn location(&self, table: &str) -> PathBuf {
        let parts: Vec<&str> = table.split('.').collect();
        self.server
            .root
            .join("external")
            .join(parts[0])
            .join(parts[1])
            .join(parts[2])
    }
}

/// A manifest for `table` through the proxy, with `catalog_extra` under `unityCatalog:`.
fn manifest(
    ws: &Workspace,
    catalog: &Catalog,
    table: &str,
    catalog_extra: &str,
    edit: impl FnOnce(&mut Manifest<'_>),
) -> PathBuf {
    let mut manifest = Manifest::subscribe(ws, "uc", TOPIC);
    manifest.sink_extra = "      partitionBy: [site]";
    edit(&mut manifest);
    let text = with_sink(
        &manifest.render(),
        &ws.table(),
        &sink_block(table, &catalog.proxy.url(), catalog_extra),
    );
    ws.write("uc.yaml", &text)
}

fn run(
    ws: &Workspace,
    path: &Path,
    broker: &Broker,
    tag: &str,
    token: &str,
) -> (Worker, std::process::ExitStatus) {
    let mut worker = Worker::start_with_env(
        ws,
        path,
        &broker.bootstrap,
        tag,
        &[
            ("TRIBUTARY_SECRET_UC_TOKEN", token),
            ("TRIBUTARY_READ_AHEAD_RECORDS", "150"),
        ],
    );
    let status = worker.wait(Duration::from_secs(120));
    (worker, status)
}

fn ends(per_partition: i64) -> BTreeMap<(String, i32), i64> {
    (0..PARTITIONS)
        .map(|p| ((TOPIC.to_string(), p), per_partition))
        .collect()
}

fn assert_exactly_once(table: &Path, ends: &BTreeMap<(String, i32), i64>) {
    let snapshot = read_table(table);
    assert_eq!(snapshot.coordinates(), expected_coordinates(ends));
    for ((topic, partition), end) in ends {
        assert_eq!(snapshot.txn_for(topic, *partition), Some(*end));
    }
}

#[test]
fn a_new_table_is_registered_then_appended_to_exactly_once_across_a_kill() {
    let catalog = Catalog::start(None);
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    produce(&broker, 0, 600);
    let ws = Workspace::new();
    let root = format!("        storageRoot: {}", catalog.root());
    let path = manifest(&ws, &catalog, TABLE, &root, |_| {});

    let (first, status) = run(&ws, &path, &broker, "first", TOKEN);
    assert!(status.success(), "{}", first.stderr_text());
    assert_eq!(first.progress().len(), 1, "{}", first.stderr_text());
    let location = catalog.location(TABLE);
    assert_exactly_once(&location, &ends(200));

    // The catalog lists the table as an EXTERNAL Delta table there, with the worker's columns.
    let listed = catalog
        .server
        .table(TABLE)
        .expect("the table is registered");
    assert_eq!(listed["table_type"], "EXTERNAL");
    assert_eq!(listed["data_source_format"], "DELTA");
    let storage = listed["storage_location"].as_str().expect("location");
    assert!(
        storage
            .trim_end_matches('/')
            .ends_with("external/bronze/iot/sensor_readings"),
        "{storage}"
    );
    let columns: Vec<(String, String)> = listed["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                c["type_text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "device_id",
            "site",
            "temperature",
            "battery_pct",
            "timestamp",
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
            "_rescued_data"
        ]
    );
    assert!(columns.contains(&("temperature".into(), "double".into())));
    assert!(columns.contains(&("kafka_offset".into(), "bigint".into())));
    let partition_columns: Vec<&str> = listed["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["partition_index"].is_number())
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(partition_columns, ["site"]);
    assert_eq!(
        catalog.server.table_names("bronze", "iot"),
        ["sensor_readings"]
    );
    let table_id = listed["table_id"].clone();

    // A second run appends; a kill -9 in the middle of it loses and repeats nothing.
    produce(&broker, 600, 1200);
    let mut edited = std::fs::read_to_string(&path).expect("manifest");
    edited = edited.replace(
        "startingOffsets: earliest",
        "startingOffsets: earliest\n      maxOffsetsPerTrigger: 100",
    );
    std::fs::write(&path, edited).expect("manifest");
    let mut killed = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "killed",
        &[("TRIBUTARY_SECRET_UC_TOKEN", TOKEN)],
    );
    wait_for("a batch of the second run", Duration::from_secs(60), || {
        !killed.progress().is_empty()
    });
    killed.kill();
    let (last, status) = run(&ws, &path, &broker, "last", TOKEN);
    assert!(status.success(), "{}", last.stderr_text());
    assert!(!last.progress().is_empty(), "{}", last.stderr_text());
    // What the broker holds, partition by partition, is what the table holds.
    let held: BTreeMap<(String, i32), i64> = (0..PARTITIONS)
        .map(|p| ((TOPIC.to_string(), p), broker.watermarks(TOPIC, p).1))
        .collect();
    assert_eq!(held, ends(600));
    assert_exactly_once(&location, &held);
    let again = catalog.server.table(TABLE).expect("still registered");
    assert_eq!(again["table_id"], table_id, "the table is registered once");
    let created: Vec<Recorded> = catalog
        .proxy
        .writes()
        .into_iter()
        .filter(|r| r.path.ends_with("/tables"))
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    // The progress names the table by its catalog name.
    let progress = last.progress();
    let sink = progress[0]["sink"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(sink.contains(TABLE), "{sink}");
}

/// Runs a worker that must fail before writing anything; returns its stderr.
fn refused(
    catalog: &Catalog,
    broker: &Broker,
    table: &str,
    catalog_extra: &str,
    token: &str,
) -> String {
    let ws = Workspace::new();
    let path = manifest(&ws, catalog, table, catalog_extra, |_| {});
    let before = catalog.proxy.writes().len();
    let (worker, status) = run(&ws, &path, broker, "refused", token);
    let stderr = worker.stderr_text();
    assert!(!status.success(), "the worker must fail: {stderr}");
    assert!(worker.progress().is_empty(), "no batch: {stderr}");
    assert!(
        !ws.path("checkpoint").exists(),
        "the checkpoint was not touched: {stderr}"
    );
    assert_eq!(
        catalog.proxy.writes().len(),
        before,
        "nothing registered in the catalog"
    );
    assert!(!stderr.contains(TOKEN), "the token never shows: {stderr}");
    assert!(!stderr.contains("wrong-token-17c4"), "{stderr}");
    stderr
}

#[test]
fn refusals_are_clear_errors_and_write_nothing() {
    let catalog = Catalog::start(None);
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    produce(&broker, 0, 30);
    let endpoint = catalog.proxy.url();
    let root = format!("        storageRoot: {}", catalog.root());

    let stderr = refused(&catalog, &broker, TABLE, &root, "wrong-token-17c4");
    assert!(
        stderr.contains(&format!(
            "Unity Catalog at {endpoint}: cannot look up table {TABLE}: HTTP 401, UNAUTHENTICATED: Invalid access token. (check the token in Secret uc/token"
        )),
        "{stderr}"
    );
    assert!(!catalog.location(TABLE).exists());

    let stderr = refused(&catalog, &broker, "silver.iot.readings", &root, TOKEN);
    assert!(
        stderr.contains("cannot look up catalog silver of table silver.iot.readings: HTTP 404")
            && stderr.contains("check the catalog part of spec.sink.delta.table"),
        "{stderr}"
    );

    let stderr = refused(&catalog, &broker, "bronze.plant.readings", &root, TOKEN);
    assert!(
        stderr.contains(
            "cannot look up schema bronze.plant of table bronze.plant.readings: HTTP 404"
        ) && stderr.contains("check the schema part of spec.sink.delta.table"),
        "{stderr}"
    );

    let stderr = refused(
        &catalog,
        &broker,
        "bronze.iot.absent",
        "        tableMustExist: true",
        TOKEN,
    );
    assert!(
        stderr.contains("cannot find table bronze.iot.absent: the table does not exist (create it first, or unset spec.sink.delta.unityCatalog.tableMustExist"),
        "{stderr}"
    );
    let stderr = refused(&catalog, &broker, "bronze.iot.absent", "", TOKEN);
    assert!(
        stderr.contains(
            "the table does not exist and spec.sink.delta.unityCatalog.storageRoot is not set"
        ),
        "{stderr}"
    );
    assert!(catalog.server.table("bronze.iot.absent").is_none());

    // A managed table: the open-source catalog vends no credentials for it.
    catalog.server.create_managed_table(
        "bronze.iot.managed",
        &[("device_id", "string", "string", false)],
    );
    let stderr = refused(&catalog, &broker, "bronze.iot.managed", "", TOKEN);
    assert!(
        stderr.contains("cannot write table bronze.iot.managed: it is a MANAGED table and the catalog vends no credentials to write its storage"),
        "{stderr}"
    );

    // An external table whose columns do not fit the schema.
    let misfit = catalog.server.root.join("external/misfit");
    catalog.server.create_table(
        "bronze.iot.misfit",
        "EXTERNAL",
        Some(&format!("file://{}", misfit.display())),
        &[
            ("device_id", "string", "string", false),
            ("temperature", "string", "string", true),
            ("owner", "string", "string", false),
        ],
    );
    let stderr = refused(&catalog, &broker, "bronze.iot.misfit", "", TOKEN);
    assert!(
        stderr.contains("bronze.iot.misfit (")
            && stderr.contains("the catalog's columns: ")
            && stderr.contains("column site (string) is not in the table")
            && stderr
                .contains("column temperature is string in the table but double in the schema")
            && stderr.contains(
                "the table has a column owner (string) that this ingestion does not write"
            ),
        "{stderr}"
    );
    assert!(!misfit.join("_delta_log").exists());
}

#[test]
fn oauth_machine_to_machine_signs_in_with_the_client_secret() {
    let catalog = Catalog::start(None);
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    produce(&broker, 0, 90);
    let ws = Workspace::new();
    let oauth = format!(
        "        storageRoot: {}\n        oauth:\n          clientId: {{secretKeyRef: {{name: sp, key: client-id}}}}\n          clientSecret: {{secretKeyRef: {{name: sp, key: client-secret}}}}",
        catalog.root()
    );
    let path = manifest(&ws, &catalog, TABLE, &oauth, |_| {});
    // One of token and oauth: drop the token line the block starts with.
    let text = std::fs::read_to_string(&path).expect("manifest").replace(
        "        token: {secretKeyRef: {name: uc, key: token}}\n",
        "",
    );
    std::fs::write(&path, text).expect("manifest");
    let start = |tag: &str, secret: &str| {
        let mut worker = Worker::start_with_env(
            &ws,
            &path,
            &broker.bootstrap,
            tag,
            &[
                ("TRIBUTARY_SECRET_SP_CLIENT_ID", "tributary-sp"),
                ("TRIBUTARY_SECRET_SP_CLIENT_SECRET", secret),
            ],
        );
        let status = worker.wait(Duration::from_secs(120));
        (worker, status)
    };
    let (refused, status) = start("wrong", "not-the-secret-5521");
    let stderr = refused.stderr_text();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot sign in with OAuth at {}/oidc/v1/token to look up table {TABLE}: HTTP 401, invalid_client: Client authentication failed",
            catalog.proxy.url()
        )) && stderr.contains("Secret sp/client-id and Secret sp/client-secret"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret-5521"), "{stderr}");
    assert!(!ws.path("checkpoint").exists());

    let (signed_in, status) = start("right", "sp-secret-8d2e4b");
    assert!(status.success(), "{}", signed_in.stderr_text());
    assert_eq!(signed_in.progress().len(), 1, "{}", signed_in.stderr_text());
    assert_exactly_once(&catalog.location(TABLE), &ends(30));
    let tokens = catalog
        .proxy
        .recorded()
        .into_iter()
        .filter(|r| r.path == "/oidc/v1/token" && r.status == 200)
        .count();
    assert_eq!(tokens, 1, "one access token, reused for every call");
}

#[test]
fn credentials_are_renewed_before_they_expire_without_a_failed_batch() {
    // The open-source catalog vends no cloud credentials for local storage: the proxy gives
    // its (empty) credentials a 6 s life, so a worker running for ~20 s must renew them.
    let lifetime = Duration::from_secs(6);
    let catalog = Catalog::start(Some(lifetime));
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    let ws = Workspace::new();
    let root = format!("        storageRoot: {}", catalog.root());
    let path = manifest(&ws, &catalog, TABLE, &root, |m| {
        m.trigger = "{processingTime: 1s}";
    });
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "renewing",
        &[("TRIBUTARY_SECRET_UC_TOKEN", TOKEN)],
    );
    let started = std::time::Instant::now();
    let mut produced = 0;
    while started.elapsed() < Duration::from_secs(20) {
        produce(&broker, produced, 30);
        produced += 30;
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            worker.child.try_wait().expect("try_wait").is_none(),
            "the worker stopped: {}",
            worker.stderr_text()
        );
    }
    let per_partition = (produced / PARTITIONS as usize) as i64;
    let location = catalog.location(TABLE);
    wait_for("every row committed", Duration::from_secs(30), || {
        read_table(&location).rows() == produced
    });
    worker.terminate();
    let status = worker.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", worker.stderr_text());
    assert_exactly_once(&location, &ends(per_partition));

    // Renewed several times, each time before the last credentials expired.
    let requests = catalog.proxy.credential_requests();
    assert!(requests.len() >= 3, "{requests:?}");
    for pair in requests.windows(2) {
        let expired_at =
            UNIX_EPOCH + Duration::from_millis(pair[0].expiration_ms.unwrap_or_default() as u64);
        assert!(
            pair[1].at < expired_at,
            "renewed at {:?}, after the credentials expired at {expired_at:?}",
            pair[1].at
        );
    }
    // Renewed mid-run: batches committed both before the first renewal and after the last.
    let progress = worker.progress();
    let committed_at: Vec<SystemTime> = progress
        .iter()
        .filter_map(|p| p["timestamp"].as_str())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(SystemTime::from)
        .collect();
    assert_eq!(committed_at.len(), progress.len(), "{progress:?}");
    let renewed_at: Vec<SystemTime> = requests[1..].iter().map(|r| r.at).collect();
    let between = |at: &SystemTime| {
        committed_at.iter().any(|batch| batch < at) && committed_at.iter().any(|batch| batch > at)
    };
    assert!(
        renewed_at.iter().filter(|at| between(at)).count() >= 2,
        "batches at {committed_at:?}, renewals at {renewed_at:?}"
    );
    // No batch failed: the batch ids run without a gap or a repeat, each one a Delta version,
    // and the worker logged no error or warning of its own.
    let batch_ids: Vec<i64> = progress
        .iter()
        .filter_map(|p| p["batchId"].as_i64())
        .collect();
    assert_eq!(batch_ids, (0..progress.len() as i64).collect::<Vec<_>>());
    let stderr = worker.stderr_text();
    assert!(
        !stderr
            .lines()
            .any(|l| (l.contains(" ERROR ") || l.contains(" WARN "))
                && l.contains("tributary_worker")),
        "{stderr}"
    );
    let renewals = stderr.matches("renewed the storage credentials").count();
    assert_eq!(renewals, requests.len() - 1, "{stderr}");
}

#[test]
fn in_a_pod_a_refused_token_reaches_the_status_with_its_reason_and_without_the_token() {
    use crate::in_pod::FakeApiServer;
    let catalog = Catalog::start(None);
    let broker = MockBroker::start();
    broker.topic(TOPIC, PARTITIONS);
    let ws = Workspace::new();
    let root = format!("        storageRoot: {}", catalog.root());
    let path = manifest(&ws, &catalog, TABLE, &root, |_| {});
    // The token comes from the Secret the operator mounts, as in a pod.
    let wrong = "mounted-wrong-token-90b1";
    let secrets = ws.path("secrets");
    std::fs::create_dir_all(secrets.join("uc")).expect("secrets dir");
    std::fs::write(secrets.join("uc").join("token"), wrong).expect("secret");
    let text = std::fs::read_to_string(&path).expect("manifest");
    let api = FakeApiServer::start(serde_saphyr::from_str(&text).expect("manifest parses"));
    let kubeconfig = ws.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: test}}}}]\ncurrent-context: fake\n",
            api.url
        ),
    );
    let (kubeconfig, secrets) = (
        kubeconfig.display().to_string(),
        secrets.display().to_string(),
    );
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "pod",
        &[
            ("KUBECONFIG", &kubeconfig),
            ("TRIBUTARY_REPORT_STATUS", "true"),
            ("TRIBUTARY_INGESTION_NAME", "uc"),
            ("TRIBUTARY_INGESTION_NAMESPACE", "test"),
            ("TRIBUTARY_POD_NAME", "uc-7d9-abcde"),
            ("TRIBUTARY_SECRETS_DIR", &secrets),
        ],
    );
    let status = worker.wait(Duration::from_secs(120));
    let stderr = worker.stderr_text();
    assert!(!status.success(), "{stderr}");
    let failures: Vec<Value> = api
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["status"]["workers"][0]["error"].is_string())
        .collect();
    assert_eq!(failures.len(), 1, "one failure report: {failures:?}");
    let entry = &failures[0]["status"]["workers"][0];
    assert_eq!(entry["name"], "uc-7d9-abcde");
    assert_eq!(entry["errorReason"], "CatalogUnauthorized");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "Unity Catalog at {}: cannot look up table {TABLE}: HTTP 401, UNAUTHENTICATED: Invalid access token. (check the token in Secret uc/token",
            catalog.proxy.url()
        )),
        "{error}"
    );
    let everything = format!("{:?}{stderr}", api.requests());
    assert!(
        !everything.contains(wrong),
        "the token never shows: {everything}"
    );
    assert!(!ws.path("checkpoint").exists());
    assert!(!catalog.location(TABLE).exists());
}
