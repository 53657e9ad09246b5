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
        key: Some(b"k".to_vec().into()),
        headers: vec![("h".into(), Some(b"v".to_vec()))],
        value: Some(value.to_vec().into()),
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
    let batch = decoded.batch();
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
    assert_eq!(decoded.batch().num_rows(), 2);
    let rescued = decoded
        .batch()
        .column_by_name(RESCUED_DATA_COLUMN)
        .expect("rescued");
    assert!(rescued.is_null(0));
    assert_eq!(rescued.as_string::<i32>().value(1), r#"{"arr":["one"]}"#);
    assert_eq!(
        decoded
            .batch()
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
        .batch()
        .clone();
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
            std::slice::from_ref(&batch),
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
                retries: 0,
                ..
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
            &[],
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

/// Decodes `{"c": <json>}` against one column of `data_type` in rescue mode: the cell as text
/// (None when null) and whether the record was rescued.
fn one(data_type: &str, json: &str) -> (Option<String>, bool) {
    let format = JsonFormat {
        schema: vec![SchemaField {
            name: "c".into(),
            data_type: data_type.into(),
            ..Default::default()
        }],
        on_error: Some(OnError::Rescue),
        ..Default::default()
    };
    let decoder = JsonDecoder::new(&format, &[]).expect("decoder");
    let value = format!(r#"{{"c":{json}}}"#);
    let batch = decoder
        .decode(&[record(0, value.as_bytes())])
        .expect("decode")
        .batch()
        .clone();
    let column = batch.column_by_name("c").expect("c");
    let cell = column.is_valid(0).then(|| {
        deltalake::arrow::util::display::array_value_to_string(column, 0).expect("display")
    });
    let rescued = batch
        .column_by_name(RESCUED_DATA_COLUMN)
        .expect("rescued")
        .is_valid(0);
    (cell, rescued)
}

/// The value Spark reads, not rescued.
fn reads(data_type: &str, json: &str, expected: &str) {
    assert_eq!(
        one(data_type, json),
        (Some(expected.to_string()), false),
        "{json} into {data_type}"
    );
}

/// Not read: the cell is null and the record rescued.
fn rescued(data_type: &str, json: &str) {
    assert_eq!(
        one(data_type, json),
        (None, true),
        "{json} into {data_type}"
    );
}

#[test]
fn a_fraction_or_exponent_or_string_is_not_read_into_an_integer_column() {
    reads("int", "7", "7");
    reads("int", "-0", "0");
    for json in ["1.9", "1.0", "1e2", r#""1""#, "true", r#""""#] {
        rescued("int", json);
        rescued("long", json);
    }
}

#[test]
fn integers_past_the_columns_range_are_rescued_not_wrapped() {
    reads("int", "2147483647", "2147483647");
    rescued("int", "2147483648");
    reads("long", "-9223372036854775808", "-9223372036854775808");
    rescued("long", "9223372036854775808");
    reads("short", "-32768", "-32768");
    rescued("short", "32768");
    reads("byte", "127", "127");
    // Jackson reads 128..=255 into a byte as -128..=-1; that wrap is refused.
    rescued("byte", "200");
    rescued("byte", "-129");
}

#[test]
fn a_timestamp_number_is_whole_seconds_since_the_epoch() {
    reads("timestamp", "1700000000", "2023-11-14T22:13:20Z");
    reads("timestamp", "-1", "1969-12-31T23:59:59Z");
    // Spark reads no fraction; and its multiplication by 10^6 would overflow past this.
    rescued("timestamp", "1700000000.5");
    rescued("timestamp", "9223372036855");
}

#[test]
fn timestamp_strings_follow_sparks_cast_with_utc_for_a_missing_zone() {
    reads(
        "timestamp",
        r#""2026-01-02T03:04:05Z""#,
        "2026-01-02T03:04:05Z",
    );
    reads(
        "timestamp",
        r#""2026-01-02 03:04:05""#,
        "2026-01-02T03:04:05Z",
    );
    reads(
        "timestamp",
        r#""2026-01-02T03:04:05+01:00""#,
        "2026-01-02T02:04:05Z",
    );
    reads(
        "timestamp",
        r#""2026-01-02T03:04:05-0530""#,
        "2026-01-02T08:34:05Z",
    );
    reads(
        "timestamp",
        r#""2026-01-02T03:04:05 GMT+1""#,
        "2026-01-02T02:04:05Z",
    );
    reads("timestamp", r#""2026-01-02""#, "2026-01-02T00:00:00Z");
    reads("timestamp", r#""2026""#, "2026-01-01T00:00:00Z");
    // One to nine digits of fraction; past six they are cut off, not rounded.
    reads(
        "timestamp",
        r#""2026-01-02T03:04:05.1Z""#,
        "2026-01-02T03:04:05.100Z",
    );
    reads(
        "timestamp",
        r#""2026-01-02T03:04:05.999999999Z""#,
        "2026-01-02T03:04:05.999999Z",
    );
    // Spark refuses a zone after minutes, hour 24, an offset past 18 hours.
    rescued("timestamp", r#""2026-01-02T03:04Z""#);
    rescued("timestamp", r#""2026-01-02T24:00:00Z""#);
    rescued("timestamp", r#""2026-01-02T03:04:05+19:00""#);
    // Spark reads zone names and a time alone (as today's): not reproduced, so rescued.
    rescued("timestamp", r#""2026-01-02T03:04:05 Europe/Paris""#);
    rescued("timestamp", r#""03:04:05""#);
}

#[test]
fn a_timestamp_ntz_refuses_a_zone_and_a_number() {
    reads(
        "timestamp_ntz",
        r#""2026-01-02T03:04:05.5""#,
        "2026-01-02T03:04:05.500",
    );
    rescued("timestamp_ntz", r#""2026-01-02T03:04:05Z""#);
    rescued("timestamp_ntz", "1700000000");
}

#[test]
fn dates_follow_sparks_cast_and_its_day_number_fallback() {
    reads("date", r#""2026-01-02""#, "2026-01-02");
    reads("date", r#""2026-1-2""#, "2026-01-02");
    reads("date", r#""2026-01""#, "2026-01-01");
    reads("date", r#""2026-01-02T03:04:05Z""#, "2026-01-02");
    reads("date", r#""123""#, "1970-05-04");
    rescued("date", r#""2023-02-29""#);
    rescued("date", r#""2026/01/02""#);
    rescued("date", "20000");
}

#[test]
fn decimals_round_half_up_and_overflow_is_rescued() {
    reads("decimal(10,2)", "1.239", "1.24");
    reads("decimal(10,2)", "1.235", "1.24");
    reads("decimal(10,2)", "-1.235", "-1.24");
    reads("decimal(10,2)", r#""1,234.5""#, "1234.50");
    reads("decimal(10,2)", "1e2", "100.00");
    rescued("decimal(10,2)", "99999999.995");
    rescued("decimal(10,2)", r#"" 1.5""#);
    rescued("decimal(10,2)", "NaN");
}

#[test]
fn binary_is_base64() {
    reads("binary", r#""cafe""#, "71a7de");
    reads("binary", r#""YQ==""#, "61");
    reads("binary", r#""""#, "");
    rescued("binary", r#""YQ""#);
    rescued("binary", "1");
}

#[test]
fn floats_read_nan_and_infinity_tokens_and_strings_and_round_once() {
    reads("double", "NaN", "NaN");
    reads("double", r#""-INF""#, "-inf");
    reads("double", "1e400", "inf");
    reads("double", "-0.0", "-0.0");
    reads("float", "-0", "0.0");
    // Nearest float to the decimal text, not to the double nearest to it.
    reads("float", "1.00000005960464485", "1.0000001");
    rescued("double", r#""1.5""#);
    rescued("double", r#""nan""#);
}

#[test]
fn booleans_are_only_true_and_false() {
    reads("boolean", "true", "true");
    rescued("boolean", r#""true""#);
    rescued("boolean", "1");
}

#[test]
fn a_non_string_into_a_string_column_is_its_json_text_as_jackson_writes_it() {
    reads("string", "1e5", "100000.0");
    reads("string", "-1.50", "-1.5");
    reads(
        "string",
        r#"{ "a" : [1, 2.50, "x"] }"#,
        r#"{"a":[1,2.5,"x"]}"#,
    );
    reads("string", "[NaN]", r#"["NaN"]"#);
    reads(
        "string",
        "12345678901234567890123",
        "12345678901234567890123",
    );
    // Java 17 prints 9.999999999999999E22, Java 21 1.0E23: Spark's answer depends on its JVM.
    rescued("string", "1.0E23");
    rescued("string", "4.9e-324");
    reads("string", "true", "true");
}

#[test]
fn field_names_match_exactly_and_nested_unknown_fields_are_skipped() {
    reads("struct<lat:double>", r#"{"lat":1,"extra":2}"#, "{lat: 1.0}");
    reads("struct<lat:double>", r#"{"LAT":1}"#, "{lat: }");
    rescued("struct<lat:double>", r#"{"lat":1,"lat":2}"#);
    rescued("map<string,int>", r#"{"a":1,"a":2}"#);
}

#[test]
fn a_name_twice_at_the_top_refuses_the_record_in_any_order_and_whatever_the_name() {
    let field = |name: &str| SchemaField {
        name: name.into(),
        data_type: "int".into(),
        ..Default::default()
    };
    let format = JsonFormat {
        schema: vec![field("a"), field("b"), field("c")],
        on_error: Some(OnError::DeadLetter),
        ..Default::default()
    };
    let decoder = JsonDecoder::new(&format, &[]).expect("decoder");
    let values: [&[u8]; 6] = [
        br#"{"a":1,"b":2,"c":3}"#,
        // Out of the schema's order, with a name it does not have: read.
        br#"{"c":3,"x":0,"a":1}"#,
        br#"{"a":1,"b":2,"a":3}"#,
        br#"{"c":1,"b":2,"c":3}"#,
        // Names not in the schema count too (the rescued data would hold both).
        br#"{"x":1,"a":2,"x":3}"#,
        // A null does not hide the first one.
        br#"{"b":null,"b":2}"#,
    ];
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| record(i as i64, v))
        .collect();
    let decoded = decoder.decode(&records).expect("decode");
    assert_eq!(decoded.batch().num_rows(), 2);
    let refused: Vec<(usize, &str)> = decoded
        .bad
        .iter()
        .map(|b| (b.index, b.reason.as_str()))
        .collect();
    let names = ["a", "c", "x", "b"];
    assert_eq!(refused.len(), names.len(), "{refused:?}");
    for ((index, reason), (expected, name)) in refused.iter().zip((2..).zip(names)) {
        assert_eq!(*index, expected);
        assert!(
            reason.starts_with(&format!("the name \"{name}\" appears twice in an object")),
            "{reason}"
        );
    }
    let c = decoded.batch().column_by_name("c").expect("c");
    assert_eq!(
        c.as_primitive::<deltalake::arrow::datatypes::Int32Type>()
            .values(),
        &[3, 3]
    );
}

#[test]
fn non_standard_json_that_spark_accepts_is_read() {
    let format = every_type();
    let decoder = JsonDecoder::new(&format, &[]).expect("decoder");
    let decoded = decoder
        .decode(&[record(0, br#"{'s':'single', "d":-Infinity}"#)])
        .expect("decode");
    assert_eq!(decoded.rescued_rows, 0);
    let batch = decoded.batch();
    assert_eq!(
        batch
            .column_by_name("s")
            .expect("s")
            .as_string::<i32>()
            .value(0),
        "single"
    );
}

#[test]
fn a_value_that_is_not_utf8_is_bad_input_named_by_the_byte_and_rescued_whole() {
    // 0xff at byte 8, after a two-byte character that is valid.
    let value = b"{\"s\":\"\xc3\xa9\xff\"}";
    let mut format = every_type();
    format.on_error = Some(OnError::DeadLetter);
    let decoded = JsonDecoder::new(&format, &[])
        .expect("decoder")
        .decode(&[record(0, FULL.as_bytes()), record(1, value)])
        .expect("decode");
    assert_eq!(decoded.batch().num_rows(), 1);
    assert_eq!(decoded.bad.len(), 1);
    assert!(
        decoded.bad[0]
            .reason
            .contains("not valid UTF-8 (invalid byte at position 8;"),
        "{}",
        decoded.bad[0].reason
    );
    // Rescued whole: the row stays, every data column null, the text in _rescued_data.
    let decoded = JsonDecoder::new(&every_type(), &[])
        .expect("decoder")
        .decode(&[record(0, value)])
        .expect("decode");
    assert_eq!(decoded.rescued_rows, 1);
    let batch = decoded.batch();
    assert!(batch.column_by_name("s").expect("s").is_null(0));
    let rescued = batch
        .column_by_name(RESCUED_DATA_COLUMN)
        .expect("rescued")
        .as_string::<i32>()
        .value(0)
        .to_string();
    assert_eq!(rescued, r#"{"s":"é\xFF"}"#);
}

#[test]
fn fail_and_dead_letter_name_the_column_a_value_does_not_read_into() {
    for mode in [OnError::Fail, OnError::DeadLetter] {
        let mut format = every_type();
        format.on_error = Some(mode);
        let decoder = JsonDecoder::new(&format, &[]).expect("decoder");
        let decoded = decoder
            .decode(&[
                record(0, FULL.as_bytes()),
                record(1, br#"{"s":"x","i":1.9}"#),
                record(2, br#"{"ts":"2026-01-02T03:04:05 Europe/Paris"}"#),
            ])
            .expect("decode");
        assert_eq!(decoded.batch().num_rows(), 1);
        assert_eq!(decoded.bad.len(), 2);
        assert_eq!(decoded.bad[0].index, 1);
        assert!(
            decoded.bad[0]
                .reason
                .contains(r#"column "i" (int): an integer"#)
                || decoded.bad[0].reason.contains(r#"column "i" (int)"#),
            "{}",
            decoded.bad[0].reason
        );
        assert!(
            decoded.bad[0].reason.contains("1.9"),
            "{}",
            decoded.bad[0].reason
        );
        assert!(
            decoded.bad[1].reason.contains(r#"column "ts" (timestamp)"#)
                && decoded.bad[1].reason.contains("Europe/Paris"),
            "{}",
            decoded.bad[1].reason
        );
    }
}

#[test]
fn a_tombstone_is_sparks_null_struct_and_an_empty_value_is_bad_input() {
    let tombstone = Record {
        value: None,
        ..record(1, b"")
    };
    let schema = |required: bool| JsonFormat {
        schema: vec![
            SchemaField {
                name: "id".into(),
                data_type: "string".into(),
                nullable: Some(!required),
                ..Default::default()
            },
            SchemaField {
                name: "n".into(),
                data_type: "int".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    // Rescue: both are rows of nulls; only the empty value is rescued, as "" (a tombstone has
    // no text: its _rescued_data is null, as Spark's from_json(null) is not a corrupt record).
    for required in [false, true] {
        let mut format = schema(required);
        format.on_error = Some(OnError::Rescue);
        let decoder = JsonDecoder::new(&format, &[]).expect("decoder");
        let decoded = decoder
            .decode(&[record(0, b""), tombstone.clone()])
            .expect("decode");
        let batch = decoded.batch();
        assert_eq!(batch.num_rows(), 2);
        for column in ["id", "n"] {
            let array = batch.column_by_name(column).expect("column");
            assert!(array.is_null(0) && array.is_null(1), "{column} is null");
        }
        let rescued = batch
            .column_by_name(RESCUED_DATA_COLUMN)
            .expect("rescued")
            .as_string::<i32>();
        assert!(
            rescued.is_valid(0) && rescued.value(0).is_empty(),
            "empty value: \"\""
        );
        assert!(rescued.is_null(1), "a tombstone is not rescued");
        assert_eq!(decoded.rescued_rows, 1);
    }
    // Fail and deadLetter: a tombstone is a row of nulls unless a field is nullable: false;
    // an empty value is bad input, named as such.
    for mode in [OnError::Fail, OnError::DeadLetter] {
        for required in [false, true] {
            let mut format = schema(required);
            format.on_error = Some(mode);
            let decoder = JsonDecoder::new(&format, &[]).expect("decoder");
            let decoded = decoder
                .decode(&[record(0, b""), tombstone.clone()])
                .expect("decode");
            assert!(
                decoded.bad[0].index == 0
                    && decoded.bad[0]
                        .reason
                        .contains("the value is empty (0 bytes)"),
                "{:?}",
                decoded.bad
            );
            if required {
                assert_eq!(decoded.batch().num_rows(), 0);
                assert_eq!(decoded.bad.len(), 2);
                assert!(
                    decoded.bad[1]
                        .reason
                        .contains("is a tombstone (no value), so field \"id\" is null"),
                    "{}",
                    decoded.bad[1].reason
                );
            } else {
                assert_eq!(decoded.bad.len(), 1, "{:?}", decoded.bad);
                assert_eq!(decoded.batch().num_rows(), 1, "the tombstone's row");
                assert!(decoded.batch().column_by_name("n").expect("n").is_null(0));
            }
        }
    }
}

#[test]
fn a_large_batch_decoded_in_parts_is_the_batch_decoded_whole() {
    let records: Vec<Record> = (0..PARALLEL_DECODE_MIN_RECORDS as i64 * 2 + 7)
        .map(|offset| match offset % 97 {
            // Bad in every mode: an int column given a fraction.
            3 => record(offset, br#"{"s":"x","i":1.5}"#),
            11 => record(offset, b"not json"),
            _ => record(
                offset,
                FULL.replace(r#""i":7"#, &format!(r#""i":{offset}"#))
                    .as_bytes(),
            ),
        })
        .collect();
    for mode in [OnError::Rescue, OnError::DeadLetter] {
        let mut format = every_type();
        format.on_error = Some(mode);
        let decoder = JsonDecoder::new(&format, &[MetadataColumn::Offset]).expect("decoder");
        let whole = decoder.decode(&records).expect("decode whole");
        assert!(whole.rescued_rows > 0 || !whole.bad.is_empty());
        for parts in [2, 3, 8] {
            let in_parts = JsonDecoder {
                reader: decoder.reader.clone(),
                split: split::Split::new(parts),
            };
            let shared = Arc::new(records.clone());
            // Twice: the second batch goes to the helpers the first one started.
            for batch in 0..2 {
                let decoded = in_parts.decode_shared(&shared).expect("decode in parts");
                let context = format!("{mode:?}, {parts} parts, batch {batch}");
                assert_eq!(
                    decoded.parts.len(),
                    parts,
                    "{context}: one Arrow batch per part"
                );
                assert_eq!(
                    &decoded.to_batch().expect("the parts as one"),
                    whole.batch(),
                    "{context}"
                );
                assert_eq!(decoded.rescued_rows, whole.rescued_rows, "{context}");
                let bad = |d: &Decoded| -> Vec<(usize, String)> {
                    d.bad.iter().map(|b| (b.index, b.reason.clone())).collect()
                };
                assert_eq!(bad(&decoded), bad(&whole), "{context}");
                assert_eq!(
                    Arc::strong_count(&shared),
                    1,
                    "the helpers let go of the records ({context})"
                );
            }
        }
    }
}

#[test]
fn names_compare_as_their_bytes_at_every_length_and_every_differing_place() {
    let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
    for len in 0..=text.len() {
        let name = &text[..len];
        let copy = name.to_vec();
        assert!(same_name(name, &copy), "{len} bytes");
        // One byte changed, at each place: the words must cover the whole name.
        for at in 0..len {
            let mut other = name.to_vec();
            other[at] ^= 0x20;
            assert!(!same_name(name, &other), "{len} bytes, byte {at} differs");
        }
        // Longer or shorter by one, sharing the prefix.
        if len < text.len() {
            assert!(
                !same_name(name, &text[..len + 1]),
                "{len} against {}",
                len + 1
            );
            assert!(
                !same_name(&text[..len + 1], name),
                "{} against {len}",
                len + 1
            );
        }
    }
}

#[test]
fn rescued_texts_land_on_their_rows_with_nulls_between() {
    let column = rescued_column(vec![(1, "a".into()), (2, "b".into()), (4, "c".into())], 6);
    let column = column.as_string::<i32>();
    let read: Vec<Option<&str>> = column.iter().collect();
    assert_eq!(read, [None, Some("a"), Some("b"), None, Some("c"), None]);
    let none = rescued_column(Vec::new(), 3);
    assert_eq!((none.len(), none.null_count()), (3, 3));
}
