//! Source options: startingOffsets, assign, subscribePattern, options, secretOptions, triggers.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::*;

fn fill(broker: &Broker, topic: &str, partitions: i32, per_partition: usize) {
    broker.topic(topic, partitions);
    for p in 0..partitions {
        for i in 0..per_partition {
            broker.send(topic, p, None, reading(i, "oslo", 1.0).as_bytes());
        }
    }
    broker.flush();
}

#[test]
fn starting_offsets_latest_skips_what_was_there_and_keeps_what_comes() {
    let broker = Broker::start();
    fill(&broker, "t", 1, 10);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "latest", "t");
    manifest.source = "subscribe: [t]\n      startingOffsets: latest".into();
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "first");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_eq!(read_table(&ws.table()).rows(), 0);
    for i in 0..5 {
        broker.send("t", 0, None, reading(i, "rome", 2.0).as_bytes());
    }
    broker.flush();
    // The query's start was fixed when it was created: a later run continues from there.
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "second");
    assert!(status.success(), "{}", worker.stderr_text());
    let offsets: Vec<i64> = read_table(&ws.table())
        .coordinates()
        .iter()
        .map(|c| c.2)
        .collect();
    assert_eq!(offsets, (10..15).collect::<Vec<_>>());
}

#[test]
fn assign_reads_only_its_partitions_from_json_starting_offsets() {
    let broker = Broker::start();
    fill(&broker, "t", 3, 10);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "assigned", "t");
    manifest.source =
        "assign: {t: [0, 1]}\n      startingOffsets: '{\"t\":{\"0\":3,\"1\":-2}}'".into();
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());
    let mut expected: Vec<(String, i32, i64)> = (3..10).map(|o| ("t".to_string(), 0, o)).collect();
    expected.extend((0..10).map(|o| ("t".to_string(), 1, o)));
    assert_eq!(read_table(&ws.table()).coordinates(), expected);
    let progress = worker.progress();
    assert_eq!(
        progress[0]["sources"][0]["description"],
        "KafkaV2[Assign[t-0, t-1]]"
    );
}

#[test]
fn starting_offsets_for_a_partition_that_does_not_exist_are_refused() {
    let broker = Broker::start();
    fill(&broker, "t", 2, 5);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "typo", "t");
    manifest.source =
        "subscribe: [t]\n      startingOffsets: '{\"t\":{\"0\":1,\"1\":-2,\"5\":0}}'".into();
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "run",
        "a partition that does not exist must stop the query",
    );
    assert!(
        stderr.contains("it names t-5 that the query does not read"),
        "{stderr}"
    );
    // The table may have been created (empty) before the offsets were resolved.
    if ws.table().join("_delta_log").exists() {
        assert_eq!(read_table(&ws.table()).rows(), 0, "nothing written");
    }
}

#[test]
fn subscribe_pattern_matches_whole_topic_names() {
    let broker = Broker::start();
    fill(&broker, "iot-a", 2, 5);
    fill(&broker, "iot-b", 1, 5);
    fill(&broker, "logs-iot-c", 1, 5);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "pattern", "unused");
    manifest.source = "subscribePattern: 'iot-.*'\n      startingOffsets: earliest".into();
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());
    let ends = BTreeMap::from([
        (("iot-a".to_string(), 0), 5),
        (("iot-a".to_string(), 1), 5),
        (("iot-b".to_string(), 0), 5),
    ]);
    assert_eq!(
        read_table(&ws.table()).coordinates(),
        expected_coordinates(&ends)
    );
}

#[test]
fn options_pass_through_and_secret_options_are_never_printed() {
    let broker = Broker::start();
    fill(&broker, "t", 1, 20);
    let ws = Workspace::new();
    let secrets = ws.path("secrets");
    std::fs::create_dir_all(secrets.join("kafka-creds")).expect("secrets dir");
    let secret = "s3cr3t-VALUE-never-logged";
    std::fs::write(
        secrets.join("kafka-creds").join("password"),
        format!("{secret}\n"),
    )
    .expect("secret");
    let mut manifest = Manifest::subscribe(&ws, "options", "t");
    manifest.option("client.id", "custom-client");
    manifest.option("fetch.wait.max.ms", "20");
    manifest.option("group.id", "my-group");
    manifest.source.push_str(
        "\n      secretOptions: {sasl.password: {secretKeyRef: {name: kafka-creds, key: password}}}",
    );
    let path = ws.write("m.yaml", &manifest.render());
    let secrets_dir = secrets.display().to_string();
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "run",
        &[
            ("TRIBUTARY_SECRETS_DIR", &secrets_dir),
            ("RUST_LOG", "debug"),
        ],
    );
    let status = worker.wait(Duration::from_secs(60));
    let stderr = worker.stderr_text();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("group=my-group"),
        "group.id from options is used: {stderr}"
    );
    assert!(stderr.contains("sasl.password=<secret>"), "{stderr}");
    let stdout = std::fs::read_to_string(&worker.stdout).expect("stdout");
    assert!(
        !stderr.contains(secret) && !stdout.contains(secret),
        "the secret leaked"
    );
    assert_eq!(read_table(&ws.table()).rows(), 20);
    // The consumer group's offsets follow the table (for lag tools), after the Delta commit.
    let group: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "my-group")
        .create()
        .expect("client");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("t", 0);
    let committed =
        rdkafka::consumer::Consumer::committed_offsets(&group, tpl, Duration::from_secs(10))
            .expect("committed offsets");
    assert_eq!(
        committed.find_partition("t", 0).map(|e| e.offset()),
        Some(rdkafka::Offset::Offset(20))
    );

    // The same manifest without the Secret: a clear error, naming both ways to provide it.
    let empty = ws.path("no-secrets");
    std::fs::create_dir_all(&empty).expect("dir");
    let empty_dir = empty.display().to_string();
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "missing",
        &[("TRIBUTARY_SECRETS_DIR", &empty_dir)],
    );
    assert!(!worker.wait(Duration::from_secs(60)).success());
    let stderr = worker.stderr_text();
    assert!(
        stderr.contains("cannot read Secret kafka-creds/password"),
        "{stderr}"
    );
    assert!(
        stderr.contains("TRIBUTARY_SECRET_KAFKA_CREDS_PASSWORD"),
        "{stderr}"
    );
}

#[test]
fn options_tributary_manages_are_refused() {
    let broker = Broker::start();
    fill(&broker, "t", 1, 1);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "forbidden", "t");
    manifest.option("auto.offset.reset", "earliest");
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "run",
        "an option Tributary manages must be refused",
    );
    assert!(stderr.contains("auto.offset.reset"), "{stderr}");
}

#[test]
fn processing_time_spaces_batches_by_its_interval() {
    let broker = Broker::start();
    broker.topic("t", 1);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "interval", "t");
    manifest.trigger = "{processingTime: 1500ms}";
    let path = ws.write("m.yaml", &manifest.render());
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "run");
    let mut sent = 0;
    wait_for("three batches", Duration::from_secs(60), || {
        broker.send("t", 0, None, reading(sent, "oslo", 1.0).as_bytes());
        broker.flush();
        sent += 1;
        worker.progress().len() >= 3
    });
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.stderr_text()
    );
    // When each batch started: its commit time minus its duration.
    let starts: Vec<i64> = worker
        .progress()
        .iter()
        .map(|p| {
            let at: chrono::DateTime<chrono::Utc> = p["timestamp"]
                .as_str()
                .expect("timestamp")
                .parse()
                .expect("rfc3339");
            at.timestamp_millis()
                - p["durationMs"]["triggerExecution"]
                    .as_i64()
                    .expect("duration")
        })
        .collect();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        // Millisecond rounding of the two times is all the slack there is.
        assert!(gap >= 1495, "batches started {gap} ms apart");
    }
}

#[test]
fn fail_on_data_loss_stops_naming_the_lost_range_or_skips_it_when_false() {
    let broker = Broker::start();
    fill(&broker, "t", 1, 10);
    let ws = Workspace::new();
    let strict = ws.write(
        "strict.yaml",
        &Manifest::subscribe(&ws, "loss", "t").render(),
    );
    let (worker, status) = run_to_end(&ws, &strict, &broker.bootstrap, "first");
    assert!(status.success(), "{}", worker.stderr_text());
    // 20 more records (offsets 10..30), then the broker deletes everything below 25: the ten
    // unread records 10..25 are gone.
    for i in 0..20 {
        broker.send("t", 0, None, reading(i, "rome", 2.0).as_bytes());
    }
    broker.flush();
    let low = broker.delete_records("t", 0, 25);
    assert_eq!(low, 25, "the broker's new low watermark");
    let high = broker.watermarks("t", 0).1;
    assert_eq!(high, 30);

    let stderr = run_refused(
        &ws,
        &strict,
        &broker.bootstrap,
        "strict",
        "failOnDataLoss must stop on the lost range",
    );
    assert!(
        stderr.contains(&format!("data loss on t-0: offsets 10..{low}")),
        "{stderr}"
    );

    let mut lenient = Manifest::subscribe(&ws, "loss", "t");
    lenient.source.push_str("\n      failOnDataLoss: false");
    let lenient = ws.write("lenient.yaml", &lenient.render());
    let (worker, status) = run_to_end(&ws, &lenient, &broker.bootstrap, "lenient");
    assert!(status.success(), "{}", worker.stderr_text());
    assert!(
        worker
            .stderr_text()
            .contains("offsets lost to retention are skipped")
    );
    let mut expected: Vec<(String, i32, i64)> = (0..10).map(|o| ("t".to_string(), 0, o)).collect();
    expected.extend((low..high).map(|o| ("t".to_string(), 0, o)));
    assert_eq!(read_table(&ws.table()).coordinates(), expected);
}

#[test]
fn offsets_deleted_under_a_running_worker_stop_it_naming_the_lost_range() {
    let broker = Broker::start();
    fill(&broker, "t", 1, 10);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "loss-running", "t");
    // Long enough between batches for the broker to drop what the worker has not read yet.
    manifest.trigger = "{processingTime: 8s}";
    let path = ws.write("m.yaml", &manifest.render());
    // A read-ahead of 150 records: the worker reads that far between batches, then pauses the
    // partition, as it does under a real backlog. The records of the take that filled it are
    // kept too (up to 512, see `source::fetch`), so far more are produced than it can hold.
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "running");
    wait_for("the first batch", Duration::from_secs(30), || {
        !worker.progress().is_empty()
    });
    const PRODUCED: usize = 3000;
    for i in 0..PRODUCED {
        broker.send("t", 0, None, reading(i, "oslo", 2.0).as_bytes());
    }
    broker.flush();
    // Everything below 3010 goes, including where the paused worker stands; 3010..3015 stay.
    let low = broker.delete_records("t", 0, 10 + PRODUCED as i64);
    assert_eq!(low, 10 + PRODUCED as i64, "the broker's new low watermark");
    for i in 0..5 {
        broker.send("t", 0, None, reading(i, "rome", 3.0).as_bytes());
    }
    broker.flush();

    let status = worker.wait(Duration::from_secs(40));
    assert!(!status.success(), "the worker must stop on data loss");
    // The records read ahead before the deletion (from 10 to where the read-ahead filled) may
    // or may not have been committed first, depending on whether the fetch error arrived
    // before the batch closed: either way the table holds an unbroken prefix, and the error
    // names exactly what follows it.
    let committed = read_table(&ws.table()).coordinates();
    let next = committed.len() as i64;
    assert!(
        next == 10 || (160..10 + 150 + 512).contains(&next),
        "committed {next} records"
    );
    assert_eq!(
        committed,
        (0..next)
            .map(|o| ("t".to_string(), 0, o))
            .collect::<Vec<_>>()
    );
    let stderr = worker.stderr_text();
    assert!(
        stderr.contains(&format!("data loss on t-0: offsets {next}..{low}")),
        "{stderr}"
    );
}

/// Produces `value` to `partition` with an explicit record timestamp (and headers), waiting
/// for the delivery so offsets follow the order of calls.
fn send_at(
    producer: &rdkafka::producer::ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    topic: &str,
    partition: i32,
    timestamp_ms: i64,
    headers: &[(&str, Option<&[u8]>)],
    value: &[u8],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer};
    let mut owned = OwnedHeaders::new();
    for (key, value) in headers {
        owned = owned.insert(Header { key, value: *value });
    }
    let record = BaseRecord::<[u8], [u8]>::to(topic)
        .partition(partition)
        .timestamp(timestamp_ms)
        .headers(owned)
        .payload(value);
    producer.send(record).map_err(|(e, _)| e).expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Milliseconds since the epoch, an hour ago: record times the broker accepts and keeps.
fn an_hour_ago_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    now - 3_600_000
}

#[test]
fn starting_timestamps_start_each_partition_at_its_first_record_at_or_after_the_time() {
    let broker = Broker::start();
    broker.topic("t", 2);
    let producer = producer(&broker.bootstrap);
    let base = an_hour_ago_ms();
    // Partition 0: records at +0, +10, +20, +30 s; partition 1: +0, +5, +8 s.
    for (i, offset_s) in [0, 10, 20, 30].iter().enumerate() {
        send_at(
            &producer,
            "t",
            0,
            base + offset_s * 1000,
            &[],
            reading(i, "p0", 1.0).as_bytes(),
        );
    }
    for (i, offset_s) in [0, 5, 8].iter().enumerate() {
        send_at(
            &producer,
            "t",
            1,
            base + offset_s * 1000,
            &[],
            reading(i, "p1", 1.0).as_bytes(),
        );
    }
    let at_10s = base + 10_000;

    // startingTimestamp with the latest strategy: partition 1 has nothing at or after +10 s,
    // so it starts at its latest offset (3) and contributes nothing.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "by-time", "t");
    manifest.source = format!(
        "subscribe: [t]\n      startingTimestamp: {at_10s}\n      startingOffsetsByTimestampStrategy: latest"
    );
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "latest");
    assert!(status.success(), "{}", worker.stderr_text());
    let expected: Vec<(String, i32, i64)> = (1..4).map(|o| ("t".to_string(), 0, o)).collect();
    assert_eq!(read_table(&ws.table()).coordinates(), expected);
    // Records that arrive later on partition 1 are read from offset 3 on.
    send_at(
        &producer,
        "t",
        1,
        base + 40_000,
        &[],
        reading(9, "p1", 2.0).as_bytes(),
    );
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "later");
    assert!(status.success(), "{}", worker.stderr_text());
    let mut expected = expected;
    expected.push(("t".to_string(), 1, 3));
    assert_eq!(read_table(&ws.table()).coordinates(), expected);

    // The default strategy (error): the query does not start, naming the partition.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "by-time-strict", "t");
    let at_35s = base + 35_000;
    manifest.source = format!("subscribe: [t]\n      startingTimestamp: {at_35s}");
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "error",
        "no record after the time must stop the query",
    );
    assert!(
        stderr.contains("startingTimestamp: t-0 have no record at or after")
            && stderr.contains("startingOffsetsByTimestampStrategy: latest"),
        "{stderr}"
    );
    if ws.table().join("_delta_log").exists() {
        assert_eq!(read_table(&ws.table()).rows(), 0, "nothing written");
    }

    // startingOffsetsByTimestamp: a time per partition.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "by-partition-time", "t");
    manifest.source = format!(
        "subscribe: [t]\n      startingOffsetsByTimestamp: '{{\"t\":{{\"0\":{},\"1\":{}}}}}'",
        base + 25_000,
        base + 5_000
    );
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "per-partition");
    assert!(status.success(), "{}", worker.stderr_text());
    assert_eq!(
        read_table(&ws.table()).coordinates(),
        vec![
            ("t".to_string(), 0, 3),
            ("t".to_string(), 1, 1),
            ("t".to_string(), 1, 2),
            ("t".to_string(), 1, 3),
        ]
    );

    // A partition left out of startingOffsetsByTimestamp is refused, as Spark refuses it.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "by-partition-missing", "t");
    manifest.source =
        format!("subscribe: [t]\n      startingOffsetsByTimestamp: '{{\"t\":{{\"0\":{base}}}}}'");
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "missing",
        "a partition left out of startingOffsetsByTimestamp must be refused",
    );
    assert!(
        stderr.contains("startingOffsetsByTimestamp must give a time for every partition")
            && stderr.contains("it leaves out t-1"),
        "{stderr}"
    );
}

#[test]
fn ending_offsets_end_a_run_to_completion_where_they_say() {
    let broker = Broker::start();
    fill(&broker, "t", 2, 10);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "ending", "t");
    manifest.source =
        "subscribe: [t]\n      startingOffsets: earliest\n      endingOffsets: '{\"t\":{\"0\":4,\"1\":-1}}'".into();
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "available-now");
    assert!(status.success(), "{}", worker.stderr_text());
    let mut expected: Vec<(String, i32, i64)> = (0..4).map(|o| ("t".to_string(), 0, o)).collect();
    expected.extend((0..10).map(|o| ("t".to_string(), 1, o)));
    assert_eq!(read_table(&ws.table()).coordinates(), expected);

    // once: one batch up to the same ends.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "ending-once", "t");
    manifest.source =
        "subscribe: [t]\n      startingOffsets: earliest\n      endingOffsets: '{\"t\":{\"0\":2,\"1\":3}}'".into();
    manifest.trigger = "{once: true}";
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "once");
    assert!(status.success(), "{}", worker.stderr_text());
    let ends = BTreeMap::from([(("t".to_string(), 0), 2), (("t".to_string(), 1), 3)]);
    assert_eq!(
        read_table(&ws.table()).coordinates(),
        expected_coordinates(&ends)
    );
    assert_eq!(worker.progress().len(), 1, "once is one batch");

    // An end past the latest offset is refused, naming it: the run would wait forever.
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "ending-beyond", "t");
    manifest.source =
        "subscribe: [t]\n      startingOffsets: earliest\n      endingOffsets: '{\"t\":{\"0\":50,\"1\":-1}}'".into();
    let path = ws.write("m.yaml", &manifest.render());
    let stderr = run_refused(
        &ws,
        &path,
        &broker.bootstrap,
        "beyond",
        "an endingOffsets past the latest offset must be refused",
    );
    assert!(
        stderr.contains(
            "endingOffsets names offsets past the latest of their partitions (t-0: 50 (latest 10))"
        ),
        "{stderr}"
    );
}

#[test]
fn min_offsets_per_trigger_waits_for_enough_offsets_or_the_delay() {
    let broker = Broker::start();
    fill(&broker, "t", 1, 25);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "minimum", "t");
    manifest.source = "subscribe: [t]\n      startingOffsets: earliest\n      minOffsetsPerTrigger: 10\n      maxTriggerDelay: 8s".into();
    manifest.trigger = "{}";
    let path = ws.write("m.yaml", &manifest.render());
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "continuous");
    let rows = |ws: &Workspace| {
        if ws.table().join("_delta_log").exists() {
            read_table(&ws.table()).rows()
        } else {
            0
        }
    };
    // The first batch is never put off (as in Spark): the 25 records waiting are read.
    wait_for("the first batch", Duration::from_secs(60), || {
        rows(&ws) == 25
    });

    // 3 records: fewer than the minimum, so they wait for maxTriggerDelay (8 s after the last
    // batch) before a batch reads them.
    let sent = std::time::Instant::now();
    for i in 0..3 {
        broker.send("t", 0, None, reading(i, "few", 1.0).as_bytes());
    }
    broker.flush();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        rows(&ws),
        25,
        "3 offsets are fewer than minOffsetsPerTrigger: no batch yet"
    );
    wait_for("the delayed batch", Duration::from_secs(30), || {
        rows(&ws) == 28
    });
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "the small batch ran after {waited:?}, before maxTriggerDelay"
    );

    // 12 records at once: enough, read at the next trigger.
    let sent = std::time::Instant::now();
    for i in 0..12 {
        broker.send("t", 0, None, reading(i, "many", 1.0).as_bytes());
    }
    broker.flush();
    wait_for(
        "the batch of enough offsets",
        Duration::from_secs(30),
        || rows(&ws) == 40,
    );
    let waited = sent.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "a batch of enough offsets waited {waited:?}"
    );
    worker.terminate();
    assert!(
        worker.wait(Duration::from_secs(30)).success(),
        "{}",
        worker.stderr_text()
    );
    let offsets: Vec<i64> = read_table(&ws.table())
        .coordinates()
        .iter()
        .map(|c| c.2)
        .collect();
    assert_eq!(offsets, (0..40).collect::<Vec<_>>(), "every record once");
}

#[test]
fn group_id_prefix_and_spark_prefixed_options_reach_the_consumer() {
    let broker = Broker::start();
    fill(&broker, "t", 1, 7);
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "pasted", "t");
    manifest.source.push_str("\n      groupIdPrefix: etl");
    // Options pasted from Spark code, with the kafka. prefix.
    manifest.options = vec![
        ("kafka.session.timeout.ms".into(), "6000".into()),
        ("kafka.heartbeat.interval.ms".into(), "500".into()),
        ("kafka.security.protocol".into(), "PLAINTEXT".into()),
        ("kafka.fetch.wait.max.ms".into(), "20".into()),
    ];
    let path = ws.write("m.yaml", &manifest.render());
    let mut worker = Worker::start_with_env(
        &ws,
        &path,
        &broker.bootstrap,
        "run",
        &[("RUST_LOG", "info")],
    );
    let status = worker.wait(Duration::from_secs(60));
    let stderr = worker.stderr_text();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("group=etl-test-pasted"), "{stderr}");
    assert!(
        stderr.contains("fetch.wait.max.ms=20") && !stderr.contains("kafka.fetch"),
        "the kafka. prefix is removed: {stderr}"
    );
    assert_eq!(read_table(&ws.table()).rows(), 7);
    // The group the prefix names holds the offsets after the Delta commit.
    let group: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "etl-test-pasted")
        .create()
        .expect("client");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("t", 0);
    let committed =
        rdkafka::consumer::Consumer::committed_offsets(&group, tpl, Duration::from_secs(10))
            .expect("committed offsets");
    assert_eq!(
        committed.find_partition("t", 0).map(|e| e.offset()),
        Some(rdkafka::Offset::Offset(7))
    );

    // A prefixed option librdkafka refuses is named, without the prefix; a prefixed option
    // Tributary manages is refused with its own name.
    for (option, value, says) in [
        ("kafka.fetch.wait.max.ms", "soon", "fetch.wait.max.ms"),
        (
            "kafka.enable.auto.commit",
            "true",
            "options[kafka.enable.auto.commit]: options must not set auto.offset.reset, enable.auto.commit",
        ),
    ] {
        let ws = Workspace::new();
        let mut manifest = Manifest::subscribe(&ws, "refused", "t");
        manifest.option(option, value);
        let path = ws.write("m.yaml", &manifest.render());
        let stderr = run_refused(
            &ws,
            &path,
            &broker.bootstrap,
            "refused",
            &format!("{option}: {value} must be refused"),
        );
        assert!(stderr.contains(says), "{option}: {stderr}");
    }
}

#[test]
fn include_headers_keeps_headers_as_sparks_array_of_structs() {
    use deltalake::arrow::array::{Array, AsArray};
    let broker = Broker::start();
    broker.topic("t", 1);
    let producer = producer(&broker.bootstrap);
    let now = an_hour_ago_ms();
    send_at(
        &producer,
        "t",
        0,
        now,
        &[
            ("trace", Some(b"abc")),
            ("empty", None),
            ("trace", Some(b"def")),
        ],
        reading(1, "h", 1.0).as_bytes(),
    );
    send_at(&producer, "t", 0, now, &[], reading(2, "h", 1.0).as_bytes());
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "headers", "t");
    manifest.source.push_str("\n      includeHeaders: true");
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());
    let table = read_table(&ws.table());
    assert!(
        table.schema_string.contains(r#"{"name":"kafka_headers","type":{"type":"array","elementType":{"type":"struct","fields":[{"name":"key","type":"string""#),
        "{}",
        table.schema_string
    );
    let mut seen = BTreeMap::new();
    for batch in &table.batches {
        let offsets = batch
            .column_by_name("kafka_offset")
            .expect("offset")
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let headers = batch
            .column_by_name("kafka_headers")
            .expect("kafka_headers")
            .as_list::<i32>();
        for row in 0..batch.num_rows() {
            let entries = headers.value(row);
            let entries = entries.as_struct();
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_binary::<i32>();
            let pairs: Vec<(String, Option<Vec<u8>>)> = (0..entries.len())
                .map(|i| {
                    (
                        keys.value(i).to_string(),
                        (!values.is_null(i)).then(|| values.value(i).to_vec()),
                    )
                })
                .collect();
            seen.insert(offsets.value(row), pairs);
        }
    }
    assert_eq!(
        seen[&0],
        vec![
            ("trace".to_string(), Some(b"abc".to_vec())),
            ("empty".to_string(), None),
            ("trace".to_string(), Some(b"def".to_vec())),
        ],
        "every header, in order, duplicates and null values kept"
    );
    assert_eq!(
        seen[&1],
        vec![],
        "a record without headers has an empty array"
    );
}

#[test]
fn timestamp_format_date_format_and_time_zone_reach_the_decoder() {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Date32Type, Int64Type, TimestampMicrosecondType};
    let broker = Broker::start();
    broker.topic("t", 1);
    for value in [
        r#"{"seen":"05/01/2024 10:30","day":"05/01/2024","local":"05.01.2024 10:30"}"#,
        r#"{"seen":"05/07/2024 10:30+00:00","day":"2024-07-05","local":"05.07.2024 10:30"}"#,
    ] {
        broker.send("t", 0, None, value.as_bytes());
    }
    broker.flush();
    let ws = Workspace::new();
    let mut manifest = Manifest::subscribe(&ws, "formats", "t");
    manifest.schema = "\n        - {name: seen, type: timestamp}\n        - {name: day, type: date}\n        - {name: local, type: timestamp_ntz}";
    manifest.extra_format = "      timestampFormat: 'dd/MM/yyyy HH:mm[XXX]'\n      dateFormat: dd/MM/yyyy\n      timestampNTZFormat: dd.MM.yyyy HH:mm\n      timeZone: Europe/Paris".into();
    let path = ws.write("m.yaml", &manifest.render());
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(status.success(), "{}", worker.stderr_text());
    let table = read_table(&ws.table());
    let mut rows = BTreeMap::new();
    for batch in &table.batches {
        let offsets = batch
            .column_by_name("kafka_offset")
            .expect("offset")
            .as_primitive::<Int64Type>();
        let seen = batch
            .column_by_name("seen")
            .expect("seen")
            .as_primitive::<TimestampMicrosecondType>();
        let day = batch
            .column_by_name("day")
            .expect("day")
            .as_primitive::<Date32Type>();
        let rescued = batch
            .column_by_name("_rescued_data")
            .expect("rescued")
            .as_string::<i32>();
        let local = batch
            .column_by_name("local")
            .expect("local")
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            // timestamp_ntz ignores timeZone: 10:30 stays 10:30.
            let expected = if offsets.value(i) == 0 {
                1_704_450_600_000_000
            } else {
                1_720_175_400_000_000
            };
            assert_eq!(
                local.value(i),
                expected,
                "timestamp_ntz at offset {}",
                offsets.value(i)
            );
            rows.insert(
                offsets.value(i),
                (
                    (!seen.is_null(i)).then(|| seen.value(i)),
                    (!day.is_null(i)).then(|| day.value(i)),
                    (!rescued.is_null(i)).then(|| rescued.value(i).to_string()),
                ),
            );
        }
    }
    // 10:30 in Paris in January is 09:30 UTC; the written offset wins over timeZone.
    assert_eq!(rows[&0], (Some(1_704_447_000_000_000), Some(19727), None));
    // A date in another form than dateFormat is not read (Spark: null), and is rescued.
    assert_eq!(
        rows[&1],
        (
            Some(1_720_175_400_000_000),
            None,
            Some(r#"{"day":"2024-07-05"}"#.to_string())
        )
    );
}
