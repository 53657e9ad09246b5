//! tributary-worker: runs one StreamingIngestion (Kafka / Event Hubs -> JSON -> Delta Lake,
//! exactly once), standalone from a manifest file or in a pod; `demo` runs the sensor example
//! against an embedded broker.

mod checkpoint;
mod deadletter;
mod decode;
mod demo;
mod error;
mod pipeline;
mod progress;
mod secrets;
mod sink;
mod source;
mod trigger;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};

#[derive(Parser)]
#[command(
    name = "tributary-worker",
    version,
    about = "Kafka / Event Hubs -> Delta Lake ingestion, exactly once (Spark Structured Streaming's pattern, without Spark)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the StreamingIngestion of a manifest file until its trigger says it is done.
    Run {
        /// The manifest (the same YAML you would kubectl apply).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Use these brokers instead of the manifest's bootstrapServers.
        #[arg(long)]
        bootstrap_servers: Option<String>,
    },
    /// Start an embedded broker, produce simulated sensor readings, ingest them availableNow
    /// into a Delta table under DIR, and print a summary.
    Demo {
        #[arg(long, default_value = "./demo-lake")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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
    let result = match cli.command {
        Command::Run {
            file,
            bootstrap_servers,
        } => run(&file, bootstrap_servers.as_deref(), stop, &runtime),
        Command::Demo { dir } => demo::run(&dir, stop, &runtime).map(|_| ExitCode::SUCCESS),
    };
    // Close Delta's background uploads and the consumer before leaving.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(%error, "ingestion failed");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    file: &std::path::Path,
    bootstrap: Option<&str>,
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
    let ingestion = ingestions.remove(0);
    let summary = pipeline::run(&ingestion, bootstrap, stop, runtime.handle().clone())?;
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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,tributary_worker=info,buoyant_kernel::snapshot::builder=off")
    });
    let json = std::env::var(tributary_crds::pod::ENV_LOG_FORMAT).is_ok_and(|f| f == "json");
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
