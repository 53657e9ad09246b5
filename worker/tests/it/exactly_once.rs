//! Exactly once under kill -9: every (topic, partition, offset) lands in the table once, however
//! often the worker dies, and wherever.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 4;

fn produce(broker: &Broker, from: usize, count: usize) {
    for i in from..from + count {
        broker.send(
            TOPIC,
            (i % PARTITIONS as usize) as i32,
            None,
            reading(i, "oslo", i as f64).as_bytes(),
        );
    }
    broker.flush();
}

pub fn assert_exactly_once(ws: &Workspace, ends: &BTreeMap<(String, i32), i64>) {
    let table = read_table(&ws.table());
    let coordinates = table.coordinates();
    let expected = expected_coordinates(ends);
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
        panic!(
            "rows {} vs expected {}; duplicates {duplicates:?}; missing {missing:?}",
            coordinates.len(),
            expected.len()
        );
    }
    for ((topic, partition), end) in ends {
        assert_eq!(table.txn_for(topic, *partition), Some(*end));
    }
}

#[test]
fn available_now_killed_repeatedly_finishes_at_its_first_targets() {
    let mut random = Random::from_time();
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    produce(&broker, 0, 12_000);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "killed", TOPIC);
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 100");
    let path = ws.write("m.yaml", &manifest.render());
    let mut produced = 12_000;
    let mut killed_mid_run = 0;
    for round in 0..6 {
        let mut worker = Worker::start(&ws, &path, &broker.bootstrap, &format!("round{round}"));
        // Kill after a random number of batches plus a random part of the next one, so the
        // kill lands anywhere: reading, writing Parquet, committing.
        let batches = 1 + random.below(12) as usize;
        wait_for("batches or exit", Duration::from_secs(60), || {
            worker.progress().len() >= batches || worker.child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(Duration::from_millis(random.below(40)));
        if worker.child.try_wait().ok().flatten().is_none() {
            killed_mid_run += 1;
        }
        worker.kill();
        // Producers keep writing between attempts: the run must still end at its first targets.
        produce(&broker, produced, 400);
        produced += 400;
    }
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} kills landed mid-run"
    );
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "final");
    assert!(status.success(), "{}", worker.stderr_text());

    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.path("checkpoint").join("availableNow")).expect("availableNow file"),
    )
    .expect("json");
    let mut targets = BTreeMap::new();
    for (partition, offset) in run["targets"][TOPIC].as_object().expect("targets") {
        targets.insert(
            (TOPIC.to_string(), partition.parse::<i32>().expect("p")),
            offset.as_i64().expect("o"),
        );
    }
    assert_eq!(
        targets.values().sum::<i64>(),
        12_000,
        "the first attempt's targets were kept"
    );
    assert_exactly_once(&ws, &targets);
}

#[test]
fn continuous_worker_killed_while_producing_then_drained_and_stopped_with_sigterm() {
    // Background compaction every second from 3 small files on, so that kills also land
    // while a compaction reads, writes or commits.
    let env = [
        ("TRIBUTARY_READ_AHEAD_RECORDS", "150"),
        ("TRIBUTARY_COMPACTION_INTERVAL_SECONDS", "1"),
        ("TRIBUTARY_COMPACTION_MIN_FILES", "3"),
    ];
    let mut random = Random::from_time();
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "continuous", TOPIC);
    manifest.trigger = "{}";
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 300");
    let path = ws.write("m.yaml", &manifest.render());
    let mut produced = 0;
    for round in 0..5 {
        let mut worker = Worker::start_with_env(
            &ws,
            &path,
            &broker.bootstrap,
            &format!("round{round}"),
            &env,
        );
        let kill_after = Duration::from_millis(1000 + random.below(4000));
        let started = std::time::Instant::now();
        while started.elapsed() < kill_after {
            produce(&broker, produced, 100);
            produced += 100;
        }
        worker.kill();
    }
    let ends: BTreeMap<(String, i32), i64> = (0..PARTITIONS)
        .map(|p| {
            let count = (0..produced)
                .filter(|i| i % PARTITIONS as usize == p as usize)
                .count();
            ((TOPIC.to_string(), p), count as i64)
        })
        .collect();
    let mut worker = Worker::start_with_env(&ws, &path, &broker.bootstrap, "drain", &env);
    wait_for("the worker to catch up", Duration::from_secs(90), || {
        let txns = table_txns(&ws.table());
        ends.iter().all(|((topic, partition), end)| {
            let suffix = format!("-{topic}-{partition}");
            txns.iter().any(|(id, v)| id.ends_with(&suffix) && v == end)
        })
    });
    // The rounds may or may not have been killed mid-compaction; the draining worker compacts
    // the small files they left before it is stopped.
    wait_for("a compaction commit", Duration::from_secs(30), || {
        compaction_commits(&ws.table()) > 0
    });
    worker.terminate();
    let status = worker.wait(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {}",
        worker.stderr_text()
    );
    assert_exactly_once(&ws, &ends);
}

/// Commits in the table's log made by the worker's compaction.
fn compaction_commits(table: &std::path::Path) -> usize {
    let log = table.join("_delta_log");
    std::fs::read_dir(&log)
        .expect("the table's log")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "json").then_some(path)
        })
        .filter(|path| {
            std::fs::read_to_string(path)
                .expect("a commit file")
                .contains("\"operation\":\"OPTIMIZE\"")
        })
        .count()
}
