//! The one error type of the worker. Each variant names the action that failed, and its message
//! says what a user can do about it. Secret values never appear in a message.

use std::path::PathBuf;

/// Everything that can stop an ingestion.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(Box<tributary_crds::Error>),

    #[error(
        "{path} holds {count} StreamingIngestions; `run -f` runs exactly one (split the file or pick one)"
    )]
    SeveralIngestions { path: String, count: usize },

    #[error("unsupported configuration: {0}")]
    Unsupported(String),

    #[error(
        "{option}: {partitions} have no record at or after {timestamp} ms (Spark's startingOffsetsByTimestampStrategy: error). Set startingOffsetsByTimestampStrategy: latest to start such partitions at their latest offset, or choose an earlier time"
    )]
    NoRecordAfterTimestamp {
        option: &'static str,
        partitions: String,
        timestamp: String,
    },

    #[error(
        "the Delta table {table} already holds the offsets query {other} wrote for partitions this new query would read ({offsets}); starting a new query at the checkpoint {checkpoint} (new, or the old one lost) would read them again and write every record twice. Restore the checkpoint of query {other}; or, to continue from the offsets the table records, set spec.checkpoint.queryId: {other} (a new checkpoint takes that id); or write to a new table to start over"
    )]
    TableWrittenByAnotherQuery {
        table: String,
        other: String,
        offsets: String,
        checkpoint: String,
    },

    #[error("{source} (is the port free?)")]
    ServeMetrics { source: tributary_http::Error },

    #[error(
        "cannot reach the Kubernetes API to report status: {source} (the worker reports status only in a pod the operator created; unset {} to run without)",
        tributary_crds::pod::ENV_REPORT_STATUS
    )]
    KubeClient { source: Box<kube::Error> },

    #[error(
        "cannot read Secret {name}/{key} for {field}: no file {file} and no environment variable {env_var} (mount the Secret or set the variable)"
    )]
    MissingSecret {
        field: String,
        name: String,
        key: String,
        file: PathBuf,
        env_var: String,
    },

    #[error("cannot create the Kafka consumer for {bootstrap}: {source}")]
    CreateConsumer {
        bootstrap: String,
        source: Box<rdkafka::error::KafkaError>,
    },

    #[error(
        "cannot {action} on Kafka ({bootstrap}): {source} (is the broker reachable and the topic there?)"
    )]
    Kafka {
        action: String,
        bootstrap: String,
        source: Box<rdkafka::error::KafkaError>,
    },

    // The three below come from source/security.rs and source/connection.rs; security.rs says
    // why the first two stop the worker.
    #[error(
        "cannot authenticate to Kafka at {bootstrap}: the broker refused the credentials ({reason}). {remedy}"
    )]
    KafkaAuthentication {
        bootstrap: String,
        /// librdkafka's report (it names the broker), secret values redacted.
        reason: String,
        remedy: String,
    },

    #[error("cannot verify the TLS certificate of Kafka at {bootstrap}: {reason}. {remedy}")]
    KafkaCertificate {
        bootstrap: String,
        reason: String,
        remedy: String,
    },

    #[error(
        "cannot reach Kafka at {bootstrap} within {seconds} s: {reason} (check the bootstrap servers or the Event Hubs namespace, and that the network lets the worker connect)"
    )]
    KafkaUnreachable {
        bootstrap: String,
        seconds: u64,
        reason: String,
    },

    #[error("topic {topic} does not exist on {bootstrap} (create it, or fix spec.source)")]
    UnknownTopic { topic: String, bootstrap: String },

    #[error(
        "topic {topic} was deleted from {bootstrap} while the query read it: offsets not yet read are lost (the table holds every batch committed before). Recreate the topic and start a new query (new checkpoint), or set failOnDataLoss: false to go on without it"
    )]
    TopicDeleted { topic: String, bootstrap: String },

    #[error(
        "data loss on {topic}-{partition}: offsets {from}..{to} are no longer on the broker (deleted by retention?). Set failOnDataLoss: false to skip them with a warning"
    )]
    DataLoss {
        topic: String,
        partition: i32,
        from: i64,
        to: i64,
    },

    #[error(
        "the table says {topic}-{partition} continues at offset {table_offset}, beyond the broker's latest offset {latest} (was the topic recreated? use a new checkpoint and table)"
    )]
    OffsetBeyondLatest {
        topic: String,
        partition: i32,
        table_offset: i64,
        latest: i64,
    },

    #[error("spec.reset {id} cannot be applied: {reason}")]
    Reset { id: String, reason: String },

    #[error(
        "record {topic}-{partition} at offset {offset} cannot be kept as format.raw says: {reason}"
    )]
    RawRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },

    #[error(
        "record {topic}-{partition} at offset {offset} does not parse against the schema: {reason} (onError: fail stops the query; use rescue or deadLetter to keep going)"
    )]
    BadRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },

    #[error(
        "the Delta table at {uri} requires table features Tributary's Delta writer does not implement: {features}. {remedy}"
    )]
    UnwritableTable {
        uri: String,
        features: String,
        remedy: String,
    },

    #[error("cannot take over from the Spark checkpoint at {checkpoint}: {reason}")]
    SparkTakeover { checkpoint: String, reason: String },

    #[error("cannot map spec.format.json.schema to Arrow: {0}")]
    Schema(String),

    #[error(
        "the Delta table at {uri} does not fit this ingestion: {reason} (write to a new table, or change the schema to match)"
    )]
    TableMismatch { uri: String, reason: String },

    #[error(
        "cannot compact the small files of the Delta table at {uri}: {reason} (the table's data is intact; its small files stay until a compaction succeeds: check that the sink's storage credentials can read and write the table)"
    )]
    Compact { uri: String, reason: String },

    #[error("cannot {action} the Delta table at {uri}: {source}")]
    Delta {
        action: String,
        uri: String,
        source: Box<deltalake::DeltaTableError>,
    },

    #[error("cannot {action} {path}: {source}")]
    Checkpoint {
        action: String,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot {action} at checkpoint location {location}: {reason} ({hint})")]
    CheckpointStore {
        action: String,
        location: String,
        /// The storage layer's message, with every secret value redacted.
        reason: String,
        hint: &'static str,
    },

    #[error(
        "checkpoint file {path} is corrupt: {reason} (restore it, or use a new checkpoint location)"
    )]
    CorruptCheckpoint { path: String, reason: String },

    #[error(
        "checkpoint location {location} holds query {held}, not {asked} (spec.checkpoint.queryId): queryId names the query a new checkpoint continues, and this one is not new. Remove queryId to go on with query {held}, or use a new checkpoint location to continue query {asked}"
    )]
    CheckpointOfAnotherQuery {
        location: String,
        held: String,
        asked: String,
    },

    #[error(
        "checkpoint location {location} belongs to ingestion {owner}, not {me}: each query needs its own checkpoint location"
    )]
    CheckpointClaimed {
        location: String,
        owner: String,
        me: String,
    },

    #[error("Unity Catalog at {endpoint}: cannot {action}: {reason}{}", remedy_suffix(.remedy))]
    Catalog {
        endpoint: String,
        action: String,
        problem: CatalogProblem,
        /// What the catalog said, secret values redacted.
        reason: String,
        remedy: String,
    },

    #[error("cannot decode the micro-batch: {0}")]
    Decode(String),

    #[error("spec.transform.sql: {0}")]
    Transform(String),

    #[error("the worker's runtime failed: {0}")]
    Runtime(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn remedy_suffix(remedy: &str) -> String {
    if remedy.is_empty() {
        String::new()
    } else {
        format!(" ({remedy})")
    }
}

impl From<tributary_crds::Error> for Error {
    fn from(error: tributary_crds::Error) -> Error {
        Error::Manifest(Box::new(error))
    }
}

impl Error {
    /// The kind of this error as a status condition reason, where the operator has one for
    /// it: a catalog's refusal, which a person must act on (and which restarting never fixes).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Error::Catalog { problem, .. } => Some(problem.reason()),
            _ => None,
        }
    }

    /// The brokers refuse this client (credentials or certificate): see source/security.rs.
    pub fn is_refused_connection(&self) -> bool {
        matches!(
            self,
            Error::KafkaAuthentication { .. } | Error::KafkaCertificate { .. }
        )
    }

    pub fn kafka(
        action: impl Into<String>,
        bootstrap: &str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
        let action = action.into();
        let bootstrap = bootstrap.to_string();
        move |source| Error::Kafka {
            action,
            bootstrap,
            source: Box::new(source),
        }
    }

    pub fn delta(
        action: impl Into<String>,
        uri: &str,
    ) -> impl FnOnce(deltalake::DeltaTableError) -> Error {
        let action = action.into();
        let uri = uri.to_string();
        move |source| Error::Delta {
            action,
            uri,
            source: Box::new(source),
        }
    }

    pub fn checkpoint(
        action: impl Into<String>,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let action = action.into();
        let path = path.to_path_buf();
        move |source| Error::Checkpoint {
            action,
            path,
            source,
        }
    }
}

/// What went wrong with the catalog: decides the remedy, and lets callers tell a refused token
/// from an absent table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogProblem {
    /// The catalog cannot be reached or did not answer in time.
    Unreachable,
    /// The token or the OAuth client was refused (401), or the principal lacks a privilege (403).
    Unauthorized,
    UnknownCatalog,
    UnknownSchema,
    TableNotFound,
    /// The table exists but cannot be written by this worker (not Delta, a view, managed).
    Unwritable,
    /// Any other refusal or an answer that does not parse.
    Failed,
}

impl CatalogProblem {
    /// The condition reason the operator shows for it.
    pub fn reason(self) -> &'static str {
        use tributary_crds::conditions::reasons;
        match self {
            CatalogProblem::Unreachable => reasons::CATALOG_UNREACHABLE,
            CatalogProblem::Unauthorized => reasons::CATALOG_UNAUTHORIZED,
            CatalogProblem::UnknownCatalog => reasons::CATALOG_NOT_FOUND,
            CatalogProblem::UnknownSchema => reasons::SCHEMA_NOT_FOUND,
            CatalogProblem::TableNotFound => reasons::TABLE_NOT_FOUND,
            CatalogProblem::Unwritable => reasons::TABLE_NOT_WRITABLE,
            CatalogProblem::Failed => reasons::CATALOG_ERROR,
        }
    }
}

impl std::fmt::Display for CatalogProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}
