//! The command line: `run` (the controller) and `render` (what it would apply).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::resources::DEFAULT_WORKER_IMAGE;

#[derive(Parser, Debug)]
#[command(
    name = "tributary-operator",
    version,
    about = "Reconciles StreamingIngestion into Deployments, Jobs and CronJobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print, as YAML, every object the controller would apply for the StreamingIngestions in FILE.
    Render {
        /// A manifest file (several documents; other kinds are skipped).
        #[arg(short = 'f', long = "filename", visible_alias = "file")]
        file: PathBuf,
        #[arg(long, env = "TRIBUTARY_WORKER_IMAGE", default_value = DEFAULT_WORKER_IMAGE)]
        worker_image: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Image of the worker pods (unless a spec names one).
    #[arg(long, env = "TRIBUTARY_WORKER_IMAGE", default_value = DEFAULT_WORKER_IMAGE)]
    pub worker_image: String,
    /// Pull policy of the worker pods (Always, IfNotPresent, Never) unless a spec names one.
    #[arg(long, env = "TRIBUTARY_WORKER_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub worker_image_pull_policy: Option<String>,
    /// Namespaces to watch, comma-separated; empty means all.
    #[arg(
        long,
        env = "TRIBUTARY_WATCH_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub watch_namespaces: Vec<String>,
    /// Elect a leader through a Lease named tributary-operator in $POD_NAMESPACE.
    #[arg(long, env = "TRIBUTARY_LEADER_ELECTION", default_value_t = false)]
    pub leader_election: bool,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

impl RunArgs {
    /// The namespaces to watch; empty means all.
    pub fn namespaces(&self) -> Vec<String> {
        self.watch_namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let mut argv = vec!["tributary-operator", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(args) => args,
            Command::Render { .. } => panic!("expected run"),
        }
    }

    #[test]
    fn run_declares_its_defaults_and_environment_variables() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let run = cli.find_subcommand("run").expect("run");
        let declared = |id: &str| {
            let arg = run
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("{id} missing"));
            (
                arg.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(","),
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
            )
        };
        assert_eq!(
            declared("worker_image"),
            (
                DEFAULT_WORKER_IMAGE.to_string(),
                Some("TRIBUTARY_WORKER_IMAGE".to_string())
            )
        );
        assert_eq!(
            declared("watch_namespaces"),
            (
                String::new(),
                Some("TRIBUTARY_WATCH_NAMESPACES".to_string())
            )
        );
        assert_eq!(
            declared("leader_election"),
            (
                "false".to_string(),
                Some("TRIBUTARY_LEADER_ELECTION".to_string())
            )
        );
        assert_eq!(declared("metrics_addr"), ("0.0.0.0:8080".to_string(), None));
    }

    #[test]
    fn run_takes_what_the_chart_passes() {
        let args = run_args(&[
            "--worker-image",
            "registry.test/worker:2",
            "--watch-namespaces",
            "iot, lake",
            "--leader-election",
            "--metrics-addr",
            "127.0.0.1:9000",
        ]);
        assert_eq!(args.worker_image, "registry.test/worker:2");
        assert_eq!(args.namespaces(), ["iot", "lake"]);
        assert!(args.leader_election);
        assert_eq!(args.metrics_addr.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn render_takes_a_file() {
        let cli =
            Cli::try_parse_from(["tributary-operator", "render", "-f", "x.yaml"]).expect("parses");
        let Command::Render { file, .. } = cli.command else {
            panic!("expected render")
        };
        assert_eq!(file, PathBuf::from("x.yaml"));
    }
}
