//! A real Kubernetes control plane on 127.0.0.1 for the e2e suite: etcd, kube-apiserver (RBAC,
//! the default admission plugins, ServiceAccount tokens) and kube-controller-manager, built
//! from Kubernetes' own Go modules by scripts/install-deps.sh, plus a process kubelet that runs
//! each pod bound to its node as local processes (there is no container runtime here).
//!
//! `Cluster::start` makes the certificates, starts the three servers on free ports, waits for
//! each within a bound (an error carries the last lines of the log of the one that failed),
//! registers the node and starts the kubelet. Dropping the cluster stops the pods' processes
//! and the servers. `kubectl` and `helm` run against it with its admin kubeconfig.

mod certs;
pub mod error;
pub mod kubelet;
pub mod process;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use error::{ClusterError, Result};
pub use kubelet::{Kubelet, Runtime};
use process::{Process, free_port};

/// The Kubernetes release the install script builds (the oldest API version the crates target).
pub const KUBERNETES_VERSION: &str = "v1.33.5";

/// Name of the one node the process kubelet registers.
pub const NODE_NAME: &str = "tributary-e2e-node";

/// Where scripts/install-deps.sh puts etcd, kube-apiserver, kube-controller-manager, kubectl
/// and helm: $TRIBUTARY_K8S_BIN, else $HOME/.cache/tributary/k8s-<version>/bin.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRIBUTARY_K8S_BIN") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home)
        .join(".cache/tributary")
        .join(format!("k8s-{KUBERNETES_VERSION}"))
        .join("bin")
}

/// A tool from [`tools_dir`], or an error saying how to install it.
pub fn tool(name: &str) -> Result<PathBuf> {
    let dir = tools_dir();
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ClusterError::MissingBinary {
            binary: name.to_string(),
            dir,
        })
    }
}

/// Polls `check` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    let mut last_error = String::new();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = format!("; last error: {e}"),
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::Timeout {
                what: what.to_string(),
                seconds: limit.as_secs(),
                detail: last_error,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub struct Cluster {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    server: String,
    ca_cert: PathBuf,
    client: kube::Client,
    kubelet: Option<Kubelet>,
    // Stopped in reverse order of start by `Drop`.
    processes: Vec<Process>,
}

const APISERVER_READY: Duration = Duration::from_secs(180);
const CONTROLLER_MANAGER_READY: Duration = Duration::from_secs(120);

impl Cluster {
    /// Starts etcd, kube-apiserver, kube-controller-manager and the process kubelet, which
    /// runs pods whose image is one of `runtime`'s.
    pub async fn start(runtime: Runtime) -> Result<Self> {
        let etcd_bin = tool("etcd")?;
        let apiserver_bin = tool("kube-apiserver")?;
        let kcm_bin = tool("kube-controller-manager")?;
        tool("kubectl")?;

        let dir = tempfile::Builder::new()
            .prefix("tributary-cluster-")
            .tempdir()
            .map_err(ClusterError::io("create the cluster directory"))?;
        let root = dir.path().to_path_buf();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).map_err(ClusterError::io("create the logs directory"))?;
        let certs = certs::Certs::create(&root.join("pki"))?;
        let mut processes = Vec::new();

        // etcd: one member, plain HTTP on loopback.
        let client_port = free_port()?;
        let peer_port = free_port()?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(&etcd_bin);
        etcd.arg("--name=e2e")
            .arg(format!("--data-dir={}", root.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=e2e={peer_url}"))
            .arg("--listen-metrics-urls=")
            // A test cluster's data need not survive a power cut; fsync on a shared disk is
            // what makes etcd slow here.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        processes.push(Process::spawn("etcd", &mut etcd, logs.join("etcd.log"))?);

        // kube-apiserver.
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let mut apiserver = Command::new(&apiserver_bin);
        apiserver
            .arg(format!("--etcd-servers={client_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--tls-cert-file={}", certs.server_cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                certs.server_key.display()
            ))
            .arg(format!("--client-ca-file={}", certs.ca_cert.display()))
            .arg(format!("--cert-dir={}", root.join("apiserver").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                certs.service_account_pub.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                certs.service_account_key.display()
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--allow-privileged=true")
            .arg("--profiling=false");
        processes.push(Process::spawn(
            "kube-apiserver",
            &mut apiserver,
            logs.join("kube-apiserver.log"),
        )?);

        let kubeconfig = root.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &server,
            &certs.ca_cert,
            Credentials::Certificate {
                cert: &certs.admin_cert,
                key: &certs.admin_key,
            },
        )?;
        let client = client_from(&kubeconfig).await?;

        let mut cluster = Self {
            dir,
            kubeconfig: kubeconfig.clone(),
            server,
            ca_cert: certs.ca_cert.clone(),
            client: client.clone(),
            kubelet: None,
            processes,
        };

        cluster.wait_apiserver_ready().await?;

        // kube-controller-manager with the controllers the product relies on.
        let mut kcm = Command::new(&kcm_bin);
        kcm.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authentication-kubeconfig={}", kubeconfig.display()))
            .arg(format!("--authorization-kubeconfig={}", kubeconfig.display()))
            .arg("--controllers=deployment-controller,replicaset-controller,job-controller,cronjob-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,root-ca-certificate-publisher-controller")
            .arg(format!(
                "--service-account-private-key-file={}",
                certs.service_account_key.display()
            ))
            .arg(format!("--root-ca-file={}", certs.ca_cert.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()?))
            .arg(format!("--cert-dir={}", root.join("kcm").display()))
            .arg("--leader-elect=false")
            .arg("--use-service-account-credentials=false");
        cluster.processes.push(Process::spawn(
            "kube-controller-manager",
            &mut kcm,
            logs.join("kube-controller-manager.log"),
        )?);
        cluster.wait_controller_manager_ready().await?;

        let kubelet = Kubelet::start(
            client,
            NODE_NAME,
            root.join("node"),
            cluster.server.clone(),
            cluster.ca_cert.clone(),
            Arc::new(runtime),
        )
        .await?;
        cluster.kubelet = Some(kubelet);
        Ok(cluster)
    }

    async fn wait_apiserver_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + APISERVER_READY;
        loop {
            for process in &mut self.processes {
                process.check_running("the API server was starting")?;
            }
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| ClusterError::Invalid(format!("build /readyz request: {e}")))?;
            let last = match self.client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => body,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.timeout("kube-apiserver /readyz", APISERVER_READY, &last));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Ready when its ServiceAccount controller has made the `default` ServiceAccount of
    /// namespace `default`: then the controllers are running.
    async fn wait_controller_manager_ready(&mut self) -> Result<()> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), "default");
        let deadline = Instant::now() + CONTROLLER_MANAGER_READY;
        loop {
            for process in &mut self.processes {
                process.check_running("the controller manager was starting")?;
            }
            if accounts
                .get_opt("default")
                .await
                .map_err(ClusterError::kube("get ServiceAccount default/default"))?
                .is_some()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.timeout(
                    "kube-controller-manager creating ServiceAccount default/default",
                    CONTROLLER_MANAGER_READY,
                    "",
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn timeout(&self, what: &str, limit: Duration, last: &str) -> ClusterError {
        let mut detail = if last.is_empty() {
            String::new()
        } else {
            format!("; last answer: {last}")
        };
        detail.push_str(&self.server_logs());
        ClusterError::Timeout {
            what: what.to_string(),
            seconds: limit.as_secs(),
            detail,
        }
    }

    /// The last lines of every server's log, for a failure message.
    pub fn server_logs(&self) -> String {
        let mut out = String::new();
        for process in &self.processes {
            out.push_str(&format!(
                "\n--- {} ({}):\n{}",
                process.name(),
                process.log().display(),
                process.tail()
            ));
        }
        out
    }

    /// Everything worth reading after a failed scenario: the servers' logs and each pod's.
    pub fn diagnostics(&self) -> String {
        let mut out = self.server_logs();
        if let Some(kubelet) = &self.kubelet {
            out.push_str(&kubelet.logs());
        }
        out
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A local directory standing for a PersistentVolumeClaim's volume, as the kubelet mounts it.
    pub fn claim_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        kubelet::claim_dir(&self.dir.path().join("node"), namespace, claim)
    }

    pub fn kubelet(&self) -> Option<&Kubelet> {
        self.kubelet.as_ref()
    }

    /// A kubeconfig holding a ServiceAccount token (TokenRequest), to act as that account.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
        path: &Path,
    ) -> Result<()> {
        let token = kubelet::request_token(&self.client, namespace, account, None).await?;
        write_kubeconfig(
            path,
            &self.server,
            &self.ca_cert,
            Credentials::Token(&token),
        )
    }

    /// Runs kubectl with the admin kubeconfig; the output whatever the exit status.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_tool("kubectl", args, None).await
    }

    /// Runs helm with the admin kubeconfig; the output whatever the exit status.
    pub async fn helm<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_tool("helm", args, None).await
    }

    /// Runs kubectl with `input` on its standard input.
    pub async fn kubectl_stdin<I, S>(&self, args: I, input: &str) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_tool("kubectl", args, Some(input)).await
    }

    async fn run_tool<I, S>(&self, name: &str, args: I, input: Option<&str>) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use tokio::io::AsyncWriteExt;
        let bin = tool(name)?;
        let helm_home = self.dir.path().join("helm");
        let mut command = tokio::process::Command::new(&bin);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // helm keeps its caches and config per user; these keep it inside the cluster's
            // directory and off the network.
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .stdin(if input.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(ClusterError::io(format!("start {}", bin.display())))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(ClusterError::io(format!("write to {name}'s input")))?;
        }
        child
            .wait_with_output()
            .await
            .map_err(ClusterError::io(format!("wait for {name}")))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(kubelet) = self.kubelet.take() {
            kubelet.stop();
        }
        while let Some(mut process) = self.processes.pop() {
            process.stop(Duration::from_secs(5));
        }
        if std::env::var_os("TRIBUTARY_KEEP_CLUSTER_DIR").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("cluster directory kept: {}", self.dir.path().display());
        }
    }
}

pub enum Credentials<'a> {
    Certificate { cert: &'a Path, key: &'a Path },
    Token(&'a str),
}

/// Writes a kubeconfig for `server`.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    credentials: Credentials<'_>,
) -> Result<()> {
    let user = match credentials {
        Credentials::Certificate { cert, key } => serde_json::json!({
            "client-certificate": cert,
            "client-key": key,
        }),
        Credentials::Token(token) => serde_json::json!({ "token": token }),
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": "e2e", "user": user}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    });
    // JSON is YAML: kubectl, helm and kube read this file as it is.
    let text = serde_json::to_string_pretty(&config).map_err(|e| ClusterError::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(ClusterError::io(format!("write {}", path.display())))?;
    // Holds a credential: owner only.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(ClusterError::io(format!("chmod {}", path.display())))
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Result<kube::Client> {
    // With both ring (kube) and aws-lc-rs (deltalake) linked, rustls cannot pick a provider
    // itself; the first install wins, later ones are no-ops.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| ClusterError::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| ClusterError::Kubeconfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    kube::Client::try_from(config).map_err(ClusterError::kube("create a client"))
}

/// The text of a command's output, for messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
