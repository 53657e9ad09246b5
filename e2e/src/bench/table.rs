//! Reads the Delta table back without the worker's code: replays `_delta_log/*.json` (add and
//! remove actions) and opens the Parquet files with the parquet crate.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use super::error::{BenchError, Result};

/// A data file a commit added.
#[derive(Clone, Debug)]
pub struct Added {
    pub path: String,
    pub size: u64,
    /// numRecords from the add's stats, when the writer wrote stats.
    pub num_records: Option<u64>,
    /// False for a file that holds rows committed before (compaction's rewrites).
    pub data_change: bool,
}

/// One commit file's actions.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pub adds: Vec<Added>,
    pub removes: Vec<String>,
    /// commitInfo.timestamp: when the writer made the commit, in ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

pub fn log_dir(table: &Path) -> PathBuf {
    table.join("_delta_log")
}

/// The versions whose commit file exists, ascending.
pub fn versions(table: &Path) -> Result<Vec<i64>> {
    let dir = log_dir(table);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BenchError::io_path("list", &dir)(e)),
    };
    let mut versions: Vec<i64> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name();
            let name = name.to_str()?;
            // 00000000000000000012.json; not .crc, .tmp, checkpoint or _last_checkpoint files.
            let stem = name.strip_suffix(".json")?;
            (stem.len() == 20).then(|| stem.parse().ok()).flatten()
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

pub fn commit_path(table: &Path, version: i64) -> PathBuf {
    log_dir(table).join(format!("{version:020}.json"))
}

/// Parses one commit: newline-delimited JSON actions.
pub fn read_commit(table: &Path, version: i64) -> Result<Commit> {
    let path = commit_path(table, version);
    let text = std::fs::read_to_string(&path).map_err(BenchError::io_path("read", &path))?;
    let mut commit = Commit::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let action: Value = serde_json::from_str(line)
            .map_err(BenchError::json(format!("parse {}", path.display())))?;
        if let Some(add) = action.get("add") {
            let path = add["path"].as_str().unwrap_or_default().to_owned();
            // stats is a JSON document inside a string.
            let num_records = add["stats"]
                .as_str()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .and_then(|stats| stats["numRecords"].as_u64());
            commit.adds.push(Added {
                path,
                size: add["size"].as_u64().unwrap_or(0),
                num_records,
                data_change: add["dataChange"].as_bool().unwrap_or(true),
            });
        } else if let Some(remove) = action.get("remove") {
            commit
                .removes
                .push(remove["path"].as_str().unwrap_or_default().to_owned());
        } else if let Some(info) = action.get("commitInfo") {
            commit.timestamp_ms = info["timestamp"].as_i64();
        }
    }
    Ok(commit)
}

/// When the first commit that added data was made (commitInfo.timestamp, ms since the epoch):
/// the moment the first rows became readable.
pub fn first_data_commit_ms(table: &Path) -> Result<Option<i64>> {
    for version in versions(table)? {
        let commit = read_commit(table, version)?;
        if !commit.adds.is_empty() {
            return Ok(commit.timestamp_ms);
        }
    }
    Ok(None)
}

/// The live files after replaying every commit from version 0.
pub fn live_files(table: &Path) -> Result<(Vec<i64>, BTreeMap<String, Added>)> {
    let versions = versions(table)?;
    if versions.first().is_some_and(|v| *v != 0) || versions.windows(2).any(|w| w[1] != w[0] + 1) {
        // Log cleanup would have left a checkpoint to start from; a benchmark table is young.
        return Err(BenchError::table(
            table,
            format!("commits are not contiguous from 0: {versions:?}"),
        ));
    }
    let mut live = BTreeMap::new();
    for version in &versions {
        let commit = read_commit(table, *version)?;
        for path in commit.removes {
            live.remove(&path);
        }
        for add in commit.adds {
            live.insert(add.path.clone(), add);
        }
    }
    Ok((versions, live))
}

/// A data file's location on disk: add paths are relative and URL-encoded, or absolute URIs.
pub fn file_path(table: &Path, path: &str) -> PathBuf {
    let path = percent_decode(path);
    match path.strip_prefix("file://") {
        Some(absolute) => PathBuf::from(absolute),
        None => table.join(path),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(BenchError::io_path("open", path))?;
    ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| BenchError::Parquet {
        path: path.display().to_string(),
        source,
    })
}

/// Rows in a Parquet file, from its footer.
pub fn parquet_rows(path: &Path) -> Result<u64> {
    let rows = open(path)?.metadata().file_metadata().num_rows();
    Ok(u64::try_from(rows).unwrap_or(0))
}

/// The named columns of a Parquet file, each cast to `to` and handed to `each` batch by batch.
fn read_columns(
    path: &Path,
    names: &[&str],
    to: &DataType,
    mut each: impl FnMut(Vec<std::sync::Arc<dyn Array>>),
) -> Result<()> {
    let builder = open(path)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), names.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|source| BenchError::Parquet {
            path: path.display().to_string(),
            source,
        })?;
    let arrow_error = |source| BenchError::Arrow {
        path: path.display().to_string(),
        source,
    };
    for batch in reader {
        let batch = batch.map_err(arrow_error)?;
        let mut columns = Vec::with_capacity(names.len());
        for name in names {
            let column = batch.column_by_name(name).ok_or_else(|| {
                BenchError::Check(format!("{} has no column {name}", path.display()))
            })?;
            columns.push(cast(column, to).map_err(arrow_error)?);
        }
        each(columns);
    }
    Ok(())
}

/// The `column` timestamps of a file, in microseconds since the epoch (nulls skipped).
pub fn timestamps_micros(path: &Path, column: &str, out: &mut Vec<i64>) -> Result<()> {
    let to = DataType::Timestamp(TimeUnit::Microsecond, None);
    read_columns(path, &[column], &to, |columns| {
        let values = columns[0].as_primitive::<TimestampMicrosecondType>();
        out.extend(values.iter().flatten());
    })
}

/// Every (kafka_partition, kafka_offset) in a file.
pub fn kafka_coordinates(path: &Path, mut each: impl FnMut(i64, i64)) -> Result<()> {
    read_columns(
        path,
        &["kafka_partition", "kafka_offset"],
        &DataType::Int64,
        |columns| {
            let partitions = columns[0].as_primitive::<Int64Type>();
            let offsets = columns[1].as_primitive::<Int64Type>();
            for (p, o) in partitions.iter().zip(offsets.iter()) {
                if let (Some(p), Some(o)) = (p, o) {
                    each(p, o);
                }
            }
        },
    )
}

/// What the table holds, counted independently of the worker.
#[derive(Clone, Debug, Default)]
pub struct Counted {
    pub versions: u64,
    pub files: u64,
    pub bytes: u64,
    /// Sum of numRecords in the live adds' stats (None if a file has no stats).
    pub rows_stats: Option<u64>,
    /// Sum of the Parquet footers' row counts.
    pub rows: u64,
    /// Distinct (partition, offset) pairs within the produced range, and pairs seen twice.
    pub distinct_offsets: u64,
    pub duplicate_offsets: u64,
}

/// The (partition, offset) pairs of the produced range seen so far, over one or more tables
/// (a table and its dead-letter table share one).
pub struct Seen {
    offsets: Vec<Vec<bool>>,
    pub distinct: u64,
    pub duplicates: u64,
}

impl Seen {
    /// `ends` are the partitions' high watermarks (offsets start at 0).
    pub fn new(ends: &[i64]) -> Seen {
        Seen {
            offsets: ends
                .iter()
                .map(|end| vec![false; usize::try_from(*end).unwrap_or(0)])
                .collect(),
            distinct: 0,
            duplicates: 0,
        }
    }

    fn mark(&mut self, partition: i64, offset: i64) {
        let slot = usize::try_from(partition)
            .ok()
            .and_then(|p| self.offsets.get_mut(p))
            .and_then(|offsets| offsets.get_mut(usize::try_from(offset).ok()?));
        match slot {
            Some(slot) if *slot => self.duplicates += 1,
            Some(slot) => {
                *slot = true;
                self.distinct += 1;
            }
            None => {}
        }
    }
}

/// Counts the table's rows and checks every produced (partition, offset) is there exactly once;
/// `ends` are the partitions' high watermarks (offsets start at 0).
pub fn count(table: &Path, ends: &[i64]) -> Result<Counted> {
    let mut seen = Seen::new(ends);
    let mut counted = count_into(table, &mut seen)?;
    counted.distinct_offsets = seen.distinct;
    counted.duplicate_offsets = seen.duplicates;
    Ok(counted)
}

/// Counts the table's rows, marking each (partition, offset) in `seen` (the counted's own
/// distinct and duplicate figures stay 0: `seen` holds them, across tables).
pub fn count_into(table: &Path, seen: &mut Seen) -> Result<Counted> {
    let (versions, live) = live_files(table)?;
    let mut counted = Counted {
        versions: versions.len() as u64,
        files: live.len() as u64,
        rows_stats: Some(0),
        ..Counted::default()
    };
    for add in live.values() {
        let path = file_path(table, &add.path);
        counted.bytes += add.size;
        counted.rows += parquet_rows(&path)?;
        counted.rows_stats = counted.rows_stats.zip(add.num_records).map(|(a, b)| a + b);
        kafka_coordinates(&path, |p, o| seen.mark(p, o))?;
    }
    Ok(counted)
}

/// The (partition, offset) of every row of the table whose `column` is not null.
pub fn coordinates_where_set(
    table: &Path,
    column: &str,
    mut each: impl FnMut(i64, i64),
) -> Result<()> {
    let (_, live) = live_files(table)?;
    for add in live.values() {
        let path = file_path(table, &add.path);
        let builder = open(&path)?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["kafka_partition", "kafka_offset", column],
        );
        let reader = builder
            .with_projection(mask)
            .with_batch_size(65_536)
            .build()
            .map_err(|source| BenchError::Parquet {
                path: path.display().to_string(),
                source,
            })?;
        let arrow_error = |source| BenchError::Arrow {
            path: path.display().to_string(),
            source,
        };
        for batch in reader {
            let batch = batch.map_err(arrow_error)?;
            let get = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    BenchError::Check(format!("{} has no column {name}", path.display()))
                })
            };
            let partitions =
                cast(get("kafka_partition")?, &DataType::Int64).map_err(arrow_error)?;
            let offsets = cast(get("kafka_offset")?, &DataType::Int64).map_err(arrow_error)?;
            let set = get(column)?;
            let partitions = partitions.as_primitive::<Int64Type>();
            let offsets = offsets.as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                if set.is_valid(row) && partitions.is_valid(row) && offsets.is_valid(row) {
                    each(partitions.value(row), offsets.value(row));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_adds_are_told_from_new_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(log_dir(dir.path())).expect("log dir");
        let actions = [
            r#"{"commitInfo":{"timestamp":1,"operation":"OPTIMIZE"}}"#,
            r#"{"add":{"path":"a.parquet","size":10,"dataChange":false,"stats":"{\"numRecords\":7}"}}"#,
            r#"{"add":{"path":"b.parquet","size":20,"dataChange":true}}"#,
            r#"{"remove":{"path":"old.parquet","dataChange":false}}"#,
        ];
        std::fs::write(commit_path(dir.path(), 3), actions.join("\n")).expect("commit");
        let commit = read_commit(dir.path(), 3).expect("read");
        let changes: Vec<(&str, bool, Option<u64>)> = commit
            .adds
            .iter()
            .map(|a| (a.path.as_str(), a.data_change, a.num_records))
            .collect();
        assert_eq!(
            changes,
            [("a.parquet", false, Some(7)), ("b.parquet", true, None)]
        );
        assert_eq!(commit.removes, ["old.parquet"]);
    }

    #[test]
    fn add_paths_are_url_decoded() {
        let table = Path::new("/t");
        assert_eq!(
            file_path(table, "day%3D1/part-0.parquet"),
            PathBuf::from("/t/day=1/part-0.parquet")
        );
        assert_eq!(
            file_path(table, "file:///x/y.parquet"),
            PathBuf::from("/x/y.parquet")
        );
    }
}
