//! Schema evolution, as Spark's mergeSchema: a field added to the declared schema becomes a
//! nullable column of the existing table in the first commit that carries it, only when
//! spec.sink.delta.mergeSchema allows it; a dropped column is refused with a message.

use deltalake::arrow::array::{Array, AsArray};
use serde_json::Value;

use crate::support::*;

const TOPIC: &str = "readings";

/// SENSOR_SCHEMA and one more field.
const WITH_NOTE: &str = r#"
        - {name: device_id, type: string, nullable: false}
        - {name: site, type: string}
        - {name: temperature, type: double}
        - {name: battery_pct, type: int}
        - {name: timestamp, type: timestamp}
        - {name: note, type: string}"#;

/// SENSOR_SCHEMA without `site`.
const WITHOUT_SITE: &str = r#"
        - {name: device_id, type: string, nullable: false}
        - {name: temperature, type: double}
        - {name: battery_pct, type: int}
        - {name: timestamp, type: timestamp}"#;

/// The actions of each commit in the table's log, by version.
fn commits(table: &std::path::Path) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for version in 0.. {
        let path = table.join(format!("_delta_log/{version:020}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            break;
        };
        out.push(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("action"))
                .collect(),
        );
    }
    out
}

/// The `note` of every row, old rows (files without the column) as None.
fn notes(table: &TableSnapshot) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for batch in &table.batches {
        match batch.column_by_name("note") {
            None => out.extend(std::iter::repeat_n(None, batch.num_rows())),
            Some(column) => {
                let column = column.as_string::<i32>();
                out.extend(
                    (0..batch.num_rows())
                        .map(|i| (!column.is_null(i)).then(|| column.value(i).to_string())),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_added_field_is_refused_by_default_and_added_as_a_nullable_column_with_merge_schema() {
    let broker = Broker::start();
    broker.topic(TOPIC, 1);
    broker.send(TOPIC, 0, None, reading(1, "oslo", 1.0).as_bytes());
    broker.send(TOPIC, 0, None, reading(2, "oslo", 2.0).as_bytes());
    broker.flush();
    let ws = Workspace::new();
    let first = ws.write(
        "a.yaml",
        &Manifest::subscribe(&ws, "evolving", TOPIC).render(),
    );
    let (worker, status) = run_to_end(&ws, &first, &broker.bootstrap, "a");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_eq!(read_table(&ws.table()).rows(), 2);

    broker.send(
        TOPIC,
        0,
        None,
        br#"{"device_id":"d-3","site":"oslo","temperature":3.0,"note":"new"}"#,
    );
    broker.flush();
    // The same query with one more field: Spark's default refuses the table, and so does this.
    let mut evolved = Manifest::subscribe(&ws, "evolving", TOPIC);
    evolved.schema = WITH_NOTE;
    let refused = ws.write("b.yaml", &evolved.render());
    let stderr = run_refused(
        &ws,
        &refused,
        &broker.bootstrap,
        "b",
        "a table without the new field must be refused",
    );
    assert!(stderr.contains("does not fit this ingestion"), "{stderr}");
    assert!(
        stderr.contains("column note (string) is not in the table")
            && stderr.contains("mergeSchema: true"),
        "{stderr}"
    );
    let versions_before = commits(&ws.table()).len();
    assert_eq!(read_table(&ws.table()).rows(), 2);

    evolved.sink_extra = "      mergeSchema: true";
    let merging = ws.write("c.yaml", &evolved.render());
    let (worker, status) = run_to_end(&ws, &merging, &broker.bootstrap, "c");
    assert!(status.success(), "{}", worker.stderr_text());
    let table = read_table(&ws.table());
    assert_eq!(table.rows(), 3);
    assert_eq!(notes(&table), vec![None, None, Some("new".to_string())]);
    let schema: Value = serde_json::from_str(&table.schema_string).expect("schema");
    let note = schema["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == "note")
        .expect("the table has the note column");
    assert_eq!(note["type"], "string");
    assert_eq!(note["nullable"], true);
    // The column arrived in the commit that carries its first rows and their offsets.
    let log = commits(&ws.table());
    let evolving = log
        .iter()
        .position(|actions| {
            actions.iter().any(|a| {
                a["metaData"]["schemaString"]
                    .as_str()
                    .is_some_and(|s| s.contains("\"note\""))
            })
        })
        .expect("a commit adds the column");
    assert_eq!(
        evolving, versions_before,
        "the first commit after the refusal"
    );
    let actions = &log[evolving];
    assert!(
        actions.iter().any(|a| a.get("add").is_some()),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|a| a.get("txn").is_some()),
        "{actions:?}"
    );

    // A field dropped from the schema is refused, naming the column and its type.
    let mut dropped = Manifest::subscribe(&ws, "evolving", TOPIC);
    dropped.schema = WITHOUT_SITE;
    dropped.sink_extra = "      mergeSchema: true";
    let dropped = ws.write("d.yaml", &dropped.render());
    let stderr = run_refused(
        &ws,
        &dropped,
        &broker.bootstrap,
        "d",
        "a field dropped from the schema must be refused",
    );
    assert!(
        stderr.contains("the table has a column site (string) that this ingestion does not write"),
        "{stderr}"
    );
    assert_eq!(read_table(&ws.table()).rows(), 3);
}

/// The commits whose metadata adds `note`.
fn evolving_commits(table: &std::path::Path) -> Vec<usize> {
    commits(table)
        .iter()
        .enumerate()
        .filter(|(_, actions)| {
            actions.iter().any(|a| {
                a["metaData"]["schemaString"]
                    .as_str()
                    .is_some_and(|s| s.contains("\"note\""))
            })
        })
        .map(|(version, _)| version)
        .collect()
}

#[test]
fn a_worker_killed_around_the_evolving_commit_adds_the_column_once_and_every_row_once() {
    const PARTITIONS: i32 = 2;
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    for i in 0..200 {
        let value = reading(i, "oslo", 1.0);
        broker.send(TOPIC, i as i32 % PARTITIONS, None, value.as_bytes());
    }
    broker.flush();
    let ws = Workspace::new();
    let first = ws.write(
        "a.yaml",
        &Manifest::subscribe(&ws, "killed", TOPIC).render(),
    );
    let (worker, status) = run_to_end(&ws, &first, &broker.bootstrap, "first");
    assert!(status.success(), "{}", worker.stderr_text());
    for i in 200..3200 {
        let value = format!(r#"{{"device_id":"d-{i}","site":"oslo","note":"n-{i}"}}"#);
        broker.send(TOPIC, i % PARTITIONS, None, value.as_bytes());
    }
    broker.flush();

    let mut evolved = Manifest::subscribe(&ws, "killed", TOPIC);
    evolved.schema = WITH_NOTE;
    evolved.sink_extra = "      mergeSchema: true";
    evolved.source.push_str("\n      maxOffsetsPerTrigger: 200");
    let path = ws.write("b.yaml", &evolved.render());
    // Kill -9 ever later (20 ms more each time) after the start until a kill lands after the
    // evolving commit: the kills before it land in the start, the read, the Parquet writes
    // and the commit of the batch that evolves the table.
    let mut delay_ms = 40;
    let mut kills_before = 0;
    for round in 0.. {
        assert!(round < 100, "the evolving commit never landed");
        let mut worker = Worker::start(&ws, &path, &broker.bootstrap, &format!("round{round}"));
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        worker.kill();
        if evolving_commits(&ws.table()).is_empty() {
            kills_before += 1;
            delay_ms += 20;
        } else {
            break;
        }
    }
    println!(
        "{kills_before} kills before the evolving commit, the last one {delay_ms} ms after start"
    );
    assert!(
        kills_before >= 1,
        "no kill landed before the evolving commit"
    );
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "final");
    assert!(status.success(), "{}", worker.stderr_text());

    assert_eq!(
        evolving_commits(&ws.table()).len(),
        1,
        "the column is added once"
    );
    let table = read_table(&ws.table());
    let mut ends = std::collections::BTreeMap::new();
    for p in 0..PARTITIONS {
        ends.insert((TOPIC.to_string(), p), 1600);
    }
    let coordinates = table.coordinates();
    assert_eq!(coordinates, expected_coordinates(&ends), "every row once");
    let notes = notes(&table);
    assert_eq!(notes.iter().filter(|n| n.is_none()).count(), 200);
    assert_eq!(notes.iter().filter(|n| n.is_some()).count(), 3000);
}
