//! The records the Spark suite produces: every type of the API with its edge values, and the
//! kinds of bad input, generated deterministically so a failure names a reproducible record.

use serde_json::{Map, Value, json};

/// Every Spark type a schema field may have (crds/src/datatype.rs), nested ones included.
/// `timestamp_ntz` gives the table a table-features protocol (reader 3, writer 7, feature
/// `timestampNtz`), which Spark reads because every column is nullable (a NOT NULL column would
/// be an invariant the protocol must list too).
pub const EVERY_TYPE: &[(&str, &str)] = &[
    ("s", "string"),
    ("b", "boolean"),
    ("y", "byte"),
    ("sh", "short"),
    ("i", "int"),
    ("l", "long"),
    ("f", "float"),
    ("d", "double"),
    ("dec", "decimal(10,2)"),
    ("wide", "decimal(38,18)"),
    ("dt", "date"),
    ("ts", "timestamp"),
    ("arr", "array<int>"),
    ("m", "map<string,double>"),
    ("st", "struct<lat:double,lon:double>"),
    (
        "items",
        "array<struct<name:string,tags:array<string>,attrs:map<string,bigint>>>",
    ),
    ("lookup", "map<string,array<struct<x:int,y:string>>>"),
    (
        "deep",
        "struct<inner:struct<list:array<map<string,string>>,n:long>>",
    ),
    ("ntz", "timestamp_ntz"),
];

/// The values each field of [`EVERY_TYPE`] takes in turn (JSON as a producer writes it);
/// `null` is always one of them, and a field is sometimes left out.
fn variants(field: &str) -> Vec<Value> {
    match field {
        "s" => vec![
            json!("plain"),
            json!("Zürich ☃ 北京 🚀"),
            json!("quote \" backslash \\ newline \n tab \t"),
            json!(""),
            Value::Null,
        ],
        "b" => vec![json!(true), json!(false), Value::Null],
        "y" => vec![json!(-128), json!(127), json!(0), Value::Null],
        "sh" => vec![json!(-32768), json!(32767), json!(300), Value::Null],
        "i" => vec![json!(i32::MIN), json!(i32::MAX), json!(7), Value::Null],
        "l" => vec![
            json!(i64::MIN),
            json!(i64::MAX),
            json!(9_000_000_000i64),
            Value::Null,
        ],
        "f" => vec![
            json!(1.5),
            json!(-0.1),
            json!(3.4e38),
            json!(0),
            Value::Null,
        ],
        "d" => vec![
            json!(2.25),
            json!(-1e-300),
            json!(1.7976931348623157e308),
            json!(0.1),
            json!(42),
            Value::Null,
        ],
        "dec" => vec![
            json!(12.34),
            json!("-99999999.99"),
            json!(0),
            json!("0.5"),
            Value::Null,
        ],
        "wide" => vec![
            json!("12345678901234567890.123456789012345678"),
            json!("-0.000000000000000001"),
            json!(1),
            Value::Null,
        ],
        "dt" => vec![
            json!("2026-01-02"),
            json!("1970-01-01"),
            json!("1500-03-01"),
            json!("9999-12-31"),
            Value::Null,
        ],
        "ts" => vec![
            json!("2026-01-02T03:04:05Z"),
            json!("2026-01-02T03:04:05.123456Z"),
            json!("2026-01-02T05:04:05+02:00"),
            json!("2026-01-02 03:04:05"),
            json!("1500-03-01T00:00:00Z"),
            Value::Null,
        ],
        "ntz" => vec![
            json!("2026-01-02T03:04:05"),
            json!("2026-01-02T03:04:05.5"),
            json!("1900-12-31T23:59:59.999999"),
            Value::Null,
        ],
        "arr" => vec![json!([1, 2, 3]), json!([]), json!([null, 4]), Value::Null],
        "m" => vec![
            json!({"a": 1.0, "b": -2.5}),
            json!({}),
            json!({"k": null}),
            Value::Null,
        ],
        "st" => vec![
            json!({"lat": 52.1, "lon": 4.3}),
            json!({"lat": null}),
            json!({}),
            Value::Null,
        ],
        "items" => vec![
            json!([{"name": "x", "tags": ["a", "b"], "attrs": {"w": 1}},
                   {"name": null, "tags": [], "attrs": {}}]),
            json!([]),
            json!([{"tags": null}]),
            Value::Null,
        ],
        "lookup" => vec![
            json!({"p": [{"x": 1, "y": "q"}], "r": []}),
            json!({"n": null}),
            Value::Null,
        ],
        "deep" => vec![
            json!({"inner": {"list": [{"a": "b"}, {}], "n": 5}}),
            json!({"inner": null}),
            json!({"inner": {"list": [null]}}),
            Value::Null,
        ],
        other => panic!("no variants for {other}"),
    }
}

/// The `n`-th every-type record: each field cycles through its variants at its own pace, and
/// every seventh field of a record is left out.
pub fn every_type_record(n: usize) -> String {
    record(EVERY_TYPE, n)
}

fn record(fields: &[(&str, &str)], n: usize) -> String {
    let mut object = Map::new();
    for (index, (name, _)) in fields.iter().enumerate() {
        if (n + index) % 7 == 6 {
            continue;
        }
        let choices = variants(name);
        let pick = (n / (index % 3 + 1) + index) % choices.len();
        object.insert(name.to_string(), choices[pick].clone());
    }
    Value::Object(object).to_string()
}

/// The schema of the sensor-reading tables (the seed's example, with a partition-friendly day).
pub const SENSOR: &[(&str, &str)] = &[
    ("device_id", "string"),
    ("site", "string"),
    ("temperature", "double"),
    ("battery_pct", "int"),
    ("timestamp", "timestamp"),
    ("day", "date"),
];

/// Sites, including characters a partition directory name must escape.
const SITES: &[&str] = &["oslo", "São Paulo", "a/b c%d=e", "lisbon"];

/// A good sensor reading; every 13th has no site (a null partition value).
pub fn reading(n: usize) -> String {
    let mut object = json!({
        "device_id": format!("d-{n}"),
        "temperature": (n as f64) * 0.25 - 10.0,
        "battery_pct": (n % 101) as i64,
        "timestamp": format!("2026-01-{:02}T{:02}:00:00Z", n % 28 + 1, n % 24),
        "day": format!("2026-01-{:02}", n % 3 + 1),
    });
    if n % 13 != 5 {
        object["site"] = json!(SITES[n % SITES.len()]);
    }
    object.to_string()
}

/// A bad sensor record of one of several kinds.
pub fn bad_reading(n: usize) -> String {
    match n % 5 {
        0 => r#"{"device_id": "d-x", "site":"#.to_string(),
        1 => "this is not json".to_string(),
        2 => format!(r#"{{"device_id":"d-{n}","temperature":"hot","battery_pct":7}}"#),
        3 => "[1,2,3]".to_string(),
        _ => format!(r#"{{"device_id":"d-{n}","battery_pct":"{n}%"}}"#),
    }
}
