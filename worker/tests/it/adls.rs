//! ADLS: the table and the checkpoint in Azure Blob Storage (Azurite on 127.0.0.1), reached at
//! abfss:// and az:// URLs with the account key read from a Secret the way a standalone worker
//! reads one (a mounted file or an environment variable).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::exactly_once::assert_exactly_once;
use crate::support::*;
use tributary_testkit::azurite::{ACCOUNT, ACCOUNT_KEY, Azurite};

const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;
/// The standalone worker's variable for Secret adls, key account-key.
const SECRET_ENV: &str = "TRIBUTARY_SECRET_ADLS_ACCOUNT_KEY";
/// A well-formed account key that is not Azurite's.
const WRONG_KEY: &str =
    "d3JvbmctYnV0LXdlbGwtZm9ybWVkLWFjY291bnQta2V5LWZvci10aGUtdGVzdHMtb2YtdHJpYnV0YXJ5IQ==";

/// The sink's storage options: the emulator switch in the open, the key from Secret
/// adls/account-key. The checkpoint sets none, so it uses these.
const SINK_STORAGE: &str = "      storageOptions: {azure_storage_use_emulator: 'true'}
      secretStorageOptions:
        azure_storage_account_key: {secretKeyRef: {name: adls, key: account-key}}";

fn abfss(container: &str, path: &str) -> String {
    format!("abfss://{container}@{ACCOUNT}.dfs.core.windows.net/{path}")
}

fn manifest<'a>(ws: &Workspace, name: &'a str, table: &str, checkpoint: &str) -> Manifest<'a> {
    let mut manifest = Manifest::subscribe(ws, name, TOPIC);
    manifest.table = PathBuf::from(table);
    manifest.checkpoint = PathBuf::from(checkpoint);
    manifest.sink_extra = SINK_STORAGE;
    manifest
}

/// Starts a worker that finds Azurite's port in its environment, with `extra` variables.
fn start(
    ws: &Workspace,
    azurite: &Azurite,
    manifest: &std::path::Path,
    bootstrap: &str,
    tag: &str,
    extra: &[(&str, &str)],
) -> Worker {
    let mut env = azurite.env();
    env.push(("TRIBUTARY_READ_AHEAD_RECORDS".into(), "150".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Worker::start_with_env(ws, manifest, bootstrap, tag, &env)
}

fn produce(broker: &MockBroker, from: usize, count: usize) {
    for i in from..from + count {
        broker.send(
            TOPIC,
            (i % PARTITIONS as usize) as i32,
            None,
            reading(i, "oslo", i as f64).as_bytes(),
        );
    }
    broker.flush();
}

#[test]
fn table_and_checkpoint_on_adls_survive_kill_9_exactly_once() {
    let started = Instant::now();
    let mut random = Random::from_time();
    let azurite = Azurite::start();
    azurite.create_container("lake");
    azurite.create_container("checkpoints");
    let broker = MockBroker::start();
    broker.topic(TOPIC, PARTITIONS);
    produce(&broker, 0, 4_000);
    let ws = Workspace::new();
    // The key as a mounted Secret file (with the newline `kubectl create secret` leaves).
    let secrets = ws.path("secrets");
    std::fs::create_dir_all(secrets.join("adls")).expect("secrets dir");
    std::fs::write(
        secrets.join("adls").join("account-key"),
        format!("{ACCOUNT_KEY}\n"),
    )
    .expect("secret file");
    let secrets_dir = secrets.display().to_string();
    let env = [("TRIBUTARY_SECRETS_DIR", secrets_dir.as_str())];
    let mut manifest = manifest(
        &ws,
        "adls",
        &abfss("lake", "bronze/events"),
        "az://checkpoints/events",
    );
    // Assigned partitions, not a group subscription: a restart after kill -9 then reads at
    // once instead of waiting out the dead member's session, so more kills fit in the time.
    manifest.source = "assign: {events: [0, 1, 2, 3]}
      startingOffsets: earliest
      maxOffsetsPerTrigger: 100"
        .into();
    let path = ws.write("m.yaml", &manifest.render());

    let mut produced = 4_000;
    let mut killed_mid_run = 0;
    for round in 0..6 {
        let mut worker = start(
            &ws,
            &azurite,
            &path,
            &broker.bootstrap,
            &format!("round{round}"),
            &env,
        );
        // Kill after a random number of batches plus a random part of the next one: reading,
        // writing Parquet to the emulator, committing, or writing the checkpoint.
        let batches = 1 + random.below(6) as usize;
        wait_for("batches or exit", Duration::from_secs(30), || {
            worker.progress().len() >= batches || worker.child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(Duration::from_millis(random.below(80)));
        if worker.child.try_wait().ok().flatten().is_none() {
            killed_mid_run += 1;
        }
        worker.kill();
        // Producers keep writing between attempts: the run must still end at its first targets.
        produce(&broker, produced, 200);
        produced += 200;
    }
    assert!(
        killed_mid_run >= 4,
        "only {killed_mid_run} kills landed mid-run"
    );
    let mut worker = start(&ws, &azurite, &path, &broker.bootstrap, "final", &env);
    let status = worker.wait(Duration::from_secs(40));
    assert!(status.success(), "{}", worker.stderr_text());

    let run: serde_json::Value = serde_json::from_slice(
        &azurite
            .get("checkpoints", "events/availableNow")
            .expect("availableNow in the checkpoint"),
    )
    .expect("json");
    let mut targets = BTreeMap::new();
    for (partition, offset) in run["targets"][TOPIC].as_object().expect("targets") {
        targets.insert(
            (TOPIC.to_string(), partition.parse::<i32>().expect("p")),
            offset.as_i64().expect("o"),
        );
    }
    assert_eq!(
        targets.values().sum::<i64>(),
        4_000,
        "the first attempt's targets were kept"
    );
    assert!(
        azurite.download("lake", "bronze/events", &ws.table()) > 2,
        "the table is in the emulator"
    );
    assert_exactly_once(&ws, &targets);
    // The rest of the checkpoint is there too, and nothing went to the local disk.
    assert!(azurite.get("checkpoints", "events/metadata").is_some());
    assert!(
        azurite
            .get("checkpoints", "events/offsets/initial")
            .is_some()
    );
    let progress = azurite.list("checkpoints", "events/progress");
    assert!(
        !progress.is_empty() && progress.len() <= 100,
        "{progress:?}"
    );
    assert!(!ws.path("checkpoint").exists());
    eprintln!("took {:?}", started.elapsed());
}

/// Waits for both workers, bounded.
fn wait_both(a: &mut Worker, b: &mut Worker) -> (ExitStatus, ExitStatus) {
    (
        a.wait(Duration::from_secs(40)),
        b.wait(Duration::from_secs(40)),
    )
}

#[test]
fn of_two_ingestions_racing_for_one_adls_checkpoint_one_wins_and_the_other_names_it() {
    let azurite = Azurite::start();
    azurite.create_container("lake");
    azurite.create_container("checkpoints");
    let broker = MockBroker::start();
    broker.topic(TOPIC, 1);
    broker.send(TOPIC, 0, None, reading(1, "oslo", 1.0).as_bytes());
    broker.flush();
    let ws = Workspace::new();
    let checkpoint = "az://checkpoints/shared";
    let env = [(SECRET_ENV, ACCOUNT_KEY)];
    let first = ws.write(
        "first.yaml",
        &manifest(&ws, "first", &abfss("lake", "first"), checkpoint).render(),
    );
    let second = ws.write(
        "second.yaml",
        &manifest(&ws, "second", &abfss("lake", "second"), checkpoint).render(),
    );
    // Started together, so both claim at about the same moment: the conditional put lets one
    // win.
    let mut a = start(&ws, &azurite, &first, &broker.bootstrap, "first", &env);
    let mut b = start(&ws, &azurite, &second, &broker.bootstrap, "second", &env);
    let (status_a, status_b) = wait_both(&mut a, &mut b);
    assert!(
        status_a.success() != status_b.success(),
        "exactly one wins: first {status_a}, second {status_b}\nfirst: {}\nsecond: {}",
        a.stderr_text(),
        b.stderr_text()
    );
    let (winner, loser, loser_worker) = if status_a.success() {
        ("first", "second", &b)
    } else {
        ("second", "first", &a)
    };
    let stderr = loser_worker.stderr_text();
    assert!(
        stderr.contains(&format!(
            "checkpoint location {checkpoint} belongs to ingestion test/{winner}, not test/{loser}"
        )),
        "{stderr}"
    );
    let owner: serde_json::Value = serde_json::from_slice(
        &azurite
            .get("checkpoints", "shared/owner")
            .expect("the claim"),
    )
    .expect("json");
    assert_eq!(owner["name"], winner);
    assert!(
        azurite.list("lake", loser).is_empty(),
        "the refused ingestion wrote nothing"
    );
    assert!(!azurite.list("lake", winner).is_empty());
}

#[test]
fn a_missing_or_wrong_adls_key_is_a_clear_error_naming_the_location_not_the_key() {
    let azurite = Azurite::start();
    azurite.create_container("lake");
    azurite.create_container("checkpoints");
    let broker = MockBroker::start();
    broker.topic(TOPIC, 1);
    broker.send(TOPIC, 0, None, reading(1, "oslo", 1.0).as_bytes());
    broker.flush();
    let ws = Workspace::new();
    let run = |tag: &str, manifest: &Manifest, env: &[(&str, &str)]| -> String {
        let path = ws.write(&format!("{tag}.yaml"), &manifest.render());
        let mut worker = start(&ws, &azurite, &path, &broker.bootstrap, tag, env);
        let status = worker.wait(Duration::from_secs(40));
        let stderr = worker.stderr_text();
        assert!(!status.success(), "{tag} must fail: {stderr}");
        assert!(
            !stderr.contains(WRONG_KEY),
            "{tag} leaked the key: {stderr}"
        );
        assert!(
            !stderr.contains(ACCOUNT_KEY),
            "{tag} leaked the key: {stderr}"
        );
        stderr
    };
    let table = abfss("lake", "wrong");

    // No Secret at all: the error says which Secret, where it was looked for, and for what.
    let missing = manifest(&ws, "missing", &table, "az://checkpoints/missing");
    let stderr = run("missing", &missing, &[]);
    assert!(
        stderr.contains(
            "cannot read Secret adls/account-key for spec.sink.delta.secretStorageOptions[azure_storage_account_key]"
        ) && stderr.contains(SECRET_ENV),
        "{stderr}"
    );

    // A wrong key, which the checkpoint inherits from the sink: the checkpoint is opened first.
    let wrong = manifest(&ws, "wrong", &table, "az://checkpoints/wrong");
    let stderr = run("wrong", &wrong, &[(SECRET_ENV, WRONG_KEY)]);
    assert!(
        stderr.contains("cannot claim at checkpoint location az://checkpoints/wrong"),
        "{stderr}"
    );
    assert!(stderr.contains("check the credentials"), "{stderr}");
    assert!(azurite.list("checkpoints", "wrong").is_empty());

    // The checkpoint with its own (right) key, the table with a wrong one: the table is named.
    let mut own = manifest(&ws, "own", &table, "az://checkpoints/own");
    own.checkpoint_extra = "    storageOptions: {azure_storage_use_emulator: 'true'}
    secretStorageOptions:
      azure_storage_account_key: {secretKeyRef: {name: adls-checkpoint, key: account-key}}"
        .to_string();
    let stderr = run(
        "own",
        &own,
        &[
            (SECRET_ENV, WRONG_KEY),
            ("TRIBUTARY_SECRET_ADLS_CHECKPOINT_ACCOUNT_KEY", ACCOUNT_KEY),
        ],
    );
    assert!(
        stderr.contains(&format!("the Delta table at {table}")),
        "{stderr}"
    );
    assert!(
        azurite.get("checkpoints", "own/owner").is_some(),
        "the checkpoint used its own key"
    );
    assert!(
        azurite.list("lake", "wrong").is_empty(),
        "{}",
        azurite.log()
    );
}

/// A stand-in for Microsoft Entra ID's token endpoint on 127.0.0.1 (what AZURE_AUTHORITY_HOST
/// names in a pod): records each request's first line and form body, answers with a token.
struct TokenEndpoint {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenEndpoint {
    fn start() -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(request) = answer_token_request(stream) {
                                requests.lock().expect("lock").push(request);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => return,
                    }
                }
            })
        };
        TokenEndpoint {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one HTTP request and answers it with an access token; returns the request line and
/// body.
fn answer_token_request(mut stream: TcpStream) -> Option<String> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    let (head, body_start) = loop {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            return None;
        }
        received.extend_from_slice(&buffer[..n]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&received[..end]).to_string(),
                end + 4,
            );
        }
    };
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while received.len() < body_start + length {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..n]);
    }
    let body = String::from_utf8_lossy(&received[body_start..]).to_string();
    let answer = r#"{"access_token":"token-from-the-test-endpoint","expires_in":3600,"token_type":"Bearer"}"#;
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .as_bytes(),
    );
    Some(format!(
        "{}\n{body}",
        head.lines().next().unwrap_or_default()
    ))
}

#[test]
fn workload_identity_from_the_pod_environment_reaches_the_checkpoint_and_the_table() {
    let azurite = Azurite::start();
    azurite.create_container("lake");
    azurite.create_container("checkpoints");
    let tokens = TokenEndpoint::start();
    let broker = MockBroker::start();
    broker.topic(TOPIC, 1);
    broker.send(TOPIC, 0, None, reading(1, "oslo", 1.0).as_bytes());
    broker.flush();
    let ws = Workspace::new();
    // What the AKS workload identity webhook injects into a labelled pod.
    let token_file = ws.write("azure-identity-token", "federated-token-of-the-test");
    let token_file = token_file.display().to_string();
    let authority = format!("http://127.0.0.1:{}", tokens.port);
    let identity = [
        ("AZURE_FEDERATED_TOKEN_FILE", token_file.as_str()),
        ("AZURE_CLIENT_ID", "client-of-the-test"),
        ("AZURE_TENANT_ID", "tenant-of-the-test"),
        ("AZURE_AUTHORITY_HOST", authority.as_str()),
        ("TRIBUTARY_SECRET_ADLS_ACCOUNT_KEY", ACCOUNT_KEY),
    ];
    // No key and no emulator switch: the account's endpoint is Azurite's, so the only
    // credential is the one the environment gives (never a cloud address: the token endpoint
    // and the storage endpoint are both on 127.0.0.1).
    let sink = format!(
        "      storageOptions: {{azure_storage_account_name: {ACCOUNT}, azure_storage_endpoint: 'http://127.0.0.1:{}/{ACCOUNT}', azure_allow_http: 'true'}}",
        azurite.port
    );
    let token_requests = |from: usize| -> Vec<String> {
        tokens
            .requests()
            .into_iter()
            .skip(from)
            .filter(|r| {
                r.starts_with("POST /tenant-of-the-test/oauth2/v2.0/token ")
                    && r.contains("client_id=client-of-the-test")
                    && r.contains("client_assertion=federated-token-of-the-test")
            })
            .collect()
    };
    // Azurite takes bearer tokens only over HTTPS, so after the token the store refuses the
    // request: each run fails, naming the location that used the identity.
    let run = |tag: &str, manifest: &Manifest| -> String {
        let path = ws.write(&format!("{tag}.yaml"), &manifest.render());
        let mut worker = start(&ws, &azurite, &path, &broker.bootstrap, tag, &identity);
        let status = worker.wait(Duration::from_secs(40));
        let stderr = worker.stderr_text();
        assert!(!status.success(), "{tag}: {stderr}");
        assert!(
            !stderr.contains("federated-token-of-the-test"),
            "{tag}: {stderr}"
        );
        stderr
    };

    // The checkpoint takes the sink's options, and so the identity.
    let mut both = manifest(
        &ws,
        "both",
        &abfss("lake", "identity"),
        "az://checkpoints/identity",
    );
    both.sink_extra = &sink;
    let stderr = run("both", &both);
    assert!(
        !token_requests(0).is_empty(),
        "the checkpoint asked for a token: {:?}\n{stderr}",
        tokens.requests()
    );
    assert!(
        stderr.contains("cannot claim at checkpoint location az://checkpoints/identity:"),
        "{stderr}"
    );

    // The checkpoint with its own key, the table with the identity: the table asks too.
    let before = tokens.requests().len();
    let mut table_only = manifest(
        &ws,
        "table-only",
        &abfss("lake", "identity-table"),
        "az://checkpoints/identity-table",
    );
    table_only.sink_extra = &sink;
    table_only.checkpoint_extra = "    storageOptions: {azure_storage_use_emulator: 'true'}
    secretStorageOptions:
      azure_storage_account_key: {secretKeyRef: {name: adls, key: account-key}}"
        .to_string();
    let stderr = run("table-only", &table_only);
    assert!(
        azurite.get("checkpoints", "identity-table/owner").is_some(),
        "{stderr}"
    );
    assert!(
        !token_requests(before).is_empty(),
        "the table asked for a token: {:?}\n{stderr}",
        tokens.requests()
    );
    assert!(
        stderr.contains(&format!(
            "the Delta table at {}",
            abfss("lake", "identity-table")
        )),
        "{stderr}"
    );
}
