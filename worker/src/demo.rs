//! `tributary-worker demo`: the README's first command. An embedded Kafka-protocol broker
//! (librdkafka's mock cluster) on 127.0.0.1, a few thousand simulated IoT sensor readings with
//! some malformed ones, and the availableNow sensor example ingesting them into a Delta table.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::error::{Error, Result};
use crate::outputs::Telemetry;
use crate::pipeline::{self, RunSummary};
use crate::tuning::Tuning;

const EXAMPLE: &str = include_str!("../../examples/sensor-readings-available-now.yaml");
const TOPIC: &str = "sensor-readings";
const PARTITIONS: i32 = 4;
const READINGS: usize = 5_000;
/// Every this many readings, one truncated record (the whole value is rescued)...
const MALFORMED_EVERY: usize = 500;
/// ...and one with a field of the wrong type (only that field is rescued).
const WRONG_TYPE_EVERY: usize = 700;

pub fn run(
    dir: &Path,
    tuning: &Tuning,
    stop: Arc<AtomicBool>,
    runtime: &tokio::runtime::Runtime,
) -> Result<RunSummary> {
    std::fs::create_dir_all(dir).map_err(Error::checkpoint("create the demo directory", dir))?;
    let dir = dir
        .canonicalize()
        .map_err(Error::checkpoint("resolve the demo directory", dir))?;
    let table = dir.join("sensor_readings");
    let checkpoint = dir.join("_checkpoints").join("sensor_readings");
    // Each demo starts a new broker whose offsets start at 0 again, so the previous demo's
    // table and checkpoint (which remember offsets of the old broker) are replaced.
    for old in [&table, &checkpoint] {
        if old.exists() {
            std::fs::remove_dir_all(old)
                .map_err(Error::checkpoint("remove the previous demo run", old))?;
        }
    }

    let (cluster, bootstrap) = start_broker()?;
    eprintln!("embedded Kafka broker on {bootstrap}, topic {TOPIC} with {PARTITIONS} partitions");
    let (produced, bad) = produce_readings(&bootstrap)?;
    eprintln!("produced {produced} sensor readings, {bad} of them malformed");

    let mut ingestion =
        tributary_crds::manifest::load_str(EXAMPLE, "examples/sensor-readings-available-now.yaml")?
            .remove(0);
    ingestion.spec.sink.delta.uri = Some(table.display().to_string());
    ingestion.spec.sink.delta.volume = None;
    ingestion.spec.checkpoint.location = checkpoint.display().to_string();
    ingestion.spec.checkpoint.volume = None;
    let summary = pipeline::run(
        &ingestion,
        Some(&bootstrap),
        tuning,
        stop,
        runtime.handle().clone(),
        Telemetry::default(),
        None,
    )?;
    drop(cluster);

    println!();
    println!(
        "Ingested {} rows into {}",
        summary.output_rows, summary.table
    );
    println!(
        "  rescued rows (bad input kept in _rescued_data): {}",
        summary.rescued_rows
    );
    println!("  micro-batches: {}", summary.batches);
    println!("  Parquet files written: {}", summary.files);
    println!(
        "  Delta version: {}",
        summary
            .delta_version
            .map_or_else(|| "-".into(), |v| v.to_string())
    );
    println!(
        "  checkpoint: {} (query id {})",
        checkpoint.display(),
        summary.query_id
    );
    println!(
        "Read it with any Delta reader, e.g. in Python: deltalake.DeltaTable(\"{}\").to_pandas()",
        summary.table
    );
    Ok(summary)
}

/// Produces the demo's readings; returns how many, and how many are malformed.
fn produce_readings(bootstrap: &str) -> Result<(usize, usize)> {
    let producer = producer(bootstrap)?;
    let mut readings = Readings::new();
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    let mut bad = 0;
    for i in 0..READINGS {
        let reading = readings.next(start + chrono::Duration::milliseconds(i as i64 * 300));
        bad += usize::from(reading.malformed);
        send(&producer, &reading, bootstrap)?;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(Error::kafka("flush sensor readings", bootstrap))?;
    Ok((READINGS, bad))
}

/// `tributary-worker broker`: the demo's broker and readings, kept running (with `per_second`
/// new readings every second) until the process is stopped, so that `run` can be tried against
/// it. Prints the bootstrap address alone on stdout for scripts.
pub fn serve_broker(per_second: u32, stop: Arc<AtomicBool>) -> Result<()> {
    let (cluster, bootstrap) = start_broker()?;
    let (produced, bad) = produce_readings(&bootstrap)?;
    println!("{bootstrap}");
    eprintln!(
        "embedded Kafka broker on {bootstrap}: topic {TOPIC} ({PARTITIONS} partitions) holds \
         {produced} sensor readings ({bad} malformed), {per_second} more every second.\n\
         In another terminal:\n  \
         tributary-worker run -f examples/sensor-readings.yaml --bootstrap-servers {bootstrap} \
         --local-root ./local-lake\n\
         Ctrl-C stops the broker; its records live in memory only."
    );
    let producer = producer(&bootstrap)?;
    let mut readings = Readings::new();
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..per_second {
            send(&producer, &readings.next(chrono::Utc::now()), &bootstrap)?;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Whatever was produced is lost with the broker anyway: no need to wait for deliveries.
    drop(producer);
    drop(cluster);
    Ok(())
}

/// The embedded broker (librdkafka's mock cluster on 127.0.0.1) with the readings' topic;
/// returns it with its bootstrap address. It lives as long as the returned value.
fn start_broker() -> Result<(MockCluster<'static, DefaultProducerContext>, String)> {
    let cluster =
        MockCluster::new(1).map_err(Error::kafka("start the embedded broker", "127.0.0.1"))?;
    let bootstrap = cluster.bootstrap_servers();
    cluster
        .create_topic(TOPIC, PARTITIONS, 1)
        .map_err(Error::kafka(format!("create topic {TOPIC}"), &bootstrap))?;
    Ok((cluster, bootstrap))
}

fn producer(bootstrap: &str) -> Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .map_err(|source| Error::CreateConsumer {
            bootstrap: bootstrap.to_string(),
            source: Box::new(source),
        })
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    reading: &Reading,
    bootstrap: &str,
) -> Result<()> {
    let mut record = BaseRecord::to(TOPIC)
        .key(&reading.device)
        .payload(&reading.value);
    // The in-memory queue can fill up; wait for deliveries and try again.
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((error, returned)) => {
                if !matches!(
                    error,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ) {
                    return Err(Error::kafka("produce sensor readings", bootstrap)(error));
                }
                record = returned;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One simulated reading: the device is the record key, the value is JSON (or, now and then,
/// not quite).
struct Reading {
    device: String,
    value: String,
    malformed: bool,
}

/// The simulated devices: deterministic, so that the demo is the same every time.
struct Readings {
    random: XorShift,
    count: usize,
}

impl Readings {
    fn new() -> Readings {
        Readings {
            random: XorShift(0x5eed_1234_abcd_0001),
            count: 0,
        }
    }

    fn next(&mut self, at: chrono::DateTime<chrono::Utc>) -> Reading {
        const SITES: [&str; 4] = ["amsterdam", "berlin", "lisbon", "oslo"];
        const STATUSES: [&str; 6] = ["ok", "ok", "ok", "ok", "degraded", "maintenance"];
        let i = self.count;
        self.count += 1;
        let random = &mut self.random;
        let device = format!("sensor-{:03}", random.next() % 120);
        let (value, malformed) = if i % MALFORMED_EVERY == MALFORMED_EVERY - 1 {
            // A truncated reading, as a flaky device firmware sends it.
            (
                format!("{{\"device_id\":\"{device}\",\"temperature\":21."),
                true,
            )
        } else if i % WRONG_TYPE_EVERY == WRONG_TYPE_EVERY / 2 {
            (
                format!(
                    "{{\"device_id\":\"{device}\",\"site\":\"oslo\",\"battery_pct\":\"low\",\"status\":\"ok\"}}"
                ),
                true,
            )
        } else {
            let site = SITES[(random.next() % SITES.len() as u64) as usize];
            let status = STATUSES[(random.next() % STATUSES.len() as u64) as usize];
            let temperature = 15.0 + (random.next() % 1500) as f64 / 100.0;
            let humidity = 30.0 + (random.next() % 5000) as f64 / 100.0;
            let battery = random.next() % 101;
            let value = format!(
                "{{\"device_id\":\"{device}\",\"site\":\"{site}\",\"temperature\":{temperature:.2},\"humidity\":{humidity:.2},\"battery_pct\":{battery},\"status\":\"{status}\",\"timestamp\":\"{}\"}}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            (value, false)
        };
        Reading {
            device,
            value,
            malformed,
        }
    }
}

/// A tiny deterministic generator: the demo is the same every time.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
