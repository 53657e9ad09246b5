//! Checkpoint safety: each query needs its own checkpoint. Two ingestions whose checkpoints are
//! the same place (same claim and path within it, or the same URL) are a conflict; the one
//! created later is refused.

use tributary_crds::StreamingIngestion;

use crate::resources::names;

/// Where a checkpoint physically lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointPlace {
    /// A directory within a claim, relative to the claim's root.
    Claim { claim: String, path: String },
    /// An object-store (or file://) URL.
    Url(String),
}

fn trim_slashes(path: &str) -> String {
    path.trim_matches('/').to_string()
}

/// The place of an ingestion's checkpoint. A path is compared within its claim (the location
/// relative to where the claim is mounted), because two ingestions may mount one claim at
/// different paths.
pub fn checkpoint_place(ingestion: &StreamingIngestion) -> Option<CheckpointPlace> {
    let checkpoint = &ingestion.spec.checkpoint;
    let location = checkpoint.location.as_str();
    if !location.starts_with('/') {
        let (scheme, rest) = location.split_once("://")?;
        return Some(CheckpointPlace::Url(format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            rest.trim_end_matches('/')
        )));
    }
    let volume = checkpoint.volume.as_ref()?;
    let name = ingestion.metadata.name.as_deref()?;
    let claim = volume
        .claim_name
        .clone()
        .unwrap_or_else(|| names::checkpoint_claim(name));
    let mount = volume.mount_path.as_deref().unwrap_or(location);
    let within = location.strip_prefix(mount).unwrap_or(location);
    Some(CheckpointPlace::Claim {
        claim,
        path: trim_slashes(within),
    })
}

/// Orders ingestions by age: older first, names breaking ties (and giving one answer when
/// timestamps are missing, as in tests and files).
fn age_key(ingestion: &StreamingIngestion) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        ingestion.metadata.creation_timestamp.as_ref().map(|t| t.0),
        ingestion.metadata.name.clone().unwrap_or_default(),
    )
}

/// The name of an older ingestion in `others` (same namespace) that uses the same checkpoint,
/// if any. Ingestions being deleted no longer count.
pub fn conflicting_owner(
    ingestion: &StreamingIngestion,
    others: &[StreamingIngestion],
) -> Option<String> {
    let place = checkpoint_place(ingestion)?;
    let mine = age_key(ingestion);
    others
        .iter()
        .filter(|other| other.metadata.name != ingestion.metadata.name)
        .filter(|other| other.metadata.namespace == ingestion.metadata.namespace)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .filter(|other| checkpoint_place(other).as_ref() == Some(&place))
        .filter(|other| age_key(other) < mine)
        .min_by_key(|other| age_key(other))
        .and_then(|other| other.metadata.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use tributary_crds::VolumeSource;

    fn ingestion(
        name: &str,
        created: &str,
        location: &str,
        volume: Option<VolumeSource>,
    ) -> StreamingIngestion {
        let mut si = crate::resources::test_support::ingestion("");
        si.metadata.name = Some(name.to_string());
        si.metadata.creation_timestamp = Some(Time(created.parse().expect("timestamp")));
        si.spec.checkpoint.location = location.to_string();
        si.spec.checkpoint.volume = volume;
        si
    }

    fn claim(name: &str, mount: Option<&str>) -> Option<VolumeSource> {
        Some(VolumeSource {
            claim_name: Some(name.to_string()),
            mount_path: mount.map(str::to_string),
            ..VolumeSource::default()
        })
    }

    #[test]
    fn same_claim_and_path_conflicts_and_the_later_one_is_refused() {
        let first = ingestion(
            "first",
            "2026-01-01T00:00:00Z",
            "/cp/a",
            claim("cp", Some("/cp")),
        );
        let second = ingestion(
            "second",
            "2026-01-02T00:00:00Z",
            "/data/a/",
            claim("cp", Some("/data")),
        );
        let all = vec![first.clone(), second.clone()];
        assert_eq!(conflicting_owner(&second, &all).as_deref(), Some("first"));
        assert_eq!(
            conflicting_owner(&first, &all),
            None,
            "the older one keeps running"
        );
    }

    #[test]
    fn different_paths_or_claims_do_not_conflict() {
        let first = ingestion(
            "first",
            "2026-01-01T00:00:00Z",
            "/cp/a",
            claim("cp", Some("/cp")),
        );
        let other_path = ingestion(
            "b",
            "2026-01-02T00:00:00Z",
            "/cp/b",
            claim("cp", Some("/cp")),
        );
        let other_claim = ingestion(
            "c",
            "2026-01-02T00:00:00Z",
            "/cp/a",
            claim("cp2", Some("/cp")),
        );
        // Created claims are per ingestion, so they never conflict.
        let created = |name: &str| {
            ingestion(
                name,
                "2026-01-03T00:00:00Z",
                "/cp/a",
                Some(VolumeSource {
                    size: Some("1Gi".into()),
                    ..VolumeSource::default()
                }),
            )
        };
        let all = vec![
            first,
            other_path.clone(),
            other_claim.clone(),
            created("d"),
            created("e"),
        ];
        for si in [&other_path, &other_claim, &all[3], &all[4]] {
            assert_eq!(conflicting_owner(si, &all), None, "{:?}", si.metadata.name);
        }
    }

    #[test]
    fn same_url_conflicts_regardless_of_scheme_case_and_trailing_slash() {
        let first = ingestion(
            "first",
            "2026-01-01T00:00:00Z",
            "abfss://c@a.dfs.core.windows.net/cp",
            None,
        );
        let second = ingestion(
            "second",
            "2026-01-02T00:00:00Z",
            "ABFSS://c@a.dfs.core.windows.net/cp/",
            None,
        );
        assert_eq!(
            conflicting_owner(&second, &[first, second.clone()]).as_deref(),
            Some("first")
        );
    }

    #[test]
    fn an_ingestion_being_deleted_releases_its_checkpoint() {
        let mut first = ingestion(
            "first",
            "2026-01-01T00:00:00Z",
            "/cp/a",
            claim("cp", Some("/cp")),
        );
        first.metadata.deletion_timestamp =
            Some(Time("2026-01-05T00:00:00Z".parse().expect("timestamp")));
        let second = ingestion(
            "second",
            "2026-01-02T00:00:00Z",
            "/cp/a",
            claim("cp", Some("/cp")),
        );
        assert_eq!(conflicting_owner(&second, &[first, second.clone()]), None);
    }
}
