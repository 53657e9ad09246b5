//! The CustomResourceDefinition, generated from the Rust types.
//!
//! The committed `crds/streamingingestions.tributary.dev.yaml` and the chart's copy must equal
//! [`crd_yaml`]; a test checks both and `cargo run --bin crdgen` rewrites both.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::StreamingIngestion;

/// Path of the committed manifest, relative to the workspace root.
pub const CRD_PATH: &str = "crds/streamingingestions.tributary.dev.yaml";

/// Path of the chart's copy (Helm installs a chart's `crds/` folder), relative to the workspace
/// root.
pub const CHART_CRD_PATH: &str = "charts/tributary/crds/streamingingestions.tributary.dev.yaml";

/// The CRD as the API server should store it.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = StreamingIngestion::crd();
    for version in &mut crd.spec.versions {
        if let Some(validation) = &mut version.schema
            && let Some(schema) = &mut validation.open_api_v3_schema
        {
            let mut value = serde_json::to_value(&*schema).unwrap_or(Value::Null);
            strip_server_pruned(&mut value);
            if let Ok(cleaned) = serde_json::from_value(value) {
                *schema = cleaned;
            }
        }
    }
    crd
}

/// The CRD manifest as YAML, with a header saying how it is made.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let body = serde_saphyr::to_string(&crd())?;
    Ok(format!(
        "# Generated from crds/src by `cargo run --bin crdgen`. Do not edit.\n{body}"
    ))
}

/// Removes what the API server would drop or rewrite, so a stored CRD matches the file (Argo CD
/// shows no drift): schema defaults (defaults are applied when the spec is read, never stored)
/// and empty `required` lists.
fn strip_server_pruned(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("default");
            if map
                .get("required")
                .and_then(Value::as_array)
                .is_some_and(|required| required.is_empty())
            {
                map.remove("required");
            }
            for child in map.values_mut() {
                strip_server_pruned(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_server_pruned),
        _ => {}
    }
}
