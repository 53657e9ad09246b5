//! `tributary-operator run` (the controller) and `tributary-operator render` (what it would
//! apply, without a cluster).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing::info;
use tributary_operator::cli::{Cli, Command, RunArgs};
use tributary_operator::controller;
use tributary_operator::error::Error;
use tributary_operator::leader::LeaderElector;
use tributary_operator::metrics::Metrics;
use tributary_operator::render;
use tributary_operator::resources::Settings;

fn main() -> ExitCode {
    // kube's client links rustls with ring. A workspace build unifies rustls's features with the
    // worker's (deltalake brings aws-lc-rs), and with two providers compiled in rustls refuses
    // to choose one: the first TLS connection to the API server would panic. Installing ring,
    // the provider this binary already links, settles it for both builds; an error only means a
    // provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour codes only for a terminal: redirected to a file or a pod log they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render { file, worker_image } => {
            let settings = Settings {
                worker_image,
                ..Settings::default()
            };
            render::render_file(&file, &settings).map(|text| print!("{text}"))
        }
        Command::Run(args) => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(run(args)),
            Err(source) => Err(Error::Setting {
                name: "runtime",
                message: source.to_string(),
            }),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Printed once, as the last line: the logs above already carry the context.
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<(), Error> {
    let namespaces = args.namespaces();
    let metrics = Arc::new(Metrics::new());
    let endpoint = tributary_http::Server::bind(args.metrics_addr).await?;
    let server = tokio::spawn(endpoint.serve(metrics.clone()));
    let client = kube::Client::try_default().await.map_err(Error::Client)?;

    let elector = if args.leader_election {
        let namespace = std::env::var("POD_NAMESPACE").map_err(|_| Error::Setting {
            name: "POD_NAMESPACE",
            message: "leader election needs the operator's namespace in POD_NAMESPACE".into(),
        })?;
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("tributary-operator-{}", std::process::id()));
        Some(LeaderElector::new(client.clone(), &namespace, identity))
    } else {
        None
    };
    // A standby is ready (it serves and waits): readiness must not block a rollout of the
    // operator's own Deployment.
    metrics.set_ready();
    if let Some(elector) = &elector {
        tokio::select! {
            acquired = elector.acquire() => acquired?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm() => return Ok(()),
        }
    }

    let settings = Settings {
        worker_image: args.worker_image,
        worker_image_pull_policy: args.worker_image_pull_policy,
    };
    info!(image = %settings.worker_image, namespaces = ?namespaces, "starting the controller");
    let controllers = controller::run(client, settings, metrics, namespaces);
    let outcome = match &elector {
        Some(elector) => tokio::select! {
            _ = controllers => Ok(()),
            lost = elector.keep() => Err(lost),
        },
        None => {
            controllers.await;
            Ok(())
        }
    };
    if let Some(elector) = &elector
        && outcome.is_ok()
    {
        elector.release().await;
    }
    server.abort();
    info!("stopped");
    outcome
}

/// Resolves on SIGTERM (what Kubernetes sends); never on platforms without it.
async fn sigterm() {
    #[cfg(unix)]
    {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
            return;
        }
    }
    std::future::pending::<()>().await
}
