//! The ConfigMap holding the rendered manifest the worker runs (`run -f`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use tributary_crds::StreamingIngestion;
use tributary_crds::pod::CONFIG_FILE;

use super::{Identity, names, owned_meta};
use crate::error::{Error, Result};

/// The manifest the worker reads (see [`tributary_crds::manifest::worker_manifest`]): the
/// ingestion with its metadata reduced to name and namespace, and the spec as the user wrote it.
pub fn render_manifest(ingestion: &StreamingIngestion, id: &Identity) -> Result<String> {
    tributary_crds::manifest::worker_manifest(ingestion, &id.name, &id.namespace).map_err(
        |source| Error::RenderYaml {
            what: format!("the manifest of {}", id.name),
            source,
        },
    )
}

pub fn config_map(ingestion: &StreamingIngestion, id: &Identity, rendered: String) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(ingestion, id, names::config_map(&id.name), "config"),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), rendered)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::ingestion;

    #[test]
    fn config_map_holds_the_manifest_with_reduced_metadata_and_no_secret_values() {
        let si = ingestion("");
        let id = Identity::of(&si).expect("identity");
        let rendered = render_manifest(&si, &id).expect("renders");
        let cm = config_map(&si, &id, rendered);
        assert_eq!(cm.metadata.name.as_deref(), Some("sensors-config"));
        let text = &cm.data.as_ref().expect("data")[CONFIG_FILE];
        let back: StreamingIngestion = serde_saphyr::from_str(text).expect("round-trips");
        assert_eq!(back.spec, si.spec.without_scale());
        assert_eq!(back.metadata.name.as_deref(), Some("sensors"));
        assert_eq!(back.metadata.namespace.as_deref(), Some("iot"));
        assert_eq!(back.metadata.uid, None);
        assert_eq!(back.metadata.annotations, None);
        assert_eq!(back.metadata.generation, None);
        // The reference is there, by name and key only.
        assert!(text.contains("kafka-creds"));
        assert!(!text.contains("status"));
    }

    #[test]
    fn metadata_noise_does_not_change_the_rendered_manifest() {
        let a = ingestion("");
        let mut b = a.clone();
        b.metadata.resource_version = Some("999".into());
        b.metadata.generation = Some(42);
        let id = Identity::of(&a).expect("identity");
        assert_eq!(
            render_manifest(&a, &id).expect("a"),
            render_manifest(&b, &id).expect("b")
        );
    }
}
