//! The one error type of the operator. Each variant names the action that failed, so a log line
//! or the `failures` metric says what went wrong without a backtrace.

/// Everything that can fail in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read manifests: {0}")]
    LoadManifest(#[from] tributary_crds::Error),
    #[error("cannot render {what} as YAML: {source}")]
    RenderYaml {
        what: String,
        source: serde_saphyr::SerializeError,
    },
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        what: String,
        source: serde_json::Error,
    },
    #[error("StreamingIngestion has no {0}")]
    MissingMetadata(&'static str),
    #[error("cannot read Secret {name}: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error(
        "the cache of {kind} objects did not fill within {waited:?}: can the operator list and watch them (its ClusterRole)?"
    )]
    CacheNotReady {
        kind: &'static str,
        waited: std::time::Duration,
    },
    #[error("cannot delete {kind} {name}: {source}")]
    Delete {
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("cannot write the status of {name}: {source}")]
    PatchStatus { name: String, source: kube::Error },
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("leader election on Lease {name} failed: {source}")]
    LeaderElection { name: String, source: kube::Error },
    #[error("leadership of Lease {0} was lost")]
    LeadershipLost(String),
    #[error(transparent)]
    Http(#[from] tributary_http::Error),
    #[error("invalid setting {name}: {message}")]
    Setting { name: &'static str, message: String },
}

impl Error {
    /// A short, stable label for the `failures` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::LoadManifest(_) => "load_manifest",
            Error::RenderYaml { .. } => "render_yaml",
            Error::Serialize { .. } => "serialize",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::ReadSecret { .. } => "read_secret",
            Error::Apply { .. } => "apply",
            Error::CacheNotReady { .. } => "cache_not_ready",
            Error::Delete { .. } => "delete",
            Error::PatchStatus { .. } => "patch_status",
            Error::Client(_) => "client",
            Error::LeaderElection { .. } => "leader_election",
            Error::LeadershipLost(_) => "leadership_lost",
            Error::Http(_) => "http",
            Error::Setting { .. } => "setting",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
