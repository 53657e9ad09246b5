//! Compaction against real Delta tables on local disk: what it merges, what it leaves, and
//! what happens when it races appends and other compactions.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path as FsPath, PathBuf};

use deltalake::DeltaTableBuilder;
use deltalake::arrow::array::{Array, Float64Array, Int64Array, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::util::display::array_value_to_string;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use serde_json::Value;

use super::*;
use crate::sink::{CommitOutcome, DeltaSink, OpenOptions, TxnUpdate};
use crate::tuning::ParquetCompression;

/// The query's txn app id for source partition `p`, as the worker names them.
fn app(p: i32) -> String {
    format!("q-events-{p}")
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("site", DataType::Utf8, true),
        Field::new("value", DataType::Float64, true),
    ]))
}

/// Rows `ids`, each with the site `site(id)`.
fn rows(ids: std::ops::Range<i64>, site: impl Fn(i64) -> Option<&'static str>) -> RecordBatch {
    let ids: Vec<i64> = ids.collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from(
                ids.iter().map(|i| site(*i)).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                ids.iter().map(|i| *i as f64 / 4.0).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch")
}

async fn sink(location: &str, partition_by: &[&str], target: Option<u64>) -> DeltaSink {
    DeltaSink::open_or_create(
        location,
        Default::default(),
        schema(),
        partition_by.iter().map(|s| s.to_string()).collect(),
        10,
        target,
        "compaction test",
    )
    .await
    .expect("open or create the table")
}

/// Commits `batch` with the txn of source partition `p` moving from `version - 1` to
/// `version`, as the worker's batch loop does.
async fn append(sink: &mut DeltaSink, p: i32, version: i64, batch: &RecordBatch) {
    let outcome = sink
        .commit(
            std::slice::from_ref(batch),
            &[TxnUpdate {
                app_id: app(p),
                expected: (version > 1).then_some(version - 1),
                version,
            }],
            HashMap::new(),
        )
        .await
        .expect("append");
    assert!(
        matches!(outcome, CommitOutcome::Committed { .. }),
        "{outcome:?}"
    );
}

async fn open(location: &str) -> DeltaTable {
    let url = crate::sink::table_url(location).expect("url");
    let mut table = DeltaTableBuilder::from_url(url)
        .expect("builder")
        .build()
        .expect("build");
    table.load().await.expect("load");
    table
}

/// Compacts `table` into files of the default target size, written with the default Parquet
/// settings.
async fn compact_to_default_target(
    table: &mut DeltaTable,
    location: &str,
    policy: &CompactionPolicy,
) -> CompactionOutcome {
    compact(
        table,
        location,
        DEFAULT_TARGET_FILE_SIZE,
        policy,
        ParquetSettings::default(),
    )
    .await
    .expect("compact")
}

fn location(dir: &tempfile::TempDir) -> String {
    dir.path().join("table").display().to_string()
}

/// The table read without deltalake: `_delta_log/*.json` replayed (add, remove, txn; the
/// JSON commits stay next to checkpoints) and the live Parquet files read from disk.
struct Replayed {
    version: i64,
    /// Live data files by path as written in the log, with their partition values.
    files: BTreeMap<String, BTreeMap<String, Option<String>>>,
    txns: BTreeMap<String, i64>,
    /// Every row as "id|site|value", sorted: a multiset.
    rows: Vec<String>,
}

fn replay(location: &str) -> Replayed {
    let log = FsPath::new(location).join("_delta_log");
    let mut commits: Vec<(i64, PathBuf)> = std::fs::read_dir(&log)
        .expect("read _delta_log")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse().ok()?, p)))
        .collect();
    commits.sort();
    let mut files = BTreeMap::new();
    let mut txns = BTreeMap::new();
    for (_, path) in &commits {
        for line in std::fs::read_to_string(path).expect("commit").lines() {
            let action: Value = serde_json::from_str(line).expect("JSON action");
            if let Some(add) = action.get("add") {
                let values: BTreeMap<String, Option<String>> = add["partitionValues"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                            .collect()
                    })
                    .unwrap_or_default();
                files.insert(add["path"].as_str().expect("path").to_string(), values);
            }
            if let Some(remove) = action.get("remove") {
                let path = remove["path"].as_str().expect("path");
                assert!(
                    files.remove(path).is_some(),
                    "remove of a file that is not live: {path}"
                );
            }
            if let Some(txn) = action.get("txn") {
                txns.insert(
                    txn["appId"].as_str().expect("appId").to_string(),
                    txn["version"].as_i64().expect("version"),
                );
            }
        }
    }
    let mut rows = Vec::new();
    for (path, partition) in &files {
        let decoded = percent_decode(path);
        let file = std::fs::File::open(FsPath::new(location).join(&decoded))
            .unwrap_or_else(|e| panic!("open {decoded}: {e}"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            for row in 0..batch.num_rows() {
                let cell = |name: &str| match partition.get(name) {
                    Some(value) => value.clone().unwrap_or_else(|| "NULL".into()),
                    None => {
                        let column = batch.column_by_name(name).expect("column");
                        if column.is_null(row) {
                            "NULL".into()
                        } else {
                            array_value_to_string(column, row).expect("display")
                        }
                    }
                };
                rows.push(format!("{}|{}|{}", cell("id"), cell("site"), cell("value")));
            }
        }
    }
    rows.sort();
    Replayed {
        version: commits.last().map_or(-1, |(v, _)| *v),
        files,
        txns,
        rows,
    }
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

/// The actions of commit `version`.
fn commit_actions(location: &str, version: i64) -> Vec<Value> {
    let path = FsPath::new(location)
        .join("_delta_log")
        .join(format!("{version:020}.json"));
    std::fs::read_to_string(path)
        .expect("commit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON action"))
        .collect()
}

/// Every Parquet file under the table directory, live or not.
fn parquet_on_disk(location: &str) -> Vec<PathBuf> {
    fn walk(dir: &FsPath, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "parquet")
                && !path.starts_with(FsPath::new("_delta_log"))
                && !path.to_string_lossy().contains("_delta_log")
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(FsPath::new(location), &mut out);
    out.sort();
    out
}

/// 30 micro-batches of 10 rows each, on source partition 0.
async fn thirty_appends(location: &str) -> DeltaSink {
    let mut sink = sink(location, &[], None).await;
    for n in 1..=30 {
        let batch = rows(n * 10..n * 10 + 10, |i| (i % 3 == 0).then_some("north"));
        append(&mut sink, 0, n, &batch).await;
    }
    sink
}

#[test]
fn tiers_grow_by_a_factor_of_eight_from_the_base() {
    let base = 1 << 20;
    assert_eq!(tier(0, base), 0);
    assert_eq!(tier(base - 1, base), 0);
    assert_eq!(tier(base, base), 1);
    assert_eq!(tier(8 * base - 1, base), 1);
    assert_eq!(tier(8 * base, base), 2);
    assert_eq!(
        tier(u64::MAX, base),
        15,
        "the last tier holds everything above 2^62"
    );
}

#[tokio::test]
async fn files_of_different_tiers_are_compacted_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let mut sink = thirty_appends(&location).await;
    // First run: the thirty tiny files (all in tier 0 with a base above their size) merge.
    let policy = CompactionPolicy {
        min_small_files: 3,
        tier_base_bytes: 1 << 20,
        ..CompactionPolicy::default()
    };
    let first = sink.compact(&policy).await.expect("first compaction");
    assert_eq!(first.status, CompactionStatus::Committed);
    assert_eq!(first.files_added, 1);
    let merged = first.bytes_after;
    // Three more tiny appends, then a base that puts the merged file one tier up: the
    // merged file is left alone and only the three new ones are merged.
    for n in 31..=33 {
        let batch = rows(n * 10..n * 10 + 10, |_| None);
        append(&mut sink, 0, n, &batch).await;
    }
    let tiny = CompactionPolicy {
        tier_base_bytes: merged,
        ..policy
    };
    let second = sink.compact(&tiny).await.expect("second compaction");
    assert_eq!(second.status, CompactionStatus::Committed);
    assert_eq!(
        second.files_removed, 3,
        "the merged file is not rewritten again"
    );
    assert!(second.bytes_before < merged);
}

#[test]
fn pack_fills_bins_in_order_and_drops_lone_files() {
    assert_eq!(pack(&[10, 10, 10, 10, 10], 30), vec![0..3, 3..5]);
    // A file that does not fit starts the next bin; a bin of one file is dropped.
    assert_eq!(pack(&[20, 20, 5, 25], 30), vec![1..3]);
    assert_eq!(pack(&[40, 1, 1], 30), vec![1..3]);
    assert!(pack(&[5], 30).is_empty());
    assert!(pack(&[], 30).is_empty());
    for bin in pack(&[7, 9, 3, 12, 30, 1, 1, 29, 2], 30) {
        assert!(bin.len() >= 2);
    }
}

#[tokio::test]
async fn thirty_small_appends_become_one_file_with_the_same_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let mut sink = thirty_appends(&location).await;
    let before = replay(&location);
    assert_eq!(before.files.len(), 30);
    assert_eq!(before.rows.len(), 300);
    let txns_before = sink.txn_versions(&[app(0)]).await.expect("txns");
    assert_eq!(txns_before, vec![Some(30)]);

    let outcome = sink
        .compact(&CompactionPolicy::default())
        .await
        .expect("compact");

    assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");
    assert_eq!(outcome.read_version, before.version);
    assert_eq!(outcome.version, Some(before.version + 1));
    assert_eq!((outcome.files_removed, outcome.files_added), (30, 1));
    let sizes: u64 = before
        .files
        .keys()
        .map(|p| {
            std::fs::metadata(FsPath::new(&location).join(p))
                .expect("size")
                .len()
        })
        .sum();
    assert_eq!(outcome.bytes_before, sizes);
    assert!(outcome.bytes_after > 0 && outcome.bytes_after < outcome.bytes_before);

    let after = replay(&location);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.files.len(), 1);
    assert_eq!(after.rows, before.rows, "the same rows, each once");
    assert_eq!(after.txns, before.txns);
    assert_eq!(
        sink.txn_versions(&[app(0)]).await.expect("txns"),
        txns_before
    );

    // The commit: an OPTIMIZE of no data change, no txn, saying it is tributary's.
    let actions = commit_actions(&location, before.version + 1);
    let (mut removes, mut adds) = (0, 0);
    for action in &actions {
        assert!(action.get("txn").is_none(), "no txn action: {action}");
        if let Some(remove) = action.get("remove") {
            removes += 1;
            assert_eq!(remove["dataChange"], false);
            assert!(remove["deletionTimestamp"].is_i64());
            assert!(remove["size"].as_i64().is_some_and(|s| s > 0));
            assert!(remove["partitionValues"].is_object());
        }
        if let Some(add) = action.get("add") {
            adds += 1;
            assert_eq!(add["dataChange"], false);
            assert!(
                add["stats"]
                    .as_str()
                    .is_some_and(|s| s.contains("numRecords"))
            );
        }
        if let Some(info) = action.get("commitInfo") {
            assert_eq!(info["operation"], "OPTIMIZE");
            assert_eq!(info["tributary.operation"], "compaction");
            assert_eq!(info["tributary.compaction"]["filesRemoved"], 30);
        }
    }
    assert_eq!((removes, adds), (30, 1));

    // The worker keeps appending on top, from where its txn was.
    append(&mut sink, 0, 31, &rows(1000..1010, |_| None)).await;
    let last = replay(&location);
    assert_eq!(last.rows.len(), 310);
    assert_eq!(last.txns[&app(0)], 31);
    // And deltalake sees what the replay sees.
    let table = open(&location).await;
    assert_eq!(
        table.snapshot().expect("snapshot").log_data().num_files(),
        2
    );
}

#[tokio::test]
async fn bins_never_mix_partition_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let mut sink = sink(&location, &["site"], None).await;
    const SITES: [Option<&str>; 3] = [Some("north"), Some("south hall"), None];
    for n in 1..=22i64 {
        // Every batch has rows of three sites (one of them null); every fourth also of
        // "east", which so ends with only 5 files, below the threshold.
        let with_east = n % 4 == 0;
        let batch = rows(n * 100..n * 100 + 12, move |i| match i % 4 {
            3 if with_east => Some("east"),
            k => SITES[(k % 3) as usize],
        });
        append(&mut sink, 0, n, &batch).await;
    }
    let before = replay(&location);
    let east_before: Vec<&String> = before
        .files
        .iter()
        .filter(|(_, v)| v["site"].as_deref() == Some("east"))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(east_before.len(), 5);
    assert_eq!(before.files.len(), 3 * 22 + 5);

    // A target of about 8 input files: several bins per partition.
    let table = open(&location).await;
    let largest = table
        .snapshot()
        .expect("snapshot")
        .log_data()
        .iter()
        .map(|f| f.size() as u64)
        .max()
        .expect("files");
    let mut table = table;
    let policy = CompactionPolicy {
        small_file_bytes: Some(largest + 1),
        max_bins_per_run: 100,
        ..CompactionPolicy::default()
    };
    let outcome = compact(
        &mut table,
        &location,
        8 * largest,
        &policy,
        ParquetSettings::default(),
    )
    .await
    .expect("compact");
    assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");
    assert_eq!(outcome.files_removed, 3 * 22, "all but east's files");
    assert!(
        outcome.files_added >= 6,
        "several bins per partition: {outcome:?}"
    );

    let after = replay(&location);
    // Each row is still in its own partition (a file's rows take the partition values of
    // its add action, so a mixed bin would move rows to another site), exactly once.
    assert_eq!(after.rows, before.rows);
    for path in &east_before {
        assert!(
            after.files.contains_key(*path),
            "east's files are untouched"
        );
    }
    for action in commit_actions(&location, after.version) {
        if let Some(add) = action.get("add") {
            let path = add["path"].as_str().expect("path");
            let site = &add["partitionValues"]["site"];
            match site.as_str() {
                Some(site) => assert!(
                    percent_decode(&percent_decode(path)).starts_with(&format!("site={site}/")),
                    "{path} is in the directory of {site}"
                ),
                None => assert!(path.starts_with("site=__HIVE_DEFAULT_PARTITION__/")),
            }
        }
    }
    assert_eq!(after.files.len(), 5 + outcome.files_added);
}

#[tokio::test]
async fn an_append_landing_during_a_compaction_is_kept_and_the_compaction_rebases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let mut sink = thirty_appends(&location).await;
    let before = replay(&location);

    let mut table = open(&location).await;
    let plan = plan(
        &table,
        &location,
        DEFAULT_TARGET_FILE_SIZE,
        &CompactionPolicy::default(),
    )
    .expect("plan");
    let rewritten = rewrite(&table, &location, &plan, ParquetSettings::default())
        .await
        .expect("rewrite");
    // Another replica (another source partition) and this worker append meanwhile.
    append(&mut sink, 1, 1, &rows(5000..5010, |_| Some("west"))).await;
    append(&mut sink, 0, 31, &rows(6000..6010, |_| None)).await;

    let outcome = commit(&mut table, &location, &plan, rewritten)
        .await
        .expect("commit");
    assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");
    assert_eq!(
        outcome.retries, 1,
        "the stale first attempt lost, then rebased"
    );
    assert_eq!(outcome.version, Some(before.version + 3));
    assert_eq!(outcome.files_removed, 30);

    let after = replay(&location);
    let mut expected = before.rows.clone();
    expected.extend(replay_rows_of(&[
        (5000..5010, Some("west")),
        (6000..6010, None),
    ]));
    expected.sort();
    assert_eq!(after.rows, expected, "every row exactly once");
    assert_eq!(after.files.len(), 3);
    assert_eq!(after.txns[&app(0)], 31);
    assert_eq!(after.txns[&app(1)], 1);
}

/// The rows `rows()` makes, as the replay prints them.
fn replay_rows_of(parts: &[(std::ops::Range<i64>, Option<&str>)]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|(ids, site)| {
            ids.clone()
                .map(move |i| format!("{i}|{}|{:?}", site.unwrap_or("NULL"), i as f64 / 4.0))
        })
        .collect()
}

#[tokio::test]
async fn an_append_planned_before_a_compaction_commits_after_it() {
    // The other order: the worker read the table, compaction committed, then the worker's
    // commit (delta-rs's conflict checker, as in DeltaSink::commit) must still go through.
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let _sink = thirty_appends(&location).await;
    let stale = open(&location).await;
    let mut writer = RecordBatchWriter::for_table(&stale).expect("writer");
    writer
        .write(rows(7000..7010, |_| Some("north")))
        .await
        .expect("write");
    let adds = writer.flush().await.expect("flush");

    let mut compactor = open(&location).await;
    let outcome =
        compact_to_default_target(&mut compactor, &location, &CompactionPolicy::default()).await;
    assert_eq!(outcome.status, CompactionStatus::Committed);

    let appended = CommitBuilder::from(
        CommitProperties::default()
            .with_application_transaction(Transaction::new(app(0), 31))
            .with_max_retries(50),
    )
    .with_actions(adds.into_iter().map(Action::Add).collect())
    .build(
        Some(stale.snapshot().expect("snapshot")),
        stale.log_store(),
        DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        },
    )
    .await
    .expect("the append commits after the compaction");
    // Built on the version before the compaction, checked against it, committed after it.
    assert_eq!(
        Some(appended.version() as i64),
        outcome.version.map(|v| v + 1)
    );

    let after = replay(&location);
    assert_eq!(after.files.len(), 2);
    assert_eq!(after.rows.len(), 310);
    assert_eq!(after.txns[&app(0)], 31);
}

#[tokio::test]
async fn the_second_of_two_compactions_of_one_snapshot_is_superseded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let _sink = thirty_appends(&location).await;
    let before = replay(&location);
    let policy = CompactionPolicy::default();

    // Two replicas plan and rewrite the same files.
    let mut first = open(&location).await;
    let mut second = open(&location).await;
    let plan_1 = plan(&first, &location, DEFAULT_TARGET_FILE_SIZE, &policy).expect("plan");
    let plan_2 = plan(&second, &location, DEFAULT_TARGET_FILE_SIZE, &policy).expect("plan");
    let rewritten_1 = rewrite(&first, &location, &plan_1, ParquetSettings::default())
        .await
        .expect("rewrite");
    let rewritten_2 = rewrite(&second, &location, &plan_2, ParquetSettings::default())
        .await
        .expect("rewrite");
    let outputs_2: Vec<PathBuf> = rewritten_2
        .iter()
        .flat_map(|b| b.adds.iter())
        .map(|a| FsPath::new(&location).join(percent_decode(&a.path)))
        .collect();
    assert!(outputs_2.iter().all(|p| p.exists()));

    let outcome_1 = commit(&mut first, &location, &plan_1, rewritten_1)
        .await
        .expect("commit");
    assert_eq!(outcome_1.status, CompactionStatus::Committed);
    let outcome_2 = commit(&mut second, &location, &plan_2, rewritten_2)
        .await
        .expect("commit");
    assert_eq!(
        outcome_2.status,
        CompactionStatus::Superseded,
        "{outcome_2:?}"
    );
    assert_eq!(outcome_2.version, None);
    assert_eq!(outcome_2.bins_superseded, 1);
    assert_eq!(outcome_2.files_removed, 0);

    let after = replay(&location);
    assert_eq!(
        after.version,
        before.version + 1,
        "one compaction commit only"
    );
    assert_eq!(after.rows, before.rows, "no row twice");
    assert_eq!(after.files.len(), 1);
    assert!(
        outputs_2.iter().all(|p| !p.exists()),
        "the superseded run deleted its files"
    );
    // And a new run finds nothing to do.
    let again = compact_to_default_target(&mut second, &location, &policy).await;
    assert_eq!(again.status, CompactionStatus::NothingToDo);
}

#[tokio::test]
async fn delta_rs_alone_commits_two_compactions_of_the_same_files() {
    // Why commit() has its own rebase loop: delta-rs 1.1's conflict checker ignores
    // concurrent removes with dataChange false, so the second compaction would commit and
    // every row would be in the table twice. If this test fails after a deltalake upgrade,
    // delta-rs now catches it (and the loop could hand retries back to delta-rs).
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let _sink = thirty_appends(&location).await;
    let before = replay(&location);
    let policy = CompactionPolicy::default();
    let mut first = open(&location).await;
    let second = open(&location).await;
    let plan_2 = plan(&second, &location, DEFAULT_TARGET_FILE_SIZE, &policy).expect("plan");
    let rewritten_2 = rewrite(&second, &location, &plan_2, ParquetSettings::default())
        .await
        .expect("rewrite");
    let outcome = compact_to_default_target(&mut first, &location, &policy).await;
    assert_eq!(outcome.status, CompactionStatus::Committed);

    let actions: Vec<Action> = rewritten_2
        .iter()
        .flat_map(|b| {
            b.removes
                .iter()
                .cloned()
                .map(Action::Remove)
                .chain(b.adds.iter().cloned().map(Action::Add))
        })
        .collect();
    let committed = CommitBuilder::from(CommitProperties::default())
        .with_actions(actions)
        .build(
            Some(second.snapshot().expect("snapshot")),
            second.log_store(),
            DeltaOperation::Optimize {
                predicate: None,
                target_size: DEFAULT_TARGET_FILE_SIZE as i64,
            },
        )
        .await;
    assert!(committed.is_ok(), "{:?}", committed.err());
    let table = open(&location).await;
    assert_eq!(
        table.snapshot().expect("snapshot").log_data().num_files(),
        2,
        "both compactions' outputs are live: every row twice"
    );
    assert_eq!(before.rows.len(), 300);
}

#[tokio::test]
async fn a_checkpoint_written_by_the_compaction_commit_keeps_the_txns() {
    // 28 appends: the compaction is version 29, where its post-commit hook writes the
    // checkpoint (interval 10: delta-rs writes them at versions 9, 19, 29...). A restarted
    // worker reads its txns through that checkpoint.
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let mut sink = sink(&location, &[], None).await;
    for n in 1..=28 {
        append(&mut sink, 0, n, &rows(n * 10..n * 10 + 10, |_| None)).await;
    }
    let before = replay(&location);
    let outcome = sink
        .compact(&CompactionPolicy::default())
        .await
        .expect("compact");
    assert_eq!(outcome.version, Some(29), "{outcome:?}");
    let checkpoint = FsPath::new(&location)
        .join("_delta_log")
        .join(format!("{:020}.checkpoint.parquet", 29));
    assert!(
        checkpoint.exists(),
        "the compaction commit wrote a checkpoint"
    );

    let mut restarted = self::sink(&location, &[], None).await;
    assert_eq!(
        restarted.txn_versions(&[app(0)]).await.expect("txns"),
        vec![Some(28)]
    );
    append(&mut restarted, 0, 29, &rows(5000..5010, |_| None)).await;
    let after = replay(&location);
    assert_eq!(after.rows.len(), before.rows.len() + 10);
    assert_eq!(after.files.len(), 2);
}

#[tokio::test]
async fn a_metadata_change_during_a_compaction_abandons_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let _sink = thirty_appends(&location).await;
    let before = replay(&location);
    let mut table = open(&location).await;
    let plan = plan(
        &table,
        &location,
        DEFAULT_TARGET_FILE_SIZE,
        &CompactionPolicy::default(),
    )
    .expect("plan");
    let rewritten = rewrite(&table, &location, &plan, ParquetSettings::default())
        .await
        .expect("rewrite");
    let outputs: Vec<PathBuf> = rewritten
        .iter()
        .flat_map(|b| b.adds.iter())
        .map(|a| FsPath::new(&location).join(percent_decode(&a.path)))
        .collect();
    open(&location)
        .await
        .set_tbl_properties()
        .with_properties(HashMap::from([(
            "delta.checkpointInterval".to_string(),
            "20".to_string(),
        )]))
        .await
        .expect("set a table property");

    let outcome = commit(&mut table, &location, &plan, rewritten)
        .await
        .expect("commit");
    assert!(
        matches!(outcome.status, CompactionStatus::Abandoned(_)),
        "{outcome:?}"
    );
    assert_eq!(outcome.version, None);
    assert!(outputs.iter().all(|p| !p.exists()), "outputs deleted");
    let after = replay(&location);
    assert_eq!(
        after.version,
        before.version + 1,
        "only the property change"
    );
    assert_eq!(after.files, before.files);
}

#[tokio::test]
async fn below_the_threshold_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let mut sink = sink(&location, &[], None).await;
    for n in 1..=19 {
        append(&mut sink, 0, n, &rows(n * 10..n * 10 + 10, |_| None)).await;
    }
    let before = replay(&location);
    let on_disk = parquet_on_disk(&location);
    assert_eq!(on_disk.len(), 19);

    let outcome = sink
        .compact(&CompactionPolicy::default())
        .await
        .expect("compact");
    assert_eq!(outcome.status, CompactionStatus::NothingToDo);
    assert_eq!(outcome.version, None);
    assert_eq!(outcome.read_version, before.version);

    // Enough files, but none small.
    let mut table = open(&location).await;
    let none_small = CompactionPolicy {
        small_file_bytes: Some(1),
        min_small_files: 2,
        ..CompactionPolicy::default()
    };
    let outcome = compact_to_default_target(&mut table, &location, &none_small).await;
    assert_eq!(outcome.status, CompactionStatus::NothingToDo);

    let after = replay(&location);
    assert_eq!(after.version, before.version, "no commit");
    assert_eq!(after.files, before.files);
    assert_eq!(parquet_on_disk(&location), on_disk, "no file written");
}

#[tokio::test]
async fn rewritten_files_are_encoded_as_the_appends_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let parquet = ParquetSettings {
        compression: ParquetCompression::Zstd,
        dictionary_page_bytes: 0,
    };
    let mut sink = DeltaSink::open(OpenOptions {
        uri: &location,
        storage_options: Default::default(),
        schema: schema(),
        partition_by: Vec::new(),
        checkpoint_interval: 10,
        target_file_size: None,
        parquet,
        description: "compaction test",
        merge_schema: false,
        properties: Vec::new(),
    })
    .await
    .expect("open or create the table");
    for n in 1..=20 {
        append(
            &mut sink,
            0,
            n,
            &rows(n * 10..n * 10 + 10, |_| Some("east")),
        )
        .await;
    }
    let appended = parquet_on_disk(&location);
    let outcome = sink
        .compact(&CompactionPolicy::default())
        .await
        .expect("compact");
    assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");
    let rewritten: Vec<PathBuf> = parquet_on_disk(&location)
        .into_iter()
        .filter(|path| !appended.contains(path))
        .collect();
    assert_eq!(rewritten.len(), outcome.files_added);

    // Every file, appended or rewritten: zstd, and no dictionary page in any column chunk.
    use deltalake::parquet::basic::Compression;
    for path in appended.iter().chain(&rewritten) {
        for group in footer(path).row_groups() {
            for chunk in group.columns() {
                assert!(
                    matches!(chunk.compression(), Compression::ZSTD(_)),
                    "{}: {:?}",
                    path.display(),
                    chunk.compression()
                );
                assert_eq!(
                    chunk.dictionary_page_offset(),
                    None,
                    "{}: a dictionary page",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test]
async fn an_appended_file_has_a_dictionary_only_where_it_pays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = location(&dir);
    let mut sink = sink(&location, &[], None).await;
    // Unique ids and values, one site: only the site's dictionary is worth writing.
    append(&mut sink, 0, 1, &rows(0..5_000, |_| Some("east"))).await;
    let files = parquet_on_disk(&location);
    assert_eq!(files.len(), 1, "{files:?}");
    let mut dictionaries = BTreeMap::new();
    for group in footer(&files[0]).row_groups() {
        for chunk in group.columns() {
            dictionaries.insert(
                chunk.column_path().string(),
                chunk.dictionary_page_offset().is_some(),
            );
        }
    }
    assert_eq!(
        dictionaries,
        BTreeMap::from([
            ("id".to_string(), false),
            ("site".to_string(), true),
            ("value".to_string(), false),
        ])
    );
}

/// A Parquet file's footer.
fn footer(path: &FsPath) -> deltalake::parquet::file::metadata::ParquetMetaData {
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).expect("open the file");
    let reader = SerializedFileReader::new(file).expect("read the footer");
    reader.metadata().clone()
}

/// Row groups per rewritten file (and the rows in them), from the files' footers.
fn row_groups_of_rewritten(location: &str, appended: &[PathBuf]) -> Vec<(usize, i64)> {
    parquet_on_disk(location)
        .into_iter()
        .filter(|path| !appended.contains(path))
        .map(|path| {
            let metadata = footer(&path);
            (
                metadata.num_row_groups(),
                metadata.file_metadata().num_rows(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_row_group_bound_splits_a_rewritten_file() {
    for (row_group_bytes, expect_split) in [(1, true), (DEFAULT_COMPACTION_ROW_GROUP_BYTES, false)]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = location(&dir);
        let mut sink = thirty_appends(&location).await;
        let appended = parquet_on_disk(&location);
        let policy = CompactionPolicy {
            row_group_bytes,
            ..CompactionPolicy::default()
        };
        let outcome = sink.compact(&policy).await.expect("compact");
        assert_eq!(outcome.status, CompactionStatus::Committed, "{outcome:?}");

        let rewritten = row_groups_of_rewritten(&location, &appended);
        assert_eq!(rewritten.len(), 1, "{rewritten:?}");
        let (groups, rows) = rewritten[0];
        assert_eq!(rows, 300);
        if expect_split {
            // Each slice the writer is given closes a group once the bound is passed.
            assert!(groups > 1, "one row group under a 1-byte bound");
        } else {
            assert_eq!(groups, 1, "300 small rows split under the default bound");
        }
        assert_eq!(replay(&location).rows.len(), 300);
    }
}

#[test]
fn the_workers_compaction_knobs_reach_the_policy() {
    let tuning = Tuning {
        compaction_min_files: Some(3),
        compaction_row_group_bytes: 1 << 20,
        ..Tuning::default()
    };
    let policy = CompactionPolicy::tuned(&tuning);
    assert_eq!(policy.min_small_files, 3);
    assert_eq!(policy.row_group_bytes, 1 << 20);
    let untouched = CompactionPolicy::tuned(&Tuning::default());
    assert_eq!(
        untouched.min_small_files,
        CompactionPolicy::default().min_small_files
    );
    assert_eq!(
        untouched.row_group_bytes,
        DEFAULT_COMPACTION_ROW_GROUP_BYTES
    );
}
