//! Values that are not JSON text: a tombstone (a record with no value) and an empty value are
//! kept apart in the table, in `_rescued_data` and in the dead letters.

use std::time::Duration;

use rdkafka::producer::{BaseRecord, Producer};

use crate::support::*;

/// Offset 0: a reading; 1: a tombstone; 2: an empty value; 3: a reading.
fn produce_values(broker: &Broker) {
    broker.topic("t", 1);
    let producer = producer(&broker.bootstrap);
    let send = |record: BaseRecord<'_, [u8], [u8]>| {
        producer.send(record).map_err(|(e, _)| e).expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
    };
    let first = reading(1, "oslo", 1.0);
    send(
        BaseRecord::to("t")
            .partition(0)
            .key(b"k1".as_slice())
            .payload(first.as_bytes()),
    );
    send(BaseRecord::to("t").partition(0).key(b"k1".as_slice()));
    send(
        BaseRecord::to("t")
            .partition(0)
            .key(b"k2".as_slice())
            .payload(b"".as_slice()),
    );
    let last = reading(2, "rome", 2.0);
    send(BaseRecord::to("t").partition(0).payload(last.as_bytes()));
}

#[test]
fn a_tombstone_and_an_empty_value_are_kept_apart() {
    let broker = Broker::start();
    produce_values(&broker);
    // The schema without nullable: false fields: a tombstone can be a row in every mode.
    const SCHEMA: &str = r#"
        - {name: device_id, type: string}
        - {name: site, type: string}
        - {name: temperature, type: double}
        - {name: battery_pct, type: int}
        - {name: timestamp, type: timestamp}"#;

    // rescue: four rows; the empty value is rescued as "", the tombstone's _rescued_data is
    // null (Spark's from_json(null) is a null struct, not a corrupt record).
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "values", "t");
    manifest.schema = SCHEMA;
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "rescue");
    assert!(status.success(), "{}", worker.stderr_text());
    let table = read_table(&ws.table());
    assert_eq!(table.rows(), 4);
    let rescued = table.strings_by_offset("_rescued_data");
    let devices = table.strings_by_offset("device_id");
    assert_eq!(rescued[&(0, 0)], None);
    assert_eq!(rescued[&(0, 1)], None, "a tombstone is not rescued");
    assert_eq!(devices[&(0, 1)], None, "a tombstone's row is all null");
    assert_eq!(
        rescued[&(0, 2)].as_deref(),
        Some(""),
        "an empty value is rescued as \"\""
    );
    assert_eq!(devices[&(0, 3)].as_deref(), Some("d-2"));
    let rescued_total: i64 = worker
        .progress()
        .iter()
        .map(|p| p["sink"]["numRescuedRows"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(rescued_total, 1, "only the empty value is bad input");

    // deadLetter: the tombstone is a row, the empty value a dead letter whose value is an
    // empty binary (a tombstone's would be null).
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "values-dlq", "t");
    manifest.schema = SCHEMA;
    manifest.on_error = "deadLetter";
    manifest.extra_format = format!("      deadLetter: {{uri: {}}}", ws.path("dead").display());
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "dead-letter");
    assert!(status.success(), "{}", worker.stderr_text());
    let offsets: Vec<i64> = read_table(&ws.table())
        .coordinates()
        .iter()
        .map(|c| c.2)
        .collect();
    assert_eq!(offsets, vec![0, 1, 3]);
    let dead = read_table(&ws.path("dead"));
    let texts = dead.strings_by_offset("value_text");
    let errors = dead.strings_by_offset("error");
    assert_eq!(texts.keys().copied().collect::<Vec<_>>(), vec![(0, 2)]);
    assert_eq!(texts[&(0, 2)].as_deref(), Some(""));
    assert!(
        errors[&(0, 2)]
            .as_deref()
            .is_some_and(|e| e.contains("the value is empty (0 bytes)")),
        "{errors:?}"
    );

    // fail with a nullable: false field: the tombstone stops the query, named as one.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "values-fail", "t");
    manifest.on_error = "fail";
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "fail",
        "a tombstone with a nullable: false field must stop the query",
    );
    assert!(
        stderr.contains("offset 1")
            && stderr.contains("is a tombstone (no value), so field \"device_id\" is null"),
        "{stderr}"
    );
}

#[test]
fn format_raw_keeps_values_and_keys_as_they_came() {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::Int64Type;
    let broker = Broker::start();
    produce_values(&broker);
    let producer = producer(&broker.bootstrap);
    // Offset 4: bytes that are not UTF-8.
    producer
        .send(
            BaseRecord::<[u8], [u8]>::to("t")
                .partition(0)
                .key(b"k3".as_slice())
                .payload(b"caf\xe9".as_slice()),
        )
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");

    // binary: every record a row, every byte kept; a tombstone's value is null, an empty
    // value empty.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "bronze", "t");
    manifest.schema = "";
    let path = ws.write(
        "m.yaml",
        &manifest.render().replace(
            "    json:\n      schema:\n      onError: rescue\n",
            "    raw: {}\n",
        ),
    );
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "binary");
    assert!(status.success(), "{}", worker.stderr_text());
    let table = read_table(&ws.table());
    assert!(
        table
            .schema_string
            .starts_with(r#"{"type":"struct","fields":[{"name":"key","type":"binary""#)
            && table
                .schema_string
                .contains(r#"{"name":"value","type":"binary""#)
            && !table.schema_string.contains("_rescued_data"),
        "{}",
        table.schema_string
    );
    let mut rows = std::collections::BTreeMap::new();
    for batch in &table.batches {
        let offsets = batch
            .column_by_name("kafka_offset")
            .expect("offset")
            .as_primitive::<Int64Type>();
        let keys = batch.column_by_name("key").expect("key").as_binary::<i32>();
        let values = batch
            .column_by_name("value")
            .expect("value")
            .as_binary::<i32>();
        for i in 0..batch.num_rows() {
            rows.insert(
                offsets.value(i),
                (
                    (!keys.is_null(i)).then(|| keys.value(i).to_vec()),
                    (!values.is_null(i)).then(|| values.value(i).to_vec()),
                ),
            );
        }
    }
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[&0].1.as_deref(),
        Some(reading(1, "oslo", 1.0).as_bytes())
    );
    assert_eq!(rows[&1], (Some(b"k1".to_vec()), None), "a tombstone");
    assert_eq!(
        rows[&2],
        (Some(b"k2".to_vec()), Some(Vec::new())),
        "an empty value"
    );
    assert_eq!(rows[&3].0, None, "no key");
    assert_eq!(
        rows[&4].1.as_deref(),
        Some(b"caf\xe9".as_slice()),
        "every byte"
    );

    // string: the text; the value that is not UTF-8 stops the query, named, after the rows
    // before it... in the same batch, so nothing of that batch is written.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "bronze-text", "t");
    manifest.schema = "";
    let path = ws.write(
        "m.yaml",
        &manifest.render().replace(
            "    json:\n      schema:\n      onError: rescue\n",
            "    raw: {valueType: string, keyType: string}\n",
        ),
    );
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "string",
        "a value that is not UTF-8 must stop a string query",
    );
    assert!(
        stderr.contains("offset 4")
            && stderr.contains("the value is not UTF-8")
            && stderr.contains("format.raw.valueType: binary"),
        "{stderr}"
    );
}
