//! The bounds of every number and duration a user writes, in one place: the Rust validation
//! reads the constants, and the CRD's schema (`maximum`) and CEL rules are built from them, so a
//! value the API server accepts is one the worker can hold without overflowing.

use std::time::Duration;

/// Longest processingTime interval. A query that runs less often than daily is better run as a
/// CronJob (`trigger: {availableNow: true}` with `spec.schedule`): no pod waits a day between
/// batches.
pub const MAX_PROCESSING_TIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest Kafka offset and offset count a spec may name (2^53 - 1, the largest integer every
/// JSON client reads exactly). At a million records a second a partition reaches it after 285
/// years; below it, adding a batch's offsets to a start offset cannot overflow an i64.
pub const MAX_OFFSET: i64 = 9_007_199_254_740_991;

/// Most workers of one ingestion.
pub const MAX_REPLICAS: i32 = 1000;

/// Smallest and largest target Parquet file size (1 MiB and 4 GiB). The writer holds a file in
/// memory until it reaches this size.
pub const MIN_TARGET_FILE_SIZE: i64 = 1 << 20;
pub const MAX_TARGET_FILE_SIZE: i64 = 4 << 30;

/// Delta log checkpoint interval bounds, in commits.
pub const MIN_CHECKPOINT_INTERVAL: i32 = 1;
pub const MAX_CHECKPOINT_INTERVAL: i32 = 1000;

/// Port range of the workers' metrics endpoint (unprivileged ports only: workers run as non-root).
pub const MIN_METRICS_PORT: i32 = 1024;
/// Bounds of `spec.worker.terminationGracePeriodSeconds`: long enough to finish a batch and
/// close the consumer, short enough that a drained node does not wait an hour.
pub const MIN_TERMINATION_GRACE_SECONDS: i64 = 10;
pub const MAX_TERMINATION_GRACE_SECONDS: i64 = 3600;
/// Bounds of `spec.runs.backoffLimit` (Kubernetes' own Job limit is unbounded; more than this
/// hides a failure that retrying will not fix).
pub const MAX_BACKOFF_LIMIT: i32 = 100;
/// Most restarts `spec.maxRestarts` may allow.
pub const MAX_RESTARTS: i32 = 10_000;
/// Default and longest wait before autoscaling removes workers (a day).
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i64 = 300;
pub const MAX_SCALE_DOWN_DELAY_SECONDS: i64 = 24 * 60 * 60;
/// autoscaling.targetSecondsBehind: at most a week.
pub const MAX_TARGET_SECONDS_BEHIND: i64 = 7 * 24 * 60 * 60;
/// Bounds of `sink.delta.vacuum`: runs at most 30 days apart; a retention of at most ten years;
/// Delta's default retention of 7 days.
pub const MAX_VACUUM_INTERVAL_HOURS: i32 = 30 * 24;
pub const MAX_VACUUM_RETAIN_HOURS: i32 = 10 * 365 * 24;
pub const DEFAULT_VACUUM_RETAIN_HOURS: i32 = 7 * 24;
/// How long a Spark checkpoint must be unchanged before a takeover (default 2 minutes, at
/// most a day).
pub const DEFAULT_SPARK_QUIET_SECONDS: i64 = 120;
pub const MAX_SPARK_QUIET_SECONDS: i64 = 24 * 60 * 60;
/// Bounds of the CronJob history limits in `spec.runs`.
pub const MAX_RUN_HISTORY: i32 = 100;
pub const MAX_METRICS_PORT: i32 = 65535;

/// Most librdkafka options in one `options` or `secretOptions` map (librdkafka has about 150).
pub const MAX_OPTIONS: usize = 256;

/// The processingTime forms, as the CRD's CEL rule and the parser below accept them: Go-style
/// sequences (10s, 1m30s, 500ms, 1.5h), Spark's "<n> <unit>" (10 seconds) or 0.
pub const PROCESSING_TIME_PATTERN: &str = r"^\s*(([0-9]+(\.[0-9]+)?(ms|s|m|h))+|[0-9]+\s*(milliseconds?|seconds?|minutes?|hours?|days?)|0)\s*$";

/// The message of a processingTime that is not a duration.
pub const PROCESSING_TIME_FORMAT_MESSAGE: &str =
    "processingTime must be a duration such as 10s, 1m30s, 500ms or \"10 seconds\"";

/// The message of a processingTime above [`MAX_PROCESSING_TIME`].
pub const PROCESSING_TIME_BOUND_MESSAGE: &str = "processingTime must be at most 24h (\"1 day\"); for rarer runs use trigger {availableNow: true} with a spec.schedule";

/// The CEL rule bounding processingTime, for both forms.
///
/// Go-style values are compared with CEL's own `duration()`, after a guard that limits the
/// digits of each component (at most 5 before `h`, 7 before `m`, 9 before `s`, 12 before `ms`):
/// within the field's 64 characters no sum of such components overflows a Go duration, so
/// `duration()` never fails. Spark-style values multiply the number (at most 9 digits) by the
/// unit in milliseconds. Values that match neither form are left to the format rule.
pub fn processing_time_bound_rule() -> String {
    let max_ms = MAX_PROCESSING_TIME.as_millis();
    let max_hours = MAX_PROCESSING_TIME.as_secs() / 3600;
    let go = cel_string(r"^\s*([0-9]+(\.[0-9]+)?(ms|s|m|h))+\s*$");
    let go_guard = cel_string(
        r"^\s*(0*[0-9]{1,5}(\.[0-9]+)?h|0*[0-9]{1,7}(\.[0-9]+)?m|0*[0-9]{1,9}(\.[0-9]+)?s|0*[0-9]{1,12}(\.[0-9]+)?ms)+\s*$",
    );
    let units = "(milliseconds?|seconds?|minutes?|hours?|days?)";
    let spark = cel_string(&format!(r"^\s*[0-9]+\s*{units}\s*$"));
    let spark_guard = cel_string(&format!(r"^\s*0*[0-9]{{1,9}}\s*{units}\s*$"));
    let unit = |word: &str| cel_string(&format!(r"{word}s?\s*$"));
    format!(
        "(!self.matches('{go}') || (self.matches('{go_guard}') && duration(self.trim()) <= duration('{max_hours}h'))) && \
         (!self.matches('{spark}') || (self.matches('{spark_guard}') && int(self.find('[0-9]+')) * \
         (self.matches('{day}') ? 86400000 : self.matches('{hour}') ? 3600000 : \
         self.matches('{minute}') ? 60000 : self.matches('{milli}') ? 1 : 1000) <= {max_ms}))",
        day = unit("day"),
        hour = unit("hour"),
        minute = unit("minute"),
        milli = unit("millisecond"),
    )
}

/// The CEL rule of processingTime's form.
pub fn processing_time_format_rule() -> String {
    format!("self.matches('{}')", cel_string(PROCESSING_TIME_PATTERN))
}

/// A regular expression as a CEL single-quoted string body (backslashes doubled).
pub fn cel_string(pattern: &str) -> String {
    pattern.replace('\\', "\\\\")
}

/// Parses a processingTime interval: Go-style (10s, 1m30s, 500ms, 1.5h) or Spark's
/// "<n> <unit>" (10 seconds, 1 minute), at most [`MAX_PROCESSING_TIME`]. Never panics: every
/// sum and product is checked.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let invalid = || {
        format!(
            "{PROCESSING_TIME_FORMAT_MESSAGE}, not \"{}\"",
            excerpt(text)
        )
    };
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    let nanos = match spark_nanos(trimmed) {
        Some(parsed) => parsed,
        None => go_nanos(trimmed).ok_or_else(invalid)?,
    };
    let max = MAX_PROCESSING_TIME.as_nanos();
    match nanos {
        // Within the bound, the value fits a u64 of nanoseconds.
        Some(nanos) if nanos <= max => Ok(Duration::from_nanos(
            u64::try_from(nanos).map_err(|_| PROCESSING_TIME_BOUND_MESSAGE.to_string())?,
        )),
        _ => Err(format!(
            "{PROCESSING_TIME_BOUND_MESSAGE}, not \"{}\"",
            excerpt(text)
        )),
    }
}

const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Spark's "<n> <unit>": `None` when the text is not of that form, `Some(None)` when it is but
/// overflows.
fn spark_nanos(text: &str) -> Option<Option<u128>> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim_start();
    let singular = unit.strip_suffix('s').unwrap_or(unit);
    let unit_nanos = match singular {
        "millisecond" => NANOS_PER_MILLI,
        "second" => NANOS_PER_SECOND,
        "minute" => 60 * NANOS_PER_SECOND,
        "hour" => 3600 * NANOS_PER_SECOND,
        "day" => 86_400 * NANOS_PER_SECOND,
        _ => return None,
    };
    Some(decimal(number).and_then(|n| n.checked_mul(unit_nanos)))
}

/// A Go-style sequence of <number><unit>: `None` when the text is not of that form,
/// `Some(None)` when it is but overflows.
fn go_nanos(text: &str) -> Option<Option<u128>> {
    if text.is_empty() {
        return None;
    }
    let mut total = Some(0u128);
    let mut rest = text;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if whole_len == 0 {
            return None;
        }
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(tail) => {
                let len = tail.bytes().take_while(u8::is_ascii_digit).count();
                if len == 0 {
                    return None;
                }
                tail.split_at(len)
            }
            None => ("", after),
        };
        let (unit_nanos, after) = if let Some(tail) = after.strip_prefix("ms") {
            (NANOS_PER_MILLI, tail)
        } else if let Some(tail) = after.strip_prefix('s') {
            (NANOS_PER_SECOND, tail)
        } else if let Some(tail) = after.strip_prefix('m') {
            (60 * NANOS_PER_SECOND, tail)
        } else if let Some(tail) = after.strip_prefix('h') {
            (3600 * NANOS_PER_SECOND, tail)
        } else {
            return None;
        };
        let component = decimal(whole)
            .and_then(|n| n.checked_mul(unit_nanos))
            .map(|n| {
                // Fractions beyond 18 digits change less than a nanosecond of any unit.
                let digits = &fraction[..fraction.len().min(18)];
                let scale = 10u128.pow(digits.len() as u32);
                let part = decimal(digits).unwrap_or(0);
                n + part * unit_nanos / scale
            });
        total = total.zip(component).and_then(|(t, c)| t.checked_add(c));
        rest = after;
    }
    Some(total)
}

/// The value of a string of ASCII digits, `None` when it does not fit (or is empty but for
/// the fraction case, where empty means 0).
fn decimal(digits: &str) -> Option<u128> {
    if digits.is_empty() {
        return Some(0);
    }
    digits.bytes().try_fold(0u128, |value, digit| {
        value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(digit - b'0')))
    })
}

/// A user's text in a message: at most 64 characters of it.
pub fn excerpt(text: &str) -> String {
    const LIMIT: usize = 64;
    if text.chars().count() <= LIMIT {
        text.to_string()
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_go_and_spark_forms() {
        for (text, expected) in [
            ("10s", Duration::from_secs(10)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("0.001s", Duration::from_millis(1)),
            ("10 seconds", Duration::from_secs(10)),
            ("10seconds", Duration::from_secs(10)),
            ("1 minute", Duration::from_secs(60)),
            ("250 milliseconds", Duration::from_millis(250)),
            ("1 day", Duration::from_secs(86_400)),
            ("24h", Duration::from_secs(86_400)),
            ("86400000ms", Duration::from_secs(86_400)),
            (" 10s ", Duration::from_secs(10)),
            ("0010s", Duration::from_secs(10)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_durations_name_the_forms() {
        for bad in [
            "",
            "10",
            "ten seconds",
            "10 fortnights",
            "s",
            "10x",
            "1.s",
            ".5s",
            "1 secondss",
            "-1s",
            "1e3s",
            "10 Seconds",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(format!(
                    "processingTime must be a duration such as 10s, 1m30s, 500ms or \"10 seconds\", not \"{bad}\""
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_above_a_day_are_refused_not_wrapped_or_panicking() {
        for huge in [
            "99999999999999999999h",
            "18446744073709551615 days",
            "213503982334602 days",
            "25h",
            "2 days",
            "86400001ms",
            "24h0.001s",
            "1441m",
            "999999999999999999999999999999999999999999999999s",
            "23h59m60.000000001s",
        ] {
            assert_eq!(
                parse_duration(huge),
                Err(format!(
                    "processingTime must be at most 24h (\"1 day\"); for rarer runs use trigger {{availableNow: true}} with a spec.schedule, not \"{}\"",
                    excerpt(huge)
                )),
                "{huge}"
            );
        }
    }

    #[test]
    fn long_texts_are_cut_in_messages() {
        let long = "9".repeat(100) + "h";
        let message = parse_duration(&long).expect_err("too long");
        assert!(
            message.ends_with(&format!("not \"{}...\"", "9".repeat(64))),
            "{message}"
        );
    }

    #[test]
    fn the_pattern_and_the_parser_agree_on_the_form() {
        let pattern = regex::Regex::new(PROCESSING_TIME_PATTERN).expect("pattern compiles");
        for text in [
            "10s",
            "1m30s",
            "500ms",
            "1.5h",
            "10 seconds",
            "10seconds",
            "0",
            " 10s ",
            "10",
            "1.s",
            "10 fortnights",
            "1e3s",
            "2 days",
            "99999999999999999999h",
        ] {
            let parsed = parse_duration(text);
            let form_ok = parsed.is_ok()
                || parsed
                    .as_ref()
                    .is_err_and(|m| m.starts_with("processingTime must be at most"));
            assert_eq!(pattern.is_match(text), form_ok, "{text}");
        }
    }
}
