//! `tributary-operator render`: every object the controller would apply for the
//! StreamingIngestions in a file, as multi-document YAML, without a cluster.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::resources::{self, Desired, Settings, Workload};

fn to_value<T: Serialize>(what: &str, object: &T) -> Result<Value> {
    serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: what.to_string(),
        source,
    })
}

/// The desired objects in apply order, as JSON values.
pub fn objects(desired: &Desired) -> Result<Vec<Value>> {
    let mut objects = vec![
        to_value("ServiceAccount", &desired.service_account)?,
        to_value("Role", &desired.role)?,
        to_value("RoleBinding", &desired.role_binding)?,
        to_value("ConfigMap", &desired.config_map)?,
    ];
    for claim in &desired.claims {
        objects.push(to_value("PersistentVolumeClaim", claim)?);
    }
    objects.push(to_value("PodDisruptionBudget", &desired.disruption_budget)?);
    match &desired.workload {
        Some(Workload::Deployment(d)) => objects.push(to_value("Deployment", d.as_ref())?),
        Some(Workload::Job(j)) => objects.push(to_value("Job", j.as_ref())?),
        Some(Workload::CronJob(c)) => objects.push(to_value("CronJob", c.as_ref())?),
        None => {}
    }
    Ok(objects)
}

/// Renders every object for every StreamingIngestion in the file.
pub fn render_file(path: &Path, settings: &Settings) -> Result<String> {
    let ingestions = tributary_crds::manifest::load_file(path)?;
    let mut out = String::new();
    for ingestion in &ingestions {
        let desired = resources::build(ingestion, settings)?;
        let name = ingestion.metadata.name.clone().unwrap_or_default();
        for (index, object) in objects(&desired)?.into_iter().enumerate() {
            let text = serde_saphyr::to_string(&object).map_err(|source| Error::RenderYaml {
                what: format!("an object of {name}"),
                source,
            })?;
            out.push_str("---\n");
            if index == 0 {
                out.push_str(&format!(
                    "# StreamingIngestion {name}. In a cluster each object also gets a controller\n# ownerReference to it (which needs its uid), except retained claims.\n"
                ));
            }
            out.push_str(&text);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tributary_crds::TriggerKind;
    use tributary_crds::pod::{ANNOTATION_CONFIG_HASH, CONFIG_FILE};

    use super::*;

    fn examples() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("examples/ exists")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no examples in {}", dir.display());
        files
    }

    fn documents(text: &str) -> Vec<Value> {
        serde_saphyr::from_multiple::<Value>(text)
            .expect("every document is YAML")
            .into_iter()
            .filter(|v| !v.is_null())
            .collect()
    }

    fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} missing in {value}"))
    }

    #[test]
    fn every_example_renders_its_objects() {
        let settings = Settings {
            worker_image: "registry.test/worker:1".into(),
            ..Settings::default()
        };
        for file in examples() {
            let raw = std::fs::read_to_string(&file).expect("reads");
            let text =
                render_file(&file, &settings).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                !text.contains("REPLACE_ME"),
                "{}: a Secret value leaked",
                file.display()
            );
            let docs = documents(&text);
            for ingestion in tributary_crds::manifest::load_file(&file).expect("loads") {
                let name = ingestion.metadata.name.clone().expect("name");
                let ns = ingestion.metadata.namespace.clone().expect("namespace");
                let mine: Vec<&Value> = docs
                    .iter()
                    .filter(|d| {
                        d.pointer("/metadata/labels/tributary.dev~1ingestion")
                            .and_then(Value::as_str)
                            == Some(&name)
                    })
                    .collect();
                let kinds: Vec<&str> = mine.iter().map(|d| str_at(d, "/kind")).collect();
                let trigger = ingestion.spec.trigger_kind().expect("trigger");
                let workload = match (trigger, &ingestion.spec.schedule) {
                    (TriggerKind::Default | TriggerKind::ProcessingTime(_), _) => "Deployment",
                    (_, Some(_)) => "CronJob",
                    _ => "Job",
                };
                let wants_claim = ingestion
                    .spec
                    .checkpoint
                    .volume
                    .as_ref()
                    .is_some_and(|v| v.size.is_some())
                    || ingestion
                        .spec
                        .sink
                        .delta
                        .volume
                        .as_ref()
                        .is_some_and(|v| v.size.is_some());
                let mut expected = vec!["ServiceAccount", "Role", "RoleBinding", "ConfigMap"];
                if wants_claim {
                    expected.push("PersistentVolumeClaim");
                }
                expected.push("PodDisruptionBudget");
                expected.push(workload);
                assert_eq!(kinds, expected, "{}", file.display());
                for doc in &mine {
                    assert_eq!(str_at(doc, "/metadata/namespace"), ns);
                }

                let config = mine
                    .iter()
                    .find(|d| str_at(d, "/kind") == "ConfigMap")
                    .expect("ConfigMap");
                assert_eq!(str_at(config, "/metadata/name"), format!("{name}-config"));
                let manifest = str_at(config, &format!("/data/{}", CONFIG_FILE.replace('/', "~1")));
                let back = tributary_crds::manifest::load_str(manifest, "configmap")
                    .expect("the worker can load it");
                assert_eq!(back[0].spec, ingestion.spec.without_scale());

                let workload_doc = mine.last().expect("workload");
                assert!(str_at(workload_doc, "/metadata/name").starts_with(&name));
                let template = match workload {
                    "Deployment" => {
                        let replicas = workload_doc
                            .pointer("/spec/replicas")
                            .and_then(Value::as_i64);
                        assert_eq!(
                            replicas,
                            Some(i64::from(ingestion.spec.replicas())),
                            "{}",
                            file.display()
                        );
                        workload_doc.pointer("/spec/template")
                    }
                    "Job" => workload_doc.pointer("/spec/template"),
                    _ => {
                        assert_eq!(str_at(workload_doc, "/spec/concurrencyPolicy"), "Forbid");
                        assert_eq!(
                            Some(str_at(workload_doc, "/spec/schedule")),
                            ingestion.spec.schedule.as_deref()
                        );
                        workload_doc.pointer("/spec/jobTemplate/spec/template")
                    }
                }
                .expect("pod template");
                assert!(
                    !str_at(
                        template,
                        &format!(
                            "/metadata/annotations/{}",
                            ANNOTATION_CONFIG_HASH.replace('/', "~1")
                        )
                    )
                    .is_empty()
                );
                let container = template.pointer("/spec/containers/0").expect("container");
                let expected_image = ingestion
                    .spec
                    .worker
                    .as_ref()
                    .and_then(|w| w.image.clone())
                    .unwrap_or_else(|| settings.worker_image.clone());
                assert_eq!(str_at(container, "/image"), expected_image);
                assert_eq!(
                    container.pointer("/args"),
                    Some(&serde_json::json!([
                        "run",
                        "-f",
                        "/etc/tributary/ingestion.yaml"
                    ]))
                );
                let volumes = template
                    .pointer("/spec/volumes")
                    .and_then(Value::as_array)
                    .expect("volumes");
                for (_, reference) in tributary_crds::secrets::secret_references(&ingestion.spec) {
                    assert!(
                        volumes
                            .iter()
                            .any(|v| v.pointer("/secret/secretName").and_then(Value::as_str)
                                == Some(&reference.name)),
                        "{}: Secret {} not mounted",
                        file.display(),
                        reference.name
                    );
                }
            }
            // Secrets in the example file are the user's to apply, never re-rendered.
            if raw.contains("kind: Secret") {
                assert!(docs.iter().all(|d| str_at(d, "/kind") != "Secret"));
            }
        }
    }

    /// Renders `text` from a file, expecting an error; returns its message.
    fn render_error(text: &str) -> String {
        let dir = tempfile_dir();
        let file = dir.join("m.yaml");
        std::fs::write(&file, text).expect("writes");
        let error = render_file(&file, &Settings::default()).expect_err("refused");
        std::fs::remove_dir_all(&dir).ok();
        error
            .to_string()
            .replace(&file.display().to_string(), "m.yaml")
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tributary-render-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    const MANIFEST: &str = "\
apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata: {name: sensors, namespace: iot}
spec:
  source:
    kafka:
      bootstrapServers: 127.0.0.1:9092
      subscribe: [sensor-readings]
  format: {json: {schema: [{name: device_id, type: string}]}}
  sink: {delta: {uri: /lake/t, volume: {claimName: lake}}}
  checkpoint: {location: /checkpoints/t, volume: {size: 1Gi}}
";

    #[test]
    fn render_refuses_unknown_fields_like_kubectl_strict() {
        let text = MANIFEST.replace(
            "      subscribe:",
            "      startingOffset: earliest\n      subscribe:",
        );
        assert_eq!(
            render_error(&text),
            "cannot read manifests: m.yaml: StreamingIngestion sensors does not match the API (the API server and kubectl apply --validate=strict refuse it too):\n  line 8: spec.source.kafka.startingOffset: unknown field; did you mean startingOffsets?"
        );
    }

    #[test]
    fn render_refuses_credentials_in_options_and_never_prints_them() {
        let text = MANIFEST.replace(
            "      subscribe:",
            "      options: {sasl.jaas.config: 'PlainLoginModule required password=\"hunter2\";', sasl.mechanism: PLAIN}\n      subscribe:",
        );
        let error = render_error(&text);
        assert_eq!(
            error,
            "cannot read manifests: m.yaml: StreamingIngestion sensors is invalid: spec.source.kafka.options[sasl.jaas.config]: carries a credential, which must never be written in options (it would be stored and shown in plain text); sasl.jaas.config is the Java client's; librdkafka takes the user in options and the password from a Secret: options: {sasl.username: <user>} and secretOptions: {sasl.password: {secretKeyRef: {name: <secret>, key: <key>}}}"
        );
        assert!(!error.contains("hunter2"));
    }

    #[test]
    fn render_refuses_a_processing_time_it_cannot_hold() {
        let text = MANIFEST.to_string() + "  trigger: {processingTime: 99999999999999999999h}\n";
        assert_eq!(
            render_error(&text),
            "cannot read manifests: m.yaml: StreamingIngestion sensors is invalid: spec.trigger.processingTime: processingTime must be at most 24h (\"1 day\"); for rarer runs use trigger {availableNow: true} with a spec.schedule, not \"99999999999999999999h\""
        );
    }

    #[test]
    fn a_file_without_ingestions_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tributary-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("empty.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )
        .expect("writes");
        let error = render_file(&file, &Settings::default()).expect_err("no ingestion");
        assert!(
            error.to_string().contains("holds no StreamingIngestion"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
