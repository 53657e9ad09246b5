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
