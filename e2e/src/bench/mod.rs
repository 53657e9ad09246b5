//! The benchmark: produce, measure the limit, measure the worker (throughput, latency, memory),
//! report. Each step is its own module; this one only sequences them.

pub mod broker;
pub mod config;
pub mod data;
pub mod error;
pub mod latency;
pub mod limit;
pub mod machine;
pub mod procfs;
pub mod produce;
pub mod report;
pub mod stats;
pub mod table;
pub mod throughput;
pub mod versus;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use self::broker::Broker;
use self::config::{Args, Shape};
use self::error::{BenchError, Result};
use self::report::{ConfigFigures, LimitFigures, ProduceFigures, Report};

/// Runs of the plain-consume limit; the fastest is reported.
const LIMIT_RUNS: usize = 3;

/// A typical reading's size, to size the partitions before producing.
const TYPICAL_MESSAGE_BYTES: u64 = 165;

const TOPIC: &str = "bench-throughput";

fn out_dir(args: &Args) -> Result<PathBuf> {
    let dir = match &args.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("tributary-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(BenchError::io_path("create", &dir))?;
    // Absolute: the paths go into manifests the worker reads from its own working directory.
    std::fs::canonicalize(&dir).map_err(BenchError::io_path("resolve", &dir))
}

fn worker_bin(args: &Args) -> Result<PathBuf> {
    match &args.worker_bin {
        Some(bin) => Ok(bin.clone()),
        None => worker::default_worker_bin().ok_or_else(|| {
            BenchError::Args(
                "no tributary-worker next to this binary: build it (cargo build --release -p \
                 tributary-worker) or pass --worker-bin"
                    .into(),
            )
        }),
    }
}

/// A fresh run directory: stale tables or checkpoints would make the worker resume.
fn fresh(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(BenchError::io_path("clear", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(BenchError::io_path("create", dir))?;
    Ok(dir.to_owned())
}

fn partitions_why(args: &Args, partitions: i32) -> String {
    if args.broker == broker::BrokerKind::Kafka {
        return match args.partitions {
            Some(_) => "set by --partitions".into(),
            None => format!("{partitions}: Apache Kafka keeps every message"),
        };
    }
    let cap = broker::MOCK_PARTITION_CAP_BYTES / (1024 * 1024);
    if args.partitions.is_some() {
        return format!(
            "set by --partitions (the mock broker keeps at most {cap} MiB per partition)"
        );
    }
    format!(
        "not 6: librdkafka's mock broker keeps at most {cap} MiB per partition and silently drops \
         older data, so {} messages of ~{TYPICAL_MESSAGE_BYTES} B get {partitions} partitions of <= 4 MiB",
        args.messages
    )
}

pub fn run(args: &Args) -> Result<Report> {
    if args.messages == 0 || args.rate == 0 || args.duration <= 0.0 {
        return Err(BenchError::Args(
            "--messages, --rate and --duration must be positive".into(),
        ));
    }
    if args.versus.is_some() && args.skip_worker {
        return Err(BenchError::Args(
            "--vs compares with the worker's run: it cannot go with --skip-worker".into(),
        ));
    }
    if !args.shapes.is_empty() && args.malformed > 0.0 {
        return Err(BenchError::Args(
            "--shapes runs on clean data (its table check knows no malformed records): set --malformed 0".into(),
        ));
    }
    let out = out_dir(args)?;
    let worker_bin = if args.skip_worker {
        None
    } else {
        Some(worker_bin(args)?)
    };
    let partitions = args.partitions.unwrap_or_else(|| {
        broker::auto_partitions(args.broker, args.messages, TYPICAL_MESSAGE_BYTES)
    });
    let broker = Broker::start(args.broker)?;
    eprintln!(
        "{} on {}; out dir {}",
        broker.describe(),
        broker.bootstrap,
        out.display()
    );

    // (a) Produce everything before any timing starts.
    eprintln!(
        "producing {} messages to {partitions} partitions...",
        args.messages
    );
    broker.create_topic(TOPIC, partitions)?;
    let produced = produce::produce_mixed(
        &broker.bootstrap,
        TOPIC,
        partitions,
        args.messages,
        args.malformed(),
    )?;
    let (ends, watermark_ms_idle) = broker.check_complete(TOPIC, partitions, produced.messages)?;

    // (b) The limit.
    eprintln!("measuring the plain-consume limit...");
    // The best of a few runs: the limit is what the machine can do, and one run of it varies
    // with scheduling by up to ~2x on two shared cores.
    let mut consumed = limit::consume_all(
        &broker.bootstrap,
        TOPIC,
        &ends,
        Duration::from_secs(args.worker_timeout),
    )?;
    for _ in 1..LIMIT_RUNS {
        let again = limit::consume_all(
            &broker.bootstrap,
            TOPIC,
            &ends,
            Duration::from_secs(args.worker_timeout),
        )?;
        if again.seconds < consumed.seconds {
            consumed = again;
        }
    }
    if consumed.messages != produced.messages || consumed.bytes != produced.bytes {
        return Err(BenchError::Check(format!(
            "the limit consumer read {} messages / {} bytes of {} / {}",
            consumed.messages, consumed.bytes, produced.messages, produced.bytes
        )));
    }

    let mut report = Report {
        bench: "tributary-worker",
        machine: machine::describe(),
        config: ConfigFigures {
            broker: broker.describe(),
            messages: args.messages,
            partitions,
            partitions_why: partitions_why(args, partitions),
            rate: args.rate,
            duration_s: args.duration,
            max_offsets_per_trigger: args.max_offsets(),
            kafka_options: args
                .kafka_options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            worker_bin: worker_bin.as_ref().map(|b| b.display().to_string()),
            malformed_pct: args.malformed,
            on_error: args.on_error,
            out: out.display().to_string(),
        },
        produce: ProduceFigures::from(&produced),
        limit: LimitFigures::from(&consumed),
        watermark_ms_idle,
        worker: None,
        ratio_worker_to_limit: None,
        latency: None,
        memory: Vec::new(),
        versus: None,
        shapes: Vec::new(),
    };
    let Some(worker_bin) = worker_bin else {
        return Ok(report);
    };

    // (c) The worker, availableNow, on the same messages.
    eprintln!("measuring the worker (availableNow)...");
    let timeout = Duration::from_secs(args.worker_timeout);
    // One availableNow run of the worker; the runs differ only in these.
    let available_now = |dir: PathBuf, topic: &str, ends: &[i64], produced, shape| {
        throughput::run(&throughput::Plan {
            broker: &broker,
            worker_bin: &worker_bin,
            dir,
            topic,
            ends,
            produced,
            max_offsets_per_trigger: args.max_offsets(),
            kafka_options: &args.kafka_options,
            wrapper: &args.worker_wrapper,
            timeout,
            on_error: args.on_error,
            malformed: args.malformed(),
            shape,
        })
    };
    let throughput_dir = fresh(&out.join("throughput"))?;
    let throughput_started = SystemTime::now();
    let figures = available_now(
        throughput_dir.clone(),
        TOPIC,
        &ends,
        produced,
        Shape::Append,
    )?;
    report.ratio_worker_to_limit = Some(stats::rate(figures.rows_per_s, report.limit.msgs_per_s));
    if args.versus == Some(versus::Versus::Spark) {
        eprintln!("measuring Spark on the same topic (--vs spark)...");
        let tributary = versus::tributary_side(
            &figures,
            &throughput::table_dir(&throughput_dir),
            throughput_started,
        )?;
        report.versus = Some(versus::run_spark(
            &versus::Plan {
                bootstrap: &broker.bootstrap,
                dir: fresh(&out.join("spark"))?,
                topic: TOPIC,
                ends: &ends,
                messages: args.messages,
                timeout,
            },
            tributary,
        )?);
    }
    report.worker = Some(figures);

    // (c') The same messages with a transform, or in update mode.
    for &shape in &args.shapes {
        eprintln!("measuring the worker (availableNow, {})...", shape.as_str());
        report.shapes.push(available_now(
            fresh(&out.join(shape.as_str()))?,
            TOPIC,
            &ends,
            produced,
            shape,
        )?);
    }

    // (d) Continuous latency.
    if !args.skip_latency {
        eprintln!(
            "measuring continuous latency ({} msg/s for {} s after warm-up)...",
            args.rate, args.duration
        );
        // Sized for the window plus warm-up and drain, unless --partitions says otherwise.
        let expected = args.rate as f64 * (args.duration + 60.0);
        report.latency = Some(latency::run(&latency::Plan {
            broker: &broker,
            worker_bin: &worker_bin,
            dir: fresh(&out.join("latency"))?,
            partitions: args.partitions.unwrap_or_else(|| {
                broker::auto_partitions(args.broker, expected as u64, TYPICAL_MESSAGE_BYTES)
            }),
            rate: args.rate,
            duration: Duration::from_secs_f64(args.duration),
            max_offsets_per_trigger: args.max_offsets(),
            kafka_options: &args.kafka_options,
            wrapper: &args.worker_wrapper,
        })?);
    }

    // (e) Memory: the same availableNow run at several sizes.
    if args.memory {
        for &messages in &args.memory_sizes {
            eprintln!("memory run: {messages} messages...");
            let topic = format!("bench-memory-{messages}");
            let partitions = broker::auto_partitions(args.broker, messages, TYPICAL_MESSAGE_BYTES);
            broker.create_topic(&topic, partitions)?;
            let produced = produce::produce_mixed(
                &broker.bootstrap,
                &topic,
                partitions,
                messages,
                args.malformed(),
            )?;
            let (ends, _) = broker.check_complete(&topic, partitions, produced.messages)?;
            report.memory.push(available_now(
                fresh(&out.join(format!("memory-{messages}")))?,
                &topic,
                &ends,
                produced,
                Shape::Append,
            )?);
        }
    }
    Ok(report)
}
