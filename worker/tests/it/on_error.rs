//! onError: rescue, deadLetter and fail, with every kind of bad input.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

const TOPIC: &str = "readings";

/// The inputs: (value, whether it is good). Produced to partition 0 in this order.
fn inputs() -> Vec<(Vec<u8>, &'static str)> {
    let big_good = format!(
        r#"{{"device_id":"big","site":"{}","temperature":1.5}}"#,
        "x".repeat(600_000)
    );
    let big_bad = format!(r#"{{"device_id":"big-bad","site":"{}"#, "y".repeat(600_000));
    vec![
        (reading(1, "oslo", 20.5).into_bytes(), "good"),
        (b"{\"device_id\": \"d-2\", \"site\":".to_vec(), "truncated"),
        (b"this is not json".to_vec(), "malformed"),
        (
            br#"{"device_id":"d-3","temperature":"hot","battery_pct":7}"#.to_vec(),
            "wrong-typed",
        ),
        (
            br#"{"device_id":"d-4","site":"lisbon","colour":"red"}"#.to_vec(),
            "unknown field",
        ),
        (big_good.into_bytes(), "good"),
        (big_bad.into_bytes(), "oversized truncated"),
        (
            b"{\"device_id\":\"d-5\",\"site\":\"\xff\xfeoslo\"}".to_vec(),
            "non-UTF-8",
        ),
        (br#"[1,2,3]"#.to_vec(), "not an object"),
        (br#"{"site":"berlin"}"#.to_vec(), "missing required"),
        (reading(6, "berlin", -3.25).into_bytes(), "good"),
    ]
}

fn produce(broker: &Broker) {
    broker.topic(TOPIC, 1);
    for (value, _) in inputs() {
        broker.send(TOPIC, 0, Some(b"k"), &value);
    }
    broker.flush();
}

#[test]
fn rescue_keeps_every_record_and_the_bad_text() {
    let broker = Broker::start();
    produce(&broker);
    let ws = Workspace::new();
    let manifest = ws.write(
        "m.yaml",
        &Manifest::subscribe(&ws, "rescue", TOPIC).render(),
    );
    let (worker, status) = run_to_end(&ws, &manifest, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());

    let table = read_table(&ws.table());
    let inputs = inputs();
    assert_eq!(table.rows(), inputs.len(), "every record is a row");
    assert_eq!(
        table.coordinates(),
        expected_coordinates(&BTreeMap::from([(
            (TOPIC.to_string(), 0),
            inputs.len() as i64
        )]))
    );
    let rescued = table.strings_by_offset("_rescued_data");
    let devices = table.strings_by_offset("device_id");
    let sites = table.strings_by_offset("site");
    for (offset, (value, kind)) in inputs.iter().enumerate() {
        let rescued = rescued[&(0, offset as i64)].clone();
        match *kind {
            "good" => assert_eq!(rescued, None, "offset {offset}"),
            "wrong-typed" => {
                // Only the offending field is rescued; the others are in their columns.
                assert_eq!(rescued.as_deref(), Some(r#"{"temperature":"hot"}"#));
                assert_eq!(devices[&(0, offset as i64)].as_deref(), Some("d-3"));
            }
            "unknown field" => {
                assert_eq!(rescued.as_deref(), Some(r#"{"colour":"red"}"#));
                assert_eq!(sites[&(0, offset as i64)].as_deref(), Some("lisbon"));
            }
            "non-UTF-8" => {
                assert_eq!(
                    rescued.as_deref(),
                    Some(r#"{"device_id":"d-5","site":"\xFF\xFEoslo"}"#),
                    "invalid bytes are escaped, nothing lost"
                );
            }
            "missing required" => {
                assert_eq!(rescued.as_deref(), Some(r#"{"site":"berlin"}"#));
            }
            _ => assert_eq!(
                rescued.as_deref(),
                Some(String::from_utf8_lossy(value).as_ref()),
                "{kind} at offset {offset} keeps its raw text"
            ),
        }
    }
    assert_eq!(
        devices[&(0, 5)].as_deref(),
        Some("big"),
        "an oversized good record is a row"
    );
    assert_eq!(sites[&(0, 5)].as_ref().map(String::len), Some(600_000));
    let progress = worker.progress();
    let rescued_total: i64 = progress
        .iter()
        .map(|p| p["sink"]["numRescuedRows"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(rescued_total, 8);
}

#[test]
fn dead_letter_gets_each_bad_record_with_its_error() {
    let broker = Broker::start();
    produce(&broker);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "dlq", TOPIC);
    manifest.on_error = "deadLetter";
    manifest.extra_format = format!("      deadLetter: {{uri: {}}}", ws.path("dead").display());
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());

    let inputs = inputs();
    let table = read_table(&ws.table());
    let good: Vec<i64> = inputs
        .iter()
        .enumerate()
        // Unknown fields are ignored outside rescue mode, as Spark's from_json does.
        .filter(|(_, (_, kind))| *kind == "good" || *kind == "unknown field")
        .map(|(i, _)| i as i64)
        .collect();
    let table_offsets: Vec<i64> = table.coordinates().iter().map(|c| c.2).collect();
    assert_eq!(table_offsets, good);
    assert!(table.schema_string.contains("device_id"));
    assert!(!table.schema_string.contains("_rescued_data"));

    let dead = read_table(&ws.path("dead"));
    let errors = dead.strings_by_offset("error");
    let texts = dead.strings_by_offset("value_text");
    let mut dead_offsets: Vec<i64> = errors.keys().map(|(_, o)| *o).collect();
    dead_offsets.sort();
    let bad: Vec<i64> = (0..inputs.len() as i64)
        .filter(|o| !good.contains(o))
        .collect();
    assert_eq!(dead_offsets, bad, "every bad record is dead-lettered once");
    assert!(
        errors[&(0, 3)]
            .as_deref()
            .is_some_and(|e| e.contains("temperature")),
        "{errors:?}"
    );
    assert!(
        errors[&(0, 7)]
            .as_deref()
            .is_some_and(|e| e.contains("UTF-8"))
    );
    assert!(
        errors[&(0, 9)]
            .as_deref()
            .is_some_and(|e| e.contains("device_id"))
    );
    assert_eq!(texts[&(0, 2)].as_deref(), Some("this is not json"));
    // Both tables carry this query's offsets: a restart writes neither twice.
    assert_eq!(table.txn_for(TOPIC, 0), Some(inputs.len() as i64));
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "rerun");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_eq!(read_table(&ws.path("dead")).rows(), bad.len());
}

#[test]
fn fail_stops_naming_topic_partition_and_offset() {
    let broker = Broker::start();
    broker.topic(TOPIC, 1);
    for i in 0..5 {
        broker.send(TOPIC, 0, None, reading(i, "oslo", 1.0).as_bytes());
    }
    broker.send(
        TOPIC,
        0,
        None,
        br#"{"device_id":"d-9","battery_pct":"low"}"#,
    );
    broker.flush();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "strict", TOPIC);
    manifest.on_error = "fail";
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "run",
        "onError fail must stop at the bad record",
    );
    assert!(
        stderr.contains("record readings-0 at offset 5 does not parse"),
        "{stderr}"
    );
    // The column, its type and Spark's rule for it.
    assert!(
        stderr.contains(
            r#"column "battery_pct" (int): the string "low" is not read into an int column"#
        ),
        "{stderr}"
    );
    // The failed batch committed nothing.
    let table = read_table(&ws.table());
    assert_eq!(table.rows(), 0);
    assert_eq!(table.txn_for(TOPIC, 0), None);
}

/// The value of record `i` of the kill test: every fifth is bad, in turn truncated, of a
/// wrong type, not JSON.
fn mixed(i: usize) -> (String, bool) {
    let good = reading(i, "oslo", i as f64);
    match (i % 5, (i / 5) % 3) {
        (0, 0) => (good[..good.len() / 2].to_string(), false),
        (0, 1) => (
            format!(r#"{{"device_id":"d-{i}","temperature":"warm"}}"#),
            false,
        ),
        (0, _) => (format!("d-{i};oslo;{i}"), false),
        _ => (good, true),
    }
}

#[test]
fn dead_letter_killed_repeatedly_writes_each_record_once_across_both_tables() {
    const PARTITIONS: i32 = 4;
    const RECORDS: usize = 6_000;
    let mut random = Random::from_time();
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut next = [0i64; PARTITIONS as usize];
    for i in 0..RECORDS {
        let partition = (i % PARTITIONS as usize) as i32;
        let (value, is_good) = mixed(i);
        broker.send(TOPIC, partition, None, value.as_bytes());
        let at = (TOPIC.to_string(), partition, next[partition as usize]);
        next[partition as usize] += 1;
        if is_good { good.push(at) } else { bad.push(at) }
    }
    broker.flush();
    good.sort();
    bad.sort();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "dlq-killed", TOPIC);
    manifest.on_error = "deadLetter";
    manifest.extra_format = format!("      deadLetter: {{uri: {}}}", ws.path("dead").display());
    // Small batches: many dead-letter commits, each followed by its batch's own commit, so
    // that kills land between the two.
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 120");
    let path = ws.write("m.yaml", &manifest.render());
    let mut killed_mid_run = 0;
    for round in 0..6 {
        let mut worker = Worker::start(&ws, &path, &broker.bootstrap, &format!("round{round}"));
        let batches = 1 + random.below(8) as usize;
        wait_for("batches or exit", Duration::from_secs(60), || {
            worker.progress().len() >= batches || worker.child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(Duration::from_millis(random.below(60)));
        if worker.child.try_wait().ok().flatten().is_none() {
            killed_mid_run += 1;
        }
        worker.kill();
    }
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} kills landed mid-run"
    );
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "final");
    assert!(status.success(), "{}", worker.stderr_text());

    let table = read_table(&ws.table());
    assert_eq!(
        table.coordinates(),
        good,
        "every good record once, no bad one"
    );
    let dead = read_table(&ws.path("dead"));
    assert_eq!(
        dead.coordinates(),
        bad,
        "every bad record dead-lettered once"
    );
    for partition in 0..PARTITIONS {
        assert_eq!(
            table.txn_for(TOPIC, partition),
            Some(next[partition as usize])
        );
    }
    // The dead letters were written batch by batch (a commit per batch with bad records,
    // never one per record), and every one has its reason.
    assert!(
        dead.version < (bad.len() as i64) / 4,
        "{} dead-letter commits for {} bad records",
        dead.version,
        bad.len()
    );
    let errors = dead.strings_by_offset("error");
    assert!(
        errors
            .values()
            .all(|e| e.as_deref().is_some_and(|e| !e.is_empty()))
    );
}
