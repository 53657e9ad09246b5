//! availableNow: stops at the offsets that were latest at start, even while producers write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::*;

const TOPIC: &str = "busy";

#[test]
fn stops_at_its_targets_while_a_producer_keeps_writing() {
    let broker = Broker::start();
    broker.topic(TOPIC, 3);
    for i in 0..3000 {
        broker.send(
            TOPIC,
            (i % 3) as i32,
            None,
            reading(i, ["oslo", "rome"][i % 2], 1.0).as_bytes(),
        );
    }
    broker.flush();
    // Keep writing for the whole run.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let bootstrap = broker.bootstrap.clone();
        std::thread::spawn(move || {
            let producer = producer(&bootstrap);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                send(
                    &producer,
                    TOPIC,
                    (i % 3) as i32,
                    None,
                    reading(i, "late", 2.0).as_bytes(),
                );
                i += 1;
                if i.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let _ = rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10));
            i
        })
    };
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "catch-up", TOPIC);
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 700");
    manifest.sink_extra = "      partitionBy: [site]";
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    stop.store(true, Ordering::SeqCst);
    let late = writer.join().expect("writer thread");
    assert!(status.success(), "{}", worker.stderr_text());
    assert!(late > 0, "the producer wrote during the run");

    // The targets the run planned are in the checkpoint; the table holds exactly the offsets
    // below them, once each, although more was written meanwhile.
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.path("checkpoint").join("availableNow")).expect("availableNow file"),
    )
    .expect("json");
    assert_eq!(run["finished"], true);
    let mut targets = BTreeMap::new();
    for (partition, offset) in run["targets"][TOPIC].as_object().expect("targets") {
        targets.insert(
            (TOPIC.to_string(), partition.parse::<i32>().expect("p")),
            offset.as_i64().expect("o"),
        );
    }
    assert!(targets.values().all(|t| *t >= 1000), "{targets:?}");
    let table = read_table(&ws.table());
    assert_eq!(table.coordinates(), expected_coordinates(&targets));
    for ((topic, partition), target) in &targets {
        assert_eq!(table.txn_for(topic, *partition), Some(*target));
    }
    assert_eq!(table.partition_columns, vec!["site".to_string()]);
    // One commit per batch after the table's creation (version 0), at least one file each.
    assert_eq!(table.version, worker.progress().len() as i64);
    assert!(table.files >= worker.progress().len());
    // maxOffsetsPerTrigger: several batches, none above the limit.
    let progress = worker.progress();
    assert!(progress.len() >= 5, "{} batches", progress.len());
    for p in &progress {
        assert!(p["numInputRows"].as_i64().expect("rows") <= 700);
        assert!(p["sink"]["deltaVersion"].as_i64().is_some());
    }
    let total: i64 = progress
        .iter()
        .map(|p| p["numInputRows"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, targets.values().sum::<i64>());
    // The progress log in the checkpoint has the same batches.
    let log = std::fs::read_to_string(ws.path("checkpoint").join("progress.jsonl")).expect("log");
    assert_eq!(log.lines().count(), progress.len());
}

#[test]
fn once_reads_everything_in_one_batch() {
    let broker = Broker::start();
    broker.topic(TOPIC, 2);
    for i in 0..400 {
        broker.send(
            TOPIC,
            (i % 2) as i32,
            None,
            reading(i, "oslo", 1.0).as_bytes(),
        );
    }
    broker.flush();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "once", TOPIC);
    // Once ignores maxOffsetsPerTrigger, as Spark's Trigger.Once does.
    manifest.source.push_str("\n      maxOffsetsPerTrigger: 10");
    manifest.trigger = "{once: true}";
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());
    let progress = worker.progress();
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0]["numInputRows"], 400);
    assert_eq!(read_table(&ws.table()).rows(), 400);
}
