//! Decoding against every Spark type, each onError mode and malformed input.

use super::*;
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{Float64Type, Int8Type, Int16Type, TimestampMicrosecondType};
use tributary_crds::SchemaField;

fn record(offset: i64, value: &[u8]) -> Record {
    Record {
        topic: "t".into(),
        partition: 0,
        offset,
        timestamp_ms: Some(1_700_000_000_000),
        timestamp_type: 0,
        key: Some(b"k".to_vec()),
        headers: vec![("h".into(), Some(b"v".to_vec()))],
        value: Some(value.to_vec()),
    }
}

fn every_type() -> JsonFormat {
    let field = |name: &str, data_type: &str| SchemaField {
        name: name.into(),
        data_type: data_type.into(),
        ..Default::default()
    };
    JsonFormat {
        schema: vec![
            field("s", "string"),
            field("b", "boolean"),
            field("y", "byte"),
            field("sh", "short"),
            field("i", "int"),
            field("l", "long"),
            field("f", "float"),
            field("d", "double"),
            field("dec", "decimal(10,2)"),
            field("dt", "date"),
            field("ts", "timestamp"),
            field("ntz", "timestamp_ntz"),
            field("bin", "binary"),
            field("arr", "array<int>"),
            field("m", "map<string,double>"),
            field("st", "struct<lat:double,lon:double>"),
        ],
        ..Default::default()
    }
}

const FULL: &str = r#"{"s":"x","b":true,"y":-3,"sh":300,"i":7,"l":9000000000,"f":1.5,"d":2.25,"dec":"12.34","dt":"2026-01-02","ts":"2026-01-02T03:04:05Z","ntz":"2026-01-02T03:04:05","bin":"cafe","arr":[1,2],"m":{"a":1.0},"st":{"lat":52.1,"lon":4.3}}"#;

#[test]
fn every_spark_type_decodes_into_its_arrow_type_with_metadata_columns() {
    let decoder = JsonDecoder::new(&every_type(), &MetadataColumn::ALL).expect("decoder");
    let decoded = decoder
        .decode(&[record(0, FULL.as_bytes())])
        .expect("decode");
    let batch = decoded.batch;
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(decoded.rescued_rows, 0);
    assert_eq!(
        batch
            .column_by_name("s")
            .expect("s")
            .as_string::<i32>()
            .value(0),
        "x"
    );
    assert_eq!(
        batch
            .column_by_name("y")
            .expect("y")
            .as_primitive::<Int8Type>()
            .value(0),
        -3
    );
    assert_eq!(
        batch
            .column_by_name("sh")
            .expect("sh")
            .as_primitive::<Int16Type>()
            .value(0),
        300
    );
    assert_eq!(
        batch
            .column_by_name("d")
            .expect("d")
            .as_primitive::<Float64Type>()
            .value(0),
        2.25
    );
    assert_eq!(
        batch
            .column_by_name("ts")
            .expect("ts")
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_767_323_045_000_000
    );
    assert_eq!(
        batch
            .column_by_name("arr")
            .expect("arr")
            .as_list::<i32>()
            .value(0)
            .len(),
        2
    );
    assert!(batch.column_by_name("st").expect("st").is_valid(0));
    assert_eq!(
        batch
            .column_by_name("kafka_key")
            .expect("key")
            .as_binary::<i32>()
            .value(0),
        b"k"
    );
    assert_eq!(
        batch
            .column_by_name("kafka_headers")
            .expect("headers")
            .as_list::<i32>()
            .value(0)
            .len(),
        1
    );
    assert!(
        batch
            .column_by_name(RESCUED_DATA_COLUMN)
            .expect("rescued")
            .is_null(0)
    );
    // The table schema converts to Delta's types.
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    let kernel: deltalake::kernel::StructType = decoder
        .table_schema()
        .as_ref()
        .try_into_kernel()
        .expect("delta schema");
    assert_eq!(kernel.fields().count(), 16 + 7 + 1);
}

#[test]
fn a_wrong_typed_nested_field_is_rescued_alone() {
    let decoder = JsonDecoder::new(&every_type(), &[]).expect("decoder");
    let bad = FULL.replace(r#""arr":[1,2]"#, r#""arr":["one"]"#);
    let decoded = decoder
        .decode(&[record(0, FULL.as_bytes()), record(1, bad.as_bytes())])
        .expect("decode");
    assert_eq!(decoded.batch.num_rows(), 2);
    let rescued = decoded
        .batch
        .column_by_name(RESCUED_DATA_COLUMN)
        .expect("rescued");
    assert!(rescued.is_null(0));
    assert_eq!(rescued.as_string::<i32>().value(1), r#"{"arr":["one"]}"#);
    assert_eq!(
        decoded
            .batch
            .column_by_name("s")
            .expect("s")
            .as_string::<i32>()
            .value(1),
        "x"
    );
}

#[test]
fn an_every_type_table_is_created_and_appended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let decoder = JsonDecoder::new(&every_type(), &MetadataColumn::ALL).expect("decoder");
    let batch = decoder
        .decode(&[record(0, FULL.as_bytes())])
        .expect("decode")
        .batch;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let location = dir.path().join("t").display().to_string();
    let outcome = runtime.block_on(async {
        let mut sink = crate::sink::DeltaSink::open_or_create(
            &location,
            Default::default(),
            decoder.table_schema(),
            vec![],
            10,
            None,
            "test",
        )
        .await
        .expect("create");
        sink.commit(
            Some(&batch),
            &[crate::sink::TxnUpdate {
                app_id: "a".into(),
                expected: None,
                version: 1,
            }],
            Default::default(),
        )
        .await
        .expect("commit")
    });
    assert!(
        matches!(
            outcome,
            crate::sink::CommitOutcome::Committed {
                version: 1,
                files: 1,
                retries: 0
            }
        ),
        "{outcome:?}"
    );
    // Moving an offset backwards is refused by the worker, whatever delta-rs accepts.
    let again = runtime.block_on(async {
        let mut sink = crate::sink::DeltaSink::open_or_create(
            &location,
            Default::default(),
            decoder.table_schema(),
            vec![],
            10,
            None,
            "test",
        )
        .await
        .expect("open");
        sink.commit(
            None,
            &[crate::sink::TxnUpdate {
                app_id: "a".into(),
                expected: Some(1),
                version: 0,
            }],
            Default::default(),
        )
        .await
        .expect("commit")
    });
    assert!(
        matches!(again, crate::sink::CommitOutcome::Conflict(_)),
        "{again:?}"
    );
}
