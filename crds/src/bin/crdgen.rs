//! Writes the generated CRD manifest: `cargo run -p tributary-crds --bin crdgen` (to the
//! committed file) or `crdgen -` (to stdout).

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match tributary_crds::crd::crd_yaml() {
        Ok(yaml) => yaml,
        Err(error) => {
            eprintln!("crdgen: cannot render the CRD as YAML: {error}");
            return ExitCode::FAILURE;
        }
    };
    let target = std::env::args().nth(1);
    if target.as_deref() == Some("-") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let path = target.unwrap_or_else(|| {
        format!(
            "{}/../{}",
            env!("CARGO_MANIFEST_DIR"),
            tributary_crds::crd::CRD_PATH
        )
    });
    match std::fs::write(&path, yaml) {
        Ok(()) => {
            eprintln!("crdgen: wrote {path}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("crdgen: cannot write {path}: {error}");
            ExitCode::FAILURE
        }
    }
}
