//! Dates and timestamps from JSON strings, as Spark's `from_json` reads them without a
//! `dateFormat`/`timestampFormat`: Spark's cast grammar (`[+-]yyyy[-m[m][-d[d]]]`, then for
//! timestamps `T` or a space and `h[h][:m[m][:s[s][.fraction]]]`, then a zone), proleptic
//! Gregorian calendar, fractions past microseconds cut off (not rounded), the `timeZone` option
//! (UTC by default, Spark's session time zone here) when the text has none.
//!
//! Zones: `Z`, offsets (`+h`, `+hh`, `+hh:mm`, `+hhmm`, `+hh:mm:ss`, `+hhmmss`, with Spark's
//! repairs of `+h:mm` and `+hh:m`) and `UTC`/`GMT`/`UT` alone or followed by an offset. Spark
//! also reads region names (`Europe/Paris`) and three-letter ids (`PST`) with the JVM's zone
//! rules, and a time without a date as today's: those are refused here (the record is bad
//! input, never a different value).

use tributary_crds::JsonFormat;
use tributary_crds::datetime::{Pattern, Zone, repair_offset};

/// Why a string is not read.
pub(crate) type Refusal = String;

/// How dates and timestamps are read: from_json's timestampFormat, dateFormat and timeZone.
#[derive(Clone, Debug)]
pub(crate) struct Formats {
    pub timestamp: Option<Pattern>,
    pub timestamp_ntz: Option<Pattern>,
    pub date: Option<Pattern>,
    /// The zone of timestamps written without one.
    pub zone: Zone,
}

impl Default for Formats {
    fn default() -> Formats {
        Formats {
            timestamp: None,
            timestamp_ntz: None,
            date: None,
            zone: Zone::Fixed(0),
        }
    }
}

impl Formats {
    /// The options of a format (validation has checked them; an error names the field).
    pub(crate) fn of(format: &JsonFormat) -> Result<Formats, String> {
        let pattern = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|p| {
                    Pattern::compile(p)
                        .map_err(|e| format!("spec.format.json.{field}: the pattern \"{p}\" {e}"))
                })
                .transpose()
        };
        Ok(Formats {
            timestamp: pattern("timestampFormat", &format.timestamp_format)?,
            timestamp_ntz: pattern("timestampNTZFormat", &format.timestamp_ntz_format)?,
            date: pattern("dateFormat", &format.date_format)?,
            zone: match &format.time_zone {
                Some(zone) => {
                    Zone::parse(zone).map_err(|e| format!("spec.format.json.timeZone: {e}"))?
                }
                None => Zone::Fixed(0),
            },
        })
    }
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 of a proleptic Gregorian date, or None when it is not a date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Spark trims bytes up to the space (and the other ASCII controls) at both ends.
fn trim(text: &str) -> &str {
    text.trim_matches(|c: char| c <= ' ')
}

/// A run of ASCII digits at the start of `s`: its value (the first `keep` digits) and length.
fn leading_digits(s: &[u8], keep: usize) -> (i64, usize) {
    let mut value = 0i64;
    let mut count = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            break;
        }
        if count < keep {
            value = value * 10 + i64::from(b - b'0');
        }
        count += 1;
    }
    (value, count)
}

/// Year, month, day.
type Ymd = (i64, u32, u32);

/// The date part shared by dates and timestamps: `[+-]yyyy[-m[m][-d[d]]]`, the year with
/// `min_year..=max_year` digits. Returns (year, month, day) and the rest of the text.
fn date_part(s: &[u8], max_year: usize) -> Option<(Ymd, &[u8])> {
    let (sign, mut rest) = match s.first() {
        Some(b'-') => (-1, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    let (year, digits) = leading_digits(rest, usize::MAX);
    if !(4..=max_year).contains(&digits) {
        return None;
    }
    rest = &rest[digits..];
    let mut parts = [1u32, 1u32];
    for part in &mut parts {
        if rest.first() != Some(&b'-') {
            break;
        }
        let (value, digits) = leading_digits(&rest[1..], 2);
        if !(1..=2).contains(&digits) {
            return None;
        }
        *part = value as u32;
        rest = &rest[1 + digits..];
    }
    Some(((sign * year, parts[0], parts[1]), rest))
}

/// A date string: Spark's `stringToDate`, then its fallback of a whole number of days.
pub(crate) fn parse_date(text: &str) -> Result<i32, Refusal> {
    if let Some(days) = string_to_date(text) {
        return Ok(days);
    }
    // Spark's fallback reads an integer (Java's Integer.parseInt, untrimmed) as days since the
    // epoch, converted from the Julian calendar: the same number after 1582-10-15.
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let days: i32 = text
            .parse()
            .map_err(|_| format!("\"{text}\" is out of the range of a date"))?;
        if days >= GREGORIAN_CUTOVER_DAYS {
            return Ok(days);
        }
        return Err(format!(
            "\"{text}\" is a day number before 1582-10-15, which Spark moves from the Julian calendar"
        ));
    }
    Err(format!("\"{text}\" is not a date"))
}

/// 1582-10-15, the first day of the Gregorian calendar, in days since the epoch.
const GREGORIAN_CUTOVER_DAYS: i32 = -141_427;

fn string_to_date(text: &str) -> Option<i32> {
    let s = trim(text).as_bytes();
    let ((year, month, day), rest) = date_part(s, 7)?;
    // Whatever follows a space or `T` after the day is ignored; after a year or a month
    // nothing may follow.
    if !rest.is_empty() {
        let full_date = s.len() - rest.len() > 0 && has_day(s, rest);
        if !(full_date && matches!(rest[0], b' ' | b'T')) {
            return None;
        }
    }
    let days = days_from_civil(year, month, day)?;
    i32::try_from(days).ok()
}

/// Whether the date part before `rest` had a day (two dashes after the year).
fn has_day(s: &[u8], rest: &[u8]) -> bool {
    let part = &s[..s.len() - rest.len()];
    let part = part.strip_prefix(b"-").unwrap_or(part);
    let part = part.strip_prefix(b"+").unwrap_or(part);
    part.iter().filter(|&&b| b == b'-').count() == 2
}

/// Microseconds since the epoch of a local date and time in `zone`, as Java's
/// `ZonedDateTime.of` places it: in a daylight saving overlap the earlier offset (the earlier
/// instant), in a gap the offset before it (the time moves forward by the gap). None when out
/// of range.
pub(crate) fn local_to_utc_micros(days: i64, micros_of_day: i64, zone: &Zone) -> Option<i64> {
    let local_micros = days
        .checked_mul(MICROS_PER_DAY)?
        .checked_add(micros_of_day)?;
    let offset_seconds: i64 = match zone {
        Zone::Fixed(seconds) => i64::from(*seconds),
        Zone::Region(tz) => {
            use chrono::{Offset, TimeZone};
            let seconds = local_micros.div_euclid(MICROS_PER_SECOND);
            let local = chrono::DateTime::from_timestamp(seconds, 0)?.naive_utc();
            let offset = match tz.offset_from_local_datetime(&local) {
                chrono::LocalResult::Single(offset) => offset.fix(),
                chrono::LocalResult::Ambiguous(earlier, later) => {
                    // The earlier instant has the larger offset.
                    let (a, b) = (earlier.fix(), later.fix());
                    if a.local_minus_utc() >= b.local_minus_utc() {
                        a
                    } else {
                        b
                    }
                }
                chrono::LocalResult::None => {
                    // In a gap: the offset in force a day before.
                    let before = local.checked_sub_signed(chrono::TimeDelta::days(1))?;
                    tz.offset_from_utc_datetime(&before).fix()
                }
            };
            i64::from(offset.local_minus_utc())
        }
    };
    local_micros.checked_sub(offset_seconds.checked_mul(MICROS_PER_SECOND)?)
}

/// A timestamp string, in microseconds since the epoch. `ntz`: a timestamp without time zone,
/// which refuses a zone in the text; otherwise a text without a zone is in `zone`.
pub(crate) fn parse_timestamp(text: &str, ntz: bool, zone: &Zone) -> Result<i64, Refusal> {
    // A written zone is refused by timestamp_ntz, so only the other timestamps take the
    // shortcut.
    if !ntz && let Some(micros) = rfc3339_utc(text.as_bytes()) {
        return Ok(micros);
    }
    full_timestamp(text, ntz, zone)
}

/// [`parse_timestamp`] by Spark's whole grammar.
fn full_timestamp(text: &str, ntz: bool, zone: &Zone) -> Result<i64, Refusal> {
    let s = trim(text).as_bytes();
    let not = || format!("\"{text}\" is not a timestamp");
    if s.is_empty() {
        return Err(not());
    }
    if s[0] == b'T' || (s[0].is_ascii_digit() && time_first(s)) {
        return Err(format!(
            "\"{text}\" is a time without a date, which Spark reads as today's"
        ));
    }
    let ((year, month, day), mut rest) = date_part(s, 6).ok_or_else(not)?;
    let (mut hour, mut minute, mut second, mut micros) = (0i64, 0i64, 0i64, 0i64);
    let mut written_zone: Option<&[u8]> = None;
    if !rest.is_empty() {
        if !(has_day(s, rest) && matches!(rest[0], b' ' | b'T')) {
            return Err(not());
        }
        rest = &rest[1..];
        let (value, digits) = leading_digits(rest, 2);
        if !(1..=2).contains(&digits) {
            return Err(not());
        }
        hour = value;
        rest = &rest[digits..];
        // Minutes and seconds each follow a ':'; a zone may only follow the seconds.
        for (index, slot) in [&mut minute, &mut second].into_iter().enumerate() {
            if rest.is_empty() {
                break;
            }
            if rest[0] != b':' {
                if index == 0 {
                    return Err(not());
                }
                break;
            }
            let (value, digits) = leading_digits(&rest[1..], 2);
            if !(1..=2).contains(&digits) {
                return Err(not());
            }
            *slot = value;
            rest = &rest[1 + digits..];
            if index == 0 && !rest.is_empty() && rest[0] != b':' {
                return Err(not());
            }
        }
        if rest.first() == Some(&b'.') {
            let (value, digits) = leading_digits(&rest[1..], 6);
            micros = fraction_micros(value, digits);
            rest = &rest[1 + digits..];
        }
        if !rest.is_empty() {
            written_zone = Some(rest);
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(not());
    }
    let offset_seconds = match written_zone {
        None if ntz => 0,
        None => {
            let days = days_from_civil(year, month, day).ok_or_else(not)?;
            let micros_of_day = ((hour * 60 + minute) * 60 + second) * MICROS_PER_SECOND + micros;
            return local_to_utc_micros(days, micros_of_day, zone)
                .ok_or_else(|| format!("\"{text}\" is out of the range of a timestamp"));
        }
        Some(_) if ntz => {
            return Err(format!(
                "\"{text}\" has a time zone, which a timestamp_ntz column refuses"
            ));
        }
        Some(zone) => {
            let zone = std::str::from_utf8(zone).map_err(|_| not())?;
            zone_offset_seconds(zone.trim_matches(|c: char| c <= ' ')).ok_or_else(|| {
                format!(
                    "\"{text}\": the zone \"{}\" is not Z, an offset or UTC/GMT with an offset \
                     (Spark's zone names are not read)",
                    zone.trim()
                )
            })?
        }
    };
    let days = days_from_civil(year, month, day).ok_or_else(not)?;
    let seconds = (hour * 60 + minute) * 60 + second - offset_seconds;
    days.checked_mul(MICROS_PER_DAY)
        .and_then(|d| d.checked_add(seconds * MICROS_PER_SECOND))
        .and_then(|t| t.checked_add(micros))
        .ok_or_else(|| format!("\"{text}\" is out of the range of a timestamp"))
}

/// The form most producers write, `yyyy-mm-ddThh:mm:ss[.f]Z` (RFC 3339 in UTC, up to nine
/// fraction digits), read at fixed positions: in microseconds since the epoch, as the full
/// grammar of [`parse_timestamp`] reads it, or None for any other text (the full grammar then
/// reads or refuses it). It is a fifth of the cost of the full grammar, which the benchmark's
/// readings spent 5 % of the worker's CPU in.
fn rfc3339_utc(s: &[u8]) -> Option<i64> {
    if s.len() < 20 || s.len() > 30 || s[s.len() - 1] != b'Z' {
        return None;
    }
    if s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let two = |at: usize| match leading_digits(&s[at..at + 2], 2) {
        (value, 2) => Some(value),
        _ => None,
    };
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    let micros = match &s[19..s.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] => match leading_digits(fraction, 6) {
            (value, digits) if digits == fraction.len() => fraction_micros(value, digits),
            _ => return None,
        },
        _ => return None,
    };
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)?;
    let seconds = (hour * 60 + minute) * 60 + second;
    Some(days * MICROS_PER_DAY + seconds * MICROS_PER_SECOND + micros)
}

/// The microseconds of a fraction of a second written with `digits` digits, the first six of
/// which read `kept`: digits past the sixth are cut off, as Spark cuts them.
fn fraction_micros(kept: i64, digits: usize) -> i64 {
    kept * 10i64.pow(6 - digits.min(6) as u32)
}

/// Whether a text starting with digits is a time (`h[h]:`), not a year.
fn time_first(s: &[u8]) -> bool {
    let (_, digits) = leading_digits(s, 2);
    s.get(digits) == Some(&b':')
}

/// The offset of a zone: `Z`, an offset, or `UTC`/`GMT`/`UT` with an optional offset.
fn zone_offset_seconds(zone: &str) -> Option<i64> {
    if zone == "Z" {
        return Some(0);
    }
    let repaired = repair_offset(zone);
    let zone = repaired.as_str();
    for prefix in ["UTC", "GMT", "UT"] {
        if let Some(rest) = zone.strip_prefix(prefix) {
            if rest.is_empty() {
                return Some(0);
            }
            if rest.starts_with(['+', '-']) {
                return offset_seconds(rest);
            }
            // `UTC` matched as `UT` followed by `C` and the like are not offsets.
            if prefix != "UT" {
                return None;
            }
        }
    }
    if zone.starts_with(['+', '-']) {
        return offset_seconds(zone);
    }
    None
}

/// Java's ZoneOffset.of, in seconds (crds' reading of the same text, for the `timeZone` option).
fn offset_seconds(offset: &str) -> Option<i64> {
    tributary_crds::datetime::offset_seconds(offset).map(i64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2026, 1, 2), Some(20455));
        assert_eq!(days_from_civil(1, 1, 1), Some(-719_162));
        assert_eq!(days_from_civil(-1, 1, 1), Some(-719_893));
        assert_eq!(days_from_civil(2023, 2, 29), None);
        assert_eq!(days_from_civil(2024, 2, 29), Some(19782));
    }

    /// The shortcut reads every text it takes as the full grammar does, and leaves the rest
    /// to it: the texts are the shortcut's form with each byte position replaced in turn by
    /// each byte that matters to it (digits, the separators, letters, a space), at every
    /// fraction length, over dates whose day and month test the calendar's edges.
    #[test]
    fn the_rfc3339_shortcut_reads_as_the_full_grammar_or_not_at_all() {
        let full = |text: &str| full_timestamp(text, false, &Zone::Fixed(0));
        let mut taken = 0;
        let mut compared = 0;
        for base in [
            "2026-12-02T14:22:57Z",
            "2024-02-29T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-04-31T12:00:00Z",
            "2026-13-01T24:00:60Z",
            "2026-12-02T24:00:00Z",
            "2026-12-02T23:60:00Z",
            "2026-12-02T23:59:60Z",
            "2026-00-00T00:00:00Z",
        ] {
            for fraction in ["", ".", ".1", ".123", ".123456", ".1234567", ".123456789"] {
                let text = format!("{}{fraction}Z", &base[..19]);
                for at in 0..=text.len() {
                    for replacement in [
                        None,
                        Some(b'0'),
                        Some(b'9'),
                        Some(b'-'),
                        Some(b':'),
                        Some(b'T'),
                        Some(b' '),
                        Some(b'.'),
                        Some(b'Z'),
                        Some(b'a'),
                        Some(b'+'),
                    ] {
                        let mut bytes = text.clone().into_bytes();
                        match replacement {
                            Some(b) if at < bytes.len() => bytes[at] = b,
                            Some(_) => continue,
                            None if at < bytes.len() => {
                                bytes.remove(at);
                            }
                            None => bytes.push(b'Z'),
                        }
                        let Ok(variant) = String::from_utf8(bytes) else {
                            continue;
                        };
                        compared += 1;
                        if let Some(micros) = rfc3339_utc(variant.as_bytes()) {
                            taken += 1;
                            assert_eq!(Ok(micros), full(&variant), "{variant}");
                        }
                        assert_eq!(
                            parse_timestamp(&variant, false, &Zone::Fixed(0)),
                            full(&variant),
                            "{variant}"
                        );
                    }
                }
            }
        }
        // Both sides are exercised: texts the shortcut reads, and many it leaves.
        assert!(
            taken > 1_000 && compared > 10 * taken,
            "{taken} of {compared}"
        );
        assert_eq!(
            rfc3339_utc(b"2026-12-02T14:22:57.1234567Z"),
            Some(1_796_221_377_123_456)
        );
        assert_eq!(
            rfc3339_utc(b"2026-12-02T14:22:57.5Z"),
            Some(1_796_221_377_500_000)
        );
        assert_eq!(rfc3339_utc(b"2026-12-02 14:22:57Z"), None);
    }

    #[test]
    fn offsets_are_read_as_javas_zone_offset_after_sparks_repairs() {
        assert_eq!(zone_offset_seconds("+01:00"), Some(3600));
        assert_eq!(zone_offset_seconds("+0100"), Some(3600));
        assert_eq!(zone_offset_seconds("+01"), Some(3600));
        assert_eq!(zone_offset_seconds("+1"), Some(3600));
        assert_eq!(zone_offset_seconds("+1:00"), Some(3600));
        assert_eq!(zone_offset_seconds("+01:5"), Some(3900));
        assert_eq!(zone_offset_seconds("-05:30"), Some(-19800));
        assert_eq!(zone_offset_seconds("+01:00:30"), Some(3630));
        assert_eq!(zone_offset_seconds("+18:00"), Some(64800));
        assert_eq!(zone_offset_seconds("+19:00"), None);
        assert_eq!(zone_offset_seconds("GMT+01:00"), Some(3600));
        assert_eq!(zone_offset_seconds("UTC"), Some(0));
        assert_eq!(zone_offset_seconds("z"), None);
        assert_eq!(zone_offset_seconds("Zjunk"), None);
        assert_eq!(zone_offset_seconds("Europe/Paris"), None);
        assert_eq!(zone_offset_seconds("+01:00junk"), None);
    }
}
