//! The API crate against its artefacts: the committed CRD, the CEL rules inside it (evaluated by
//! kube's client-side CEL engine, the same expressions the API server runs), and examples/.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tributary_crds::{StreamingIngestion, crd, manifest};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crds/ has a parent")
        .to_path_buf()
}

fn crd_json() -> Value {
    serde_json::to_value(crd::crd()).expect("CRD serialises")
}

fn schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

// ---- the committed manifest ----------------------------------------------------------------

#[test]
fn committed_crds_match_the_types() {
    let generated = crd::crd_yaml().expect("CRD renders");
    for relative in [crd::CRD_PATH, crd::CHART_CRD_PATH] {
        let path = workspace_root().join(relative);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is out of date with crds/src. Regenerate both copies with:\n    cargo run --bin crdgen",
            path.display()
        );
    }
}

#[test]
fn crd_names_scopes_and_subresources() {
    let crd = crd_json();
    let spec = &crd["spec"];
    assert_eq!(crd["metadata"]["name"], "streamingingestions.tributary.dev");
    assert_eq!(spec["group"], "tributary.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "StreamingIngestion");
    assert_eq!(spec["names"]["plural"], "streamingingestions");
    assert_eq!(spec["names"]["singular"], "streamingingestion");
    assert_eq!(spec["names"]["shortNames"], json!(["si", "stream"]));
    assert_eq!(spec["names"]["categories"], json!(["streams"]));
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.labelSelector"
        })
    );
    let label_selector = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["labelSelector"];
    assert_eq!(label_selector["type"], "string");
}

#[test]
fn crd_printer_columns() {
    let crd = crd_json();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns")
        .clone();
    let names: Vec<&str> = columns
        .iter()
        .filter(|c| c.get("priority").is_none())
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "Phase",
            "Ready",
            "Trigger",
            "Replicas",
            "Lag",
            "Rows/s",
            "Last Batch",
            "Age"
        ]
    );
    for column in &columns {
        assert_ne!(
            column.get("priority"),
            Some(&json!(0)),
            "a zero priority is stripped by the API server: {column}"
        );
    }
    let ready = columns
        .iter()
        .find(|c| c["name"] == "Ready")
        .expect("Ready");
    assert_eq!(
        ready["jsonPath"],
        ".status.conditions[?(@.type==\"Ready\")].status"
    );
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    let fields = &schema()["properties"]["spec"]["properties"]["format"]["properties"]["json"]["properties"]
        ["schema"];
    assert_eq!(fields["x-kubernetes-list-map-keys"], json!(["name"]));
}

#[test]
fn conditions_are_validated_as_controller_gen_emits_metav1_condition() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    let item = &conditions["items"];
    assert_eq!(
        item["required"],
        json!(["lastTransitionTime", "message", "reason", "status", "type"])
    );
    let fields = &item["properties"];
    assert_eq!(
        fields["status"]["enum"],
        json!(["True", "False", "Unknown"])
    );
    assert_eq!(fields["type"]["maxLength"], 316);
    assert_eq!(fields["reason"]["minLength"], 1);
    assert_eq!(fields["reason"]["maxLength"], 1024);
    assert_eq!(fields["message"]["maxLength"], 32768);
    assert_eq!(fields["observedGeneration"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(fields["lastTransitionTime"]["format"], "date-time");

    // The patterns admit every type and reason of the shared vocabulary, and refuse what the
    // API server would refuse.
    let pattern = |field: &str| {
        regex::Regex::new(fields[field]["pattern"].as_str().expect("a pattern")).expect("compiles")
    };
    let (types, reasons) = (pattern("type"), pattern("reason"));
    for type_ in tributary_crds::conditions::types::ALL {
        assert!(types.is_match(type_), "type {type_}");
    }
    for reason in tributary_crds::conditions::reasons::ALL {
        assert!(reasons.is_match(reason), "reason {reason}");
        assert!(reason.len() <= 1024);
    }
    assert!(types.is_match("tributary.dev/Ready"));
    for bad in ["", "Not Ready", "-Ready", "Ready/"] {
        assert!(!types.is_match(bad), "type {bad:?} should be refused");
    }
    for bad in ["", "Crash Looping", "9Lives", "Failed:"] {
        assert!(!reasons.is_match(bad), "reason {bad:?} should be refused");
    }
}

/// Every problem with a schema node and, recursively, its properties, items and map values.
fn schema_problems(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(map) = node.as_object() else { return };
    if map.contains_key("default") {
        problems.push(format!(
            "{path}: has a default (defaults are applied when read)"
        ));
    }
    if map
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        problems.push(format!("{path}: empty required list"));
    }
    if let Some(properties) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            // kubectl explain shows these: every field a user reads or writes is described.
            if child.get("description").is_none() {
                problems.push(format!("{child_path}: no description"));
            }
            schema_problems(child, &child_path, problems);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get(key) {
            schema_problems(child, &format!("{path}[]"), problems);
        }
    }
}

#[test]
fn crd_holds_nothing_the_api_server_strips_and_describes_every_field() {
    let mut problems = Vec::new();
    for part in ["spec", "status"] {
        schema_problems(&schema()["properties"][part], part, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- CEL rules, evaluated as the API server would ------------------------------------------

/// A valid object to mutate: the continuous sensor example.
fn valid_object() -> Value {
    let text = std::fs::read_to_string(workspace_root().join("examples/sensor-readings.yaml"))
        .expect("example exists");
    serde_saphyr::from_str(&text).expect("example parses")
}

fn cel_errors(object: &Value) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

/// Applies `mutate` to a valid object and expects exactly one CEL error containing `expected`;
/// also expects the Rust validation to report the same problem.
fn assert_rejected(mutate: impl Fn(&mut Value), expected: &str) {
    let mut object = valid_object();
    mutate(&mut object);
    let errors = cel_errors(&object);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "CEL should reject with {expected:?}; got {errors:?}"
    );
    let ingestion: StreamingIngestion =
        serde_json::from_value(object).expect("mutated object still deserialises");
    let rust = tributary_crds::validate(&ingestion)
        .expect_err("Rust validation should reject too")
        .to_string();
    assert!(
        rust.contains(expected),
        "Rust validation should say {expected:?}; got {rust}"
    );
}

#[test]
fn the_valid_example_passes_cel() {
    assert_eq!(cel_errors(&valid_object()), Vec::<String>::new());
}

#[test]
fn cel_exactly_one_source() {
    assert_rejected(
        |o| o["spec"]["source"]["eventHubs"] = json!({"namespace": "ns", "eventHub": "t", "connectionString": {"secretKeyRef": {"name": "s", "key": "k"}}}),
        "spec.source must set exactly one of kafka or eventHubs",
    );
    let mut none = valid_object();
    none["spec"]["source"] = json!({});
    assert!(
        cel_errors(&none)
            .iter()
            .any(|e| e.contains("exactly one of kafka or eventHubs"))
    );
}

#[test]
fn cel_exactly_one_subscription() {
    assert_rejected(
        |o| o["spec"]["source"]["kafka"]["subscribePattern"] = json!("sensor-.*"),
        "spec.source.kafka must set exactly one of subscribe, subscribePattern or assign",
    );
    assert_rejected(
        |o| {
            let kafka = o["spec"]["source"]["kafka"].as_object_mut().expect("kafka");
            kafka.remove("subscribe");
        },
        "spec.source.kafka must set exactly one of subscribe, subscribePattern or assign",
    );
    let mut assign = valid_object();
    let kafka = &mut assign["spec"]["source"]["kafka"];
    kafka.as_object_mut().expect("kafka").remove("subscribe");
    kafka["assign"] = json!({"sensor-readings": [0, 1]});
    assert_eq!(cel_errors(&assign), Vec::<String>::new());
}

#[test]
fn cel_schedule_only_with_available_now() {
    assert_rejected(
        |o| o["spec"]["schedule"] = json!("*/15 * * * *"),
        "spec.schedule runs the ingestion as a CronJob and needs spec.trigger: {availableNow: true}",
    );
    let mut scheduled = valid_object();
    scheduled["spec"]["schedule"] = json!("*/15 * * * *");
    scheduled["spec"]["trigger"] = json!({"availableNow": true});
    assert_eq!(cel_errors(&scheduled), Vec::<String>::new());
}

#[test]
fn cel_one_replica_for_runs_to_completion() {
    for trigger in [json!({"availableNow": true}), json!({"once": true})] {
        assert_rejected(
            |o| {
                o["spec"]["trigger"] = trigger.clone();
                o["spec"]["replicas"] = json!(3);
            },
            "spec.replicas must be 0 or 1 with trigger availableNow or once",
        );
    }
    let mut continuous = valid_object();
    continuous["spec"]["replicas"] = json!(3);
    assert_eq!(cel_errors(&continuous), Vec::<String>::new());
}

#[test]
fn cel_run_policy_only_for_runs_to_completion() {
    assert_rejected(
        |o| o["spec"]["runs"] = json!({"backoffLimit": 5}),
        tributary_crds::spec::RUNS_NEED_A_RUN_TO_COMPLETION,
    );
    for trigger in [json!({"availableNow": true}), json!({"once": true})] {
        let mut run = valid_object();
        run["spec"]["trigger"] = trigger;
        run["spec"]["runs"] = json!({"backoffLimit": 5, "successfulHistory": 1});
        assert_eq!(cel_errors(&run), Vec::<String>::new());
    }
}

#[test]
fn cel_autoscaling_and_restart_limit_rules() {
    use tributary_crds::spec::{
        AUTOSCALING_EXCLUDES_REPLICAS, AUTOSCALING_NEEDS_CONTINUOUS, MAX_RESTARTS_NEEDS_CONTINUOUS,
    };
    let policy = json!({"minReplicas": 1, "maxReplicas": 6, "targetLagPerWorker": 100000});
    assert_rejected(
        |o| o["spec"]["autoscaling"] = policy.clone(),
        AUTOSCALING_EXCLUDES_REPLICAS,
    );
    for trigger in [json!({"availableNow": true}), json!({"once": true})] {
        assert_rejected(
            |o| {
                o["spec"].as_object_mut().expect("spec").remove("replicas");
                o["spec"]["trigger"] = trigger.clone();
                o["spec"]["autoscaling"] = policy.clone();
            },
            AUTOSCALING_NEEDS_CONTINUOUS,
        );
        assert_rejected(
            |o| {
                o["spec"]["trigger"] = trigger.clone();
                o["spec"]["maxRestarts"] = json!(5);
            },
            MAX_RESTARTS_NEEDS_CONTINUOUS,
        );
    }
    assert_rejected(
        |o| {
            o["spec"].as_object_mut().expect("spec").remove("replicas");
            o["spec"]["autoscaling"] =
                json!({"minReplicas": 7, "maxReplicas": 6, "targetLagPerWorker": 10});
        },
        "minReplicas must not be more than maxReplicas",
    );
    for both_or_none in [
        json!({"maxReplicas": 6, "targetLagPerWorker": 10, "targetSecondsBehind": 60}),
        json!({"maxReplicas": 6}),
    ] {
        assert_rejected(
            |o| {
                o["spec"].as_object_mut().expect("spec").remove("replicas");
                o["spec"]["autoscaling"] = both_or_none.clone();
            },
            tributary_crds::spec::AUTOSCALING_TARGET_MESSAGE,
        );
    }
    let mut by_time = valid_object();
    by_time["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("replicas");
    by_time["spec"]["autoscaling"] = json!({"maxReplicas": 6, "targetSecondsBehind": 120});
    assert_eq!(cel_errors(&by_time), Vec::<String>::new());
    let ingestion: StreamingIngestion = serde_json::from_value(by_time).expect("deserialises");
    tributary_crds::validate(&ingestion).expect("valid");
    let mut scaled = valid_object();
    scaled["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("replicas");
    scaled["spec"]["autoscaling"] = policy;
    scaled["spec"]["maxRestarts"] = json!(10);
    assert_eq!(cel_errors(&scaled), Vec::<String>::new());
    let ingestion: StreamingIngestion = serde_json::from_value(scaled).expect("deserialises");
    tributary_crds::validate(&ingestion).expect("valid");
    // Before autoscaling decides, the minimum runs.
    assert_eq!(ingestion.spec.replicas(), 1);
}

#[test]
fn cel_vacuum_keeps_delta_s_retention_unless_told_otherwise() {
    use tributary_crds::spec::VACUUM_RETENTION_CHECK_MESSAGE;
    assert_rejected(
        |o| o["spec"]["sink"]["delta"]["vacuum"] = json!({"intervalHours": 24, "retainHours": 24}),
        VACUUM_RETENTION_CHECK_MESSAGE,
    );
    for vacuum in [
        json!({"intervalHours": 24}),
        json!({"intervalHours": 6, "retainHours": 720}),
        json!({"intervalHours": 1, "retainHours": 0, "retentionDurationCheck": false}),
    ] {
        let mut object = valid_object();
        object["spec"]["sink"]["delta"]["vacuum"] = vacuum.clone();
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{vacuum}");
        let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
        tributary_crds::validate(&ingestion).expect("valid");
    }
}

#[test]
fn cel_table_properties_are_delta_intervals_and_keep_the_deleted_file_retention() {
    use tributary_crds::spec::{DELETED_FILE_RETENTION_MESSAGE, DELTA_INTERVAL_MESSAGE};
    assert_rejected(
        |o| o["spec"]["sink"]["delta"]["logRetentionDuration"] = json!("30 days"),
        DELTA_INTERVAL_MESSAGE,
    );
    assert_rejected(
        |o| {
            o["spec"]["sink"]["delta"]["deletedFileRetentionDuration"] =
                json!("interval 2 fortnights")
        },
        DELTA_INTERVAL_MESSAGE,
    );
    for short in [
        "interval 6 days",
        "interval 167 hours",
        "interval 10079 minutes",
        "interval 604799 seconds",
    ] {
        assert_rejected(
            |o| o["spec"]["sink"]["delta"]["deletedFileRetentionDuration"] = json!(short),
            DELETED_FILE_RETENTION_MESSAGE,
        );
    }
    let accepted = |delta: Value| {
        let mut object = valid_object();
        for (key, value) in delta.as_object().expect("object") {
            object["spec"]["sink"]["delta"][key] = value.clone();
        }
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{delta}");
        let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
        tributary_crds::validate(&ingestion).expect("valid");
    };
    for long in [
        "interval 1 week",
        "interval 7 days",
        "interval 168 hours",
        "interval 10080 minutes",
        "interval 604800 seconds",
        "interval 30 days",
    ] {
        accepted(
            json!({"deletedFileRetentionDuration": long, "logRetentionDuration": long, "checkpointInterval": 50}),
        );
    }
    accepted(json!({
        "deletedFileRetentionDuration": "interval 1 hour",
        "vacuum": {"intervalHours": 1, "retainHours": 1, "retentionDurationCheck": false}
    }));
}

#[test]
fn cel_a_checkpoint_query_id_is_a_lower_case_uuid_and_excludes_from_spark() {
    use tributary_crds::spec::{CHECKPOINT_START_MESSAGE, QUERY_ID_MESSAGE};
    for wrong in [
        "sensor-ingestion",
        "3F2B8C1E-5D4A-4E9B-9C7D-1A2B3C4D5E6F",
        "3f2b8c1e5d4a4e9b9c7d1a2b3c4d5e6f0000",
        "3f2b8c1e-5d4a-4e9b-9c7d-1a2b3c4d5e6g",
    ] {
        assert_rejected(
            |o| o["spec"]["checkpoint"]["queryId"] = json!(wrong),
            QUERY_ID_MESSAGE,
        );
    }
    let id = "3f2b8c1e-5d4a-4e9b-9c7d-1a2b3c4d5e6f";
    let mut object = valid_object();
    object["spec"]["checkpoint"]["queryId"] = json!(id);
    assert_eq!(cel_errors(&object), Vec::<String>::new());
    let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
    tributary_crds::validate(&ingestion).expect("valid");

    let with_spark = |o: &mut Value| {
        o["spec"]["checkpoint"]["queryId"] = json!(id);
        o["spec"]["checkpoint"]["fromSpark"] = json!({
            "location": "abfss://checkpoints@account.dfs.core.windows.net/spark/sensors"
        });
    };
    assert_rejected(with_spark, CHECKPOINT_START_MESSAGE);
}

#[test]
fn cel_a_reset_has_an_id_and_one_target() {
    use tributary_crds::spec::{RESET_ID_MESSAGE, RESET_ONE_OF_MESSAGE, RESET_TIMESTAMP_MESSAGE};
    assert!(RESET_TIMESTAMP_MESSAGE.ends_with("RFC 3339 time such as 2026-11-30T12:00:00Z"));
    assert_rejected(
        |o| o["spec"]["reset"] = json!({"id": "r1"}),
        RESET_ONE_OF_MESSAGE,
    );
    assert_rejected(
        |o| {
            o["spec"]["reset"] =
                json!({"id": "r1", "timestamp": "2026-11-30T12:00:00Z", "offsets": "latest"})
        },
        RESET_ONE_OF_MESSAGE,
    );
    assert_rejected(
        |o| o["spec"]["reset"] = json!({"id": "-r1", "offsets": "latest"}),
        RESET_ID_MESSAGE,
    );
    assert_rejected(
        |o| o["spec"]["reset"] = json!({"id": "r 1", "offsets": "latest"}),
        RESET_ID_MESSAGE,
    );
    assert_rejected(
        |o| o["spec"]["reset"] = json!({"id": "r1", "timestamp": "yesterday"}),
        "RFC 3339 time such as 2026-11-30T12:00:00Z",
    );
    assert_rejected(
        |o| o["spec"]["reset"] = json!({"id": "r1", "offsets": "from the start"}),
        "spec.reset.offsets must be earliest, latest, or per-partition JSON",
    );
    for reset in [
        json!({"id": "replay-2026-11-30", "timestamp": "2026-11-30T12:00:00Z"}),
        json!({"id": "r.1_a", "timestamp": "2026-11-30T13:00:00.250+01:00"}),
        json!({"id": "skip-poison", "offsets": "{\"sensor-readings\":{\"2\":1500}}"}),
        json!({"id": "r2", "offsets": "earliest"}),
    ] {
        let mut object = valid_object();
        object["spec"]["reset"] = reset.clone();
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{reset}");
        let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
        tributary_crds::validate(&ingestion).expect("valid");
    }
    // What CEL cannot know: a topic the query does not read.
    let mut object = valid_object();
    object["spec"]["reset"] = json!({"id": "r3", "offsets": "{\"other\":{\"0\":1}}"});
    assert_eq!(cel_errors(&object), Vec::<String>::new());
    let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
    let error = tributary_crds::validate(&ingestion)
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("spec.reset.offsets: names topic \"other\", which the query does not read"),
        "{error}"
    );
}

#[test]
fn a_spark_checkpoint_to_take_over_is_a_path_on_an_existing_claim_or_an_azure_url() {
    use tributary_crds::spec::SPARK_CHECKPOINT_LOCATION_MESSAGE;
    for bad in ["s3://bucket/q", "relative/q", "file:///spark/q"] {
        assert_rejected(
            |o| o["spec"]["checkpoint"]["fromSpark"] = json!({"location": bad}),
            SPARK_CHECKPOINT_LOCATION_MESSAGE,
        );
    }
    let with = |spark: Value| {
        let mut object = valid_object();
        object["spec"]["checkpoint"]["fromSpark"] = spark.clone();
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{spark}");
        let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
        tributary_crds::validate(&ingestion).map_err(|e| e.to_string())
    };
    with(json!({"location": "/spark/checkpoints/q", "volume": {"claimName": "spark", "mountPath": "/spark"}}))
        .expect("a path on an existing claim");
    with(json!({"location": "abfss://cp@acct.dfs.core.windows.net/spark/q"}))
        .expect("an ADLS URL, read with the checkpoint's storage options");
    with(json!({"location": "az://cp/spark/q"})).expect("an az:// URL");
    let url_with_volume = with(json!({"location": "az://cp/spark/q", "volume": {"claimName": "spark", "mountPath": "/spark"}}))
        .expect_err("a volume for a URL");
    assert!(
        url_with_volume.contains("remove the volume"),
        "{url_with_volume}"
    );
    let bad_url = with(json!({"location": "abfss://no-account/q"})).expect_err("no account");
    assert!(
        bad_url.contains("spec.checkpoint.fromSpark.location"),
        "{bad_url}"
    );
    let created =
        with(json!({"location": "/spark/q", "volume": {"size": "1Gi", "mountPath": "/spark"}}))
            .expect_err("a created claim would be empty");
    assert!(created.contains("claimName"), "{created}");
    let own = with(json!({"location": "/checkpoints/sensor-readings", "volume": {"claimName": "c", "mountPath": "/checkpoints"}}))
        .expect_err("its own checkpoint");
    assert!(
        own.contains("Spark query's own checkpointLocation"),
        "{own}"
    );
}

#[test]
fn cel_processing_time_is_a_duration() {
    for good in ["10s", "1m30s", "500ms", "10 seconds", "2 minutes"] {
        let mut object = valid_object();
        object["spec"]["trigger"] = json!({"processingTime": good});
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{good}");
    }
    for bad in ["10", "ten seconds", "10 fortnights", "1x"] {
        assert_rejected(
            |o| o["spec"]["trigger"] = json!({"processingTime": bad}),
            "processingTime must be a duration such as 10s",
        );
    }
}

#[test]
fn cel_processing_time_is_bounded_as_validation_bounds_it() {
    for good in [
        "24h",
        "1 day",
        "86400000ms",
        "1440 minutes",
        "23h59m59.999s",
        "0010s",
        "0",
        "1.5h",
    ] {
        let mut object = valid_object();
        object["spec"]["trigger"] = json!({"processingTime": good});
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{good}");
        let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
        assert_eq!(tributary_crds::validate(&ingestion), Ok(()), "{good}");
    }
    for bad in [
        "25h",
        "2 days",
        "86400001ms",
        "1441 minutes",
        "24h0.001s",
        "99999999999999999999h",
        "18446744073709551615 days",
        "213503982334602 days",
        "999999h999999h",
    ] {
        assert_rejected(
            |o| o["spec"]["trigger"] = json!({"processingTime": bad}),
            "processingTime must be at most 24h (\"1 day\"); for rarer runs use trigger {availableNow: true} with a spec.schedule",
        );
    }
}

#[test]
fn cel_one_trigger_at_most() {
    assert_rejected(
        |o| o["spec"]["trigger"] = json!({"processingTime": "10s", "availableNow": true}),
        "spec.trigger may set only one of processingTime, availableNow or once",
    );
    // availableNow: false does not count as set.
    let mut object = valid_object();
    object["spec"]["trigger"] = json!({"processingTime": "10s", "availableNow": false});
    assert_eq!(cel_errors(&object), Vec::<String>::new());
}

#[test]
fn cel_starting_offsets_forms() {
    for good in [
        "earliest",
        "latest",
        r#"{"sensor-readings":{"0":23,"1":-2}}"#,
    ] {
        let mut object = valid_object();
        object["spec"]["source"]["kafka"]["startingOffsets"] = json!(good);
        assert_eq!(cel_errors(&object), Vec::<String>::new(), "{good}");
    }
    assert_rejected(
        |o| o["spec"]["source"]["kafka"]["startingOffsets"] = json!("beginning"),
        "startingOffsets must be earliest, latest, or per-partition JSON",
    );
}

#[test]
fn cel_spark_source_options() {
    assert_rejected(
        |o| {
            o["spec"]["source"]["kafka"]["startingOffsets"] = json!("earliest");
            o["spec"]["source"]["kafka"]["startingTimestamp"] = json!(1_700_000_000_000_i64);
        },
        "set at most one of startingOffsets, startingOffsetsByTimestamp and startingTimestamp",
    );
    assert_rejected(
        |o| o["spec"]["source"]["kafka"]["startingOffsetsByTimestampStrategy"] = json!("latest"),
        "startingOffsetsByTimestampStrategy applies to startingTimestamp or startingOffsetsByTimestamp",
    );
    assert_rejected(
        |o| o["spec"]["source"]["kafka"]["maxTriggerDelay"] = json!("5m"),
        "maxTriggerDelay bounds the wait of minOffsetsPerTrigger",
    );
    assert_rejected(
        |o| {
            o["spec"]["source"]["kafka"]["minOffsetsPerTrigger"] = json!(10);
            o["spec"]["source"]["kafka"]["maxTriggerDelay"] = json!("25h");
        },
        "maxTriggerDelay must be at most 24h",
    );
    assert_rejected(
        |o| {
            o["spec"]["source"]["kafka"]["minOffsetsPerTrigger"] = json!(1000);
            o["spec"]["source"]["kafka"]["maxOffsetsPerTrigger"] = json!(10);
        },
        "minOffsetsPerTrigger must not be above maxOffsetsPerTrigger",
    );
    assert_rejected(
        |o| o["spec"]["source"]["kafka"]["endingOffsets"] = json!("latest"),
        "endingOffsets ends a run to completion and needs trigger availableNow or once",
    );
    assert_rejected(
        |o| o["spec"]["source"]["kafka"]["groupIdPrefix"] = json!("a b"),
        "groupIdPrefix may hold letters, digits",
    );
    assert_rejected(
        |o| {
            o["spec"]["source"]["kafka"]["options"] = json!({"kafka.auto.offset.reset": "earliest"})
        },
        "options must not set auto.offset.reset",
    );
    let mut good = valid_object();
    let kafka = &mut good["spec"]["source"]["kafka"];
    kafka
        .as_object_mut()
        .expect("object")
        .remove("startingOffsets");
    kafka["startingOffsetsByTimestamp"] = json!(r#"{"sensor-readings":{"0":1700000000000}}"#);
    kafka["startingOffsetsByTimestampStrategy"] = json!("latest");
    kafka["minOffsetsPerTrigger"] = json!(10);
    kafka["maxTriggerDelay"] = json!("15 minutes");
    kafka["groupIdPrefix"] = json!("etl");
    kafka["includeHeaders"] = json!(true);
    kafka["options"] = json!({"kafka.security.protocol": "PLAINTEXT"});
    good["spec"]["format"]["json"]["timestampFormat"] = json!("yyyy-MM-dd HH:mm:ss");
    good["spec"]["format"]["json"]["timeZone"] = json!("Europe/Paris");
    assert_eq!(cel_errors(&good), Vec::<String>::new());
    let mut run = valid_object();
    run["spec"]["trigger"] = json!({"availableNow": true});
    run["spec"]["source"]["kafka"]["endingOffsets"] = json!(r#"{"sensor-readings":{"0":100}}"#);
    assert_eq!(cel_errors(&run), Vec::<String>::new());
}

#[test]
fn cel_one_format() {
    assert_rejected(
        |o| o["spec"]["format"]["raw"] = json!({"valueType": "binary"}),
        "spec.format must set exactly one of json (parse values against a schema) or raw",
    );
    let mut raw = valid_object();
    raw["spec"]["format"] = json!({"raw": {"valueType": "string", "keyType": "binary"}});
    assert_eq!(cel_errors(&raw), Vec::<String>::new());
    let raw_schema = &schema()["properties"]["spec"]["properties"]["format"]["properties"]["raw"];
    let types = raw_schema["properties"]["valueType"]["enum"].to_string();
    assert!(
        types.contains("\"binary\"") && types.contains("\"string\""),
        "{types}"
    );
}

#[test]
fn cel_options_tributary_manages() {
    assert_rejected(
        |o| o["spec"]["source"]["kafka"]["options"] = json!({"enable.auto.commit": "true"}),
        "options must not set auto.offset.reset, enable.auto.commit",
    );
    // CEL names the rule; validation names the option and the secretOptions form to use.
    for option in ["sasl.password", "kafka.sasl.jaas.config", "ssl.key.pem"] {
        let mut object = valid_object();
        object["spec"]["source"]["kafka"]["options"] = json!({option: "hunter2"});
        let errors = cel_errors(&object);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("options must not hold credentials")),
            "{option}: {errors:?}"
        );
        let ingestion: StreamingIngestion = serde_json::from_value(object).expect("deserialises");
        let rust = tributary_crds::validate(&ingestion)
            .expect_err("refused")
            .to_string();
        assert!(
            rust.contains(&format!(
                "spec.source.kafka.options[{option}]: carries a credential"
            )) && rust.contains("secretOptions: {")
                && !rust.contains("hunter2"),
            "{rust}"
        );
    }
}

#[test]
fn cel_dead_letter_needs_its_table() {
    assert_rejected(
        |o| o["spec"]["format"]["json"]["onError"] = json!("deadLetter"),
        "onError: deadLetter needs format.json.deadLetter.uri",
    );
    assert_rejected(
        |o| o["spec"]["format"]["json"]["deadLetter"] = json!({"uri": "/lake/dlq"}),
        "format.json.deadLetter is only used with onError: deadLetter",
    );
}

#[test]
fn cel_schema_field_names_and_types() {
    assert_rejected(
        |o| o["spec"]["format"]["json"]["schema"][0]["name"] = json!("device id"),
        "schema field names must not contain spaces",
    );
    let mut bad_type = valid_object();
    bad_type["spec"]["format"]["json"]["schema"][1]["type"] = json!("strnig");
    assert!(
        cel_errors(&bad_type).is_empty(),
        "types are checked by validation, not CEL"
    );
}

#[test]
fn cel_sink_rules() {
    assert_rejected(
        |o| o["spec"]["sink"]["delta"]["table"] = json!("main.bronze.t"),
        "spec.sink.delta.uri and spec.sink.delta.table both name the table: set uri for a location or table for a Unity Catalog name, not both",
    );
    assert_rejected(
        |o| {
            let delta = o["spec"]["sink"]["delta"].as_object_mut().expect("delta");
            delta.remove("uri");
            delta.remove("volume");
        },
        "spec.sink.delta needs uri (the table's location) or table (a Unity Catalog name catalog.schema.table)",
    );
    assert_rejected(
        |o| {
            let delta = o["spec"]["sink"]["delta"].as_object_mut().expect("delta");
            delta.remove("uri");
            delta.remove("volume");
            delta.insert("table".into(), json!("main.bronze.t"));
        },
        "spec.sink.delta.table is a Unity Catalog name and needs spec.sink.delta.unityCatalog",
    );
    assert_rejected(
        |o| o["spec"]["sink"]["delta"]["outputMode"] = json!("complete"),
        "outputMode complete rewrites the whole result of a streaming aggregation",
    );
    assert_rejected(
        |o| o["spec"]["sink"]["delta"]["outputMode"] = json!("update"),
        "outputMode update needs spec.sink.delta.mergeKeys",
    );
    assert_rejected(
        |o| o["spec"]["sink"]["delta"]["mergeKeys"] = json!(["device_id"]),
        "spec.sink.delta.mergeKeys is only used with outputMode update",
    );
    assert_rejected(
        |o| o["spec"]["sink"]["delta"]["deleteOnTombstone"] = json!(true),
        "spec.sink.delta.deleteOnTombstone is only used with outputMode update",
    );
    assert_rejected(
        |o| {
            o["spec"]["sink"]["delta"]
                .as_object_mut()
                .expect("delta")
                .remove("volume");
        },
        "spec.sink.delta.uri is a path, so spec.sink.delta.volume must name the claim",
    );
}

#[test]
fn cel_checkpoint_rules() {
    assert_rejected(
        |o| {
            o["spec"]["checkpoint"]
                .as_object_mut()
                .expect("checkpoint")
                .remove("volume");
        },
        "spec.checkpoint.location is a path, so spec.checkpoint.volume must name the claim",
    );
    assert_rejected(
        |o| o["spec"]["checkpoint"]["volume"] = json!({"claimName": "c", "size": "1Gi"}),
        "volume needs exactly one of claimName (an existing claim) or size",
    );
    assert_rejected(
        |o| o["spec"]["checkpoint"]["volume"] = json!({"claimName": "c", "mountPath": "/data"}),
        "spec.checkpoint.location must be under spec.checkpoint.volume.mountPath",
    );
    assert_rejected(
        |o| {
            o["spec"]["sink"]["delta"]["volume"] =
                json!({"claimName": "lake", "mountPath": "/data"})
        },
        "spec.sink.delta.uri must be under spec.sink.delta.volume.mountPath",
    );
    let mut url = valid_object();
    url["spec"]["checkpoint"] = json!({"location": "abfss://c@acct.dfs.core.windows.net/cp"});
    assert_eq!(cel_errors(&url), Vec::<String>::new());
}

#[test]
fn schema_bounds_on_numbers_and_lists() {
    // The API server enforces these OpenAPI bounds itself (the CEL engine runs only the rules).
    let spec = &schema()["properties"]["spec"]["properties"];
    let kafka = &spec["source"]["properties"]["kafka"]["properties"];
    assert_eq!(kafka["maxOffsetsPerTrigger"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(
        kafka["maxOffsetsPerTrigger"]["maximum"].as_f64(),
        Some(tributary_crds::limits::MAX_OFFSET as f64)
    );
    assert_eq!(kafka["options"]["maxProperties"].as_u64(), Some(256));
    assert_eq!(spec["replicas"]["maximum"].as_f64(), Some(1000.0));
    let delta = &spec["sink"]["properties"]["delta"]["properties"];
    assert_eq!(
        delta["targetFileSize"]["maximum"].as_f64(),
        Some(4_294_967_296.0)
    );
    assert_eq!(
        delta["checkpointInterval"]["maximum"].as_f64(),
        Some(1000.0)
    );
    assert_eq!(kafka["subscribe"]["minItems"].as_u64(), Some(1));
    assert_eq!(spec["replicas"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(
        spec["format"]["properties"]["json"]["properties"]["schema"]["minItems"].as_u64(),
        Some(1)
    );
    assert_eq!(
        spec["format"]["properties"]["json"]["properties"]["onError"]["enum"],
        json!(["rescue", "deadLetter", "fail"])
    );
}

// ---- examples -----------------------------------------------------------------------------

#[test]
fn every_example_parses_validates_and_passes_cel() {
    let dir = workspace_root().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let ingestions =
            manifest::load_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for ingestion in ingestions {
            let object = serde_json::to_value(&ingestion).expect("serialises");
            assert_eq!(
                cel_errors(&object),
                Vec::<String>::new(),
                "{}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "expected the eight examples, checked {checked}"
    );
}

#[test]
fn the_keda_example_scales_an_example_ingestion_on_its_consumer_group() {
    let text = std::fs::read_to_string(workspace_root().join("examples/keda/scaledobject.yaml"))
        .expect("example exists");
    let scaled: Value = serde_saphyr::from_str(&text).expect("parses");
    let target = &scaled["spec"]["scaleTargetRef"];
    assert_eq!(target["apiVersion"], "tributary.dev/v1alpha1");
    assert_eq!(target["kind"], "StreamingIngestion");
    let name = target["name"].as_str().expect("a name");
    let namespace = scaled["metadata"]["namespace"]
        .as_str()
        .expect("a namespace");
    let examples = std::fs::read_dir(workspace_root().join("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .flat_map(|path| manifest::load_file(&path).expect("loads"));
    let ingestion = examples
        .into_iter()
        .find(|i| i.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no example ingestion named {name}"));
    assert_eq!(ingestion.metadata.namespace.as_deref(), Some(namespace));
    assert!(
        ingestion.spec.autoscaling.is_none(),
        "KEDA and spec.autoscaling exclude each other"
    );
    let group = ingestion
        .spec
        .source
        .kafka
        .as_ref()
        .and_then(|k| k.read.options.get("group.id").cloned())
        .unwrap_or_else(|| format!("tributary-{namespace}-{name}"));
    assert_eq!(scaled["spec"]["triggers"][0]["type"], "kafka");
    assert_eq!(
        scaled["spec"]["triggers"][0]["metadata"]["consumerGroup"],
        group.as_str()
    );
}

#[test]
fn examples_do_not_hold_real_secrets_in_ingestions() {
    // Secrets in examples are placeholders, and only ever inside a Secret object.
    for name in ["event-hubs.yaml", "adls.yaml", "unity-catalog.yaml"] {
        let text = std::fs::read_to_string(workspace_root().join("examples").join(name))
            .expect("example exists");
        let ingestion_part = text
            .split("kind: StreamingIngestion")
            .nth(1)
            .expect("has one");
        assert!(!ingestion_part.contains("REPLACE_ME"), "{name}");
    }
}

/// A sink that names its table through Unity Catalog, as the Unity Catalog example does.
fn unity_catalog_object() -> Value {
    let mut object = valid_object();
    object["spec"]["sink"]["delta"] = json!({
        "table": "main.bronze.sensor_readings",
        "unityCatalog": {
            "endpoint": "https://adb-1.2.azuredatabricks.net",
            "token": {"secretKeyRef": {"name": "uc", "key": "token"}},
            "storageRoot": "abfss://lake@account.dfs.core.windows.net/tables"
        }
    });
    object
}

#[test]
fn cel_unity_catalog_rules() {
    assert_eq!(cel_errors(&unity_catalog_object()), Vec::<String>::new());
    let ingestion: StreamingIngestion =
        serde_json::from_value(unity_catalog_object()).expect("deserialises");
    assert_eq!(tributary_crds::validate(&ingestion), Ok(()));

    let rejected = |mutate: &dyn Fn(&mut Value), expected: &str| {
        let mut object = unity_catalog_object();
        mutate(&mut object);
        let errors = cel_errors(&object);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "CEL should reject with {expected:?}; got {errors:?}"
        );
        let ingestion: StreamingIngestion =
            serde_json::from_value(object).expect("mutated object still deserialises");
        let rust = tributary_crds::validate(&ingestion)
            .expect_err("Rust validation should reject too")
            .to_string();
        assert!(
            rust.contains(expected),
            "Rust should say {expected:?}; got {rust}"
        );
    };
    rejected(
        &|o| {
            o["spec"]["sink"]["delta"]["unityCatalog"]
                .as_object_mut()
                .expect("catalog")
                .remove("token");
        },
        "spec.sink.delta.unityCatalog needs exactly one of token (a personal access token) or oauth",
    );
    rejected(
        &|o| {
            o["spec"]["sink"]["delta"]["unityCatalog"]["oauth"] = json!({
                "clientId": {"secretKeyRef": {"name": "sp", "key": "client-id"}},
                "clientSecret": {"secretKeyRef": {"name": "sp", "key": "client-secret"}}
            });
        },
        "spec.sink.delta.unityCatalog needs exactly one of token (a personal access token) or oauth",
    );
    rejected(
        &|o| o["spec"]["sink"]["delta"]["unityCatalog"]["tableMustExist"] = json!(true),
        "tableMustExist says never to create one: set one of them",
    );
    rejected(
        &|o| {
            let delta = o["spec"]["sink"]["delta"].as_object_mut().expect("delta");
            delta.remove("table");
            delta.insert(
                "uri".into(),
                json!("abfss://lake@account.dfs.core.windows.net/t"),
            );
        },
        "spec.sink.delta.unityCatalog resolves spec.sink.delta.table and is only used with it",
    );

    // OAuth machine-to-machine instead of a token, and a table that must exist already.
    let mut oauth = unity_catalog_object();
    let catalog = oauth["spec"]["sink"]["delta"]["unityCatalog"]
        .as_object_mut()
        .expect("catalog");
    catalog.remove("token");
    catalog.remove("storageRoot");
    catalog.insert("tableMustExist".into(), json!(true));
    catalog.insert(
        "oauth".into(),
        json!({
            "clientId": {"secretKeyRef": {"name": "sp", "key": "client-id"}},
            "clientSecret": {"secretKeyRef": {"name": "sp", "key": "client-secret"}}
        }),
    );
    assert_eq!(cel_errors(&oauth), Vec::<String>::new());
    let ingestion: StreamingIngestion = serde_json::from_value(oauth).expect("deserialises");
    assert_eq!(tributary_crds::validate(&ingestion), Ok(()));
}
