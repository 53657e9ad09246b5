//! Two workers in one consumer group: partitions move between them mid-run, and every offset
//! still lands in the table exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::exactly_once::assert_exactly_once;
use crate::real_broker::{Writer, all_offsets, wait_until_committed};
use crate::support::*;

const TOPIC: &str = "shared";
const PARTITIONS: i32 = 6;

#[test]
fn two_workers_share_partitions_through_a_rebalance_exactly_once() {
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let bootstrap = broker.bootstrap.clone();
        std::thread::spawn(move || {
            let producer = producer(&bootstrap);
            let mut counts = BTreeMap::new();
            let mut i = 0_usize;
            while !stop.load(Ordering::SeqCst) {
                let partition = (i % PARTITIONS as usize) as i32;
                send(
                    &producer,
                    TOPIC,
                    partition,
                    None,
                    reading(i, "oslo", 1.0).as_bytes(),
                );
                *counts
                    .entry((TOPIC.to_string(), partition))
                    .or_insert(0_i64) += 1;
                i += 1;
                if i.is_multiple_of(100) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("flush");
            counts
        })
    };
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "replicated", TOPIC);
    manifest.trigger = "{}";
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 200");
    let path = ws.write("m.yaml", &manifest.render());

    let mut first = Worker::start(&ws, &path, &broker.bootstrap, "first");
    wait_for(
        "the first worker's batches",
        Duration::from_secs(60),
        || first.progress().len() >= 3,
    );
    let mut second = Worker::start(&ws, &path, &broker.bootstrap, "second");
    // The group rebalances; both then write their own partitions.
    wait_for(
        "the second worker's batches",
        Duration::from_secs(60),
        || second.progress().len() >= 3,
    );
    let first_batches = first.progress().len();
    wait_for(
        "the first worker to go on after the rebalance",
        Duration::from_secs(60),
        || first.progress().len() > first_batches + 2,
    );
    // The first leaves; the second takes all partitions over.
    first.terminate();
    assert!(
        first.wait(Duration::from_secs(30)).success(),
        "{}",
        first.stderr_text()
    );
    let second_batches = second.progress().len();
    wait_for(
        "the second worker to go on alone",
        Duration::from_secs(60),
        || second.progress().len() > second_batches + 3,
    );
    stop.store(true, Ordering::SeqCst);
    let ends = writer.join().expect("writer");
    wait_for(
        "the second worker to catch up",
        Duration::from_secs(90),
        || {
            let txns = table_txns(&ws.table());
            ends.iter().all(|((topic, partition), end)| {
                let suffix = format!("-{topic}-{partition}");
                txns.iter().any(|(id, v)| id.ends_with(&suffix) && v == end)
            })
        },
    );
    second.terminate();
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.stderr_text()
    );
    assert_exactly_once(&ws, &ends);

    // Each worker committed only partitions it held: no batch of one names a partition in the
    // same Delta version as the other.
    let mut versions = BTreeMap::new();
    for (who, worker) in [("first", &first), ("second", &second)] {
        for p in worker.progress() {
            let version = p["sink"]["deltaVersion"].as_i64().expect("version");
            assert!(
                versions.insert(version, who).is_none(),
                "version {version} committed twice"
            );
        }
    }
    assert!(versions.values().any(|w| *w == "first") && versions.values().any(|w| *w == "second"));
}

/// A continuous worker killed with SIGKILL and started again with its group instance id (a
/// container restarted in its pod, which keeps the pod's name) reads again within seconds: as a
/// static member it takes its partitions back without waiting for the dead process's session
/// to time out (45 s, librdkafka's default, which this test keeps). Stopped with SIGTERM, a
/// static member leaves the group, so another worker takes its partitions over at once too.
#[test]
fn a_worker_killed_and_restarted_with_its_instance_id_reads_again_within_seconds() {
    const TOPIC: &str = "static";
    let broker = Broker::start();
    broker.topic(TOPIC, 4);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "static", TOPIC);
    manifest.trigger = "{}";
    // The default session timeout: what a dead member costs without static membership.
    manifest
        .options
        .retain(|(key, _)| key != "session.timeout.ms" && key != "heartbeat.interval.ms");
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 300");
    let path = ws.write("m.yaml", &manifest.render());
    let env = |id: &'static str| {
        [
            ("TRIBUTARY_READ_AHEAD_RECORDS", "150"),
            ("TRIBUTARY_GROUP_INSTANCE_ID", id),
        ]
    };
    let writer = Writer::start(&broker.bootstrap, TOPIC, 4);
    let mut first =
        Worker::start_with_env(&ws, &path, &broker.bootstrap, "first", &env("worker-0"));
    wait_for("three batches", Duration::from_secs(60), || {
        first.progress().len() >= 3
    });
    first.kill();

    let restarted_at = Instant::now();
    let mut again =
        Worker::start_with_env(&ws, &path, &broker.bootstrap, "again", &env("worker-0"));
    wait_for(
        "a batch of the restarted worker",
        Duration::from_secs(60),
        || {
            again
                .progress()
                .iter()
                .any(|p| p["numInputRows"].as_i64().unwrap_or(0) > 0)
        },
    );
    let recovery = restarted_at.elapsed();
    eprintln!(
        "first batch {} ms after the restart (process start included)",
        recovery.as_millis()
    );
    assert!(
        recovery < Duration::from_secs(20),
        "the restarted worker took {recovery:?} to commit a batch:\n{}",
        again.stderr_text()
    );
    assert!(
        again
            .stderr_text()
            .contains("static member of the consumer group"),
        "{}",
        again.stderr_text()
    );

    // Another worker joins; the restarted one is stopped and leaves: the newcomer owns every
    // partition well within the 45 s a session would take to expire, and catches up.
    let mut other =
        Worker::start_with_env(&ws, &path, &broker.bootstrap, "other", &env("worker-1"));
    wait_for("the newcomer's batches", Duration::from_secs(60), || {
        other.progress().len() >= 2
    });
    again.terminate();
    assert!(
        again.wait(Duration::from_secs(30)).success(),
        "{}",
        again.stderr_text()
    );
    let left_at = Instant::now();
    let batches_before = other.progress().len();
    // The handover, not the catch-up: how long the newcomer takes to read a backlog of 300
    // records per batch depends on the machine, not on the group protocol.
    let partitions_read = |progress: &[serde_json::Value]| {
        progress
            .iter()
            .filter_map(|p| p["sources"][0]["endOffset"][TOPIC].as_object())
            .flat_map(|partitions| partitions.keys().cloned())
            .collect::<std::collections::BTreeSet<String>>()
    };
    wait_for(
        "batches of the newcomer over all four partitions",
        Duration::from_secs(60),
        || partitions_read(&other.progress()[batches_before..]).len() == 4,
    );
    let takeover = left_at.elapsed();
    eprintln!(
        "the newcomer read every partition {} ms after the other left",
        takeover.as_millis()
    );
    assert!(
        takeover < Duration::from_secs(20),
        "the stopped static member did not hand its partitions over: {takeover:?}\n{}",
        other.stderr_text()
    );
    let written = writer.finish();
    let ends = all_offsets(&broker, TOPIC, 4);
    assert_eq!(ends.values().sum::<i64>(), written as i64, "{ends:?}");
    wait_until_committed(&ws, &ends, &other);
    eprintln!(
        "the newcomer caught up {} ms after the other left",
        left_at.elapsed().as_millis()
    );
    other.terminate();
    assert!(
        other.wait(Duration::from_secs(30)).success(),
        "{}",
        other.stderr_text()
    );
    assert_exactly_once(&ws, &ends);
}

/// Two workers started with one group instance id: Kafka fences the older out of the group,
/// and that worker stops with an error that says why, instead of idling without partitions.
#[test]
fn two_workers_with_one_instance_id_stop_the_older_with_a_clear_error() {
    const TOPIC: &str = "fenced";
    let broker = Broker::start();
    broker.topic(TOPIC, 2);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "fenced", TOPIC);
    manifest.trigger = "{}";
    let path = ws.write("m.yaml", &manifest.render());
    let env = [("TRIBUTARY_GROUP_INSTANCE_ID", "worker-0")];
    let writer = Writer::start(&broker.bootstrap, TOPIC, 2);
    let mut older = Worker::start_with_env(&ws, &path, &broker.bootstrap, "older", &env);
    wait_for("a batch", Duration::from_secs(60), || {
        !older.progress().is_empty()
    });
    let mut newer = Worker::start_with_env(&ws, &path, &broker.bootstrap, "newer", &env);
    let status = older.wait(Duration::from_secs(60));
    assert!(!status.success(), "the fenced worker must stop");
    let stderr = older.stderr_text();
    assert!(
        stderr.contains("each worker of an ingestion needs its own group instance id"),
        "{stderr}"
    );
    let batches = newer.progress().len();
    wait_for(
        "the newer worker's batches",
        Duration::from_secs(60),
        || newer.progress().len() > batches + 1,
    );
    drop(writer);
    newer.terminate();
    assert!(
        newer.wait(Duration::from_secs(30)).success(),
        "{}",
        newer.stderr_text()
    );
}
