//! The benchmark's one error type.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("parquet file {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: deltalake::parquet::errors::ParquetError,
    },
    #[error("parquet file {path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    #[error("the Delta table at {table}: {message}")]
    Table { table: String, message: String },
    #[error("the broker: {0}")]
    Broker(String),
    #[error("the worker: {0}")]
    Worker(String),
    /// The comparison's Spark side (--vs spark).
    #[error(transparent)]
    Spark(#[from] crate::spark::SparkError),
    /// A figure failed a consistency check: the run is not trustworthy.
    #[error("check failed: {0}")]
    Check(String),
    #[error("invalid arguments: {0}")]
    Args(String),
}

pub type Result<T> = std::result::Result<T, BenchError>;

impl BenchError {
    pub fn kafka(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| Self::Kafka { context, source }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    pub fn io_path(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        Self::io(format!("{what} {}", path.display()))
    }

    pub fn json(context: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        let context = context.into();
        move |source| Self::Json { context, source }
    }

    pub fn table(table: &Path, message: impl Into<String>) -> Self {
        Self::Table {
            table: table.display().to_string(),
            message: message.into(),
        }
    }
}
