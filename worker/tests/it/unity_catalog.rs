//! A Unity Catalog server as a child process on 127.0.0.1, and a recording proxy in front of
//! it. The server is olai-uc-server (`uc-server` from crates.io: an unofficial Rust server of the
//! Unity Catalog REST API; the Java reference server is not served by the Maven registry these
//! machines reach), which `scripts/install-deps.sh` builds into
//! `$HOME/.cache/tributary/uc-server-<version>/bin`; `TRIBUTARY_UC_SERVER` names another binary.
//!
//! The server is killed when the value is dropped (and, through `PR_SET_PDEATHSIG`, when the
//! test process dies), and its log is printed when the test panics.
//!
//! The server keeps its catalog in an in-process SQLite database (`:memory:`, its default) and
//! allows `file://` storage under the test's directory only. It signs no one in (it trusts every
//! caller), so the proxy
//! plays Databricks' part there: it refuses a wrong bearer token with Databricks' 401 body,
//! serves a workspace's OAuth token endpoint (`/oidc/v1/token`, client credentials), records
//! every request, and can shorten the `expiration_time` of vended credentials so a test sees a
//! worker renew them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tributary_testkit::server::start_listening;

/// How long the server may take to listen.
const STARTUP: Duration = Duration::from_secs(60);
const API: &str = "/api/2.1/unity-catalog";

/// A Unity Catalog server that lives as long as this value.
pub struct UnityCatalogServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// Where `file://` tables may live.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Drop for UnityCatalogServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- Unity Catalog server log ({}):\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// The version `scripts/install-deps.sh` installs (UC_SERVER_VERSION there).
const VERSION: &str = "0.0.11";

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIBUTARY_UC_SERVER") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    PathBuf::from(home).join(format!(
        ".cache/tributary/uc-server-{VERSION}/bin/uc-server"
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

impl UnityCatalogServer {
    /// Starts a server with an empty catalog on a free port and waits until it answers.
    pub fn start() -> UnityCatalogServer {
        let bin = binary();
        assert!(
            bin.exists(),
            "the Unity Catalog server is not installed at {} (run scripts/install-deps.sh)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("lake");
        std::fs::create_dir_all(root.join("managed")).expect("lake dir");
        let root = root.canonicalize().expect("canonical lake dir");
        let log = dir.path().join("unity-catalog.log");
        let config = dir.path().join("config.yaml");
        let runtime = runtime();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let (child, port) = start_listening("the Unity Catalog server", &log, STARTUP, |port| {
            std::fs::write(
                &config,
                format!(
                    "host: 127.0.0.1\nport: {port}\nui:\n  serve: false\nlocal_storage:\n  allowed-roots: [\"{root}\"]\nmanaged_storage_root: \"file://{root}/managed\"\n",
                    root = root.display()
                ),
            )
            .expect("config");
            let mut command = Command::new(&bin);
            command
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .arg("--no-ui")
                .env("RUST_LOG", "info");
            command
        });
        let server = UnityCatalogServer {
            child,
            port,
            log,
            root,
            _dir: dir,
            runtime,
            http,
        };
        server.wait_until_healthy(Instant::now() + STARTUP);
        server
    }

    fn wait_until_healthy(&self, deadline: Instant) {
        loop {
            let (status, _) = self.call(reqwest::Method::GET, "/catalogs", None);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Unity Catalog server does not answer GET /catalogs (HTTP {status})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One REST call straight to the server: (status, JSON body or Null).
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{API}{path}", self.url());
        self.runtime.block_on(async {
            let mut request = self.http.request(method, &url);
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = response.status().as_u16();
            let bytes = response.bytes().await.expect("body");
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    fn expect_ok(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method, path, Some(body));
        assert!(
            (200..300).contains(&status),
            "{path}: HTTP {status} {answer}"
        );
        answer
    }

    pub fn create_catalog(&self, name: &str) {
        self.expect_ok(
            reqwest::Method::POST,
            "/catalogs",
            json!({"name": name, "comment": "made by a Tributary test"}),
        );
    }

    pub fn create_schema(&self, catalog: &str, name: &str) {
        self.expect_ok(
            reqwest::Method::POST,
            "/schemas",
            json!({"name": name, "catalog_name": catalog}),
        );
    }

    /// Registers `url` (a `file://` folder) as an external location, as an administrator
    /// does before external tables may live there; its storage credential is a placeholder
    /// (local storage is governed by none).
    pub fn create_external_location(&self, name: &str, url: &str) {
        let credential = format!("{name}_credential");
        self.expect_ok(
            reqwest::Method::POST,
            "/credentials",
            json!({
                "name": credential,
                "purpose": "STORAGE",
                "azure_storage_key": {"account_name": "placeholder", "account_key": "cGxhY2Vob2xkZXI="},
            }),
        );
        self.expect_ok(
            reqwest::Method::POST,
            "/external-locations",
            json!({"name": name, "url": url, "credential_name": credential}),
        );
    }

    /// Creates a MANAGED (catalog-managed) Delta table the way this server requires: its
    /// `/delta/v1` API reserves a staging location, then registers the table there with the
    /// protocol and properties the catalog requires of a managed table. The table's storage
    /// stays empty: the worker must refuse it before it reads or writes anything.
    pub fn create_managed_table(&self, full_name: &str, columns: &[(&str, &str, &str, bool)]) {
        let parts: Vec<&str> = full_name.split('.').collect();
        let base = format!("/delta/v1/catalogs/{}/schemas/{}", parts[0], parts[1]);
        let staging = self.expect_ok(
            reqwest::Method::POST,
            &format!("{base}/staging-tables"),
            json!({"name": parts[2]}),
        );
        let location = staging["location"]
            .as_str()
            .unwrap_or_else(|| panic!("no location in {staging}"))
            .to_string();
        let table_id = staging["table-id"]
            .as_str()
            .unwrap_or_else(|| panic!("no table-id in {staging}"))
            .to_string();
        let fields: Vec<Value> = columns
            .iter()
            .map(|(name, _, json_type, nullable)| {
                json!({"name": name, "type": json_type, "nullable": nullable, "metadata": {}})
            })
            .collect();
        let features = ["catalogManaged", "v2Checkpoint", "vacuumProtocolCheck"];
        let mut writer_features = features.to_vec();
        writer_features.push("inCommitTimestamp");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        self.expect_ok(
            reqwest::Method::POST,
            &format!("{base}/tables"),
            json!({
                "name": parts[2],
                "location": location,
                "table-type": "MANAGED",
                "data-source-format": "DELTA",
                "columns": {"type": "struct", "fields": fields},
                "protocol": {
                    "min-reader-version": 3,
                    "min-writer-version": 7,
                    "reader-features": features,
                    "writer-features": writer_features,
                },
                "properties": {
                    "delta.checkpointPolicy": "v2",
                    "delta.enableInCommitTimestamps": "true",
                    "delta.checkpoint.writeStatsAsStruct": "true",
                    "delta.checkpoint.writeStatsAsJson": "true",
                    "io.unitycatalog.tableId": table_id,
                },
                "last-commit-timestamp-ms": now,
            }),
        );
    }

    /// Registers a table with these columns (`(name, type_text, type_json type, nullable)`).
    pub fn create_table(
        &self,
        full_name: &str,
        table_type: &str,
        location: Option<&str>,
        columns: &[(&str, &str, &str, bool)],
    ) -> Value {
        let parts: Vec<&str> = full_name.split('.').collect();
        let columns: Vec<Value> = columns
            .iter()
            .enumerate()
            .map(|(position, (name, text, json_type, nullable))| {
                json!({
                    "name": name,
                    "type_text": text,
                    "type_json": json!({"name": name, "type": json_type, "nullable": nullable, "metadata": {}}).to_string(),
                    "type_name": text.to_ascii_uppercase(),
                    "position": position,
                    "nullable": nullable,
                })
            })
            .collect();
        let mut body = json!({
            "name": parts[2],
            "catalog_name": parts[0],
            "schema_name": parts[1],
            "table_type": table_type,
            "data_source_format": "DELTA",
            "columns": columns,
        });
        if let Some(location) = location {
            body["storage_location"] = json!(location);
        }
        self.expect_ok(reqwest::Method::POST, "/tables", body)
    }

    /// The table as the catalog lists it, None when it does not know it.
    pub fn table(&self, full_name: &str) -> Option<Value> {
        match self.call(reqwest::Method::GET, &format!("/tables/{full_name}"), None) {
            (200, table) => Some(table),
            (404, _) => None,
            (status, body) => panic!("GET table {full_name}: HTTP {status} {body}"),
        }
    }

    /// The names of the tables of a schema.
    pub fn table_names(&self, catalog: &str, schema: &str) -> Vec<String> {
        let (status, body) = self.call(
            reqwest::Method::GET,
            &format!("/tables?catalog_name={catalog}&schema_name={schema}"),
            None,
        );
        assert_eq!(status, 200, "list tables: {body}");
        let mut names: Vec<String> = body["tables"]
            .as_array()
            .map(|tables| {
                tables
                    .iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// What the proxy saw.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub at: SystemTime,
    /// The expiration_time (ms) the proxy answered for a credentials request.
    pub expiration_ms: Option<i64>,
}

/// How the proxy signs callers in.
#[derive(Clone)]
pub struct ProxyAuth {
    /// The bearer token the catalog accepts.
    pub token: String,
    /// The OAuth client (id, secret) whose client-credentials grant yields `token`.
    pub oauth_client: Option<(String, String)>,
}

/// A recording proxy in front of the server (see the module's comment); stops on drop.
pub struct CatalogProxy {
    pub port: u16,
    pub recorded: Arc<Mutex<Vec<Recorded>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for CatalogProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl CatalogProxy {
    /// Starts a proxy to `upstream` on a free port. `credential_lifetime` replaces the
    /// `expiration_time` of vended credentials with now + that long.
    pub fn start(
        upstream: &str,
        auth: ProxyAuth,
        credential_lifetime: Option<Duration>,
    ) -> CatalogProxy {
        let runtime = runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let state = Arc::new(ProxyState {
            upstream: upstream.to_string(),
            auth,
            credential_lifetime,
            recorded: recorded.clone(),
            http: reqwest::Client::new(),
        });
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.handle(request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CatalogProxy {
            port,
            recorded,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().expect("recorded").clone()
    }

    /// The credential requests answered with 200.
    pub fn credential_requests(&self) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|r| r.path.ends_with("/temporary-table-credentials") && r.status == 200)
            .collect()
    }

    /// Requests that changed the catalog (POST, PATCH, DELETE) and were let through.
    pub fn writes(&self) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|r| {
                r.method != "GET"
                    && r.status < 300
                    && !r.path.ends_with("/temporary-table-credentials")
                    && !r.path.ends_with("/oidc/v1/token")
            })
            .collect()
    }
}

struct ProxyState {
    upstream: String,
    auth: ProxyAuth,
    credential_lifetime: Option<Duration>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    http: reqwest::Client,
}

fn respond(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

impl ProxyState {
    fn record(&self, method: &str, path: &str, status: u16, expiration_ms: Option<i64>) {
        self.recorded.lock().expect("recorded").push(Recorded {
            method: method.to_string(),
            path: path.to_string(),
            status,
            at: SystemTime::now(),
            expiration_ms,
        });
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().as_str().to_string();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let path = request.uri().path().to_string();
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let authorization = header("authorization");
        let content_type = header("content-type");
        let body = match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return respond(400, json!({"message": e.to_string()})),
        };

        if path == "/oidc/v1/token" {
            let (status, answer) = self.token_endpoint(authorization.as_deref(), &body);
            self.record(&method, &path, status, None);
            return respond(status, answer);
        }
        if authorization.as_deref() != Some(&format!("Bearer {}", self.auth.token)) {
            self.record(&method, &path, 401, None);
            return respond(
                401,
                json!({"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}),
            );
        }
        let mut forward = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET),
            format!("{}{path_and_query}", self.upstream),
        );
        if let Some(content_type) = content_type {
            forward = forward.header("content-type", content_type);
        }
        let answer = match forward.body(body.to_vec()).send().await {
            Ok(answer) => answer,
            Err(e) => {
                self.record(&method, &path, 502, None);
                return respond(502, json!({"message": e.to_string()}));
            }
        };
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.unwrap_or_default();
        let mut expiration_ms = None;
        let bytes = match self.credential_lifetime {
            Some(lifetime) if status == 200 && path.ends_with("/temporary-table-credentials") => {
                let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(json!({}));
                let expires = SystemTime::now() + lifetime;
                let ms = expires
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or_default();
                value["expiration_time"] = json!(ms);
                expiration_ms = Some(ms);
                Bytes::from(value.to_string())
            }
            _ => bytes,
        };
        self.record(&method, &path, status, expiration_ms);
        let mut response = Response::new(Full::new(bytes));
        *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        response
    }

    /// A workspace's OAuth endpoint: client credentials with HTTP Basic client authentication.
    fn token_endpoint(&self, authorization: Option<&str>, body: &[u8]) -> (u16, Value) {
        let form = String::from_utf8_lossy(body);
        if !form
            .split('&')
            .any(|pair| pair == "grant_type=client_credentials")
        {
            return (
                400,
                json!({"error": "unsupported_grant_type", "error_description": "expected client_credentials"}),
            );
        }
        let presented = authorization
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let expected = self
            .auth
            .oauth_client
            .as_ref()
            .map(|(id, secret)| format!("{id}:{secret}"));
        if presented.is_none() || presented != expected {
            return (
                401,
                json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
            );
        }
        (
            200,
            json!({"access_token": self.auth.token, "token_type": "Bearer", "expires_in": 3600, "scope": "all-apis"}),
        )
    }
}

/// The `sink.delta` block of a manifest that names `table` through a catalog at `endpoint`,
/// with the token from Secret `uc/token`, and these extra lines under `unityCatalog:`.
pub fn sink_block(table: &str, endpoint: &str, catalog_extra: &str) -> String {
    format!(
        "      table: {table}\n      unityCatalog:\n        endpoint: {endpoint}\n        token: {{secretKeyRef: {{name: uc, key: token}}}}\n{catalog_extra}"
    )
}

/// Replaces the `uri` sink of a rendered manifest with `block`.
pub fn with_sink(manifest: &str, table_path: &Path, block: &str) -> String {
    let uri_lines = format!(
        "      uri: {}\n      volume: {{claimName: lake}}\n",
        table_path.display()
    );
    assert!(
        manifest.contains(&uri_lines),
        "the manifest has no uri sink: {manifest}"
    );
    manifest.replace(&uri_lines, &format!("{block}\n"))
}
