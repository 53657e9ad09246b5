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
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(
        !status.success(),
        "a partition that does not exist must stop the query"
    );
    let stderr = worker.stderr_text();
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
    let (worker, status) = run_to_end(&ws, &path, &broker.bootstrap, "run");
    assert!(!status.success());
    assert!(
        worker.stderr_text().contains("auto.offset.reset"),
        "{}",
        worker.stderr_text()
    );
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

    let (worker, status) = run_to_end(&ws, &strict, &broker.bootstrap, "strict");
    assert!(!status.success());
    let stderr = worker.stderr_text();
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
    // partition, as it does under a real backlog.
    let mut worker = Worker::start(&ws, &path, &broker.bootstrap, "running");
    wait_for("the first batch", Duration::from_secs(30), || {
        !worker.progress().is_empty()
    });
    for i in 0..300 {
        broker.send("t", 0, None, reading(i, "oslo", 2.0).as_bytes());
    }
    broker.flush();
    // Everything below 310 goes, including where the paused worker stands; 310..315 stay.
    let low = broker.delete_records("t", 0, 310);
    assert_eq!(low, 310, "the broker's new low watermark");
    for i in 0..5 {
        broker.send("t", 0, None, reading(i, "rome", 3.0).as_bytes());
    }
    broker.flush();

    let status = worker.wait(Duration::from_secs(40));
    assert!(!status.success(), "the worker must stop on data loss");
    // The records read ahead before the deletion (10..160) may or may not have been committed
    // first, depending on whether the fetch error arrived before the batch closed: either way
    // the table holds an unbroken prefix, and the error names exactly what follows it.
    let committed = read_table(&ws.table()).coordinates();
    let next = committed.len() as i64;
    assert!(next == 10 || next == 160, "committed {next} records");
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
