//! The worker pod template shared by Deployments, Jobs and CronJobs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tributary_crds::pod::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_RESTARTED_AT, CONFIG_DIR, CONFIG_FILE, DEFAULT_METRICS_PORT,
    ENV_INGESTION_NAME, ENV_INGESTION_NAMESPACE, ENV_LOG_FORMAT, ENV_METRICS_PORT, ENV_POD_NAME,
    ENV_REPORT_STATUS, SCRATCH_DIR,
};
use tributary_crds::secrets::{DEFAULT_SECRETS_DIR, secret_references};
use tributary_crds::{LogFormat, StreamingIngestion, WorkerSpec};

use super::volumes::claim_mounts;
use super::{Identity, Settings, labels, names};

/// The worker container's name.
pub const CONTAINER_NAME: &str = "worker";
/// The container port name of /metrics, /healthz and /readyz.
pub const METRICS_PORT_NAME: &str = "metrics";
/// The user and group workers run as: the distroless `nonroot` ids, so `runAsNonRoot` holds
/// whatever the image declares, and `fsGroup` makes created claims writable.
pub const WORKER_UID: i64 = 65532;

/// Requests and limits of a worker whose spec names none: measured peaks of 220-240 MiB
/// resident at a few thousand rows/s (README, Performance), so 256Mi requested and 1Gi allowed
/// for a large availableNow batch; a quarter core requested and no CPU limit, so a batch is
/// never throttled. Never BestEffort: the first pod evicted under pressure.
pub fn default_resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), Quantity(value.to_string())))
            .collect::<BTreeMap<_, _>>()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "250m"), ("memory", "256Mi")])),
        limits: Some(quantities(&[("memory", "1Gi")])),
        ..ResourceRequirements::default()
    }
}

/// Seconds a stopping worker gets by default: a micro-batch's commit and the consumer's close.
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 60;

/// The container arguments: `run -f <CONFIG_DIR>/<CONFIG_FILE>`.
pub fn worker_args() -> Vec<String> {
    vec![
        "run".to_string(),
        "-f".to_string(),
        format!("{CONFIG_DIR}/{CONFIG_FILE}"),
    ]
}

/// Pod volume name of a Secret: Secret names may hold dots and 253 characters, volume names
/// may not, so volumes are numbered in the (sorted) order of the Secret names.
fn secret_volume_name(index: usize) -> String {
    format!("secret-{index}")
}

/// Referenced Secrets and their keys, sorted and deduplicated.
pub fn referenced_secrets(ingestion: &StreamingIngestion) -> BTreeMap<String, BTreeSet<String>> {
    let mut secrets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, reference) in secret_references(&ingestion.spec) {
        secrets
            .entry(reference.name.clone())
            .or_default()
            .insert(reference.key.clone());
    }
    secrets
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(METRICS_PORT_NAME.to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The pod template. `config_hash` goes on it so a spec change rolls the workers; the user's
/// restart annotation is copied so a new value restarts them without a spec change.
pub fn pod_template(
    ingestion: &StreamingIngestion,
    id: &Identity,
    settings: &Settings,
    config_hash: &str,
) -> PodTemplateSpec {
    let default_worker = WorkerSpec::default();
    let worker = ingestion.spec.worker.as_ref().unwrap_or(&default_worker);
    let metrics_port = worker.metrics_port.unwrap_or(DEFAULT_METRICS_PORT);
    let log_format = match worker.log_format.unwrap_or_default() {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };

    // The operator's labels win over the user's: the selector must keep matching.
    let mut pod_labels = worker.pod_labels.clone();
    pod_labels.extend(labels(&id.name, "worker"));
    let mut annotations = worker.pod_annotations.clone();
    annotations.insert(ANNOTATION_CONFIG_HASH.to_string(), config_hash.to_string());
    if let Some(restarted_at) = ingestion
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_RESTARTED_AT))
    {
        annotations.insert(ANNOTATION_RESTARTED_AT.to_string(), restarted_at.clone());
    }

    let mut env = vec![
        value_env(ENV_INGESTION_NAME, id.name.clone()),
        field_env(ENV_INGESTION_NAMESPACE, "metadata.namespace"),
        field_env(ENV_POD_NAME, "metadata.name"),
        value_env(ENV_REPORT_STATUS, "true"),
        value_env(ENV_METRICS_PORT, metrics_port.to_string()),
        value_env(ENV_LOG_FORMAT, log_format),
    ];
    // The contract variables are the operator's; a user entry of the same name would be a
    // duplicate key, which server-side apply rejects.
    let reserved: BTreeSet<String> = env.iter().map(|e| e.name.clone()).collect();
    env.extend(
        worker
            .env
            .iter()
            .filter(|e| !reserved.contains(&e.name))
            .cloned(),
    );

    let mut volumes = vec![
        Volume {
            name: "config".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::config_map(&id.name),
                items: Some(vec![KeyToPath {
                    key: CONFIG_FILE.to_string(),
                    path: CONFIG_FILE.to_string(),
                    ..KeyToPath::default()
                }]),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "scratch".to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".to_string(),
            mount_path: CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "scratch".to_string(),
            mount_path: SCRATCH_DIR.to_string(),
            ..VolumeMount::default()
        },
    ];
    for (index, (secret, keys)) in referenced_secrets(ingestion).into_iter().enumerate() {
        let volume = secret_volume_name(index);
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(
                    keys.into_iter()
                        .map(|key| KeyToPath {
                            key: key.clone(),
                            path: key,
                            ..KeyToPath::default()
                        })
                        .collect(),
                ),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{DEFAULT_SECRETS_DIR}/{secret}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let mut claim_volumes = BTreeSet::new();
    for mount in claim_mounts(ingestion, id) {
        if claim_volumes.insert(mount.volume.clone()) {
            volumes.push(Volume {
                name: mount.volume.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: mount.claim.clone(),
                    ..PersistentVolumeClaimVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
        mounts.push(VolumeMount {
            name: mount.volume,
            mount_path: mount.mount_path,
            ..VolumeMount::default()
        });
    }
    // The user's extra volumes come after the operator's; validation keeps their names apart.
    volumes.extend(worker.volumes.iter().cloned());
    mounts.extend(worker.volume_mounts.iter().cloned());

    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(
            worker
                .image
                .clone()
                .unwrap_or_else(|| settings.worker_image.clone()),
        ),
        image_pull_policy: worker
            .image_pull_policy
            .clone()
            .or_else(|| settings.worker_image_pull_policy.clone()),
        args: Some(worker_args()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.to_string()),
            container_port: metrics_port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(probe("/healthz")),
        readiness_probe: Some(probe("/readyz")),
        // The worker writes why it stopped to the termination-message file; a process that
        // dies before it can (a panic, the OOM killer) still leaves its last log lines, so the
        // CrashLooping condition never carries only an exit code.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        resources: Some(worker.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    let non_empty = |map: BTreeMap<String, String>| (!map.is_empty()).then_some(map);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names::service_account(&id.name)),
            // The worker patches its ingestion's status with this account's token.
            automount_service_account_token: Some(true),
            containers: vec![container],
            volumes: Some(volumes),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(WORKER_UID),
                run_as_group: Some(WORKER_UID),
                fs_group: Some(WORKER_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            node_selector: non_empty(worker.node_selector.clone()),
            tolerations: (!worker.tolerations.is_empty()).then(|| worker.tolerations.clone()),
            affinity: worker.affinity.clone(),
            priority_class_name: worker.priority_class_name.clone(),
            topology_spread_constraints: (!worker.topology_spread_constraints.is_empty())
                .then(|| worker.topology_spread_constraints.clone()),
            image_pull_secrets: (!worker.image_pull_secrets.is_empty())
                .then(|| worker.image_pull_secrets.clone()),
            // Workers finish their micro-batch on SIGTERM; a commit can take a while.
            termination_grace_period_seconds: Some(
                worker
                    .termination_grace_period_seconds
                    .unwrap_or(DEFAULT_TERMINATION_GRACE_SECONDS),
            ),
            ..PodSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::ingestion;

    fn template(si: &StreamingIngestion) -> PodTemplateSpec {
        let id = Identity::of(si).expect("identity");
        pod_template(si, &id, &Settings::default(), "abc123")
    }

    fn env_of(t: &PodTemplateSpec) -> Vec<EnvVar> {
        t.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .expect("env")
    }

    #[test]
    fn pod_settings_from_the_spec_reach_the_pod() {
        let si = ingestion(
            r#"  worker:
    imagePullSecrets: [{name: registry}]
    topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
    volumes: [{name: ca, configMap: {name: corporate-ca}}]
    volumeMounts: [{name: ca, mountPath: /etc/ssl/corporate, readOnly: true}]
    terminationGracePeriodSeconds: 300
    resources: {requests: {cpu: "2"}}
"#,
        );
        let pod = template(&si).spec.expect("spec");
        let pull: Vec<_> = pod
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(pull, ["registry"]);
        let spread = pod.topology_spread_constraints.expect("spread");
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(pod.termination_grace_period_seconds, Some(300));
        let volumes = pod.volumes.expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v.name == "ca" && v.config_map.is_some())
        );
        assert!(
            volumes.iter().any(|v| v.name == "config"),
            "the operator's stay"
        );
        let container = &pod.containers[0];
        let mounts = container.volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "ca" && m.mount_path == "/etc/ssl/corporate")
        );
        let resources = container.resources.as_ref().expect("resources");
        assert_eq!(
            resources.limits, None,
            "the spec's resources replace the default"
        );
    }

    #[test]
    fn a_worker_without_resources_is_not_best_effort() {
        let pod = template(&ingestion("")).spec.expect("spec");
        let resources = pod.containers[0].resources.clone().expect("resources");
        assert_eq!(resources, default_resources());
        let requests = resources.requests.expect("requests");
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(DEFAULT_TERMINATION_GRACE_SECONDS)
        );
    }

    #[test]
    fn pull_policy_comes_from_the_spec_then_the_operator() {
        let si = ingestion("");
        let id = Identity::of(&si).expect("identity");
        let settings = Settings {
            worker_image_pull_policy: Some("Never".into()),
            ..Settings::default()
        };
        let policy = |t: PodTemplateSpec| {
            t.spec.expect("spec").containers[0]
                .image_pull_policy
                .clone()
        };
        assert_eq!(
            policy(pod_template(&si, &id, &settings, "h")).as_deref(),
            Some("Never")
        );
        assert_eq!(
            policy(template(&si)),
            None,
            "Kubernetes' default when nobody says"
        );
        let own = ingestion("  worker: {imagePullPolicy: Always}\n");
        let id = Identity::of(&own).expect("identity");
        assert_eq!(
            policy(pod_template(&own, &id, &settings, "h")).as_deref(),
            Some("Always")
        );
    }

    #[test]
    fn container_runs_the_mounted_manifest_with_the_operator_image() {
        let t = template(&ingestion(""));
        let spec = t.spec.as_ref().expect("spec");
        let c = &spec.containers[0];
        assert_eq!(
            c.args.as_deref(),
            Some(
                &[
                    "run".to_string(),
                    "-f".into(),
                    "/etc/tributary/ingestion.yaml".into()
                ][..]
            )
        );
        assert_eq!(c.image.as_deref(), Some(super::super::DEFAULT_WORKER_IMAGE));
        assert_eq!(spec.service_account_name.as_deref(), Some("sensors-worker"));
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        let config = mounts
            .iter()
            .find(|m| m.mount_path == CONFIG_DIR)
            .expect("config mount");
        assert_eq!(config.read_only, Some(true));
        let volumes = spec.volumes.as_ref().expect("volumes");
        let config_volume = volumes
            .iter()
            .find(|v| v.name == config.name)
            .expect("config volume");
        assert_eq!(
            config_volume.config_map.as_ref().map(|c| c.name.as_str()),
            Some("sensors-config")
        );
        assert!(mounts.iter().any(|m| m.mount_path == SCRATCH_DIR));
        assert!(volumes.iter().any(|v| v.empty_dir.is_some()));
    }

    #[test]
    fn secrets_are_mounted_read_only_by_key_never_as_values() {
        let t = template(&ingestion(""));
        let spec = t.spec.as_ref().expect("spec");
        let volume = spec
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| v.secret.is_some())
            .expect("secret volume");
        let secret = volume.secret.as_ref().expect("secret");
        assert_eq!(secret.secret_name.as_deref(), Some("kafka-creds"));
        let items = secret.items.as_ref().expect("items");
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            ("password", "password")
        );
        let mount = spec.containers[0]
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.name == volume.name)
            .expect("secret mount");
        assert_eq!(mount.mount_path, "/var/run/secrets/tributary/kafka-creds");
        assert_eq!(mount.read_only, Some(true));
        assert!(env_of(&t).iter().all(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_none()
        }));
    }

    #[test]
    fn unity_catalog_secrets_are_mounted_like_the_others() {
        use tributary_crds::{SecretKeyRef, SecretValueSource, UnityCatalog, UnityCatalogOAuth};
        let reference = |name: &str, key: &str| SecretValueSource {
            secret_key_ref: SecretKeyRef {
                name: name.into(),
                key: key.into(),
            },
        };
        let mut si = ingestion("");
        let delta = &mut si.spec.sink.delta;
        delta.uri = None;
        delta.volume = None;
        delta.table = Some("main.bronze.sensors".into());
        delta.unity_catalog = Some(UnityCatalog {
            endpoint: "https://adb-1.2.azuredatabricks.net".into(),
            oauth: Some(UnityCatalogOAuth {
                client_id: reference("service-principal", "client-id"),
                client_secret: reference("service-principal", "client-secret"),
                ..UnityCatalogOAuth::default()
            }),
            ..UnityCatalog::default()
        });
        tributary_crds::validate(&si).expect("valid");
        let t = template(&si);
        let spec = t.spec.as_ref().expect("spec");
        let volume = spec
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| {
                v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                    == Some("service-principal")
            })
            .expect("the catalog's Secret is a volume");
        let keys: Vec<&str> = volume
            .secret
            .as_ref()
            .and_then(|s| s.items.as_ref())
            .expect("items")
            .iter()
            .map(|item| item.key.as_str())
            .collect();
        assert_eq!(keys, ["client-id", "client-secret"]);
        let mount = spec.containers[0]
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.name == volume.name)
            .expect("mounted");
        assert_eq!(
            mount.mount_path,
            "/var/run/secrets/tributary/service-principal"
        );
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn security_context_is_restricted() {
        let t = template(&ingestion(""));
        let spec = t.spec.as_ref().expect("spec");
        let sc = spec.containers[0]
            .security_context
            .as_ref()
            .expect("security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let pod = spec
            .security_context
            .as_ref()
            .expect("pod security context");
        assert_eq!(pod.run_as_non_root, Some(true));
    }

    #[test]
    fn environment_follows_the_worker_contract() {
        let si = ingestion(
            "  worker:\n    logFormat: json\n    metricsPort: 9100\n    env:\n      - {name: RUST_LOG, value: debug}\n      - {name: TRIBUTARY_REPORT_STATUS, value: \"false\"}\n",
        );
        let t = template(&si);
        let env = env_of(&t);
        let get = |name: &str| env.iter().find(|e| e.name == name).cloned().expect(name);
        assert_eq!(get(ENV_INGESTION_NAME).value.as_deref(), Some("sensors"));
        assert_eq!(
            get(ENV_INGESTION_NAMESPACE)
                .value_from
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path),
            Some("metadata.namespace".to_string())
        );
        assert_eq!(
            get(ENV_POD_NAME)
                .value_from
                .and_then(|v| v.field_ref)
                .map(|f| f.field_path),
            Some("metadata.name".to_string())
        );
        assert_eq!(get(ENV_REPORT_STATUS).value.as_deref(), Some("true"));
        assert_eq!(
            env.iter().filter(|e| e.name == ENV_REPORT_STATUS).count(),
            1
        );
        assert_eq!(get(ENV_METRICS_PORT).value.as_deref(), Some("9100"));
        assert_eq!(get(ENV_LOG_FORMAT).value.as_deref(), Some("json"));
        assert_eq!(get("RUST_LOG").value.as_deref(), Some("debug"));
        let c = &t.spec.as_ref().expect("spec").containers[0];
        let port = &c.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("metrics"), 9100)
        );
        let liveness = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("liveness");
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        assert_eq!(liveness.port, IntOrString::String("metrics".into()));
        let readiness = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    }

    #[test]
    fn scheduling_and_metadata_come_from_spec_worker() {
        let si = ingestion(concat!(
            "  worker:\n",
            "    image: registry.local/worker:dev\n",
            "    imagePullPolicy: Always\n",
            "    resources: {requests: {cpu: 250m}}\n",
            "    nodeSelector: {pool: ingest}\n",
            "    tolerations: [{key: dedicated, operator: Exists}]\n",
            "    priorityClassName: high\n",
            "    podLabels: {team: data, tributary.dev/ingestion: hijack}\n",
            "    podAnnotations: {prometheus.io/scrape: \"true\"}\n",
            "    affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}\n",
        ));
        let t = template(&si);
        let spec = t.spec.as_ref().expect("spec");
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.local/worker:dev"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert!(
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|r| r["cpu"].0 == "250m")
        );
        assert_eq!(
            spec.node_selector.as_ref().map(|n| n["pool"].as_str()),
            Some("ingest")
        );
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(1));
        assert_eq!(spec.priority_class_name.as_deref(), Some("high"));
        assert!(
            spec.affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .is_some()
        );
        let meta = t.metadata.as_ref().expect("metadata");
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels["team"], "data");
        assert_eq!(
            labels["tributary.dev/ingestion"], "sensors",
            "the selector label cannot be overridden"
        );
        let annotations = meta.annotations.as_ref().expect("annotations");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations[ANNOTATION_CONFIG_HASH], "abc123");
    }

    #[test]
    fn restart_annotation_is_copied_to_the_template() {
        let mut si = ingestion("");
        let plain = template(&si);
        assert!(
            !plain
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .expect("annotations")
                .contains_key(ANNOTATION_RESTARTED_AT)
        );
        si.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                ANNOTATION_RESTARTED_AT.to_string(),
                "2026-01-01T00:00:00Z".to_string(),
            );
        let restarted = template(&si);
        assert_eq!(
            restarted
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .map(|a| a[ANNOTATION_RESTARTED_AT].as_str()),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn claims_are_mounted_at_their_paths() {
        let t = template(&ingestion(""));
        let spec = t.spec.as_ref().expect("spec");
        let volumes = spec.volumes.as_ref().expect("volumes");
        let claim_of = |name: &str| {
            volumes
                .iter()
                .find(|v| v.name == name)
                .and_then(|v| v.persistent_volume_claim.as_ref())
                .map(|p| p.claim_name.clone())
        };
        assert_eq!(
            claim_of("checkpoint").as_deref(),
            Some("sensors-checkpoint")
        );
        assert_eq!(claim_of("lake").as_deref(), Some("lake"));
        let mounts = spec.containers[0].volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "checkpoint" && m.mount_path == "/checkpoints/sensors")
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "lake" && m.mount_path == "/lake")
        );
    }
}
