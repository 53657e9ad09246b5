//! The product against a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager built from Kubernetes' Go modules by scripts/install-deps.sh), with
//! the process kubelet running the operator and worker pods as local processes: real `helm`,
//! real `kubectl`, real RBAC, admission, CEL validation, garbage collection.
//!
//! Each test starts its own cluster (nextest's `cluster` test group runs one at a time: a
//! control plane and its workers take most of two cores).

mod chart;
mod failures;
mod ingestion;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tributary_e2e::cluster::kubelet::{ImageBinary, PortStyle};
use tributary_e2e::cluster::{Cluster, Runtime, output_text};

pub const RELEASE: &str = "tributary";
pub const RELEASE_NAMESPACE: &str = "tributary-system";
/// Image names the chart is installed with; the kubelet runs the local binaries for them.
pub const OPERATOR_IMAGE: &str = "e2e.local/tributary-operator";
pub const WORKER_IMAGE: &str = "e2e.local/tributary-worker";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A workspace binary: $<VAR>, else next to the test binary's profile directory (nextest and
/// `cargo test --workspace` build them there).
fn workspace_binary(name: &str, var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let path = profile.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (cargo build -p {name}, or run the workspace's tests), or set {var}",
        path.display()
    );
    path
}

/// Starts a cluster whose node runs tributary-worker and tributary-operator images.
pub async fn start_cluster() -> Cluster {
    let worker = workspace_binary("tributary-worker", "TRIBUTARY_WORKER_BIN");
    let operator = workspace_binary("tributary-operator", "TRIBUTARY_OPERATOR_BIN");
    let runtime = Runtime::new()
        .image(ImageBinary {
            name: "tributary-worker".into(),
            binary: worker,
            port: PortStyle::Env("TRIBUTARY_METRICS_PORT".into()),
            path_env: vec![(
                "TRIBUTARY_SECRETS_DIR".into(),
                "/var/run/secrets/tributary".into(),
            )],
        })
        .image(ImageBinary {
            name: "tributary-operator".into(),
            binary: operator,
            port: PortStyle::AddressFlag("--metrics-addr".into()),
            path_env: Vec::new(),
        });
    match Cluster::start(runtime).await {
        Ok(cluster) => cluster,
        Err(e) => panic!("the control plane did not start: {e}"),
    }
}

/// Fails the test with the cluster's logs.
pub fn fail(cluster: &Cluster, message: &str) -> ! {
    panic!(
        "{message}\n\n=== cluster diagnostics ==={}",
        cluster.diagnostics()
    )
}

/// kubectl that must succeed; its standard output.
pub async fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    let output = run_ok(cluster, cluster.kubectl(args).await, "kubectl", args);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// helm that must succeed; its standard output.
pub async fn helm(cluster: &Cluster, args: &[&str]) -> String {
    let output = run_ok(cluster, cluster.helm(args).await, "helm", args);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run_ok(
    cluster: &Cluster,
    output: tributary_e2e::cluster::Result<Output>,
    tool: &str,
    args: &[&str],
) -> Output {
    match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => fail(
            cluster,
            &format!(
                "{tool} {} failed ({}):\n{}",
                args.join(" "),
                output.status,
                output_text(&output)
            ),
        ),
        Err(e) => fail(cluster, &format!("{tool} {}: {e}", args.join(" "))),
    }
}

/// An object as JSON, through kubectl.
pub async fn get_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let text = kubectl(cluster, &all).await;
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: not JSON ({e}): {text}"))
}

/// Polls `check` (true when done) every 500 ms for at most `limit`, failing with `what`.
pub async fn wait_until<F, Fut>(cluster: &Cluster, what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        if std::time::Instant::now() >= deadline {
            fail(
                cluster,
                &format!("{what}: not within {} s", limit.as_secs()),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Installs the chart with real helm (`--wait`: the operator pod must become Ready), with the
/// images the kubelet runs from local binaries.
pub async fn install_chart(cluster: &Cluster, extra: &[&str]) -> String {
    let chart = repo().join("charts/tributary");
    let chart = chart.to_str().expect("utf-8 path");
    let operator = format!("image.repository={OPERATOR_IMAGE}");
    let worker = format!("worker.image.repository={WORKER_IMAGE}");
    let mut args = vec![
        "install",
        RELEASE,
        chart,
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--set",
        &operator,
        "--set",
        "image.tag=e2e",
        "--set",
        &worker,
        "--set",
        "worker.image.tag=e2e",
        "--set",
        "logLevel=info\\,tributary_operator=debug",
        "--wait",
        "--timeout",
        "240s",
    ];
    args.extend_from_slice(extra);
    helm(cluster, &args).await
}

/// The Argo CD health (status, message) of a live StreamingIngestion: charts/tributary/argocd/
/// health.lua run by Lua 5.1 on the object fetched from the API server, in the sandbox the
/// chart's own tests use.
pub async fn argocd_health(cluster: &Cluster, namespace: &str, name: &str) -> (String, String) {
    let object = get_json(
        cluster,
        &["-n", namespace, "get", "streamingingestion", name],
    )
    .await;
    let script = repo().join("charts/tributary/argocd/health.lua");
    let harness = format!(
        "obj = {}\nlocal check = assert(loadfile({}))\nlocal write = io.write\n\
         os, io, require, dofile, loadfile, loadstring, load, module, package, debug = nil, nil, nil, nil, nil, nil, nil, nil, nil, nil\n\
         local hs = check()\nassert(type(hs) == \"table\", \"health.lua must return a table\")\n\
         write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
        to_lua(&object),
        lua_string(script.to_str().expect("utf-8 path"))
    );
    let file = cluster.dir().join(format!("health-{namespace}-{name}.lua"));
    std::fs::write(&file, harness).expect("write the Lua harness");
    let output = tokio::process::Command::new("lua5.1")
        .arg(&file)
        .output()
        .await
        .expect("lua5.1 is installed by scripts/install-deps.sh");
    assert!(
        output.status.success(),
        "health.lua failed: {}",
        output_text(&output)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for byte in text.bytes() {
        if byte == b'"' || byte == b'\\' || !(32..=126).contains(&byte) {
            out.push_str(&format!("\\{byte:03}"));
        } else {
            out.push(char::from(byte));
        }
    }
    out.push('"');
    out
}

/// A Lua table literal of a JSON value (arrays 1-based, as gopher-lua makes them).
fn to_lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!(
            "{{{}}}",
            items.iter().map(to_lua).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), to_lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes `text` into the cluster directory and returns its path.
pub fn write_manifest(cluster: &Cluster, name: &str, text: &str) -> PathBuf {
    let path = cluster.dir().join(name);
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// With TRIBUTARY_CLUSTER_CAPTURE=DIR, keeps what a user would see, as `$ command` and its
/// output, in DIR/<name>.txt: scripts/readme-cluster-output puts these into README.
pub fn capture(name: &str, command: &str, output: &str) {
    if let Some(dir) = std::env::var_os("TRIBUTARY_CLUSTER_CAPTURE") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("capture directory");
        std::fs::write(
            dir.join(format!("{name}.txt")),
            format!("$ {command}\n{}\n", output.trim_end()),
        )
        .expect("write capture");
    }
}
