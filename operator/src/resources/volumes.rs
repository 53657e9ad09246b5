//! The checkpoint and lake volumes: claims the operator creates (`size`), and how every claim is
//! mounted in the worker pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tributary_crds::{StreamingIngestion, VolumeSource};

use super::{Identity, names, owned_meta};

/// One claim mounted in the worker pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMount {
    /// Name of the pod volume.
    pub volume: String,
    pub claim: String,
    pub mount_path: String,
}

/// What a location needs: the pod volume name, the claim, and where it is mounted.
struct Use<'a> {
    volume_name: &'static str,
    created_claim: String,
    location: &'a str,
    source: &'a VolumeSource,
}

fn uses<'a>(ingestion: &'a StreamingIngestion, id: &Identity) -> Vec<Use<'a>> {
    let mut found = Vec::new();
    let checkpoint = &ingestion.spec.checkpoint;
    if let Some(source) = &checkpoint.volume
        && checkpoint.location.starts_with('/')
    {
        found.push(Use {
            volume_name: "checkpoint",
            created_claim: names::checkpoint_claim(&id.name),
            location: &checkpoint.location,
            source,
        });
    }
    if let Some(spark) = &checkpoint.from_spark
        && let Some(source) = &spark.volume
        && spark.location.starts_with('/')
    {
        // Validation requires an existing claim here: nothing is ever created for it.
        found.push(Use {
            volume_name: "spark-checkpoint",
            created_claim: names::checkpoint_claim(&id.name),
            location: &spark.location,
            source,
        });
    }
    let delta = &ingestion.spec.sink.delta;
    if let (Some(source), Some(uri)) = (&delta.volume, &delta.uri)
        && uri.starts_with('/')
    {
        found.push(Use {
            volume_name: "lake",
            created_claim: names::lake_claim(&id.name),
            location: uri,
            source,
        });
    }
    found
}

fn claim_name(use_: &Use<'_>) -> String {
    use_.source
        .claim_name
        .clone()
        .unwrap_or_else(|| use_.created_claim.clone())
}

/// The claims to mount. One pod volume per distinct claim (a claim shared by the sink and
/// the checkpoint is one volume with two mounts), and no two mounts at the same path.
pub fn claim_mounts(ingestion: &StreamingIngestion, id: &Identity) -> Vec<ClaimMount> {
    let mut volume_of_claim: BTreeMap<String, String> = BTreeMap::new();
    let mut mounts: Vec<ClaimMount> = Vec::new();
    for use_ in uses(ingestion, id) {
        let claim = claim_name(&use_);
        let volume = volume_of_claim
            .entry(claim.clone())
            .or_insert_with(|| use_.volume_name.to_string())
            .clone();
        let mount_path = use_
            .source
            .mount_path
            .clone()
            .unwrap_or_else(|| use_.location.to_string());
        if mounts.iter().all(|m| m.mount_path != mount_path) {
            mounts.push(ClaimMount {
                volume,
                claim,
                mount_path,
            });
        }
    }
    mounts
}

/// The claims the operator creates: those with a `size`. A claim is kept when its ingestion
/// is deleted (no owner reference, so garbage collection leaves it) unless `retain: false`:
/// checkpoints outlive their query by default.
pub fn claims(ingestion: &StreamingIngestion, id: &Identity) -> Vec<PersistentVolumeClaim> {
    let mut claims: Vec<PersistentVolumeClaim> = Vec::new();
    for use_ in uses(ingestion, id) {
        let Some(size) = &use_.source.size else {
            continue;
        };
        let name = use_.created_claim.clone();
        if claims
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(&name))
        {
            continue;
        }
        let mut metadata = owned_meta(ingestion, id, name, use_.volume_name);
        if use_.source.retain != Some(false) {
            metadata.owner_references = None;
        }
        claims.push(PersistentVolumeClaim {
            metadata,
            spec: Some(PersistentVolumeClaimSpec {
                // ReadWriteOnce: every cluster offers it. Workers spread over several nodes
                // need an existing ReadWriteMany claim (claimName).
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_string(),
                        Quantity(size.clone()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                storage_class_name: use_.source.storage_class_name.clone(),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        });
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::ingestion;

    #[test]
    fn created_checkpoint_claim_is_retained_by_default() {
        let si = ingestion("");
        let id = Identity::of(&si).expect("identity");
        let claims = claims(&si, &id);
        assert_eq!(claims.len(), 1, "the lake claim exists already (claimName)");
        let claim = &claims[0];
        assert_eq!(claim.metadata.name.as_deref(), Some("sensors-checkpoint"));
        assert_eq!(claim.metadata.owner_references, None);
        let spec = claim.spec.as_ref().expect("spec");
        assert_eq!(
            spec.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(|r| r["storage"].0.as_str()),
            Some("1Gi")
        );
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    }

    #[test]
    fn claim_with_retain_false_is_owned_and_uses_the_storage_class() {
        let mut si = ingestion("");
        let volume = si.spec.checkpoint.volume.as_mut().expect("volume");
        volume.retain = Some(false);
        volume.storage_class_name = Some("fast".into());
        let id = Identity::of(&si).expect("identity");
        let claim = &claims(&si, &id)[0];
        assert_eq!(
            claim.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        assert_eq!(
            claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref()),
            Some("fast")
        );
    }

    #[test]
    fn created_lake_claim_is_named_after_the_ingestion() {
        let mut si = ingestion("");
        si.spec.sink.delta.volume = Some(VolumeSource {
            size: Some("10Gi".into()),
            ..VolumeSource::default()
        });
        let id = Identity::of(&si).expect("identity");
        let names: Vec<_> = claims(&si, &id)
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(names, ["sensors-checkpoint", "sensors-lake"]);
    }

    #[test]
    fn a_spark_checkpoint_to_take_over_is_mounted_from_its_claim_and_never_created() {
        let mut si = ingestion("");
        si.spec.checkpoint.from_spark = Some(tributary_crds::SparkCheckpointSource {
            location: "/spark/checkpoints/sensors".into(),
            volume: Some(VolumeSource {
                claim_name: Some("spark-jobs".into()),
                mount_path: Some("/spark".into()),
                ..VolumeSource::default()
            }),
            quiet_seconds: None,
        });
        tributary_crds::validate(&si).expect("valid");
        let id = Identity::of(&si).expect("identity");
        let mounts = claim_mounts(&si, &id);
        assert!(
            mounts.contains(&ClaimMount {
                volume: "spark-checkpoint".into(),
                claim: "spark-jobs".into(),
                mount_path: "/spark".into(),
            }),
            "{mounts:?}"
        );
        let created: Vec<_> = claims(&si, &id)
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(
            created,
            ["sensors-checkpoint"],
            "only the query's own checkpoint claim"
        );
    }

    #[test]
    fn mounts_default_to_the_location_and_share_one_volume_per_claim() {
        let si = ingestion("");
        let id = Identity::of(&si).expect("identity");
        assert_eq!(
            claim_mounts(&si, &id),
            vec![
                ClaimMount {
                    volume: "checkpoint".into(),
                    claim: "sensors-checkpoint".into(),
                    mount_path: "/checkpoints/sensors".into(),
                },
                ClaimMount {
                    volume: "lake".into(),
                    claim: "lake".into(),
                    mount_path: "/lake".into(),
                },
            ]
        );
        let mut shared = si.clone();
        shared.spec.checkpoint.volume = Some(VolumeSource {
            claim_name: Some("lake".into()),
            mount_path: Some("/checkpoints".into()),
            ..VolumeSource::default()
        });
        let mounts = claim_mounts(&shared, &id);
        assert_eq!(mounts.len(), 2);
        assert!(
            mounts
                .iter()
                .all(|m| m.volume == "checkpoint" && m.claim == "lake")
        );
    }

    #[test]
    fn url_locations_need_no_volume() {
        let mut si = ingestion("");
        si.spec.checkpoint.location = "abfss://c@acct.dfs.core.windows.net/cp".into();
        si.spec.checkpoint.volume = None;
        si.spec.sink.delta.uri = Some("abfss://c@acct.dfs.core.windows.net/t".into());
        si.spec.sink.delta.volume = None;
        let id = Identity::of(&si).expect("identity");
        assert!(claim_mounts(&si, &id).is_empty());
        assert!(claims(&si, &id).is_empty());
    }
}
