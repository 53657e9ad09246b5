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
                "sasl.password": "x",
                "kafka.security.protocol": "SASL_SSL",
                "client.id": ""
            })
        },
        &[
            "spec.source.kafka.options[auto.offset.reset]: options must not set auto.offset.reset",
            "spec.source.kafka.options[sasl.password]: secret options",
            "spec.source.kafka.options[kafka.security.protocol]: write librdkafka names without Spark's kafka. prefix: \"security.protocol\"",
            "spec.source.kafka.options[client.id]: has an empty value",
        ],
    );
    expect(
        |v| {
            v["spec"]["source"]["kafka"]["options"] = json!({"sasl.username": "u"});
            v["spec"]["source"]["kafka"]["secretOptions"] = json!({
                "sasl.username": {"secretKeyRef": {"name": "creds", "key": "user"}},
                "group.id": {"secretKeyRef": {"name": "Bad_Name", "key": "k/k"}}
            });
        },
        &[
            "spec.source.kafka.secretOptions[sasl.username]: is also set in options",
            "spec.source.kafka.secretOptions[group.id].secretKeyRef.name: \"Bad_Name\" is not a valid Secret name",
            "spec.source.kafka.secretOptions[group.id].secretKeyRef.key: \"k/k\" is not a valid Secret key",
        ],
    );
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
}

#[test]
fn manifests_name_the_document_and_the_problem() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\napiVersion: tributary.dev/v1alpha1\nkind: StreamingIngestion\nmetadata: {name: x}\nspec:\n  source: {kafka: {subscribe: [t]}}\n";
    let error = tributary_crds::manifest::load_str(text, "bad.yaml")
        .expect_err("missing fields")
        .to_string();
    assert!(
        error.starts_with("bad.yaml: document 2 (starting at line 5)"),
        "{error}"
    );
    assert!(error.contains("bootstrapServers"), "{error}");

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
    let yaml = serde_yaml::to_string(&invalid).expect("yaml");
    let error = tributary_crds::manifest::load_str(&yaml, "typo.yaml")
        .expect_err("invalid")
        .to_string();
    assert!(
        error.contains("typo.yaml: StreamingIngestion sensors is invalid: spec.format.json.schema[0].type: unknown type \"strign\""),
        "{error}"
    );
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
