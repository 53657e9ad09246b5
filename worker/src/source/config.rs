//! The source's settings, resolved from the manifest: brokers, consumer group, what is read,
//! and the librdkafka configuration (secret values set here and nowhere else).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use tributary_crds::{
    EventHubsSource, KafkaSource, ReadOptions, StreamingIngestion, librdkafka_option_name,
};

use super::security::Security;
use crate::error::{Error, Result};
use crate::secrets::{self, SecretString};

/// Timeout of metadata and watermark requests.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// What the query reads.
#[derive(Clone, Debug)]
pub enum Subscription {
    Topics(Vec<String>),
    /// A regular expression that must match a whole topic name (as Spark's subscribePattern).
    Pattern(String),
    Assign(BTreeMap<String, Vec<i32>>),
}

/// The consumer's settings, resolved from the manifest (secrets included, never printed).
pub struct SourceConfig {
    pub bootstrap: String,
    pub group_id: String,
    pub subscription: Subscription,
    pub read: ReadOptions,
    /// Spark's source description, e.g. KafkaV2[Subscribe[sensor-readings]].
    pub description: String,
    options: BTreeMap<String, String>,
    secret_options: BTreeMap<String, SecretString>,
    /// How the source authenticates and what it trusts, for connection errors.
    pub security: Security,
}

/// Microsoft's required client settings for the Event Hubs Kafka endpoint. Its request timeout
/// (above 20 s) is socket.timeout.ms for a librdkafka consumer: request.timeout.ms is a producer
/// property that a consumer ignores with a warning.
const EVENT_HUBS_SETTINGS: &[(&str, &str)] = &[
    ("socket.keepalive.enable", "true"),
    ("metadata.max.age.ms", "180000"),
    ("socket.timeout.ms", "60000"),
    ("session.timeout.ms", "30000"),
];

/// What the source's kind (Kafka or Event Hubs) gives the consumer's settings.
struct KindSettings {
    bootstrap: String,
    subscription: Subscription,
    read: ReadOptions,
    group_id: String,
    options: BTreeMap<String, String>,
    secret_options: BTreeMap<String, SecretString>,
}

fn kafka_settings(kafka: &KafkaSource, default_group: String) -> Result<KindSettings> {
    let subscription = if let Some(topics) = &kafka.subscribe {
        Subscription::Topics(topics.clone())
    } else if let Some(pattern) = &kafka.subscribe_pattern {
        Subscription::Pattern(pattern.clone())
    } else if let Some(assign) = &kafka.assign {
        Subscription::Assign(assign.clone())
    } else {
        return Err(Error::Unsupported(
            "spec.source.kafka needs one of subscribe, subscribePattern or assign".into(),
        ));
    };
    let mut secret_options = BTreeMap::new();
    for (option, value) in &kafka.secret_options {
        let field = format!("spec.source.kafka.secretOptions[{option}]");
        secret_options.insert(
            librdkafka_option_name(option).to_string(),
            secrets::resolve(&value.secret_key_ref, &field)?,
        );
    }
    Ok(KindSettings {
        bootstrap: kafka.bootstrap_servers.clone(),
        subscription,
        read: kafka.read.clone(),
        group_id: user_group_id(&kafka.read).unwrap_or(default_group),
        options: BTreeMap::new(),
        secret_options,
    })
}

/// The group id the options set (`group.id`, or Spark's `kafka.group.id`).
fn user_group_id(read: &ReadOptions) -> Option<String> {
    read.options
        .iter()
        .find(|(key, _)| librdkafka_option_name(key) == "group.id")
        .map(|(_, value)| value.clone())
}

/// The consumer group of an ingestion when the options name none: one per ingestion, shared by
/// its workers, `<groupIdPrefix>-<namespace>-<name>` (Spark's groupIdPrefix adds a random id
/// per query instead, which replicas could not share).
fn default_group_id(read: Option<&ReadOptions>, namespace: &str, name: &str) -> String {
    let prefix = read
        .and_then(|r| r.group_id_prefix.as_deref())
        .unwrap_or("tributary");
    format!("{prefix}-{namespace}-{name}")
}

fn event_hubs_settings(
    event_hubs: &EventHubsSource,
    default_group: String,
) -> Result<KindSettings> {
    let mut options: BTreeMap<String, String> = EVENT_HUBS_SETTINGS
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    options.insert("security.protocol".into(), "SASL_SSL".into());
    options.insert("sasl.mechanism".into(), "PLAIN".into());
    options.insert("sasl.username".into(), "$ConnectionString".into());
    let connection = secrets::resolve(
        &event_hubs.connection_string.secret_key_ref,
        "spec.source.eventHubs.connectionString",
    )?;
    Ok(KindSettings {
        bootstrap: event_hubs.bootstrap_server(),
        subscription: Subscription::Topics(vec![event_hubs.event_hub.clone()]),
        read: event_hubs.read.clone(),
        // The Event Hubs consumer group is the Kafka group id.
        group_id: user_group_id(&event_hubs.read)
            .or_else(|| event_hubs.consumer_group.clone())
            .unwrap_or(default_group),
        options,
        secret_options: BTreeMap::from([("sasl.password".to_string(), connection)]),
    })
}

impl Subscription {
    /// Spark's source description, e.g. KafkaV2[Subscribe[sensor-readings]].
    fn describe(&self) -> String {
        match self {
            Subscription::Topics(topics) => format!("KafkaV2[Subscribe[{}]]", topics.join(",")),
            Subscription::Pattern(pattern) => format!("KafkaV2[SubscribePattern[{pattern}]]"),
            Subscription::Assign(assign) => {
                let parts: Vec<String> = assign
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| format!("{t}-{p}")))
                    .collect();
                format!("KafkaV2[Assign[{}]]", parts.join(", "))
            }
        }
    }
}

impl SourceConfig {
    /// Resolves the source of a manifest; `bootstrap_override` replaces its bootstrap servers.
    pub fn from_ingestion(
        ingestion: &StreamingIngestion,
        bootstrap_override: Option<&str>,
    ) -> Result<SourceConfig> {
        let spec = &ingestion.spec;
        let namespace = ingestion.metadata.namespace.as_deref().unwrap_or("default");
        let name = ingestion.metadata.name.as_deref().unwrap_or("ingestion");
        let default_group = default_group_id(spec.source.read_options(), namespace, name);
        let KindSettings {
            bootstrap,
            subscription,
            read,
            group_id,
            mut options,
            secret_options,
        } = match (&spec.source.kafka, &spec.source.event_hubs) {
            (Some(kafka), _) => kafka_settings(kafka, default_group)?,
            (None, Some(event_hubs)) => event_hubs_settings(event_hubs, default_group)?,
            (None, None) => {
                return Err(Error::Unsupported(
                    "spec.source must set kafka or eventHubs".into(),
                ));
            }
        };
        // User options come last but may not undo what Tributary manages (validation refuses
        // those keys already; this keeps the rule even for a manifest that skipped validation).
        // Spark's kafka. prefix is removed: users paste options from Spark code.
        for (key, value) in &read.options {
            let name = librdkafka_option_name(key);
            if tributary_crds::FORBIDDEN_KAFKA_OPTIONS.contains(&name) {
                return Err(Error::Unsupported(format!(
                    "option {key} is managed by Tributary and cannot be set in options"
                )));
            }
            options.insert(name.to_string(), value.clone());
        }
        let bootstrap = bootstrap_override.map(str::to_string).unwrap_or(bootstrap);
        let description = subscription.describe();
        let security = Security::new(ingestion, secret_options.values().cloned().collect());
        Ok(SourceConfig {
            bootstrap,
            group_id,
            subscription,
            read,
            description,
            options,
            secret_options,
            security,
        })
    }

    /// The librdkafka configuration. Secret values are set here and nowhere else.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", &self.group_id)
            .set("client.id", "tributary-worker")
            // Offsets come from the Delta table; the group's committed offsets are only for
            // lag tools, and written by us after each Delta commit.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // An offset that retention deleted under a running consumer must not be skipped
            // silently: librdkafka reports it, and the pipeline re-resolves the partition,
            // which applies failOnDataLoss (see StartResolver::resolve).
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "false")
            // librdkafka's default prefetch queue (64 MiB) and fetch responses (up to 50 MiB,
            // 1 MiB per partition) would be the largest part of the worker's memory, the second
            // growing with the partition count. A batch takes its records from the queue within
            // milliseconds and the next batch is read while the last commits, so 4 MiB of each,
            // whatever the partition count, keeps the reader fed (README, Performance: the same
            // speed, ~50 MiB less at its peak than 16 MiB and librdkafka's default responses).
            // Overridable in options.
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "4194304")
            // When the batch loop is busy decoding or committing, the queue fills and
            // librdkafka postpones the partition's next fetch by this much (1 s by default):
            // that stall, not parsing or writing, would make reading 3x slower than a
            // plain consumer.
            .set("fetch.queue.backoff.ms", "20")
            // A fetch waits for 64 KiB of records (or 100 ms). With librdkafka's 1 byte the
            // broker answers as soon as any partition has a record, so a continuous query at
            // 20k msg/s over 96 partitions sent fetches of every partition back to back and its
            // fetch thread took two thirds of the worker's CPU. With these the CPU per row halves
            // at 24 and 96 partitions, p50 latency moves ~15 ms at 6, and a backlog, which
            // fills 64 KiB at once, is read as fast (README, Performance). Overridable in
            // options.
            .set("fetch.min.bytes", "65536")
            .set("fetch.wait.max.ms", "100")
            // Partitions added to a subscribed topic are found at a metadata refresh (5 min by
            // default); Spark looks at every batch. Overridable in options.
            .set("topic.metadata.refresh.interval.ms", "10000");
        for (key, value) in &self.options {
            config.set(key, value);
        }
        for (key, value) in &self.secret_options {
            config.set(key, value.expose());
        }
        config
    }

    /// Option names for logs: values of secret options are never shown.
    pub fn describe_options(&self) -> String {
        let mut parts: Vec<String> = self
            .options
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.extend(self.secret_options.keys().map(|k| format!("{k}=<secret>")));
        parts.join(", ")
    }
}

/// librdkafka's form of a pattern: a leading ^ marks a regex; anchored at both ends so a
/// topic must match as a whole, as in Spark.
pub fn librdkafka_pattern(pattern: &str) -> String {
    format!("^({pattern})$")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingestion(source: &str) -> StreamingIngestion {
        let yaml = format!(
            "apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata: {{name: readings, namespace: iot}}
spec:
  source: {source}
  format:
    json:
      schema:
        - {{name: device_id, type: string}}
  sink:
    delta: {{uri: /lake/readings, volume: {{claimName: lake, mountPath: /lake}}}}
  checkpoint: {{location: /checkpoints/readings, volume: {{size: 1Gi}}}}
"
        );
        tributary_crds::manifest::load_str(&yaml, "test.yaml")
            .expect("a valid manifest")
            .remove(0)
    }

    #[test]
    fn fetches_wait_for_64_kib_unless_the_options_say_otherwise() {
        let defaults = SourceConfig::from_ingestion(
            &ingestion("{kafka: {bootstrapServers: 'kafka:9092', subscribe: [t]}}"),
            None,
        )
        .expect("config")
        .client_config();
        assert_eq!(defaults.get("fetch.min.bytes"), Some("65536"));
        assert_eq!(defaults.get("fetch.wait.max.ms"), Some("100"));

        let chosen = SourceConfig::from_ingestion(
            &ingestion(
                "{kafka: {bootstrapServers: 'kafka:9092', subscribe: [t], options: {kafka.fetch.min.bytes: '1', fetch.wait.max.ms: '500'}}}",
            ),
            None,
        )
        .expect("config")
        .client_config();
        assert_eq!(chosen.get("fetch.min.bytes"), Some("1"));
        assert_eq!(chosen.get("fetch.wait.max.ms"), Some("500"));
    }

    #[test]
    fn kafka_settings_keep_spark_names_and_the_default_group() {
        let config = SourceConfig::from_ingestion(
            &ingestion("{kafka: {bootstrapServers: 'kafka:9092', subscribePattern: 'sensor-.*'}}"),
            Some("127.0.0.1:9092"),
        )
        .expect("config");
        assert_eq!(config.bootstrap, "127.0.0.1:9092", "the override wins");
        assert_eq!(config.group_id, "tributary-iot-readings");
        assert_eq!(config.description, "KafkaV2[SubscribePattern[sensor-.*]]");

        let assigned = SourceConfig::from_ingestion(
            &ingestion(
                "{kafka: {bootstrapServers: 'kafka:9092', assign: {t: [0, 1]}, options: {group.id: mine, fetch.min.bytes: '1'}}}",
            ),
            None,
        )
        .expect("config");
        assert_eq!(assigned.bootstrap, "kafka:9092");
        let pasted = SourceConfig::from_ingestion(
            &ingestion(
                "{kafka: {bootstrapServers: 'kafka:9092', subscribe: [t], groupIdPrefix: etl, options: {kafka.fetch.min.bytes: '1', kafka.client.rack: r1}}}",
            ),
            None,
        )
        .expect("config");
        assert_eq!(pasted.group_id, "etl-iot-readings", "groupIdPrefix");
        let described = pasted.describe_options();
        assert!(
            described.contains("fetch.min.bytes=1") && described.contains("client.rack=r1"),
            "Spark's kafka. prefix is removed: {described}"
        );
        assert!(!described.contains("kafka."), "{described}");
        let grouped = SourceConfig::from_ingestion(
            &ingestion(
                "{kafka: {bootstrapServers: 'kafka:9092', subscribe: [t], groupIdPrefix: etl, options: {kafka.group.id: mine}}}",
            ),
            None,
        )
        .expect("config");
        assert_eq!(
            grouped.group_id, "mine",
            "group.id wins over groupIdPrefix, as in Spark"
        );
        assert_eq!(assigned.group_id, "mine");
        assert_eq!(assigned.description, "KafkaV2[Assign[t-0, t-1]]");
        assert!(
            assigned.describe_options().contains("fetch.min.bytes=1"),
            "{}",
            assigned.describe_options()
        );
    }
}
