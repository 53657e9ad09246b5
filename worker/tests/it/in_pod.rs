//! The worker as the operator runs it in a pod: status reported to the API server (here a
//! recording fake on 127.0.0.1, reached through a kubeconfig), /metrics and /readyz served.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;
use tributary_testkit::server::free_port;

/// One request the fake API server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub content_type: String,
    pub body: Value,
}

/// A minimal HTTP/1.1 server that records every request and answers each status write with the
/// ingestion itself, as the API server does.
pub struct FakeApiServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeApiServer {
    pub fn start(answer: Value) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = recorded.clone();
                let answer = answer.clone();
                std::thread::spawn(move || serve_connection(stream, &recorded, &answer));
            }
        });
        FakeApiServer { url, requests }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

fn serve_connection(stream: TcpStream, recorded: &Mutex<Vec<Recorded>>, answer: &Value) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    // Keep-alive: one request after another until the client hangs up.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut length = 0usize;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        recorded.lock().expect("lock").push(Recorded {
            method,
            target,
            content_type,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let payload = serde_json::to_vec(answer).expect("json");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&payload).is_err() {
            return;
        }
    }
}

/// GET on the worker's metrics port: (status code, body), or None while it is not listening.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[test]
fn reports_status_and_serves_metrics_like_a_pod() {
    let broker = MockBroker::start();
    broker.topic("readings", 2);
    let ws = Workspace::new();
    let secret = "pod-secret-VALUE-must-not-reach-status";
    let secrets = ws.path("secrets");
    std::fs::create_dir_all(secrets.join("kafka-creds")).expect("secrets dir");
    std::fs::write(secrets.join("kafka-creds").join("password"), secret).expect("secret");

    let mut manifest = Manifest::subscribe(&ws, "pod-mode", "readings");
    manifest.trigger = "{}";
    manifest.source.push_str(
        "\n      secretOptions: {sasl.password: {secretKeyRef: {name: kafka-creds, key: password}}}",
    );
    let text = manifest.render();
    let path = ws.write("m.yaml", &text);
    let answer: Value = serde_saphyr::from_str(&text).expect("manifest parses");
    let api = FakeApiServer::start(answer);
    let kubeconfig = ws.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: test}}}}]\ncurrent-context: fake\n",
            api.url
        ),
    );
    let port = free_port();
    let port_text = port.to_string();
    let secrets_dir = secrets.display().to_string();
    let kubeconfig_text = kubeconfig.display().to_string();
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "pod",
        &[
            ("KUBECONFIG", &kubeconfig_text),
            ("TRIBUTARY_REPORT_STATUS", "true"),
            ("TRIBUTARY_INGESTION_NAME", "pod-mode"),
            ("TRIBUTARY_INGESTION_NAMESPACE", "test"),
            ("TRIBUTARY_POD_NAME", "pod-mode-7d9-abcde"),
            ("TRIBUTARY_METRICS_PORT", &port_text),
            ("TRIBUTARY_SECRETS_DIR", &secrets_dir),
        ],
    );

    let produced = 40;
    for i in 0..produced {
        broker.send(
            "readings",
            (i % 2) as i32,
            None,
            reading(i, "plant-1", 20.5).as_bytes(),
        );
    }
    broker.flush();

    // Every record shows up in the metrics, and the worker says it is ready.
    wait_for(
        "rows_written_total to count every record",
        Duration::from_secs(60),
        || {
            http_get(port, "/metrics")
                .and_then(|(_, body)| metric(&body, "tributary_worker_rows_written_total"))
                == Some(produced as f64)
        },
    );
    let (ready, _) = http_get(port, "/readyz").expect("readyz answers");
    assert_eq!(ready, 200, "{}", worker.stderr_text());
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    assert_eq!(
        metric(&metrics, "tributary_worker_records_read_total"),
        Some(produced as f64)
    );
    assert!(
        metrics.contains("tributary_worker_offsets_behind_latest{topic=\"readings\""),
        "{metrics}"
    );

    // The status caught up with the table: this worker's entry says it is not behind.
    wait_for(
        "a status write with the worker caught up",
        Duration::from_secs(30),
        || {
            api.requests().iter().any(|r| {
                r.body["status"]["workers"][0]["lag"] == 0
                    && r.body["status"]["lastProgress"]["sink"]["deltaVersion"].is_i64()
            })
        },
    );

    worker.terminate();
    let status = worker.wait(Duration::from_secs(60));
    assert!(status.success(), "{}", worker.stderr_text());

    let requests = api.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.method, "PATCH", "{request:?}");
        let (path, query) = request.target.split_once('?').expect("a query");
        assert_eq!(
            path,
            "/apis/tributary.dev/v1alpha1/namespaces/test/streamingingestions/pod-mode/status"
        );
        assert!(
            query.contains("fieldManager=tributary-worker-pod-mode-7d9-abcde"),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(request.content_type, "application/apply-patch+yaml");
        assert!(
            request.body.get("spec").is_none(),
            "a worker never writes the spec"
        );
        let status = request.body["status"].as_object().expect("status");
        assert!(
            status
                .keys()
                .all(|k| ["queryId", "lastProgress", "workers"].contains(&k.as_str())),
            "only the worker's fields: {status:?}"
        );
        assert!(
            !request.body.to_string().contains(secret),
            "the secret reached the status"
        );
    }
    let progress_rows: i64 = worker
        .progress()
        .iter()
        .filter_map(|p| p["numInputRows"].as_i64())
        .sum();
    assert_eq!(progress_rows, produced as i64);
    assert_eq!(read_table(&ws.table()).rows(), produced);
    assert!(
        !worker.stderr_text().contains(secret),
        "the secret reached the logs"
    );
}

#[test]
fn an_applied_reset_and_the_last_vacuum_and_compaction_reach_the_workers_status_entry() {
    let broker = MockBroker::start();
    broker.topic("readings", 1);
    for i in 0..30 {
        broker.send("readings", 0, None, reading(i, "plant-2", 1.5).as_bytes());
    }
    broker.flush();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "pod-upkeep", "readings");
    manifest.trigger = "{}";
    manifest.source.push_str("\n      maxOffsetsPerTrigger: 5");
    manifest.sink_extra =
        "      vacuum: {intervalHours: 24, retainHours: 0, retentionDurationCheck: false}";
    manifest.spec_extra = "  reset: {id: back-to-10, offsets: '{\"readings\":{\"0\":10}}'}".into();
    let text = manifest.render();
    let path = ws.write("m.yaml", &text);
    let answer: Value = serde_saphyr::from_str(&text).expect("manifest parses");
    let api = FakeApiServer::start(answer);
    let kubeconfig = ws.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: test}}}}]\ncurrent-context: fake\n",
            api.url
        ),
    );
    let kubeconfig_text = kubeconfig.display().to_string();
    let port = free_port().to_string();
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "pod",
        &[
            ("KUBECONFIG", &kubeconfig_text),
            ("TRIBUTARY_REPORT_STATUS", "true"),
            ("TRIBUTARY_INGESTION_NAME", "pod-upkeep"),
            ("TRIBUTARY_INGESTION_NAMESPACE", "test"),
            ("TRIBUTARY_POD_NAME", "pod-upkeep-7d9-abcde"),
            ("TRIBUTARY_METRICS_PORT", &port),
            ("TRIBUTARY_COMPACTION_INTERVAL_SECONDS", "1"),
            ("TRIBUTARY_COMPACTION_MIN_FILES", "2"),
            ("TRIBUTARY_VACUUM_INTERVAL_SECONDS", "2"),
        ],
    );
    let entry = |request: &Recorded| request.body["status"]["workers"][0].clone();
    // A query new to the table: the reset is its start, recorded before the first batch.
    wait_for("the reset in the status", Duration::from_secs(60), || {
        api.requests()
            .iter()
            .any(|r| entry(r)["reset"]["id"] == "back-to-10")
    });
    wait_for(
        "a VACUUM and a compaction in the status",
        Duration::from_secs(60),
        || {
            api.requests().iter().any(|r| {
                let entry = entry(r);
                entry["lastVacuum"]["filesRemoved"]
                    .as_i64()
                    .is_some_and(|n| n > 0)
                    && entry["lastCompaction"]["filesAdded"].is_i64()
            })
        },
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(60)).success(),
        "{}",
        worker.stderr_text()
    );
    let requests = api.requests();
    let last = entry(requests.last().expect("requests"));
    assert_eq!(last["name"], "pod-upkeep-7d9-abcde");
    let reset = &last["reset"];
    assert_eq!(reset["id"], "back-to-10");
    assert!(
        reset["appliedAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("20")),
        "{reset}"
    );
    assert!(reset["deltaVersion"].is_i64(), "{reset}");
    assert!(last["lastVacuum"]["time"].is_string(), "{last}");
    assert!(
        last["lastCompaction"]["filesRemoved"]
            .as_i64()
            .is_some_and(|n| n >= 2),
        "{last}"
    );
    // Rows from offset 10 on, once each: the reset started the new query there.
    let offsets: Vec<i64> = read_table(&ws.table())
        .coordinates()
        .iter()
        .map(|c| c.2)
        .collect();
    assert_eq!(offsets, (10..30).collect::<Vec<_>>());
}
