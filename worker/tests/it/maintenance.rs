//! Table upkeep beside a running query: compaction replaces small files, VACUUM deletes the
//! replaced ones once past the retention, and the table keeps every row exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exactly_once::assert_exactly_once;
use crate::support::*;

const TOPIC: &str = "upkeep";
const PARTITIONS: i32 = 2;

/// Every Parquet file under the table's directory.
fn parquet_files(table: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![table.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a table directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "_delta_log") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found
}

/// Operations named in the table's commits, in version order.
fn operations(table: &Path) -> Vec<String> {
    commit_infos(table)
        .iter()
        .filter_map(|info| Some(info["operation"].as_str()?.to_string()))
        .collect()
}

#[test]
fn vacuum_deletes_the_files_compaction_replaced_and_every_row_stays_once() {
    let env = [
        ("TRIBUTARY_COMPACTION_INTERVAL_SECONDS", "1"),
        ("TRIBUTARY_COMPACTION_MIN_FILES", "3"),
        ("TRIBUTARY_VACUUM_INTERVAL_SECONDS", "2"),
    ];
    let broker = MockBroker::start();
    broker.topic(TOPIC, PARTITIONS);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "upkeep", TOPIC);
    manifest.trigger = "{}";
    manifest.source.push_str("\n      maxOffsetsPerTrigger: 50");
    // No retention at all: a file is deleted as soon as compaction replaced it.
    manifest.sink_extra =
        "      vacuum: {intervalHours: 24, retainHours: 0, retentionDurationCheck: false}";
    let path = ws.write("m.yaml", &manifest.render());
    let mut worker = Worker::start_with_env(&ws, &path, &broker.bootstrap, "upkeep", &env);
    let records = 600;
    for i in 0..records {
        broker.send(
            TOPIC,
            (i % PARTITIONS as usize) as i32,
            None,
            reading(i, "bergen", i as f64).as_bytes(),
        );
    }
    broker.flush();
    let ends: BTreeMap<(String, i32), i64> = (0..PARTITIONS)
        .map(|p| {
            (
                (TOPIC.to_string(), p),
                (records / PARTITIONS as usize) as i64,
            )
        })
        .collect();
    let table = ws.table();
    // The worker may not have created the table yet, and with no retention a VACUUM can delete
    // a file between our log replay and its read: both just mean "look again".
    wait_for("every record in the table", Duration::from_secs(60), || {
        try_read_table(&table).is_ok_and(|t| t.rows() == records)
    });
    wait_for(
        "a compaction, then a VACUUM after it",
        Duration::from_secs(60),
        || {
            let ops = operations(&table);
            let compacted = ops.iter().position(|o| o == "OPTIMIZE");
            compacted.is_some_and(|at| ops[at..].iter().any(|o| o == "VACUUM END"))
        },
    );
    // The replaced files are gone from storage; the live ones stay.
    wait_for(
        "only live files on storage",
        Duration::from_secs(30),
        || try_read_table(&table).is_ok_and(|t| parquet_files(&table).len() == t.files),
    );
    worker.terminate();
    let status = worker.wait(Duration::from_secs(30));
    assert!(status.success(), "{}", worker.stderr_text());
    assert_exactly_once(&ws, &ends);
    assert!(
        worker.stderr_text().contains("vacuumed files unreferenced"),
        "{}",
        worker.stderr_text()
    );
}

#[test]
fn a_short_retention_is_refused_unless_the_check_is_turned_off() {
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "short", TOPIC);
    manifest.sink_extra = "      vacuum: {intervalHours: 24, retainHours: 1}";
    let path = ws.write("m.yaml", &manifest.render());
    let mut worker = Worker::start(&ws, &path, "127.0.0.1:1", "short");
    let status = worker.wait(Duration::from_secs(30));
    assert!(!status.success());
    let stderr = worker.stderr_text();
    assert!(
        stderr.contains("spec.sink.delta.vacuum.retainHours")
            && stderr.contains("retentionDurationCheck: false"),
        "{stderr}"
    );
}

/// The table's configuration as its last metaData action in the log says.
fn table_configuration(table: &Path) -> BTreeMap<String, String> {
    let mut commits: Vec<(i64, PathBuf)> = std::fs::read_dir(table.join("_delta_log"))
        .expect("the table's log")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let version = path.file_stem()?.to_str()?.parse().ok()?;
            (path.extension()? == "json").then_some((version, path))
        })
        .collect();
    commits.sort();
    let mut configuration = BTreeMap::new();
    for (_, path) in commits {
        for line in std::fs::read_to_string(&path).expect("a commit").lines() {
            let action: serde_json::Value = serde_json::from_str(line).expect("an action");
            if let Some(found) = action["metaData"]["configuration"].as_object() {
                configuration = found
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
            }
        }
    }
    configuration
}

#[test]
fn table_properties_are_set_on_create_and_again_only_when_the_spec_changes_them() {
    let broker = MockBroker::start();
    broker.topic(TOPIC, 1);
    for i in 0..20 {
        broker.send(TOPIC, 0, None, reading(i, "oslo", 1.0).as_bytes());
    }
    broker.flush();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "properties", TOPIC);
    manifest.sink_extra = "      logRetentionDuration: interval 60 days\n      deletedFileRetentionDuration: interval 14 days";
    let run = |manifest: &Manifest, tag: &str| {
        let path = ws.write("m.yaml", &manifest.render());
        let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, tag);
        assert!(status.success(), "{}", worker.stderr_text());
    };
    run(&manifest, "create");
    let configuration = table_configuration(&ws.table());
    assert_eq!(
        configuration["delta.logRetentionDuration"],
        "interval 60 days"
    );
    assert_eq!(
        configuration["delta.deletedFileRetentionDuration"],
        "interval 14 days"
    );
    assert_eq!(
        configuration["delta.checkpointInterval"], "10",
        "the default"
    );
    assert!(!operations(&ws.table()).contains(&"SET TBLPROPERTIES".to_string()));

    // Changed in the spec: one SET TBLPROPERTIES commit with the new values.
    manifest.sink_extra = "      logRetentionDuration: interval 90 days\n      deletedFileRetentionDuration: interval 14 days\n      checkpointInterval: 25";
    run(&manifest, "change");
    let configuration = table_configuration(&ws.table());
    assert_eq!(
        configuration["delta.logRetentionDuration"],
        "interval 90 days"
    );
    assert_eq!(
        configuration["delta.deletedFileRetentionDuration"],
        "interval 14 days"
    );
    assert_eq!(configuration["delta.checkpointInterval"], "25");
    let set = |ws: &Workspace| {
        commit_infos(&ws.table())
            .into_iter()
            .filter(|info| info["operation"] == "SET TBLPROPERTIES")
            .collect::<Vec<_>>()
    };
    let sets = set(&ws);
    assert_eq!(sets.len(), 1, "{sets:?}");
    let changed = sets[0]["operationParameters"]["properties"]
        .as_str()
        .expect("properties");
    assert!(
        changed.contains("delta.logRetentionDuration")
            && changed.contains("delta.checkpointInterval")
            && !changed.contains("deletedFileRetentionDuration"),
        "only what changed: {changed}"
    );

    // The same spec again: nothing to set. Without the fields, the table keeps its values.
    run(&manifest, "same");
    manifest.sink_extra = "";
    run(&manifest, "unset");
    assert_eq!(set(&ws).len(), 1);
    assert_eq!(
        table_configuration(&ws.table())["delta.checkpointInterval"],
        "25"
    );
}
