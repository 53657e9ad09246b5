//! Pure builders: from a StreamingIngestion and the operator's settings, every object the
//! controller applies. No Kubernetes client here, so `render` and the unit tests see exactly
//! what a cluster would receive.

pub mod config;
pub mod pod;
pub mod rbac;
pub mod volumes;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use tributary_crds::StreamingIngestion;
use tributary_crds::conditions::field_managers;
use tributary_crds::pod::{
    LABEL_COMPONENT, LABEL_INGESTION, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME,
};

use crate::error::{Error, Result};

/// The default worker image (overridden by `--worker-image` and by `spec.worker.image`).
pub const DEFAULT_WORKER_IMAGE: &str = "ghcr.io/tributary-dev/tributary-worker:0.1.0";
/// `app.kubernetes.io/name` of everything the operator creates for an ingestion.
pub const APP_NAME: &str = "tributary-worker";

/// What the operator is configured with, as opposed to what the user declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Image of the worker containers, unless the spec names one.
    pub worker_image: String,
    /// Pull policy of the worker containers, unless the spec names one (Kubernetes' default
    /// when neither does).
    pub worker_image_pull_policy: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            worker_image: DEFAULT_WORKER_IMAGE.to_string(),
            worker_image_pull_policy: None,
        }
    }
}

/// Name and namespace of an ingestion, checked once so builders need no `Option`s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub namespace: String,
}

impl Identity {
    pub fn of(ingestion: &StreamingIngestion) -> Result<Identity> {
        let name = ingestion
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingMetadata("metadata.name"))?;
        // A manifest file may omit the namespace (kubectl would use the current one).
        let namespace = ingestion
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        Ok(Identity { name, namespace })
    }
}

/// Object names derived from the ingestion's name: one place, so the controller, `render` and
/// the tests agree.
pub mod names {
    pub fn config_map(ingestion: &str) -> String {
        format!("{ingestion}-config")
    }
    pub fn service_account(ingestion: &str) -> String {
        format!("{ingestion}-worker")
    }
    pub fn role(ingestion: &str) -> String {
        format!("{ingestion}-worker")
    }
    pub fn role_binding(ingestion: &str) -> String {
        format!("{ingestion}-worker")
    }
    pub fn checkpoint_claim(ingestion: &str) -> String {
        format!("{ingestion}-checkpoint")
    }
    pub fn lake_claim(ingestion: &str) -> String {
        format!("{ingestion}-lake")
    }
    /// Deployments and CronJobs carry the ingestion's own name.
    pub fn workload(ingestion: &str) -> String {
        ingestion.to_string()
    }
    /// A Job's name changes with the generation and the pod template, so a spec change (or a
    /// restart request) starts a new run instead of trying to mutate an immutable Job template.
    /// Kept within 63 characters (the `job-name` label the Job controller sets on its pods).
    pub fn job(ingestion: &str, generation: i64, template_hash: &str) -> String {
        let hash: String = template_hash.chars().take(8).collect();
        let suffix = format!("-{generation}-{hash}");
        // Character-wise, so even a name that skipped validation cannot split a character.
        let base: String = ingestion
            .chars()
            .take(63usize.saturating_sub(suffix.len()))
            .collect();
        format!("{}{suffix}", base.trim_end_matches('-'))
    }
}

/// Labels on every object of an ingestion.
pub fn labels(ingestion: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INSTANCE.to_string(), ingestion.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (
            LABEL_MANAGED_BY.to_string(),
            field_managers::OPERATOR.to_string(),
        ),
        (LABEL_INGESTION.to_string(), ingestion.to_string()),
    ])
}

/// The worker pods' selector: only labels that never change, because a Deployment's selector
/// is immutable.
pub fn selector_labels(ingestion: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP_NAME.to_string()),
        (LABEL_INGESTION.to_string(), ingestion.to_string()),
    ])
}

/// The selector as the string the scale subresource and `kubectl get -l` use.
pub fn selector_string(ingestion: &str) -> String {
    selector_labels(ingestion)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The controller owner reference to the ingestion. `None` when the ingestion has no uid yet
/// (a manifest rendered from a file): an owner reference without a uid is rejected.
pub fn owner_reference(ingestion: &StreamingIngestion) -> Option<OwnerReference> {
    ingestion.controller_owner_ref(&())
}

/// Metadata of an owned object.
pub fn owned_meta(
    ingestion: &StreamingIngestion,
    id: &Identity,
    name: String,
    component: &str,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(id.namespace.clone()),
        labels: Some(labels(&id.name, component)),
        owner_references: owner_reference(ingestion).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// FNV-1a, 64 bits, as hex: stable across Rust releases and operator restarts (std's
/// `DefaultHasher` is not), which a hash written into pod templates must be, or an operator
/// upgrade would roll every worker.
pub fn stable_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The workload of an ingestion: exactly one kind, or none (a suspended run to completion).
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    Deployment(Box<Deployment>),
    Job(Box<Job>),
    CronJob(Box<CronJob>),
}

impl Workload {
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Deployment(_) => "Deployment",
            Workload::Job(_) => "Job",
            Workload::CronJob(_) => "CronJob",
        }
    }

    pub fn name(&self) -> String {
        let meta = match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::Job(j) => &j.metadata,
            Workload::CronJob(c) => &c.metadata,
        };
        meta.name.clone().unwrap_or_default()
    }
}

/// Every object the controller applies for one ingestion, in apply order: identity and
/// permissions first, then configuration and storage, the workload last (so its pods never
/// start without their ConfigMap or ServiceAccount).
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config_map: ConfigMap,
    pub claims: Vec<PersistentVolumeClaim>,
    pub disruption_budget: PodDisruptionBudget,
    pub workload: Option<Workload>,
    /// Hash of the rendered configuration (also on the pod template).
    pub config_hash: String,
}

/// Builds every desired object. The ingestion must have passed `tributary_crds::validate`.
pub fn build(ingestion: &StreamingIngestion, settings: &Settings) -> Result<Desired> {
    let id = Identity::of(ingestion)?;
    let rendered = config::render_manifest(ingestion, &id)?;
    let config_hash = stable_hash(rendered.as_bytes());
    let template = pod::pod_template(ingestion, &id, settings, &config_hash);
    Ok(Desired {
        service_account: rbac::service_account(ingestion, &id),
        role: rbac::role(ingestion, &id),
        role_binding: rbac::role_binding(ingestion, &id),
        config_map: config::config_map(ingestion, &id, rendered),
        claims: volumes::claims(ingestion, &id),
        disruption_budget: workload::disruption_budget(ingestion, &id),
        workload: workload::workload(ingestion, &id, template)?,
        config_hash,
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use tributary_crds::StreamingIngestion;

    /// A valid continuous ingestion with a created checkpoint claim and a Secret reference.
    pub fn ingestion(extra_spec: &str) -> StreamingIngestion {
        let text = format!(
            r#"
apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata:
  name: sensors
  namespace: iot
  uid: 7b0c5a9e-0000-4000-8000-000000000001
  generation: 3
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{{}}"
spec:
  source:
    kafka:
      bootstrapServers: kafka:9092
      subscribe: [sensors]
      secretOptions:
        sasl.password: {{secretKeyRef: {{name: kafka-creds, key: password}}}}
  format:
    json:
      schema:
        - {{name: device_id, type: string}}
  sink:
    delta:
      uri: /lake/bronze/sensors
      volume: {{claimName: lake, mountPath: /lake}}
  checkpoint:
    location: /checkpoints/sensors
    volume: {{size: 1Gi}}
{extra_spec}
"#
        );
        let ingestion: StreamingIngestion =
            serde_saphyr::from_str(&text).expect("test manifest parses");
        tributary_crds::validate(&ingestion).expect("test manifest is valid");
        ingestion
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_fit_in_a_label_and_change_with_generation_and_template() {
        let long = "a".repeat(52);
        let name = names::job(&long, 12345, "0123456789abcdef");
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-12345-01234567"));
        assert_ne!(
            names::job("s", 1, "aaaaaaaa"),
            names::job("s", 2, "aaaaaaaa")
        );
        assert_ne!(
            names::job("s", 1, "aaaaaaaa"),
            names::job("s", 1, "bbbbbbbb")
        );
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(stable_hash(b""), "cbf29ce484222325");
        assert_eq!(stable_hash(b"a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn selector_string_lists_the_stable_labels() {
        assert_eq!(
            selector_string("s"),
            "app.kubernetes.io/name=tributary-worker,tributary.dev/ingestion=s"
        );
    }

    #[test]
    fn owned_objects_carry_a_controller_owner_reference() {
        let ingestion = test_support::ingestion("");
        let desired = build(&ingestion, &Settings::default()).expect("builds");
        let owner = desired.config_map.metadata.owner_references.expect("owner")[0].clone();
        assert_eq!(owner.kind, "StreamingIngestion");
        assert_eq!(owner.name, "sensors");
        assert_eq!(owner.uid, "7b0c5a9e-0000-4000-8000-000000000001");
        assert_eq!(owner.controller, Some(true));
        for meta in [
            &desired.service_account.metadata,
            &desired.role.metadata,
            &desired.role_binding.metadata,
        ] {
            assert_eq!(meta.owner_references.as_ref().map(Vec::len), Some(1));
            assert_eq!(meta.namespace.as_deref(), Some("iot"));
            assert_eq!(
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_INGESTION))
                    .map(String::as_str),
                Some("sensors")
            );
        }
    }
}
