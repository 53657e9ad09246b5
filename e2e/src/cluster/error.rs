//! The cluster harness's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "{binary} not found in {dir}: run scripts/install-deps.sh (it builds the Kubernetes control plane into that directory), or point TRIBUTARY_K8S_BIN at one"
    )]
    MissingBinary { binary: String, dir: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status}):\n{output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error("{name} exited ({status}) while {doing}; last lines of its log {log}:\n{tail}")]
    Exited {
        name: String,
        status: String,
        doing: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} did not happen within {seconds} s{detail}")]
    Timeout {
        what: String,
        seconds: u64,
        detail: String,
    },
    #[error("Kubernetes API, {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

impl ClusterError {
    /// Maps an I/O error, naming what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// Maps a kube error, naming the request.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube {
            what,
            source: Box::new(source),
        }
    }
}
