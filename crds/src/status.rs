//! `StreamingIngestion.status`: what `kubectl get streams` and a Spark user's `query.status` /
//! `query.lastProgress` show.
//!
//! Two writers, each with server-side apply under its own field manager: the operator owns
//! phase, conditions, workload, replicas and the aggregates; the workers own `lastProgress` and
//! their own entry in `workers`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The observed state of a StreamingIngestion.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StreamingIngestionStatus {
    /// Pending, Running, Succeeded, Failed or Suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Ready, Progressing and Degraded, each with a CamelCase reason and a message.
    // The schema holds each to metav1.Condition's rules: see crate::conditions::schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::schema")]
    pub conditions: Vec<Condition>,

    /// The spec generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The query's identity, kept in its checkpoint (Spark's query.id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_id: Option<String>,

    /// The trigger in words, for `kubectl get`: default, processingTime=10s, availableNow, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,

    /// The workload running the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,

    /// Workers that exist (the scale subresource's status replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Workers that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Label selector of the worker pods, as a string (for the scale subresource and autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,

    /// Offsets behind the latest, summed over all partitions and workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,

    /// Rows written per second, summed over workers, to 0.1 rows/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_rows_per_second: Option<f64>,

    /// What autoscaling decided last (with spec.autoscaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,

    /// The last availableNow or once run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunStatus>,

    /// The offset reset of spec.reset: requested, or applied and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetStatus>,

    /// The last micro-batch's progress (Spark's query.lastProgress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress: Option<StreamingQueryProgress>,

    /// One entry per worker, written by that worker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub workers: Vec<WorkerStatus>,
}

/// The lifecycle phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Suspended,
}

/// A workload owned by the ingestion.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// Deployment, Job or CronJob.
    pub kind: String,
    /// The workload's name.
    pub name: String,
}

/// Autoscaling's last decision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The workers autoscaling runs now.
    pub desired_replicas: i32,
    /// Why, in words: the lag and partitions it was decided from, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the number of workers last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Since when the lag has been low enough for fewer workers (RFC 3339); workers are
    /// removed once this is scaleDownDelaySeconds old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_lag_since: Option<String>,
}

/// The outcome of a run to completion.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// The Job that ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// RFC 3339 start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// RFC 3339 completion time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why a run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One worker's own view.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// The worker's pod name.
    pub name: String,
    /// Partitions assigned to it, as topic-partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub partitions: Vec<String>,
    /// Offsets behind the latest over its partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<i64>,
    /// Rows written per second in its last batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_rows_per_second: Option<f64>,
    /// Its last committed batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<i64>,
    /// When it last reported (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Why it stopped, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of that error as a CamelCase reason, where the worker knows it (e.g.
    /// CatalogUnauthorized, TableNotFound): the operator turns it into the Degraded condition's
    /// reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The reset of spec.reset, once the table records it as applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<AppliedReset>,
    /// This worker's last VACUUM of the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_vacuum: Option<MaintenanceRun>,
    /// This worker's last compaction of small files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction: Option<MaintenanceRun>,
}

/// A reset the table records as applied, as a worker read it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppliedReset {
    /// The reset's id (spec.reset.id).
    pub id: String,
    /// When its commit was made (RFC 3339).
    pub applied_at: String,
    /// The table version of that commit, when this worker made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<i64>,
}

/// The reset of spec.reset as the operator follows it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResetStatus {
    /// The reset's id.
    pub id: String,
    /// Requested (the workers apply it when they start with this spec) or Applied.
    pub state: String,
    /// Where it moves the partitions, as the spec says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When the operator first saw it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    /// When the table recorded it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// The table version of the reset's commit, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<i64>,
}

/// The states of [`ResetStatus::state`].
pub mod reset_states {
    pub const REQUESTED: &str = "Requested";
    pub const APPLIED: &str = "Applied";
}

/// One run of table upkeep (VACUUM or compaction).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceRun {
    /// When it finished (RFC 3339).
    pub time: String,
    /// Data files it removed: deleted from storage by a VACUUM, replaced by a compaction.
    pub files_removed: i64,
    /// Files a compaction wrote in their place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_added: Option<i64>,
}

/// Offsets per topic and partition, in Spark's JSON shape: {"topic":{"0":12,"1":7}}.
pub type PartitionOffsets = BTreeMap<String, BTreeMap<String, i64>>;

/// One micro-batch's progress, shaped after Spark's StreamingQueryProgress.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StreamingQueryProgress {
    /// The query id (stable across restarts, kept in the checkpoint).
    pub id: String,
    /// This run's id (new at every start).
    pub run_id: String,
    /// The ingestion's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the batch was committed (RFC 3339).
    pub timestamp: String,
    /// The micro-batch number.
    pub batch_id: i64,
    /// Records read in this batch.
    pub num_input_rows: i64,
    /// Records per second arriving since the previous batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_rows_per_second: Option<f64>,
    /// Records per second this batch was processed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_rows_per_second: Option<f64>,
    /// Where the time went, in milliseconds (latestOffset, fetch, decode, write, commit,
    /// triggerExecution).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub duration_ms: BTreeMap<String, i64>,
    /// One entry per source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub sources: Vec<SourceProgress>,
    /// The sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkProgress>,
}

/// A source's part of a progress record.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourceProgress {
    /// e.g. KafkaV2[Subscribe[sensor-readings]].
    pub description: String,
    /// First offsets of the batch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub start_offset: PartitionOffsets,
    /// Next offsets to read after the batch.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub end_offset: PartitionOffsets,
    /// Latest offsets known when the batch was planned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub latest_offset: PartitionOffsets,
    /// Records read from this source in the batch.
    pub num_input_rows: i64,
    /// Records per second arriving from this source since the previous batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_rows_per_second: Option<f64>,
    /// Records per second this source's part of the batch was processed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_rows_per_second: Option<f64>,
    /// Offsets behind the latest, summed over partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets_behind_latest: Option<i64>,
}

/// The sink's part of a progress record.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SinkProgress {
    /// e.g. DeltaSink[/lake/bronze/iot/sensor_readings].
    pub description: String,
    /// Rows written.
    pub num_output_rows: i64,
    /// The Delta table version this batch committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<i64>,
    /// Rows whose input did not parse and was kept in _rescued_data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_rescued_rows: Option<i64>,
    /// Records written to the dead-letter table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_dead_letter_rows: Option<i64>,
}
