//! Taking over from a Spark Structured Streaming query (`readStream.format("kafka")` ->
//! `writeStream.format("delta")`): where Tributary starts so that every Kafka offset lands in
//! the shared Delta table exactly once across both writers.
//!
//! What Spark leaves in its checkpoint directory: `metadata` (`{"id": <query id>}`),
//! `offsets/<batch>` (written before a batch runs: a version line, the batch's metadata, then
//! one line per source with each partition's end offset, exclusive), `commits/<batch>` (written
//! after the sink committed it) and `sources/0/0` (the offsets the Kafka source started from).
//! Spark's Delta sink commits batch N with `txn(appId = query id, version = N)`, so the table,
//! not the checkpoint, says which batch landed last: a batch can be planned in `offsets/` and
//! never reach the table (killed mid-batch), or reach the table and miss `commits/` (killed
//! after the Delta commit). Tributary starts from `offsets/V`, V being the table's txn version
//! for the query id, and never from a batch that was only planned.
//!
//! Spark holds no lock on its checkpoint, so a query still running is recognised by its
//! checkpoint moving: the newest file of `offsets/` and `commits/` must be older than a quiet
//! period. The checkpoint is only read, never written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::partition::{OffsetMap, TopicPartition};

/// Each topic's partitions and their end offsets, as one line of Spark's Kafka offset log.
pub type SparkOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// A takeover asked for on the command line: the Spark query's checkpoint directory, and how
/// long it must have been still before Tributary believes the query stopped.
#[derive(Clone, Debug)]
pub struct SparkTakeover {
    pub checkpoint: PathBuf,
    pub quiet: Duration,
}

/// A Spark Structured Streaming checkpoint on a file system the worker can read.
#[derive(Debug)]
pub struct SparkCheckpoint {
    dir: PathBuf,
    query_id: String,
}

/// Where the takeover starts, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Handover {
    /// The Spark query whose checkpoint it was.
    pub query_id: String,
    /// The last batch the table holds (None: Spark never committed to the table).
    pub batch: Option<i64>,
    /// The offsets Spark would have read next.
    pub offsets: SparkOffsets,
}

impl SparkCheckpoint {
    /// Opens the checkpoint at `dir` and reads the query's id.
    pub fn open(dir: &Path) -> Result<SparkCheckpoint> {
        let metadata = dir.join("metadata");
        let text = std::fs::read_to_string(&metadata).map_err(|e| {
            refuse(
                dir,
                format!(
                    "cannot read {}: {e} (is this the checkpointLocation of a Spark Structured Streaming query?)",
                    metadata.display()
                ),
            )
        })?;
        let json: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
            refuse(
                dir,
                format!(
                    "{} is not a Spark query's metadata: {e}",
                    metadata.display()
                ),
            )
        })?;
        let query_id = json
            .get("id")
            .and_then(|id| id.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| refuse(dir, format!("{} names no query id", metadata.display())))?
            .to_string();
        Ok(SparkCheckpoint {
            dir: dir.to_path_buf(),
            query_id,
        })
    }

    /// The Spark query's id: the app id of its `txn` actions in the table.
    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// The batch ids in `offsets/` or `commits/` (files named by a number; Spark's `.crc`
    /// checksums and temporary files are skipped).
    fn batches(&self, log: &str) -> Result<BTreeSet<i64>> {
        let dir = self.dir.join(log);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
            Err(e) => {
                return Err(refuse(
                    &self.dir,
                    format!("cannot list {}: {e}", dir.display()),
                ));
            }
        };
        let mut batches = BTreeSet::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| refuse(&self.dir, format!("cannot list {}: {e}", dir.display())))?;
            if let Some(batch) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                batches.insert(batch);
            }
        }
        Ok(batches)
    }

    /// Refuses when a file of `offsets/` or `commits/` changed less than `quiet` before `now`:
    /// the query may still be running, and would go on writing behind Tributary.
    pub fn check_stopped(&self, quiet: Duration, now: SystemTime) -> Result<()> {
        for log in ["offsets", "commits"] {
            for batch in self.batches(log)? {
                let path = self.dir.join(log).join(batch.to_string());
                let modified = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map_err(|e| {
                        refuse(&self.dir, format!("cannot stat {}: {e}", path.display()))
                    })?;
                let age = now.duration_since(modified).unwrap_or_default();
                if age < quiet {
                    return Err(refuse(
                        &self.dir,
                        format!(
                            "the Spark query {} may still be running: {} changed {} s ago, less than the quiet period of {} s (stop the query and wait, or lower --spark-quiet-seconds if it is certainly stopped)",
                            self.query_id,
                            path.display(),
                            age.as_secs(),
                            quiet.as_secs()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The end offsets of `batch` (its `offsets/` file: the next offset to read per partition).
    fn end_offsets(&self, batch: i64) -> Result<SparkOffsets> {
        let path = self.dir.join("offsets").join(batch.to_string());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            refuse(
                &self.dir,
                format!(
                    "cannot read {}: {e} (Spark keeps the last spark.sql.streaming.minBatchesToRetain batches; is this the checkpoint of the query that wrote the table?)",
                    path.display()
                ),
            )
        })?;
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let version = lines.next().unwrap_or_default();
        if version.trim() != "v1" {
            return Err(refuse(
                &self.dir,
                format!(
                    "{} starts with {version:?}, not the offset log version v1 this worker reads",
                    path.display()
                ),
            ));
        }
        // The batch's metadata (watermark, timestamp, conf), then one line per source.
        let sources: Vec<&str> = lines.skip(1).collect();
        match sources.as_slice() {
            [line] => parse_kafka_offsets(line)
                .map_err(|reason| refuse(&self.dir, format!("{}: {reason}", path.display()))),
            _ => Err(refuse(
                &self.dir,
                format!(
                    "{} lists {} sources; only a query with one Kafka source can be taken over",
                    path.display(),
                    sources.len()
                ),
            )),
        }
    }

    /// The offsets the Spark query's Kafka source started from (`sources/0/0`), if it recorded them.
    fn initial_offsets(&self) -> Result<Option<SparkOffsets>> {
        let path = self.dir.join("sources").join("0").join("0");
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(refuse(
                    &self.dir,
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        };
        // A zero byte (kept for Spark 2.1's reader), a version line, then the offsets' JSON.
        let text = String::from_utf8_lossy(&bytes);
        let json = text.find('{').map(|at| text[at..].trim()).ok_or_else(|| {
            refuse(
                &self.dir,
                format!("{} holds no Kafka offsets", path.display()),
            )
        })?;
        parse_kafka_offsets(json)
            .map(Some)
            .map_err(|reason| refuse(&self.dir, format!("{}: {reason}", path.display())))
    }

    /// Where Spark left off, given the table's txn version for the query (the last batch that
    /// landed, None if none did).
    pub fn handover(&self, table_batch: Option<i64>) -> Result<Handover> {
        let offsets = match table_batch {
            Some(batch) => self.end_offsets(batch)?,
            None => {
                if let Some(last) = self.batches("commits")?.last() {
                    return Err(refuse(
                        &self.dir,
                        format!(
                            "the checkpoint and the table disagree: the table has no commit of Spark query {}, but the checkpoint says batches up to {last} were committed (is the sink the table this query wrote?)",
                            self.query_id
                        ),
                    ));
                }
                self.initial_offsets()?.ok_or_else(|| {
                    refuse(
                        &self.dir,
                        "Spark never committed a batch and recorded no starting offsets (sources/0/0): start the ingestion with startingOffsets instead".to_string(),
                    )
                })?
            }
        };
        Ok(Handover {
            query_id: self.query_id.clone(),
            batch: table_batch,
            offsets,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Handover {
    /// The start offset of each partition the ingestion reads now. Refuses when Spark read other
    /// topics; a partition Spark never saw (added since) starts at the earliest offset, as
    /// Spark starts partitions it discovers.
    pub fn start_offsets(&self, dir: &Path, partitions: &[TopicPartition]) -> Result<OffsetMap> {
        let ours: BTreeSet<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
        let theirs: BTreeSet<&str> = self.offsets.keys().map(String::as_str).collect();
        if ours != theirs {
            return Err(refuse(
                dir,
                format!(
                    "the sources differ: Spark query {} read topics {theirs:?}, this ingestion reads {ours:?} (subscribe to the same topics on the same cluster)",
                    self.query_id
                ),
            ));
        }
        Ok(partitions
            .iter()
            .map(|tp| {
                let offset = self
                    .offsets
                    .get(&tp.topic)
                    .and_then(|p| p.get(&tp.partition))
                    .copied()
                    .unwrap_or(tributary_crds::OFFSET_EARLIEST);
                (tp.clone(), offset)
            })
            .collect())
    }
}

fn refuse(dir: &Path, reason: String) -> Error {
    Error::SparkTakeover {
        checkpoint: dir.display().to_string(),
        reason,
    }
}

/// `{"topic":{"0":12,"1":7}}`: Spark's Kafka source offsets.
fn parse_kafka_offsets(line: &str) -> std::result::Result<SparkOffsets, String> {
    let json: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("the source's offsets are not JSON ({e}): {line}"))?;
    let topics = json.as_object().ok_or_else(|| {
        format!("the source's offsets are not Kafka's {{topic: {{partition: offset}}}}: {line}")
    })?;
    let mut offsets = SparkOffsets::new();
    for (topic, partitions) in topics {
        let partitions = partitions.as_object().ok_or_else(|| {
            format!("the source's offsets are not Kafka's {{topic: {{partition: offset}}}}: {line}")
        })?;
        let mut parsed = BTreeMap::new();
        for (partition, offset) in partitions {
            let partition: i32 = partition
                .parse()
                .map_err(|_| format!("partition {partition:?} of topic {topic} is not a number"))?;
            let offset = offset.as_i64().filter(|o| *o >= 0).ok_or_else(|| {
                format!("offset {offset} of {topic}-{partition} is not an offset")
            })?;
            parsed.insert(partition, offset);
        }
        offsets.insert(topic.clone(), parsed);
    }
    if offsets.is_empty() {
        return Err(format!("the source's offsets name no topic: {line}"));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint laid out as Spark lays it out, with `committed` batches and `planned` ones.
    fn checkpoint(committed: i64, planned: i64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::write(root.join("metadata"), r#"{"id":"q-1"}"#).expect("write");
        for log in ["offsets", "commits", "sources/0"] {
            std::fs::create_dir_all(root.join(log)).expect("mkdir");
        }
        std::fs::write(root.join("sources/0/0"), b"\0v1\n{\"t\":{\"0\":0,\"1\":0}}")
            .expect("write");
        for batch in 0..planned {
            std::fs::write(
                root.join(format!("offsets/{batch}")),
                format!(
                    "v1\n{{\"batchWatermarkMs\":0,\"batchTimestampMs\":1,\"conf\":{{}}}}\n{{\"t\":{{\"0\":{},\"1\":{}}}}}",
                    (batch + 1) * 10,
                    (batch + 1) * 7
                ),
            )
            .expect("write");
            std::fs::write(root.join(format!("offsets/.{batch}.crc")), b"x").expect("write");
            if batch < committed {
                std::fs::write(
                    root.join(format!("commits/{batch}")),
                    "v1\n{\"nextBatchWatermarkMs\":0}",
                )
                .expect("write");
            }
        }
        dir
    }

    fn tps(topic: &str, n: i32) -> Vec<TopicPartition> {
        (0..n).map(|p| TopicPartition::new(topic, p)).collect()
    }

    #[test]
    fn starts_after_the_last_batch_the_table_holds_never_a_planned_one() {
        let dir = checkpoint(3, 4);
        let spark = SparkCheckpoint::open(dir.path()).expect("open");
        assert_eq!(spark.query_id(), "q-1");
        // Batch 3 was planned only; the table says batch 2 landed.
        let handover = spark.handover(Some(2)).expect("handover");
        let starts = handover
            .start_offsets(dir.path(), &tps("t", 3))
            .expect("starts");
        assert_eq!(
            starts,
            OffsetMap::from([
                (TopicPartition::new("t", 0), 30),
                (TopicPartition::new("t", 1), 21),
                // Not in Spark's offsets: added since, read from the start.
                (TopicPartition::new("t", 2), tributary_crds::OFFSET_EARLIEST),
            ])
        );
        // Killed after the Delta commit of batch 3, before commits/3: the table decides.
        let handover = spark.handover(Some(3)).expect("handover");
        assert_eq!(handover.offsets["t"][&0], 40);
    }

    #[test]
    fn a_query_that_never_committed_starts_where_spark_started() {
        let dir = checkpoint(0, 1);
        let spark = SparkCheckpoint::open(dir.path()).expect("open");
        let handover = spark.handover(None).expect("handover");
        assert_eq!(handover.offsets["t"], BTreeMap::from([(0, 0), (1, 0)]));
    }

    #[test]
    fn refusals_name_what_disagrees() {
        let dir = checkpoint(2, 2);
        let spark = SparkCheckpoint::open(dir.path()).expect("open");
        let error = spark
            .handover(None)
            .expect_err("no txn in the table")
            .to_string();
        assert!(
            error.contains("disagree") && error.contains("q-1"),
            "{error}"
        );
        let error = spark.handover(Some(7)).expect_err("purged").to_string();
        assert!(error.contains("offsets/7"), "{error}");
        let handover = spark.handover(Some(1)).expect("handover");
        let error = handover
            .start_offsets(dir.path(), &tps("other", 2))
            .expect_err("other topics")
            .to_string();
        assert!(
            error.contains("\"other\"") && error.contains("\"t\""),
            "{error}"
        );
        let error = spark
            .check_stopped(Duration::from_secs(3600), SystemTime::now())
            .expect_err("just written")
            .to_string();
        assert!(error.contains("still be running"), "{error}");
        spark
            .check_stopped(
                Duration::from_secs(60),
                SystemTime::now() + Duration::from_secs(120),
            )
            .expect("quiet for two minutes");
        let missing = tempfile::tempdir().expect("tempdir");
        let error = SparkCheckpoint::open(missing.path())
            .expect_err("no metadata")
            .to_string();
        assert!(error.contains("checkpointLocation"), "{error}");
    }

    #[test]
    fn offset_lines_that_are_not_kafka_are_refused() {
        for bad in [
            "[1,2]",
            "{\"t\":[1]}",
            "{\"t\":{\"x\":1}}",
            "{\"t\":{\"0\":-2}}",
            "{}",
            "not json",
        ] {
            assert!(parse_kafka_offsets(bad).is_err(), "{bad}");
        }
    }
}
