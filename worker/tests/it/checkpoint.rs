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
    let (worker, status) = run_to_end(&ws, &second, &broker.bootstrap, "b");
    assert!(!status.success());
    let stderr = worker.stderr_text();
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
    let (worker, status) = run_to_end(&ws, &second, &broker.bootstrap, "b");
    assert!(!status.success());
    let stderr = worker.stderr_text();
    assert!(stderr.contains("does not fit this ingestion"), "{stderr}");
    assert!(
        stderr.contains("column device_id is string in the table but long"),
        "{stderr}"
    );
    assert_eq!(read_table(&ws.table()).rows(), 1);
}
