//! A ServiceAccount, Role and RoleBinding per ingestion: its workers may read their own
//! StreamingIngestion and patch its status, and nothing else (resourceNames pins the one object).

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use tributary_crds::StreamingIngestion;

use super::{Identity, names, owned_meta};

pub fn service_account(ingestion: &StreamingIngestion, id: &Identity) -> ServiceAccount {
    let mut metadata = owned_meta(ingestion, id, names::service_account(&id.name), "worker");
    // Workload identity (AKS, EKS, GKE) binds a cloud identity through these annotations.
    if let Some(worker) = &ingestion.spec.worker
        && !worker.service_account_annotations.is_empty()
    {
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .extend(worker.service_account_annotations.clone());
    }
    ServiceAccount {
        metadata,
        // The token is mounted by the pod spec explicitly; the account itself does not
        // auto-mount tokens into pods that might reuse it.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

pub fn role(ingestion: &StreamingIngestion, id: &Identity) -> Role {
    let rule = |resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![tributary_crds::GROUP.to_string()]),
        resources: Some(vec![resource.to_string()]),
        resource_names: Some(vec![id.name.clone()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    Role {
        metadata: owned_meta(ingestion, id, names::role(&id.name), "worker"),
        rules: Some(vec![
            rule("streamingingestions", &["get"]),
            rule("streamingingestions/status", &["get", "patch"]),
        ]),
    }
}

pub fn role_binding(ingestion: &StreamingIngestion, id: &Identity) -> RoleBinding {
    RoleBinding {
        metadata: owned_meta(ingestion, id, names::role_binding(&id.name), "worker"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "Role".to_string(),
            name: names::role(&id.name),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: names::service_account(&id.name),
            namespace: Some(id.namespace.clone()),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::ingestion;

    #[test]
    fn service_account_carries_the_workload_identity_annotations() {
        let si = crate::resources::test_support::ingestion(
            "  worker:\n    serviceAccountAnnotations: {azure.workload.identity/client-id: 00000000-1111}\n",
        );
        let id = Identity::of(&si).expect("identity");
        let annotations = service_account(&si, &id)
            .metadata
            .annotations
            .expect("annotations");
        assert_eq!(
            annotations
                .get("azure.workload.identity/client-id")
                .map(String::as_str),
            Some("00000000-1111")
        );
    }

    #[test]
    fn role_grants_only_get_and_status_patch_on_the_one_ingestion() {
        let si = ingestion("");
        let id = Identity::of(&si).expect("identity");
        let role = role(&si, &id);
        let rules = role.rules.expect("rules");
        assert_eq!(rules.len(), 2);
        let summary: Vec<(String, Vec<String>)> = rules
            .iter()
            .map(|r| {
                assert_eq!(r.api_groups, Some(vec!["tributary.dev".to_string()]));
                assert_eq!(r.resource_names, Some(vec!["sensors".to_string()]));
                (
                    r.resources.clone().expect("resources").join(","),
                    r.verbs.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("streamingingestions".to_string(), vec!["get".to_string()]),
                (
                    "streamingingestions/status".to_string(),
                    vec!["get".to_string(), "patch".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn binding_ties_the_role_to_the_service_account() {
        let si = ingestion("");
        let id = Identity::of(&si).expect("identity");
        let binding = role_binding(&si, &id);
        assert_eq!(binding.role_ref.kind, "Role");
        assert_eq!(binding.role_ref.name, "sensors-worker");
        let subject = &binding.subjects.expect("subjects")[0];
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(
            subject.name,
            service_account(&si, &id).metadata.name.expect("name")
        );
        assert_eq!(subject.namespace.as_deref(), Some("iot"));
    }
}
