//! Offset queries to the brokers: partitions of the subscription, watermarks, the starting
//! offsets of a new query and the targets of a run to completion. Asked on a client of their
//! own ([`metadata_client`]): on the consumer's connection a ListOffsets request waits behind the
//! long-polling Fetch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{info, warn};
use tributary_crds::{QueryStart, StartingOffsets, TimestampStrategy};

use super::config::{METADATA_TIMEOUT, SourceConfig, Subscription};
use crate::error::{Error, Result};
use crate::partition::{OffsetMap, TopicPartition, to_partition_offsets};

/// A client for metadata and offset lookups, outside the consumer group.
pub fn metadata_client(source: &SourceConfig) -> Result<BaseConsumer> {
    let mut config = source.client_config();
    config.set("group.id", format!("{}-metadata", source.group_id));
    config.create().map_err(|e| Error::CreateConsumer {
        bootstrap: source.bootstrap.clone(),
        source: Box::new(e),
    })
}

/// How long a watermark query is retried while the partition has no reachable leader (a
/// broker died and the controller is electing another; the client's metadata is stale).
const LEADER_CHANGE_GRACE: Duration = Duration::from_secs(30);

/// A partition's (low, high) watermarks, asked of the broker: the first offset still kept and
/// the next offset to be written. Failures that a leader change explains are retried for
/// [`LEADER_CHANGE_GRACE`]; an unknown topic or partition is reported at once.
pub fn watermarks<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    tp: &TopicPartition,
    bootstrap: &str,
) -> Result<(i64, i64)> {
    let deadline = Instant::now() + LEADER_CHANGE_GRACE;
    loop {
        match client.fetch_watermarks(&tp.topic, tp.partition, METADATA_TIMEOUT) {
            Ok(watermarks) => return Ok(watermarks),
            Err(error) if retriable(&error) && Instant::now() < deadline => {
                warn!(%tp, %error, "cannot read the partition's offsets yet (a leader change?); retrying");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(error) => {
                return Err(Error::kafka(format!("read the offsets of {tp}"), bootstrap)(error));
            }
        }
    }
}

/// Whether a failed offset query may succeed once the partition has a leader again.
fn retriable(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    !matches!(
        error.rdkafka_error_code(),
        Some(
            Code::UnknownTopicOrPartition
                | Code::UnknownTopic
                | Code::UnknownPartition
                | Code::UnknownTopicId
                | Code::TopicAuthorizationFailed
                | Code::ClusterAuthorizationFailed
                | Code::Authentication
                | Code::SaslAuthenticationFailed
                | Code::Fatal
        )
    )
}

/// The high watermark librdkafka last saw in a fetch response for a partition, without asking
/// the broker (None before the first fetch of the partition). Planning a batch with this
/// instead of a ListOffsets request per partition keeps the fetching connection free: on it a
/// request waits behind the long-polling fetch, which would make planning most of a batch's
/// time.
pub fn cached_high_watermark<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    tp: &TopicPartition,
) -> Option<i64> {
    let topic = std::ffi::CString::new(tp.topic.as_str()).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the handle is valid while `consumer` lives; librdkafka reads its cached values
    // under its own lock and writes only the two out-pointers, which point at locals.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            tp.partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Every partition the subscription covers now (for the starting offsets of a new query and
/// the targets of availableNow).
pub fn subscription_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    subscription: &Subscription,
    bootstrap: &str,
) -> Result<Vec<TopicPartition>> {
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
                tps.extend(
                    found
                        .partitions()
                        .iter()
                        .map(|p| TopicPartition::new(topic.clone(), p.id())),
                );
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
                            .map(|p| TopicPartition::new(topic.name(), p.id())),
                    );
                }
            }
        }
        Subscription::Assign(assign) => {
            for (topic, partitions) in assign {
                tps.extend(
                    partitions
                        .iter()
                        .map(|p| TopicPartition::new(topic.clone(), *p)),
                );
            }
        }
    }
    tps.sort();
    Ok(tps)
}

/// The latest offset (high watermark) of each partition.
///
/// Asked as one ListOffsets request per leader, by Kafka's "latest" time (-1): a watermark
/// query per partition is a round trip each (two requests): 8-53 ms for six partitions on one
/// machine, against 2-4 ms for the one request. The answer is the same one: both requests go
/// out at the client's isolation.level (read_committed answers the last stable offset).
/// Partitions the batched request cannot answer (a leader change, an unknown partition) are
/// asked one by one, whose retries and errors name the partition.
pub fn latest_offsets<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    tps: &[TopicPartition],
    bootstrap: &str,
) -> Result<OffsetMap> {
    // A failed batched request is not an error yet: the per-partition queries below retry or
    // report it with the partition's name.
    let mut latest = latest_in_one_request(client, tps).unwrap_or_default();
    for tp in tps {
        if !latest.contains_key(tp) {
            latest.insert(tp.clone(), watermarks(client, tp, bootstrap)?.1);
        }
    }
    Ok(latest)
}

/// The latest offsets the brokers answer to one ListOffsets request by time -1 (per leader);
/// partitions answered with an error are left out.
fn latest_in_one_request<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    tps: &[TopicPartition],
) -> std::result::Result<OffsetMap, KafkaError> {
    let mut request = TopicPartitionList::with_capacity(tps.len());
    for tp in tps {
        request.add_partition_offset(&tp.topic, tp.partition, Offset::End)?;
    }
    let answer = client.offsets_for_times(request, METADATA_TIMEOUT)?;
    Ok(answer
        .elements()
        .iter()
        .filter_map(|element| match (element.error(), element.offset()) {
            (Ok(()), Offset::Offset(offset)) => Some((
                TopicPartition::new(element.topic(), element.partition()),
                offset,
            )),
            _ => None,
        })
        .collect())
}

/// The latest offset of every partition the subscription covers now: what a `once` run reads.
pub fn latest_of_subscription(client: &BaseConsumer, source: &SourceConfig) -> Result<OffsetMap> {
    let tps = subscription_partitions(client, &source.subscription, &source.bootstrap)?;
    latest_offsets(client, &tps, &source.bootstrap)
}

/// startingOffsets of a new query for the partitions `tps` of its subscription, as numbers where
/// Spark would pin them (latest is read now; earliest stays symbolic so that retention never
/// turns it into data loss). startingTimestamp and startingOffsetsByTimestamp are looked up
/// now with Kafka's offsetsForTimes.
pub fn resolve_starting_offsets(
    client: &BaseConsumer,
    source: &SourceConfig,
    tps: Vec<TopicPartition>,
) -> Result<OffsetMap> {
    let start = source
        .read
        .start()
        .map_err(|e| Error::Unsupported(format!("startingOffsets: {e}")))?;
    let mut offsets = OffsetMap::new();
    match start {
        QueryStart::Offsets(StartingOffsets::Earliest) => {
            for tp in tps {
                offsets.insert(tp, tributary_crds::OFFSET_EARLIEST);
            }
        }
        QueryStart::Offsets(StartingOffsets::Latest) => {
            offsets = latest_offsets(client, &tps, &source.bootstrap)?;
        }
        QueryStart::Offsets(StartingOffsets::Specific(specific)) => {
            check_specific_partitions("startingOffsets", &specific, &tps)?;
            for tp in tps {
                let wanted = specific
                    .get(&tp.topic)
                    .and_then(|p| p.get(&tp.partition))
                    .copied()
                    .unwrap_or(tributary_crds::OFFSET_EARLIEST);
                let offset = if wanted == tributary_crds::OFFSET_LATEST {
                    latest_offsets(client, std::slice::from_ref(&tp), &source.bootstrap)?
                        .get(&tp)
                        .copied()
                        .unwrap_or(wanted)
                } else {
                    wanted
                };
                offsets.insert(tp, offset);
            }
        }
        QueryStart::Timestamp(timestamp) => {
            let times: BTreeMap<TopicPartition, i64> =
                tps.iter().map(|tp| (tp.clone(), timestamp)).collect();
            offsets = offsets_for_times(client, source, "startingTimestamp", &times)?;
        }
        QueryStart::ByTimestamp(by_partition) => {
            check_specific_partitions("startingOffsetsByTimestamp", &by_partition, &tps)?;
            let times: BTreeMap<TopicPartition, i64> = tps
                .iter()
                .filter_map(|tp| {
                    by_partition
                        .get(&tp.topic)
                        .and_then(|p| p.get(&tp.partition))
                        .map(|t| (tp.clone(), *t))
                })
                .collect();
            offsets = offsets_for_times(client, source, "startingOffsetsByTimestamp", &times)?;
        }
    }
    info!(offsets = ?to_partition_offsets(&offsets), "starting offsets of the new query");
    Ok(offsets)
}

/// Kafka's offsetsForTimes (ListOffsets by time): for each partition, the first offset whose
/// record timestamp is at or after its epoch milliseconds, or None when it has no such record
/// (the broker answers the end). `what` says in errors whose times they are.
pub(super) fn offsets_at_times(
    client: &BaseConsumer,
    source: &SourceConfig,
    what: &str,
    times: &BTreeMap<TopicPartition, i64>,
) -> Result<BTreeMap<TopicPartition, Option<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for (tp, timestamp) in times {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*timestamp))
            .map_err(Error::kafka(
                format!("ask the offset at a time of {tp}"),
                "",
            ))?;
    }
    let found = client
        .offsets_for_times(tpl, METADATA_TIMEOUT)
        .map_err(Error::kafka(
            format!("read the offsets at {what}"),
            &source.bootstrap,
        ))?;
    let mut offsets = BTreeMap::new();
    for element in found.elements() {
        let tp = TopicPartition::new(element.topic(), element.partition());
        if let Err(error) = element.error() {
            return Err(Error::Kafka {
                action: format!("read the offset at a time of {tp}"),
                bootstrap: source.bootstrap.clone(),
                source: Box::new(error),
            });
        }
        let offset = match element.offset() {
            Offset::Offset(offset) if offset >= 0 => Some(offset),
            _ => None,
        };
        offsets.insert(tp, offset);
    }
    Ok(offsets)
}

/// The first offset of each partition whose record timestamp is at or after the given epoch
/// milliseconds (Kafka's ListOffsets by time, as Spark's offsetsForTimes). A partition with no
/// such record follows startingOffsetsByTimestampStrategy: an error naming the partitions, or
/// its latest offset.
fn offsets_for_times(
    client: &BaseConsumer,
    source: &SourceConfig,
    option: &'static str,
    times: &BTreeMap<TopicPartition, i64>,
) -> Result<OffsetMap> {
    let mut offsets = OffsetMap::new();
    let mut none_after = Vec::new();
    let what = format!("the times of {option}");
    for (tp, found) in offsets_at_times(client, source, &what, times)? {
        match found {
            Some(offset) => {
                offsets.insert(tp, offset);
            }
            None => none_after.push(tp),
        }
    }
    if !none_after.is_empty() {
        match source.read.timestamp_strategy() {
            TimestampStrategy::Error => {
                let timestamps: BTreeSet<i64> = none_after
                    .iter()
                    .filter_map(|tp| times.get(tp).copied())
                    .collect();
                return Err(Error::NoRecordAfterTimestamp {
                    option,
                    partitions: none_after
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    timestamp: timestamps
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            TimestampStrategy::Latest => {
                info!(partitions = ?none_after.iter().map(ToString::to_string).collect::<Vec<_>>(), "no record at or after the starting time: these partitions start at their latest offset (startingOffsetsByTimestampStrategy: latest)");
                offsets.extend(latest_offsets(client, &none_after, &source.bootstrap)?);
            }
        }
    }
    Ok(offsets)
}

/// Per-partition startingOffsets must name exactly the partitions the query reads, as Spark's
/// Kafka source requires: an entry for a partition that does not exist is a typo or a topic
/// that changed, and a partition left out would silently start somewhere the user did not say.
fn check_specific_partitions(
    option: &str,
    specific: &BTreeMap<String, BTreeMap<i32, i64>>,
    tps: &[TopicPartition],
) -> Result<()> {
    let specified: BTreeSet<TopicPartition> = specific
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions
                .keys()
                .map(move |partition| TopicPartition::new(topic.clone(), *partition))
        })
        .collect();
    let read: BTreeSet<TopicPartition> = tps.iter().cloned().collect();
    let unknown: Vec<String> = specified
        .difference(&read)
        .map(|tp| tp.to_string())
        .collect();
    let missing: Vec<String> = read
        .difference(&specified)
        .map(|tp| tp.to_string())
        .collect();
    if unknown.is_empty() && missing.is_empty() {
        return Ok(());
    }
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        problems.push(format!(
            "it names {} that the query does not read (no such partition, or a topic outside the subscription)",
            unknown.join(", ")
        ));
    }
    if !missing.is_empty() {
        problems.push(format!("it leaves out {}", missing.join(", ")));
    }
    Err(Error::Unsupported(format!(
        "{option} must give {} for every partition the query reads, and only those{}, as Spark's Kafka source requires: {}",
        match option {
            "startingOffsetsByTimestamp" => "a time",
            _ => "an offset",
        },
        match option {
            "startingOffsets" => " (-2 for earliest, -1 for latest)",
            "endingOffsets" => " (-1 for latest)",
            _ => "",
        },
        problems.join("; ")
    )))
}

/// The end offsets of an availableNow run.
#[derive(Debug, PartialEq, Eq)]
pub enum RunTargets {
    /// Those of an unfinished earlier run: a restarted Job ends where the first attempt would
    /// have.
    Resumed(OffsetMap),
    /// The latest offsets now, for a new run; to be saved before the run reads.
    Planned(OffsetMap),
}

impl RunTargets {
    pub fn into_offsets(self) -> OffsetMap {
        match self {
            RunTargets::Resumed(offsets) | RunTargets::Planned(offsets) => offsets,
        }
    }
}

/// The targets of this availableNow run: `unfinished` (the targets of an earlier run that did
/// not reach them) when there is one, else the latest offsets now.
pub fn available_now_targets(
    client: &BaseConsumer,
    source: &SourceConfig,
    unfinished: Option<OffsetMap>,
) -> Result<RunTargets> {
    if let Some(targets) = unfinished {
        info!(targets = ?to_partition_offsets(&targets), "resuming an unfinished availableNow run");
        return Ok(RunTargets::Resumed(targets));
    }
    let targets = run_end_offsets(client, source)?;
    info!(targets = ?to_partition_offsets(&targets), "availableNow targets");
    Ok(RunTargets::Planned(targets))
}

/// Where a run to completion ends: the latest offset of every partition the subscription
/// covers now, or endingOffsets. endingOffsets names every partition (as Spark requires);
/// -1 is the latest offset, and an offset past the latest is refused (the run would wait for
/// records that may never come).
pub fn run_end_offsets(client: &BaseConsumer, source: &SourceConfig) -> Result<OffsetMap> {
    let latest = latest_of_subscription(client, source)?;
    let ending = source
        .read
        .ending_offsets()
        .map_err(|e| Error::Unsupported(format!("endingOffsets: {e}")))?;
    let Some(ending) = ending else {
        return Ok(latest);
    };
    let tps: Vec<TopicPartition> = latest.keys().cloned().collect();
    check_specific_partitions("endingOffsets", &ending, &tps)?;
    let mut ends = OffsetMap::new();
    let mut beyond = Vec::new();
    for (tp, high) in latest {
        let wanted = ending
            .get(&tp.topic)
            .and_then(|p| p.get(&tp.partition))
            .copied()
            .unwrap_or(tributary_crds::OFFSET_LATEST);
        if wanted == tributary_crds::OFFSET_LATEST {
            ends.insert(tp, high);
        } else if wanted > high {
            beyond.push(format!("{tp}: {wanted} (latest {high})"));
        } else {
            ends.insert(tp, wanted);
        }
    }
    if !beyond.is_empty() {
        return Err(Error::Unsupported(format!(
            "endingOffsets names offsets past the latest of their partitions ({}): a run to completion ends at offsets that exist; use -1 for the latest",
            beyond.join(", ")
        )));
    }
    info!(ends = ?to_partition_offsets(&ends), "endingOffsets");
    Ok(ends)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    /// A one-broker mock cluster with topic `t` whose partition p holds p + 1 records.
    fn cluster_with_records() -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        BaseConsumer,
    ) {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 3, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        for partition in 0..3 {
            for _ in 0..=partition {
                producer
                    .send(
                        BaseRecord::<(), str>::to("t")
                            .partition(partition)
                            .payload("{}"),
                    )
                    .expect("queued");
            }
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "offsets-test")
            .create()
            .expect("client");
        (cluster, client)
    }

    #[test]
    fn latest_offsets_are_the_high_watermarks() {
        let (_cluster, client) = cluster_with_records();
        let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
        let latest = latest_offsets(&client, &tps, "mock").expect("latest offsets");
        // The batched request alone answers every partition, with the same offsets.
        let batched = latest_in_one_request(&client, &tps).expect("one request");
        for tp in &tps {
            let (_, high) = watermarks(&client, tp, "mock").expect("watermarks");
            assert_eq!(high, i64::from(tp.partition) + 1, "{tp}");
            assert_eq!(latest.get(tp), Some(&high), "{tp}");
            assert_eq!(batched.get(tp), Some(&high), "{tp}");
        }
        assert_eq!((latest.len(), batched.len()), (3, 3));
    }

    #[test]
    fn a_partition_the_topic_does_not_have_is_named() {
        let (_cluster, client) = cluster_with_records();
        let tps = [TopicPartition::new("t", 0), TopicPartition::new("t", 7)];
        let error = latest_offsets(&client, &tps, "mock")
            .expect_err("partition 7 does not exist")
            .to_string();
        assert!(error.contains("t-7"), "{error}");
    }

    fn specific(entries: &[(&str, i32, i64)]) -> BTreeMap<String, BTreeMap<i32, i64>> {
        let mut map: BTreeMap<String, BTreeMap<i32, i64>> = BTreeMap::new();
        for (topic, partition, offset) in entries {
            map.entry(topic.to_string())
                .or_default()
                .insert(*partition, *offset);
        }
        map
    }

    #[test]
    fn specific_offsets_must_name_exactly_the_partitions_read() {
        let tps = [TopicPartition::new("t", 0), TopicPartition::new("t", 1)];
        assert!(
            check_specific_partitions(
                "startingOffsets",
                &specific(&[("t", 0, 3), ("t", 1, -2)]),
                &tps
            )
            .is_ok()
        );
        let message = check_specific_partitions(
            "startingOffsets",
            &specific(&[("t", 0, 3), ("t", 1, -2), ("t", 7, 0)]),
            &tps,
        )
        .expect_err("partition 7 does not exist")
        .to_string();
        assert!(
            message.contains("it names t-7 that the query does not read"),
            "{message}"
        );
        let message = check_specific_partitions("startingOffsets", &specific(&[("t", 0, 3)]), &tps)
            .expect_err("partition 1 left out")
            .to_string();
        assert!(message.contains("it leaves out t-1"), "{message}");
        assert!(message.contains("-2 for earliest"), "{message}");
    }
}
