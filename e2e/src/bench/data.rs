//! Sensor readings as the examples describe them: one JSON object of ~150 bytes per message.
//! Values are derived from the sequence number (no RNG dependency, same data on every run); the
//! `timestamp` field is the produce time, which the latency run reads back from the table.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};

/// The manifest's `format.json.schema`, matching [`reading`].
pub const SCHEMA_YAML: &str = concat!(
    "        - {name: device_id, type: string, nullable: false}\n",
    "        - {name: site, type: string}\n",
    "        - {name: temperature, type: double}\n",
    "        - {name: humidity, type: double}\n",
    "        - {name: battery_pct, type: int}\n",
    "        - {name: status, type: string}\n",
    "        - {name: timestamp, type: timestamp}\n",
);

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
