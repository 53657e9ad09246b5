//! `StreamingIngestion.spec`: what to read, how to parse it, where to write it, and when.
//!
//! Field names follow Spark's option names where Spark has one. Optional fields are `Option`s
//! whose defaults are applied when the spec is read (the accessor methods below), never written
//! into stored objects: Argo CD then sees no drift.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::limits::parse_duration;
use crate::limits::*;
use crate::status::StreamingIngestionStatus;

/// Options Tributary manages itself, refused in `options` (Spark refuses the same ones).
pub const FORBIDDEN_KAFKA_OPTIONS: &[&str] = &[
    "auto.offset.reset",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "key.deserializer",
    "value.deserializer",
    "interceptor.classes",
    "bootstrap.servers",
    "metadata.broker.list",
];

/// librdkafka (and Java client) options whose values are credentials: they belong in
/// `secretOptions`. Names that contain password, passphrase, secret or jaas count too (see
/// [`crate::secrets::is_secret_option`]).
pub const SECRET_KAFKA_OPTIONS: &[&str] = &[
    "sasl.password",
    "sasl.jaas.config",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.client.credentials.client.secret",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.password",
    "ssl.keystore.key",
    "ssl.truststore.password",
];

// kube's printcolumn(...) arguments repeat keys such as type_ by design; clippy reads them as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
/// A Spark Structured Streaming query, run on Kubernetes: read Kafka or Event Hubs, parse JSON
/// against a schema, append to a Delta table, exactly once.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tributary.dev",
    version = "v1alpha1",
    kind = "StreamingIngestion",
    plural = "streamingingestions",
    singular = "streamingingestion",
    shortname = "si",
    shortname = "stream",
    category = "streams",
    namespaced,
    status = "StreamingIngestionStatus",
    derive = "PartialEq",
    doc = "A streaming ingestion: events from Kafka or Azure Event Hubs parsed against a schema and appended to a Delta Lake table with checkpoints, exactly once (Spark Structured Streaming's readStream/writeStream, without Spark).",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.labelSelector"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded, Failed or Suspended"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "The Ready condition"
    ),
    printcolumn(
        name = "Trigger",
        type_ = "string",
        json_path = ".status.trigger",
        description = "default, processingTime=<interval>, availableNow, availableNow@<schedule> or once"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Workers running"
    ),
    printcolumn(
        name = "Lag",
        type_ = "integer",
        json_path = ".status.lag",
        description = "Offsets behind the latest, summed over all partitions"
    ),
    printcolumn(
        name = "Rows/s",
        type_ = "number",
        json_path = ".status.processedRowsPerSecond",
        description = "Rows written per second over the last batches"
    ),
    printcolumn(
        name = "Last Batch",
        type_ = "date",
        json_path = ".status.lastProgress.timestamp",
        description = "When the last micro-batch was committed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Workload",
        type_ = "string",
        json_path = ".status.workload.name",
        priority = "1",
        description = "The Deployment, Job or CronJob running the workers"
    ),
    printcolumn(
        name = "Batch",
        type_ = "integer",
        json_path = ".status.lastProgress.batchId",
        priority = "1",
        description = "The last committed micro-batch"
    ),
    printcolumn(
        name = "Delta Version",
        type_ = "integer",
        json_path = ".status.lastProgress.sink.deltaVersion",
        priority = "1",
        description = "The table version the last batch wrote"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.autoscaling.desiredReplicas",
        priority = "1",
        description = "The workers autoscaling runs now"
    ),
    printcolumn(
        name = "Query ID",
        type_ = "string",
        json_path = ".status.queryId",
        priority = "1",
        description = "The query's identity, kept in its checkpoint"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.schedule) || (has(self.trigger) && has(self.trigger.availableNow) && self.trigger.availableNow)").message("spec.schedule runs the ingestion as a CronJob and needs spec.trigger: {availableNow: true}"),
    validation = Rule::new("!has(self.replicas) || self.replicas <= 1 || !has(self.trigger) || !((has(self.trigger.availableNow) && self.trigger.availableNow) || (has(self.trigger.once) && self.trigger.once))").message("spec.replicas must be 0 or 1 with trigger availableNow or once: a run to completion is a single worker"),
    validation = Rule::new(ENDING_OFFSETS_RULE).message(ENDING_OFFSETS_MESSAGE),
    validation = Rule::new("!has(self.runs) || (has(self.trigger) && ((has(self.trigger.availableNow) && self.trigger.availableNow) || (has(self.trigger.once) && self.trigger.once)))").message(RUNS_NEED_A_RUN_TO_COMPLETION),
    validation = Rule::new("!has(self.autoscaling) || !has(self.trigger) || !((has(self.trigger.availableNow) && self.trigger.availableNow) || (has(self.trigger.once) && self.trigger.once))").message(AUTOSCALING_NEEDS_CONTINUOUS),
    validation = Rule::new("!has(self.autoscaling) || !has(self.replicas)").message(AUTOSCALING_EXCLUDES_REPLICAS),
    validation = Rule::new("!has(self.maxRestarts) || !has(self.trigger) || !((has(self.trigger.availableNow) && self.trigger.availableNow) || (has(self.trigger.once) && self.trigger.once))").message(MAX_RESTARTS_NEEDS_CONTINUOUS),
)]
#[serde(rename_all = "camelCase")]
pub struct StreamingIngestionSpec {
    /// Where events are read from: exactly one of kafka or eventHubs.
    pub source: Source,

    /// How each event's value is parsed into columns.
    pub format: Format,

    /// Kafka columns kept beside the parsed data, written as kafka_<name> (kafka_topic,
    /// kafka_partition, kafka_offset, ...). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub metadata_columns: Vec<MetadataColumn>,

    /// A SQL query run on each micro-batch before it is written (Spark's select / withColumn /
    /// filter). Absent: the decoded columns are written as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<Transform>,

    /// Where rows are written.
    pub sink: Sink,

    /// Where the query keeps its identity and progress (Spark's checkpointLocation). Each query
    /// needs its own location.
    pub checkpoint: Checkpoint,

    /// When micro-batches run. Absent or {} = the next batch starts as soon as the last completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,

    /// Cron schedule (5 fields, or @hourly/@daily/...) for availableNow runs: the ingestion then
    /// runs as a CronJob. Only with trigger.availableNow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,

    /// Number of workers sharing the partitions through one consumer group. Default 1.
    /// Continuous triggers only; availableNow and once run a single worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub replicas: Option<i32>,

    /// Stops all workers (phase Suspended) without deleting anything. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Pod settings for the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerSpec>,

    /// Retries and history of runs to completion (the Job of availableNow / once, the Jobs of a
    /// schedule). Only with trigger availableNow or once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<RunPolicy>,

    /// Lets the operator choose the number of workers from the lag they report, between
    /// bounds. Continuous triggers only, instead of spec.replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Restarts a worker container may have before the ingestion is Failed: its workers are
    /// stopped (the Deployment kept at 0) with the last error in the Degraded condition, until
    /// the spec changes. Continuous triggers only. Default: no limit (Kubernetes restarts a
    /// crashing worker with back-off for ever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_RESTARTS))]
    pub max_restarts: Option<i32>,

    /// Moves the running query's offsets once: back to read records again (rewind) or forward
    /// past records (skip), to a time or to explicit offsets. Applied exactly once per id: the
    /// workers record the id in the same Delta commit as the new offsets, so re-applying the
    /// same manifest (Argo CD, kubectl apply) changes nothing; a new id is a new reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<OffsetReset>,
}

impl StreamingIngestionSpec {
    /// The trigger as a closed set of cases, with its default applied.
    pub fn trigger_kind(&self) -> Result<TriggerKind, String> {
        match &self.trigger {
            None => Ok(TriggerKind::Default),
            Some(trigger) => trigger.kind(),
        }
    }

    /// Workers to run as the spec says: spec.replicas, or autoscaling's minimum before
    /// autoscaling has decided. Default 1.
    pub fn replicas(&self) -> i32 {
        match (&self.replicas, &self.autoscaling) {
            (Some(replicas), _) => *replicas,
            (None, Some(autoscaling)) => autoscaling.min_replicas(),
            (None, None) => 1,
        }
    }

    /// The spec less how many workers run (replicas, autoscaling, maxRestarts): what a worker
    /// needs to run the query.
    pub fn without_scale(&self) -> StreamingIngestionSpec {
        StreamingIngestionSpec {
            replicas: None,
            autoscaling: None,
            max_restarts: None,
            ..self.clone()
        }
    }

    pub fn suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }

    /// The Kafka columns the table keeps: spec.metadataColumns, with headers when the source
    /// sets includeHeaders.
    pub fn metadata_columns(&self) -> Vec<MetadataColumn> {
        let mut columns = self.metadata_columns.clone();
        if self
            .source
            .read_options()
            .is_some_and(ReadOptions::include_headers)
            && !columns.contains(&MetadataColumn::Headers)
        {
            columns.push(MetadataColumn::Headers);
        }
        columns
    }
}

/// Where events are read from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.kafka) != has(self.eventHubs)").message("spec.source must set exactly one of kafka or eventHubs"))]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// An Apache Kafka (or Kafka-compatible) cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSource>,
    /// An Azure Event Hub, read through its Kafka endpoint (<namespace>.servicebus.windows.net:9093).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_hubs: Option<EventHubsSource>,
}

/// A Kafka source: Spark's `format("kafka")` options.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("(has(self.subscribe) ? 1 : 0) + (has(self.subscribePattern) ? 1 : 0) + (has(self.assign) ? 1 : 0) == 1").message("spec.source.kafka must set exactly one of subscribe, subscribePattern or assign"),
    validation = Rule::new(READ_START_RULE).message(READ_START_MESSAGE),
    validation = Rule::new(READ_STRATEGY_RULE).message(READ_STRATEGY_MESSAGE),
    validation = Rule::new(READ_DELAY_RULE).message(READ_DELAY_MESSAGE),
    validation = Rule::new(READ_MIN_MAX_RULE).message(READ_MIN_MAX_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSource {
    /// Comma-separated host:port list of brokers (Spark's kafka.bootstrap.servers).
    #[schemars(length(min = 1, max = 4096))]
    pub bootstrap_servers: String,

    /// Topics to subscribe to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    pub subscribe: Option<Vec<String>>,

    /// A regular expression; every matching topic is subscribed, including ones created later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub subscribe_pattern: Option<String>,

    /// Exact partitions to read, as topic -> partition numbers (Spark's assign JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign: Option<BTreeMap<String, Vec<i32>>>,

    #[serde(flatten)]
    pub read: ReadOptions,

    /// Credentials and other secret librdkafka options, read from Secrets (e.g. sasl.password).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_OPTIONS))]
    pub secret_options: BTreeMap<String, SecretValueSource>,
}

/// Read options shared by every source (Spark's names). Debug shows credential-like option
/// values as `<redacted>` (validation refuses them, but a refused spec may still be printed).
#[derive(KubeSchema, Serialize, Deserialize, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReadOptions {
    /// Where a new query starts: earliest, latest, or per-partition JSON such as
    /// {"topic":{"0":23,"1":-2}} (-2 = earliest, -1 = latest). Default latest. A restarted
    /// query always resumes from its table; partitions found later start at earliest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self == 'earliest' || self == 'latest' || self.matches('^(?s)\\\\s*\\\\{.*\\\\}\\\\s*$')").message("startingOffsets must be earliest, latest, or per-partition JSON such as {\"topic\":{\"0\":23}}"))]
    pub starting_offsets: Option<String>,

    /// Upper bound on offsets read per micro-batch, counted over all partitions together and
    /// taken in the order records arrive (at most 2^53 - 1). Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_OFFSET))]
    pub max_offsets_per_trigger: Option<i64>,

    /// Whether offsets lost to retention stop the query (true, the default) or are skipped with
    /// a warning (false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_on_data_loss: Option<bool>,

    /// Where a new query starts, by time (Spark's startingOffsetsByTimestamp): per-partition
    /// JSON of epoch milliseconds, e.g. {"topic":{"0":1700000000000,"1":1700000000000}}, naming
    /// every partition the query reads. Each starts at its first record whose timestamp is at
    /// or after the given one (Kafka's offsetsForTimes). Instead of startingOffsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self.matches('^(?s)\\\\s*\\\\{.*\\\\}\\\\s*$')").message("startingOffsetsByTimestamp must be per-partition JSON of epoch milliseconds such as {\"topic\":{\"0\":1700000000000}}"))]
    pub starting_offsets_by_timestamp: Option<String>,

    /// Where a new query starts, by time, for every partition (Spark's startingTimestamp):
    /// epoch milliseconds. Each partition starts at its first record whose timestamp is at or
    /// after it. Instead of startingOffsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_OFFSET))]
    pub starting_timestamp: Option<i64>,

    /// What startingTimestamp / startingOffsetsByTimestamp do with a partition that has no
    /// record at or after the timestamp (Spark's startingOffsetsByTimestampStrategy): error
    /// (the default: the query does not start, naming the partitions) or latest (the partition
    /// starts at its latest offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_offsets_by_timestamp_strategy: Option<TimestampStrategy>,

    /// The end of a run to completion (trigger availableNow or once): latest (the default), or
    /// per-partition JSON such as {"topic":{"0":500,"1":-1}} (-1 = latest) naming every
    /// partition the query reads. Spark takes it for batch reads only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self == 'latest' || self.matches('^(?s)\\\\s*\\\\{.*\\\\}\\\\s*$')").message("endingOffsets must be latest or per-partition JSON such as {\"topic\":{\"0\":500}}"))]
    pub ending_offsets: Option<String>,

    /// A continuous micro-batch waits until at least this many offsets are available over all
    /// partitions, or until maxTriggerDelay has passed since the last batch (Spark's
    /// minOffsetsPerTrigger). Default: no minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_OFFSET))]
    pub min_offsets_per_trigger: Option<i64>,

    /// With minOffsetsPerTrigger: the longest a batch is put off waiting for enough offsets
    /// (Spark's maxTriggerDelay), e.g. 15m or "15 minutes", at most 24h. Default 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(crate::limits::processing_time_format_rule()).message(MAX_TRIGGER_DELAY_FORMAT_MESSAGE))]
    #[x_kube(validation = Rule::new(processing_time_bound_rule()).message(MAX_TRIGGER_DELAY_BOUND_MESSAGE))]
    pub max_trigger_delay: Option<String>,

    /// Prefix of the consumer group id (Spark's groupIdPrefix): the group is
    /// <groupIdPrefix>-<namespace>-<name>, shared by the ingestion's workers. Ignored when
    /// options set group.id. Default prefix: tributary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._-]+$')").message("groupIdPrefix may hold letters, digits, '.', '_' and '-' only"))]
    pub group_id_prefix: Option<String>,

    /// Keep each record's Kafka headers (Spark's includeHeaders), in the column kafka_headers
    /// as Spark's array<struct<key:string,value:binary>>; the same as listing headers in
    /// spec.metadataColumns. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_headers: Option<bool>,

    /// librdkafka client options passed through, e.g. security.protocol: SASL_SSL. Spark's
    /// kafka.* names are accepted too (kafka.security.protocol); the prefix is removed.
    /// Offsets and deserialisers are managed by Tributary; credentials (sasl.password,
    /// sasl.jaas.config, ssl.key.password, ...) belong in secretOptions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_OPTIONS))]
    #[x_kube(validation = Rule::new(forbidden_options_rule()).message(FORBIDDEN_OPTIONS_MESSAGE))]
    #[x_kube(validation = Rule::new(crate::secrets::secret_options_rule()).message(crate::secrets::SECRET_OPTIONS_RULE_MESSAGE))]
    pub options: BTreeMap<String, String>,
}

impl std::fmt::Debug for ReadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOptions")
            .field("starting_offsets", &self.starting_offsets)
            .field("max_offsets_per_trigger", &self.max_offsets_per_trigger)
            .field("fail_on_data_loss", &self.fail_on_data_loss)
            .field(
                "starting_offsets_by_timestamp",
                &self.starting_offsets_by_timestamp,
            )
            .field("starting_timestamp", &self.starting_timestamp)
            .field(
                "starting_offsets_by_timestamp_strategy",
                &self.starting_offsets_by_timestamp_strategy,
            )
            .field("ending_offsets", &self.ending_offsets)
            .field("min_offsets_per_trigger", &self.min_offsets_per_trigger)
            .field("max_trigger_delay", &self.max_trigger_delay)
            .field("group_id_prefix", &self.group_id_prefix)
            .field("include_headers", &self.include_headers)
            .field(
                "options",
                &crate::secrets::RedactedOptions(&self.options, crate::secrets::is_secret_option),
            )
            .finish()
    }
}

impl ReadOptions {
    pub fn fail_on_data_loss(&self) -> bool {
        self.fail_on_data_loss.unwrap_or(true)
    }

    /// The parsed startingOffsets, default latest.
    pub fn starting_offsets(&self) -> Result<StartingOffsets, String> {
        StartingOffsets::parse(self.starting_offsets.as_deref().unwrap_or("latest"))
    }

    /// Where a new query starts: startingTimestamp, startingOffsetsByTimestamp or
    /// startingOffsets (validation refuses more than one).
    pub fn start(&self) -> Result<QueryStart, String> {
        if let Some(timestamp) = self.starting_timestamp {
            return Ok(QueryStart::Timestamp(timestamp));
        }
        if let Some(text) = &self.starting_offsets_by_timestamp {
            return parse_partition_json(text, "startingOffsetsByTimestamp", "a timestamp", 0)
                .map(QueryStart::ByTimestamp);
        }
        self.starting_offsets().map(QueryStart::Offsets)
    }

    /// What a timestamp start does with a partition that has no record at or after it.
    pub fn timestamp_strategy(&self) -> TimestampStrategy {
        self.starting_offsets_by_timestamp_strategy
            .unwrap_or_default()
    }

    /// The parsed endingOffsets: None for latest (or unset).
    pub fn ending_offsets(&self) -> Result<Option<PartitionNumbers>, String> {
        match self.ending_offsets.as_deref().map(str::trim) {
            None | Some("latest") => Ok(None),
            Some(text) => {
                parse_partition_json(text, "endingOffsets", "an offset", OFFSET_LATEST).map(Some)
            }
        }
    }

    /// maxTriggerDelay, default 15 minutes (Spark's).
    pub fn max_trigger_delay(&self) -> Result<Duration, String> {
        match &self.max_trigger_delay {
            None => Ok(DEFAULT_MAX_TRIGGER_DELAY),
            Some(text) => parse_duration(text).map_err(|e| {
                e.replace("processingTime", "maxTriggerDelay").replace(
                    "; for rarer runs use trigger {availableNow: true} with a spec.schedule",
                    "",
                )
            }),
        }
    }

    /// Whether the headers column is kept (includeHeaders).
    pub fn include_headers(&self) -> bool {
        self.include_headers.unwrap_or(false)
    }
}

/// The read options' rules, checked where they are flattened (kafka and eventHubs).
pub const READ_START_RULE: &str = "(has(self.startingOffsets) ? 1 : 0) + (has(self.startingOffsetsByTimestamp) ? 1 : 0) + (has(self.startingTimestamp) ? 1 : 0) <= 1";
pub const READ_START_MESSAGE: &str = "set at most one of startingOffsets, startingOffsetsByTimestamp and startingTimestamp: each says where a new query starts";
pub const READ_STRATEGY_RULE: &str = "!has(self.startingOffsetsByTimestampStrategy) || has(self.startingOffsetsByTimestamp) || has(self.startingTimestamp)";
pub const READ_STRATEGY_MESSAGE: &str = "startingOffsetsByTimestampStrategy applies to startingTimestamp or startingOffsetsByTimestamp, and neither is set";
pub const READ_DELAY_RULE: &str = "!has(self.maxTriggerDelay) || has(self.minOffsetsPerTrigger)";
pub const READ_DELAY_MESSAGE: &str =
    "maxTriggerDelay bounds the wait of minOffsetsPerTrigger, which is not set";
pub const READ_MIN_MAX_RULE: &str = "!has(self.minOffsetsPerTrigger) || !has(self.maxOffsetsPerTrigger) || self.minOffsetsPerTrigger <= self.maxOffsetsPerTrigger";
pub const READ_MIN_MAX_MESSAGE: &str =
    "minOffsetsPerTrigger must not be above maxOffsetsPerTrigger";
/// endingOffsets ends a run to completion.
pub const ENDING_OFFSETS_RULE: &str = "!((has(self.source.kafka) && has(self.source.kafka.endingOffsets)) || (has(self.source.eventHubs) && has(self.source.eventHubs.endingOffsets))) || (has(self.trigger) && ((has(self.trigger.availableNow) && self.trigger.availableNow) || (has(self.trigger.once) && self.trigger.once)))";
pub const ENDING_OFFSETS_MESSAGE: &str = "endingOffsets ends a run to completion and needs trigger availableNow or once; a continuous query has no end";

/// Per-partition numbers of a JSON option: topic -> partition -> offset or time.
pub type PartitionNumbers = BTreeMap<String, BTreeMap<i32, i64>>;

/// Spark's default maxTriggerDelay.
pub const DEFAULT_MAX_TRIGGER_DELAY: Duration = Duration::from_secs(15 * 60);

/// The message of a maxTriggerDelay that is not a duration.
pub const MAX_TRIGGER_DELAY_FORMAT_MESSAGE: &str =
    "maxTriggerDelay must be a duration such as 15m, 30s or \"15 minutes\"";

/// The message of a maxTriggerDelay above a day.
pub const MAX_TRIGGER_DELAY_BOUND_MESSAGE: &str = "maxTriggerDelay must be at most 24h (\"1 day\")";

/// The message of the rule that refuses options Tributary manages.
pub const FORBIDDEN_OPTIONS_MESSAGE: &str = "options must not set auto.offset.reset, enable.auto.commit, enable.auto.offset.store, key/value.deserializer, interceptor.classes or bootstrap.servers (with or without Spark's kafka. prefix): Tributary manages offsets itself (use startingOffsets) and reads bootstrapServers";

/// The CEL rule refusing [`FORBIDDEN_KAFKA_OPTIONS`], with and without Spark's `kafka.` prefix.
pub fn forbidden_options_rule() -> String {
    let names: Vec<String> = FORBIDDEN_KAFKA_OPTIONS
        .iter()
        .flat_map(|name| [format!("'{name}'"), format!("'kafka.{name}'")])
        .collect();
    format!("self.all(k, !(k in [{}]))", names.join(", "))
}

/// A librdkafka option name as librdkafka knows it: Spark's `kafka.` prefix removed.
pub fn librdkafka_option_name(option: &str) -> &str {
    option.strip_prefix("kafka.").unwrap_or(option)
}

/// Where a new query starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryStart {
    Offsets(StartingOffsets),
    /// Every partition at its first record at or after these epoch milliseconds.
    Timestamp(i64),
    /// topic -> partition -> epoch milliseconds.
    ByTimestamp(PartitionNumbers),
}

/// Spark's startingOffsetsByTimestampStrategy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum TimestampStrategy {
    /// A partition with no record at or after the timestamp stops the query.
    #[default]
    Error,
    /// Such a partition starts at its latest offset.
    Latest,
}

/// Per-partition JSON ({"topic":{"0":N}}) of numbers from `min` up to [`MAX_OFFSET`].
fn parse_partition_json(
    text: &str,
    option: &str,
    what: &str,
    min: i64,
) -> Result<BTreeMap<String, BTreeMap<i32, i64>>, String> {
    let raw: BTreeMap<String, BTreeMap<String, i64>> = serde_json::from_str(text).map_err(|e| {
        format!("{option} must be per-partition JSON such as {{\"topic\":{{\"0\":1}}}}: {e}")
    })?;
    let mut parsed = BTreeMap::new();
    for (topic, partitions) in raw {
        let mut numbers = BTreeMap::new();
        for (partition, number) in partitions {
            let id: i32 = partition
                .parse()
                .ok()
                .filter(|p: &i32| *p >= 0)
                .ok_or_else(|| {
                    format!("{option}: partition \"{partition}\" of topic \"{topic}\" is not a partition number")
                })?;
            if number < min || number > MAX_OFFSET {
                return Err(format!(
                    "{option}: {number} for {topic}-{partition} is not {what} from {min} to {MAX_OFFSET}"
                ));
            }
            numbers.insert(id, number);
        }
        parsed.insert(topic, numbers);
    }
    Ok(parsed)
}

/// Where a new query starts reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartingOffsets {
    Earliest,
    Latest,
    /// topic -> partition -> offset; -2 means earliest and -1 latest, as in Spark.
    Specific(BTreeMap<String, BTreeMap<i32, i64>>),
}

/// Spark's sentinel offsets in startingOffsets JSON.
pub const OFFSET_EARLIEST: i64 = -2;
pub const OFFSET_LATEST: i64 = -1;

impl StartingOffsets {
    pub fn parse(text: &str) -> Result<StartingOffsets, String> {
        match text.trim() {
            "earliest" => return Ok(StartingOffsets::Earliest),
            "latest" => return Ok(StartingOffsets::Latest),
            _ => {}
        }
        let raw: BTreeMap<String, BTreeMap<String, i64>> =
            serde_json::from_str(text).map_err(|e| {
                format!(
                    "startingOffsets must be earliest, latest, or per-partition JSON such as {{\"topic\":{{\"0\":23}}}}: {e}"
                )
            })?;
        let mut parsed = BTreeMap::new();
        for (topic, partitions) in raw {
            let mut offsets = BTreeMap::new();
            for (partition, offset) in partitions {
                let number: i32 = partition
                    .parse()
                    .ok()
                    .filter(|p: &i32| *p >= 0)
                    .ok_or_else(|| {
                        format!("partition \"{partition}\" of topic \"{topic}\" is not a partition number")
                    })?;
                if offset < OFFSET_EARLIEST {
                    return Err(format!(
                        "offset {offset} for {topic}-{partition} is invalid (use an offset >= 0, -2 for earliest or -1 for latest)"
                    ));
                }
                if offset > MAX_OFFSET {
                    return Err(format!(
                        "offset {offset} for {topic}-{partition} is above {MAX_OFFSET}, the largest offset a spec may name"
                    ));
                }
                offsets.insert(number, offset);
            }
            parsed.insert(topic, offsets);
        }
        Ok(StartingOffsets::Specific(parsed))
    }
}

/// An Azure Event Hub read through its Kafka endpoint, SASL_SSL with the connection string.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new(READ_START_RULE).message(READ_START_MESSAGE),
    validation = Rule::new(READ_STRATEGY_RULE).message(READ_STRATEGY_MESSAGE),
    validation = Rule::new(READ_DELAY_RULE).message(READ_DELAY_MESSAGE),
    validation = Rule::new(READ_MIN_MAX_RULE).message(READ_MIN_MAX_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
pub struct EventHubsSource {
    /// The Event Hubs namespace: its name (my-namespace) or host (my-namespace.servicebus.windows.net).
    #[schemars(length(min = 1, max = 253))]
    pub namespace: String,

    /// The event hub to read (the Kafka topic).
    #[schemars(length(min = 1, max = 256))]
    pub event_hub: String,

    /// The Kafka consumer group (group.id) the ingestion's workers share. Default
    /// tributary-<namespace>-<name>: one per ingestion, so two ingestions of one event hub never
    /// split its partitions between them. Event Hubs creates Kafka consumer groups on first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub consumer_group: Option<String>,

    /// The Event Hubs connection string (Endpoint=sb://...;SharedAccessKeyName=...;SharedAccessKey=...).
    pub connection_string: SecretValueSource,

    #[serde(flatten)]
    pub read: ReadOptions,
}

impl EventHubsSource {
    /// The Kafka endpoint of the namespace.
    pub fn bootstrap_server(&self) -> String {
        let host = if self.namespace.contains('.') {
            self.namespace.clone()
        } else {
            format!("{}.servicebus.windows.net", self.namespace)
        };
        format!("{host}:9093")
    }
}

impl Source {
    /// The read options of whichever source is set.
    pub fn read_options(&self) -> Option<&ReadOptions> {
        match (&self.kafka, &self.event_hubs) {
            (Some(kafka), _) => Some(&kafka.read),
            (None, Some(event_hubs)) => Some(&event_hubs.read),
            (None, None) => None,
        }
    }
}

/// A value read from a key of a Secret in the ingestion's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretValueSource {
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How each event's value is parsed: exactly one of json or raw.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.json) != has(self.raw)").message(FORMAT_ONE_OF_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct Format {
    /// JSON objects parsed against a declared schema (Spark's from_json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonFormat>,

    /// The value (and key) kept as they came, beside the metadata columns, as Spark's Kafka
    /// source gives them before any parsing: a bronze table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawFormat>,
}

/// The message of the rule that asks for one format.
pub const FORMAT_ONE_OF_MESSAGE: &str = "spec.format must set exactly one of json (parse values against a schema) or raw (keep them as they came)";

impl Format {
    /// The JSON format, when the values are parsed (None for raw).
    pub fn json(&self) -> Option<&JsonFormat> {
        self.json.as_ref()
    }
}

/// Values kept unparsed: the columns `value` and `key` (Spark's names), of the types chosen.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RawFormat {
    /// The type of the value column: binary (the default, as Spark's Kafka source; every
    /// byte kept) or string (UTF-8 text, as CAST(value AS STRING); a value that is not UTF-8
    /// stops the query, naming its offset, rather than being changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<RawType>,

    /// The type of the key column: binary (the default) or string, as for the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<RawType>,
}

impl RawFormat {
    pub fn value_type(&self) -> RawType {
        self.value_type.unwrap_or_default()
    }

    pub fn key_type(&self) -> RawType {
        self.key_type.unwrap_or_default()
    }
}

/// The column type of a raw value or key.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum RawType {
    #[default]
    Binary,
    String,
}

/// The columns of a raw table, besides the metadata columns.
pub const RAW_VALUE_COLUMN: &str = "value";
pub const RAW_KEY_COLUMN: &str = "key";

/// JSON parsed against a schema (Spark's from_json with a StructType).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.onError) || self.onError != 'deadLetter' || has(self.deadLetter)").message("onError: deadLetter needs format.json.deadLetter.uri, the table bad records are written to"),
    validation = Rule::new("!has(self.deadLetter) || (has(self.onError) && self.onError == 'deadLetter')").message("format.json.deadLetter is only used with onError: deadLetter"),
)]
#[serde(rename_all = "camelCase")]
pub struct JsonFormat {
    /// The columns, in order (Spark's StructType as a list of fields).
    #[schemars(length(min = 1, max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub schema: Vec<SchemaField>,

    /// What happens to a record that does not parse: rescue (default: keep the row, raw text in
    /// _rescued_data), deadLetter (write it to format.json.deadLetter) or fail (stop the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,

    /// The Delta table bad records go to, with onError: deadLetter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,

    /// How timestamp columns are read from strings (Spark's timestampFormat option of
    /// from_json), a Spark datetime pattern such as yyyy-MM-dd HH:mm:ss[.SSSSSS][XXX] or
    /// dd/MM/yyyy HH:mm. Default: Spark's cast (ISO 8601 and its relaxed forms). Numbers are
    /// epoch seconds either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub timestamp_format: Option<String>,

    /// How timestamp_ntz columns are read from strings (Spark's timestampNTZFormat), a Spark
    /// datetime pattern without an offset, such as dd/MM/yyyy HH:mm:ss. Default: Spark's cast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[serde(rename = "timestampNTZFormat")]
    pub timestamp_ntz_format: Option<String>,

    /// How date columns are read from strings (Spark's dateFormat), a Spark datetime pattern
    /// such as dd/MM/yyyy. Default: Spark's cast (yyyy-MM-dd and its relaxed forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub date_format: Option<String>,

    /// The time zone of timestamps written without one (Spark's timeZone option, which
    /// defaults to the session time zone): a region such as Europe/Paris, UTC, or an offset
    /// such as +01:00. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
}

impl JsonFormat {
    pub fn on_error(&self) -> OnError {
        self.on_error.unwrap_or_default()
    }
}

/// One column of the schema.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchemaField {
    /// The column name (and the JSON key it is read from).
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches('^[^ ,;{}()\\\\n\\\\t=]+$')").message("schema field names must not contain spaces or any of ,;{}()= (Delta column names)"))]
    pub name: String,

    /// A Spark SQL type: string, boolean, byte, short, int, long, float, double, decimal(p,s),
    /// date, timestamp, timestamp_ntz, binary, array<T>, map<K,V>, struct<name:T,...>.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 4096))]
    pub data_type: String,

    /// Whether the column may be null. Default true (JSON may omit any key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,

    /// Free text kept as the column's comment in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The bad-input policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum OnError {
    /// Keep the row; the raw text goes to the _rescued_data column.
    #[default]
    Rescue,
    /// Write the record, its error and its Kafka coordinates to a dead-letter Delta table.
    DeadLetter,
    /// Stop the query with an error naming the topic, partition and offset.
    Fail,
}

/// The dead-letter table.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Table location: a path, or an abfss:// / az:// URL. Uses the sink's storage options.
    #[schemars(length(min = 1, max = 4096))]
    pub uri: String,
}

/// A Kafka column kept beside the data.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum MetadataColumn {
    Topic,
    Partition,
    Offset,
    Timestamp,
    TimestampType,
    Key,
    Headers,
}

impl MetadataColumn {
    pub const ALL: [MetadataColumn; 7] = [
        MetadataColumn::Topic,
        MetadataColumn::Partition,
        MetadataColumn::Offset,
        MetadataColumn::Timestamp,
        MetadataColumn::TimestampType,
        MetadataColumn::Key,
        MetadataColumn::Headers,
    ];

    /// The column name in the table.
    pub fn column_name(self) -> &'static str {
        match self {
            MetadataColumn::Topic => "kafka_topic",
            MetadataColumn::Partition => "kafka_partition",
            MetadataColumn::Offset => "kafka_offset",
            MetadataColumn::Timestamp => "kafka_timestamp",
            MetadataColumn::TimestampType => "kafka_timestamp_type",
            MetadataColumn::Key => "kafka_key",
            MetadataColumn::Headers => "kafka_headers",
        }
    }
}

/// The column holding input that did not parse, with onError: rescue (as in Auto Loader).
pub const RESCUED_DATA_COLUMN: &str = "_rescued_data";

/// A transformation of each micro-batch.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Transform {
    /// One SELECT over the table `input` (the schema's fields and the metadata columns), in
    /// Apache DataFusion's SQL: projections, renames, casts, WHERE, CASE, string, date and
    /// regex functions. Per-row only: aggregations, windows, joins, ORDER BY, LIMIT, DISTINCT
    /// and subqueries are refused. Its columns are the table's (plus _rescued_data with
    /// onError rescue). Identifiers are case-sensitive; quote names with capitals:
    /// "deviceId".
    #[schemars(length(min = 1, max = MAX_TRANSFORM_SQL_BYTES))]
    pub sql: String,
}

/// Where rows are written.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Sink {
    /// A Delta Lake table.
    pub delta: DeltaSink,
}

/// A Delta Lake table, by location or by Unity Catalog name. Debug shows secret-like storage
/// option values as `<redacted>`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("has(self.uri) || has(self.table)").message("spec.sink.delta needs uri (the table's location) or table (a Unity Catalog name catalog.schema.table)"),
    validation = Rule::new("!has(self.uri) || !has(self.table)").message("spec.sink.delta.uri and spec.sink.delta.table both name the table: set uri for a location or table for a Unity Catalog name, not both"),
    validation = Rule::new("!has(self.table) || has(self.unityCatalog)").message("spec.sink.delta.table is a Unity Catalog name and needs spec.sink.delta.unityCatalog (the catalog's endpoint and credentials)"),
    validation = Rule::new("!has(self.unityCatalog) || has(self.table)").message("spec.sink.delta.unityCatalog resolves spec.sink.delta.table and is only used with it"),
    validation = Rule::new("!has(self.uri) || self.uri.contains('://') || has(self.volume)").message("spec.sink.delta.uri is a path, so spec.sink.delta.volume must name the claim that holds it (claimName) or ask for one (size)"),
    validation = Rule::new("!has(self.uri) || !has(self.volume) || !has(self.volume.mountPath) || self.uri.startsWith(self.volume.mountPath)").message("spec.sink.delta.uri must be under spec.sink.delta.volume.mountPath"),
    validation = Rule::new("!has(self.outputMode) || self.outputMode != 'complete'").message(COMPLETE_REFUSED),
    validation = Rule::new("!has(self.outputMode) || self.outputMode != 'update' || has(self.mergeKeys)").message("outputMode update needs spec.sink.delta.mergeKeys: the columns that identify a row"),
    validation = Rule::new("!has(self.mergeKeys) || (has(self.outputMode) && self.outputMode == 'update')").message("spec.sink.delta.mergeKeys is only used with outputMode update"),
    validation = Rule::new("!has(self.deleteOnTombstone) || !self.deleteOnTombstone || (has(self.outputMode) && self.outputMode == 'update')").message("spec.sink.delta.deleteOnTombstone is only used with outputMode update"),
    validation = Rule::new(DELETED_FILE_RETENTION_RULE).message(DELETED_FILE_RETENTION_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
pub struct DeltaSink {
    /// Table location: a path on a volume (/lake/bronze/t), or abfss://container@account.dfs.core.windows.net/path,
    /// az://container/path, file:///path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub uri: Option<String>,

    /// A Unity Catalog table name (catalog.schema.table), resolved to its storage location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 768))]
    pub table: Option<String>,

    /// The Unity Catalog that resolves `table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unity_catalog: Option<UnityCatalog>,

    /// append (the default: every row is added) or update (each batch's last row per
    /// mergeKeys is MERGEd into the table: updated when the key is there, inserted when not,
    /// as Spark's foreachBatch with MERGE INTO). complete is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_mode: Option<OutputMode>,

    /// With outputMode update: the columns that identify a row (written columns; the MERGE
    /// condition is their equality).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub merge_keys: Vec<String>,

    /// With outputMode update: a record with a null value (a Kafka tombstone) deletes its
    /// key's row. The keys are computed from the tombstone's metadata columns (e.g.
    /// kafka_key), its value's fields being null. Default false: a tombstone is bad input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_tombstone: Option<bool>,

    /// Partition columns of a new table (schema fields or metadata columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub partition_by: Vec<String>,

    /// Object store options (object_store names), e.g. azure_storage_account_name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_options: BTreeMap<String, String>,

    /// Object store options read from Secrets, e.g. azure_storage_account_key, azure_storage_sas_key,
    /// azure_client_secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_storage_options: BTreeMap<String, SecretValueSource>,

    /// The volume a path uri lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSource>,

    /// Target size of the Parquet files written, in bytes, from 1 MiB to 4 GiB. Default 128 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TARGET_FILE_SIZE, max = MAX_TARGET_FILE_SIZE))]
    pub target_file_size: Option<i64>,

    /// The table property delta.checkpointInterval: commits between two Delta log
    /// checkpoints. Set when the table is created (default 10) and, when given, on an
    /// existing table whose property differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_CHECKPOINT_INTERVAL, max = MAX_CHECKPOINT_INTERVAL))]
    pub checkpoint_interval: Option<i32>,

    /// The table property delta.logRetentionDuration: how long commits of the Delta log are
    /// kept (time travel reaches that far back), as Delta writes it: "interval 30 days"
    /// (units second, minute, hour, day, week). Set on a new table and on an existing one
    /// whose property differs. Default: Delta's (30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(DELTA_INTERVAL_RULE).message(DELTA_INTERVAL_MESSAGE))]
    pub log_retention_duration: Option<String>,

    /// The table property delta.deletedFileRetentionDuration: how long a removed data file
    /// stays before VACUUM may delete it ("interval 7 days"). Under 7 days (Delta's default)
    /// needs vacuum.retentionDurationCheck: false. Set like logRetentionDuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(DELTA_INTERVAL_RULE).message(DELTA_INTERVAL_MESSAGE))]
    pub deleted_file_retention_duration: Option<String>,

    /// Schema evolution, as Spark's mergeSchema: true adds the columns of
    /// spec.format.json.schema (and metadata columns) that the existing table lacks, as
    /// nullable columns, in the first commit that writes rows with them (older rows read them
    /// as null). Default false, as in Spark: such a table is refused, naming the columns. A
    /// column whose type changed, or one the table has and the ingestion no longer writes, is
    /// refused either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_schema: Option<bool>,

    /// VACUUM in the background, as Spark's `VACUUM table RETAIN n HOURS`: data files the
    /// table stopped referencing (the small files compaction replaced) are deleted once they
    /// have been unreferenced for the retention. Absent: never (as Delta: files stay until
    /// someone vacuums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vacuum: Option<Vacuum>,
}

/// The CEL rule of a Delta interval table property ("interval 30 days").
pub const DELTA_INTERVAL_RULE: &str =
    "self.matches('^interval [1-9][0-9]{0,8} (second|minute|hour|day|week)s?$')";
/// The CEL rule keeping deletedFileRetentionDuration at 7 days or more unless the retention
/// check is off: the number and unit spelled out as regular expressions of 7 days and above.
pub const DELETED_FILE_RETENTION_RULE: &str = "!has(self.deletedFileRetentionDuration) || (has(self.vacuum) && has(self.vacuum.retentionDurationCheck) && !self.vacuum.retentionDurationCheck) || self.deletedFileRetentionDuration.matches('^interval ([1-9][0-9]* weeks?|([7-9]|[1-9][0-9]+) days?|(16[89]|1[7-9][0-9]|[2-9][0-9]{2}|[1-9][0-9]{3,}) hours?|(100[89][0-9]|10[1-9][0-9]{2}|1[1-9][0-9]{3}|[2-9][0-9]{4}|[1-9][0-9]{5,}) minutes?|(6048[0-9]{2}|60[5-9][0-9]{3}|6[1-9][0-9]{4}|[7-9][0-9]{5}|[1-9][0-9]{6,}) seconds?)$')";
/// The message of that rule.
pub const DELTA_INTERVAL_MESSAGE: &str = "must be a Delta interval such as \"interval 30 days\" (a whole number of seconds, minutes, hours, days or weeks)";

/// Seconds of a Delta interval table property ("interval 30 days"), as [`DELTA_INTERVAL_RULE`]
/// accepts them.
pub fn parse_delta_interval(text: &str) -> Result<u64, String> {
    let bad = || format!("\"{text}\" {DELTA_INTERVAL_MESSAGE}");
    let mut words = text.split(' ');
    if words.next() != Some("interval") {
        return Err(bad());
    }
    let number: u64 = words
        .next()
        .filter(|n| {
            (1..=9).contains(&n.len())
                && n.bytes().all(|b| b.is_ascii_digit())
                && !n.starts_with('0')
        })
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    let unit = match words.next().map(|u| u.strip_suffix('s').unwrap_or(u)) {
        Some("second") => 1,
        Some("minute") => 60,
        Some("hour") => 3600,
        Some("day") => 86_400,
        Some("week") => 604_800,
        _ => return Err(bad()),
    };
    if words.next().is_some() {
        return Err(bad());
    }
    Ok(number * unit)
}

/// The message of a deletedFileRetentionDuration under Delta's default.
pub const DELETED_FILE_RETENTION_MESSAGE: &str = "spec.sink.delta.deletedFileRetentionDuration under 7 days (Delta's default) lets VACUUM delete files that readers and time travel may still need; set spec.sink.delta.vacuum.retentionDurationCheck: false to allow it";

/// The message of the rule that keeps a VACUUM retention at Delta's default or above.
pub const VACUUM_RETENTION_CHECK_MESSAGE: &str = "spec.sink.delta.vacuum.retainHours below 168 (Delta's default of 7 days) deletes files that readers and time travel may still need; set retentionDurationCheck: false to allow it, as Spark's spark.databricks.delta.retentionDurationCheck.enabled=false does";

/// A VACUUM schedule and retention.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.retainHours) || self.retainHours >= 168 || (has(self.retentionDurationCheck) && !self.retentionDurationCheck)").message(VACUUM_RETENTION_CHECK_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct Vacuum {
    /// Hours between two runs of each worker.
    #[schemars(range(min = 1, max = MAX_VACUUM_INTERVAL_HOURS))]
    pub interval_hours: i32,
    /// Hours a file must have been unreferenced before it is deleted. Default 168 (7 days,
    /// Delta's delta.deletedFileRetentionDuration); less needs retentionDurationCheck: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_VACUUM_RETAIN_HOURS))]
    pub retain_hours: Option<i32>,
    /// false allows retainHours under 168 (Spark's
    /// spark.databricks.delta.retentionDurationCheck.enabled). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_duration_check: Option<bool>,
}

impl Vacuum {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval_hours.max(1).unsigned_abs()) * 3600)
    }

    pub fn retain_hours(&self) -> i32 {
        self.retain_hours.unwrap_or(DEFAULT_VACUUM_RETAIN_HOURS)
    }

    pub fn retention_duration_check(&self) -> bool {
        self.retention_duration_check.unwrap_or(true)
    }
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaSink")
            .field("uri", &self.uri)
            .field("table", &self.table)
            .field("unity_catalog", &self.unity_catalog)
            .field("output_mode", &self.output_mode)
            .field("merge_keys", &self.merge_keys)
            .field("delete_on_tombstone", &self.delete_on_tombstone)
            .field("partition_by", &self.partition_by)
            .field(
                "storage_options",
                &crate::secrets::RedactedOptions(
                    &self.storage_options,
                    crate::secrets::is_secret_storage_option,
                ),
            )
            .field("secret_storage_options", &self.secret_storage_options)
            .field("volume", &self.volume)
            .field("target_file_size", &self.target_file_size)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("log_retention_duration", &self.log_retention_duration)
            .field(
                "deleted_file_retention_duration",
                &self.deleted_file_retention_duration,
            )
            .field("vacuum", &self.vacuum)
            .field("merge_schema", &self.merge_schema)
            .finish()
    }
}

/// Why outputMode complete is refused, and what to use.
pub const COMPLETE_REFUSED: &str = "outputMode complete rewrites the whole result of a streaming aggregation on every batch, which an ingestion does not have: use append to add every row, or update with mergeKeys to keep one row per key";

/// Spark's output modes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum OutputMode {
    #[default]
    Append,
    Update,
    Complete,
}

/// The Unity Catalog that resolves a table name: a Databricks workspace or an open-source Unity
/// Catalog server (both serve /api/2.1/unity-catalog), and how to sign in to it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("has(self.token) != has(self.oauth)").message("spec.sink.delta.unityCatalog needs exactly one of token (a personal access token) or oauth (a service principal's client id and secret)"),
    validation = Rule::new("!has(self.tableMustExist) || !self.tableMustExist || !has(self.storageRoot)").message("spec.sink.delta.unityCatalog.storageRoot is where an absent table is created, and tableMustExist says never to create one: set one of them"),
)]
#[serde(rename_all = "camelCase")]
pub struct UnityCatalog {
    /// The workspace or catalog server URL, e.g. https://adb-123.4.azuredatabricks.net or
    /// http://unity-catalog:8080.
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,

    /// A bearer token (a Databricks personal access token, or the open-source server's token)
    /// allowed to read the table, create it if absent, and vend credentials for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretValueSource>,

    /// OAuth machine-to-machine sign-in with a service principal's client id and secret
    /// (client credentials grant), as Databricks offers instead of a personal token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<UnityCatalogOAuth>,

    /// Where an absent table is created, as an EXTERNAL Delta table at
    /// `<storageRoot>/<catalog>/<schema>/<table>` (an abfss://, az://, file:// URL or a path).
    /// Without it an absent table is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub storage_root: Option<String>,

    /// The table must exist already: never create it. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_must_exist: Option<bool>,
}

/// OAuth machine-to-machine (client credentials) sign-in.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UnityCatalogOAuth {
    /// The service principal's client (application) id.
    pub client_id: SecretValueSource,

    /// The service principal's OAuth secret.
    pub client_secret: SecretValueSource,

    /// The token endpoint. Default `<endpoint>/oidc/v1/token` (a Databricks workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub token_endpoint: Option<String>,

    /// The scope asked for. Default `all-apis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub scope: Option<String>,
}

/// The checkpoint: the query's identity, its ownership claim, availableNow targets and the
/// progress log. The table itself records which offsets were written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("self.location.contains('://') || has(self.volume)").message("spec.checkpoint.location is a path, so spec.checkpoint.volume must name the claim that holds it (claimName) or ask for one (size)"),
    validation = Rule::new("!has(self.volume) || !has(self.volume.mountPath) || self.location.startsWith(self.volume.mountPath)").message("spec.checkpoint.location must be under spec.checkpoint.volume.mountPath"),
    validation = Rule::new("!has(self.queryId) || !has(self.fromSpark)").message(CHECKPOINT_START_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// A path on the checkpoint volume (/checkpoints/sensor-ingestion), or an abfss:// / az:// URL.
    #[schemars(length(min = 1, max = 4096))]
    pub location: String,

    /// The PersistentVolumeClaim a path location lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSource>,

    /// Object store options for a URL location. Default: when neither this nor
    /// secretStorageOptions is set, the sink's (both kinds); setting either replaces all of them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_options: BTreeMap<String, String>,

    /// Object store options for a URL location, read from Secrets. Default: the sink's, as for
    /// storageOptions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_storage_options: BTreeMap<String, SecretValueSource>,

    /// Take over from a stopped Spark Structured Streaming query that wrote the same Delta
    /// table: a new query starts from the end offsets of the last batch the table says Spark
    /// committed (never from a batch Spark only planned). Read only while this query's own
    /// checkpoint is new; ignored afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_spark: Option<SparkCheckpointSource>,

    /// The query id a new checkpoint takes instead of a new one (Spark's query id). Set it to
    /// the id of a query whose checkpoint was lost, as the refusal to start names it: the new
    /// checkpoint then continues from the offsets that query recorded in the Delta table,
    /// exactly once. Read only while the checkpoint is new; a checkpoint that already holds
    /// another query's id is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 36, max = 36))]
    #[x_kube(validation = Rule::new(QUERY_ID_RULE).message(QUERY_ID_MESSAGE))]
    pub query_id: Option<String>,
}

/// The message of the rule that keeps queryId and fromSpark apart.
pub const CHECKPOINT_START_MESSAGE: &str = "spec.checkpoint sets at most one of queryId (continue a query whose checkpoint was lost) and fromSpark (take over from a Spark query): each says where a new checkpoint starts";
/// The CEL rule on query ids: a UUID in lower case, as the worker and Spark write them (the
/// table's txn ids are made from it, so another spelling would not find them).
pub const QUERY_ID_RULE: &str =
    "self.matches('^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')";
/// The message of the rule on query ids.
pub const QUERY_ID_MESSAGE: &str = "spec.checkpoint.queryId must be a query id in lower case such as 3f2b8c1e-5d4a-4e9b-9c7d-1a2b3c4d5e6f (the id the refusal to start names, or the id in a checkpoint's metadata file)";

/// True for a query id in the form the worker and Spark write (a UUID).
pub fn is_query_id(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(group, len)| {
            group.len() == len
                && group
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// A Spark query's checkpointLocation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.location.startsWith('/') || self.location.matches('^(abfss?|az|azure)://')").message(SPARK_CHECKPOINT_LOCATION_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct SparkCheckpointSource {
    /// The Spark query's checkpointLocation: a path on `volume`, or an abfss:// / az:// URL
    /// read with spec.checkpoint's storage options (else the sink's).
    #[schemars(length(min = 1, max = 4096))]
    pub location: String,
    /// The existing PersistentVolumeClaim that holds it (claimName, mountPath); for a path only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSource>,
    /// Seconds the Spark checkpoint must have been unchanged before the Spark query counts as
    /// stopped. Default 120.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_SPARK_QUIET_SECONDS))]
    pub quiet_seconds: Option<i64>,
}

/// The message of the rule on where a Spark checkpoint to take over may be.
pub const SPARK_CHECKPOINT_LOCATION_MESSAGE: &str = "spec.checkpoint.fromSpark.location must be a path on spec.checkpoint.fromSpark.volume, or an abfss://, abfs://, az:// or azure:// URL (read with spec.checkpoint's storage options, else the sink's)";

impl SparkCheckpointSource {
    pub fn quiet(&self) -> Duration {
        Duration::from_secs(
            self.quiet_seconds
                .unwrap_or(DEFAULT_SPARK_QUIET_SECONDS)
                .clamp(0, MAX_SPARK_QUIET_SECONDS)
                .unsigned_abs(),
        )
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("location", &self.location)
            .field("volume", &self.volume)
            .field(
                "storage_options",
                &crate::secrets::RedactedOptions(
                    &self.storage_options,
                    crate::secrets::is_secret_storage_option,
                ),
            )
            .field("secret_storage_options", &self.secret_storage_options)
            .finish()
    }
}

/// A PersistentVolumeClaim: an existing one, or one the operator creates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.claimName) != has(self.size)").message("volume needs exactly one of claimName (an existing claim) or size (a claim the operator creates)"))]
#[serde(rename_all = "camelCase")]
pub struct VolumeSource {
    /// An existing claim in the ingestion's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: Option<String>,

    /// Size of a claim the operator creates (a Kubernetes quantity such as 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub size: Option<String>,

    /// Storage class of a created claim. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// Where the claim is mounted. Default: the location itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub mount_path: Option<String>,

    /// Keep a created claim when the ingestion is deleted. Default true: checkpoints outlive
    /// their query unless asked otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
}

/// When micro-batches run (Spark's triggers). At most one may be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("(has(self.processingTime) ? 1 : 0) + ((has(self.availableNow) && self.availableNow) ? 1 : 0) + ((has(self.once) && self.once) ? 1 : 0) <= 1").message("spec.trigger may set only one of processingTime, availableNow or once"))]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Micro-batches at a fixed interval: 10s, 1m30s, 500ms, or Spark's "10 seconds"; at most
    /// 24h ("1 day").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(crate::limits::processing_time_format_rule()).message(PROCESSING_TIME_FORMAT_MESSAGE))]
    #[x_kube(validation = Rule::new(processing_time_bound_rule()).message(PROCESSING_TIME_BOUND_MESSAGE))]
    pub processing_time: Option<String>,

    /// Process everything available at start (in several batches if maxOffsetsPerTrigger says
    /// so), then exit. Runs as a Job, or a CronJob with spec.schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_now: Option<bool>,

    /// One micro-batch, then exit (deprecated in Spark; prefer availableNow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<bool>,
}

/// The trigger, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// Next micro-batch as soon as the previous completes.
    Default,
    ProcessingTime(Duration),
    AvailableNow,
    Once,
}

impl TriggerKind {
    /// Whether the query runs to completion (a Job) rather than forever (a Deployment).
    pub fn runs_to_completion(self) -> bool {
        matches!(self, TriggerKind::AvailableNow | TriggerKind::Once)
    }
}

impl Trigger {
    pub fn kind(&self) -> Result<TriggerKind, String> {
        let available_now = self.available_now.unwrap_or(false);
        let once = self.once.unwrap_or(false);
        match (&self.processing_time, available_now, once) {
            (None, false, false) => Ok(TriggerKind::Default),
            (Some(interval), false, false) => {
                parse_duration(interval).map(TriggerKind::ProcessingTime)
            }
            (None, true, false) => Ok(TriggerKind::AvailableNow),
            (None, false, true) => Ok(TriggerKind::Once),
            _ => {
                Err("spec.trigger may set only one of processingTime, availableNow or once".into())
            }
        }
    }
}

/// Pod settings for the workers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Worker image. Default: the operator's configured worker image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// CPU and memory requests and limits of each worker. Default: requests cpu 250m and
    /// memory 256Mi, limit memory 1Gi (no CPU limit), so a worker is never BestEffort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Secrets holding credentials for the registry of the worker image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Annotations on the workers' ServiceAccount (e.g. azure.workload.identity/client-id for
    /// AKS workload identity).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_account_annotations: BTreeMap<String, String>,
    /// How the worker pods spread over zones and nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Extra volumes of the worker pods (a CA bundle, a sidecar's socket...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub volumes: Vec<Volume>,
    /// Where the worker container mounts the extra volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub volume_mounts: Vec<VolumeMount>,
    /// Seconds a stopping worker gets to finish its micro-batch before it is killed (killing
    /// it is safe: the batch is not committed and runs again). Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TERMINATION_GRACE_SECONDS, max = MAX_TERMINATION_GRACE_SECONDS))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Extra environment variables (e.g. RUST_LOG).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,
    /// Node labels the workers must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the worker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of the worker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra annotations on the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Extra labels on the worker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Log format: text (default) or json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Port of /metrics, /healthz and /readyz. Default 9090.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_METRICS_PORT, max = MAX_METRICS_PORT))]
    pub metrics_port: Option<i32>,
}

/// The message of the rule that keeps `spec.runs` to runs to completion.
pub const RUNS_NEED_A_RUN_TO_COMPLETION: &str = "spec.runs sets the retries and history of Jobs and needs trigger availableNow or once; a continuous ingestion restarts its workers instead";

/// Retries and history of runs to completion.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunPolicy {
    /// Failed pods a run may have before it fails (the Job's backoffLimit). Each retry resumes
    /// from the checkpoint. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_BACKOFF_LIMIT))]
    pub backoff_limit: Option<i32>,
    /// Finished successful runs a schedule keeps (the CronJob's successfulJobsHistoryLimit).
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_RUN_HISTORY))]
    pub successful_history: Option<i32>,
    /// Failed runs a schedule keeps (the CronJob's failedJobsHistoryLimit). Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_RUN_HISTORY))]
    pub failed_history: Option<i32>,
}

/// The message of the rule that keeps `spec.autoscaling` to continuous triggers.
pub const AUTOSCALING_NEEDS_CONTINUOUS: &str = "spec.autoscaling scales the workers of a continuous trigger; a run to completion (availableNow or once) is a single worker";
/// The message of the rule that keeps `spec.replicas` and `spec.autoscaling` apart.
pub const AUTOSCALING_EXCLUDES_REPLICAS: &str = "spec.replicas and spec.autoscaling exclude each other: with autoscaling the operator sets the number of workers (between minReplicas and maxReplicas); remove spec.replicas, or remove spec.autoscaling to scale by hand or with KEDA";
/// The message of the rule that keeps `spec.maxRestarts` to continuous triggers.
pub const MAX_RESTARTS_NEEDS_CONTINUOUS: &str = "spec.maxRestarts limits the restarts of continuous workers; a run to completion retries by spec.runs.backoffLimit";

/// Workers scaled on lag: the operator runs ceil(lag / targetLagPerWorker) workers, between
/// minReplicas and maxReplicas and never more than the partitions being read. It adds workers
/// as soon as the lag calls for them and removes them only after the lag has stayed low for
/// scaleDownDelaySeconds, so the count does not flap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas").message("spec.autoscaling.minReplicas must not be more than maxReplicas"),
    validation = Rule::new("has(self.targetLagPerWorker) != has(self.targetSecondsBehind)").message(AUTOSCALING_TARGET_MESSAGE),
)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest workers. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub min_replicas: Option<i32>,
    /// Most workers.
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max_replicas: i32,
    /// Offsets behind the latest that one worker should carry: 100000 with a lag of 450000
    /// runs 5 workers. Exactly one of targetLagPerWorker or targetSecondsBehind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_OFFSET))]
    pub target_lag_per_worker: Option<i64>,
    /// How far behind the latest the query may be, in seconds of the workers' own processing
    /// rate: the lag divided by the rows per second each worker processes. 60 with workers
    /// processing 5000 rows/s each and a lag of 900000 runs 3 workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_TARGET_SECONDS_BEHIND))]
    pub target_seconds_behind: Option<i64>,
    /// Seconds the lag must stay low enough for fewer workers before any is removed.
    /// Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_SCALE_DOWN_DELAY_SECONDS))]
    pub scale_down_delay_seconds: Option<i64>,
}

impl Autoscaling {
    pub fn min_replicas(&self) -> i32 {
        self.min_replicas.unwrap_or(1)
    }

    pub fn scale_down_delay(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.scale_down_delay_seconds
                .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS)
                .clamp(0, MAX_SCALE_DOWN_DELAY_SECONDS)
                .unsigned_abs(),
        )
    }
}

/// The message of the rule that asks a reset for one target.
pub const RESET_ONE_OF_MESSAGE: &str =
    "spec.reset must set exactly one of timestamp or offsets: where the partitions move to";
/// The message of the rule on reset ids.
pub const RESET_ID_MESSAGE: &str = "spec.reset.id may hold letters, digits, '.', '_' and '-' (at most 63), starting and ending with a letter or digit";
/// The message of the rule on reset timestamps.
pub const RESET_TIMESTAMP_MESSAGE: &str =
    "spec.reset.timestamp must be an RFC 3339 time such as 2026-11-30T12:00:00Z";

/// A reset of the query's offsets, declared in the spec so that GitOps tools can apply it:
/// `id` names it (a new id is a new reset), and exactly one of `timestamp` or `offsets` says
/// where the partitions move to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.timestamp) != has(self.offsets)").message(RESET_ONE_OF_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct OffsetReset {
    /// Names this reset, e.g. replay-2026-11-30. Each id is applied once per query, whatever
    /// else changes or how often the spec is applied; choose a new id for a new reset.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new(RESET_ID_RULE).message(RESET_ID_MESSAGE))]
    pub id: String,

    /// Every partition the query reads moves to its first record whose timestamp is at or
    /// after this RFC 3339 time (Kafka's offsetsForTimes); a partition with no such record
    /// moves to its latest offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new(RESET_TIMESTAMP_RULE).message(RESET_TIMESTAMP_MESSAGE))]
    pub timestamp: Option<String>,

    /// earliest, latest (every partition), or per-partition JSON as Spark's startingOffsets,
    /// e.g. {"topic":{"0":1200,"1":-2}} (-2 = earliest, -1 = latest): only the partitions named
    /// move, the others keep their position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self == 'earliest' || self == 'latest' || self.matches('^(?s)\\\\s*\\\\{.*\\\\}\\\\s*$')").message("spec.reset.offsets must be earliest, latest, or per-partition JSON such as {\"topic\":{\"0\":23}}"))]
    pub offsets: Option<String>,
}

/// The CEL rule on reset ids (the same characters as a Kubernetes label value).
pub const RESET_ID_RULE: &str = "self.matches('^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$')";
/// The CEL rule on reset timestamps: RFC 3339 with a zone.
pub const RESET_TIMESTAMP_RULE: &str = "self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$')";

/// Where a reset moves partitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetTarget {
    /// Every partition to its first record at or after these epoch milliseconds.
    Timestamp(i64),
    /// Every partition, or the partitions named (-2 earliest, -1 latest).
    Offsets(StartingOffsets),
}

impl OffsetReset {
    /// The parsed target, or why it does not parse.
    pub fn target(&self) -> Result<ResetTarget, String> {
        match (&self.timestamp, &self.offsets) {
            (Some(time), None) => parse_rfc3339_millis(time).map(ResetTarget::Timestamp),
            (None, Some(offsets)) => StartingOffsets::parse(offsets)
                .map(ResetTarget::Offsets)
                .map_err(|e| e.replace("startingOffsets", "spec.reset.offsets")),
            _ => Err(RESET_ONE_OF_MESSAGE.to_string()),
        }
    }

    /// The target as the spec says it, for history and events: `timestamp 2026-...` or
    /// `offsets {...}`.
    pub fn describe_target(&self) -> String {
        match (&self.timestamp, &self.offsets) {
            (Some(time), _) => format!("timestamp {time}"),
            (None, Some(offsets)) => format!("offsets {}", offsets.trim()),
            (None, None) => "nothing".to_string(),
        }
    }
}

/// Epoch milliseconds of an RFC 3339 time (with its zone), refusing times before 1970.
pub fn parse_rfc3339_millis(text: &str) -> Result<i64, String> {
    let time: k8s_openapi::jiff::Timestamp = text.trim().parse().map_err(|e| {
        format!("\"{text}\" is not an RFC 3339 time such as 2026-11-30T12:00:00Z: {e}")
    })?;
    let millis = time.as_millisecond();
    if millis < 0 {
        return Err(format!(
            "\"{text}\" is before 1970, when Kafka timestamps begin"
        ));
    }
    Ok(millis)
}

/// The message of the rule that asks autoscaling for one target.
pub const AUTOSCALING_TARGET_MESSAGE: &str = "spec.autoscaling must set exactly one of targetLagPerWorker (offsets) or targetSecondsBehind (seconds at the workers' processing rate)";

/// The target of autoscaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoscalingTarget {
    /// Offsets behind the latest per worker.
    LagPerWorker(i64),
    /// Seconds behind at the workers' processing rate.
    SecondsBehind(i64),
}

impl Autoscaling {
    /// The target as a closed set of cases (validation keeps exactly one set).
    pub fn target(&self) -> Result<AutoscalingTarget, String> {
        match (self.target_lag_per_worker, self.target_seconds_behind) {
            (Some(lag), None) => Ok(AutoscalingTarget::LagPerWorker(lag)),
            (None, Some(seconds)) => Ok(AutoscalingTarget::SecondsBehind(seconds)),
            _ => Err(AUTOSCALING_TARGET_MESSAGE.to_string()),
        }
    }
}

/// Worker log format.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_kinds_resolve_with_defaults() {
        let spec_trigger = |t: Trigger| t.kind();
        assert_eq!(spec_trigger(Trigger::default()), Ok(TriggerKind::Default));
        assert_eq!(
            spec_trigger(Trigger {
                available_now: Some(true),
                ..Default::default()
            }),
            Ok(TriggerKind::AvailableNow)
        );
        assert_eq!(
            spec_trigger(Trigger {
                available_now: Some(false),
                once: Some(true),
                ..Default::default()
            }),
            Ok(TriggerKind::Once)
        );
        assert!(
            spec_trigger(Trigger {
                processing_time: Some("10s".into()),
                once: Some(true),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn starting_offsets_parse_spark_json() {
        assert_eq!(
            StartingOffsets::parse("earliest"),
            Ok(StartingOffsets::Earliest)
        );
        let parsed = StartingOffsets::parse(r#"{"t":{"0":23,"1":-2}}"#).expect("parses");
        let StartingOffsets::Specific(map) = parsed else {
            panic!("expected specific offsets")
        };
        assert_eq!(map["t"][&0], 23);
        assert_eq!(map["t"][&1], OFFSET_EARLIEST);
        assert!(
            StartingOffsets::parse(r#"{"t":{"x":1}}"#)
                .expect_err("bad partition")
                .contains("partition \"x\" of topic \"t\"")
        );
        assert!(
            StartingOffsets::parse(r#"{"t":{"0":-3}}"#)
                .expect_err("bad offset")
                .contains("offset -3 for t-0 is invalid")
        );
    }

    #[test]
    fn a_reset_target_parses_times_and_offsets_and_names_what_is_wrong() {
        let reset = |timestamp: Option<&str>, offsets: Option<&str>| OffsetReset {
            id: "r1".into(),
            timestamp: timestamp.map(str::to_string),
            offsets: offsets.map(str::to_string),
        };
        assert_eq!(
            reset(Some("2023-11-14T22:13:20Z"), None).target(),
            Ok(ResetTarget::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            reset(Some("2023-11-14T23:13:20.5+01:00"), None).target(),
            Ok(ResetTarget::Timestamp(1_700_000_000_500))
        );
        let bad = reset(Some("2023-11-14 noon"), None)
            .target()
            .expect_err("bad");
        assert!(
            bad.contains("\"2023-11-14 noon\" is not an RFC 3339 time"),
            "{bad}"
        );
        assert!(
            reset(Some("1969-12-31T00:00:00Z"), None)
                .target()
                .expect_err("before 1970")
                .contains("before 1970")
        );
        assert_eq!(
            reset(None, Some("latest")).target(),
            Ok(ResetTarget::Offsets(StartingOffsets::Latest))
        );
        let Ok(ResetTarget::Offsets(StartingOffsets::Specific(map))) =
            reset(None, Some(r#"{"t":{"1":-2,"0":40}}"#)).target()
        else {
            panic!("specific offsets")
        };
        assert_eq!(map["t"][&0], 40);
        assert_eq!(map["t"][&1], OFFSET_EARLIEST);
        let bad = reset(None, Some(r#"{"t":{"0":-7}}"#))
            .target()
            .expect_err("bad");
        assert!(bad.contains("offset -7 for t-0 is invalid"), "{bad}");
        assert!(
            reset(None, Some("{"))
                .target()
                .expect_err("bad")
                .contains("spec.reset.offsets")
        );
        assert_eq!(
            reset(None, None).target(),
            Err(RESET_ONE_OF_MESSAGE.to_string())
        );
        assert_eq!(
            reset(None, Some("latest")).describe_target(),
            "offsets latest"
        );
    }

    #[test]
    fn delta_intervals_read_as_delta_writes_them() {
        assert_eq!(parse_delta_interval("interval 30 days"), Ok(30 * 86_400));
        assert_eq!(parse_delta_interval("interval 1 week"), Ok(604_800));
        assert_eq!(parse_delta_interval("interval 90 seconds"), Ok(90));
        for bad in [
            "30 days",
            "interval -1 days",
            "interval 1 fortnight",
            "interval 1 day extra",
            "interval  1 day",
        ] {
            let error = parse_delta_interval(bad).expect_err(bad);
            assert!(error.contains("interval 30 days"), "{error}");
        }
    }

    #[test]
    fn event_hubs_endpoint_expands_from_namespace() {
        let mut source = EventHubsSource {
            namespace: "contoso".into(),
            ..Default::default()
        };
        assert_eq!(
            source.bootstrap_server(),
            "contoso.servicebus.windows.net:9093"
        );
        source.namespace = "contoso.servicebus.chinacloudapi.cn".into();
        assert_eq!(
            source.bootstrap_server(),
            "contoso.servicebus.chinacloudapi.cn:9093"
        );
    }
}
