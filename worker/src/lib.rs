//! tributary-worker: runs one StreamingIngestion (Kafka / Event Hubs -> JSON -> Delta Lake,
//! exactly once), standalone from a manifest file or in a pod; `demo` runs the sensor example
//! against an embedded broker, and `broker` keeps one running for the README's standalone steps.
//!
//! The modules follow the data:
//!
//! ```text
//! source/ -> batch/ -> decode/ -> transform/ -> sink/ -> checkpoint/ -> outputs/
//!  read      plan,     records    SQL per       Delta     progress      metrics,
//!  exactly   read-     -> rows    batch, last   commit    log           status,
//!  once      ahead,               row per key   or MERGE                stdout
//!            trigger
//! ```
//!
//! `pipeline` opens the stages and runs the loop (read_batch -> decode -> transform -> commit
//! -> publish);
//! `cli` and `demo` start it (`standalone` places a cluster manifest's paths on a workstation).
//! The stages never use each other, only the leaf modules below them (`partition`, `record`,
//! `arrow_types`, `error`, `job_thread`, `secrets`, `store`, `tuning`); a test in this file
//! checks it.

mod arrow_types;
pub mod cli;
mod demo;
mod error;
mod job_thread;
pub mod memory;
mod partition;
mod pipeline;
mod record;
mod secrets;
mod standalone;
mod store;
mod tuning;

mod batch;
mod checkpoint;
mod decode;
mod outputs;
mod sink;
mod source;
mod transform;

pub use error::{Error, Result};
pub use pipeline::{RunSummary, run};
pub use tuning::Tuning;

/// deltalake's HTTP client links rustls with aws-lc-rs and kube's with ring; with two providers
/// linked, rustls cannot pick one and the kube client would panic at creation. One process-wide
/// choice settles it (an error only means one was installed already).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod architecture {
    //! The layering the module docs promise, checked on the sources: a stage uses no other
    //! stage, a leaf uses only leaves, and the modules inside a folder do not form a cycle.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    const LEAVES: &[&str] = &[
        "arrow_types",
        "error",
        "job_thread",
        "memory",
        "partition",
        "record",
        "secrets",
        "store",
        "tuning",
    ];
    const STAGES: &[&str] = &[
        "source",
        "batch",
        "decode",
        "transform",
        "sink",
        "checkpoint",
        "outputs",
    ];

    /// The code of a file, without comments and without its tests.
    fn code(path: &Path) -> String {
        let text = std::fs::read_to_string(path).expect("read a source file");
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        text.lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The names that follow `prefix` in `code` (`crate::` -> top-level modules).
    fn used_after(code: &str, prefix: &str) -> BTreeSet<String> {
        code.match_indices(prefix)
            .filter(|(at, _)| {
                // A whole path segment, not the tail of an identifier.
                !code[..*at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
            .map(|(at, _)| {
                code[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|name| !name.is_empty())
            .collect()
    }

    fn sources(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("list src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    /// The top-level module a file belongs to (`source/start.rs` -> `source`).
    fn top_module(path: &Path) -> String {
        let relative = path.strip_prefix(src()).expect("under src");
        let first = relative.components().next().expect("a component");
        let name = first.as_os_str().to_string_lossy();
        name.trim_end_matches(".rs").to_string()
    }

    #[test]
    fn stages_use_only_leaves_and_leaves_only_leaves() {
        let mut problems = Vec::new();
        let mut checked = BTreeSet::new();
        for path in sources(&src()) {
            // A file of tests only (`mod tests;`) may use anything.
            if path.file_stem().is_some_and(|s| s == "tests") {
                continue;
            }
            let module = top_module(&path);
            let allowed: Vec<&str> = if LEAVES.contains(&module.as_str()) {
                LEAVES.to_vec()
            } else if STAGES.contains(&module.as_str()) {
                LEAVES.iter().copied().chain([module.as_str()]).collect()
            } else {
                continue;
            };
            checked.insert(module.clone());
            for used in used_after(&code(&path), "crate::") {
                if !allowed.contains(&used.as_str()) {
                    problems.push(format!("{} uses crate::{used}", path.display()));
                }
            }
        }
        assert_eq!(
            checked.len(),
            LEAVES.len() + STAGES.len(),
            "every leaf and stage was found: {checked:?}"
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn the_modules_of_a_folder_form_no_cycle() {
        let mut folders: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for path in sources(&src()) {
            let Some(dir) = path.parent().filter(|d| *d != src()) else {
                continue;
            };
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            if stem == "mod" || stem == "tests" {
                continue;
            }
            folders
                .entry(dir.to_path_buf())
                .or_default()
                .insert(stem, used_after(&code(&path), "super::"));
        }
        assert!(folders.len() >= STAGES.len(), "{:?}", folders.keys());
        for (dir, graph) in &folders {
            // Repeatedly remove modules that use no remaining sibling; a cycle stays behind.
            let mut left = graph.clone();
            loop {
                let free: Vec<String> = left
                    .iter()
                    .filter(|(_, uses)| !uses.iter().any(|u| left.contains_key(u)))
                    .map(|(name, _)| name.clone())
                    .collect();
                if free.is_empty() {
                    break;
                }
                for name in free {
                    left.remove(&name);
                }
            }
            assert!(
                left.is_empty(),
                "{}: cycle among {:?}",
                dir.display(),
                left.keys()
            );
        }
    }

    #[test]
    fn the_check_sees_a_forbidden_use() {
        let code = "use crate::sink::DeltaSink;\nlet x = my_crate::other; crate::error::Error";
        assert_eq!(
            used_after(code, "crate::"),
            BTreeSet::from(["sink".to_string(), "error".to_string()])
        );
    }
}
