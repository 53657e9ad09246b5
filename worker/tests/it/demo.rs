//! `tributary-worker demo`: the README's first command works and its table is what it says.

use std::process::Command;

use crate::support::*;

#[test]
fn demo_ingests_the_sensor_readings_and_exits_zero() {
    let ws = Workspace::new();
    let dir = ws.path("lake");
    let output = Command::new(WORKER)
        .args(["demo", "--dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Ingested 5000 rows into"), "{stdout}");
    let table = read_table(&dir.join("sensor_readings"));
    assert_eq!(table.rows(), 5000);
    let rescued = table.batches.iter().map(|b| {
        let column = b.column_by_name("_rescued_data").expect("_rescued_data");
        column.len() - deltalake::arrow::array::Array::null_count(column.as_ref())
    });
    let rescued: usize = rescued.sum();
    assert!(
        stdout.contains(&format!(
            "rescued rows (bad input kept in _rescued_data): {rescued}"
        )),
        "{stdout}"
    );
    assert!(rescued > 0);
    // Every partition and offset of the demo topic, once.
    let mut seen = table.coordinates();
    seen.dedup();
    assert_eq!(seen.len(), 5000);
}

/// README's standalone steps: `tributary-worker broker` in one terminal, `run --local-root` of
/// an example as written in another; nothing is written to the example's `/lake` or
/// `/checkpoints` mount paths.
#[test]
fn an_example_runs_as_written_against_the_standalone_broker() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let ws = Workspace::new();
    let mut broker = Command::new(WORKER)
        .args(["broker", "--per-second", "5"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the broker");
    let stdout = broker.stdout.take().expect("stdout");
    let mut first_line = String::new();
    // The address comes after the 5,000 readings are produced: a few seconds at most.
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .read_line(&mut first_line)
            .map(|_| first_line)
    });
    wait_for(
        "the broker's address",
        std::time::Duration::from_secs(60),
        || reader.is_finished(),
    );
    let bootstrap = reader.join().expect("reader").expect("read stdout");
    let bootstrap = bootstrap.trim();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap:?}");

    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/sensor-readings-available-now.yaml");
    let root = ws.path("local-lake");
    let output = Command::new(WORKER)
        .args(["run", "-f"])
        .arg(&example)
        .args(["--bootstrap-servers", bootstrap, "--local-root"])
        .arg(&root)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the example");
    let _ = broker.kill();
    let _ = broker.wait();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = read_table(&root.join("lake/bronze/iot/sensor_readings_batch"));
    assert!(table.rows() >= 5000, "{} rows", table.rows());
    let mut seen = table.coordinates();
    let all = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), all, "a record landed twice");
    assert!(root.join("checkpoints/sensor-readings-batch").is_dir());
}
