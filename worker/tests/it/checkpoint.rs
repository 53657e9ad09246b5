//! The checkpoint location and the table belong to one query.

use crate::support::*;

#[test]
fn a_claimed_checkpoint_is_refused_naming_its_owner() {
    let broker = Broker::start();
    broker.topic("t", 1);
    broker.send("t", 0, None, reading(1, "oslo", 1.0).as_bytes());
    broker.flush();
    let ws = Workspace::new();
    let first = ws.write("a.yaml", &Manifest::subscribe(&ws, "first", "t").render());
    let (worker, status) = run_to_end(&ws, &first, &broker.bootstrap, "a");
    assert!(status.success(), "{}", worker.stderr_text());

    let mut other = Manifest::subscribe(&ws, "second", "t");
    other.table = ws.path("other-table");
    let second = ws.write("b.yaml", &other.render());
    let stderr = run_refused(
        &ws,
        &second,
        &broker.bootstrap,
        "b",
        "a checkpoint claimed by another ingestion must be refused",
    );
    assert!(
        stderr.contains("belongs to ingestion test/first, not test/second"),
        "{stderr}"
    );
    assert!(
        !ws.path("other-table").join("_delta_log").exists(),
        "nothing was written"
    );
}

#[test]
fn a_table_with_another_schema_is_refused() {
    let broker = Broker::start();
    broker.topic("t", 1);
    broker.send("t", 0, None, reading(1, "oslo", 1.0).as_bytes());
    broker.flush();
    let ws = Workspace::new();
    let first = ws.write("a.yaml", &Manifest::subscribe(&ws, "first", "t").render());
    let (worker, status) = run_to_end(&ws, &first, &broker.bootstrap, "a");
    assert!(status.success(), "{}", worker.stderr_text());

    let mut other = Manifest::subscribe(&ws, "second", "t");
    other.checkpoint = ws.path("checkpoint-2");
    other.schema = "\n        - {name: device_id, type: long}";
    let second = ws.write("b.yaml", &other.render());
    let stderr = run_refused(
        &ws,
        &second,
        &broker.bootstrap,
        "b",
        "a table whose schema does not fit must be refused",
    );
    assert!(stderr.contains("does not fit this ingestion"), "{stderr}");
    assert!(
        stderr.contains("column device_id is string in the table but long"),
        "{stderr}"
    );
    assert_eq!(read_table(&ws.table()).rows(), 1);
}

/// A lost checkpoint: a new query would read everything again from its starting offsets. It is
/// refused, naming the query whose offsets the table holds; `spec.checkpoint.queryId` with that
/// query's id resumes from the table's own record, and nothing lands twice.
#[test]
fn a_lost_checkpoint_is_refused_and_the_table_record_resumes_exactly_once() {
    let broker = Broker::start();
    broker.topic("t", 2);
    let send = |from: usize, to: usize| {
        for i in from..to {
            let partition = (i % 2) as i32;
            broker.send("t", partition, None, reading(i, "oslo", 1.0).as_bytes());
        }
        broker.flush();
    };
    send(0, 40);
    let ws = Workspace::new();
    let manifest = ws.write("m.yaml", &Manifest::subscribe(&ws, "lost", "t").render());
    let (worker, status) = run_to_end(&ws, &manifest, &broker.bootstrap, "first");
    assert!(status.success(), "{}", worker.stderr_text());
    let metadata: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.path("checkpoint").join("metadata")).expect("metadata"),
    )
    .expect("json");
    let first_query = metadata["id"].as_str().expect("id").to_string();

    // The checkpoint is lost.
    std::fs::remove_dir_all(ws.path("checkpoint")).expect("remove the checkpoint");
    send(40, 50);
    let stderr = run_refused(
        &ws,
        &manifest,
        &broker.bootstrap,
        "second",
        "a new query over another's offsets must stop",
    );
    assert!(
        stderr.contains(&format!(
            "already holds the offsets query {first_query} wrote"
        )) && stderr.contains("t-0: 20")
            && stderr.contains("write every record twice"),
        "{stderr}"
    );
    assert_eq!(read_table(&ws.table()).rows(), 40, "nothing written twice");

    assert!(
        stderr.contains(&format!("set spec.checkpoint.queryId: {first_query}")),
        "{stderr}"
    );

    // The refused run left a checkpoint of its own new query: queryId does not overwrite it.
    let mut adopting = Manifest::subscribe(&ws, "lost", "t");
    adopting.checkpoint_extra = format!("    queryId: {first_query}");
    let adopting = ws.write("adopt.yaml", &adopting.render());
    let stderr = run_refused(
        &ws,
        &adopting,
        &broker.bootstrap,
        "third",
        "a checkpoint of another query is refused",
    );
    assert!(
        stderr.contains(&format!("not {first_query} (spec.checkpoint.queryId)")),
        "{stderr}"
    );
    assert_eq!(read_table(&ws.table()).rows(), 40, "nothing written");

    // On a new checkpoint, the first query's id continues from the offsets the table records.
    std::fs::remove_dir_all(ws.path("checkpoint")).expect("remove the new checkpoint");
    let (worker, status) = run_to_end(&ws, &adopting, &broker.bootstrap, "fourth");
    assert!(status.success(), "{}", worker.stderr_text());
    let table = read_table(&ws.table());
    let mut seen = table.coordinates();
    assert_eq!(seen.len(), 50, "the 10 new records, once");
    seen.dedup();
    assert_eq!(seen.len(), 50, "no record twice");

    // And it goes on as that query: the next run of the same manifest appends only what is new.
    send(50, 56);
    let (worker, status) = run_to_end(&ws, &adopting, &broker.bootstrap, "fifth");
    assert!(status.success(), "{}", worker.stderr_text());
    let mut seen = read_table(&ws.table()).coordinates();
    seen.dedup();
    assert_eq!(seen.len(), 56, "every record once");
}

/// The micro-batch ids of the table's commits, in version order.
fn committed_batch_ids(table: &std::path::Path) -> Vec<i64> {
    commit_infos(table)
        .iter()
        .filter_map(|info| info["tributary.batchId"].as_i64())
        .collect()
}

/// A checkpoint disk that filled up after a batch was committed loses that batch's progress
/// record; the next run must not give its id to another batch.
#[test]
fn a_batch_whose_progress_record_was_lost_keeps_its_id() {
    let broker = MockBroker::start();
    broker.topic("t", 1);
    for i in 0..10 {
        broker.send("t", 0, None, reading(i, "oslo", 1.0).as_bytes());
    }
    broker.flush();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "lost-progress", "t");
    manifest.source.push_str("\n      maxOffsetsPerTrigger: 5");
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "first");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_eq!(committed_batch_ids(&ws.table()), [0, 1]);

    // The last record was torn by the full disk: a partial line, no newline.
    let log = ws.path("checkpoint").join("progress.jsonl");
    let text = std::fs::read_to_string(&log).expect("progress log");
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().expect("a record");
    let torn = format!("{}\n{}", lines.join("\n"), &last[..last.len() / 2]);
    std::fs::write(&log, torn).expect("tear the last record");

    for i in 10..15 {
        broker.send("t", 0, None, reading(i, "oslo", 1.0).as_bytes());
    }
    broker.flush();
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "second");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_eq!(
        committed_batch_ids(&ws.table()),
        [0, 1, 2],
        "batch 1 is in the table although its record is not"
    );
    let progress = std::fs::read_to_string(&log).expect("progress log");
    let ids: Vec<i64> = progress
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|p| p["batchId"].as_i64())
        .collect();
    assert_eq!(
        ids,
        [0, 2],
        "the torn record is skipped, the next one whole: {progress}"
    );
    assert_eq!(read_table(&ws.table()).rows(), 15);
}
