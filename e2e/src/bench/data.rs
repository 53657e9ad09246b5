//! Sensor readings as the examples describe them: one JSON object of ~150 bytes per message.
//! Values are derived from the sequence number (no RNG dependency, same data on every run); the
//! `timestamp` field is the produce time, which the latency run reads back from the table.
//!
//! A share of the readings can be malformed ([`Malformed`]): which ones, and how, is a function
//! of the sequence number alone, so every run (and the check of the table afterwards) agrees on
//! the exact set of bad records.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};

/// The readings' fields, matching [`reading`]: name, type (the manifest's spelling, which is also
/// Spark's DDL spelling for these types), and whether it may be null.
pub const COLUMNS: &[(&str, &str, bool)] = &[
    ("device_id", "string", false),
    ("site", "string", true),
    ("temperature", "double", true),
    ("humidity", "double", true),
    ("battery_pct", "int", true),
    ("status", "string", true),
    ("timestamp", "timestamp", true),
];

/// The manifest's `format.json.schema` entries, indented for the bench's manifests.
pub fn schema_yaml() -> String {
    COLUMNS
        .iter()
        .map(|(name, kind, nullable)| {
            let nullable = if *nullable { "" } else { ", nullable: false" };
            format!("        - {{name: {name}, type: {kind}{nullable}}}\n")
        })
        .collect()
}

/// The column holding the produce time.
pub const TIMESTAMP_COLUMN: &str = "timestamp";

const STATUSES: [&str; 5] = ["ok", "ok", "ok", "warning", "low_battery"];

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// SplitMix64: cheap, well-mixed values from a counter.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes reading number `seq`, produced at `produced_us`, into `buf` (cleared first), so the
/// producer reuses one buffer instead of allocating per message.
pub fn reading(seq: u64, produced_us: i64, buf: &mut String) {
    buf.clear();
    let r = mix(seq);
    let device = r % 100_000;
    let site = (r >> 17) % 40;
    let temperature = -10.0 + ((r >> 23) % 5_000) as f64 / 100.0;
    let humidity = ((r >> 37) % 1_000) as f64 / 10.0;
    let battery = (r >> 47) % 101;
    let status = STATUSES[((r >> 55) % STATUSES.len() as u64) as usize];
    let timestamp = DateTime::from_timestamp_micros(produced_us)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default();
    // Writing to a String cannot fail.
    let _ = write!(
        buf,
        r#"{{"device_id":"sensor-{device:06}","site":"plant-{site:02}","temperature":{temperature:.2},"humidity":{humidity:.1},"battery_pct":{battery},"status":"{status}","timestamp":"{timestamp}"}}"#
    );
}

/// How a malformed reading is broken: the three kinds of bad input a real stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadKind {
    /// The JSON cut short, as by a producer that died mid-write or a size limit.
    Truncated,
    /// Valid JSON whose field has the wrong type for the schema (a unit in a number, a
    /// fraction in an int, a word in a timestamp): only that field is unreadable.
    WrongType,
    /// Not JSON at all: a CSV line from a misconfigured producer.
    NotJson,
}

/// Which readings are malformed: `per_million` of them, chosen by a hash of the sequence
/// number (independent of the hash that makes the values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Malformed {
    pub per_million: u64,
}

/// Mixed into the sequence number so the choice of bad records does not follow the values.
const MALFORMED_SALT: u64 = 0x0BAD_5EED_0BAD_5EED;

impl Malformed {
    pub const NONE: Malformed = Malformed { per_million: 0 };

    /// `percent` of the readings (0 to 100, to 0.0001 %).
    pub fn percent(percent: f64) -> Option<Malformed> {
        (0.0..=100.0).contains(&percent).then(|| Malformed {
            per_million: (percent * 10_000.0).round() as u64,
        })
    }

    /// Whether reading `seq` is malformed, and how.
    pub fn kind(&self, seq: u64) -> Option<BadKind> {
        if self.per_million == 0 {
            return None;
        }
        let h = mix(seq ^ MALFORMED_SALT);
        if h % 1_000_000 >= self.per_million {
            return None;
        }
        Some(match (h >> 32) % 3 {
            0 => BadKind::Truncated,
            1 => BadKind::WrongType,
            _ => BadKind::NotJson,
        })
    }

    /// How many of readings `0..count` are malformed.
    pub fn count(&self, count: u64) -> u64 {
        if self.per_million == 0 {
            return 0;
        }
        (0..count).filter(|&seq| self.kind(seq).is_some()).count() as u64
    }
}

/// Writes reading number `seq` into `buf` as [`reading`] does, broken as `malformed` says for
/// this `seq`. Returns how it was broken.
pub fn message(
    seq: u64,
    produced_us: i64,
    malformed: Malformed,
    buf: &mut String,
) -> Option<BadKind> {
    reading(seq, produced_us, buf);
    let kind = malformed.kind(seq)?;
    let h = mix(seq ^ MALFORMED_SALT.rotate_left(17));
    match kind {
        BadKind::Truncated => {
            // Anywhere from just after the opening brace to just before the closing one: an
            // object that is never closed is never valid JSON. The readings are ASCII, so any
            // byte is a character boundary.
            let cut = 1 + (h as usize) % (buf.len() - 1);
            buf.truncate(cut);
        }
        BadKind::WrongType => {
            let (field, wrong) = match h % 3 {
                0 => ("\"temperature\":", "\"21.5 C\""),
                1 => ("\"battery_pct\":", "87.5"),
                _ => ("\"timestamp\":", "\"yesterday\""),
            };
            if let Some(start) = buf.find(field).map(|i| i + field.len()) {
                let end = buf[start..]
                    .find([',', '}'])
                    .map_or(buf.len(), |i| start + i);
                buf.replace_range(start..end, wrong);
            }
        }
        BadKind::NotJson => {
            let r = mix(seq);
            buf.clear();
            // Writing to a String cannot fail.
            let _ = write!(
                buf,
                "sensor-{:06},plant-{:02},{:.2},{},ok",
                r % 100_000,
                (r >> 17) % 40,
                -10.0 + ((r >> 23) % 5_000) as f64 / 100.0,
                produced_us
            );
        }
    }
    Some(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_readings_are_a_fixed_share_of_each_kind_and_never_valid_for_the_schema() {
        let malformed = Malformed::percent(2.0).unwrap();
        let mut buf = String::new();
        let mut kinds = [0u64; 3];
        for seq in 0..200_000 {
            let kind = message(seq, 1_763_956_800_123_456, malformed, &mut buf);
            assert_eq!(kind, malformed.kind(seq), "the same answer every time");
            let parsed = serde_json::from_str::<serde_json::Value>(&buf);
            match kind {
                None => assert!(parsed.is_ok(), "{buf}"),
                Some(BadKind::Truncated) => {
                    kinds[0] += 1;
                    assert!(parsed.is_err(), "{buf}");
                }
                Some(BadKind::WrongType) => {
                    kinds[1] += 1;
                    let value = parsed.expect("wrong-typed readings are JSON");
                    let wrong = [
                        value["temperature"].is_string(),
                        value["battery_pct"]
                            .as_f64()
                            .is_some_and(|v| v.fract() != 0.0),
                        value["timestamp"] == "yesterday",
                    ];
                    assert_eq!(wrong.iter().filter(|w| **w).count(), 1, "{buf}");
                }
                Some(BadKind::NotJson) => {
                    kinds[2] += 1;
                    assert!(parsed.is_err(), "{buf}");
                    assert!(!buf.starts_with('{'), "{buf}");
                }
            }
        }
        let total: u64 = kinds.iter().sum();
        assert_eq!(total, malformed.count(200_000));
        // 2 % of 200,000 is 4,000, and each kind about a third of it.
        assert!((3_700..=4_300).contains(&total), "{total}");
        assert!(
            kinds.iter().all(|k| (1_100..=1_550).contains(k)),
            "{kinds:?}"
        );
        assert_eq!(Malformed::NONE.count(1_000), 0);
        assert_eq!(Malformed::percent(100.0).unwrap().count(1_000), 1_000);
        assert!(Malformed::percent(101.0).is_none());
    }

    #[test]
    fn a_reading_is_json_of_about_150_bytes() {
        let mut buf = String::new();
        reading(42, 1_763_956_800_123_456, &mut buf);
        let value: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(value["timestamp"], "2025-11-24T04:00:00.123456Z");
        assert!(
            (130..=170).contains(&buf.len()),
            "{} bytes: {buf}",
            buf.len()
        );
    }

    #[test]
    fn a_reading_has_exactly_the_declared_columns() {
        let mut buf = String::new();
        reading(7, 1_763_956_800_123_456, &mut buf);
        let value: serde_json::Value = serde_json::from_str(&buf).unwrap();
        let mut fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut declared: Vec<&str> = COLUMNS.iter().map(|(name, _, _)| *name).collect();
        fields.sort_unstable();
        declared.sort_unstable();
        assert_eq!(fields, declared);
        assert!(schema_yaml().contains("- {name: device_id, type: string, nullable: false}\n"));
        assert!(schema_yaml().contains("- {name: timestamp, type: timestamp}\n"));
    }
}
