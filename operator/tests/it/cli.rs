//! The binary's command line.

use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tributary-operator"))
}

#[test]
fn render_prints_the_objects_of_an_example() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/sensor-readings-available-now.yaml"
    );
    let output = operator()
        .args([
            "render",
            "-f",
            example,
            "--worker-image",
            "registry.test/worker:9",
        ])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Job"
        ]
    );
    assert!(text.contains("image: registry.test/worker:9"));
    assert!(text.contains("name: sensor-readings-batch-config"));
}

#[test]
fn render_of_a_missing_file_fails_with_its_name() {
    let output = operator()
        .args(["render", "-f", "/nonexistent/ingestion.yaml"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/ingestion.yaml"));
}

#[test]
fn run_accepts_the_flags_the_chart_passes() {
    let output = operator().args(["run", "--help"]).output().expect("runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("utf-8");
    for flag in [
        "--worker-image",
        "--watch-namespaces",
        "--leader-election",
        "--metrics-addr",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for env in [
        "TRIBUTARY_WORKER_IMAGE",
        "TRIBUTARY_WATCH_NAMESPACES",
        "TRIBUTARY_LEADER_ELECTION",
    ] {
        assert!(help.contains(env), "{env} missing from:\n{help}");
    }
}
