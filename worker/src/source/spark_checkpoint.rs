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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deltalake::logstore::object_store::{self, ObjectStore, ObjectStoreExt, path::Path};
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::partition::{OffsetMap, TopicPartition};
use crate::store;

/// Each topic's partitions and their end offsets, as one line of Spark's Kafka offset log.
pub type SparkOffsets = BTreeMap<String, BTreeMap<i32, i64>>;

/// A takeover asked for on the command line or by `spec.checkpoint.fromSpark`: the Spark
/// query's checkpointLocation (a directory, or an `abfss://` / `az://` URL read with the
/// checkpoint's storage options), and how long it must have been still before Tributary
/// believes the query stopped.
#[derive(Clone, Debug)]
pub struct SparkTakeover {
    pub checkpoint: String,
    pub quiet: Duration,
}

/// A Spark Structured Streaming checkpoint, on a volume or in an object store. Only read.
pub struct SparkCheckpoint {
    /// Rooted at the checkpointLocation.
    store: Arc<dyn ObjectStore>,
    /// As the manifest or the command line wrote it, for messages.
    location: String,
    query_id: String,
}

impl std::fmt::Debug for SparkCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparkCheckpoint")
            .field("location", &self.location)
            .field("query_id", &self.query_id)
            .finish_non_exhaustive()
    }
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
    /// Opens the checkpoint at `location` and reads the query's id. A URL is reached with
    /// `storage_options` (the checkpoint's own, else the sink's).
    pub async fn open(
        location: &str,
        storage_options: &HashMap<String, String>,
    ) -> Result<SparkCheckpoint> {
        let store = store::store_at(location, storage_options, false)
            .map_err(|e| refuse(location, e.to_string()))?;
        let mut checkpoint = SparkCheckpoint {
            store,
            location: location.to_string(),
            query_id: String::new(),
        };
        let name = "metadata";
        let text = match checkpoint.read(name).await {
            Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(None) => {
                return Err(refuse(
                    location,
                    format!(
                        "{} does not exist (is this the checkpointLocation of a Spark Structured Streaming query?)",
                        checkpoint.path(name)
                    ),
                ));
            }
            Err(e) => return Err(e),
        };
        let json: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| {
            refuse(
                location,
                format!(
                    "{} is not a Spark query's metadata: {e}",
                    checkpoint.path(name)
                ),
            )
        })?;
        checkpoint.query_id = json
            .get("id")
            .and_then(|id| id.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                refuse(
                    location,
                    format!("{} names no query id", checkpoint.path(name)),
                )
            })?
            .to_string();
        Ok(checkpoint)
    }

    /// The Spark query's id: the app id of its `txn` actions in the table.
    pub fn query_id(&self) -> &str {
        &self.query_id
    }

    /// The location as the spec or the command line names it.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// A file's name in messages: the location joined with the path inside it.
    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.location.trim_end_matches('/'))
    }

    /// A whole file; None when it does not exist.
    async fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let read = async { self.store.get(&Path::from(name)).await?.bytes().await };
        match read.await {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(refuse(
                &self.location,
                format!(
                    "cannot read {}: {}",
                    self.path(name),
                    store::describe_store_error(&e)
                ),
            )),
        }
    }

    /// The batch ids in `offsets/` or `commits/` (files named by a number; Spark's `.crc`
    /// checksums and temporary files are skipped), with when each last changed.
    async fn batches(&self, log: &str) -> Result<BTreeMap<i64, SystemTime>> {
        let prefix = Path::from(log);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(refuse(
                    &self.location,
                    format!(
                        "cannot list {}: {}",
                        self.path(log),
                        store::describe_store_error(&e)
                    ),
                )),
            })?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                // Only the log's own files, not a nested directory's.
                let name = meta.location.as_ref().strip_prefix(prefix.as_ref())?;
                let batch = name.strip_prefix('/')?.parse().ok()?;
                Some((batch, SystemTime::from(meta.last_modified)))
            })
            .collect())
    }

    /// Refuses when a file of `offsets/` or `commits/` changed less than `quiet` before `now`:
    /// the query may still be running, and would go on writing behind Tributary.
    pub async fn check_stopped(&self, quiet: Duration, now: SystemTime) -> Result<()> {
        for log in ["offsets", "commits"] {
            for (batch, modified) in self.batches(log).await? {
                let age = now.duration_since(modified).unwrap_or_default();
                if age < quiet {
                    return Err(refuse(
                        &self.location,
                        format!(
                            "the Spark query {} may still be running: {} changed {} s ago, less than the quiet period of {} s (stop the query and wait, or lower the quiet period (quietSeconds, --spark-quiet-seconds) if it is certainly stopped)",
                            self.query_id,
                            self.path(&format!("{log}/{batch}")),
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
    async fn end_offsets(&self, batch: i64) -> Result<SparkOffsets> {
        let name = format!("offsets/{batch}");
        let path = self.path(&name);
        let bytes = self.read(&name).await?.ok_or_else(|| {
            refuse(
                &self.location,
                format!(
                    "{path} does not exist (Spark keeps the last spark.sql.streaming.minBatchesToRetain batches; is this the checkpoint of the query that wrote the table?)"
                ),
            )
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let version = lines.next().unwrap_or_default();
        if version.trim() != "v1" {
            return Err(refuse(
                &self.location,
                format!(
                    "{path} starts with {version:?}, not the offset log version v1 this worker reads"
                ),
            ));
        }
        // The batch's metadata (watermark, timestamp, conf), then one line per source.
        let sources: Vec<&str> = lines.skip(1).collect();
        match sources.as_slice() {
            [line] => parse_kafka_offsets(line)
                .map_err(|reason| refuse(&self.location, format!("{path}: {reason}"))),
            _ => Err(refuse(
                &self.location,
                format!(
                    "{path} lists {} sources; only a query with one Kafka source can be taken over",
                    sources.len()
                ),
            )),
        }
    }

    /// The offsets the Spark query's Kafka source started from (`sources/0/0`), if it recorded them.
    async fn initial_offsets(&self) -> Result<Option<SparkOffsets>> {
        let name = "sources/0/0";
        let Some(bytes) = self.read(name).await? else {
            return Ok(None);
        };
        // A zero byte (kept for Spark 2.1's reader), a version line, then the offsets' JSON.
        let text = String::from_utf8_lossy(&bytes);
        let json = text.find('{').map(|at| text[at..].trim()).ok_or_else(|| {
            refuse(
                &self.location,
                format!("{} holds no Kafka offsets", self.path(name)),
            )
        })?;
        parse_kafka_offsets(json)
            .map(Some)
            .map_err(|reason| refuse(&self.location, format!("{}: {reason}", self.path(name))))
    }

    /// Where Spark left off, given the table's txn version for the query (the last batch that
    /// landed, None if none did).
    pub async fn handover(&self, table_batch: Option<i64>) -> Result<Handover> {
        let offsets = match table_batch {
            Some(batch) => self.end_offsets(batch).await?,
            None => {
                if let Some(last) = self.batches("commits").await?.keys().last() {
                    return Err(refuse(
                        &self.location,
                        format!(
                            "the checkpoint and the table disagree: the table has no commit of Spark query {}, but the checkpoint says batches up to {last} were committed (is the sink the table this query wrote?)",
                            self.query_id
                        ),
                    ));
                }
                self.initial_offsets().await?.ok_or_else(|| {
                    refuse(
                        &self.location,
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
}

impl Handover {
    /// The start offset of each partition the ingestion reads now. Refuses when Spark read other
    /// topics; a partition Spark never saw (added since) starts at the earliest offset, as
    /// Spark starts partitions it discovers.
    pub fn start_offsets(
        &self,
        location: &str,
        partitions: &[TopicPartition],
    ) -> Result<OffsetMap> {
        let ours: BTreeSet<&str> = partitions.iter().map(|tp| tp.topic.as_str()).collect();
        let theirs: BTreeSet<&str> = self.offsets.keys().map(String::as_str).collect();
        if ours != theirs {
            return Err(refuse(
                location,
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

fn refuse(location: &str, reason: String) -> Error {
    Error::SparkTakeover {
        checkpoint: location.to_string(),
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

    async fn open(dir: &std::path::Path) -> Result<SparkCheckpoint> {
        SparkCheckpoint::open(&dir.display().to_string(), &HashMap::new()).await
    }

    fn tps(topic: &str, n: i32) -> Vec<TopicPartition> {
        (0..n).map(|p| TopicPartition::new(topic, p)).collect()
    }

    #[tokio::test]
    async fn starts_after_the_last_batch_the_table_holds_never_a_planned_one() {
        let dir = checkpoint(3, 4);
        let spark = open(dir.path()).await.expect("open");
        assert_eq!(spark.query_id(), "q-1");
        // Batch 3 was planned only; the table says batch 2 landed.
        let handover = spark.handover(Some(2)).await.expect("handover");
        let starts = handover
            .start_offsets(spark.location(), &tps("t", 3))
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
        let handover = spark.handover(Some(3)).await.expect("handover");
        assert_eq!(handover.offsets["t"][&0], 40);
    }

    #[tokio::test]
    async fn a_query_that_never_committed_starts_where_spark_started() {
        let dir = checkpoint(0, 1);
        let spark = open(dir.path()).await.expect("open");
        let handover = spark.handover(None).await.expect("handover");
        assert_eq!(handover.offsets["t"], BTreeMap::from([(0, 0), (1, 0)]));
    }

    #[tokio::test]
    async fn refusals_name_what_disagrees() {
        let dir = checkpoint(2, 2);
        let spark = open(dir.path()).await.expect("open");
        let error = spark
            .handover(None)
            .await
            .expect_err("no txn in the table")
            .to_string();
        assert!(
            error.contains("disagree") && error.contains("q-1"),
            "{error}"
        );
        let error = spark
            .handover(Some(7))
            .await
            .expect_err("purged")
            .to_string();
        assert!(error.contains("offsets/7"), "{error}");
        let handover = spark.handover(Some(1)).await.expect("handover");
        let error = handover
            .start_offsets(spark.location(), &tps("other", 2))
            .expect_err("other topics")
            .to_string();
        assert!(
            error.contains("\"other\"") && error.contains("\"t\""),
            "{error}"
        );
        let error = spark
            .check_stopped(Duration::from_secs(3600), SystemTime::now())
            .await
            .expect_err("just written")
            .to_string();
        assert!(error.contains("still be running"), "{error}");
        spark
            .check_stopped(
                Duration::from_secs(60),
                SystemTime::now() + Duration::from_secs(120),
            )
            .await
            .expect("quiet for two minutes");
        let missing = tempfile::tempdir().expect("tempdir");
        let error = open(missing.path())
            .await
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
