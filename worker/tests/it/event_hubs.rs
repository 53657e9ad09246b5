//! `source.eventHubs` over a broker that requires what Event Hubs' Kafka endpoint requires:
//! SASL_SSL, SASL PLAIN as `$ConnectionString` with the connection string as the password, and
//! a certificate the client must verify (here signed by a CA the test generates). Also the
//! errors a user sees when the connection string is wrong or the certificate is not trusted:
//! prompt, naming the broker and what to fix, and never showing the connection string.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::secure_broker::{SecureBroker, fake_connection_string, flush};
use crate::support::*;

/// The worker must give up on a refused login or an untrusted certificate well before the
/// 15 s any metadata request may wait: this long at most.
const PROMPT: Duration = Duration::from_secs(10);

/// How the manifest tells the worker which CA to trust.
enum Ca<'a> {
    /// Nothing: the system's CAs.
    System,
    /// ssl.ca.location: a PEM file.
    File(&'a Path),
    /// ssl.ca.pem: the PEM text in the manifest (what a pod uses: no file to mount).
    Pem(&'a Path),
}

/// An eventHubs manifest reading event hub `telemetry`.
fn manifest(ws: &Workspace, ca: Ca, trigger: &str) -> String {
    let options = match ca {
        Ca::System => String::new(),
        Ca::File(path) => format!("\n      options: {{ssl.ca.location: '{}'}}", path.display()),
        Ca::Pem(path) => {
            let pem = std::fs::read_to_string(path).expect("read the CA");
            // A YAML double-quoted string (JSON's escapes), as kubectl users write one.
            format!(
                "\n      options: {{ssl.ca.pem: {}}}",
                serde_json::to_string(&pem).expect("quote the CA")
            )
        }
    };
    format!(
        r#"apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata:
  name: telemetry
  namespace: test
spec:
  source:
    eventHubs:
      namespace: tributary-test
      eventHub: telemetry
      consumerGroup: tributary
      connectionString:
        secretKeyRef: {{name: eventhubs, key: connection-string}}
      startingOffsets: earliest{options}
  format:
    json:
      schema:{schema}
      onError: rescue
  metadataColumns: [topic, partition, offset]
  sink:
    delta:
      uri: {table}
      volume: {{claimName: lake}}
  checkpoint:
    location: {checkpoint}
    volume: {{size: 1Gi}}
  trigger: {trigger}
"#,
        schema = SENSOR_SCHEMA,
        table = ws.table().display(),
        checkpoint = ws.path("checkpoint").display(),
    )
}

/// Mounts the connection string as the operator would (a file per Secret key) and starts the
/// worker on `manifest` against `bootstrap`.
fn start(ws: &Workspace, manifest: &str, bootstrap: &str, connection_string: &str) -> Worker {
    let path = ws.write("m.yaml", manifest);
    let dir = ws.path("secrets");
    std::fs::create_dir_all(dir.join("eventhubs")).expect("secrets dir");
    std::fs::write(
        dir.join("eventhubs").join("connection-string"),
        format!("{connection_string}\n"),
    )
    .expect("write the secret");
    let secrets = dir.display().to_string();
    Worker::start_with_env(
        ws,
        &path,
        bootstrap,
        "worker",
        &[("TRIBUTARY_SECRETS_DIR", &secrets)],
    )
}

/// Waits for a started worker to exit; returns whether it succeeded, how long it ran since
/// `started`, and all it printed.
fn finish(mut worker: Worker, started: Instant) -> Outcome {
    let status = worker.wait(Duration::from_secs(45));
    let took = started.elapsed();
    let stdout = std::fs::read_to_string(&worker.stdout).unwrap_or_default();
    Outcome {
        success: status.success(),
        took,
        output: format!("{stdout}\n{}", worker.stderr_text()),
        progress: worker.progress(),
    }
}

/// Runs an availableNow worker to its end.
fn run(ws: &Workspace, bootstrap: &str, ca: Ca, connection_string: &str) -> Outcome {
    let started = Instant::now();
    let worker = start(
        ws,
        &manifest(ws, ca, "{availableNow: true}"),
        bootstrap,
        connection_string,
    );
    finish(worker, started)
}

struct Outcome {
    success: bool,
    took: Duration,
    /// stdout and stderr, the final error included.
    output: String,
    progress: Vec<serde_json::Value>,
}

impl Outcome {
    /// Asserts a prompt failure; returns the error the worker exits with (its last line).
    fn prompt_error(&self) -> &str {
        assert!(!self.success, "the worker succeeded: {}", self.output);
        assert!(
            self.took < PROMPT,
            "the worker took {:?} to give up: {}",
            self.took,
            self.output
        );
        let error = self
            .output
            .lines()
            .rev()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no final error line in:\n{}", self.output));
        eprintln!("the user sees: {error}");
        error
    }
}

/// Neither the connection string nor its key appears anywhere in `output`.
fn assert_no_secret(output: &str, connection_string: &str) {
    let key = connection_string
        .split("SharedAccessKey=")
        .nth(1)
        .expect("a SharedAccessKey");
    assert!(
        !output.contains(connection_string) && !output.contains(key),
        "the connection string leaked into the worker's output:\n{output}"
    );
}

fn assert_contains_all(text: &str, expected: &[&str]) {
    for expected in expected {
        assert!(text.contains(expected), "{expected:?} missing from: {text}");
    }
}

#[test]
fn event_hubs_source_reads_over_sasl_ssl_with_the_connection_string() {
    let ws = Workspace::new();
    let broker = SecureBroker::start();
    broker.topic("telemetry", 2);
    let producer = broker.producer();
    for partition in 0..2 {
        for i in 0..25 {
            send(
                &producer,
                "telemetry",
                partition,
                None,
                reading(i, "oslo", 1.0).as_bytes(),
            );
        }
    }
    flush(&producer);

    let secret = broker.connection_string();
    let outcome = run(&ws, &broker.bootstrap, Ca::Pem(&broker.ca), &secret);
    assert!(outcome.success, "{}", outcome.output);
    // Event Hubs' settings were applied; the password shows only as a mark.
    assert_contains_all(
        &outcome.output,
        &[
            "security.protocol=SASL_SSL",
            "sasl.mechanism=PLAIN",
            "sasl.username=$ConnectionString",
            "sasl.password=<secret>",
            "metadata.max.age.ms=180000",
            "session.timeout.ms=30000",
        ],
    );
    // Every setting applies to a consumer (librdkafka warns of those that do not).
    assert!(!outcome.output.contains("CONFWARN"), "{}", outcome.output);
    assert_no_secret(&outcome.output, &secret);
    let ends = BTreeMap::from([
        (("telemetry".to_string(), 0), 25),
        (("telemetry".to_string(), 1), 25),
    ]);
    assert_eq!(
        read_table(&ws.table()).coordinates(),
        expected_coordinates(&ends)
    );
    assert_eq!(
        outcome.progress[0]["sources"][0]["description"],
        "KafkaV2[Subscribe[telemetry]]"
    );
}

#[test]
fn a_wrong_connection_string_stops_the_worker_at_once_naming_the_broker_and_the_secret() {
    let ws = Workspace::new();
    let broker = SecureBroker::start();
    broker.topic("telemetry", 1);
    let wrong = fake_connection_string("tributary-test");

    let outcome = run(&ws, &broker.bootstrap, Ca::File(&broker.ca), &wrong);
    let error = outcome.prompt_error();
    assert_contains_all(
        error,
        &[
            &format!("cannot authenticate to Kafka at {}", broker.bootstrap),
            "the broker refused the credentials",
            "Authentication failed: Invalid username or password",
            "Secret eventhubs, key connection-string",
            "spec.source.eventHubs.connectionString",
            "Listen rights",
        ],
    );
    assert_no_secret(&outcome.output, &wrong);
    assert_no_secret(&outcome.output, &broker.connection_string());
    // The worker stopped before it created the table for a query that cannot read.
    assert!(
        !ws.table().join("_delta_log").exists(),
        "a table was created before the credentials were checked"
    );
    assert!(
        !ws.path("checkpoint").join("owner").exists(),
        "the checkpoint was claimed before the credentials were checked"
    );
}

#[test]
fn a_connection_string_revoked_while_running_stops_the_worker_with_the_same_error() {
    let ws = Workspace::new();
    let mut broker = SecureBroker::start();
    broker.topic("telemetry", 1);
    let producer = broker.producer();
    for i in 0..5 {
        send(
            &producer,
            "telemetry",
            0,
            None,
            reading(i, "oslo", 1.0).as_bytes(),
        );
    }
    flush(&producer);
    let first = broker.connection_string();
    let started = Instant::now();
    let worker = start(
        &ws,
        &manifest(&ws, Ca::File(&broker.ca), "{processingTime: 500ms}"),
        &broker.bootstrap,
        &first,
    );
    wait_for("the first batch", Duration::from_secs(40), || {
        !table_txns(&ws.table()).is_empty() && read_table(&ws.table()).rows() == 5
    });

    // The key is regenerated: the worker's connections drop, and logging in again fails.
    let second = broker.rotate_connection_string();
    let revoked = Instant::now();
    let outcome = finish(worker, started);
    let error = Outcome {
        took: revoked.elapsed(),
        ..outcome
    };
    let message = error.prompt_error();
    assert_contains_all(
        message,
        &[
            &format!("cannot authenticate to Kafka at {}", broker.bootstrap),
            "Authentication failed: Invalid username or password",
            "Secret eventhubs, key connection-string",
        ],
    );
    assert_no_secret(&error.output, &first);
    assert_no_secret(&error.output, &second);
}

#[test]
fn an_untrusted_broker_certificate_stops_the_worker_at_once_saying_how_to_trust_it() {
    // Not given the test CA: the system's CAs do not know it.
    let ws = Workspace::new();
    let broker = SecureBroker::start();
    broker.topic("telemetry", 1);
    let secret = broker.connection_string();
    let outcome = run(&ws, &broker.bootstrap, Ca::System, &secret);
    let error = outcome.prompt_error();
    assert_contains_all(
        error,
        &[
            &format!(
                "cannot verify the TLS certificate of Kafka at {}",
                broker.bootstrap
            ),
            "certificate verify failed",
            "spec.source.eventHubs.options as ssl.ca.pem (its PEM text) or ssl.ca.location",
            "host name verification stays on",
        ],
    );
    assert_no_secret(&outcome.output, &secret);

    // Given the CA, but the certificate names another host: host name verification refuses it.
    let ws = Workspace::new();
    let broker = SecureBroker::start_with_san("DNS:broker.elsewhere.test");
    broker.topic("telemetry", 1);
    let secret = broker.connection_string();
    let outcome = run(&ws, &broker.bootstrap, Ca::File(&broker.ca), &secret);
    let error = outcome.prompt_error();
    assert_contains_all(
        error,
        &[
            &format!(
                "cannot verify the TLS certificate of Kafka at {}",
                broker.bootstrap
            ),
            "certificate verify failed",
            &format!(
                "The CA given in spec.source.eventHubs.options (ssl.ca.location={})",
                broker.ca.display()
            ),
        ],
    );
    assert_no_secret(&outcome.output, &secret);
}

#[test]
fn an_unreachable_endpoint_is_retried_for_a_while_then_named_in_the_error() {
    // Nothing listens on port 1: the connection is refused, which may be a broker restarting,
    // so the worker retries as long as a metadata request may wait (15 s), then says so.
    let ws = Workspace::new();
    let secret = fake_connection_string("tributary-test");
    let outcome = run(&ws, "127.0.0.1:1", Ca::System, &secret);
    assert!(!outcome.success, "{}", outcome.output);
    assert!(
        outcome.took >= Duration::from_secs(15) && outcome.took < Duration::from_secs(30),
        "gave up after {:?}",
        outcome.took
    );
    let error = outcome
        .output
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no final error line in:\n{}", outcome.output));
    eprintln!("the user sees: {error}");
    assert_contains_all(
        error,
        &[
            "cannot reach Kafka at 127.0.0.1:1 within 15 s",
            "Connection refused",
            "check the bootstrap servers or the Event Hubs namespace",
        ],
    );
    assert_no_secret(&outcome.output, &secret);
}

#[test]
fn an_unknown_sasl_user_of_a_kafka_source_stops_the_worker_naming_its_settings() {
    // A plain `source.kafka` over the same SASL_SSL listener, as a user of a self-hosted Kafka
    // writes it: the broker knows no user "nobody".
    let broker = SecureBroker::start();
    broker.topic("telemetry", 1);
    let ws = Workspace::new();
    let password = "nobody-password-never-printed";
    let mut manifest = Manifest::subscribe(&ws, "unknown-user", "telemetry");
    manifest.option("security.protocol", "SASL_SSL");
    manifest.option("sasl.mechanism", "PLAIN");
    manifest.option("sasl.username", "nobody");
    manifest.option("ssl.ca.location", &broker.ca.display().to_string());
    manifest.source.push_str(
        "\n      secretOptions: {sasl.password: {secretKeyRef: {name: kafka-login, key: password}}}",
    );
    let path = ws.write("m.yaml", &manifest.render());
    std::fs::create_dir_all(ws.path("secrets").join("kafka-login")).expect("secrets dir");
    std::fs::write(
        ws.path("secrets").join("kafka-login").join("password"),
        password,
    )
    .expect("secret");
    let secrets = ws.path("secrets").display().to_string();
    let started = Instant::now();
    let worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "worker",
        &[("TRIBUTARY_SECRETS_DIR", &secrets)],
    );
    let outcome = finish(worker, started);
    let error = outcome.prompt_error();
    assert_contains_all(
        error,
        &[
            &format!("cannot authenticate to Kafka at {}", broker.bootstrap),
            "Authentication failed: Invalid username or password",
            "sasl.username=nobody (options)",
            "sasl.password from Secret kafka-login, key password (secretOptions)",
        ],
    );
    assert!(!outcome.output.contains(password), "{}", outcome.output);
    assert!(!ws.table().join("_delta_log").exists());
}

#[test]
fn a_kafka_source_reads_over_sasl_ssl_with_options_pasted_from_spark() {
    // The options as a Spark user pastes them from readStream.format("kafka") code: every
    // name with the kafka. prefix, the password from a Secret under its prefixed name too.
    let broker = SecureBroker::start();
    broker.topic("telemetry", 1);
    let producer = broker.producer();
    for i in 0..6 {
        crate::support::send(
            &producer,
            "telemetry",
            0,
            None,
            reading(i, "oslo", 1.0).as_bytes(),
        );
    }
    flush(&producer);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "pasted-sasl", "telemetry");
    manifest.options.clear();
    manifest.option("kafka.security.protocol", "SASL_SSL");
    manifest.option("kafka.sasl.mechanism", "PLAIN");
    manifest.option("kafka.sasl.username", crate::secure_broker::EVENT_HUBS_USER);
    manifest.option("kafka.ssl.ca.location", &broker.ca.display().to_string());
    manifest.source.push_str(
        "\n      secretOptions: {kafka.sasl.password: {secretKeyRef: {name: kafka-login, key: password}}}",
    );
    let path = ws.write("m.yaml", &manifest.render());
    let secret = broker.connection_string();
    std::fs::create_dir_all(ws.path("secrets").join("kafka-login")).expect("secrets dir");
    std::fs::write(
        ws.path("secrets").join("kafka-login").join("password"),
        &secret,
    )
    .expect("secret");
    let secrets = ws.path("secrets").display().to_string();
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "worker",
        &[("TRIBUTARY_SECRETS_DIR", &secrets)],
    );
    let status = worker.wait(Duration::from_secs(90));
    let stderr = worker.stderr_text();
    assert!(status.success(), "{stderr}");
    assert_eq!(read_table(&ws.table()).rows(), 6);
    assert!(
        stderr.contains("sasl.password=<secret>") && !stderr.contains(&secret),
        "{stderr}"
    );
}
