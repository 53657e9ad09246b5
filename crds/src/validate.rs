//! The one validation of a StreamingIngestion, used by the worker (before it touches a broker)
//! and by the operator (before it touches the API).
//!
//! It repeats the CRD's CEL rules, with the same messages, because a standalone worker reads a
//! manifest that no API server has seen, and adds what CEL cannot check: regex syntax, Spark type
//! strings, URI schemes, Secret references, cron syntax, column references. Every problem is
//! reported at once, each with its field path.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use regex::Regex;

use crate::datatype::DataType;
use crate::limits::*;
use crate::secrets::{
    SECRET_STORAGE_OPTIONS, is_secret_option, secret_option_remedy, secret_references,
};
use crate::spec::*;

/// One problem, at one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `spec.format.json.schema[2].type`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one StreamingIngestion; never empty.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Credential settings of the Java Kafka client that librdkafka does not have.
const JAVA_ONLY_SECRET_OPTIONS: &[&str] = &[
    "sasl.jaas.config",
    "ssl.truststore.password",
    "ssl.keystore.key",
];

/// Longest ingestion name: it names a CronJob, whose Jobs and pods append their own suffixes.
pub const MAX_NAME_LENGTH: usize = 52;

/// Validates a whole StreamingIngestion (its name and its spec).
pub fn validate(ingestion: &crate::StreamingIngestion) -> Result<(), ValidationErrors> {
    let mut errors = Errors::default();
    match ingestion.metadata.name.as_deref() {
        None | Some("") => errors.push("metadata.name", "is required"),
        Some(name) => {
            if !is_dns_label(name) || name.len() > MAX_NAME_LENGTH {
                errors.push(
                    "metadata.name",
                    format!(
                        "\"{name}\" must be at most {MAX_NAME_LENGTH} lower-case letters, digits and '-', starting and ending with a letter or digit"
                    ),
                );
            }
        }
    }
    validate_spec_into(&ingestion.spec, &mut errors);
    validate_manifest_size(ingestion, &mut errors);
    errors.finish()
}

/// The manifest a worker reads must fit the ConfigMap the operator hands it over in.
fn validate_manifest_size(ingestion: &crate::StreamingIngestion, errors: &mut Errors) {
    let name = ingestion.metadata.name.as_deref().unwrap_or_default();
    let namespace = ingestion.metadata.namespace.as_deref().unwrap_or("default");
    match crate::manifest::worker_manifest(ingestion, name, namespace) {
        Ok(text) if text.len() > crate::manifest::MAX_MANIFEST_BYTES => errors.push(
            "spec",
            format!(
                "is {} bytes as the workers' manifest; {}",
                text.len(),
                crate::manifest::MANIFEST_BOUND_REASON
            ),
        ),
        Ok(_) => {}
        Err(error) => errors.push("spec", format!("cannot be written as YAML: {error}")),
    }
}

/// Validates a spec alone.
pub fn validate_spec(spec: &StreamingIngestionSpec) -> Result<(), ValidationErrors> {
    let mut errors = Errors::default();
    validate_spec_into(spec, &mut errors);
    errors.finish()
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn finish(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

fn validate_spec_into(spec: &StreamingIngestionSpec, errors: &mut Errors) {
    validate_source(&spec.source, errors);
    let declared = validate_format(spec, errors);
    let columns = validate_transform(spec, declared, errors);
    validate_sink(spec, columns.as_ref(), errors);
    validate_checkpoint(spec, errors);
    validate_trigger(spec, errors);
    for (path, reference) in secret_references(spec) {
        validate_secret_ref(&path, reference, errors);
    }
    if let Some(worker) = &spec.worker {
        if let Some(image) = &worker.image
            && image.trim().is_empty()
        {
            errors.push("spec.worker.image", "must not be empty when set");
        }
        if let Some(port) = worker.metrics_port {
            check_range(
                "spec.worker.metricsPort",
                i64::from(port),
                i64::from(MIN_METRICS_PORT),
                i64::from(MAX_METRICS_PORT),
                errors,
            );
        }
        if let Some(seconds) = worker.termination_grace_period_seconds {
            check_range(
                "spec.worker.terminationGracePeriodSeconds",
                seconds,
                MIN_TERMINATION_GRACE_SECONDS,
                MAX_TERMINATION_GRACE_SECONDS,
                errors,
            );
        }
        validate_extra_volumes(worker, errors);
    }
    if let Some(runs) = &spec.runs {
        validate_runs(spec, runs, errors);
    }
    validate_scaling(spec, errors);
    if let Some(reset) = &spec.reset {
        validate_reset(spec, reset, errors);
    }
}

/// A reset's id and target; named topics and partitions must be ones the spec reads, where the
/// spec says which (partitions of subscribed topics are checked against the broker when the
/// reset is applied).
fn validate_reset(spec: &StreamingIngestionSpec, reset: &OffsetReset, errors: &mut Errors) {
    let id_ok = !reset.id.is_empty()
        && reset.id.len() <= 63
        && reset
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && reset.id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && reset.id.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !id_ok {
        errors.push("spec.reset.id", RESET_ID_MESSAGE);
    }
    let field = if reset.timestamp.is_some() {
        "spec.reset.timestamp"
    } else {
        "spec.reset.offsets"
    };
    let map = match reset.target() {
        Err(message) if reset.timestamp.is_some() == reset.offsets.is_some() => {
            return errors.push("spec.reset", message);
        }
        Err(message) => return errors.push(field, message),
        Ok(ResetTarget::Offsets(StartingOffsets::Specific(map))) => map,
        Ok(_) => return,
    };
    if map.is_empty() || map.values().any(BTreeMap::is_empty) {
        errors.push(
            field,
            "must name at least one partition of each topic it names",
        );
    }
    let Some(kafka) = &spec.source.kafka else {
        if let Some(hub) = &spec.source.event_hubs {
            for topic in map.keys().filter(|t| **t != hub.event_hub) {
                errors.push(
                    field,
                    format!("names topic \"{topic}\", which the query does not read (it reads the event hub \"{}\")", hub.event_hub),
                );
            }
        }
        return;
    };
    for (topic, partitions) in &map {
        if let Some(subscribed) = &kafka.subscribe
            && !subscribed.contains(topic)
        {
            errors.push(
                field,
                format!("names topic \"{topic}\", which the query does not read"),
            );
        }
        if let Some(assign) = &kafka.assign {
            match assign.get(topic) {
                None => errors.push(
                    field,
                    format!("names topic \"{topic}\", which the query does not read"),
                ),
                Some(assigned) => {
                    for partition in partitions.keys().filter(|p| !assigned.contains(p)) {
                        errors.push(
                            field,
                            format!("names partition {partition} of topic \"{topic}\", which the query does not read (assign lists {assigned:?})"),
                        );
                    }
                }
            }
        }
    }
}

/// The Delta table properties the spec sets.
fn validate_table_properties(delta: &DeltaSink, errors: &mut Errors) {
    if let Some(text) = &delta.log_retention_duration
        && let Err(message) = parse_delta_interval(text)
    {
        errors.push("spec.sink.delta.logRetentionDuration", message);
    }
    if let Some(text) = &delta.deleted_file_retention_duration {
        match parse_delta_interval(text) {
            Err(message) => errors.push("spec.sink.delta.deletedFileRetentionDuration", message),
            Ok(seconds)
                if seconds < u64::from(DEFAULT_VACUUM_RETAIN_HOURS.unsigned_abs()) * 3600
                    && delta
                        .vacuum
                        .as_ref()
                        .is_none_or(Vacuum::retention_duration_check) =>
            {
                errors.push(
                    "spec.sink.delta.deletedFileRetentionDuration",
                    DELETED_FILE_RETENTION_MESSAGE,
                )
            }
            Ok(_) => {}
        }
    }
}

fn validate_vacuum(vacuum: &Vacuum, errors: &mut Errors) {
    check_range(
        "spec.sink.delta.vacuum.intervalHours",
        i64::from(vacuum.interval_hours),
        1,
        i64::from(MAX_VACUUM_INTERVAL_HOURS),
        errors,
    );
    if let Some(hours) = vacuum.retain_hours {
        check_range(
            "spec.sink.delta.vacuum.retainHours",
            i64::from(hours),
            0,
            i64::from(MAX_VACUUM_RETAIN_HOURS),
            errors,
        );
    }
    if vacuum.retain_hours() < DEFAULT_VACUUM_RETAIN_HOURS && vacuum.retention_duration_check() {
        errors.push(
            "spec.sink.delta.vacuum.retainHours",
            VACUUM_RETENTION_CHECK_MESSAGE,
        );
    }
}

/// Autoscaling and the restart limit belong to continuous workers; autoscaling replaces
/// spec.replicas.
fn validate_scaling(spec: &StreamingIngestionSpec, errors: &mut Errors) {
    let continuous = spec
        .trigger_kind()
        .is_ok_and(|trigger| !trigger.runs_to_completion());
    if let Some(restarts) = spec.max_restarts {
        if !continuous {
            errors.push("spec.maxRestarts", MAX_RESTARTS_NEEDS_CONTINUOUS);
        }
        check_range(
            "spec.maxRestarts",
            i64::from(restarts),
            1,
            i64::from(MAX_RESTARTS),
            errors,
        );
    }
    let Some(autoscaling) = &spec.autoscaling else {
        return;
    };
    if !continuous {
        errors.push("spec.autoscaling", AUTOSCALING_NEEDS_CONTINUOUS);
    }
    if spec.replicas.is_some() {
        errors.push("spec.replicas", AUTOSCALING_EXCLUDES_REPLICAS);
    }
    let max = i64::from(MAX_REPLICAS);
    if let Some(min) = autoscaling.min_replicas {
        check_range(
            "spec.autoscaling.minReplicas",
            i64::from(min),
            1,
            max,
            errors,
        );
    }
    let upper = i64::from(autoscaling.max_replicas);
    check_range("spec.autoscaling.maxReplicas", upper, 1, max, errors);
    if i64::from(autoscaling.min_replicas()) > upper {
        errors.push(
            "spec.autoscaling.minReplicas",
            format!(
                "spec.autoscaling.minReplicas must not be more than maxReplicas ({} > {upper})",
                autoscaling.min_replicas()
            ),
        );
    }
    match autoscaling.target() {
        Ok(AutoscalingTarget::LagPerWorker(lag)) => check_range(
            "spec.autoscaling.targetLagPerWorker",
            lag,
            1,
            MAX_OFFSET,
            errors,
        ),
        Ok(AutoscalingTarget::SecondsBehind(seconds)) => check_range(
            "spec.autoscaling.targetSecondsBehind",
            seconds,
            1,
            MAX_TARGET_SECONDS_BEHIND,
            errors,
        ),
        Err(message) => errors.push("spec.autoscaling", message),
    }
    if let Some(delay) = autoscaling.scale_down_delay_seconds {
        check_range(
            "spec.autoscaling.scaleDownDelaySeconds",
            delay,
            0,
            MAX_SCALE_DOWN_DELAY_SECONDS,
            errors,
        );
    }
}

/// Extra volumes may not take the names of the operator's own, and every mount must name one
/// of them: the API server would refuse the workload later, with a message about a Deployment
/// the user never wrote.
fn validate_extra_volumes(worker: &WorkerSpec, errors: &mut Errors) {
    use crate::pod::{RESERVED_VOLUMES, SECRET_VOLUME_PREFIX};
    for (index, volume) in worker.volumes.iter().enumerate() {
        if RESERVED_VOLUMES.contains(&volume.name.as_str())
            || volume.name.starts_with(SECRET_VOLUME_PREFIX)
        {
            errors.push(
                format!("spec.worker.volumes[{index}].name"),
                format!(
                    "\"{}\" is the name of a volume the operator adds ({} and {SECRET_VOLUME_PREFIX}N); choose another",
                    volume.name,
                    RESERVED_VOLUMES.join(", ")
                ),
            );
        }
    }
    for (index, mount) in worker.volume_mounts.iter().enumerate() {
        if !worker.volumes.iter().any(|v| v.name == mount.name) {
            errors.push(
                format!("spec.worker.volumeMounts[{index}].name"),
                format!("\"{}\" is not one of spec.worker.volumes", mount.name),
            );
        }
    }
}

fn validate_runs(spec: &StreamingIngestionSpec, runs: &RunPolicy, errors: &mut Errors) {
    if spec
        .trigger_kind()
        .is_ok_and(|trigger| !trigger.runs_to_completion())
    {
        errors.push("spec.runs", RUNS_NEED_A_RUN_TO_COMPLETION);
    }
    for (field, value, max) in [
        ("backoffLimit", runs.backoff_limit, MAX_BACKOFF_LIMIT),
        (
            "successfulHistory",
            runs.successful_history,
            MAX_RUN_HISTORY,
        ),
        ("failedHistory", runs.failed_history, MAX_RUN_HISTORY),
    ] {
        if let Some(value) = value {
            check_range(
                &format!("spec.runs.{field}"),
                i64::from(value),
                0,
                i64::from(max),
                errors,
            );
        }
    }
}

/// Pushes an error when `value` lies outside `min..=max`, in the words of the schema walk.
fn check_range(path: &str, value: i64, min: i64, max: i64, errors: &mut Errors) {
    if value < min {
        errors.push(path, format!("must be at least {min}, not {value}"));
    } else if value > max {
        errors.push(path, format!("must be at most {max}, not {value}"));
    }
}

// ---- source -------------------------------------------------------------------------------

fn validate_source(source: &Source, errors: &mut Errors) {
    match (&source.kafka, &source.event_hubs) {
        (Some(kafka), None) => validate_kafka(kafka, errors),
        (None, Some(event_hubs)) => validate_event_hubs(event_hubs, errors),
        _ => errors.push(
            "spec.source",
            "spec.source must set exactly one of kafka or eventHubs",
        ),
    }
}

fn validate_kafka(kafka: &KafkaSource, errors: &mut Errors) {
    let path = "spec.source.kafka";
    validate_bootstrap_servers(
        &format!("{path}.bootstrapServers"),
        &kafka.bootstrap_servers,
        errors,
    );

    let modes = [
        kafka.subscribe.is_some(),
        kafka.subscribe_pattern.is_some(),
        kafka.assign.is_some(),
    ];
    if modes.iter().filter(|set| **set).count() != 1 {
        errors.push(
            path,
            "spec.source.kafka must set exactly one of subscribe, subscribePattern or assign",
        );
    }
    let mut topics: BTreeSet<&str> = BTreeSet::new();
    if let Some(subscribe) = &kafka.subscribe {
        if subscribe.is_empty() {
            errors.push(format!("{path}.subscribe"), "must name at least one topic");
        }
        for (i, topic) in subscribe.iter().enumerate() {
            validate_topic(&format!("{path}.subscribe[{i}]"), topic, errors);
            topics.insert(topic);
        }
    }
    if let Some(pattern) = &kafka.subscribe_pattern
        && let Err(error) = Regex::new(pattern)
    {
        errors.push(
            format!("{path}.subscribePattern"),
            format!(
                "is not a valid regular expression: {}",
                first_line(&error.to_string())
            ),
        );
    }
    if let Some(assign) = &kafka.assign {
        if assign.is_empty() {
            errors.push(format!("{path}.assign"), "must name at least one topic");
        }
        for (topic, partitions) in assign {
            let at = format!("{path}.assign[{topic}]");
            validate_topic(&at, topic, errors);
            topics.insert(topic);
            if partitions.is_empty() {
                errors.push(&at, "must list at least one partition");
            }
            if let Some(bad) = partitions.iter().find(|p| **p < 0) {
                errors.push(&at, format!("partition {bad} is negative"));
            }
        }
    }
    let known_topics = (kafka.subscribe_pattern.is_none()).then_some(&topics);
    validate_read_options(path, &kafka.read, known_topics, errors);
    if kafka.secret_options.len() > MAX_OPTIONS {
        errors.push(
            format!("{path}.secretOptions"),
            format!(
                "sets {} options; at most {MAX_OPTIONS} are allowed",
                kafka.secret_options.len()
            ),
        );
    }
    for option in kafka.secret_options.keys() {
        let name = librdkafka_option_name(option);
        if FORBIDDEN_KAFKA_OPTIONS.contains(&name) {
            errors.push(
                format!("{path}.secretOptions[{option}]"),
                "is managed by Tributary and cannot be set",
            );
        }
        let also_in_options = kafka
            .read
            .options
            .keys()
            .any(|other| librdkafka_option_name(other) == name);
        let twice_here = name != option && kafka.secret_options.contains_key(name);
        if also_in_options || twice_here {
            errors.push(
                format!("{path}.secretOptions[{option}]"),
                format!("{name} is set more than once (options, secretOptions, with or without Spark's kafka. prefix): set it in one place"),
            );
        }
        if JAVA_ONLY_SECRET_OPTIONS.contains(&name) {
            errors.push(
                format!("{path}.secretOptions[{option}]"),
                "is a setting of the Java Kafka client, which librdkafka does not know: use sasl.username in options and sasl.password here (or ssl.key.pem for a client key)",
            );
        }
    }
}

fn validate_event_hubs(event_hubs: &EventHubsSource, errors: &mut Errors) {
    let path = "spec.source.eventHubs";
    let host = event_hubs
        .namespace
        .trim_end_matches(".servicebus.windows.net");
    if !host.split('.').all(is_dns_label_loose) {
        errors.push(
            format!("{path}.namespace"),
            format!(
                "\"{}\" is not an Event Hubs namespace name or host",
                event_hubs.namespace
            ),
        );
    }
    validate_topic(&format!("{path}.eventHub"), &event_hubs.event_hub, errors);
    let topics = BTreeSet::from([event_hubs.event_hub.as_str()]);
    validate_read_options(path, &event_hubs.read, Some(&topics), errors);
    for option in event_hubs.read.options.keys() {
        if [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.mechanisms",
        ]
        .contains(&librdkafka_option_name(option))
        {
            errors.push(
                format!("{path}.options[{option}]"),
                "is set by Tributary for Event Hubs (SASL_SSL, PLAIN, $ConnectionString) and cannot be changed",
            );
        }
    }
}

fn validate_read_options(
    path: &str,
    read: &ReadOptions,
    known_topics: Option<&BTreeSet<&str>>,
    errors: &mut Errors,
) {
    match read.starting_offsets() {
        Err(message) => errors.push(format!("{path}.startingOffsets"), message),
        Ok(StartingOffsets::Specific(offsets)) => {
            if let Some(known) = known_topics {
                for topic in offsets.keys() {
                    if !known.contains(topic.as_str()) {
                        errors.push(
                            format!("{path}.startingOffsets"),
                            format!("names topic \"{topic}\", which the query does not read"),
                        );
                    }
                }
            }
        }
        Ok(_) => {}
    }
    if let Some(max) = read.max_offsets_per_trigger {
        check_range(
            &format!("{path}.maxOffsetsPerTrigger"),
            max,
            1,
            MAX_OFFSET,
            errors,
        );
    }
    validate_spark_read_options(path, read, known_topics, errors);
    if read.options.len() > MAX_OPTIONS {
        errors.push(
            format!("{path}.options"),
            format!(
                "sets {} options; at most {MAX_OPTIONS} are allowed",
                read.options.len()
            ),
        );
    }
    for (option, value) in &read.options {
        let at = format!("{path}.options[{option}]");
        let name = librdkafka_option_name(option);
        if FORBIDDEN_KAFKA_OPTIONS.contains(&name) {
            errors.push(at, FORBIDDEN_OPTIONS_MESSAGE);
        } else if is_secret_option(option) {
            errors.push(
                &at,
                secret_option_remedy(&format!("{path}.options"), option),
            );
        } else if name != option && read.options.contains_key(name) {
            errors.push(
                at,
                format!("sets {name} again, which options also set without Spark's kafka. prefix: set it once"),
            );
        } else if value.is_empty() {
            errors.push(at, "has an empty value");
        }
    }
}

/// Spark's source options beyond startingOffsets and maxOffsetsPerTrigger: where a new query
/// starts by time, where a run ends, the batch minimum, the group id prefix.
fn validate_spark_read_options(
    path: &str,
    read: &ReadOptions,
    known_topics: Option<&BTreeSet<&str>>,
    errors: &mut Errors,
) {
    let starts = [
        read.starting_offsets.is_some(),
        read.starting_offsets_by_timestamp.is_some(),
        read.starting_timestamp.is_some(),
    ];
    if starts.iter().filter(|set| **set).count() > 1 {
        errors.push(path, READ_START_MESSAGE);
    }
    if read.starting_offsets_by_timestamp_strategy.is_some()
        && read.starting_offsets_by_timestamp.is_none()
        && read.starting_timestamp.is_none()
    {
        errors.push(
            format!("{path}.startingOffsetsByTimestampStrategy"),
            READ_STRATEGY_MESSAGE,
        );
    }
    if let Some(timestamp) = read.starting_timestamp {
        check_range(
            &format!("{path}.startingTimestamp"),
            timestamp,
            0,
            MAX_OFFSET,
            errors,
        );
    }
    let mut named_topics = Vec::new();
    if read.starting_offsets_by_timestamp.is_some() {
        match read.start() {
            Ok(QueryStart::ByTimestamp(map)) => named_topics.push((
                "startingOffsetsByTimestamp",
                map.keys().cloned().collect::<Vec<_>>(),
            )),
            Ok(_) => {}
            Err(message) => errors.push(format!("{path}.startingOffsetsByTimestamp"), message),
        }
    }
    match read.ending_offsets() {
        Ok(Some(map)) => named_topics.push(("endingOffsets", map.keys().cloned().collect())),
        Ok(None) => {}
        Err(message) => errors.push(format!("{path}.endingOffsets"), message),
    }
    if let Some(known) = known_topics {
        for (field, topics) in named_topics {
            for topic in topics {
                if !known.contains(topic.as_str()) {
                    errors.push(
                        format!("{path}.{field}"),
                        format!("names topic \"{topic}\", which the query does not read"),
                    );
                }
            }
        }
    }
    if let Some(min) = read.min_offsets_per_trigger {
        check_range(
            &format!("{path}.minOffsetsPerTrigger"),
            min,
            1,
            MAX_OFFSET,
            errors,
        );
        if read.max_offsets_per_trigger.is_some_and(|max| min > max) {
            errors.push(format!("{path}.minOffsetsPerTrigger"), READ_MIN_MAX_MESSAGE);
        }
    }
    if read.max_trigger_delay.is_some() {
        if read.min_offsets_per_trigger.is_none() {
            errors.push(format!("{path}.maxTriggerDelay"), READ_DELAY_MESSAGE);
        }
        if let Err(message) = read.max_trigger_delay() {
            errors.push(format!("{path}.maxTriggerDelay"), message);
        }
    }
    if let Some(prefix) = &read.group_id_prefix
        && (prefix.is_empty()
            || prefix.len() > 200
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        errors.push(
            format!("{path}.groupIdPrefix"),
            "groupIdPrefix may hold letters, digits, '.', '_' and '-' only (1 to 200)",
        );
    }
}

fn validate_bootstrap_servers(path: &str, servers: &str, errors: &mut Errors) {
    if servers.trim().is_empty() {
        errors.push(path, "must list at least one host:port");
        return;
    }
    for server in servers.split(',').map(str::trim) {
        let port = server
            .rsplit_once(':')
            .filter(|(host, _)| !host.is_empty())
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .filter(|port| *port > 0);
        if port.is_none() {
            errors.push(path, format!("\"{server}\" is not host:port"));
        }
    }
}

fn validate_topic(path: &str, topic: &str, errors: &mut Errors) {
    let valid = (1..=249).contains(&topic.len())
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !valid {
        errors.push(
            path,
            format!(
                "\"{topic}\" is not a valid topic name (1 to 249 of letters, digits, '.', '_', '-')"
            ),
        );
    }
}

// ---- format -------------------------------------------------------------------------------

/// A column of the table and its type, for partitionBy checks.
type Columns = BTreeMap<String, Option<DataType>>;

fn validate_format(spec: &StreamingIngestionSpec, errors: &mut Errors) -> Columns {
    let mut columns: Columns = BTreeMap::new();
    match (&spec.format.json, &spec.format.raw) {
        (Some(json), None) => validate_json_schema(json, &mut columns, errors),
        (None, Some(raw)) => {
            for (name, raw_type) in [
                (RAW_VALUE_COLUMN, raw.value_type()),
                (RAW_KEY_COLUMN, raw.key_type()),
            ] {
                let data_type = match raw_type {
                    RawType::Binary => DataType::Binary,
                    RawType::String => DataType::String,
                };
                columns.insert(name.to_string(), Some(data_type));
            }
        }
        _ => errors.push("spec.format", FORMAT_ONE_OF_MESSAGE),
    }
    validate_metadata_columns(spec, &mut columns, errors);
    if let Some(json) = &spec.format.json {
        validate_json_options(spec, json, errors);
    }
    columns
}

/// The declared columns of a JSON format.
fn validate_json_schema(json: &JsonFormat, columns: &mut Columns, errors: &mut Errors) {
    let path = "spec.format.json";
    if json.schema.is_empty() {
        errors.push(format!("{path}.schema"), "must declare at least one field");
    }
    for (i, field) in json.schema.iter().enumerate() {
        let at = format!("{path}.schema[{i}]");
        if field.name.is_empty() {
            errors.push(format!("{at}.name"), "must not be empty");
        } else if field.name.chars().any(|c| " ,;{}()\n\t=".contains(c)) {
            errors.push(
                format!("{at}.name"),
                "schema field names must not contain spaces or any of ,;{}()= (Delta column names)",
            );
        }
        if field.name.eq_ignore_ascii_case(RESCUED_DATA_COLUMN) {
            errors.push(
                format!("{at}.name"),
                format!("\"{RESCUED_DATA_COLUMN}\" is reserved for input that does not parse"),
            );
        }
        let lower = field.name.to_ascii_lowercase();
        if columns.contains_key(&lower) {
            errors.push(
                format!("{at}.name"),
                format!(
                    "\"{}\" appears twice (column names are case-insensitive)",
                    field.name
                ),
            );
        }
        let data_type = match DataType::parse(&field.data_type) {
            Ok(data_type) => Some(data_type),
            Err(error) => {
                errors.push(format!("{at}.type"), error.to_string());
                None
            }
        };
        columns.insert(lower, data_type);
    }
}

/// The Kafka columns kept beside the data (metadataColumns, includeHeaders).
fn validate_metadata_columns(
    spec: &StreamingIngestionSpec,
    columns: &mut Columns,
    errors: &mut Errors,
) {
    let mut seen = BTreeSet::new();
    for (i, column) in spec.metadata_columns.iter().enumerate() {
        let at = format!("spec.metadataColumns[{i}]");
        let name = column.column_name();
        if !seen.insert(*column) {
            errors.push(&at, format!("{name} is listed twice"));
            continue;
        }
        if columns.contains_key(name) {
            errors.push(
                &at,
                format!("column {name} is also a schema field: rename the field"),
            );
        }
        columns.insert(name.to_string(), Some(metadata_column_type(*column)));
    }

    if spec
        .source
        .read_options()
        .is_some_and(ReadOptions::include_headers)
    {
        let name = MetadataColumn::Headers.column_name();
        if columns.contains_key(name) && !seen.contains(&MetadataColumn::Headers) {
            errors.push(
                "spec.source",
                format!("includeHeaders adds column {name}, which is also a schema field: rename the field"),
            );
        }
        columns.insert(
            name.to_string(),
            Some(metadata_column_type(MetadataColumn::Headers)),
        );
    }
}

/// The options of a JSON format: date and time patterns, the zone, the bad-input policy.
fn validate_json_options(spec: &StreamingIngestionSpec, json: &JsonFormat, errors: &mut Errors) {
    let path = "spec.format.json";
    for (field, pattern) in [
        ("timestampFormat", &json.timestamp_format),
        ("timestampNTZFormat", &json.timestamp_ntz_format),
        ("dateFormat", &json.date_format),
    ] {
        if let Some(pattern) = pattern
            && let Err(message) = crate::datetime::Pattern::compile(pattern)
        {
            errors.push(
                format!("{path}.{field}"),
                format!("the pattern \"{pattern}\" {message}"),
            );
        }
    }
    if let Some(zone) = &json.time_zone
        && let Err(message) = crate::datetime::Zone::parse(zone)
    {
        errors.push(format!("{path}.timeZone"), message);
    }

    match (json.on_error(), &json.dead_letter) {
        (OnError::DeadLetter, None) => errors.push(
            path,
            "onError: deadLetter needs format.json.deadLetter.uri, the table bad records are written to",
        ),
        (OnError::Rescue | OnError::Fail, Some(_)) => errors.push(
            format!("{path}.deadLetter"),
            "format.json.deadLetter is only used with onError: deadLetter",
        ),
        (OnError::DeadLetter, Some(dead_letter)) => {
            validate_location(&format!("{path}.deadLetter.uri"), &dead_letter.uri, errors);
            if let Some(uri) = &spec.sink.delta.uri
                && same_location(uri, &dead_letter.uri)
            {
                errors.push(
                    format!("{path}.deadLetter.uri"),
                    "must differ from spec.sink.delta.uri",
                );
            }
        }
        _ => {}
    }
}

fn metadata_column_type(column: MetadataColumn) -> DataType {
    match column {
        MetadataColumn::Topic | MetadataColumn::TimestampType => DataType::String,
        MetadataColumn::Partition => DataType::Int,
        MetadataColumn::Offset => DataType::Long,
        MetadataColumn::Timestamp => DataType::Timestamp,
        MetadataColumn::Key => DataType::Binary,
        MetadataColumn::Headers => DataType::Array(Box::new(DataType::Struct(vec![
            crate::datatype::StructField {
                name: "key".into(),
                data_type: DataType::String,
            },
            crate::datatype::StructField {
                name: "value".into(),
                data_type: DataType::Binary,
            },
        ]))),
    }
}

// ---- transform ----------------------------------------------------------------------------

/// The columns the table is written with: the declared ones, or the query's (with the types of
/// those it passes through unchanged). None when the query is refused (its error says why) or
/// its text does not name every column: column references are then not checked against it.
fn validate_transform(
    spec: &StreamingIngestionSpec,
    declared: Columns,
    errors: &mut Errors,
) -> Option<Columns> {
    let Some(transform) = &spec.transform else {
        return Some(declared);
    };
    let path = "spec.transform.sql";
    if transform.sql.trim().is_empty() {
        errors.push(path, "must be a SELECT ... FROM input query");
        return None;
    }
    if transform.sql.len() > MAX_TRANSFORM_SQL_BYTES {
        errors.push(
            path,
            format!("must be at most {MAX_TRANSFORM_SQL_BYTES} bytes"),
        );
        return None;
    }
    let rescue = spec
        .format
        .json()
        .is_some_and(|json| json.on_error() == OnError::Rescue);
    let input = crate::transform::input_columns(&spec.format, &spec.metadata_columns());
    match crate::transform::check(&transform.sql, &input, rescue) {
        // A column passed through unchanged keeps its declared type; the types of the others
        // are the worker's planner's to know (it checks them before it reads anything).
        Ok(columns) => columns.map(|columns| {
            columns
                .into_iter()
                .map(|column| {
                    let data_type = column
                        .from
                        .and_then(|from| declared.get(&from.to_ascii_lowercase()).cloned())
                        .flatten();
                    (column.name.to_ascii_lowercase(), data_type)
                })
                .collect()
        }),
        Err(error) => {
            errors.push(path, error.to_string());
            None
        }
    }
}

// ---- sink ---------------------------------------------------------------------------------

/// outputMode, mergeKeys and deleteOnTombstone, against the written columns (when known).
fn validate_output_mode(
    spec: &StreamingIngestionSpec,
    columns: Option<&Columns>,
    errors: &mut Errors,
) {
    let path = "spec.sink.delta";
    let delta = &spec.sink.delta;
    let mode = delta.output_mode.unwrap_or_default();
    let tombstones = delta.delete_on_tombstone.unwrap_or(false);
    match mode {
        OutputMode::Complete => errors.push(format!("{path}.outputMode"), COMPLETE_REFUSED),
        OutputMode::Update if delta.merge_keys.is_empty() => errors.push(
            path,
            "outputMode update needs spec.sink.delta.mergeKeys: the columns that identify a row",
        ),
        OutputMode::Append if !delta.merge_keys.is_empty() => errors.push(
            path,
            "spec.sink.delta.mergeKeys is only used with outputMode update",
        ),
        _ => {}
    }
    if tombstones && mode != OutputMode::Update {
        errors.push(
            path,
            "spec.sink.delta.deleteOnTombstone is only used with outputMode update",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, key) in delta.merge_keys.iter().enumerate() {
        let at = format!("{path}.mergeKeys[{i}]");
        let lower = key.to_ascii_lowercase();
        if !seen.insert(lower.clone()) {
            errors.push(&at, format!("\"{key}\" is listed twice"));
            continue;
        }
        let Some(columns) = columns else { continue };
        match columns.get(&lower) {
            None => errors.push(
                &at,
                format!(
                    "\"{key}\" is not a column the table is written with (a schema field, a metadata column, or a column of spec.transform.sql)"
                ),
            ),
            Some(Some(
                data_type @ (DataType::Array(_) | DataType::Map(..) | DataType::Struct(_)),
            )) => errors.push(
                &at,
                format!("cannot merge on \"{key}\" of type {data_type}: use a column of a primitive type"),
            ),
            Some(_) => {}
        }
        if tombstones && spec.transform.is_none() {
            let metadata = spec
                .metadata_columns
                .iter()
                .any(|c| c.column_name().eq_ignore_ascii_case(key));
            if !metadata {
                errors.push(
                    &at,
                    format!(
                        "a tombstone has no value, so with deleteOnTombstone \"{key}\" must be a metadata column (e.g. kafka_key, with metadataColumns: [key]) or a column spec.transform.sql computes from them"
                    ),
                );
            }
        }
    }
}

fn validate_sink(spec: &StreamingIngestionSpec, columns: Option<&Columns>, errors: &mut Errors) {
    let path = "spec.sink.delta";
    let delta = &spec.sink.delta;
    if let Some(vacuum) = &delta.vacuum {
        validate_vacuum(vacuum, errors);
    }
    validate_table_properties(delta, errors);
    match (&delta.uri, &delta.table) {
        (Some(uri), None) => {
            validate_location(&format!("{path}.uri"), uri, errors);
            if is_path(uri) && delta.volume.is_none() {
                errors.push(
                    format!("{path}.uri"),
                    "spec.sink.delta.uri is a path, so spec.sink.delta.volume must name the claim that holds it (claimName) or ask for one (size)",
                );
            }
            if let Some(volume) = &delta.volume {
                validate_volume(
                    &format!("{path}.volume"),
                    volume,
                    "spec.sink.delta.uri",
                    uri,
                    errors,
                );
            }
        }
        (None, Some(table)) => {
            if !is_three_part_name(table) {
                errors.push(
                    format!("{path}.table"),
                    format!("\"{table}\" is not a Unity Catalog name catalog.schema.table"),
                );
            }
            if delta.unity_catalog.is_none() {
                errors.push(
                    path,
                    "spec.sink.delta.table is a Unity Catalog name and needs spec.sink.delta.unityCatalog (the catalog's endpoint and credentials)",
                );
            }
        }
        (None, None) => errors.push(
            path,
            "spec.sink.delta needs uri (the table's location) or table (a Unity Catalog name catalog.schema.table)",
        ),
        (Some(_), Some(_)) => errors.push(
            path,
            "spec.sink.delta.uri and spec.sink.delta.table both name the table: set uri for a location or table for a Unity Catalog name, not both",
        ),
    }
    validate_unity_catalog(delta, errors);
    validate_output_mode(spec, columns, errors);
    let mut seen = BTreeSet::new();
    for (i, column) in delta.partition_by.iter().enumerate() {
        let at = format!("{path}.partitionBy[{i}]");
        let lower = column.to_ascii_lowercase();
        if !seen.insert(lower.clone()) {
            errors.push(&at, format!("\"{column}\" is listed twice"));
            continue;
        }
        let Some(columns) = columns else { continue };
        match columns.get(&lower) {
            None if spec.transform.is_some() => errors.push(
                &at,
                format!("\"{column}\" is not a column of spec.transform.sql"),
            ),
            None => errors.push(
                &at,
                format!("\"{column}\" is not a schema field or metadata column"),
            ),
            Some(Some(data_type)) if !data_type.is_partitionable() => errors.push(
                &at,
                format!("cannot partition by \"{column}\" of type {data_type}: use a string, integer, decimal, date, timestamp or boolean column"),
            ),
            Some(_) => {}
        }
    }
    if let Some(columns) = columns
        && !columns.is_empty()
        && !delta.partition_by.is_empty()
        && seen.len() >= columns.len()
    {
        errors.push(
            format!("{path}.partitionBy"),
            "cannot partition by every column: a table needs at least one data column",
        );
    }
    validate_storage_options(
        path,
        &delta.storage_options,
        &delta.secret_storage_options,
        errors,
    );
    if let Some(size) = delta.target_file_size {
        check_range(
            &format!("{path}.targetFileSize"),
            size,
            MIN_TARGET_FILE_SIZE,
            MAX_TARGET_FILE_SIZE,
            errors,
        );
    }
    if let Some(interval) = delta.checkpoint_interval {
        check_range(
            &format!("{path}.checkpointInterval"),
            i64::from(interval),
            i64::from(MIN_CHECKPOINT_INTERVAL),
            i64::from(MAX_CHECKPOINT_INTERVAL),
            errors,
        );
    }
}

fn validate_storage_options(
    path: &str,
    plain: &BTreeMap<String, String>,
    secret: &BTreeMap<String, SecretValueSource>,
    errors: &mut Errors,
) {
    for key in plain.keys() {
        if SECRET_STORAGE_OPTIONS.contains(&key.to_ascii_lowercase().as_str()) {
            errors.push(
                format!("{path}.storageOptions[{key}]"),
                "is a secret: move it to secretStorageOptions, which reads it from a Secret",
            );
        }
        if secret.contains_key(key) {
            errors.push(
                format!("{path}.secretStorageOptions[{key}]"),
                "is also set in storageOptions: set it in one place",
            );
        }
    }
}

// ---- checkpoint ---------------------------------------------------------------------------

fn validate_checkpoint(spec: &StreamingIngestionSpec, errors: &mut Errors) {
    let path = "spec.checkpoint";
    let checkpoint = &spec.checkpoint;
    validate_location(&format!("{path}.location"), &checkpoint.location, errors);
    if is_path(&checkpoint.location) && checkpoint.volume.is_none() {
        errors.push(
            path,
            "spec.checkpoint.location is a path, so spec.checkpoint.volume must name the claim that holds it (claimName) or ask for one (size)",
        );
    }
    if let Some(volume) = &checkpoint.volume {
        validate_volume(
            &format!("{path}.volume"),
            volume,
            "spec.checkpoint.location",
            &checkpoint.location,
            errors,
        );
    }
    if let Some(uri) = &spec.sink.delta.uri
        && (same_location(uri, &checkpoint.location) || is_inside(&checkpoint.location, uri))
    {
        errors.push(
            format!("{path}.location"),
            "must not be the table's location or inside it",
        );
    }
    validate_storage_options(
        path,
        &checkpoint.storage_options,
        &checkpoint.secret_storage_options,
        errors,
    );
    if let Some(spark) = &checkpoint.from_spark {
        validate_spark_checkpoint(spec, spark, errors);
    }
    if let Some(query_id) = &checkpoint.query_id {
        if !is_query_id(query_id) {
            errors.push(format!("{path}.queryId"), QUERY_ID_MESSAGE);
        }
        if checkpoint.from_spark.is_some() {
            errors.push(path, CHECKPOINT_START_MESSAGE);
        }
    }
}

fn validate_spark_checkpoint(
    spec: &StreamingIngestionSpec,
    spark: &SparkCheckpointSource,
    errors: &mut Errors,
) {
    let path = "spec.checkpoint.fromSpark";
    match location_kind(&spark.location) {
        Ok(LocationKind::Path) => {}
        Ok(LocationKind::Azure) => {
            if spark.volume.is_some() {
                errors.push(
                    format!("{path}.volume"),
                    "is for a path: spec.checkpoint.fromSpark.location is a URL, read with spec.checkpoint's storage options (else the sink's); remove the volume",
                );
            }
        }
        Ok(LocationKind::File) | Err(_) => {
            errors.push(
                format!("{path}.location"),
                SPARK_CHECKPOINT_LOCATION_MESSAGE,
            );
            return;
        }
    }
    match &spark.volume {
        _ if !is_path(&spark.location) => {}
        Some(volume) if volume.claim_name.is_some() => validate_volume(
            &format!("{path}.volume"),
            volume,
            "spec.checkpoint.fromSpark.location",
            &spark.location,
            errors,
        ),
        Some(_) => errors.push(
            format!("{path}.volume"),
            "must name the existing claim that holds the Spark checkpoint (claimName): a claim the operator creates would be empty",
        ),
        None => errors.push(
            path,
            "spec.checkpoint.fromSpark.location is a path, so spec.checkpoint.fromSpark.volume must name the claim that holds it (claimName)",
        ),
    }
    if same_location(&spark.location, &spec.checkpoint.location)
        || is_inside(&spark.location, &spec.checkpoint.location)
        || is_inside(&spec.checkpoint.location, &spark.location)
    {
        errors.push(
            format!("{path}.location"),
            "must be the Spark query's own checkpointLocation, apart from spec.checkpoint.location",
        );
    }
    if let Some(seconds) = spark.quiet_seconds {
        check_range(
            &format!("{path}.quietSeconds"),
            seconds,
            0,
            MAX_SPARK_QUIET_SECONDS,
            errors,
        );
    }
}

/// Checks a volume and that `location` (the field `location_field`) lies on it.
fn validate_volume(
    path: &str,
    volume: &VolumeSource,
    location_field: &str,
    location: &str,
    errors: &mut Errors,
) {
    match (&volume.claim_name, &volume.size) {
        (Some(claim), None) => {
            if !is_dns_subdomain(claim) {
                errors.push(
                    format!("{path}.claimName"),
                    format!("\"{claim}\" is not a valid claim name"),
                );
            }
        }
        (None, Some(size)) => {
            if !is_quantity(size) {
                errors.push(
                    format!("{path}.size"),
                    format!("\"{size}\" is not a Kubernetes quantity such as 1Gi"),
                );
            }
        }
        _ => errors.push(
            path,
            "volume needs exactly one of claimName (an existing claim) or size (a claim the operator creates)",
        ),
    }
    if !is_path(location) {
        errors.push(
            path,
            "a volume holds a path location; this location is a URL, so remove the volume",
        );
    }
    if let Some(mount) = &volume.mount_path {
        if !mount.starts_with('/') {
            errors.push(format!("{path}.mountPath"), "must be an absolute path");
        } else if !(same_location(mount, location) || is_inside(location, mount)) {
            errors.push(
                format!("{path}.mountPath"),
                format!(
                    "{location_field} must be under {path}.mountPath (\"{location}\" is not under \"{mount}\")"
                ),
            );
        }
    }
}

// ---- trigger and schedule -----------------------------------------------------------------

fn validate_trigger(spec: &StreamingIngestionSpec, errors: &mut Errors) {
    let kind = match spec.trigger_kind() {
        Ok(kind) => Some(kind),
        Err(message) => {
            let at = match &spec.trigger {
                Some(Trigger {
                    processing_time: Some(_),
                    available_now: None | Some(false),
                    once: None | Some(false),
                }) => "spec.trigger.processingTime",
                _ => "spec.trigger",
            };
            errors.push(at, message);
            None
        }
    };
    let runs_to_completion = kind.is_some_and(TriggerKind::runs_to_completion);
    if let Some(schedule) = &spec.schedule {
        if kind != Some(TriggerKind::AvailableNow) {
            errors.push(
                "spec.schedule",
                "spec.schedule runs the ingestion as a CronJob and needs spec.trigger: {availableNow: true}",
            );
        }
        if let Err(message) = validate_cron(schedule) {
            errors.push("spec.schedule", message);
        }
    }
    if kind.is_some()
        && !runs_to_completion
        && spec
            .source
            .read_options()
            .is_some_and(|read| read.ending_offsets.is_some())
    {
        let source = if spec.source.kafka.is_some() {
            "kafka"
        } else {
            "eventHubs"
        };
        errors.push(
            format!("spec.source.{source}.endingOffsets"),
            ENDING_OFFSETS_MESSAGE,
        );
    }
    if runs_to_completion && spec.replicas() > 1 {
        errors.push(
            "spec.replicas",
            "spec.replicas must be 0 or 1 with trigger availableNow or once: a run to completion is a single worker",
        );
    }
    if let Some(replicas) = spec.replicas {
        check_range(
            "spec.replicas",
            i64::from(replicas),
            0,
            i64::from(MAX_REPLICAS),
            errors,
        );
    }
}

/// Checks a Kubernetes CronJob schedule: five fields or a macro.
fn validate_cron(schedule: &str) -> Result<(), String> {
    const MACROS: &[&str] = &[
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    let text = schedule.trim();
    if text.starts_with('@') {
        return if MACROS.contains(&text) {
            Ok(())
        } else {
            Err(format!(
                "\"{text}\" is not a schedule macro (use one of {})",
                MACROS.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "\"{text}\" has {} fields; a schedule has five: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    }
    const MONTHS: &[&str] = &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let specs: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day of month", 1, 31, &[]),
        ("month", 1, 12, MONTHS),
        ("day of week", 0, 7, DAYS),
    ];
    for (field, (name, min, max, names)) in fields.iter().zip(specs) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step
                && step.parse::<u32>().map_or(true, |s| s == 0)
            {
                return Err(format!(
                    "\"{part}\" has an invalid step in the {name} field"
                ));
            }
            if range == "*" || (range == "?" && (name == "day of month" || name == "day of week")) {
                continue;
            }
            let value_ok = |value: &str| {
                value.parse::<u32>().is_ok_and(|v| v >= min && v <= max)
                    || names.contains(&value.to_ascii_uppercase().as_str())
            };
            let ok = match range.split_once('-') {
                Some((from, to)) => value_ok(from) && value_ok(to),
                None => value_ok(range),
            };
            if !ok {
                return Err(format!(
                    "\"{part}\" is not valid in the {name} field ({min}-{max})"
                ));
            }
        }
    }
    Ok(())
}

// ---- shared checks ------------------------------------------------------------------------

fn validate_secret_ref(path: &str, reference: &SecretKeyRef, errors: &mut Errors) {
    if !is_dns_subdomain(&reference.name) {
        errors.push(
            format!("{path}.secretKeyRef.name"),
            format!("\"{}\" is not a valid Secret name", reference.name),
        );
    }
    let key_ok = !reference.key.is_empty()
        && reference.key.len() <= 253
        && reference
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if !key_ok {
        errors.push(
            format!("{path}.secretKeyRef.key"),
            format!("\"{}\" is not a valid Secret key", reference.key),
        );
    }
}

/// Where a table or checkpoint lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationKind {
    /// An absolute path (on a volume, or the local disk when standalone).
    Path,
    /// A file:// URL.
    File,
    /// Azure Data Lake Storage / Blob: abfss://, abfs://, az://, azure://.
    Azure,
}

/// Schemes this build can read and write.
pub const SUPPORTED_SCHEMES: &str =
    "an absolute path, file://, abfss://, abfs://, az:// or azure://";

/// Classifies a table or checkpoint location.
pub fn location_kind(location: &str) -> Result<LocationKind, String> {
    if location.starts_with('/') {
        return Ok(LocationKind::Path);
    }
    let Some((scheme, rest)) = location.split_once("://") else {
        return Err(format!(
            "\"{location}\" is neither an absolute path nor a URL (use {SUPPORTED_SCHEMES})"
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" if rest.starts_with('/') => Ok(LocationKind::File),
        "file" => Err(format!("\"{location}\" must be file:///absolute/path")),
        "abfss" | "abfs" => {
            let container_ok = rest
                .split_once('@')
                .is_some_and(|(container, host)| !container.is_empty() && host.contains('.'));
            if container_ok {
                Ok(LocationKind::Azure)
            } else {
                Err(format!(
                    "\"{location}\" must look like {scheme}://container@account.dfs.core.windows.net/path"
                ))
            }
        }
        "az" | "azure" if !rest.is_empty() && !rest.starts_with('/') => Ok(LocationKind::Azure),
        "az" | "azure" => Err(format!(
            "\"{location}\" must look like {scheme}://container/path"
        )),
        "s3" | "s3a" | "gs" | "gcs" | "hdfs" => Err(format!(
            "{scheme}:// is not supported by this build of Tributary (use {SUPPORTED_SCHEMES})"
        )),
        other => Err(format!(
            "unknown scheme \"{other}://\" (use {SUPPORTED_SCHEMES})"
        )),
    }
}

fn validate_location(path: &str, location: &str, errors: &mut Errors) {
    if let Err(message) = location_kind(location) {
        errors.push(path, message);
    }
}

fn is_path(location: &str) -> bool {
    location.starts_with('/')
}

fn normalise(location: &str) -> &str {
    location.trim_end_matches('/')
}

fn same_location(a: &str, b: &str) -> bool {
    normalise(a) == normalise(b)
}

/// Whether `inner` lies strictly below `outer`.
fn is_inside(inner: &str, outer: &str) -> bool {
    let outer = normalise(outer);
    normalise(inner)
        .strip_prefix(outer)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Like a DNS label but case-insensitive (Event Hubs namespaces allow upper case).
fn is_dns_label_loose(name: &str) -> bool {
    is_dns_label(&name.to_ascii_lowercase())
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn is_three_part_name(table: &str) -> bool {
    let parts: Vec<&str> = table.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .trim_matches('`')
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A Kubernetes quantity as used for storage: a decimal number and an optional suffix.
fn is_quantity(size: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| size.strip_suffix(suffix))
        .unwrap_or(size);
    let mut parts = number.splitn(2, '.');
    let whole_ok = parts
        .next()
        .is_some_and(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_digit()));
    let fraction_ok = parts
        .next()
        .is_none_or(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit()));
    whole_ok && fraction_ok
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The catalog connection of a table given by name.
fn validate_unity_catalog(delta: &DeltaSink, errors: &mut Errors) {
    let Some(catalog) = &delta.unity_catalog else {
        return;
    };
    let path = "spec.sink.delta.unityCatalog";
    if delta.table.is_none() {
        errors.push(
            path,
            "spec.sink.delta.unityCatalog resolves spec.sink.delta.table and is only used with it",
        );
    }
    let is_http_url = |url: &str| url.starts_with("https://") || url.starts_with("http://");
    if !is_http_url(&catalog.endpoint) {
        errors.push(
            format!("{path}.endpoint"),
            format!("\"{}\" is not an http(s) URL", catalog.endpoint),
        );
    }
    if catalog.token.is_some() == catalog.oauth.is_some() {
        errors.push(
            path,
            "spec.sink.delta.unityCatalog needs exactly one of token (a personal access token) or oauth (a service principal's client id and secret)",
        );
    }
    if let Some(endpoint) = catalog
        .oauth
        .as_ref()
        .and_then(|oauth| oauth.token_endpoint.as_deref())
        && !is_http_url(endpoint)
    {
        errors.push(
            format!("{path}.oauth.tokenEndpoint"),
            format!("\"{endpoint}\" is not an http(s) URL"),
        );
    }
    if let Some(root) = &catalog.storage_root {
        validate_location(&format!("{path}.storageRoot"), root, errors);
        if catalog.table_must_exist == Some(true) {
            errors.push(
                path,
                "spec.sink.delta.unityCatalog.storageRoot is where an absent table is created, and tableMustExist says never to create one: set one of them",
            );
        }
    }
}
