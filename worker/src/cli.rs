//! The command line: `run` (one ingestion from a manifest file), `demo` and `broker`; the
//! process set-up around the pipeline (runtime, signals, logging, metrics server, status
//! reporting).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};
use crate::outputs::Telemetry;
use crate::outputs::metrics::Metrics;
use crate::outputs::report::{self, StatusReporter, StatusTarget};
use crate::source::SparkTakeover;
use crate::tuning::Tuning;
use crate::{demo, pipeline, secrets, standalone};

#[derive(Parser)]
#[command(
    name = "tributary-worker",
    version,
    about = "Kafka / Event Hubs -> Delta Lake ingestion, exactly once (Spark Structured Streaming's pattern, without Spark)"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the StreamingIngestion of a manifest file until its trigger says it is done.
    Run {
        /// The manifest (the same YAML you would kubectl apply).
        #[arg(short = 'f', long = "filename", visible_alias = "file")]
        file: PathBuf,
        /// Use these brokers instead of the manifest's bootstrapServers.
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Serve /metrics, /healthz and /readyz on this port (in a pod the operator sets it).
        #[arg(long, env = tributary_crds::pod::ENV_METRICS_PORT)]
        metrics_port: Option<u16>,
        /// Place the manifest's absolute local paths (the table, checkpoint and dead-letter
        /// table: mount paths in a pod, such as /lake/...) under this directory.
        #[arg(long, value_name = "DIR")]
        local_root: Option<PathBuf>,
        #[command(flatten)]
        tuning: Tuning,
        #[command(flatten)]
        takeover: TakeoverArgs,
    },
    /// Start the demo's embedded broker with its sensor readings and keep it running, producing
    /// new readings, until Ctrl-C: a broker to try `run` against. Prints the bootstrap address.
    Broker {
        /// New readings produced every second.
        #[arg(long, default_value_t = 10)]
        per_second: u32,
    },
    /// Start an embedded broker, produce simulated sensor readings, ingest them availableNow
    /// into a Delta table under DIR, and print a summary.
    Demo {
        #[arg(long, default_value = "./demo-lake")]
        dir: PathBuf,
        #[command(flatten)]
        tuning: Tuning,
    },
}

/// Moving a Spark Structured Streaming query onto Tributary.
#[derive(clap::Args, Clone, Debug)]
struct TakeoverArgs {
    /// Start a new query where the stopped Spark query with this checkpointLocation left off in
    /// the same Delta table: from the end offsets of the last batch the table holds. A local or
    /// mounted directory, or an abfss:// or az:// URL read with the manifest's checkpoint
    /// storage options (else the sink's). Read only while this query's own checkpoint is new.
    #[arg(long, value_name = "DIR_OR_URL")]
    from_spark_checkpoint: Option<String>,
    /// How long the Spark checkpoint must have been unchanged before the Spark query counts as
    /// stopped.
    #[arg(
        long,
        default_value_t = 120,
        value_name = "SECONDS",
        requires = "from_spark_checkpoint"
    )]
    spark_quiet_seconds: u64,
}

impl TakeoverArgs {
    fn takeover(&self) -> Option<SparkTakeover> {
        self.from_spark_checkpoint
            .as_ref()
            .map(|checkpoint| SparkTakeover {
                checkpoint: checkpoint.clone(),
                quiet: std::time::Duration::from_secs(self.spark_quiet_seconds),
            })
    }
}

impl Cli {
    /// Runs the command to its end; the exit code says how it ended.
    pub fn run(self) -> ExitCode {
        init_logging();
        crate::install_crypto_provider();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("tributary-io")
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        runtime.spawn(watch_signals(stop.clone()));
        let result = match self.command {
            Command::Run {
                file,
                bootstrap_servers,
                metrics_port,
                local_root,
                tuning,
                takeover,
            } => run(
                &file,
                &Standalone {
                    bootstrap: bootstrap_servers.as_deref(),
                    metrics_port,
                    local_root: local_root.as_deref(),
                },
                &tuning,
                takeover.takeover().as_ref(),
                stop,
                &runtime,
            ),
            Command::Broker { per_second } => {
                demo::serve_broker(per_second, stop).map(|()| ExitCode::SUCCESS)
            }
            Command::Demo { dir, tuning } => {
                demo::run(&dir, &tuning, stop, &runtime).map(|_| ExitCode::SUCCESS)
            }
        };
        // Close Delta's background uploads and the consumer before leaving.
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        match result {
            Ok(code) => code,
            Err(error) => {
                // A library's message may quote a request or an option: no secret value leaves.
                let error = secrets::redact(&error.to_string());
                // One line per failure: a person reads `error:`; a JSON log collector gets
                // the same text as a structured record instead of a second copy.
                if json_logs() {
                    tracing::error!(%error, "ingestion failed");
                } else {
                    eprintln!("error: {error}");
                }
                write_termination_message(Path::new(TERMINATION_LOG), &error);
                ExitCode::FAILURE
            }
        }
    }
}

/// Where Kubernetes reads a container's last words (the pod's default terminationMessagePath).
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Kubernetes keeps at most this many bytes of it.
const TERMINATION_MESSAGE_MAX: usize = 4096;

/// Leaves the error where the kubelet puts it into the container's last state, from which the
/// operator's CrashLooping condition quotes it: a pod that keeps failing (a table that does not
/// fit, a bad record with onError: fail) says why in `kubectl get`/`describe`. Outside a pod
/// the file does not exist and nothing is written.
fn write_termination_message(path: &Path, error: &str) {
    if !path.exists() {
        return;
    }
    let mut end = error.len().min(TERMINATION_MESSAGE_MAX);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    if let Err(e) = std::fs::write(path, &error[..end]) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
    }
}

/// What `run` takes from the command line beside the manifest.
struct Standalone<'a> {
    bootstrap: Option<&'a str>,
    metrics_port: Option<u16>,
    local_root: Option<&'a Path>,
}

fn run(
    file: &Path,
    options: &Standalone<'_>,
    tuning: &Tuning,
    takeover: Option<&SparkTakeover>,
    stop: Arc<AtomicBool>,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExitCode> {
    let mut ingestions = tributary_crds::manifest::load_file(file)?;
    if ingestions.len() != 1 {
        return Err(Error::SeveralIngestions {
            path: file.display().to_string(),
            count: ingestions.len(),
        });
    }
    let mut ingestion = ingestions.remove(0);
    if let Some(dir) = options.local_root {
        let root = standalone::place_under(&mut ingestion, dir)?;
        tracing::info!(root = %root.display(), "local paths of the manifest placed under the local root");
    }
    // The command line's takeover, or the manifest's (spec.checkpoint.fromSpark).
    let from_spec = ingestion
        .spec
        .checkpoint
        .from_spark
        .as_ref()
        .map(|spark| SparkTakeover {
            checkpoint: spark.location.clone(),
            quiet: spark.quiet(),
        });
    if let (Some(takeover), Some(query_id)) = (takeover, &ingestion.spec.checkpoint.query_id) {
        return Err(Error::SparkTakeover {
            checkpoint: takeover.checkpoint.clone(),
            reason: format!(
                "the manifest's spec.checkpoint.queryId ({query_id}) continues a Tributary query, and a new checkpoint starts from one of the two: drop --from-spark-checkpoint or queryId"
            ),
        });
    }
    let takeover = takeover.or(from_spec.as_ref());
    let bootstrap = options.bootstrap;
    // In a pod the pod's name is the worker's static group identity: a container restarted in
    // the same pod (after a crash, an OOM kill) resumes its partitions at once; pods of a
    // Deployment have distinct names, so no two workers share one.
    let mut tuning = tuning.clone();
    if tuning.group_instance_id.is_none() {
        tuning.group_instance_id = std::env::var(tributary_crds::pod::ENV_POD_NAME)
            .ok()
            .filter(|name| !name.is_empty());
    }
    let tuning = &tuning;
    let telemetry = start_telemetry(options.metrics_port, runtime)?;
    let reporter = telemetry.reporter.clone();
    let outcome = pipeline::run(
        &ingestion,
        bootstrap,
        tuning,
        stop,
        runtime.handle().clone(),
        telemetry,
        takeover,
    );
    if let (Err(error), Some(reporter)) = (&outcome, &reporter) {
        reporter.report_failure(secrets::redact(&error.to_string()), error.reason());
    }
    // The pipeline has dropped its handle: this is the last one, so the final write happens.
    if let Some(reporter) = reporter.and_then(|r| Arc::try_unwrap(r).ok()) {
        runtime.block_on(reporter.close(report::FLUSH_TIMEOUT));
    }
    let summary = outcome?;
    let to_completion = ingestion
        .spec
        .trigger_kind()
        .map(|k| k.runs_to_completion())
        .unwrap_or(false);
    if to_completion && !summary.completed {
        // Stopped (SIGTERM) before reaching the targets: not a success for a Job; the next
        // attempt finishes the same run.
        return Ok(ExitCode::from(143));
    }
    Ok(ExitCode::SUCCESS)
}

/// Metrics always; the metrics server when a port is given; status reporting when the operator
/// asked for it through the pod's environment.
fn start_telemetry(
    metrics_port: Option<u16>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Telemetry> {
    let metrics = Arc::new(Metrics::default());
    if let Some(port) = metrics_port {
        let address = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        let server = runtime
            .block_on(tributary_http::Server::bind(address))
            .map_err(|source| Error::ServeMetrics { source })?;
        let probe = metrics.clone();
        runtime.spawn(async move {
            if let Err(error) = server.serve(probe).await {
                tracing::error!(%error, "the metrics endpoint stopped");
            }
        });
    }
    let reporter = match StatusTarget::from_env(|key| std::env::var(key).ok()) {
        None => None,
        Some(target) => {
            let client = runtime
                .block_on(kube::Client::try_default())
                .map_err(|source| Error::KubeClient {
                    source: Box::new(source),
                })?;
            tracing::info!(pod = %target.pod, "reporting progress into the StreamingIngestion's status");
            let _entered = runtime.enter();
            Some(Arc::new(StatusReporter::start(
                client,
                target,
                report::DEFAULT_INTERVAL,
            )))
        }
    };
    Ok(Telemetry::new(metrics, reporter))
}

/// SIGTERM (Kubernetes) or Ctrl-C: finish or abandon the batch in flight, commit nothing half.
async fn watch_signals(stop: Arc<AtomicBool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested");
    stop.store(true, Ordering::SeqCst);
}

/// Whether logs are JSON records for a collector (the pod contract's log format) rather than
/// lines for a person.
fn json_logs() -> bool {
    std::env::var(tributary_crds::pod::ENV_LOG_FORMAT).is_ok_and(|f| f == "json")
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,tributary_worker=info,buoyant_kernel::snapshot::builder=off")
    });
    let json = json_logs();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tributary-worker").chain(args.iter().copied()))
            .expect("parses")
    }

    #[test]
    fn the_error_is_left_as_the_termination_message_only_where_kubernetes_reads_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let absent = dir.path().join("absent");
        write_termination_message(&absent, "boom");
        assert!(!absent.exists(), "outside a pod nothing is created");
        let log = dir.path().join("termination-log");
        std::fs::write(&log, "").expect("create");
        write_termination_message(&log, "table /lake/t does not fit this ingestion");
        assert_eq!(
            std::fs::read_to_string(&log).expect("read"),
            "table /lake/t does not fit this ingestion"
        );
        let long = "é".repeat(3000);
        write_termination_message(&log, &long);
        let written = std::fs::read_to_string(&log).expect("read");
        assert_eq!(
            written.len(),
            4096,
            "cut at Kubernetes' limit, on a char boundary"
        );
    }

    #[test]
    fn run_takes_the_manifest_as_f_filename_or_file() {
        for flag in ["-f", "--filename", "--file"] {
            let Command::Run { file, .. } = parse(&["run", flag, "x.yaml"]).command else {
                panic!("expected run");
            };
            assert_eq!(file, PathBuf::from("x.yaml"), "{flag}");
        }
    }

    #[test]
    fn run_takes_the_tuning_flags() {
        let Command::Run { tuning, .. } =
            parse(&["run", "-f", "x.yaml", "--max-batch-bytes", "4096"]).command
        else {
            panic!("expected run");
        };
        assert_eq!(tuning.max_batch_bytes, 4096);
    }
}
