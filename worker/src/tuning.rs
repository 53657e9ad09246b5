//! The worker's tuning knobs: flags of `run`, or environment variables (`spec.worker.env` in a
//! pod). The defaults suit a pod with a few hundred MiB; a value that is not a number in range
//! stops the worker at start with an error naming the flag.

use std::time::Duration;

/// Records read ahead per partition before the partition is paused.
pub const DEFAULT_READ_AHEAD_RECORDS: usize = 50_000;
/// A batch stops reading at this many bytes of records (payload, key, headers and per-record
/// overhead) and commits; the rest waits for the next batch. With the read-ahead and
/// librdkafka's queue this bounds the worker's memory whatever the backlog. At 16 MiB a batch is
/// ~53k sensor readings of ~158 B and a ~1 MiB Parquet file; availableNow over 1M / 4M / 16M
/// readings peaked at 125 / 135 / 146 MiB resident. 32 MiB saved 4-8 % of the CPU per row (the
/// commit's fixed cost spread over twice the rows) for 151 / 151 / 185 MiB, and in continuous
/// mode at 100k msg/s raised the p99 from 0.59 to 0.87 s (README, Performance); background
/// compaction merges the files.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 << 20;
/// How often a long-running query looks for small files to compact, in seconds.
pub const DEFAULT_COMPACTION_INTERVAL_SECONDS: f64 = 60.0;

/// Encoded bytes at which compaction closes a row group of the file it writes: 4 MiB. The
/// Parquet writer holds the open row group in memory, and the object store's uploader holds the
/// last one until its final part is sent, so this is most of what a compaction adds to the
/// worker's memory: one compaction of 118 files alone rose 48 MiB at 8 MiB, 40 at 4 and 33 at 2
/// (README, Performance); a 128 MiB file has ~32 row groups for a reader to plan.
pub const DEFAULT_COMPACTION_ROW_GROUP_BYTES: usize = 4 << 20;

/// The nice value of the background compaction and VACUUM thread: well below ingestion, above
/// the idlest (19), so a run still finishes on a busy pod.
pub const DEFAULT_MAINTENANCE_NICE: i32 = 10;

/// The size a Parquet column chunk's dictionary may reach before the writer encodes the rest of
/// the chunk plainly: the Parquet writers' default (parquet-rs and Spark's parquet-mr), 1 MiB.
pub const DEFAULT_PARQUET_DICTIONARY_PAGE_BYTES: usize = 1 << 20;

/// The compression codec of the Parquet files the worker appends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ParquetCompression {
    /// Snappy: delta-rs's and Spark's default.
    #[default]
    Snappy,
    /// Zstandard at level 1: smaller files for somewhat more CPU.
    Zstd,
    Lz4,
    Uncompressed,
}

/// The encoding knobs of the Parquet files the worker writes (appends and compaction alike).
#[derive(clap::Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParquetSettings {
    /// The compression codec of the Parquet files the worker writes.
    #[arg(
        long = "parquet-compression",
        env = "TRIBUTARY_PARQUET_COMPRESSION",
        value_enum,
        default_value_t = ParquetCompression::default()
    )]
    pub compression: ParquetCompression,

    /// Bytes a Parquet column chunk's dictionary may reach before the rest of the chunk is
    /// written without one (0 turns dictionary encoding off).
    #[arg(
        long = "parquet-dictionary-page-bytes",
        env = "TRIBUTARY_PARQUET_DICTIONARY_PAGE_BYTES",
        default_value_t = DEFAULT_PARQUET_DICTIONARY_PAGE_BYTES,
        value_parser = whole_number,
        value_name = "BYTES"
    )]
    pub dictionary_page_bytes: usize,
}

impl Default for ParquetSettings {
    fn default() -> Self {
        ParquetSettings {
            compression: ParquetCompression::default(),
            dictionary_page_bytes: DEFAULT_PARQUET_DICTIONARY_PAGE_BYTES,
        }
    }
}

#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct Tuning {
    /// Records read ahead per partition before the partition is paused (the records of the
    /// take that reaches it are kept too: at most what librdkafka had queued).
    #[arg(
        long,
        env = "TRIBUTARY_READ_AHEAD_RECORDS",
        default_value_t = DEFAULT_READ_AHEAD_RECORDS,
        value_parser = positive,
        value_name = "RECORDS"
    )]
    pub read_ahead_records: usize,

    /// A micro-batch stops reading at this many bytes of records and commits.
    #[arg(
        long,
        env = "TRIBUTARY_MAX_BATCH_BYTES",
        default_value_t = DEFAULT_MAX_BATCH_BYTES,
        value_parser = positive,
        value_name = "BYTES"
    )]
    pub max_batch_bytes: usize,

    /// Seconds between background compactions of small files (0 turns compaction off).
    #[arg(
        long,
        env = "TRIBUTARY_COMPACTION_INTERVAL_SECONDS",
        default_value_t = DEFAULT_COMPACTION_INTERVAL_SECONDS,
        value_parser = seconds,
        value_name = "SECONDS"
    )]
    pub compaction_interval_seconds: f64,

    /// Small files a partition must hold before it is compacted (default 20).
    #[arg(
        long,
        env = "TRIBUTARY_COMPACTION_MIN_FILES",
        value_parser = positive,
        value_name = "FILES"
    )]
    pub compaction_min_files: Option<usize>,

    /// Compaction closes the row groups of the files it writes at about this many encoded
    /// bytes: what a compaction holds in memory beside ingestion, against fewer, larger row
    /// groups for readers.
    #[arg(
        long,
        env = "TRIBUTARY_COMPACTION_ROW_GROUP_BYTES",
        default_value_t = DEFAULT_COMPACTION_ROW_GROUP_BYTES,
        value_parser = positive,
        value_name = "BYTES"
    )]
    pub compaction_row_group_bytes: usize,

    /// The nice value (0-19) of the thread that compacts and vacuums in the background: the
    /// kernel gives ingestion's threads the CPU first. 0 runs it at ingestion's priority.
    #[arg(
        long,
        env = "TRIBUTARY_MAINTENANCE_NICE",
        default_value_t = DEFAULT_MAINTENANCE_NICE,
        value_parser = clap::value_parser!(i32).range(0..=19),
        value_name = "NICE"
    )]
    pub maintenance_nice: i32,

    /// Seconds between VACUUM runs, instead of spec.sink.delta.vacuum.intervalHours (which
    /// must be set for VACUUM to run at all). For tests and for operators who know better.
    #[arg(
        long,
        env = "TRIBUTARY_VACUUM_INTERVAL_SECONDS",
        value_parser = seconds,
        value_name = "SECONDS"
    )]
    pub vacuum_interval_seconds: Option<f64>,

    /// How the worker's Parquet files are encoded.
    #[command(flatten)]
    pub parquet: ParquetSettings,

    /// This worker's static identity in the consumer group (Kafka's group.instance.id): a
    /// worker restarted with the same id (a container restarted after a crash or kill -9)
    /// takes its partitions back at once, instead of after the dead process's session times
    /// out. Each worker of an ingestion needs its own; in a pod the pod's name is used.
    #[arg(long, env = "TRIBUTARY_GROUP_INSTANCE_ID", value_name = "ID")]
    pub group_instance_id: Option<String>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            read_ahead_records: DEFAULT_READ_AHEAD_RECORDS,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            compaction_interval_seconds: DEFAULT_COMPACTION_INTERVAL_SECONDS,
            compaction_min_files: None,
            compaction_row_group_bytes: DEFAULT_COMPACTION_ROW_GROUP_BYTES,
            maintenance_nice: DEFAULT_MAINTENANCE_NICE,
            vacuum_interval_seconds: None,
            parquet: ParquetSettings::default(),
            group_instance_id: None,
        }
    }
}

impl Tuning {
    /// How often VACUUM runs when the spec asks for it: the override, or the spec's interval.
    pub fn vacuum_interval(&self, spec_interval: Duration) -> Duration {
        match self.vacuum_interval_seconds {
            Some(seconds) if seconds > 0.0 => Duration::from_secs_f64(seconds),
            _ => spec_interval,
        }
    }

    /// The compaction interval; None when compaction is off.
    pub fn compaction_interval(&self) -> Option<Duration> {
        (self.compaction_interval_seconds > 0.0)
            .then(|| Duration::from_secs_f64(self.compaction_interval_seconds))
    }
}

fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a whole number")),
    }
}

fn whole_number(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("{text:?} is not a whole number (0 or more)"))
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!("{text:?} is not a number of seconds (0 or more)")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        tuning: Tuning,
    }

    fn parse(args: &[&str]) -> Result<Tuning, clap::Error> {
        Probe::try_parse_from(std::iter::once("probe").chain(args.iter().copied()))
            .map(|p| p.tuning)
    }

    #[test]
    fn defaults_and_flags() {
        // The variables may be set in the test's environment; flags win over them.
        let tuning = parse(&[
            "--read-ahead-records",
            "150",
            "--max-batch-bytes",
            "1048576",
            "--compaction-interval-seconds",
            "0.5",
            "--compaction-min-files",
            "3",
            "--compaction-row-group-bytes",
            "2097152",
            "--maintenance-nice",
            "0",
            "--group-instance-id",
            "sensors-7d9-abcde",
        ])
        .expect("parses");
        assert_eq!(tuning.read_ahead_records, 150);
        assert_eq!(tuning.max_batch_bytes, 1 << 20);
        assert_eq!(
            tuning.compaction_interval(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(tuning.compaction_min_files, Some(3));
        assert_eq!(tuning.compaction_row_group_bytes, 2 << 20);
        assert_eq!(tuning.maintenance_nice, 0);
        assert_eq!(
            tuning.group_instance_id.as_deref(),
            Some("sensors-7d9-abcde")
        );
        let off = parse(&["--compaction-interval-seconds", "0"]).expect("parses");
        assert_eq!(off.compaction_interval(), None, "0 turns compaction off");
        assert_eq!(
            Tuning::default().compaction_interval(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse(&[]).expect("parses").parquet,
            ParquetSettings::default(),
            "the flags' defaults are the settings' defaults"
        );
        let defaults = parse(&[]).expect("parses");
        assert_eq!(
            defaults.compaction_row_group_bytes,
            Tuning::default().compaction_row_group_bytes
        );
        assert_eq!(
            defaults.maintenance_nice,
            Tuning::default().maintenance_nice
        );
        let plain = parse(&[
            "--parquet-dictionary-page-bytes",
            "0",
            "--parquet-compression",
            "zstd",
        ])
        .expect("parses");
        assert_eq!(
            plain.parquet,
            ParquetSettings {
                compression: ParquetCompression::Zstd,
                dictionary_page_bytes: 0,
            }
        );
    }

    #[test]
    fn values_out_of_range_are_refused_naming_the_flag() {
        for (flag, arg) in [
            ("--read-ahead-records", "--read-ahead-records=0"),
            ("--max-batch-bytes", "--max-batch-bytes=lots"),
            (
                "--compaction-interval-seconds",
                "--compaction-interval-seconds=-1",
            ),
            ("--compaction-min-files", "--compaction-min-files=2.5"),
            (
                "--compaction-row-group-bytes",
                "--compaction-row-group-bytes=0",
            ),
            ("--maintenance-nice", "--maintenance-nice=20"),
            ("--maintenance-nice", "--maintenance-nice=-5"),
            (
                "--parquet-dictionary-page-bytes",
                "--parquet-dictionary-page-bytes=-1",
            ),
        ] {
            let error = parse(&[arg])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains(flag) && error.contains("invalid value"),
                "{arg}: {error}"
            );
        }
    }
}
