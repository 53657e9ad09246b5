//! Source: the Kafka (or Event Hubs) consumer.
//!
//! Offsets are never left to Kafka: every partition the consumer gets is assigned at the offset
//! the Delta table says comes next (its `txn` for that partition), or, for a partition the query
//! has never written, at the query's starting offset. This happens inside the rebalance callback,
//! so no message is ever fetched from a position the table did not choose.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tributary_crds::{ReadOptions, StreamingIngestion};

use crate::connection::Security;
use crate::error::{Error, Result};
use crate::secrets::{self, SecretString};

/// A topic and partition.
pub type Tp = (String, i32);

/// Timeout of metadata and watermark requests.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// One Kafka record, owned.
#[derive(Clone, Debug)]
pub struct Record {
    /// Shared by every record of the topic: one allocation per topic, not per record.
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    /// 0 = create time, 1 = log append time (Spark's timestampType); -1 when absent.
    pub timestamp_type: i32,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub value: Option<Vec<u8>>,
}

impl Record {
    /// Copies a message out of librdkafka's buffer; `topic` is the message's topic name,
    /// shared.
    pub fn from_message<M: Message>(message: &M, topic: Arc<str>) -> Record {
        use rdkafka::message::Timestamp;
        let (timestamp_ms, timestamp_type) = match message.timestamp() {
            Timestamp::NotAvailable => (None, -1),
            Timestamp::CreateTime(ms) => (Some(ms), 0),
            Timestamp::LogAppendTime(ms) => (Some(ms), 1),
        };
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms,
            timestamp_type,
            key: message.key().map(<[u8]>::to_vec),
            headers,
            value: message.payload().map(<[u8]>::to_vec),
        }
    }
}

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

impl SourceConfig {
    /// Resolves the source of a manifest; `bootstrap_override` replaces its bootstrap servers.
    pub fn from_ingestion(
        ingestion: &StreamingIngestion,
        bootstrap_override: Option<&str>,
    ) -> Result<SourceConfig> {
        let spec = &ingestion.spec;
        let namespace = ingestion.metadata.namespace.as_deref().unwrap_or("default");
        let name = ingestion.metadata.name.as_deref().unwrap_or("ingestion");
        let default_group = format!("tributary-{namespace}-{name}");
        let mut options = BTreeMap::new();
        let mut secret_options = BTreeMap::new();
        let (bootstrap, subscription, read, group_id) = if let Some(kafka) = &spec.source.kafka {
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
            for (option, value) in &kafka.secret_options {
                let field = format!("spec.source.kafka.secretOptions[{option}]");
                secret_options.insert(
                    option.clone(),
                    secrets::resolve(&value.secret_key_ref, &field)?,
                );
            }
            let group = kafka
                .read
                .options
                .get("group.id")
                .cloned()
                .unwrap_or(default_group);
            (
                kafka.bootstrap_servers.clone(),
                subscription,
                kafka.read.clone(),
                group,
            )
        } else if let Some(event_hubs) = &spec.source.event_hubs {
            for (key, value) in EVENT_HUBS_SETTINGS {
                options.insert(key.to_string(), value.to_string());
            }
            options.insert("security.protocol".into(), "SASL_SSL".into());
            options.insert("sasl.mechanism".into(), "PLAIN".into());
            options.insert("sasl.username".into(), "$ConnectionString".into());
            let connection = secrets::resolve(
                &event_hubs.connection_string.secret_key_ref,
                "spec.source.eventHubs.connectionString",
            )?;
            secret_options.insert("sasl.password".into(), connection);
            // The Event Hubs consumer group is the Kafka group id.
            let group = event_hubs
                .read
                .options
                .get("group.id")
                .cloned()
                .or_else(|| event_hubs.consumer_group.clone())
                .unwrap_or(default_group);
            (
                event_hubs.bootstrap_server(),
                Subscription::Topics(vec![event_hubs.event_hub.clone()]),
                event_hubs.read.clone(),
                group,
            )
        } else {
            return Err(Error::Unsupported(
                "spec.source must set kafka or eventHubs".into(),
            ));
        };
        // User options come last but may not undo what Tributary manages (validation refuses
        // those keys already; this keeps the rule even for a manifest that skipped validation).
        for (key, value) in &read.options {
            if tributary_crds::FORBIDDEN_KAFKA_OPTIONS.contains(&key.as_str()) {
                return Err(Error::Unsupported(format!(
                    "option {key} is managed by Tributary and cannot be set in options"
                )));
            }
            options.insert(key.clone(), value.clone());
        }
        let bootstrap = bootstrap_override.map(str::to_string).unwrap_or(bootstrap);
        let description = match &subscription {
            Subscription::Topics(topics) => format!("KafkaV2[Subscribe[{}]]", topics.join(",")),
            Subscription::Pattern(pattern) => format!("KafkaV2[SubscribePattern[{pattern}]]"),
            Subscription::Assign(assign) => {
                let parts: Vec<String> = assign
                    .iter()
                    .flat_map(|(t, ps)| ps.iter().map(move |p| format!("{t}-{p}")))
                    .collect();
                format!("KafkaV2[Assign[{}]]", parts.join(", "))
            }
        };
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
            // librdkafka's default prefetch queue (64 MiB) would be the largest part of the
            // worker's memory; a batch takes its records from here within milliseconds, so a
            // quarter keeps fetching ahead of the batch loop. Overridable in options.
            .set("queued.max.messages.kbytes", "16384")
            // When the batch loop is busy decoding or committing, the queue fills and
            // librdkafka postpones the partition's next fetch by this much (1 s by default):
            // that stall, not parsing or writing, made reading 3x slower than a plain consumer.
            .set("fetch.queue.backoff.ms", "20")
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

/// Where a partition starts: the offset, and the table's txn version it came from (None when
/// the table has never written this partition for this query).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionStart {
    pub offset: i64,
    pub table_version: Option<i64>,
}

/// Looks up the table's txn versions for partitions (the Delta side of [`StartResolver`]).
pub type TableVersions = dyn Fn(&[Tp]) -> Result<BTreeMap<Tp, i64>> + Send + Sync;

/// A partition's (low, high) watermarks, asked of the broker: the first offset still kept and
/// the next offset to be written.
pub fn watermarks<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    tp: &Tp,
    bootstrap: &str,
) -> Result<(i64, i64)> {
    client
        .fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT)
        .map_err(Error::kafka(
            format!("read the offsets of {}-{}", tp.0, tp.1),
            bootstrap,
        ))
}

/// The high watermark librdkafka last saw in a fetch response for a partition, without asking
/// the broker (None before the first fetch of the partition). Planning a batch with this
/// instead of a ListOffsets request per partition keeps the fetching connection free: on it a
/// request waits behind the long-polling fetch, which made planning most of a batch's time.
pub fn cached_high_watermark<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tp: &Tp,
) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.0.as_str()).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the handle is valid while `consumer` lives; librdkafka reads its cached values
    // under its own lock and writes only the two out-pointers, which point at locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.1,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Decides where newly assigned partitions start.
pub struct StartResolver {
    pub table_versions: Box<TableVersions>,
    /// A separate client for offset lookups: on the consumer's own connection a ListOffsets
    /// request waits behind the long-polling Fetch (up to fetch.wait.max.ms per partition).
    pub offsets_client: Arc<BaseConsumer>,
    /// Starting offsets of a new query (resolved numbers, or -2 / -1 for earliest / latest).
    pub initial: BTreeMap<Tp, i64>,
    pub fail_on_data_loss: bool,
    /// The brokers, named in errors.
    pub bootstrap: String,
}

impl StartResolver {
    pub fn resolve(&self, tps: &[Tp]) -> Result<BTreeMap<Tp, PartitionStart>> {
        let versions = (self.table_versions)(tps)?;
        let mut starts = BTreeMap::new();
        for tp in tps {
            let (topic, partition) = (tp.0.as_str(), tp.1);
            let (low, high) = watermarks(&self.offsets_client, tp, &self.bootstrap)?;
            let table_version = versions.get(tp).copied();
            let mut offset = match (table_version, self.initial.get(tp)) {
                (Some(version), _) => version,
                (None, Some(&tributary_crds::OFFSET_LATEST)) => high,
                (None, Some(&tributary_crds::OFFSET_EARLIEST)) | (None, None) => low,
                (None, Some(&offset)) => offset,
            };
            if offset < low {
                if self.fail_on_data_loss {
                    return Err(Error::DataLoss {
                        topic: topic.to_string(),
                        partition,
                        from: offset,
                        to: low,
                    });
                }
                tracing::warn!(
                    topic,
                    partition,
                    from = offset,
                    to = low,
                    "offsets lost to retention are skipped (failOnDataLoss: false)"
                );
                offset = low;
            }
            if offset > high {
                return Err(Error::OffsetBeyondLatest {
                    topic: topic.to_string(),
                    partition,
                    table_offset: offset,
                    latest: high,
                });
            }
            starts.insert(
                tp.clone(),
                PartitionStart {
                    offset,
                    table_version,
                },
            );
        }
        Ok(starts)
    }
}

/// The partitions this worker owns, as the rebalance callbacks leave them.
#[derive(Default)]
pub struct Assignment {
    pub partitions: BTreeMap<Tp, PartitionStart>,
    /// Bumped at every change, so a batch can tell whether its partitions moved meanwhile.
    pub generation: u64,
    /// Partitions revoked since the pipeline last looked.
    pub revoked: Vec<Tp>,
    /// A failure inside a callback, reported by the pipeline.
    pub error: Option<Error>,
}

/// The consumer's context: assigns partitions where the table says.
pub struct SourceContext {
    pub assignment: Arc<Mutex<Assignment>>,
    pub resolver: StartResolver,
    pub security: Security,
}

impl ClientContext for SourceContext {
    /// Refused credentials and an untrusted certificate stop the pipeline (see
    /// crate::connection for why); librdkafka retries anything else, and so does the worker.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        match self
            .security
            .fatal_error(&error, reason, &self.resolver.bootstrap)
        {
            Some(fatal) => self.with_assignment(|a| {
                a.error.get_or_insert(fatal);
            }),
            None => {
                let reason = self.security.redact(reason);
                tracing::warn!(%error, %reason, "Kafka client error; retrying");
            }
        }
    }
}

impl SourceContext {
    fn with_assignment<T>(&self, f: impl FnOnce(&mut Assignment) -> T) -> T {
        let mut guard = match self.assignment.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Assigns partitions at their resolved start (manual `assign`, or inside a rebalance).
    pub fn assign_at_starts(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        tpl: &mut TopicPartitionList,
        incremental: bool,
    ) -> Result<()> {
        let tps: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        let resolved = self.resolver.resolve(&tps);
        let starts = match resolved {
            Ok(starts) => starts,
            Err(error) => {
                // The assignment must still be acknowledged; the pipeline stops on the error.
                let _ = if incremental {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                return Err(error);
            }
        };
        for (tp, start) in &starts {
            tpl.set_partition_offset(&tp.0, tp.1, Offset::Offset(start.offset))
                .map_err(Error::kafka("set a start offset", ""))?;
        }
        let result = if incremental {
            consumer.incremental_assign(tpl)
        } else {
            consumer.assign(tpl)
        };
        result.map_err(Error::kafka("assign partitions", ""))?;
        for (tp, start) in &starts {
            tracing::info!(topic = %tp.0, partition = tp.1, offset = start.offset, from_table = start.table_version.is_some(), "partition assigned");
        }
        self.with_assignment(|a| {
            if !incremental {
                a.partitions.clear();
            }
            a.partitions.extend(starts);
            a.generation += 1;
        });
        Ok(())
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(error) = self.assign_at_starts(consumer, tpl, cooperative) {
                    tracing::error!(%error, "cannot assign partitions");
                    self.with_assignment(|a| a.error = Some(error));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for tp in &revoked {
                    tracing::info!(topic = %tp.0, partition = tp.1, "partition revoked");
                }
                self.with_assignment(|a| {
                    for tp in &revoked {
                        a.partitions.remove(tp);
                    }
                    if !cooperative {
                        a.partitions.clear();
                    }
                    a.revoked.extend(revoked.iter().cloned());
                    a.generation += 1;
                });
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = result {
                    tracing::warn!(%error, "cannot unassign revoked partitions");
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; dropping the assignment");
                self.with_assignment(|a| {
                    let all: Vec<Tp> = a.partitions.keys().cloned().collect();
                    a.revoked.extend(all);
                    a.partitions.clear();
                    a.generation += 1;
                });
                let _ = consumer.unassign();
            }
        }
    }
}

/// Every partition the subscription covers now (for the starting offsets of a new query and
/// the targets of availableNow).
pub fn subscription_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    subscription: &Subscription,
    bootstrap: &str,
) -> Result<Vec<Tp>> {
    let mut tps = Vec::new();
    match subscription {
        Subscription::Topics(topics) => {
            for topic in topics {
                let metadata = consumer
                    .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                    .map_err(Error::kafka(
                        format!("read the metadata of topic {topic}"),
                        bootstrap,
                    ))?;
                let found = metadata.topics().iter().find(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                });
                let Some(found) = found else {
                    return Err(Error::UnknownTopic {
                        topic: topic.clone(),
                        bootstrap: bootstrap.to_string(),
                    });
                };
                tps.extend(found.partitions().iter().map(|p| (topic.clone(), p.id())));
            }
        }
        Subscription::Pattern(pattern) => {
            let regex = regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| Error::Unsupported(format!("subscribePattern {pattern:?}: {e}")))?;
            let metadata = consumer
                .fetch_metadata(None, METADATA_TIMEOUT)
                .map_err(Error::kafka("list topics", bootstrap))?;
            for topic in metadata.topics() {
                if regex.is_match(topic.name()) && topic.error().is_none() {
                    tps.extend(
                        topic
                            .partitions()
                            .iter()
                            .map(|p| (topic.name().to_string(), p.id())),
                    );
                }
            }
        }
        Subscription::Assign(assign) => {
            for (topic, partitions) in assign {
                tps.extend(partitions.iter().map(|p| (topic.clone(), *p)));
            }
        }
    }
    tps.sort();
    Ok(tps)
}

/// librdkafka's form of a pattern: a leading ^ marks a regex; anchored at both ends so a
/// topic must match as a whole, as in Spark.
pub fn librdkafka_pattern(pattern: &str) -> String {
    format!("^({pattern})$")
}

/// Creates the consumer and starts reading: subscribe, or assign at the table's offsets (the
/// `assign` subscription, or `fixed` partitions: a run to completion reads a known set of
/// partitions alone, so it need not join a group and wait out its rebalance delay).
pub fn start_consumer(
    config: &SourceConfig,
    context: SourceContext,
    fixed: Option<&[Tp]>,
) -> Result<BaseConsumer<SourceContext>> {
    let consumer: BaseConsumer<SourceContext> = config
        .client_config()
        .create_with_context(context)
        .map_err(|source| Error::CreateConsumer {
            bootstrap: config.bootstrap.clone(),
            source: Box::new(source),
        })?;
    if let Some(fixed) = fixed {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in fixed {
            tpl.add_partition(topic, *partition);
        }
        let context = consumer.context().clone();
        context.assign_at_starts(&consumer, &mut tpl, false)?;
        return Ok(consumer);
    }
    match &config.subscription {
        Subscription::Topics(topics) => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&topics)
                .map_err(Error::kafka("subscribe", &config.bootstrap))?;
        }
        Subscription::Pattern(pattern) => {
            consumer
                .subscribe(&[&librdkafka_pattern(pattern)])
                .map_err(Error::kafka("subscribe to a pattern", &config.bootstrap))?;
        }
        Subscription::Assign(assign) => {
            let mut tpl = TopicPartitionList::new();
            for (topic, partitions) in assign {
                for partition in partitions {
                    tpl.add_partition(topic, *partition);
                }
            }
            let context = consumer.context().clone();
            context.assign_at_starts(&consumer, &mut tpl, false)?;
        }
    }
    Ok(consumer)
}
