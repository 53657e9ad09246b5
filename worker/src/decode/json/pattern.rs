//! Dates and timestamps read with a `timestampFormat` / `dateFormat` pattern (compiled by
//! `tributary_crds::datetime`), as Spark's `Iso8601TimestampFormatter` and
//! `Iso8601DateFormatter` read them: the whole text must match (letters in any case),
//! numbers of a fixed width take exactly that many digits and a variable-width number followed
//! by fixed-width ones leaves them their digits (Java's adjacent value parsing), fields are
//! checked strictly (no 30 February, no hour 24), and missing fields take Spark's defaults
//! (1970-01-01, midnight, AM; the zone of the `timeZone` option when the text has no offset).

use tributary_crds::datetime::{Item, NumberField, OffsetStyle, Pattern, Zone, month_name};

use super::time::{Refusal, days_from_civil, local_to_utc_micros};

/// The fields a pattern read, before they are resolved.
#[derive(Clone, Debug, Default)]
struct Fields {
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    hour_of_day: Option<i64>,
    clock_hour: Option<i64>,
    pm: Option<bool>,
    minute: Option<i64>,
    second: Option<i64>,
    nanos: Option<i64>,
    offset_seconds: Option<i64>,
}

/// Why a field could not be set: the text gave it twice with different values.
const CONFLICT: &str = "gives a field twice with different values";

impl Fields {
    fn set(slot: &mut Option<i64>, value: i64) -> Result<(), &'static str> {
        match slot {
            Some(old) if *old != value => Err(CONFLICT),
            _ => {
                *slot = Some(value);
                Ok(())
            }
        }
    }

    fn set_number(&mut self, field: NumberField, value: i64) -> Result<(), &'static str> {
        let slot = match field {
            NumberField::Year => &mut self.year,
            NumberField::Month => &mut self.month,
            NumberField::Day => &mut self.day,
            NumberField::HourOfDay => &mut self.hour_of_day,
            NumberField::ClockHourOfAmPm => &mut self.clock_hour,
            NumberField::Minute => &mut self.minute,
            NumberField::Second => &mut self.second,
        };
        Fields::set(slot, value)
    }
}

/// Reads `text` with `pattern` into its fields, or None when it does not match.
fn read_fields(pattern: &Pattern, text: &str) -> Option<Fields> {
    let bytes = text.as_bytes();
    let mut fields = Fields::default();
    let end = match_items(&pattern.items, bytes, 0, &mut fields)?;
    (end == bytes.len()).then_some(fields)
}

/// Matches `items` from `at`; returns where they end.
fn match_items(items: &[Item], text: &[u8], mut at: usize, fields: &mut Fields) -> Option<usize> {
    for (index, item) in items.iter().enumerate() {
        at = match item {
            Item::Literal(literal) => {
                let literal = literal.as_bytes();
                let end = at + literal.len();
                let candidate = text.get(at..end)?;
                candidate.eq_ignore_ascii_case(literal).then_some(end)?
            }
            Item::Number { field, min, max } => {
                let subsequent = if min == max {
                    0
                } else {
                    adjacent_width(&items[index + 1..])
                };
                let (value, end) = read_number(text, at, *min, *max, subsequent)?;
                // Spark reads `yyyy` as Java's `uuuu` (the proleptic year, sign style
                // EXCEEDS_PAD): in strict parsing more digits than the letters need a `+`,
                // which is not read here, so `yyyy` takes exactly four digits.
                if *field == NumberField::Year && *min >= 4 && end - at > *min {
                    return None;
                }
                fields.set_number(*field, value).ok()?;
                end
            }
            Item::ReducedYear => {
                let (value, end) = read_number(text, at, 2, 2, 0)?;
                Fields::set(&mut fields.year, 2000 + value).ok()?;
                end
            }
            Item::MonthText { full } => {
                let (month, end) = (1..=12).find_map(|month| {
                    let name = month_name(month, *full).as_bytes();
                    let end = at + name.len();
                    text.get(at..end)
                        .filter(|candidate| candidate.eq_ignore_ascii_case(name))
                        .map(|_| (month as i64, end))
                })?;
                Fields::set(&mut fields.month, month).ok()?;
                end
            }
            Item::Fraction { max } => {
                let digits = text[at..]
                    .iter()
                    .take(*max)
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return None;
                }
                let mut nanos = 0i64;
                for &b in &text[at..at + digits] {
                    nanos = nanos * 10 + i64::from(b - b'0');
                }
                nanos *= 10i64.pow(9 - digits as u32);
                Fields::set(&mut fields.nanos, nanos).ok()?;
                at + digits
            }
            Item::AmPm => {
                let candidate = text.get(at..at + 2)?;
                let pm = if candidate.eq_ignore_ascii_case(b"AM") {
                    false
                } else if candidate.eq_ignore_ascii_case(b"PM") {
                    true
                } else {
                    return None;
                };
                if fields.pm.is_some_and(|old| old != pm) {
                    return None;
                }
                fields.pm = Some(pm);
                at + 2
            }
            Item::Offset(style) => {
                let (seconds, end) = read_offset(text, at, style)?;
                Fields::set(&mut fields.offset_seconds, seconds).ok()?;
                end
            }
            Item::Optional(inner) => {
                let mut trial = fields.clone();
                match match_items(inner, text, at, &mut trial) {
                    Some(end) => {
                        *fields = trial;
                        end
                    }
                    None => at,
                }
            }
        };
    }
    Some(at)
}

/// The digits that fixed-width numbers right after a variable-width one need (Java reserves
/// them: `yyyyMMdd` reads 20240105 as 2024, 01, 05).
fn adjacent_width(rest: &[Item]) -> usize {
    let mut width = 0;
    for item in rest {
        match item {
            Item::Number { min, max, .. } if min == max => width += max,
            Item::ReducedYear => width += 2,
            _ => break,
        }
    }
    width
}

/// Java's NumberPrinterParser in strict mode: at least `min` and at most `max` digits, less
/// the `subsequent` digits that fixed-width numbers after it take. No sign is read (every
/// field here is positive; a signed value would be out of its range).
fn read_number(
    text: &[u8],
    at: usize,
    min: usize,
    max: usize,
    subsequent: usize,
) -> Option<(i64, usize)> {
    let available = text[at..]
        .iter()
        .take(max + subsequent)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let take = if subsequent > 0 {
        min.max(available.saturating_sub(subsequent)).min(max)
    } else {
        available.min(max)
    };
    if take < min || available < take {
        return None;
    }
    let mut value = 0i64;
    for &b in &text[at..at + take] {
        value = value.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some((value, at + take))
}

/// Java's OffsetIdPrinterParser in strict mode: the no-offset text first (any case), then a
/// sign, two hour digits and the minutes (optional for X and x, after a colon for XXX).
fn read_offset(text: &[u8], at: usize, style: &OffsetStyle) -> Option<(i64, usize)> {
    let none = style.no_offset.as_bytes();
    if at >= text.len() {
        return None;
    }
    if text
        .get(at..at + none.len())
        .is_some_and(|c| c.eq_ignore_ascii_case(none))
    {
        return Some((0, at + none.len()));
    }
    let sign = match text[at] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |from: usize| -> Option<i64> {
        let d = text.get(from..from + 2)?;
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| i64::from(d[0] - b'0') * 10 + i64::from(d[1] - b'0'))
    };
    let hours = two(at + 1)?;
    let mut end = at + 3;
    let minutes_at = if style.colon {
        (text.get(end) == Some(&b':')).then_some(end + 1)
    } else {
        Some(end)
    };
    let minutes = match minutes_at.and_then(|from| two(from).map(|m| (m, from + 2))) {
        Some((minutes, after)) => {
            end = after;
            minutes
        }
        None if style.minutes_optional => 0,
        None => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    let total = hours * 3600 + minutes * 60;
    (total <= 18 * 3600).then_some((sign * total, end))
}

/// Year, month and day with Spark's defaults (1970, January, the 1st), checked strictly.
fn resolve_date(fields: &Fields, text: &str) -> Result<i64, Refusal> {
    let year = fields.year.unwrap_or(1970);
    let month = fields.month.unwrap_or(1);
    let day = fields.day.unwrap_or(1);
    // Spark reads the proleptic year (year 0 is 1 BC).
    if fields.year.is_some_and(|y| y > 999_999_999)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return Err(format!("\"{text}\" is not a valid date"));
    }
    days_from_civil(year, month as u32, day as u32)
        .ok_or_else(|| format!("\"{text}\" is not a valid date"))
}

/// Hour, minute, second and nanoseconds of the day, checked strictly: `h` is 1-12 (12 is
/// midnight or noon), AM when no `a` says otherwise; an `a` alone is noon or midnight.
fn resolve_time(fields: &Fields, text: &str) -> Result<i64, Refusal> {
    let invalid = || format!("\"{text}\" is not a valid time of day");
    let pm = fields.pm.unwrap_or(false);
    let hour_of_ampm = match fields.clock_hour {
        Some(h) if !(1..=12).contains(&h) => return Err(invalid()),
        Some(h) => Some(h % 12),
        None => None,
    };
    let hour = match (fields.hour_of_day, hour_of_ampm) {
        (Some(h), _) if h > 23 => return Err(invalid()),
        (Some(h), Some(from_clock)) => {
            // Both given: they must agree, as Java cross-checks them.
            let clock = from_clock + if pm { 12 } else { 0 };
            if fields.pm.is_some() && h != clock || fields.pm.is_none() && h % 12 != from_clock {
                return Err(invalid());
            }
            h
        }
        (Some(h), None) => {
            if fields.pm.is_some_and(|pm| pm != (h >= 12)) {
                return Err(invalid());
            }
            h
        }
        (None, Some(h)) => h + if pm { 12 } else { 0 },
        (None, None) => {
            if pm {
                12
            } else {
                0
            }
        }
    };
    let minute = fields.minute.unwrap_or(0);
    let second = fields.second.unwrap_or(0);
    if minute > 59 || second > 59 {
        return Err(invalid());
    }
    Ok(((hour * 60 + minute) * 60 + second) * 1_000_000 + fields.nanos.unwrap_or(0) / 1000)
}

/// A timestamp read with `pattern`, in microseconds since the epoch; `zone` when the text has
/// no offset.
pub(crate) fn timestamp_with_pattern(
    pattern: &Pattern,
    text: &str,
    zone: &Zone,
) -> Result<i64, Refusal> {
    let fields = read_fields(pattern, text)
        .ok_or_else(|| format!("\"{text}\" does not match the timestampFormat"))?;
    let days = resolve_date(&fields, text)?;
    let micros_of_day = resolve_time(&fields, text)?;
    let zone = match fields.offset_seconds {
        Some(seconds) => Zone::Fixed(seconds as i32),
        None => *zone,
    };
    local_to_utc_micros(days, micros_of_day, &zone)
        .ok_or_else(|| format!("\"{text}\" is out of the range of a timestamp"))
}

/// A timestamp without time zone read with `pattern`, in microseconds since the epoch of the
/// local date and time; a text that holds an offset is refused, as Spark reads it as null.
pub(crate) fn timestamp_ntz_with_pattern(pattern: &Pattern, text: &str) -> Result<i64, Refusal> {
    let fields = read_fields(pattern, text)
        .ok_or_else(|| format!("\"{text}\" does not match the timestampNTZFormat"))?;
    if fields.offset_seconds.is_some() {
        return Err(format!(
            "\"{text}\" has a time zone, which a timestamp_ntz column refuses"
        ));
    }
    let days = resolve_date(&fields, text)?;
    let micros_of_day = resolve_time(&fields, text)?;
    local_to_utc_micros(days, micros_of_day, &Zone::Fixed(0))
        .ok_or_else(|| format!("\"{text}\" is out of the range of a timestamp"))
}

/// A date read with `pattern`, in days since the epoch (time fields are read and ignored).
pub(crate) fn date_with_pattern(pattern: &Pattern, text: &str) -> Result<i32, Refusal> {
    let fields = read_fields(pattern, text)
        .ok_or_else(|| format!("\"{text}\" does not match the dateFormat"))?;
    let days = resolve_date(&fields, text)?;
    resolve_time(&fields, text)?;
    i32::try_from(days).map_err(|_| format!("\"{text}\" is out of the range of a date"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(pattern: &str, text: &str) -> Option<i64> {
        let pattern = Pattern::compile(pattern).expect("pattern");
        timestamp_with_pattern(&pattern, text, &Zone::Fixed(0)).ok()
    }

    const JAN_5_2024: i64 = 19727 * 86_400_000_000;

    #[test]
    fn timestamps_match_the_whole_pattern() {
        let hour = 3_600_000_000;
        assert_eq!(
            ts("yyyy-MM-dd HH:mm:ss", "2024-01-05 10:00:00"),
            Some(JAN_5_2024 + 10 * hour)
        );
        assert_eq!(ts("yyyy-MM-dd HH:mm:ss", "2024-1-05 10:00:00"), None);
        assert_eq!(ts("yyyy-MM-dd HH:mm:ss", "2024-01-05 10:00:00 "), None);
        assert_eq!(ts("yyyy-MM-dd HH:mm", "2024-02-30 10:00"), None);
        assert_eq!(
            ts("dd/MM/yyyy h:mm a", "05/01/2024 1:30 pm"),
            Some(JAN_5_2024 + 13 * hour + 30 * 60_000_000)
        );
        assert_eq!(
            ts("dd/MM/yyyy h:mm a", "05/01/2024 12:00 AM"),
            Some(JAN_5_2024)
        );
        assert_eq!(
            ts("dd/MM/yyyy hh:mm", "05/01/2024 12:00"),
            Some(JAN_5_2024),
            "no a: AM"
        );
        assert_eq!(
            ts("yyyyMMddHHmmss", "20240105100000"),
            Some(JAN_5_2024 + 10 * hour)
        );
        assert_eq!(
            ts("yyyy-MM-dd'T'HH:mm:ssXXX", "2024-01-05T10:00:00+01:00"),
            Some(JAN_5_2024 + 9 * hour)
        );
        assert_eq!(
            ts("yyyy-MM-dd'T'HH:mm:ssXXX", "2024-01-05t10:00:00z"),
            Some(JAN_5_2024 + 10 * hour)
        );
        assert_eq!(
            ts("yyyy-MM-dd HH:mm:ss[.SSS]", "2024-01-05 00:00:00.5"),
            Some(JAN_5_2024 + 500_000)
        );
        assert_eq!(
            ts("yyyy-MM-dd HH:mm:ss[.SSS]", "2024-01-05 00:00:00.1234"),
            None
        );
        assert_eq!(ts("dd MMM yyyy", "05 jan 2024"), Some(JAN_5_2024));
        assert_eq!(ts("dd MMMM yyyy", "05 January 2024"), Some(JAN_5_2024));
        assert_eq!(ts("yy-MM-dd", "24-01-05"), Some(JAN_5_2024));
        assert_eq!(ts("HH:mm", "00:00"), Some(0), "no date: 1970-01-01");
    }

    #[test]
    fn dates_take_their_fields_and_ignore_the_time() {
        let pattern = Pattern::compile("dd/MM/yyyy[ HH:mm]").expect("pattern");
        assert_eq!(date_with_pattern(&pattern, "05/01/2024"), Ok(19727));
        assert_eq!(date_with_pattern(&pattern, "05/01/2024 23:59"), Ok(19727));
        assert!(date_with_pattern(&pattern, "05/01/2024 24:00").is_err());
        assert!(date_with_pattern(&pattern, "2024-01-05").is_err());
    }
}
