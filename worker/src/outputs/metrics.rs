//! The worker's Prometheus metrics and its HTTP endpoint: /metrics, /healthz, /readyz.
//!
//! The pipeline updates [`Metrics`] after each batch and beats [`Metrics::heartbeat`] on every
//! turn of its loop, busy or idle; /readyz is green while those beats are recent, so a worker
//! stuck in a commit or a fetch stops receiving the readiness it would otherwise claim.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::warn;

use crate::partition::TopicPartition;

/// A pipeline that has not turned for this long is not ready.
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);
/// A pipeline that has not turned for this many stall periods is wedged: /healthz fails and the
/// kubelet restarts the worker (which resumes from the table, exactly once). Long enough that a
/// slow commit to object storage is not mistaken for it.
pub const WEDGED_STALLS: u32 = 5;

/// Labels of per-partition metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub topic: String,
    pub partition: i32,
}

/// Labels of compaction runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompactionLabels {
    /// committed, superseded or abandoned.
    pub outcome: String,
}

/// One batch, as the metrics see it.
#[derive(Clone, Debug, Default)]
pub struct BatchMetrics {
    pub records: u64,
    pub bytes: u64,
    pub rows_written: u64,
    pub rescued_rows: u64,
    pub dead_letter_rows: u64,
    pub duration: Duration,
    pub delta_version: Option<i64>,
    pub commit_conflicts: u64,
}

/// The worker's metrics.
pub struct Metrics {
    registry: Registry,
    records_read: Counter,
    bytes_read: Counter,
    rows_written: Counter,
    rescued_rows: Counter,
    dead_letter_rows: Counter,
    commit_conflicts: Counter,
    batches: Counter,
    batch_duration: Histogram,
    delta_version: Gauge,
    offsets_behind_latest: Family<PartitionLabels, Gauge>,
    compactions: Family<CompactionLabels, Counter>,
    files_compacted: Counter,
    vacuums: Family<CompactionLabels, Counter>,
    files_vacuumed: Counter,
    /// The last known lag of each assigned partition (a batch reports only its own).
    lag: Mutex<BTreeMap<TopicPartition, i64>>,
    /// Milliseconds since the epoch of the pipeline's last turn; 0 before it starts.
    last_beat_ms: AtomicU64,
    /// How long without a beat before /readyz turns red.
    stall: Duration,
    /// What the worker cannot reach now (the brokers, the table): why, and since when
    /// (milliseconds since the epoch). /readyz is red while any is listed.
    unreachable: Mutex<BTreeMap<&'static str, (String, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_STALL)
    }
}

impl Metrics {
    pub fn new(stall: Duration) -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("tributary_worker"),
            records_read: Counter::default(),
            bytes_read: Counter::default(),
            rows_written: Counter::default(),
            rescued_rows: Counter::default(),
            dead_letter_rows: Counter::default(),
            commit_conflicts: Counter::default(),
            batches: Counter::default(),
            // 10 ms .. ~80 s: from a near-empty batch to a large availableNow batch.
            batch_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            delta_version: Gauge::default(),
            offsets_behind_latest: Family::default(),
            compactions: Family::default(),
            files_compacted: Counter::default(),
            vacuums: Family::default(),
            files_vacuumed: Counter::default(),
            lag: Mutex::new(BTreeMap::new()),
            last_beat_ms: AtomicU64::new(0),
            stall,
            unreachable: Mutex::new(BTreeMap::new()),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "records_read",
            "Kafka records read",
            metrics.records_read.clone(),
        );
        registry.register(
            "bytes_read",
            "Bytes of Kafka record values read",
            metrics.bytes_read.clone(),
        );
        registry.register(
            "rows_written",
            "Rows committed to the Delta table",
            metrics.rows_written.clone(),
        );
        registry.register(
            "rescued_rows",
            "Rows whose input did not parse, kept with the raw text in _rescued_data",
            metrics.rescued_rows.clone(),
        );
        registry.register(
            "dead_letter_rows",
            "Records written to the dead-letter table",
            metrics.dead_letter_rows.clone(),
        );
        registry.register(
            "commit_conflicts",
            "Delta commits retried after a concurrent commit",
            metrics.commit_conflicts.clone(),
        );
        registry.register(
            "batches",
            "Micro-batches committed",
            metrics.batches.clone(),
        );
        registry.register(
            "batch_duration_seconds",
            "Time from the start of a micro-batch to its Delta commit",
            metrics.batch_duration.clone(),
        );
        registry.register(
            "delta_version",
            "The Delta table version the last batch committed",
            metrics.delta_version.clone(),
        );
        registry.register(
            "offsets_behind_latest",
            "Offsets between the next one to read and the partition's latest",
            metrics.offsets_behind_latest.clone(),
        );
        registry.register(
            "compactions",
            "Background compaction runs that found work, by outcome",
            metrics.compactions.clone(),
        );
        registry.register(
            "files_compacted",
            "Small files rewritten into larger ones by committed compactions",
            metrics.files_compacted.clone(),
        );
        registry.register(
            "vacuums",
            "VACUUM runs, by outcome (committed, failed)",
            metrics.vacuums.clone(),
        );
        registry.register(
            "files_vacuumed",
            "Unreferenced data files deleted by VACUUM",
            metrics.files_vacuumed.clone(),
        );
        metrics
    }

    /// Records a compaction run that found work (`outcome`: committed, superseded, abandoned).
    pub fn record_compaction(&self, outcome: &str, files_removed: usize) {
        self.compactions
            .get_or_create(&CompactionLabels {
                outcome: outcome.to_string(),
            })
            .inc();
        if outcome == "committed" {
            self.files_compacted.inc_by(files_removed as u64);
        }
    }

    /// Records a VACUUM run (`outcome`: committed or failed) and the files it deleted.
    pub fn record_vacuum(&self, outcome: &str, files_deleted: usize) {
        self.vacuums
            .get_or_create(&CompactionLabels {
                outcome: outcome.to_string(),
            })
            .inc();
        self.files_vacuumed.inc_by(files_deleted as u64);
    }

    /// Records a committed batch.
    pub fn record_batch(&self, batch: &BatchMetrics) {
        self.records_read.inc_by(batch.records);
        self.bytes_read.inc_by(batch.bytes);
        self.rows_written.inc_by(batch.rows_written);
        self.rescued_rows.inc_by(batch.rescued_rows);
        self.dead_letter_rows.inc_by(batch.dead_letter_rows);
        self.commit_conflicts.inc_by(batch.commit_conflicts);
        self.batches.inc();
        self.batch_duration.observe(batch.duration.as_secs_f64());
        if let Some(version) = batch.delta_version {
            self.delta_version.set(version);
        }
    }

    /// Updates the lag of the partitions a batch read, and drops partitions no longer assigned.
    pub fn update_offsets_behind(
        &self,
        batch: impl IntoIterator<Item = (TopicPartition, i64)>,
        assigned: &[TopicPartition],
    ) {
        let mut lag = match self.lag.lock() {
            Ok(lag) => lag,
            Err(poisoned) => poisoned.into_inner(),
        };
        lag.extend(batch);
        lag.retain(|partition, _| assigned.contains(partition));
        self.offsets_behind_latest.clear();
        for (tp, offsets) in lag.iter() {
            self.offsets_behind_latest
                .get_or_create(&PartitionLabels {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                })
                .set(*offsets);
        }
    }

    /// The pipeline turned (a batch, or an idle poll).
    pub fn heartbeat(&self) {
        self.last_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The outcome of a reachability check of `part` (the brokers, the table): an error keeps
    /// /readyz red, with the reason, until a check of the same part succeeds.
    pub fn set_reachability(&self, part: &'static str, outcome: std::result::Result<(), String>) {
        let mut unreachable = match self.unreachable.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match outcome {
            Ok(()) => {
                if unreachable.remove(part).is_some() {
                    tracing::info!(part, "reachable again");
                }
            }
            Err(reason) => {
                let since = unreachable
                    .get(part)
                    .map_or_else(now_ms, |(_, since)| *since);
                if !unreachable.contains_key(part) {
                    warn!(part, %reason, "unreachable: /readyz answers 503 until it is reachable again");
                }
                unreachable.insert(part, (reason, since));
            }
        }
    }

    /// Why the worker cannot reach its brokers or its table, if it cannot.
    fn unreachable(&self) -> Option<String> {
        let unreachable = match self.unreachable.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if unreachable.is_empty() {
            return None;
        }
        let now = now_ms();
        Some(
            unreachable
                .values()
                .map(|(reason, since)| {
                    format!("{reason} (for {} s)", now.saturating_sub(*since) / 1000)
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// How long since the pipeline last turned; None before its first turn.
    fn silence(&self) -> Option<Duration> {
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        (last > 0).then(|| Duration::from_millis(now_ms().saturating_sub(last)))
    }

    /// Ready: the pipeline has started and turned recently, and reaches its brokers and table.
    pub fn ready(&self) -> bool {
        tributary_http::Probe::readiness(self).is_ok()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            warn!(%error, "cannot encode metrics");
        }
        text
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What /healthz and /readyz answer (served by `tributary_http`).
impl tributary_http::Probe for Metrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }

    fn readiness(&self) -> Result<(), String> {
        let Some(silent) = self.silence() else {
            return Err("the pipeline has not started".into());
        };
        if silent <= self.stall {
            match self.unreachable() {
                None => Ok(()),
                Some(reason) => Err(reason),
            }
        } else {
            Err(format!(
                "the pipeline has stalled: no batch or poll for {} s (limit {} s)",
                silent.as_secs(),
                self.stall.as_secs()
            ))
        }
    }

    fn liveness(&self) -> Result<(), String> {
        // Opening (a large table, a catalog) may take long: only a loop that ran and stopped
        // turning is wedged.
        let Some(silent) = self.silence() else {
            return Ok(());
        };
        let limit = self.stall * WEDGED_STALLS;
        if silent > limit {
            Err(format!(
                "the pipeline is wedged: no batch or poll for {} s (limit {} s)",
                silent.as_secs(),
                limit.as_secs()
            ))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tributary_http::Probe;

    use super::*;

    #[test]
    fn metrics_count_batches_and_lag() {
        let metrics = Metrics::default();
        metrics.record_batch(&BatchMetrics {
            records: 120,
            bytes: 18_000,
            rows_written: 118,
            rescued_rows: 2,
            dead_letter_rows: 0,
            duration: Duration::from_millis(250),
            delta_version: Some(7),
            commit_conflicts: 1,
        });
        let assigned = [
            TopicPartition::new("sensor-readings", 0),
            TopicPartition::new("sensor-readings", 1),
        ];
        metrics.update_offsets_behind([(TopicPartition::new("sensor-readings", 0), 42)], &assigned);
        metrics.update_offsets_behind([(TopicPartition::new("sensor-readings", 1), 5)], &assigned);
        let text = metrics.encode();
        for line in [
            "tributary_worker_records_read_total 120",
            "tributary_worker_bytes_read_total 18000",
            "tributary_worker_rows_written_total 118",
            "tributary_worker_rescued_rows_total 2",
            "tributary_worker_commit_conflicts_total 1",
            "tributary_worker_delta_version 7",
            "tributary_worker_offsets_behind_latest{topic=\"sensor-readings\",partition=\"0\"} 42",
            "tributary_worker_offsets_behind_latest{topic=\"sensor-readings\",partition=\"1\"} 5",
            "tributary_worker_batch_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        // A batch keeps the lag of partitions it did not read; a lost partition's lag goes.
        metrics.update_offsets_behind(
            [(TopicPartition::new("sensor-readings", 1), 3)],
            &assigned[1..],
        );
        let text = metrics.encode();
        assert!(!text.contains("partition=\"0\""), "{text}");
    }

    #[test]
    fn readiness_follows_the_pipeline_heartbeat() {
        let metrics = Metrics::new(Duration::from_millis(200));
        let not_started = metrics.readiness().expect_err("not started");
        assert!(not_started.contains("has not started"), "{not_started}");
        metrics.heartbeat();
        assert_eq!(metrics.readiness(), Ok(()));
        std::thread::sleep(Duration::from_millis(400));
        let stalled = metrics.readiness().expect_err("stalled");
        assert!(stalled.contains("stalled"), "{stalled}");
        assert_eq!(metrics.liveness(), Ok(()), "alive while only stalled");
        std::thread::sleep(Duration::from_millis(700));
        let wedged = metrics
            .liveness()
            .expect_err("wedged after five stall periods");
        assert!(wedged.contains("wedged"), "{wedged}");
        metrics.heartbeat();
        assert_eq!(metrics.liveness(), Ok(()), "alive again once it turns");
        assert_eq!(metrics.readiness(), Ok(()));
        metrics.set_reachability(
            "brokers",
            Err("cannot reach the Kafka brokers at k:9092: Connection refused".into()),
        );
        let unreachable = metrics.readiness().expect_err("brokers down");
        assert!(
            unreachable.starts_with(
                "cannot reach the Kafka brokers at k:9092: Connection refused (for 0 s)"
            ),
            "{unreachable}"
        );
        assert!(!metrics.ready());
        assert_eq!(metrics.liveness(), Ok(()), "alive: the worker retries");
        metrics.set_reachability("table", Err("cannot reach the Delta table".into()));
        metrics.set_reachability("brokers", Ok(()));
        assert!(
            metrics
                .readiness()
                .expect_err("table")
                .starts_with("cannot reach the Delta table")
        );
        metrics.set_reachability("table", Ok(()));
        assert_eq!(metrics.readiness(), Ok(()), "ready again");
    }

    #[tokio::test]
    async fn serves_readiness_and_metrics_over_tcp() {
        let metrics = Arc::new(Metrics::default());
        let server = tributary_http::Server::bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let address = server.local_addr();
        let task = tokio::spawn(server.serve(metrics.clone()));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.expect("read");
            answer
        };
        let answer = get("/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.ends_with("not ready: the pipeline has not started\n"),
            "{answer}"
        );
        metrics.heartbeat();
        let answer = get("/readyz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = get("/metrics").await;
        assert!(
            answer.contains("tributary_worker_records_read_total 0"),
            "{answer}"
        );
        task.abort();
    }
}
