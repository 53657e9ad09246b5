//! Two workers in one consumer group: partitions move between them mid-run, and every offset
//! still lands in the table exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::exactly_once::assert_exactly_once;
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
