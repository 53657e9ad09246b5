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
        if let Some(place) = azure_place(location, azure_account(ingestion)) {
            return Some(CheckpointPlace::Url(place));
        }
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

/// The storage account a checkpoint URL without one (az://container/path) is in: from the
/// checkpoint's storage options, or the sink's when the checkpoint has none (as the worker
/// chooses them).
fn azure_account(ingestion: &StreamingIngestion) -> Option<&str> {
    let checkpoint = &ingestion.spec.checkpoint;
    let options =
        if checkpoint.storage_options.is_empty() && checkpoint.secret_storage_options.is_empty() {
            &ingestion.spec.sink.delta.storage_options
        } else {
            &checkpoint.storage_options
        };
    ["azure_storage_account_name", "account_name"]
        .iter()
        .find_map(|key| options.get(*key))
        .map(String::as_str)
}

/// One spelling for every way of naming a place in Azure storage:
/// abfs[s]://container@account.dfs|blob.core.windows.net/path,
/// https://account.dfs|blob.core.windows.net/container/path, and az|azure|adl://container/path
/// (the account from the options) all become azure://account/container/path. None for other
/// URLs, and for az:// without a known account (compared as written then: a missed conflict is
/// still caught by the worker's claim, a false one would block a valid ingestion).
fn azure_place(location: &str, account: Option<&str>) -> Option<String> {
    let (scheme, rest) = location.split_once("://")?;
    let account_of = |host: &str| {
        host.strip_suffix(".dfs.core.windows.net")
            .or_else(|| host.strip_suffix(".blob.core.windows.net"))
            .map(str::to_string)
    };
    let (account, container, path) = match scheme.to_ascii_lowercase().as_str() {
        "abfs" | "abfss" => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (container, host) = authority.split_once('@')?;
            (account_of(host)?, container.to_string(), path)
        }
        "https" => {
            let (host, rest) = rest.split_once('/')?;
            let (container, path) = rest.split_once('/').unwrap_or((rest, ""));
            (account_of(host)?, container.to_string(), path)
        }
        "az" | "azure" | "adl" => {
            let (container, path) = rest.split_once('/').unwrap_or((rest, ""));
            (account?.to_string(), container.to_string(), path)
        }
        _ => return None,
    };
    Some(format!(
        "azure://{}/{}/{}",
        account.to_ascii_lowercase(),
        container,
        path.trim_matches('/')
    ))
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
    fn every_spelling_of_one_azure_place_conflicts() {
        let first = ingestion(
            "first",
            "2026-01-01T00:00:00Z",
            "abfss://cp@lake.dfs.core.windows.net/telemetry/",
            None,
        );
        let mut by_az = ingestion("by-az", "2026-01-02T00:00:00Z", "az://cp/telemetry", None);
        by_az
            .spec
            .checkpoint
            .storage_options
            .insert("azure_storage_account_name".into(), "lake".into());
        let by_https = ingestion(
            "by-https",
            "2026-01-03T00:00:00Z",
            "https://LAKE.blob.core.windows.net/cp/telemetry",
            None,
        );
        let all = [first.clone(), by_az.clone(), by_https.clone()];
        assert_eq!(conflicting_owner(&by_az, &all).as_deref(), Some("first"));
        assert_eq!(conflicting_owner(&by_https, &all).as_deref(), Some("first"));

        // The account of az:// comes from the sink when the checkpoint sets no options.
        let mut from_sink = ingestion(
            "from-sink",
            "2026-01-04T00:00:00Z",
            "az://cp/telemetry",
            None,
        );
        from_sink
            .spec
            .sink
            .delta
            .storage_options
            .insert("account_name".into(), "lake".into());
        assert_eq!(
            conflicting_owner(&from_sink, &[first.clone(), from_sink.clone()]).as_deref(),
            Some("first")
        );

        // Without a known account, or in another account or container, no conflict.
        let unknown = ingestion("unknown", "2026-01-05T00:00:00Z", "az://cp/telemetry", None);
        let other_account = ingestion(
            "other-account",
            "2026-01-06T00:00:00Z",
            "abfss://cp@other.dfs.core.windows.net/telemetry",
            None,
        );
        let other_container = ingestion(
            "other-container",
            "2026-01-07T00:00:00Z",
            "abfss://cp2@lake.dfs.core.windows.net/telemetry",
            None,
        );
        for si in [&unknown, &other_account, &other_container] {
            let all = [first.clone(), si.clone()];
            assert_eq!(conflicting_owner(si, &all), None, "{:?}", si.metadata.name);
        }
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
