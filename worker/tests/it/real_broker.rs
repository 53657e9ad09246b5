//! What only a real Kafka broker shows: the broker restarted under a running worker, a
//! partition leader lost in a three-broker cluster, transactions (aborted records, control
//! records, an open transaction), a compacted topic, partitions added and a topic deleted while
//! the worker runs. Each case ends with every (topic, partition, offset) the broker holds in the
//! table exactly once, and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::support::*;

/// A producer thread writing sensor readings round-robin over `partitions` until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Writer {
    pub fn start(bootstrap: &str, topic: &str, partitions: i32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (stop, bootstrap, topic) = (stop.clone(), bootstrap.to_string(), topic.to_string());
            std::thread::spawn(move || {
                let producer = producer(&bootstrap);
                let mut i = 0_usize;
                while !stop.load(Ordering::SeqCst) {
                    let partition = (i % partitions as usize) as i32;
                    send(
                        &producer,
                        &topic,
                        partition,
                        None,
                        reading(i, "oslo", 1.0).as_bytes(),
                    );
                    i += 1;
                    if i.is_multiple_of(50) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                // Records sent while a broker was down are retried until delivered.
                producer
                    .flush(Duration::from_secs(120))
                    .expect("every record delivered");
                i
            })
        };
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops writing; returns how many records were written.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("writer thread")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Every record a read_committed consumer reads from `topic` now (its partitions from the
/// beginning up to their last stable offsets): (partition, offset, value).
fn committed_records(bootstrap: &str, topic: &str, partitions: i32) -> Vec<(i32, i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tributary-test-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("reader");
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        // With read_committed the high offset is the last stable offset.
        let (_, end) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        ends.insert(p, end);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("a record");
            out.push((
                message.partition(),
                message.offset(),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            ));
        }
        // Done when every partition's position reached its end (control records included).
        let positions = consumer.position().expect("positions");
        let done = ends.iter().all(|(p, end)| {
            *end == 0
                || positions
                    .find_partition(topic, *p)
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *end))
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the test's reader did not reach {ends:?}: {positions:?}"
        );
    }
    out.sort();
    out
}

/// The table holds exactly `expected` (topic, partition, offset), each once.
fn assert_table_holds(ws: &Workspace, expected: &[(String, i32, i64)]) {
    let coordinates = read_table(&ws.table()).coordinates();
    if coordinates != expected {
        let mut seen = BTreeMap::new();
        for c in &coordinates {
            *seen.entry(c.clone()).or_insert(0) += 1;
        }
        let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
        let missing: Vec<_> = expected
            .iter()
            .filter(|c| !seen.contains_key(*c))
            .take(5)
            .collect();
        let extra: Vec<_> = seen
            .keys()
            .filter(|c| !expected.contains(*c))
            .take(5)
            .collect();
        panic!(
            "rows {} vs expected {}; duplicates {duplicates:?}; missing {missing:?}; not expected {extra:?}",
            coordinates.len(),
            expected.len()
        );
    }
}

/// Every offset below each partition's high watermark (a topic without transactions or
/// compaction: offsets are dense).
pub fn all_offsets(broker: &Broker, topic: &str, partitions: i32) -> BTreeMap<(String, i32), i64> {
    (0..partitions)
        .map(|p| ((topic.to_string(), p), broker.watermarks(topic, p).1))
        .collect()
}

pub fn wait_until_committed(ws: &Workspace, ends: &BTreeMap<(String, i32), i64>, worker: &Worker) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let txns = table_txns(&ws.table());
        let done = ends.iter().all(|((topic, partition), end)| {
            let suffix = format!("-{topic}-{partition}");
            *end == 0 || txns.iter().any(|(id, v)| id.ends_with(&suffix) && v == end)
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not commit up to {ends:?}; table txns {txns:?}\n{}",
            worker.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop_cleanly(worker: &mut Worker) {
    worker.terminate();
    let status = worker.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {}",
        worker.stderr_text()
    );
}

fn continuous_manifest(ws: &Workspace, name: &str, topic: &str) -> std::path::PathBuf {
    let mut manifest = Manifest::subscribe(ws, name, topic);
    manifest.trigger = "{}";
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 300");
    ws.write("m.yaml", &manifest.render())
}

#[test]
fn broker_killed_and_restarted_under_a_running_worker_loses_and_duplicates_nothing() {
    const TOPIC: &str = "restarted";
    let mut broker = Broker::start();
    broker.topic(TOPIC, 4);
    let ws = Workspace::new();
    let path = continuous_manifest(&ws, "restarted", TOPIC);
    let writer = Writer::start(&broker.bootstrap, TOPIC, 4);
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "worker");
    wait_for("three batches", Duration::from_secs(60), || {
        worker.progress().len() >= 3
    });
    // kill -9: whatever the broker had acknowledged is in its log files (page cache).
    broker.kill(1);
    std::thread::sleep(Duration::from_secs(2));
    let batches = worker.progress().len();
    broker.restart(1);
    wait_for("batches after the restart", Duration::from_secs(90), || {
        worker.progress().len() >= batches + 3
    });
    let written = writer.finish();
    let ends = all_offsets(&broker, TOPIC, 4);
    assert_eq!(ends.values().sum::<i64>(), written as i64, "{ends:?}");
    wait_until_committed(&ws, &ends, &worker);
    stop_cleanly(&mut worker);
    crate::exactly_once::assert_exactly_once(&ws, &ends);
}

/// A worker whose brokers died stops within a bound when asked to (a Job's pod after its run,
/// a Deployment's pod on a rollout): closing the consumer would otherwise wait for brokers
/// that never answer.
#[test]
fn a_worker_whose_broker_died_stops_within_seconds() {
    const TOPIC: &str = "gone";
    let mut broker = Broker::start();
    broker.topic(TOPIC, 2);
    for partition in 0..2 {
        for i in 0..50 {
            broker.send(TOPIC, partition, None, reading(i, "oslo", 1.0).as_bytes());
        }
    }
    broker.flush();
    let ws = Workspace::new();
    let path = continuous_manifest(&ws, "gone", TOPIC);
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "worker");
    wait_for("a batch", Duration::from_secs(60), || {
        !worker.progress().is_empty()
    });
    broker.kill(1);
    let asked = Instant::now();
    worker.terminate();
    let status = worker.wait(Duration::from_secs(60));
    let took = asked.elapsed();
    assert!(status.success(), "{}", worker.stderr_text());
    assert!(
        took < Duration::from_secs(20),
        "took {took:?} to stop after SIGTERM with the broker gone:\n{}",
        worker.stderr_text()
    );
}

#[test]
fn partition_leader_killed_in_a_three_broker_cluster_loses_and_duplicates_nothing() {
    const TOPIC: &str = "replicated";
    let mut cluster = Broker::cluster(3);
    cluster.topic(TOPIC, 4);
    let ws = Workspace::new();
    let path = continuous_manifest(&ws, "leader-loss", TOPIC);
    let writer = Writer::start(&cluster.bootstrap, TOPIC, 4);
    let mut worker = Worker::start(&ws, &path, &cluster.bootstrap, "worker");
    wait_for("three batches", Duration::from_secs(60), || {
        worker.progress().len() >= 3
    });
    let leader = cluster.leader(TOPIC, 0);
    cluster.kill(leader);
    wait_for(
        "another leader for partition 0",
        Duration::from_secs(60),
        || {
            let now = cluster.leader(TOPIC, 0);
            now >= 0 && now != leader
        },
    );
    let batches = worker.progress().len();
    wait_for(
        "batches under the new leaders",
        Duration::from_secs(90),
        || worker.progress().len() >= batches + 3,
    );
    let written = writer.finish();
    let ends = all_offsets(&cluster, TOPIC, 4);
    assert_eq!(ends.values().sum::<i64>(), written as i64, "{ends:?}");
    wait_until_committed(&ws, &ends, &worker);
    stop_cleanly(&mut worker);
    crate::exactly_once::assert_exactly_once(&ws, &ends);
}

fn transactional_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "2")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init transactions");
    producer
}

/// One transaction of `count` readings to partitions round-robin, tagged with `site`;
/// committed or aborted.
fn transaction(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partitions: i32,
    count: usize,
    site: &str,
    commit: bool,
) {
    producer.begin_transaction().expect("begin");
    for i in 0..count {
        let value = reading(i, site, 1.0);
        let record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition((i % partitions as usize) as i32)
            .payload(value.as_bytes());
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    // On the broker before the end of the transaction: aborting purges what is still queued,
    // and the aborted records must really be in the log.
    producer.flush(Duration::from_secs(30)).expect("flush");
    if commit {
        producer
            .commit_transaction(Duration::from_secs(30))
            .expect("commit");
    } else {
        producer
            .abort_transaction(Duration::from_secs(30))
            .expect("abort");
    }
}

#[test]
fn transactions_only_committed_records_land_and_control_records_are_passed() {
    const TOPIC: &str = "transactional";
    let broker = Broker::start();
    broker.topic(TOPIC, 2);
    let producer = transactional_producer(&broker.bootstrap, "tributary-test-tx");
    transaction(&producer, TOPIC, 2, 40, "committed", true);
    transaction(&producer, TOPIC, 2, 30, "aborted", false);
    transaction(&producer, TOPIC, 2, 20, "committed", true);
    transaction(&producer, TOPIC, 2, 10, "aborted", false);
    // Plain records after the transactions, then a transaction last: each partition ends with
    // a commit marker, an offset that holds no record.
    for i in 0..6 {
        broker.send(
            TOPIC,
            i % 2,
            None,
            reading(i as usize, "plain", 2.0).as_bytes(),
        );
    }
    broker.flush();
    transaction(&producer, TOPIC, 2, 8, "committed", true);

    let truth = committed_records(&broker.bootstrap, TOPIC, 2);
    assert_eq!(truth.len(), 40 + 20 + 6 + 8, "what read_committed reads");
    assert!(truth.iter().all(|(_, _, v)| !v.contains("aborted")));
    let expected: Vec<(String, i32, i64)> = truth
        .iter()
        .map(|(p, o, _)| (TOPIC.to_string(), *p, *o))
        .collect();
    let ends = all_offsets(&broker, TOPIC, 2);
    // Markers and aborted records take offsets: the offsets in the table are not dense.
    assert!(ends.values().sum::<i64>() > expected.len() as i64 + 20);

    // availableNow, in small batches (so batches end on markers and aborted ranges), then a
    // continuous worker must see nothing more to do.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "tx", TOPIC);
    manifest.source.push_str("\n      maxOffsetsPerTrigger: 7");
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_table_holds(&ws, &expected);
    let table = read_table(&ws.table());
    for ((topic, partition), end) in &ends {
        assert_eq!(
            table.txn_for(topic, *partition),
            Some(*end),
            "the table's next offset passes the last marker of {topic}-{partition}"
        );
    }
    let sites = table.strings_by_offset("site");
    assert!(sites.values().all(|s| s.as_deref() != Some("aborted")));
}

#[test]
fn available_now_during_an_open_transaction_stops_at_the_last_stable_offset() {
    // As Spark's Kafka source with read_committed: the latest offset of a partition is its
    // last stable offset, so a run started while a transaction is open ends before that
    // transaction's first record, and reads it on a later run once it is committed.
    const TOPIC: &str = "open-transaction";
    let broker = Broker::start();
    broker.topic(TOPIC, 1);
    let producer = transactional_producer(&broker.bootstrap, "tributary-test-open");
    transaction(&producer, TOPIC, 1, 10, "committed", true);
    // Offsets 0..10 records, 10 the commit marker; the open transaction starts at 11.
    producer.begin_transaction().expect("begin");
    for i in 0..5 {
        let value = reading(i, "pending", 1.0);
        producer
            .send(
                BaseRecord::<[u8], [u8]>::to(TOPIC)
                    .partition(0)
                    .payload(value.as_bytes()),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    assert_eq!(
        broker.watermarks(TOPIC, 0).1,
        16,
        "the open records are in the log"
    );

    let ws = Workspace::new();
    let path = ws.write("m.yaml", &Manifest::subscribe(&ws, "open", TOPIC).render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "during");
    assert!(status.success(), "{}", worker.stderr_text());
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.path("checkpoint").join("availableNow")).expect("availableNow file"),
    )
    .expect("json");
    assert_eq!(
        run["targets"][TOPIC]["0"], 11,
        "the target is the last stable offset"
    );
    let first: Vec<(String, i32, i64)> = (0..10).map(|o| (TOPIC.to_string(), 0, o)).collect();
    assert_table_holds(&ws, &first);

    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "after");
    assert!(status.success(), "{}", worker.stderr_text());
    let mut all = first;
    all.extend((11..16).map(|o| (TOPIC.to_string(), 0, o)));
    assert_table_holds(&ws, &all);
    assert_eq!(read_table(&ws.table()).txn_for(TOPIC, 0), Some(17));
}

#[test]
fn compacted_topic_offsets_removed_by_the_cleaner_are_passed() {
    const TOPIC: &str = "compacted";
    let broker = Broker::start();
    broker.topic_with(
        TOPIC,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "100"),
        ],
    );
    // Ten versions of twenty keys, in bursts: each burst after 100 ms rolls a segment, so all
    // but the last are cleanable.
    for burst in 0..10 {
        for key in 0..20 {
            let value = reading(burst * 100 + key, &format!("v{burst}"), 1.0);
            broker.send(
                TOPIC,
                0,
                Some(format!("k{key}").as_bytes()),
                value.as_bytes(),
            );
        }
        broker.flush();
        std::thread::sleep(Duration::from_millis(150));
    }
    let high = broker.watermarks(TOPIC, 0).1;
    assert_eq!(high, 200);
    // The cleaner runs in the background: wait until it removed records, and until what is
    // left no longer changes.
    let mut previous = Vec::new();
    wait_for(
        "the log cleaner to compact the topic",
        Duration::from_secs(90),
        || {
            let now = committed_records(&broker.bootstrap, TOPIC, 1);
            let settled = now.len() < 200 && now == previous;
            previous = now;
            if !settled {
                std::thread::sleep(Duration::from_millis(500));
            }
            settled
        },
    );
    let expected: Vec<(String, i32, i64)> = previous
        .iter()
        .map(|(p, o, _)| (TOPIC.to_string(), *p, *o))
        .collect();
    assert!(expected.len() >= 20, "every key keeps its last version");

    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "compacted", TOPIC);
    manifest.source.push_str("\n      maxOffsetsPerTrigger: 9");
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_table_holds(&ws, &expected);
    assert_eq!(read_table(&ws.table()).txn_for(TOPIC, 0), Some(200));
}

#[test]
fn partitions_added_to_a_subscribed_topic_are_read_from_their_earliest_offset() {
    const TOPIC: &str = "growing";
    let broker = Broker::start();
    broker.topic(TOPIC, 2);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "growing", TOPIC);
    manifest.trigger = "{}";
    // A new query that starts at the latest offsets: partitions added later are still read
    // from their beginning, as Spark reads them.
    manifest.source = format!("subscribe: [{TOPIC}]\n      startingOffsets: latest");
    let path = ws.write("m.yaml", &manifest.render());
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "worker");
    wait_for(
        "the worker to own both partitions",
        Duration::from_secs(60),
        || worker.stderr_text().matches("partition assigned").count() >= 2,
    );
    for i in 0..100 {
        broker.send(
            TOPIC,
            i % 2,
            None,
            reading(i as usize, "oslo", 1.0).as_bytes(),
        );
    }
    broker.flush();
    let ends = all_offsets(&broker, TOPIC, 2);
    wait_until_committed(&ws, &ends, &worker);

    broker.add_partitions(TOPIC, 4);
    // Records in the new partitions before the worker notices them: they must not be skipped.
    for i in 0..200 {
        broker.send(
            TOPIC,
            i % 4,
            None,
            reading(i as usize, "rome", 1.0).as_bytes(),
        );
    }
    broker.flush();
    let ends = all_offsets(&broker, TOPIC, 4);
    wait_until_committed(&ws, &ends, &worker);
    stop_cleanly(&mut worker);
    crate::exactly_once::assert_exactly_once(&ws, &ends);
}

#[test]
fn a_topic_deleted_under_a_running_worker_stops_it_with_a_clear_error() {
    const TOPIC: &str = "doomed";
    let broker = Broker::start();
    broker.topic(TOPIC, 2);
    for i in 0..100 {
        broker.send(
            TOPIC,
            i % 2,
            None,
            reading(i as usize, "oslo", 1.0).as_bytes(),
        );
    }
    broker.flush();
    let ends = all_offsets(&broker, TOPIC, 2);
    let ws = Workspace::new();
    let path = continuous_manifest(&ws, "doomed", TOPIC);
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "worker");
    wait_until_committed(&ws, &ends, &worker);
    let versions = read_table(&ws.table()).version;
    broker.delete_topic(TOPIC);
    let status = worker.wait(Duration::from_secs(90));
    assert!(!status.success(), "the worker must stop");
    let stderr = worker.stderr_text();
    assert!(stderr.contains(&format!("topic {TOPIC}")), "{stderr}");
    assert!(stderr.contains("deleted"), "{stderr}");
    // Nothing was committed after the deletion; what was read is in the table once.
    let table = read_table(&ws.table());
    assert_eq!(table.version, versions);
    crate::exactly_once::assert_exactly_once(&ws, &ends);
}
