//! Azurite (Azure's storage emulator, from npm) as a child process on 127.0.0.1, for tables and
//! checkpoints at abfss:// and az:// URLs. `scripts/install-deps.sh` installs it under
//! `$HOME/.cache/tributary/azurite`; `TRIBUTARY_AZURITE_BLOB` names another `azurite-blob`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use deltalake::logstore::object_store::azure::MicrosoftAzureBuilder;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt, path::Path as ObjectPath};
use futures::TryStreamExt;

use crate::server::start_listening;

/// Azurite's one account and its published, well-known key (not a secret).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Storage service version of the requests this helper signs itself.
const API_VERSION: &str = "2021-08-06";
/// How long Azurite may take to listen (node starts in about a second).
const STARTUP: Duration = Duration::from_secs(30);

/// An Azurite blob service that lives as long as this value.
pub struct Azurite {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TRIBUTARY_AZURITE_BLOB") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    PathBuf::from(home).join(".cache/tributary/azurite/node_modules/.bin/azurite-blob")
}

impl Azurite {
    /// Starts Azurite on a free port and waits until it listens.
    pub fn start() -> Azurite {
        let bin = binary();
        assert!(
            bin.exists(),
            "Azurite is not installed at {} (run scripts/install-deps.sh)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("azurite.log");
        let data = dir.path().join("data");
        let (child, port) = start_listening("Azurite", &log, STARTUP, |port| {
            let mut command = Command::new(&bin);
            command
                .args(["--blobHost", "127.0.0.1", "--blobPort"])
                .arg(port.to_string())
                .arg("--location")
                .arg(&data)
                // Without --disableTelemetry Azurite tries to reach the internet.
                .args(["--skipApiVersionCheck", "--loose", "--disableTelemetry"]);
            command
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Azurite {
            child,
            port,
            log,
            _dir: dir,
            runtime,
        }
    }

    /// What object_store's emulator mode needs to find this port (with
    /// `azure_storage_use_emulator: true`): it reads no storage option for that.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "AZURITE_BLOB_STORAGE_URL".to_string(),
            format!("http://127.0.0.1:{}", self.port),
        )]
    }

    /// Creates a blob container (object_store cannot): a SharedKey-signed
    /// `PUT /<account>/<container>?restype=container`.
    pub fn create_container(&self, name: &str) {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        // The verb, eleven empty standard headers (no body, so no Content-Length either), the
        // x-ms- headers, and the resource: path-style, so the account appears twice.
        let string_to_sign = format!(
            "PUT{}x-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container",
            "\n".repeat(12)
        );
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &STANDARD.decode(ACCOUNT_KEY).expect("key is base64"),
        );
        let signature = STANDARD.encode(ring::hmac::sign(&key, string_to_sign.as_bytes()));
        let request = format!(
            "PUT /{ACCOUNT}/{name}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: {API_VERSION}\r\nAuthorization: SharedKey {ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            port = self.port
        );
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Azurite");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status = response.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(status, "201", "create container {name}: {response}");
    }

    /// A client of one container, signed with the account key (not through the emulator
    /// switch, which reads the port from the environment of the whole test process).
    pub fn store(&self, container: &str) -> Arc<dyn ObjectStore> {
        let _guard = self.runtime.enter();
        Arc::new(
            MicrosoftAzureBuilder::new()
                .with_account(ACCOUNT)
                .with_access_key(ACCOUNT_KEY)
                .with_container_name(container)
                .with_endpoint(format!("http://127.0.0.1:{}/{ACCOUNT}", self.port))
                .with_allow_http(true)
                .build()
                .expect("azure store"),
        )
    }

    /// The names of the objects under `prefix`, relative to the container.
    pub fn list(&self, container: &str, prefix: &str) -> Vec<String> {
        let store = self.store(container);
        let prefix = ObjectPath::from(prefix);
        let listed: Vec<_> = self
            .runtime
            .block_on(store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .expect("list");
        let mut names: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
        names.sort();
        names
    }

    /// An object's bytes, None when there is none.
    pub fn get(&self, container: &str, path: &str) -> Option<Vec<u8>> {
        let store = self.store(container);
        self.runtime.block_on(async {
            match store.get(&ObjectPath::from(path)).await {
                Ok(found) => Some(found.bytes().await.expect("read object").to_vec()),
                Err(deltalake::ObjectStoreError::NotFound { .. }) => None,
                Err(e) => panic!("get {container}/{path}: {e}"),
            }
        })
    }

    /// Copies every file under `dir` to `container`, under `prefix` (same relative paths): a
    /// directory as it would be in Blob Storage. Returns how many files it copied.
    pub fn upload(&self, dir: &Path, container: &str, prefix: &str) -> usize {
        let store = self.store(container);
        let mut pending = vec![dir.to_path_buf()];
        let mut copied = 0;
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).expect("list a directory to upload") {
                let path = entry.expect("directory entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(dir).expect("under the directory");
                let name = format!(
                    "{}/{}",
                    prefix.trim_end_matches('/'),
                    relative.to_string_lossy()
                );
                let bytes = std::fs::read(&path).expect("read a file to upload");
                self.runtime
                    .block_on(store.put(&ObjectPath::from(name.as_str()), bytes.into()))
                    .unwrap_or_else(|e| panic!("upload {name}: {e}"));
                copied += 1;
            }
        }
        copied
    }

    /// Copies every object under `prefix` into `dir` (same relative paths), so the test's
    /// independent reader reads a table from the emulator as it reads one from a volume.
    pub fn download(&self, container: &str, prefix: &str, dir: &Path) -> usize {
        let names = self.list(container, prefix);
        for name in &names {
            let relative = name
                .strip_prefix(prefix)
                .unwrap_or(name)
                .trim_start_matches('/');
            let target = dir.join(relative);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            let bytes = self.get(container, name).expect("listed object");
            std::fs::write(&target, bytes).expect("write copy");
        }
        names.len()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
