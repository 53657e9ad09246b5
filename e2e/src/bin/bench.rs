//! `bench`: see `bench --help` and tributary_e2e::bench.

use std::process::ExitCode;

use clap::Parser;
use tributary_e2e::bench::{self, config::Args};

fn main() -> ExitCode {
    let args = Args::parse();
    match bench::run(&args) {
        Ok(report) => {
            println!("{}", report.table());
            match serde_json::to_string(&report) {
                Ok(json) => {
                    let path = std::path::Path::new(&report.config.out).join("report.json");
                    if let Err(e) = std::fs::write(&path, &json) {
                        eprintln!("warning: cannot write {}: {e}", path.display());
                    }
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot serialise the report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
