//! Running a cluster manifest on a workstation: `run --local-root DIR` places the manifest's
//! absolute local paths (`/lake/...`, `/checkpoints/...`, which are mount paths in a pod) under
//! DIR, so a user who is not root can run the examples as written.
//!
//! manifest paths --(local root)--> paths under DIR; object store URLs are left alone.

use std::path::{Component, Path, PathBuf};

use tributary_crds::StreamingIngestion;

use crate::error::{Error, Result};

/// Rewrites every local path of the ingestion (table, checkpoint, dead-letter table) to lie under
/// `root`, which is created. URLs (`abfss://`, `file://` included) are kept as they are: a URL
/// names a place on purpose, while a bare absolute path in a manifest names a mount point.
pub fn place_under(ingestion: &mut StreamingIngestion, root: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(Error::checkpoint("create the local root", root))?;
    let root = root
        .canonicalize()
        .map_err(Error::checkpoint("resolve the local root", root))?;
    let spec = &mut ingestion.spec;
    if let Some(uri) = spec.sink.delta.uri.as_mut() {
        *uri = under(&root, uri);
    }
    spec.checkpoint.location = under(&root, &spec.checkpoint.location);
    if let Some(spark) = spec.checkpoint.from_spark.as_mut() {
        spark.location = under(&root, &spark.location);
    }
    if let Some(dead_letter) = spec
        .format
        .json
        .as_mut()
        .and_then(|json| json.dead_letter.as_mut())
    {
        dead_letter.uri = under(&root, &dead_letter.uri);
    }
    Ok(root)
}

/// `path` under `root` when it is an absolute local path; anything else unchanged.
fn under(root: &Path, path: &str) -> String {
    if path.contains("://") || !Path::new(path).is_absolute() {
        return path.to_string();
    }
    // Only normal components: `..` in a manifest must not climb out of the root.
    let relative: PathBuf = Path::new(path)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(relative).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_move_under_the_root() {
        assert_eq!(
            under(Path::new("/home/me/local"), "/lake/bronze/iot/readings"),
            "/home/me/local/lake/bronze/iot/readings"
        );
    }

    #[test]
    fn urls_and_relative_paths_stay() {
        let root = Path::new("/home/me/local");
        for path in [
            "abfss://lake@acct.dfs.core.windows.net/t",
            "file:///lake/t",
            "relative/t",
        ] {
            assert_eq!(under(root, path), path);
        }
    }

    #[test]
    fn parent_components_cannot_leave_the_root() {
        assert_eq!(under(Path::new("/r"), "/lake/../../etc/t"), "/r/lake/etc/t");
    }

    #[test]
    fn every_local_path_of_an_example_is_placed() {
        let text = include_str!("../../examples/sensor-readings-scheduled.yaml");
        let mut ingestion = tributary_crds::manifest::load_str(text, "scheduled.yaml")
            .expect("example loads")
            .remove(0);
        let dir = std::env::temp_dir().join(format!("tributary-standalone-{}", std::process::id()));
        let root = place_under(&mut ingestion, &dir).expect("placed");
        let spec = &ingestion.spec;
        let dead_letter = spec
            .format
            .json
            .as_ref()
            .and_then(|json| json.dead_letter.as_ref())
            .expect("dl");
        for path in [
            spec.sink.delta.uri.as_deref().expect("uri"),
            spec.checkpoint.location.as_str(),
            dead_letter.uri.as_str(),
        ] {
            assert!(Path::new(path).starts_with(&root), "{path}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
