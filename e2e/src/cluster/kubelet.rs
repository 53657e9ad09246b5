//! The process kubelet: a node without a container runtime. It registers one Node, binds
//! pending pods to it (standing in for the scheduler: every pod fits; a pod whose claims do not
//! exist stays Pending as Unschedulable, as with kube-scheduler), and runs each container of a
//! bound pod as a local process of the binary its image names (`Runtime`), with:
//!
//! - the container's command, args and env (values, field refs, Secret and ConfigMap keys,
//!   envFrom), `$(VAR)` references left as they are;
//! - its volumes under a per-pod directory: ConfigMap and Secret volumes written there,
//!   emptyDirs made there, a claim's volume as a directory per claim shared by every pod, the
//!   projected ServiceAccount volume as token, ca.crt and namespace files. The pod's mount
//!   paths become paths under `<pod dir>/rootfs` (a symlink per mount), and every absolute path
//!   under a mount path in the args, in env values and in the text of ConfigMap files is
//!   rewritten to that place, since the process cannot see the pod's own file system;
//! - the pod's ServiceAccount credentials as a TokenRequest token (bound to the pod) in a
//!   kubeconfig named by `KUBECONFIG`, so the process has exactly that account's RBAC;
//! - its container ports on free ports of 127.0.0.1, handed to the process the way its
//!   `Runtime` entry says (an env variable or a flag), and readiness probes (HTTP GET or TCP)
//!   run against them.
//!
//! It reports the pod's phase, conditions and container states as a kubelet does (Running,
//! Succeeded or Failed with the exit code, restarts with CrashLoopBackOff back-off under
//! restartPolicy Always/OnFailure, CreateContainerConfigError for a missing Secret or
//! ConfigMap, ErrImagePull for an image it has no binary for), and when a pod is deleted it
//! sends SIGTERM, SIGKILL after the grace period, then removes the pod. Not implemented:
//! liveness and startup probes, init containers, resource limits, security contexts (the
//! processes run as the test's user).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Node, PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use regex::Regex;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{ClusterError, Result};
use super::process::{die_with_parent, free_port, signal_group, tail};

/// How a binary learns the host port its container port was given.
#[derive(Clone, Debug)]
pub enum PortStyle {
    /// Sets this variable to the port number (overriding the pod's value).
    Env(String),
    /// Appends `<flag>=127.0.0.1:<port>` to the arguments.
    AddressFlag(String),
}

/// A local binary standing for an image.
#[derive(Clone, Debug)]
pub struct ImageBinary {
    /// The image's repository name without registry, path or tag (`tributary-worker`).
    pub name: String,
    pub binary: PathBuf,
    pub port: PortStyle,
    /// Variables set to the pod-directory place of a container path, for directories the
    /// image's program reads by default (`TRIBUTARY_SECRETS_DIR` → /var/run/secrets/tributary).
    pub path_env: Vec<(String, String)>,
}

/// The images this node can run.
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    images: Vec<ImageBinary>,
}

impl Runtime {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn image(mut self, image: ImageBinary) -> Self {
        self.images.push(image);
        self
    }

    fn binary_for(&self, image: &str) -> Option<&ImageBinary> {
        let name = image_name(image);
        self.images.iter().find(|i| i.name == name)
    }
}

/// `ghcr.io/org/tributary-worker:1.2@sha256:..` -> `tributary-worker`.
fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// The directory standing for a claim's volume.
pub fn claim_dir(node_dir: &Path, namespace: &str, claim: &str) -> PathBuf {
    node_dir.join("claims").join(namespace).join(claim)
}

/// A TokenRequest token of a ServiceAccount, bound to a pod when one is named.
pub async fn request_token(
    client: &Client,
    namespace: &str,
    account: &str,
    pod: Option<(&str, &str)>,
) -> Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: pod.map(|(name, uid)| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.into()),
                uid: Some(uid.into()),
            }),
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .map_err(ClusterError::kube(format!(
            "TokenRequest for ServiceAccount {namespace}/{account}"
        )))?;
    answer.status.map(|s| s.token).ok_or_else(|| {
        ClusterError::Invalid(format!(
            "TokenRequest for {namespace}/{account} returned no token"
        ))
    })
}

/// Process groups of running containers, and every container log, shared with `Kubelet` so
/// they can be stopped and shown whatever the kubelet task is doing.
#[derive(Default)]
struct Shared {
    groups: Mutex<BTreeSet<u32>>,
    logs: Mutex<Vec<(String, PathBuf)>>,
    errors: Mutex<Vec<String>>,
}

pub struct Kubelet {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    node_dir: PathBuf,
}

struct Context {
    client: Client,
    node: String,
    node_dir: PathBuf,
    server: String,
    ca_cert: PathBuf,
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
}

impl Kubelet {
    /// Registers the Node and starts the kubelet loop.
    pub async fn start(
        client: Client,
        node: &str,
        node_dir: PathBuf,
        server: String,
        ca_cert: PathBuf,
        runtime: Arc<Runtime>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&node_dir)
            .map_err(ClusterError::io(format!("create {}", node_dir.display())))?;
        register_node(&client, node).await?;
        let shared = Arc::new(Shared::default());
        let context = Context {
            client,
            node: node.to_string(),
            node_dir: node_dir.clone(),
            server,
            ca_cert,
            runtime,
            shared: shared.clone(),
        };
        let task = tokio::spawn(run(context));
        Ok(Self {
            shared,
            task,
            node_dir,
        })
    }

    /// Stops the loop and every container process (SIGTERM, SIGKILL after 3 s).
    pub fn stop(self) {
        self.task.abort();
        let groups: Vec<u32> = lock(&self.shared.groups).iter().copied().collect();
        for group in &groups {
            signal_group(*group, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && groups.iter().any(|g| group_alive(*g)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for group in groups {
            signal_group(group, libc::SIGKILL);
        }
    }

    /// The last lines of every container's log, and the kubelet's own errors.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (container, path) in lock(&self.shared.logs).iter() {
            out.push_str(&format!(
                "\n--- {container} ({}):\n{}",
                path.display(),
                tail(path, 3000)
            ));
        }
        let errors = lock(&self.shared.errors);
        if !errors.is_empty() {
            out.push_str("\n--- process kubelet errors:\n");
            let skip = errors.len().saturating_sub(20);
            for e in errors.iter().skip(skip) {
                out.push_str(e);
                out.push('\n');
            }
        }
        out
    }

    /// Log files of the containers of pods whose name starts with `prefix` in `namespace`, in
    /// start order.
    pub fn container_logs(&self, namespace: &str, prefix: &str) -> Vec<PathBuf> {
        let start = format!("{namespace}/{prefix}");
        lock(&self.shared.logs)
            .iter()
            .filter(|(name, _)| name.starts_with(&start))
            .map(|(_, path)| path.clone())
            .collect()
    }

    pub fn node_dir(&self) -> &Path {
        &self.node_dir
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn group_alive(group: u32) -> bool {
    match libc::pid_t::try_from(group) {
        // SAFETY: signal 0 only checks that the group exists.
        Ok(pgid) => unsafe { libc::kill(-pgid, 0) == 0 },
        Err(_) => false,
    }
}

async fn register_node(client: &Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
    }))
    .map_err(|e| ClusterError::Invalid(format!("node manifest: {e}")))?;
    nodes
        .create(&PostParams::default(), &node)
        .await
        .map_err(ClusterError::kube(format!("create Node {name}")))?;
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let capacity =
        json!({"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": name}],
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "nodeInfo": {
                "machineID": "e2e", "systemUUID": "e2e", "bootID": "e2e",
                "kernelVersion": "", "osImage": "process kubelet",
                "containerRuntimeVersion": "process://0", "kubeletVersion": super::KUBERNETES_VERSION,
                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(ClusterError::kube(format!("set the status of Node {name}")))?;
    Ok(())
}

// ---- the loop --------------------------------------------------------------------------------

const TICK: Duration = Duration::from_millis(300);
const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// A container that cannot be configured yet (missing Secret) is retried this often.
const CONFIG_RETRY: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    message: Option<String>,
}

enum State {
    Waiting {
        reason: String,
        message: Option<String>,
        retry_at: Instant,
    },
    Running {
        child: Child,
        group: u32,
        started: DateTime<Utc>,
        ready: bool,
        next_probe: Instant,
        log: PathBuf,
    },
    Terminated(Terminated),
}

struct ContainerRun {
    spec: Container,
    state: State,
    restarts: i32,
    last: Option<Terminated>,
    /// container port -> host port, fixed for the pod's life.
    ports: BTreeMap<i32, u16>,
    /// Asked to stop at this time (pod deleted), killed at the deadline.
    stopping: Option<Instant>,
}

struct PodRun {
    uid: String,
    namespace: String,
    name: String,
    dir: PathBuf,
    restart_policy: String,
    started: DateTime<Utc>,
    containers: Vec<ContainerRun>,
    written: Option<Value>,
    transitions: BTreeMap<String, (String, DateTime<Utc>)>,
}

async fn run(context: Context) {
    let mut pods: BTreeMap<String, PodRun> = BTreeMap::new();
    let mut unschedulable: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if let Err(e) = tick(&context, &mut pods, &mut unschedulable).await {
            let mut errors = lock(&context.shared.errors);
            errors.push(format!("{} {e}", Utc::now().format("%H:%M:%S%.3f")));
        }
        tokio::time::sleep(TICK).await;
    }
}

fn note(context: &Context, message: String) {
    lock(&context.shared.errors).push(format!("{} {message}", Utc::now().format("%H:%M:%S%.3f")));
}

async fn tick(
    context: &Context,
    runs: &mut BTreeMap<String, PodRun>,
    unschedulable: &mut BTreeMap<String, String>,
) -> Result<()> {
    let all: Api<Pod> = Api::all(context.client.clone());
    let pods = all
        .list(&ListParams::default())
        .await
        .map_err(ClusterError::kube("list pods"))?;
    let mut seen = BTreeSet::new();
    for pod in pods.items {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        seen.insert(uid.clone());
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        match node {
            None => {
                if pod.metadata.deletion_timestamp.is_none()
                    && let Err(e) = bind(context, &pod, unschedulable).await
                {
                    note(context, format!("bind: {e}"));
                }
            }
            Some(node) if node == context.node => {
                if let Err(e) = drive(context, &pod, &uid, runs).await {
                    note(context, format!("pod {}: {e}", pod_key(&pod)));
                }
            }
            Some(_) => {}
        }
    }
    // Pods removed by someone else (force deletion): stop what is left of them.
    let gone: Vec<String> = runs
        .keys()
        .filter(|u| !seen.contains(*u))
        .cloned()
        .collect();
    for uid in gone {
        if let Some(mut run) = runs.remove(&uid) {
            for container in &mut run.containers {
                kill_now(context, container);
            }
        }
    }
    unschedulable.retain(|uid, _| seen.contains(uid));
    Ok(())
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Binds a pending pod to the node once the claims it mounts exist.
async fn bind(
    context: &Context,
    pod: &Pod,
    unschedulable: &mut BTreeMap<String, String>,
) -> Result<()> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(context.client.clone(), &namespace);
    let mut missing = Vec::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(claim) = &volume.persistent_volume_claim
            && claims
                .get_opt(&claim.claim_name)
                .await
                .map_err(ClusterError::kube(format!(
                    "get claim {}",
                    claim.claim_name
                )))?
                .is_none()
        {
            missing.push(format!(
                "persistentvolumeclaim \"{}\" not found",
                claim.claim_name
            ));
        }
    }
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    if !missing.is_empty() {
        let message = format!("0/1 nodes are available: {}.", missing.join(", "));
        if unschedulable.get(&uid) != Some(&message) {
            let status = json!({"status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastTransitionTime": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            }]}});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map_err(ClusterError::kube(format!(
                    "mark {namespace}/{name} unschedulable"
                )))?;
            unschedulable.insert(uid, message);
        }
        return Ok(());
    }
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": context.node},
    });
    match pods
        .create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => Ok(()),
        // Already bound (a stale list) or gone: the next tick sees the truth.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(e) => Err(ClusterError::kube(format!("bind {namespace}/{name}"))(e)),
    }
}

/// One step of a bound pod's life.
async fn drive(
    context: &Context,
    pod: &Pod,
    uid: &str,
    runs: &mut BTreeMap<String, PodRun>,
) -> Result<()> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let spec = pod.spec.clone().unwrap_or_default();

    if pod.metadata.deletion_timestamp.is_some() {
        let grace = Duration::from_secs(
            u64::try_from(
                spec.termination_grace_period_seconds
                    .unwrap_or(30)
                    .clamp(0, 30),
            )
            .unwrap_or(30),
        );
        let mut done = true;
        if let Some(run) = runs.get_mut(uid) {
            for container in &mut run.containers {
                if !stop_container(context, container, grace) {
                    done = false;
                }
            }
        }
        if done {
            runs.remove(uid);
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(ClusterError::kube(format!("delete {namespace}/{name}"))(e)),
            }
        }
        return Ok(());
    }

    if !runs.contains_key(uid) {
        let dir = context
            .node_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        std::fs::create_dir_all(&dir)
            .map_err(ClusterError::io(format!("create {}", dir.display())))?;
        let now = Instant::now();
        let containers = spec
            .containers
            .iter()
            .map(|c| ContainerRun {
                spec: c.clone(),
                state: State::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                    retry_at: now,
                },
                restarts: 0,
                last: None,
                ports: BTreeMap::new(),
                stopping: None,
            })
            .collect();
        runs.insert(
            uid.to_string(),
            PodRun {
                uid: uid.to_string(),
                namespace: namespace.clone(),
                name: name.clone(),
                dir,
                restart_policy: spec
                    .restart_policy
                    .clone()
                    .unwrap_or_else(|| "Always".into()),
                started: Utc::now(),
                containers,
                written: None,
                transitions: BTreeMap::new(),
            },
        );
    }
    let Some(run) = runs.get_mut(uid) else {
        return Ok(());
    };

    let restart_policy = run.restart_policy.clone();
    for index in 0..run.containers.len() {
        advance(context, pod, run, index, &restart_policy).await;
    }
    for container in &mut run.containers {
        probe(container).await;
    }
    let status = pod_status(run);
    if run.written.as_ref() != Some(&status) {
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await
        .map_err(ClusterError::kube(format!(
            "update the status of {namespace}/{name}"
        )))?;
        run.written = Some(status);
    }
    Ok(())
}

/// Starts, reaps and restarts one container.
async fn advance(
    context: &Context,
    pod: &Pod,
    run: &mut PodRun,
    index: usize,
    restart_policy: &str,
) {
    let now = Instant::now();
    // As the kubelet: a failed container's log tail becomes its termination message only under
    // FallbackToLogsOnError. The File policy's file is never read here (the process writes the
    // host's path), so it gives no message.
    let fallback = run.containers[index]
        .spec
        .termination_message_policy
        .as_deref()
        == Some("FallbackToLogsOnError");
    let exited = match &mut run.containers[index].state {
        State::Running {
            child,
            started,
            group,
            log,
            ..
        } => match child.try_wait() {
            Ok(Some(status)) => {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                let message = (code != 0 && fallback).then(|| last_lines(log, 2048));
                lock(&context.shared.groups).remove(&*group);
                Some(Terminated {
                    exit_code: code,
                    signal: status.signal(),
                    started: *started,
                    finished: Utc::now(),
                    message,
                })
            }
            _ => None,
        },
        _ => None,
    };
    let container = &mut run.containers[index];
    if let Some(terminated) = exited {
        let restart = match restart_policy {
            "Never" => false,
            "OnFailure" => terminated.exit_code != 0,
            _ => true,
        };
        if restart && container.stopping.is_none() {
            let backoff = if container.restarts == 0 {
                Duration::from_secs(1)
            } else {
                (Duration::from_secs(10)
                    * 2u32.saturating_pow((container.restarts - 1).min(8) as u32))
                .min(MAX_BACKOFF)
            };
            container.restarts += 1;
            container.last = Some(terminated);
            container.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={}_{}({})",
                    backoff.as_secs(),
                    container.spec.name,
                    run.name,
                    run.namespace,
                    run.uid
                )),
                retry_at: now + backoff,
            };
        } else {
            container.state = State::Terminated(terminated);
        }
        return;
    }
    let due = matches!(&container.state, State::Waiting { retry_at, .. } if *retry_at <= now);
    if !due || container.stopping.is_some() {
        return;
    }
    match start_container(context, pod, run, index).await {
        Ok(state) => run.containers[index].state = state,
        Err((reason, message)) => {
            run.containers[index].state = State::Waiting {
                reason,
                message: Some(message),
                retry_at: now + CONFIG_RETRY,
            }
        }
    }
}

/// SIGTERM once, SIGKILL at the deadline; true once the process is gone.
fn stop_container(context: &Context, container: &mut ContainerRun, grace: Duration) -> bool {
    let State::Running { child, group, .. } = &mut container.state else {
        return true;
    };
    if let Ok(Some(_)) = child.try_wait() {
        lock(&context.shared.groups).remove(&*group);
        signal_group(*group, libc::SIGKILL);
        container.state = State::Waiting {
            reason: "Terminated".into(),
            message: None,
            retry_at: Instant::now(),
        };
        return true;
    }
    match container.stopping {
        None => {
            signal_group(*group, libc::SIGTERM);
            container.stopping = Some(Instant::now() + grace);
        }
        Some(deadline) if Instant::now() >= deadline => signal_group(*group, libc::SIGKILL),
        Some(_) => {}
    }
    false
}

fn kill_now(context: &Context, container: &mut ContainerRun) {
    if let State::Running { child, group, .. } = &mut container.state {
        signal_group(*group, libc::SIGKILL);
        let _ = child.wait();
        lock(&context.shared.groups).remove(&*group);
    }
}

/// The kubelet's log fallback: the last 80 lines, at most `bytes` of them.
fn last_lines(path: &Path, bytes: u64) -> String {
    let text = tail(path, bytes);
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(80);
    lines[skip..].join("\n")
}

// ---- starting a container -------------------------------------------------------------------

type StartError = (String, String);

fn config_error(message: impl Into<String>) -> StartError {
    ("CreateContainerConfigError".into(), message.into())
}

fn container_error(message: impl Into<String>) -> StartError {
    ("CreateContainerError".into(), message.into())
}

async fn start_container(
    context: &Context,
    pod: &Pod,
    run: &mut PodRun,
    index: usize,
) -> std::result::Result<State, StartError> {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = run.containers[index].spec.clone();
    let Some(image) = context
        .runtime
        .binary_for(container.image.as_deref().unwrap_or_default())
    else {
        return Err((
            "ErrImagePull".into(),
            format!(
                "the process kubelet has no binary for image {:?}",
                container.image.as_deref().unwrap_or_default()
            ),
        ));
    };
    let rootfs = run.dir.join("rootfs");
    let volumes =
        prepare_volumes(context, pod, run, &spec.volumes.clone().unwrap_or_default()).await?;

    // Mounts: a symlink at <rootfs>/<mountPath> to the volume's directory.
    let mut mount_paths = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(source) = volumes.get(&mount.name) else {
            return Err(container_error(format!(
                "volume {:?} of mount {} is not in the pod",
                mount.name, mount.mount_path
            )));
        };
        let source = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => source.join(sub),
            None => source.clone(),
        };
        std::fs::create_dir_all(&source)
            .map_err(|e| container_error(format!("{}: {e}", source.display())))?;
        let link = rootfs.join(mount.mount_path.trim_start_matches('/'));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| container_error(format!("{}: {e}", parent.display())))?;
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&source, &link)
            .map_err(|e| container_error(format!("link {}: {e}", link.display())))?;
        mount_paths.push(mount.mount_path.trim_end_matches('/').to_string());
    }
    let mapper = PathMapper::new(&rootfs, &mount_paths);
    // ConfigMap files name paths of the pod's file system: rewrite them to the mapped places.
    for (volume, kind) in volume_kinds(&spec.volumes.clone().unwrap_or_default()) {
        if kind == VolumeKind::ConfigMap
            && let Some(dir) = volumes.get(&volume)
        {
            rewrite_files(dir, &mapper)
                .map_err(|e| container_error(format!("volume {volume}: {e}")))?;
        }
    }

    // Environment.
    let mut env: Vec<(String, String)> = Vec::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(reference) = &source.config_map_ref {
            let data =
                config_map_data(context, &run.namespace, &reference.name, reference.optional)
                    .await?;
            env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
        if let Some(reference) = &source.secret_ref {
            let data =
                secret_data(context, &run.namespace, &reference.name, reference.optional).await?;
            env.extend(data.into_iter().map(|(k, v)| {
                (
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            }));
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(context, pod, run, var).await? {
            env.retain(|(k, _)| k != &var.name);
            env.push((var.name.clone(), mapper.map_value(&value)));
        }
    }
    for (name, path) in &image.path_env {
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), mapper.map_value(path)));
    }
    if mount_paths.iter().any(|m| m == "/tmp") {
        env.push(("TMPDIR".into(), rootfs.join("tmp").display().to_string()));
    }
    if spec.automount_service_account_token != Some(false) {
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let token = request_token(
            &context.client,
            &run.namespace,
            &account,
            Some((&run.name, &run.uid)),
        )
        .await
        .map_err(|e| container_error(e.to_string()))?;
        let kubeconfig = run.dir.join("kubeconfig");
        super::write_kubeconfig(
            &kubeconfig,
            &context.server,
            &context.ca_cert,
            super::Credentials::Token(&token),
        )
        .map_err(|e| container_error(e.to_string()))?;
        env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    }

    // Ports.
    let mut args: Vec<String> = Vec::new();
    let ports = &mut run.containers[index].ports;
    for port in container.ports.iter().flatten() {
        if let std::collections::btree_map::Entry::Vacant(entry) = ports.entry(port.container_port)
        {
            entry.insert(free_port().map_err(|e| container_error(e.to_string()))?);
        }
    }
    let main_port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .or_else(|| container.ports.iter().flatten().next())
        .and_then(|p| ports.get(&p.container_port).copied());

    // Command line: the image's binary, the container's command (after its program) and args.
    let mut command_args = container.command.clone().unwrap_or_default();
    if !command_args.is_empty() {
        command_args.remove(0);
    }
    args.extend(
        command_args
            .iter()
            .chain(container.args.iter().flatten())
            .map(|a| mapper.map_value(a)),
    );
    match (&image.port, main_port) {
        (PortStyle::Env(var), Some(port)) => {
            env.retain(|(k, _)| k != var);
            env.push((var.clone(), port.to_string()));
        }
        (PortStyle::AddressFlag(flag), Some(port)) => args.push(format!("{flag}=127.0.0.1:{port}")),
        (_, None) => {}
    }

    let restarts = run.containers[index].restarts;
    let logs = run.dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| container_error(format!("{}: {e}", logs.display())))?;
    let log = logs.join(format!("{}-{restarts}.log", container.name));
    let out = File::create(&log).map_err(|e| container_error(format!("{}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| container_error(e.to_string()))?;
    let workdir = container
        .working_dir
        .as_deref()
        .map(|w| PathBuf::from(mapper.map_value(w)))
        .unwrap_or_else(|| run.dir.clone());
    std::fs::create_dir_all(&workdir)
        .map_err(|e| container_error(format!("{}: {e}", workdir.display())))?;
    let mut command = Command::new(&image.binary);
    command
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &run.dir)
        .env("HOSTNAME", &run.name)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&workdir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    die_with_parent(&mut command);
    let child = command
        .spawn()
        .map_err(|e| container_error(format!("start {}: {e}", image.binary.display())))?;
    let group = child.id();
    lock(&context.shared.groups).insert(group);
    lock(&context.shared.logs).push((
        format!(
            "{}/{}/{}#{restarts}",
            run.namespace, run.name, container.name
        ),
        log.clone(),
    ));
    Ok(State::Running {
        child,
        group,
        started: Utc::now(),
        ready: container.readiness_probe.is_none(),
        next_probe: Instant::now(),
        log,
    })
}

#[derive(PartialEq)]
enum VolumeKind {
    ConfigMap,
    Other,
}

fn volume_kinds(volumes: &[Volume]) -> Vec<(String, VolumeKind)> {
    volumes
        .iter()
        .map(|v| {
            let kind = if v.config_map.is_some() {
                VolumeKind::ConfigMap
            } else {
                VolumeKind::Other
            };
            (v.name.clone(), kind)
        })
        .collect()
}

async fn config_map_data(
    context: &Context,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> std::result::Result<BTreeMap<String, String>, StartError> {
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(map)) => Ok(map.data.unwrap_or_default()),
        Ok(None) if optional == Some(true) => Ok(BTreeMap::new()),
        Ok(None) => Err(config_error(format!("configmap \"{name}\" not found"))),
        Err(e) => Err(config_error(format!("get configmap {name}: {e}"))),
    }
}

async fn secret_data(
    context: &Context,
    namespace: &str,
    name: &str,
    optional: Option<bool>,
) -> std::result::Result<BTreeMap<String, Vec<u8>>, StartError> {
    let api: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(secret)) => Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()),
        Ok(None) if optional == Some(true) => Ok(BTreeMap::new()),
        Ok(None) => Err(config_error(format!("secret \"{name}\" not found"))),
        Err(e) => Err(config_error(format!("get secret {name}: {e}"))),
    }
}

async fn env_value(
    context: &Context,
    pod: &Pod,
    run: &PodRun,
    var: &EnvVar,
) -> std::result::Result<Option<String>, StartError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(var.value.clone().unwrap_or_default()));
    };
    if let Some(field) = &from.field_ref {
        let value = match field.field_path.as_str() {
            "metadata.name" => run.name.clone(),
            "metadata.namespace" => run.namespace.clone(),
            "metadata.uid" => run.uid.clone(),
            "spec.nodeName" => context.node.clone(),
            "spec.serviceAccountName" => pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
            other => {
                return Err(config_error(format!(
                    "env {}: field {other} is not supported by the process kubelet",
                    var.name
                )));
            }
        };
        return Ok(Some(value));
    }
    if let Some(key) = &from.secret_key_ref {
        let data = secret_data(context, &run.namespace, &key.name, key.optional).await?;
        return match data.get(&key.key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if key.optional == Some(true) => Ok(None),
            None => Err(config_error(format!(
                "couldn't find key {} in Secret {}/{}",
                key.key, run.namespace, key.name
            ))),
        };
    }
    if let Some(key) = &from.config_map_key_ref {
        let data = config_map_data(context, &run.namespace, &key.name, key.optional).await?;
        return match data.get(&key.key) {
            Some(v) => Ok(Some(v.clone())),
            None if key.optional == Some(true) => Ok(None),
            None => Err(config_error(format!(
                "couldn't find key {} in ConfigMap {}/{}",
                key.key, run.namespace, key.name
            ))),
        };
    }
    Ok(None)
}

/// Writes or makes every volume of the pod; volume name -> its directory.
async fn prepare_volumes(
    context: &Context,
    pod: &Pod,
    run: &PodRun,
    volumes: &[Volume],
) -> std::result::Result<BTreeMap<String, PathBuf>, StartError> {
    let mut dirs = BTreeMap::new();
    let base = run.dir.join("volumes");
    for volume in volumes {
        let dir = base.join(&volume.name);
        if let Some(source) = &volume.config_map {
            let data =
                config_map_data(context, &run.namespace, &source.name, source.optional).await?;
            let files = select_items(
                data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
                source.items.as_deref(),
            );
            write_files(&dir, &files)?;
        } else if let Some(source) = &volume.secret {
            let name = source.secret_name.clone().unwrap_or_default();
            let data = secret_data(context, &run.namespace, &name, source.optional).await?;
            write_files(&dir, &select_items(data, source.items.as_deref()))?;
        } else if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| container_error(format!("{}: {e}", dir.display())))?;
        } else if let Some(claim) = &volume.persistent_volume_claim {
            let claim_dir = claim_dir(&context.node_dir, &run.namespace, &claim.claim_name);
            std::fs::create_dir_all(&claim_dir)
                .map_err(|e| container_error(format!("{}: {e}", claim_dir.display())))?;
            dirs.insert(volume.name.clone(), claim_dir);
            continue;
        } else if let Some(projected) = &volume.projected {
            let mut files = BTreeMap::new();
            for source in projected.sources.iter().flatten() {
                if let Some(token) = &source.service_account_token {
                    let account = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_else(|| "default".into());
                    let value = request_token(
                        &context.client,
                        &run.namespace,
                        &account,
                        Some((&run.name, &run.uid)),
                    )
                    .await
                    .map_err(|e| container_error(e.to_string()))?;
                    files.insert(token.path.clone(), value.into_bytes());
                }
                if let Some(map) = &source.config_map {
                    // kube-root-ca.crt is published by a controller this cluster does not run:
                    // its one key is the cluster CA, which the kubelet has.
                    if map.name == "kube-root-ca.crt" {
                        let ca = std::fs::read(&context.ca_cert).map_err(|e| {
                            container_error(format!("{}: {e}", context.ca_cert.display()))
                        })?;
                        files.insert("ca.crt".into(), ca);
                    } else {
                        let data =
                            config_map_data(context, &run.namespace, &map.name, map.optional)
                                .await?;
                        files.extend(select_items(
                            data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect(),
                            map.items.as_deref(),
                        ));
                    }
                }
                if let Some(downward) = &source.downward_api {
                    for item in downward.items.iter().flatten() {
                        if item.field_ref.as_ref().map(|f| f.field_path.as_str())
                            == Some("metadata.namespace")
                        {
                            files.insert(item.path.clone(), run.namespace.clone().into_bytes());
                        }
                    }
                }
            }
            write_files(&dir, &files)?;
        } else {
            return Err(container_error(format!(
                "volume {}: only configMap, secret, emptyDir, persistentVolumeClaim and projected volumes are supported by the process kubelet",
                volume.name
            )));
        }
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(dirs)
}

fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> BTreeMap<String, Vec<u8>> {
    match items {
        None => data,
        Some(items) => items
            .iter()
            .filter_map(|item| data.get(&item.key).map(|v| (item.path.clone(), v.clone())))
            .collect(),
    }
}

fn write_files(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
) -> std::result::Result<(), StartError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| container_error(format!("{}: {e}", dir.display())))?;
    for (path, bytes) in files {
        if path.split('/').any(|part| part == "..") || path.starts_with('/') {
            return Err(container_error(format!(
                "volume file path {path:?} leaves its volume"
            )));
        }
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| container_error(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&file, bytes)
            .map_err(|e| container_error(format!("{}: {e}", file.display())))?;
    }
    Ok(())
}

/// Maps paths of the pod's file system to their places under the pod's rootfs directory.
struct PathMapper {
    rootfs: String,
    mounts: Vec<String>,
    in_text: Option<Regex>,
}

impl PathMapper {
    fn new(rootfs: &Path, mounts: &[String]) -> Self {
        let mut mounts: Vec<String> = mounts
            .iter()
            .filter(|m| m.starts_with('/') && m.len() > 1)
            .cloned()
            .collect();
        // Longest first, so a nested mount wins over its parent.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        // Paths in text: a mount path at a token start, followed by `/` or a token end. One
        // pass over the text, so a path already rewritten is not rewritten again.
        let in_text = (!mounts.is_empty())
            .then(|| {
                let alternatives: Vec<String> = mounts.iter().map(|m| regex::escape(m)).collect();
                Regex::new(&format!(
                    r#"(?m)(^|[\s"'\[{{,=:])({})(/|$|[\s"'\]}},])"#,
                    alternatives.join("|")
                ))
                .ok()
            })
            .flatten();
        Self {
            rootfs: rootfs.display().to_string(),
            mounts,
            in_text,
        }
    }

    /// A value that is a path under a mount, or under a directory holding mounts, is mapped.
    fn map_value(&self, value: &str) -> String {
        let under = |base: &str| value == base || value.starts_with(&format!("{base}/"));
        let parent_of_mount = |value: &str| {
            self.mounts
                .iter()
                .any(|m| m.starts_with(&format!("{value}/")))
        };
        if self.mounts.iter().any(|m| under(m))
            || (value.starts_with('/') && parent_of_mount(value.trim_end_matches('/')))
        {
            format!("{}{value}", self.rootfs)
        } else {
            value.to_string()
        }
    }

    fn map_text(&self, text: &str) -> String {
        match &self.in_text {
            None => text.to_string(),
            Some(regex) => regex
                .replace_all(text, |c: &regex::Captures<'_>| {
                    format!("{}{}{}{}", &c[1], self.rootfs, &c[2], &c[3])
                })
                .into_owned(),
        }
    }
}

fn rewrite_files(dir: &Path, mapper: &PathMapper) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rewrite_files(&path, mapper)?;
        } else if let Ok(text) = std::fs::read_to_string(&path) {
            let mapped = mapper.map_text(&text);
            if mapped != text {
                std::fs::write(&path, mapped)?;
            }
        }
    }
    Ok(())
}

// ---- probes and status ----------------------------------------------------------------------

async fn probe(container: &mut ContainerRun) {
    let Some(probe) = container.spec.readiness_probe.clone() else {
        return;
    };
    let ports = container.ports.clone();
    let named: BTreeMap<String, i32> = container
        .spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
        .collect();
    let State::Running {
        ready, next_probe, ..
    } = &mut container.state
    else {
        return;
    };
    if Instant::now() < *next_probe {
        return;
    }
    *next_probe = Instant::now() + PROBE_PERIOD;
    let host_port = |port: &IntOrString| -> Option<u16> {
        let container_port = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => *named.get(name)?,
        };
        ports.get(&container_port).copied()
    };
    let ok = if let Some(get) = &probe.http_get {
        match host_port(&get.port) {
            Some(port) => http_ok(port, get.path.as_deref().unwrap_or("/")).await,
            None => false,
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        match host_port(&tcp.port) {
            Some(port) => tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .is_ok_and(|r| r.is_ok()),
            None => false,
        }
    } else {
        // exec and gRPC probes: not supported; a running process counts as ready.
        true
    };
    *ready = ok;
}

async fn http_ok(port: u16, path: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.33\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buffer = vec![0u8; 64];
        let n = stream.read(&mut buffer).await.ok()?;
        let head = String::from_utf8_lossy(&buffer[..n]).into_owned();
        let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}

fn time(t: &DateTime<Utc>) -> Value {
    json!(t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn terminated_json(t: &Terminated) -> Value {
    let mut value = json!({
        "exitCode": t.exit_code,
        "reason": if t.exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": time(&t.started),
        "finishedAt": time(&t.finished),
    });
    if let Some(signal) = t.signal {
        value["signal"] = json!(signal);
    }
    if let Some(message) = &t.message {
        value["message"] = json!(message);
    }
    value
}

fn pod_status(run: &mut PodRun) -> Value {
    let mut statuses = Vec::new();
    let mut all_ready = true;
    let mut any_started = false;
    let mut all_terminated = true;
    let mut all_succeeded = true;
    for container in &run.containers {
        let (state, ready, started) = match &container.state {
            State::Waiting {
                reason, message, ..
            } => {
                all_terminated = false;
                let mut waiting = json!({"reason": reason});
                if let Some(m) = message {
                    waiting["message"] = json!(m);
                }
                (json!({"waiting": waiting}), false, false)
            }
            State::Running { started, ready, .. } => {
                all_terminated = false;
                any_started = true;
                (
                    json!({"running": {"startedAt": time(started)}}),
                    *ready,
                    true,
                )
            }
            State::Terminated(t) => {
                any_started = true;
                if t.exit_code != 0 {
                    all_succeeded = false;
                }
                (json!({"terminated": terminated_json(t)}), false, false)
            }
        };
        all_ready &= ready;
        let mut status = json!({
            "name": container.spec.name,
            "image": container.spec.image.clone().unwrap_or_default(),
            "imageID": "",
            "ready": ready,
            "restartCount": container.restarts,
            "started": started,
            "state": state,
        });
        if let Some(last) = &container.last {
            status["lastState"] = json!({"terminated": terminated_json(last)});
        }
        statuses.push(status);
    }
    let never_started = !any_started && run.containers.iter().all(|c| c.restarts == 0);
    let phase = if all_terminated && !run.containers.is_empty() {
        if all_succeeded { "Succeeded" } else { "Failed" }
    } else if never_started {
        "Pending"
    } else {
        "Running"
    };
    let ready = all_ready && !run.containers.is_empty();
    let mut condition = |type_: &str, status: bool, reason: Option<&str>| {
        let value = if status { "True" } else { "False" };
        let entry = run
            .transitions
            .entry(type_.to_string())
            .or_insert_with(|| (value.to_string(), Utc::now()));
        if entry.0 != value {
            *entry = (value.to_string(), Utc::now());
        }
        let mut c = json!({"type": type_, "status": value, "lastTransitionTime": time(&entry.1)});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        c
    };
    let not_ready = (!ready).then_some(if all_terminated {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    });
    let conditions = vec![
        condition("PodReadyToStartContainers", true, None),
        condition("Initialized", true, None),
        condition("Ready", ready, not_ready),
        condition("ContainersReady", ready, not_ready),
        condition("PodScheduled", true, None),
    ];
    json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": time(&run.started),
        "containerStatuses": statuses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_drop_registry_tag_and_digest() {
        assert_eq!(
            image_name("ghcr.io/tributary-dev/tributary-worker:0.1.0"),
            "tributary-worker"
        );
        assert_eq!(image_name("tributary-operator"), "tributary-operator");
        assert_eq!(
            image_name("localhost:5000/x/tributary-worker@sha256:ab"),
            "tributary-worker"
        );
    }

    #[test]
    fn paths_under_mounts_are_mapped_once() {
        let mapper = PathMapper::new(
            Path::new("/tmp/pod/rootfs"),
            &[
                "/lake".into(),
                "/tmp".into(),
                "/var/run/secrets/tributary/kafka".into(),
            ],
        );
        assert_eq!(
            mapper.map_value("/lake/bronze/t"),
            "/tmp/pod/rootfs/lake/bronze/t"
        );
        assert_eq!(mapper.map_value("/lakehouse"), "/lakehouse");
        assert_eq!(
            mapper.map_value("/var/run/secrets/tributary"),
            "/tmp/pod/rootfs/var/run/secrets/tributary"
        );
        assert_eq!(mapper.map_value("kafka:9092"), "kafka:9092");
        let text = "sink:\n  delta:\n    uri: /lake/bronze/t\ncheckpoint: {location: \"/tmp\"}\nother: /lakes\n";
        assert_eq!(
            mapper.map_text(text),
            "sink:\n  delta:\n    uri: /tmp/pod/rootfs/lake/bronze/t\ncheckpoint: {location: \"/tmp/pod/rootfs/tmp\"}\nother: /lakes\n"
        );
    }
}
