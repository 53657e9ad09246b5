//! Writes the generated CRD manifest: `cargo run --bin crdgen` writes both
//! committed copies (`crds/` and the chart's `crds/`, which Helm installs), `crdgen FILE` one
//! file, `crdgen -` stdout.

use std::process::ExitCode;

use tributary_crds::crd::{CHART_CRD_PATH, CRD_PATH};

fn main() -> ExitCode {
    let yaml = match tributary_crds::crd::crd_yaml() {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!("crdgen: cannot render the CRD as YAML: {error}");
            return ExitCode::FAILURE;
        }
    };
    let targets = match std::env::args().nth(1) {
        Some(target) if target == "-" => {
            print!("{yaml}");
            return ExitCode::SUCCESS;
        }
        Some(target) => vec![target],
        None => [CRD_PATH, CHART_CRD_PATH]
            .iter()
            .map(|path| format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")))
            .collect(),
    };
    for path in targets {
        if let Err(error) = std::fs::write(&path, &yaml) {
            eprintln!("crdgen: cannot write {path}: {error}");
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {path}");
    }
    ExitCode::SUCCESS
}
