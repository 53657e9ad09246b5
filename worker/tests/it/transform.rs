//! spec.transform.sql and outputMode update under kill -9, on Apache Kafka: the table ends as
//! the produced records imply, whatever the worker was doing when it died.
//!
//! - transform: rows filtered out by the query still advance the offsets, the others land once
//!   with their derived columns (one of them the partition column).
//! - update: one row per key, holding the value of its last offset; a tombstone deletes its key.

use std::collections::BTreeMap;
use std::time::Duration;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use rdkafka::producer::{BaseRecord, Producer};

use crate::support::*;

const PARTITIONS: i32 = 4;

/// A string column as `Utf8`: files a MERGE wrote (through DataFusion) declare string views.
fn strings(
    batch: &deltalake::arrow::array::RecordBatch,
    name: &str,
) -> deltalake::arrow::array::ArrayRef {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    deltalake::arrow::compute::cast(column, &deltalake::arrow::datatypes::DataType::Utf8)
        .expect("a string column")
}

/// Runs `rounds` workers on `path`, each killed with SIGKILL after a random number of batches
/// and a random part of the next; `between` runs after each kill (producers keep writing).
/// Returns how many kills landed before the run had finished.
fn kill_loop(
    ws: &Workspace,
    path: &std::path::Path,
    broker: &Broker,
    rounds: usize,
    mut between: impl FnMut(),
) -> usize {
    let mut random = Random::from_time();
    let mut killed_mid_run = 0;
    for round in 0..rounds {
        let mut worker = Worker::start(ws, path, &broker.bootstrap, &format!("round{round}"));
        let batches = 1 + random.below(8) as usize;
        wait_for("batches or exit", Duration::from_secs(90), || {
            worker.progress().len() >= batches || worker.child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(Duration::from_millis(random.below(60)));
        if worker.child.try_wait().ok().flatten().is_none() {
            killed_mid_run += 1;
        }
        worker.kill();
        between();
    }
    killed_mid_run
}

/// The run's targets, as the checkpoint recorded them when the first attempt planned them.
fn targets(ws: &Workspace, topic: &str) -> BTreeMap<(String, i32), i64> {
    let run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ws.path("checkpoint").join("availableNow")).expect("availableNow file"),
    )
    .expect("json");
    run["targets"][topic]
        .as_object()
        .expect("targets")
        .iter()
        .map(|(partition, offset)| {
            (
                (topic.to_string(), partition.parse::<i32>().expect("p")),
                offset.as_i64().expect("o"),
            )
        })
        .collect()
}

#[test]
fn a_transform_filters_and_derives_exactly_once_under_kill_9() {
    const TOPIC: &str = "readings";
    let broker = Broker::start();
    broker.topic(TOPIC, PARTITIONS);
    // Record i goes to partition i % 4, at offset i / 4, with temperature i.
    let mut produced = 0;
    let mut produce = |count: usize| {
        for i in produced..produced + count {
            broker.send(
                TOPIC,
                (i % PARTITIONS as usize) as i32,
                None,
                reading(i, if i % 5 == 0 { "test" } else { "oslo" }, i as f64).as_bytes(),
            );
        }
        broker.flush();
        produced += count;
    };
    produce(8_000);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "transform", TOPIC);
    manifest.on_error = "fail";
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 200");
    manifest.metadata = "[topic, partition, offset]";
    manifest.extra_format = r#"  transform:
    sql: |
      SELECT device_id AS device,
             temperature * 2 AS doubled,
             CAST("timestamp" AS DATE) AS day,
             kafka_topic, kafka_partition, kafka_offset
      FROM input
      WHERE site <> 'test'"#
        .to_string();
    manifest.sink_extra = "      partitionBy: [day]";
    let path = ws.write("m.yaml", &manifest.render());
    let killed = kill_loop(&ws, &path, &broker, 6, || produce(400));
    assert!(killed >= 3, "only {killed} kills landed mid-run");
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "final");
    assert!(status.success(), "{}", worker.stderr_text());

    let ends = targets(&ws, TOPIC);
    // The last run's targets: everything produced before it started (a run the kills did not
    // interrupt ended, and the next round planned new targets).
    assert!(ends.values().sum::<i64>() >= 8_000, "{ends:?}");
    let table = read_table(&ws.table());
    assert_eq!(table.partition_columns, vec!["day".to_string()]);
    // Every record the query keeps, once; the ones it filters out, never.
    let index =
        |partition: i32, offset: i64| offset as usize * PARTITIONS as usize + partition as usize;
    let expected: Vec<(String, i32, i64)> = expected_coordinates(&ends)
        .into_iter()
        .filter(|(_, p, o)| index(*p, *o) % 5 != 0)
        .collect();
    assert_eq!(table.coordinates(), expected);
    let mut checked = 0;
    for batch in &table.batches {
        let partitions = batch
            .column_by_name("kafka_partition")
            .expect("kafka_partition")
            .as_primitive::<Int32Type>();
        let offsets = batch
            .column_by_name("kafka_offset")
            .expect("kafka_offset")
            .as_primitive::<Int64Type>();
        let doubled = batch
            .column_by_name("doubled")
            .expect("doubled")
            .as_primitive::<Float64Type>();
        let devices = strings(batch, "device");
        let devices = devices.as_string::<i32>();
        let days = strings(batch, "day");
        let days = days.as_string::<i32>();
        for row in 0..batch.num_rows() {
            let i = index(partitions.value(row), offsets.value(row));
            assert_eq!(doubled.value(row), 2.0 * i as f64);
            assert_eq!(devices.value(row), format!("d-{i}"));
            assert_eq!(days.value(row), "2026-01-01");
            checked += 1;
        }
    }
    assert_eq!(checked, expected.len());
    // Filtered records advanced the offsets too: every partition ends at its target.
    for ((topic, partition), end) in &ends {
        assert_eq!(table.txn_for(topic, *partition), Some(*end));
    }
}

/// The keyed stream of the update test: record i updates key i % KEYS (always on the same
/// partition), and every 7th key is deleted by a tombstone at the end of some rounds.
struct KeyedStream {
    producer: rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    next: usize,
    /// key -> Some(value of its last record) or None (deleted).
    state: BTreeMap<String, Option<i64>>,
}

const KEYS: usize = 60;
const UPDATE_TOPIC: &str = "device-state";

impl KeyedStream {
    fn partition(key: usize) -> i32 {
        (key % PARTITIONS as usize) as i32
    }

    fn produce(&mut self, count: usize) {
        for i in self.next..self.next + count {
            let key = i % KEYS;
            let name = format!("k-{key}");
            let value = format!(r#"{{"temperature":{i},"site":"s-{}"}}"#, i % 3);
            send(
                &self.producer,
                UPDATE_TOPIC,
                Self::partition(key),
                Some(name.as_bytes()),
                value.as_bytes(),
            );
            self.state.insert(name, Some(i as i64));
        }
        self.next += count;
        self.flush();
    }

    /// Tombstones for every 7th key (some of them absent already: deleting nothing).
    fn delete_some(&mut self) {
        for key in (0..KEYS).step_by(7) {
            let name = format!("k-{key}");
            let record = BaseRecord::<[u8], [u8]>::to(UPDATE_TOPIC)
                .partition(Self::partition(key))
                .key(name.as_bytes());
            self.producer
                .send(record)
                .map_err(|(e, _)| e)
                .expect("send a tombstone");
            self.state.insert(name, None);
        }
        self.flush();
    }

    fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(60))
            .expect("flush the producer");
    }
}

#[test]
fn update_mode_keeps_each_keys_last_value_and_deletes_on_tombstones_under_kill_9() {
    let broker = Broker::start();
    broker.topic(UPDATE_TOPIC, PARTITIONS);
    let mut stream = KeyedStream {
        producer: producer(&broker.bootstrap),
        next: 0,
        state: BTreeMap::new(),
    };
    stream.produce(3_000);
    stream.delete_some();
    stream.produce(500);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "update", UPDATE_TOPIC);
    manifest.schema = r#"
        - {name: temperature, type: long}
        - {name: site, type: string}"#;
    manifest.on_error = "fail";
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 100");
    manifest.metadata = "[key, partition, offset]";
    manifest.extra_format = r#"  transform:
    sql: |
      SELECT CAST(kafka_key AS STRING) AS device, temperature, site,
             kafka_partition, kafka_offset
      FROM input"#
        .to_string();
    manifest.sink_extra =
        "      outputMode: update\n      mergeKeys: [device]\n      deleteOnTombstone: true";
    let path = ws.write("m.yaml", &manifest.render());
    // Between kills more updates come, and once more tombstones, after the run's targets.
    let mut round = 0;
    let killed = kill_loop(&ws, &path, &broker, 5, || {
        round += 1;
        if round == 2 {
            stream.delete_some();
        }
        stream.produce(200);
    });
    assert!(killed >= 2, "only {killed} kills landed mid-run");
    // The first run ends at its first targets; a second availableNow run reads the rest,
    // ending with tombstones no update follows.
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "first-run");
    assert!(status.success(), "{}", worker.stderr_text());
    stream.delete_some();
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "second-run");
    assert!(status.success(), "{}", worker.stderr_text());

    let table = read_table(&ws.table());
    let mut found: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for batch in &table.batches {
        let devices = strings(batch, "device");
        let devices = devices.as_string::<i32>();
        let temperatures = batch
            .column_by_name("temperature")
            .expect("temperature")
            .as_primitive::<Int64Type>();
        let offsets = batch
            .column_by_name("kafka_offset")
            .expect("kafka_offset")
            .as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let previous = found.insert(
                devices.value(row).to_string(),
                (temperatures.value(row), offsets.value(row)),
            );
            assert!(previous.is_none(), "{} twice", devices.value(row));
            assert!(!temperatures.is_null(row));
        }
    }
    let expected: BTreeMap<String, i64> = stream
        .state
        .iter()
        .filter_map(|(key, value)| value.map(|v| (key.clone(), v)))
        .collect();
    let values: BTreeMap<String, i64> = found.iter().map(|(k, (v, _))| (k.clone(), *v)).collect();
    assert_eq!(values, expected);
    assert!(
        expected.len() < KEYS,
        "some keys stay deleted: {}",
        expected.len()
    );
    // Every partition's offset is at its end: all produced records were merged, once.
    let ends: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| (p, broker.watermarks(UPDATE_TOPIC, p).1))
        .collect();
    for (partition, end) in &ends {
        assert_eq!(table.txn_for(UPDATE_TOPIC, *partition), Some(*end));
    }
    // Each row holds its key's last record.
    for (key, (_, offset)) in &found {
        let number: usize = key.trim_start_matches("k-").parse().expect("key number");
        assert!(*offset < ends[&KeyedStream::partition(number)]);
    }
}
