//! spec.reset against Apache Kafka: a rewind applied exactly once under kill -9 (its records
//! and dead letters read again, once more), a skip by time in a continuous query, and the same
//! manifest applied again changing nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const RESET_OPERATION: &str = "RESET STREAMING OFFSETS";

/// The commit infos of a table's reset commits.
fn reset_commits(table: &std::path::Path) -> Vec<Value> {
    commit_infos(table)
        .into_iter()
        .filter(|info| info["operation"] == RESET_OPERATION)
        .collect()
}

/// How many times each (partition, offset) is in a table.
fn counts(table: &std::path::Path) -> BTreeMap<(i32, i64), usize> {
    let mut seen = BTreeMap::new();
    for (_, partition, offset) in read_table(table).coordinates() {
        *seen.entry((partition, offset)).or_insert(0) += 1;
    }
    seen
}

/// Whether a table's log holds the marker of reset `id` (any query).
fn marker_in(table: &std::path::Path, id: &str) -> bool {
    table_txns(table)
        .keys()
        .any(|app| app.starts_with("tributary-reset-") && app.ends_with(&format!("-{id}")))
}

/// Waits for `text` in the worker's log, looking every millisecond (a reset takes a few), or
/// for the worker to exit; true when the text came.
fn wait_for_log(worker: &mut Worker, text: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if worker.stderr_text().contains(text) {
            return true;
        }
        if worker.child.try_wait().ok().flatten().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "no {text:?} in the worker's log within {timeout:?}:\n{}",
        worker.stderr_text()
    );
}

#[test]
fn a_rewind_is_applied_once_under_kill_and_reads_its_records_and_dead_letters_again() {
    const TOPIC: &str = "rewound";
    const PER_PARTITION: i64 = 1000;
    const REWIND_TO: i64 = 600;
    let bad = |offset: i64| offset % 10 == 3;
    let mut random = Random::from_time();
    let broker = Broker::start();
    broker.topic(TOPIC, 2);
    for offset in 0..PER_PARTITION {
        for partition in 0..2 {
            let value = if bad(offset) {
                "not json".to_string()
            } else {
                reading(offset as usize, "oslo", 1.0)
            };
            broker.send(TOPIC, partition, None, value.as_bytes());
        }
    }
    broker.flush();
    let ws = Workspace::new();
    let dead = ws.path("dead");
    let mut manifest = Manifest::subscribe(&ws, "rewind", TOPIC);
    manifest.on_error = "deadLetter";
    manifest.extra_format = format!("      deadLetter: {{uri: {}}}", dead.display());
    manifest
        .source
        .push_str("\n      maxOffsetsPerTrigger: 300");
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "first");
    assert!(status.success(), "{}", worker.stderr_text());
    let before = read_table(&ws.table()).version;

    // A partition the query does not read: refused before anything is written.
    manifest.spec_extra = format!("  reset: {{id: typo, offsets: '{{\"{TOPIC}\":{{\"7\":0}}}}'}}");
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "typo",
        "a reset naming a partition the query does not read must be refused",
    );
    assert!(
        stderr.contains("spec.reset typo cannot be applied")
            && stderr.contains(&format!("names {TOPIC}-7, which the query does not read")),
        "{stderr}"
    );
    assert_eq!(
        read_table(&ws.table()).version,
        before,
        "nothing was committed"
    );

    manifest.spec_extra =
        format!("  reset: {{id: rewind-1, offsets: '{{\"{TOPIC}\":{{\"0\":{REWIND_TO}}}}}'}}");
    let path = ws.write("m.yaml", &manifest.render());
    // Killed as the reset starts (before its commits), then a few milliseconds later (between
    // or after them), then anywhere in the batches that read the records again.
    let mut killed_before_the_reset = 0;
    for round in 0..5 {
        let mut worker = Worker::start(&ws, &path, &broker.bootstrap, &format!("kill{round}"));
        let applying = wait_for_log(
            &mut worker,
            "applying the offset reset",
            Duration::from_secs(60),
        );
        if round > 0 {
            std::thread::sleep(Duration::from_millis(random.below(25 * round)));
        }
        let still_running = worker.child.try_wait().ok().flatten().is_none();
        worker.kill();
        if applying && still_running && !marker_in(&ws.table(), "rewind-1") {
            killed_before_the_reset += 1;
        }
    }
    assert!(
        killed_before_the_reset >= 1,
        "no kill landed before the reset was committed"
    );
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "final");
    assert!(status.success(), "{}", worker.stderr_text());
    // The same manifest once more (as Argo CD re-applies it): no second reset.
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "again");
    assert!(status.success(), "{}", worker.stderr_text());
    assert!(
        worker.stderr_text().contains("it is not applied again"),
        "{}",
        worker.stderr_text()
    );

    // Rows: partition 0 from the rewind point twice, everything else once; bad records only
    // in the dead letters, with the same multiplicity.
    let rows = counts(&ws.table());
    let letters = counts(&dead);
    for partition in 0..2 {
        for offset in 0..PER_PARTITION {
            let expected = if partition == 0 && offset >= REWIND_TO {
                2
            } else {
                1
            };
            let (in_rows, in_letters) = if bad(offset) {
                (0, expected)
            } else {
                (expected, 0)
            };
            assert_eq!(
                rows.get(&(partition, offset)).copied().unwrap_or(0),
                in_rows,
                "rows of {TOPIC}-{partition} at {offset}"
            );
            assert_eq!(
                letters.get(&(partition, offset)).copied().unwrap_or(0),
                in_letters,
                "dead letters of {TOPIC}-{partition} at {offset}"
            );
        }
    }
    let table = read_table(&ws.table());
    assert_eq!(table.txn_for(TOPIC, 0), Some(PER_PARTITION));
    assert_eq!(table.txn_for(TOPIC, 1), Some(PER_PARTITION));

    // One reset commit in each table, saying what it did in the history.
    for log in [ws.table(), dead.clone()] {
        let resets = reset_commits(&log);
        assert_eq!(resets.len(), 1, "{}: {resets:?}", log.display());
        let reset = &resets[0];
        let parameters = &reset["operationParameters"];
        assert_eq!(parameters["resetId"], "rewind-1");
        assert_eq!(
            parameters["to"],
            format!("offsets {{\"{TOPIC}\":{{\"0\":{REWIND_TO}}}}}")
        );
        assert_eq!(
            parameters["offsets"],
            format!("{{\"{TOPIC}\":{{\"0\":{REWIND_TO}}}}}")
        );
        assert_eq!(parameters["ingestion"], "test/rewind");
        assert!(
            reset["userMetadata"].as_str().is_some_and(
                |m| m.starts_with("reset rewind-1 of ingestion test/rewind to offsets")
            ),
            "{reset}"
        );
        assert_eq!(reset["tributary.resetId"], "rewind-1");
        assert!(reset["timestamp"].as_i64().is_some());
    }
}

#[test]
fn a_skip_by_time_in_a_continuous_query_leaves_out_the_skipped_records_only() {
    const TOPIC: &str = "skipped";
    let broker = Broker::start();
    broker.topic(TOPIC, 2);
    let produce = |from: i64, count: i64| {
        for offset in from..from + count {
            for partition in 0..2 {
                broker.send(
                    TOPIC,
                    partition,
                    None,
                    reading(offset as usize, "bergen", 2.0).as_bytes(),
                );
            }
        }
        broker.flush();
    };
    let caught_up = |ws: &Workspace, end: i64| {
        let txns = table_txns(&ws.table());
        (0..2).all(|p| {
            let suffix = format!("-{TOPIC}-{p}");
            txns.iter()
                .any(|(id, v)| id.ends_with(&suffix) && !id.contains("-deadletter-") && *v == end)
        })
    };
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "skip", TOPIC);
    manifest.trigger = "{}";
    let path = ws.write("m.yaml", &manifest.render());

    // A: read. B: written while the query is down, then skipped by time. C: read.
    produce(0, 200);
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "a");
    wait_for("A", Duration::from_secs(90), || caught_up(&ws, 200));
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.stderr_text()
    );
    produce(200, 100);
    std::thread::sleep(Duration::from_millis(50));
    let skip_to = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(50));
    produce(300, 100);
    manifest.spec_extra = format!(
        "  reset: {{id: skip-b, timestamp: '{}'}}",
        skip_to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let path = ws.write("m.yaml", &manifest.render());
    // Two replicas start with the reset at once, as a rollout of two workers would: one applies
    // it, the other finds it applied (or loses the commit race and then finds it).
    let mut first = Worker::start(&ws, &path, &broker.bootstrap, "c1");
    let mut second = Worker::start(&ws, &path, &broker.bootstrap, "c2");
    wait_for("C", Duration::from_secs(90), || caught_up(&ws, 400));
    for worker in [&mut first, &mut second] {
        worker.terminate();
        assert!(
            worker.wait(Duration::from_secs(30)).success(),
            "{}",
            worker.stderr_text()
        );
    }
    let logs = format!("{}{}", first.stderr_text(), second.stderr_text());
    assert_eq!(
        logs.matches("offset reset applied").count(),
        1,
        "one worker applies it: {logs}"
    );

    // D, with the same manifest applied again: nothing is skipped or read twice.
    produce(400, 50);
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "d");
    wait_for("D", Duration::from_secs(90), || caught_up(&ws, 450));
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.stderr_text()
    );

    let rows = counts(&ws.table());
    for partition in 0..2 {
        for offset in 0..450 {
            let expected = usize::from(!(200..300).contains(&offset));
            assert_eq!(
                rows.get(&(partition, offset)).copied().unwrap_or(0),
                expected,
                "{TOPIC}-{partition} at {offset}"
            );
        }
    }
    let resets = reset_commits(&ws.table());
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(
        resets[0]["operationParameters"]["offsets"],
        format!("{{\"{TOPIC}\":{{\"0\":300,\"1\":300}}}}")
    );
}
