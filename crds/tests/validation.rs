//! Every validation error path, checked through the public `validate`: field path and message.

use serde_json::{Value, json};
use tributary_crds::{StreamingIngestion, validate};

fn base() -> Value {
    json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "StreamingIngestion",
        "metadata": {"name": "sensors", "namespace": "iot"},
        "spec": {
            "source": {"kafka": {"bootstrapServers": "127.0.0.1:9092", "subscribe": ["sensor-readings"]}},
            "format": {"json": {"schema": [
                {"name": "device_id", "type": "string"},
                {"name": "temperature", "type": "double"},
                {"name": "timestamp", "type": "timestamp"}
            ]}},
            "sink": {"delta": {"uri": "/lake/t", "volume": {"claimName": "lake"}}},
            "checkpoint": {"location": "/checkpoints/t", "volume": {"size": "1Gi"}}
        }
    })
}

fn problems(value: Value) -> String {
    let ingestion: StreamingIngestion = serde_json::from_value(value).expect("deserialises");
    match validate(&ingestion) {
        Ok(()) => String::new(),
        Err(errors) => errors.to_string(),
    }
}

fn expect(mutate: impl FnOnce(&mut Value), expected: &[&str]) {
    let mut value = base();
    mutate(&mut value);
    let found = problems(value);
    for wanted in expected {
        assert!(found.contains(wanted), "expected {wanted:?} in: {found}");
    }
}

#[test]
fn the_base_is_valid() {
    assert_eq!(problems(base()), "");
}

#[test]
fn names_the_bad_type_with_its_path_and_the_choices() {
    expect(
        |v| v["spec"]["format"]["json"]["schema"][1]["type"] = json!("dobule"),
        &[
            r#"spec.format.json.schema[1].type: unknown type "dobule" (expected one of string, boolean"#,
        ],
    );
}

#[test]
fn reports_every_problem_at_once() {
    let mut value = base();
    value["spec"]["format"]["json"]["schema"][1]["type"] = json!("dobule");
    value["spec"]["source"]["kafka"]["subscribe"] = json!(["bad topic!"]);
    value["spec"]["sink"]["delta"]["uri"] = json!("s3://bucket/t");
    let found = problems(value);
    for wanted in [
        "spec.format.json.schema[1].type",
        "spec.source.kafka.subscribe[0]: \"bad topic!\" is not a valid topic name",
        "spec.sink.delta.uri: s3:// is not supported by this build",
    ] {
        assert!(found.contains(wanted), "{wanted} in {found}");
    }
}

#[test]
fn metadata_name() {
    expect(
        |v| v["metadata"]["name"] = json!("Sensors_1"),
        &["metadata.name: \"Sensors_1\" must be at most 52 lower-case letters"],
    );
    expect(
        |v| v["metadata"]["name"] = json!("a".repeat(53)),
        &["metadata.name"],
    );
    expect(
        |v| {
            v["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("name");
        },
        &["metadata.name: is required"],
    );
}

#[test]
fn kafka_source_checks() {
    expect(
        |v| v["spec"]["source"]["kafka"]["bootstrapServers"] = json!("broker, :9092,host:x"),
        &[
            "spec.source.kafka.bootstrapServers: \"broker\" is not host:port",
            "\":9092\" is not host:port",
            "\"host:x\" is not host:port",
        ],
    );
    expect(
        |v| {
            let kafka = &mut v["spec"]["source"]["kafka"];
            kafka.as_object_mut().expect("kafka").remove("subscribe");
            kafka["subscribePattern"] = json!("sensor-(");
        },
        &["spec.source.kafka.subscribePattern: is not a valid regular expression"],
    );
    expect(
        |v| {
            let kafka = &mut v["spec"]["source"]["kafka"];
            kafka.as_object_mut().expect("kafka").remove("subscribe");
            kafka["assign"] = json!({"t": [], "u": [-1]});
        },
        &[
            "spec.source.kafka.assign[t]: must list at least one partition",
            "spec.source.kafka.assign[u]: partition -1 is negative",
        ],
    );
    expect(
        |v| v["spec"]["source"]["kafka"]["subscribe"] = json!([]),
        &["spec.source.kafka.subscribe: must name at least one topic"],
    );
    expect(
        |v| v["spec"]["source"]["kafka"]["startingOffsets"] = json!(r#"{"other":{"0":5}}"#),
        &[
            "spec.source.kafka.startingOffsets: names topic \"other\", which the query does not read",
        ],
    );
    expect(
        |v| v["spec"]["source"]["kafka"]["startingOffsets"] = json!("{not json"),
        &[
            "spec.source.kafka.startingOffsets: startingOffsets must be earliest, latest, or per-partition JSON",
        ],
    );
    expect(
        |v| v["spec"]["source"]["kafka"]["maxOffsetsPerTrigger"] = json!(0),
        &["spec.source.kafka.maxOffsetsPerTrigger: must be at least 1, not 0"],
    );
}

#[test]
fn kafka_options_checks() {
    expect(
        |v| {
            v["spec"]["source"]["kafka"]["options"] = json!({
                "auto.offset.reset": "earliest",
                "kafka.enable.auto.commit": "true",
                "sasl.password": "x",
                "client.id": "",
                "kafka.fetch.min.bytes": "1",
                "fetch.min.bytes": "2"
            })
        },
        &[
            "spec.source.kafka.options[auto.offset.reset]: options must not set auto.offset.reset",
            "spec.source.kafka.options[kafka.enable.auto.commit]: options must not set auto.offset.reset, enable.auto.commit",
            "spec.source.kafka.options[sasl.password]: carries a credential, which must never be written in options (it would be stored and shown in plain text); read it from a Secret instead: secretOptions: {sasl.password: {secretKeyRef: {name: <secret>, key: <key>}}}",
            "spec.source.kafka.options[client.id]: has an empty value",
            "spec.source.kafka.options[kafka.fetch.min.bytes]: sets fetch.min.bytes again",
        ],
    );
    // Options pasted from Spark code keep their kafka. prefix; it is removed.
    let mut pasted = base();
    pasted["spec"]["source"]["kafka"]["options"] = json!({
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "PLAIN",
        "kafka.sasl.username": "reader"
    });
    pasted["spec"]["source"]["kafka"]["secretOptions"] = json!({
        "kafka.sasl.password": {"secretKeyRef": {"name": "creds", "key": "password"}}
    });
    assert_eq!(problems(pasted), "");
    expect(
        |v| {
            v["spec"]["source"]["kafka"]["options"] = json!({"sasl.username": "u"});
            v["spec"]["source"]["kafka"]["secretOptions"] = json!({
                "sasl.username": {"secretKeyRef": {"name": "creds", "key": "user"}},
                "group.id": {"secretKeyRef": {"name": "Bad_Name", "key": "k/k"}}
            });
        },
        &[
            "spec.source.kafka.secretOptions[sasl.username]: sasl.username is set more than once",
            "spec.source.kafka.secretOptions[group.id].secretKeyRef.name: \"Bad_Name\" is not a valid Secret name",
            "spec.source.kafka.secretOptions[group.id].secretKeyRef.key: \"k/k\" is not a valid Secret key",
        ],
    );
    expect(
        |v| {
            v["spec"]["source"]["kafka"]["secretOptions"] = json!({
                "sasl.jaas.config": {"secretKeyRef": {"name": "creds", "key": "jaas"}},
                "kafka.sasl.password": {"secretKeyRef": {"name": "creds", "key": "password"}}
            });
        },
        &[
            "spec.source.kafka.secretOptions[sasl.jaas.config]: is a setting of the Java Kafka client, which librdkafka does not know: use sasl.username in options and sasl.password here (or ssl.key.pem for a client key)",
        ],
    );
    expect(
        |v| {
            v["spec"]["source"]["kafka"]["secretOptions"] = json!({
                "kafka.sasl.jaas.config": {"secretKeyRef": {"name": "creds", "key": "jaas"}},
                "kafka.sasl.password": {"secretKeyRef": {"name": "creds", "key": "password"}},
                "sasl.password": {"secretKeyRef": {"name": "creds", "key": "password"}}
            });
        },
        &[
            "spec.source.kafka.secretOptions[kafka.sasl.jaas.config]: is a setting of the Java Kafka client",
            "spec.source.kafka.secretOptions[kafka.sasl.password]: sasl.password is set more than once",
        ],
    );
}

#[test]
fn spark_source_option_checks() {
    expect(
        |v| {
            let kafka = &mut v["spec"]["source"]["kafka"];
            kafka["startingOffsets"] = json!("earliest");
            kafka["startingTimestamp"] = json!(1_700_000_000_000_i64);
            kafka["minOffsetsPerTrigger"] = json!(500);
            kafka["maxOffsetsPerTrigger"] = json!(100);
            kafka["groupIdPrefix"] = json!("no spaces");
            kafka["endingOffsets"] = json!("{\"sensor-readings\":{\"0\":-2}}");
        },
        &[
            "spec.source.kafka: set at most one of startingOffsets, startingOffsetsByTimestamp and startingTimestamp",
            "spec.source.kafka.minOffsetsPerTrigger: minOffsetsPerTrigger must not be above maxOffsetsPerTrigger",
            "spec.source.kafka.groupIdPrefix: groupIdPrefix may hold letters, digits",
            "spec.source.kafka.endingOffsets: endingOffsets: -2 for sensor-readings-0 is not an offset from -1",
        ],
    );
    expect(
        |v| {
            let kafka = &mut v["spec"]["source"]["kafka"];
            kafka["startingOffsets"] = Value::Null;
            kafka["startingOffsetsByTimestamp"] = json!("{\"other\":{\"0\":1}}");
            kafka["maxTriggerDelay"] = json!("2 days");
            kafka["endingOffsets"] = json!("latest");
        },
        &[
            "spec.source.kafka.startingOffsetsByTimestamp: names topic \"other\", which the query does not read",
            "spec.source.kafka.maxTriggerDelay: maxTriggerDelay bounds the wait of minOffsetsPerTrigger, which is not set",
            "spec.source.kafka.maxTriggerDelay: maxTriggerDelay must be at most 24h",
            "spec.source.kafka.endingOffsets: endingOffsets ends a run to completion and needs trigger availableNow or once",
        ],
    );
    expect(
        |v| {
            v["spec"]["source"]["kafka"]["startingOffsetsByTimestampStrategy"] = json!("latest");
        },
        &[
            "spec.source.kafka.startingOffsetsByTimestampStrategy: startingOffsetsByTimestampStrategy applies to startingTimestamp or startingOffsetsByTimestamp",
        ],
    );
    let mut good = base();
    let kafka = &mut good["spec"]["source"]["kafka"];
    kafka["startingOffsets"] = Value::Null;
    kafka["startingTimestamp"] = json!(1_700_000_000_000_i64);
    kafka["startingOffsetsByTimestampStrategy"] = json!("latest");
    kafka["minOffsetsPerTrigger"] = json!(100);
    kafka["maxTriggerDelay"] = json!("30s");
    kafka["groupIdPrefix"] = json!("etl.team-a");
    kafka["includeHeaders"] = json!(true);
    good["spec"]["sink"]["delta"]["partitionBy"] = json!([]);
    assert_eq!(problems(good), "");
}

#[test]
fn datetime_format_checks() {
    expect(
        |v| {
            let json = &mut v["spec"]["format"]["json"];
            json["timestampFormat"] = json!("yyyy-MM-dd HH:mm z");
            json["dateFormat"] = json!("YYYY-ww");
            json["timestampNTZFormat"] = json!("dd/MM/yyyy hh:mm VV");
            json["timeZone"] = json!("PST");
        },
        &[
            "spec.format.json.timestampFormat: the pattern \"yyyy-MM-dd HH:mm z\" uses 'z' (a time zone name)",
            "spec.format.json.dateFormat: the pattern \"YYYY-ww\" uses 'Y' (a week-based field)",
            "spec.format.json.timeZone: \"PST\" is a short zone alias",
            "spec.format.json.timestampNTZFormat: the pattern \"dd/MM/yyyy hh:mm VV\" uses 'V' (a time zone name)",
        ],
    );
    let mut good = base();
    let json = &mut good["spec"]["format"]["json"];
    json["timestampFormat"] = json!("dd/MM/yyyy HH:mm[:ss][XXX]");
    json["dateFormat"] = json!("dd/MM/yyyy");
    json["timestampNTZFormat"] = json!("dd/MM/yyyy HH:mm:ss");
    json["timeZone"] = json!("Europe/Paris");
    assert_eq!(problems(good), "");
}

#[test]
fn event_hubs_checks() {
    expect(
        |v| {
            v["spec"]["source"] = json!({"eventHubs": {
                "namespace": "bad namespace",
                "eventHub": "telemetry",
                "connectionString": {"secretKeyRef": {"name": "eh", "key": "cs"}},
                "options": {"security.protocol": "PLAINTEXT"}
            }})
        },
        &[
            "spec.source.eventHubs.namespace: \"bad namespace\" is not an Event Hubs namespace",
            "spec.source.eventHubs.options[security.protocol]: is set by Tributary for Event Hubs",
        ],
    );
    expect(
        |v| {
            v["spec"]["source"] = json!({"eventHubs": {
                "namespace": "contoso",
                "eventHub": "telemetry",
                "connectionString": {"secretKeyRef": {"name": "eh", "key": "cs"}},
                "options": {"kafka.sasl.mechanism": "SCRAM-SHA-256"}
            }})
        },
        &[
            "spec.source.eventHubs.options[kafka.sasl.mechanism]: is set by Tributary for Event Hubs",
        ],
    );
    expect(
        |v| v["spec"]["source"] = json!({}),
        &["spec.source: spec.source must set exactly one of kafka or eventHubs"],
    );
}

#[test]
fn schema_field_checks() {
    expect(
        |v| {
            v["spec"]["format"]["json"]["schema"] = json!([
                {"name": "a b", "type": "int"},
                {"name": "A", "type": "int"},
                {"name": "a", "type": "int"},
                {"name": "_rescued_data", "type": "string"},
                {"name": "d", "type": "decimal(50,2)"}
            ])
        },
        &[
            "spec.format.json.schema[0].name: schema field names must not contain spaces",
            "spec.format.json.schema[2].name: \"a\" appears twice (column names are case-insensitive)",
            "spec.format.json.schema[3].name: \"_rescued_data\" is reserved",
            "spec.format.json.schema[4].type: decimal precision 50 is outside 1..=38",
        ],
    );
    expect(
        |v| v["spec"]["format"]["json"]["schema"] = json!([]),
        &["spec.format.json.schema: must declare at least one field"],
    );
}

#[test]
fn metadata_column_checks() {
    expect(
        |v| {
            v["spec"]["metadataColumns"] = json!(["offset", "offset"]);
            v["spec"]["format"]["json"]["schema"][0]["name"] = json!("kafka_offset");
        },
        &[
            "spec.metadataColumns[0]: column kafka_offset is also a schema field",
            "spec.metadataColumns[1]: kafka_offset is listed twice",
        ],
    );
}

#[test]
fn on_error_checks() {
    expect(
        |v| v["spec"]["format"]["json"]["onError"] = json!("deadLetter"),
        &["spec.format.json: onError: deadLetter needs format.json.deadLetter.uri"],
    );
    expect(
        |v| v["spec"]["format"]["json"]["deadLetter"] = json!({"uri": "/lake/dlq"}),
        &[
            "spec.format.json.deadLetter: format.json.deadLetter is only used with onError: deadLetter",
        ],
    );
    expect(
        |v| {
            v["spec"]["format"]["json"]["onError"] = json!("deadLetter");
            v["spec"]["format"]["json"]["deadLetter"] = json!({"uri": "/lake/t/"});
        },
        &["spec.format.json.deadLetter.uri: must differ from spec.sink.delta.uri"],
    );
}

#[test]
fn sink_checks() {
    expect(
        |v| v["spec"]["sink"]["delta"]["uri"] = json!("lake/t"),
        &["spec.sink.delta.uri: \"lake/t\" is neither an absolute path nor a URL"],
    );
    expect(
        |v| v["spec"]["sink"]["delta"] = json!({"uri": "abfss://nocontainer/t"}),
        &[
            "spec.sink.delta.uri: \"abfss://nocontainer/t\" must look like abfss://container@account.dfs.core.windows.net/path",
        ],
    );
    expect(
        |v| v["spec"]["sink"]["delta"] = json!({"uri": "ftp://host/t"}),
        &["spec.sink.delta.uri: unknown scheme \"ftp://\""],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"] = json!({"uri": "az://c/t", "volume": {"claimName": "lake"}})
        },
        &["spec.sink.delta.volume: a volume holds a path location"],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"]["volume"] =
                json!({"claimName": "lake", "mountPath": "/data"})
        },
        &[
            "spec.sink.delta.volume.mountPath: spec.sink.delta.uri must be under spec.sink.delta.volume.mountPath (\"/lake/t\" is not under \"/data\")",
        ],
    );
    expect(
        |v| v["spec"]["sink"]["delta"]["volume"] = json!({"size": "lots"}),
        &["spec.sink.delta.volume.size: \"lots\" is not a Kubernetes quantity"],
    );
    expect(
        |v| v["spec"]["sink"]["delta"] = json!({"table": "bronze.t"}),
        &[
            "spec.sink.delta.table: \"bronze.t\" is not a Unity Catalog name catalog.schema.table",
            "spec.sink.delta: spec.sink.delta.table is a Unity Catalog name and needs spec.sink.delta.unityCatalog (the catalog's endpoint and credentials)",
        ],
    );
    expect(
        |v| v["spec"]["sink"]["delta"]["table"] = json!("main.bronze.t"),
        &[
            "spec.sink.delta: spec.sink.delta.uri and spec.sink.delta.table both name the table: set uri for a location or table for a Unity Catalog name, not both",
        ],
    );
    expect(
        |v| v["spec"]["sink"]["delta"] = json!({}),
        &[
            "spec.sink.delta: spec.sink.delta needs uri (the table's location) or table (a Unity Catalog name catalog.schema.table)",
        ],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"] = json!({"table": "main.bronze.t", "unityCatalog": {
                "endpoint": "adb-1.azuredatabricks.net", "token": {"secretKeyRef": {"name": "uc", "key": "token"}}}})
        },
        &[
            "spec.sink.delta.unityCatalog.endpoint: \"adb-1.azuredatabricks.net\" is not an http(s) URL",
        ],
    );
    expect(
        |v| v["spec"]["sink"]["delta"]["outputMode"] = json!("update"),
        &[
            "spec.sink.delta.outputMode: outputMode update and complete need a streaming aggregation",
        ],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"]["storageOptions"] =
                json!({"azure_storage_account_key": "k"});
        },
        &[
            "spec.sink.delta.storageOptions[azure_storage_account_key]: is a secret: move it to secretStorageOptions",
        ],
    );
}

#[test]
fn partition_by_checks() {
    expect(
        |v| {
            v["spec"]["metadataColumns"] = json!(["partition"]);
            v["spec"]["sink"]["delta"]["partitionBy"] =
                json!(["site", "temperature", "kafka_partition", "kafka_partition"]);
        },
        &[
            "spec.sink.delta.partitionBy[0]: \"site\" is not a schema field or metadata column",
            "spec.sink.delta.partitionBy[1]: cannot partition by \"temperature\" of type double",
            "spec.sink.delta.partitionBy[3]: \"kafka_partition\" is listed twice",
        ],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"]["partitionBy"] =
                json!(["device_id", "timestamp", "temperature"])
        },
        &["cannot partition by \"temperature\""],
    );
}

#[test]
fn checkpoint_checks() {
    expect(
        |v| v["spec"]["checkpoint"] = json!({"location": "/lake/t/_checkpoint", "volume": {"claimName": "lake", "mountPath": "/lake"}}),
        &["spec.checkpoint.location: must not be the table's location or inside it"],
    );
    expect(
        |v| v["spec"]["checkpoint"] = json!({"location": "/checkpoints/t"}),
        &[
            "spec.checkpoint: spec.checkpoint.location is a path, so spec.checkpoint.volume must name the claim",
        ],
    );
    expect(
        |v| v["spec"]["checkpoint"]["volume"] = json!({}),
        &[
            "spec.checkpoint.volume: volume needs exactly one of claimName (an existing claim) or size",
        ],
    );
    expect(
        |v| v["spec"]["checkpoint"]["volume"] = json!({"claimName": "x", "mountPath": "relative"}),
        &["spec.checkpoint.volume.mountPath: must be an absolute path"],
    );
}

#[test]
fn trigger_and_schedule_checks() {
    expect(
        |v| v["spec"]["trigger"] = json!({"processingTime": "ten seconds"}),
        &[
            "spec.trigger.processingTime: processingTime must be a duration such as 10s, 1m30s, 500ms or \"10 seconds\", not \"ten seconds\"",
        ],
    );
    expect(
        |v| v["spec"]["trigger"] = json!({"once": true, "availableNow": true}),
        &["spec.trigger: spec.trigger may set only one of processingTime, availableNow or once"],
    );
    expect(
        |v| v["spec"]["schedule"] = json!("@hourly"),
        &[
            "spec.schedule: spec.schedule runs the ingestion as a CronJob and needs spec.trigger: {availableNow: true}",
        ],
    );
    for (schedule, message) in [
        (
            "*/15 * * *",
            "\"*/15 * * *\" has 4 fields; a schedule has five",
        ),
        (
            "61 * * * *",
            "\"61\" is not valid in the minute field (0-59)",
        ),
        ("0 0 * FOO *", "\"FOO\" is not valid in the month field"),
        (
            "*/0 * * * *",
            "\"*/0\" has an invalid step in the minute field",
        ),
        ("@sometimes", "\"@sometimes\" is not a schedule macro"),
    ] {
        expect(
            |v| {
                v["spec"]["trigger"] = json!({"availableNow": true});
                v["spec"]["schedule"] = json!(schedule);
            },
            &[&format!("spec.schedule: {message}")],
        );
    }
    for schedule in [
        "*/15 * * * *",
        "0 6 * * MON-FRI",
        "0 0 1,15 JAN ?",
        "@daily",
    ] {
        let mut value = base();
        value["spec"]["trigger"] = json!({"availableNow": true});
        value["spec"]["schedule"] = json!(schedule);
        assert_eq!(problems(value), "", "{schedule}");
    }
    expect(
        |v| {
            v["spec"]["trigger"] = json!({"availableNow": true});
            v["spec"]["replicas"] = json!(2);
        },
        &["spec.replicas: spec.replicas must be 0 or 1 with trigger availableNow or once"],
    );
}

#[test]
fn worker_checks() {
    expect(
        |v| v["spec"]["worker"] = json!({"image": " "}),
        &["spec.worker.image: must not be empty when set"],
    );
    expect(
        |v| v["spec"]["worker"] = json!({"terminationGracePeriodSeconds": 2}),
        &["spec.worker.terminationGracePeriodSeconds: must be at least 10, not 2"],
    );
}

#[test]
fn extra_volumes_keep_clear_of_the_operators_and_are_mounted_by_name() {
    let mut good = base();
    good["spec"]["worker"] = json!({
        "volumes": [{"name": "ca", "configMap": {"name": "corporate-ca"}}],
        "volumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corporate", "readOnly": true}]
    });
    assert_eq!(problems(good), "");
    expect(
        |v| {
            v["spec"]["worker"] = json!({
                "volumes": [{"name": "lake", "emptyDir": {}}, {"name": "secret-1", "emptyDir": {}}]
            })
        },
        &[
            "spec.worker.volumes[0].name: \"lake\" is the name of a volume the operator adds",
            "spec.worker.volumes[1].name: \"secret-1\" is the name of a volume the operator adds",
        ],
    );
    expect(
        |v| v["spec"]["worker"] = json!({"volumeMounts": [{"name": "ca", "mountPath": "/ca"}]}),
        &["spec.worker.volumeMounts[0].name: \"ca\" is not one of spec.worker.volumes"],
    );
}

#[test]
fn run_policy_checks() {
    expect(
        |v| v["spec"]["runs"] = json!({"backoffLimit": 2}),
        &[
            "spec.runs: spec.runs sets the retries and history of Jobs and needs trigger availableNow or once",
        ],
    );
    expect(
        |v| {
            v["spec"]["trigger"] = json!({"availableNow": true});
            v["spec"]["runs"] = json!({"backoffLimit": 101, "failedHistory": -1});
        },
        &[
            "spec.runs.backoffLimit: must be at most 100, not 101",
            "spec.runs.failedHistory: must be at least 0, not -1",
        ],
    );
}

#[test]
fn manifests_name_the_document_and_the_problem() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: tributary.dev/v1alpha1\nkind: StreamingIngestion\nmetadata: {name: x}\nspec:\n  source: {kafka: {subscribe: [t]}}\n";
    assert_eq!(
        load_error(text),
        "m.yaml: StreamingIngestion x does not match the API (the API server and kubectl apply --validate=strict refuse it too):\n  \
         line 9: spec.source.kafka.bootstrapServers: required field is missing\n  \
         line 8: spec.checkpoint: required field is missing\n  \
         line 8: spec.format: required field is missing\n  \
         line 8: spec.sink: required field is missing"
    );

    let error =
        tributary_crds::manifest::load_str("apiVersion: v1\nkind: Secret\n", "only-secret.yaml")
            .expect_err("no ingestion")
            .to_string();
    assert!(
        error.contains("only-secret.yaml holds no StreamingIngestion"),
        "{error}"
    );

    let mut invalid = base();
    invalid["spec"]["format"]["json"]["schema"][0]["type"] = json!("strign");
    let yaml = serde_saphyr::to_string(&invalid).expect("yaml");
    let error = tributary_crds::manifest::load_str(&yaml, "typo.yaml")
        .expect_err("invalid")
        .to_string();
    assert!(
        error.contains("typo.yaml: StreamingIngestion sensors is invalid: spec.format.json.schema[0].type: unknown type \"strign\""),
        "{error}"
    );
}

// ---- manifests as `run -f` and `render -f` read them ----------------------------------------

/// A valid manifest; line 9 is the first after the Kafka source's fields.
const MANIFEST: &str = "\
apiVersion: tributary.dev/v1alpha1
kind: StreamingIngestion
metadata: {name: sensors, namespace: iot}
spec:
  source:
    kafka:
      bootstrapServers: 127.0.0.1:9092
      subscribe: [sensor-readings]
  format:
    json:
      schema:
        - {name: device_id, type: string}
  sink:
    delta: {uri: /lake/t, volume: {claimName: lake}}
  checkpoint: {location: /checkpoints/t, volume: {size: 1Gi}}
";

/// MANIFEST with `kafka` lines added after line 8 and `spec` lines at its end.
fn manifest(kafka: &str, spec: &str) -> String {
    MANIFEST.replace("  format:\n", &format!("{kafka}  format:\n")) + spec
}

fn load_error(text: &str) -> String {
    tributary_crds::manifest::load_str(text, "m.yaml")
        .expect_err("the manifest is refused")
        .to_string()
}

const SCHEMA_HEADER: &str = "m.yaml: StreamingIngestion sensors does not match the API (the API server and kubectl apply --validate=strict refuse it too):";

#[test]
fn the_manifest_loads() {
    let loaded = tributary_crds::manifest::load_str(MANIFEST, "m.yaml").expect("valid");
    assert_eq!(loaded.len(), 1);
    // Quantities may be numbers, as in any Kubernetes manifest.
    let text = manifest(
        "",
        "  worker:\n    resources: {limits: {cpu: 1, memory: 512Mi}}\n",
    );
    let loaded = tributary_crds::manifest::load_str(&text, "m.yaml").expect("valid");
    let limits = loaded[0]
        .spec
        .worker
        .as_ref()
        .and_then(|w| w.resources.as_ref())
        .and_then(|r| r.limits.as_ref())
        .expect("limits");
    assert_eq!(limits["cpu"].0, "1");
    assert_eq!(
        loaded[0]
            .spec
            .source
            .kafka
            .as_ref()
            .map(|k| k.bootstrap_servers.as_str()),
        Some("127.0.0.1:9092")
    );
}

#[test]
fn misspelt_fields_are_refused_with_the_nearest_known_name() {
    assert_eq!(
        load_error(&manifest("      startingOffset: earliest\n", "")),
        format!(
            "{SCHEMA_HEADER}\n  line 9: spec.source.kafka.startingOffset: unknown field; did you mean startingOffsets?"
        )
    );
    let text = manifest(
        "      maxOffsetPerTrigger: 100\n",
        "  trigger: {procesingTime: 10s}\n",
    )
    .replace("      schema:\n", "      onErorr: fail\n      schema:\n")
    .replace(
        "metadata: {name: sensors,",
        "metadata: {nmae: x, name: sensors,",
    );
    assert_eq!(
        load_error(&text),
        format!(
            "{SCHEMA_HEADER}\n  \
             line 3: metadata.nmae: unknown field; did you mean name?\n  \
             line 9: spec.source.kafka.maxOffsetPerTrigger: unknown field; did you mean maxOffsetsPerTrigger?\n  \
             line 12: spec.format.json.onErorr: unknown field; did you mean onError?\n  \
             line 18: spec.trigger.procesingTime: unknown field; did you mean processingTime?"
        )
    );
    // Spark's option names, where Tributary has its own field.
    assert_eq!(
        load_error(&manifest("      kafka.bootstrap.servers: b:9092\n", "")),
        format!(
            "{SCHEMA_HEADER}\n  line 9: spec.source.kafka.kafka.bootstrap.servers: unknown field; did you mean bootstrapServers?"
        )
    );
    // Nothing near: the known names are listed.
    assert_eq!(
        load_error(&manifest("", "  workr: {}\n  x: 1\n")),
        format!(
            "{SCHEMA_HEADER}\n  \
             line 16: spec.workr: unknown field; did you mean worker?\n  \
             line 17: spec.x: unknown field (known fields here: autoscaling, checkpoint, format, maxRestarts, metadataColumns, replicas, reset, runs, schedule, sink, source, suspend, trigger, worker)"
        )
    );
    // Inside Kubernetes' own types too.
    assert_eq!(
        load_error(&manifest(
            "",
            "  worker:\n    resources: {limit: {cpu: 1}}\n    env: [{name: A, vaule: b}]\n"
        )),
        format!(
            "{SCHEMA_HEADER}\n  \
             line 17: spec.worker.resources.limit: unknown field; did you mean limits?\n  \
             line 18: spec.worker.env[0].vaule: unknown field; did you mean value?"
        )
    );
}

#[test]
fn event_hubs_fields_are_checked_through_the_shared_read_options() {
    let text = MANIFEST.replace(
        "    kafka:\n      bootstrapServers: 127.0.0.1:9092\n      subscribe: [sensor-readings]\n",
        "    eventHubs:\n      namespace: contoso\n      eventHub: sensor-readings\n      connectionString: {secretKeyRef: {name: eh, key: cs}}\n      failOnDataloss: false\n",
    );
    assert_eq!(
        load_error(&text),
        format!(
            "{SCHEMA_HEADER}\n  line 10: spec.source.eventHubs.failOnDataloss: unknown field; did you mean failOnDataLoss?"
        )
    );
}

#[test]
fn values_of_the_wrong_type_or_out_of_bounds_are_refused_with_their_field() {
    assert_eq!(
        load_error(&manifest(
            "      maxOffsetsPerTrigger: 99999999999999999999\n      options: {fetch.max.bytes: 1048576}\n",
            "  replicas: 5000\n  suspend: \"yes\"\n"
        )),
        format!(
            "{SCHEMA_HEADER}\n  \
             line 9: spec.source.kafka.maxOffsetsPerTrigger: must be at most 9007199254740991, not 1e20\n  \
             line 10: spec.source.kafka.options[fetch.max.bytes]: must be a string, not an integer (put the value in quotes)\n  \
             line 18: spec.replicas: must be at most 1000, not 5000\n  \
             line 19: spec.suspend: must be a boolean (true or false), not a string"
        )
    );
    assert_eq!(
        load_error(&MANIFEST.replace("subscribe: [sensor-readings]", "subscribe: sensor-readings")),
        format!(
            "{SCHEMA_HEADER}\n  line 8: spec.source.kafka.subscribe: must be a list, not a string"
        )
    );
    assert_eq!(
        load_error(&MANIFEST.replace("      schema:\n", "      onError: faill\n      schema:\n")),
        format!(
            "{SCHEMA_HEADER}\n  line 11: spec.format.json.onError: \"faill\" is not one of rescue, deadLetter, fail; did you mean fail?"
        )
    );
}

#[test]
fn durations_out_of_bounds_are_refused_not_panicking_or_wrapping() {
    for (interval, shown) in [
        ("99999999999999999999h", "99999999999999999999h"),
        ("18446744073709551615 days", "18446744073709551615 days"),
        ("213503982334602 days", "213503982334602 days"),
        ("25h", "25h"),
    ] {
        let text = manifest(
            "",
            &format!("  trigger: {{processingTime: \"{interval}\"}}\n"),
        );
        assert_eq!(
            load_error(&text),
            format!(
                "m.yaml: StreamingIngestion sensors is invalid: spec.trigger.processingTime: processingTime must be at most 24h (\"1 day\"); for rarer runs use trigger {{availableNow: true}} with a spec.schedule, not \"{shown}\""
            )
        );
    }
    let text = manifest("", "  trigger: {processingTime: 1 day}\n");
    let loaded = tributary_crds::manifest::load_str(&text, "m.yaml").expect("a day is allowed");
    assert_eq!(
        loaded[0].spec.trigger_kind(),
        Ok(tributary_crds::TriggerKind::ProcessingTime(
            std::time::Duration::from_secs(86_400)
        ))
    );
}

#[test]
fn numbers_are_bounded_in_validation() {
    expect(
        |v| v["spec"]["source"]["kafka"]["maxOffsetsPerTrigger"] = json!(i64::MAX),
        &[
            "spec.source.kafka.maxOffsetsPerTrigger: must be at most 9007199254740991, not 9223372036854775807",
        ],
    );
    expect(
        |v| {
            v["spec"]["source"]["kafka"]["startingOffsets"] =
                json!(r#"{"sensor-readings":{"0":9223372036854775807}}"#)
        },
        &[
            "spec.source.kafka.startingOffsets: offset 9223372036854775807 for sensor-readings-0 is above 9007199254740991, the largest offset a spec may name",
        ],
    );
    expect(
        |v| v["spec"]["replicas"] = json!(1001),
        &["spec.replicas: must be at most 1000, not 1001"],
    );
    expect(
        |v| v["spec"]["replicas"] = json!(-1),
        &["spec.replicas: must be at least 0, not -1"],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"]["targetFileSize"] = json!(i64::MAX);
            v["spec"]["sink"]["delta"]["checkpointInterval"] = json!(0);
            v["spec"]["worker"] = json!({"metricsPort": 80});
        },
        &[
            "spec.sink.delta.targetFileSize: must be at most 4294967296, not 9223372036854775807",
            "spec.sink.delta.checkpointInterval: must be at least 1, not 0",
            "spec.worker.metricsPort: must be at least 1024, not 80",
        ],
    );
}

#[test]
fn credentials_in_options_are_refused_with_the_secret_options_form_and_never_shown() {
    let text = manifest(
        "      options:\n        kafka.sasl.jaas.config: 'org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"hunter2\";'\n        ssl.key.password: hunter2\n        sasl.oauthbearer.config: clientSecret=hunter2\n",
        "",
    );
    let error = load_error(&text);
    assert_eq!(
        error,
        "m.yaml: StreamingIngestion sensors is invalid: \
         spec.source.kafka.options[kafka.sasl.jaas.config]: carries a credential, which must never be written in options (it would be stored and shown in plain text); sasl.jaas.config is the Java client's; librdkafka takes the user in options and the password from a Secret: options: {sasl.username: <user>} and secretOptions: {sasl.password: {secretKeyRef: {name: <secret>, key: <key>}}}; \
         spec.source.kafka.options[sasl.oauthbearer.config]: carries a credential, which must never be written in options (it would be stored and shown in plain text); read it from a Secret instead: secretOptions: {sasl.oauthbearer.config: {secretKeyRef: {name: <secret>, key: <key>}}}; \
         spec.source.kafka.options[ssl.key.password]: carries a credential, which must never be written in options (it would be stored and shown in plain text); read it from a Secret instead: secretOptions: {ssl.key.password: {secretKeyRef: {name: <secret>, key: <key>}}}"
    );
    assert!(!error.contains("hunter2"), "{error}");

    let ingestion: StreamingIngestion = serde_saphyr::from_str(&text).expect("parses");
    let shown = format!("{ingestion:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("\"ssl.key.password\": \"<redacted>\""),
        "{shown}"
    );

    let hubs = MANIFEST.replace(
        "    kafka:\n      bootstrapServers: 127.0.0.1:9092\n      subscribe: [sensor-readings]\n",
        "    eventHubs:\n      namespace: contoso\n      eventHub: sensor-readings\n      connectionString: {secretKeyRef: {name: eh, key: cs}}\n      options: {sasl.password: hunter2}\n",
    );
    assert_eq!(
        load_error(&hubs),
        "m.yaml: StreamingIngestion sensors is invalid: spec.source.eventHubs.options[sasl.password]: carries a credential, which must never be written in options (it would be stored and shown in plain text): Event Hubs signs in with the connection string from the Secret named in spec.source.eventHubs.connectionString.secretKeyRef"
    );
}

#[test]
fn oversized_and_deeply_nested_manifests_are_refused_at_once() {
    let started = std::time::Instant::now();
    let deep_flow = format!(
        "{}\nx: {}{}\n",
        MANIFEST,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        load_error(&deep_flow.replace("\nx:", "\n---\nx:")),
        "m.yaml: document 2, line 18: nests mappings and lists deeper than 32 levels; a StreamingIngestion needs about 12"
    );
    let oversized = MANIFEST.to_string() + &"#".repeat(1_000_001 - MANIFEST.len());
    assert_eq!(
        load_error(&oversized),
        "m.yaml is more than 1000000 bytes; a manifest may hold at most 1,000,000 bytes: the operator hands it to the workers in a ConfigMap, which the API server limits to 1 MiB"
    );
    let deep_block: String = (0..1000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    assert_eq!(
        load_error(&deep_block),
        "m.yaml: document 1, line 33: nests mappings and lists deeper than 32 levels; a StreamingIngestion needs about 12"
    );

    // 11.5 MB read from a file stops at the bound.
    let dir = std::env::temp_dir().join(format!("tributary-crds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let big = dir.join("big.yaml");
    let padding = format!("# {}\n", "x".repeat(1000));
    std::fs::write(&big, MANIFEST.to_string() + &padding.repeat(11_500)).expect("writes");
    let error = tributary_crds::manifest::load_file(&big)
        .expect_err("too large")
        .to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(
        error,
        format!(
            "{} is more than 1000000 bytes; a manifest may hold at most 1,000,000 bytes: the operator hands it to the workers in a ConfigMap, which the API server limits to 1 MiB",
            big.display()
        )
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "refusing took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_spec_too_large_for_the_workers_configmap_is_invalid() {
    let mut value = base();
    value["spec"]["format"]["json"]["schema"] = json!(
        (0..1000)
            .map(|i| json!({"name": format!("c{i}"), "type": "string", "description": "d".repeat(1100)}))
            .collect::<Vec<_>>()
    );
    let found = problems(value);
    assert!(
        found.starts_with("spec: is 1") && found.ends_with(" bytes as the workers' manifest; a manifest may hold at most 1,000,000 bytes: the operator hands it to the workers in a ConfigMap, which the API server limits to 1 MiB"),
        "{found}"
    );
}

#[test]
fn yaml_errors_name_the_line_and_the_field() {
    assert_eq!(
        load_error(&manifest("      subscribe: [again]\n", "")),
        "m.yaml: document 1, line 9: duplicate mapping key `subscribe` is not allowed here"
    );
    assert_eq!(
        load_error(
            &("a: 1\n---\n".to_string()
                + &MANIFEST.replace(
                    "kind: StreamingIngestion",
                    "kind: StreamingIngestion\n  bad indent: x"
                ))
        ),
        "m.yaml: document 2, line 5: mapping values are not allowed in this context"
    );
    assert_eq!(
        load_error(&MANIFEST.replace("v1alpha1", "v1")),
        "m.yaml: document 1 is a StreamingIngestion of apiVersion tributary.dev/v1, which this version of Tributary does not know (use tributary.dev/v1alpha1)"
    );
}

// ---- nothing a user writes panics ----------------------------------------------------------

mod never_panics {
    use proptest::prelude::*;
    use serde_json::json;
    use tributary_crds::{StreamingIngestion, parse_duration, validate};

    use super::{MANIFEST, base};

    fn durations() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9.]{0,40}(ms|s|m|h)?([0-9.]{0,25}(ms|s|m|h))?",
            "[0-9]{0,30} ?(milliseconds?|seconds?|minutes?|hours?|days?)",
        ]
    }

    proptest! {
        #[test]
        fn the_duration_parser_never_panics_and_keeps_its_bound(text in durations()) {
            if let Ok(duration) = parse_duration(&text) {
                prop_assert!(duration <= tributary_crds::limits::MAX_PROCESSING_TIME);
            }
        }

        #[test]
        fn validate_never_panics(
            interval in durations(),
            max_offsets in any::<i64>(),
            replicas in any::<i32>(),
            file_size in any::<i64>(),
            interval_commits in any::<i32>(),
            port in any::<i32>(),
            offset in any::<i64>(),
            partition in any::<i32>(),
            text in any::<String>(),
            option in "[a-z._]{0,24}",
        ) {
            let mut value = base();
            value["spec"]["trigger"] = json!({"processingTime": interval});
            value["spec"]["replicas"] = json!(replicas);
            value["spec"]["worker"] = json!({"metricsPort": port, "image": text.clone()});
            let kafka = &mut value["spec"]["source"]["kafka"];
            kafka["maxOffsetsPerTrigger"] = json!(max_offsets);
            kafka["startingOffsets"] =
                json!(format!("{{\"sensor-readings\":{{\"{partition}\":{offset}}}}}"));
            kafka["options"] = json!({option: text.clone()});
            kafka["subscribePattern"] = json!(text.clone());
            let delta = &mut value["spec"]["sink"]["delta"];
            delta["targetFileSize"] = json!(file_size);
            delta["checkpointInterval"] = json!(interval_commits);
            delta["partitionBy"] = json!([text.clone()]);
            value["spec"]["format"]["json"]["schema"][0]["type"] = json!(text.clone());
            value["spec"]["schedule"] = json!(text.clone());
            value["spec"]["checkpoint"]["location"] = json!(text);
            let ingestion: StreamingIngestion =
                serde_json::from_value(value).expect("the shape is right");
            let _ = validate(&ingestion);
            let _ = ingestion.spec.trigger_kind();
        }

        #[test]
        fn loading_never_panics(text in any::<String>(), at in 0usize..700) {
            let _ = tributary_crds::manifest::load_str(&text, "fuzz.yaml");
            let mut cut = at.min(MANIFEST.len());
            while !MANIFEST.is_char_boundary(cut) {
                cut -= 1;
            }
            let spliced = format!("{}{}{}", &MANIFEST[..cut], text, &MANIFEST[cut..]);
            let _ = tributary_crds::manifest::load_str(&spliced, "fuzz.yaml");
        }
    }
}

fn unity_catalog_sink() -> Value {
    json!({
        "table": "main.bronze.sensor_readings",
        "unityCatalog": {
            "endpoint": "http://127.0.0.1:8080",
            "token": {"secretKeyRef": {"name": "uc", "key": "token"}}
        }
    })
}

#[test]
fn unity_catalog_checks() {
    let valid = |sink: Value| {
        let mut value = base();
        value["spec"]["sink"]["delta"] = sink;
        assert_eq!(problems(value), "");
    };
    valid(unity_catalog_sink());
    let mut with_root = unity_catalog_sink();
    with_root["unityCatalog"]["storageRoot"] = json!("file:///lake/tables");
    valid(with_root);

    expect(
        |v| {
            v["spec"]["sink"]["delta"] = unity_catalog_sink();
            v["spec"]["sink"]["delta"]["unityCatalog"]["oauth"] = json!({
                "clientId": {"secretKeyRef": {"name": "sp", "key": "client-id"}},
                "clientSecret": {"secretKeyRef": {"name": "sp", "key": "client_secret!"}},
                "tokenEndpoint": "login.example/token"
            });
        },
        &[
            "spec.sink.delta.unityCatalog: spec.sink.delta.unityCatalog needs exactly one of token (a personal access token) or oauth (a service principal's client id and secret)",
            "spec.sink.delta.unityCatalog.oauth.tokenEndpoint: \"login.example/token\" is not an http(s) URL",
            "spec.sink.delta.unityCatalog.oauth.clientSecret",
        ],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"] = unity_catalog_sink();
            v["spec"]["sink"]["delta"]["unityCatalog"]["storageRoot"] = json!("s3://bucket/tables");
            v["spec"]["sink"]["delta"]["unityCatalog"]["tableMustExist"] = json!(true);
        },
        &[
            "spec.sink.delta.unityCatalog.storageRoot: s3:// is not supported by this build",
            "spec.sink.delta.unityCatalog: spec.sink.delta.unityCatalog.storageRoot is where an absent table is created, and tableMustExist says never to create one: set one of them",
        ],
    );
    expect(
        |v| {
            v["spec"]["sink"]["delta"]["unityCatalog"] =
                unity_catalog_sink()["unityCatalog"].clone();
        },
        &[
            "spec.sink.delta.unityCatalog: spec.sink.delta.unityCatalog resolves spec.sink.delta.table and is only used with it",
        ],
    );
}

#[test]
fn raw_format_checks() {
    let mut raw = base();
    raw["spec"]["format"] = json!({"raw": {"valueType": "string"}});
    raw["spec"]["metadataColumns"] = json!(["topic", "offset"]);
    raw["spec"]["sink"]["delta"]["partitionBy"] = json!(["kafka_topic"]);
    assert_eq!(problems(raw), "");
    expect(
        |v| {
            v["spec"]["format"]["raw"] = json!({});
        },
        &[
            "spec.format: spec.format must set exactly one of json (parse values against a schema) or raw",
        ],
    );
    expect(
        |v| {
            v["spec"]["format"] = json!({});
        },
        &["spec.format: spec.format must set exactly one of json"],
    );
    expect(
        |v| {
            v["spec"]["format"] = json!({"raw": {}});
            v["spec"]["sink"]["delta"]["partitionBy"] = json!(["device_id"]);
        },
        &["spec.sink.delta.partitionBy[0]"],
    );
}
