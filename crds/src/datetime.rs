//! Spark's datetime patterns (the `timestampFormat` and `dateFormat` options of `from_json`)
//! and its time zone ids (the `timeZone` option), compiled once: validation refuses what
//! Tributary does not read exactly as Spark does, and the worker's decoder matches strings
//! against the compiled items.
//!
//! Spark builds a `java.time` formatter from the pattern: case-insensitive, proleptic ISO
//! calendar, STRICT resolution, fractions of a second of 1 up to the number of `S` letters.
//! The letters read here are the ones ingestion formats use: `y` (`yy` is 2000-2099), `M`
//! (`MMM` Jan, `MMMM` January), `d`, `H`, `h` with `a`, `m`, `s`, `S`, the offsets `X`, `x`,
//! `Z`, quoted text and optional sections `[...]`. Zone names (`z`, `VV`, `O`), week-based
//! fields, day of year and the like are refused with a message.

/// A field read as digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberField {
    Year,
    Month,
    Day,
    /// `H`: 0-23.
    HourOfDay,
    /// `h`: 1-12, with `a` for the half of the day (AM when absent, as Spark assumes).
    ClockHourOfAmPm,
    Minute,
    Second,
}

/// How an offset is written (Java's appendOffset patterns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetStyle {
    /// `+HH:MM` (true) or `+HHMM` (false).
    pub colon: bool,
    /// Minutes may be left out (`X` and `x`: `+HH` alone is read).
    pub minutes_optional: bool,
    /// The text of a zero offset, tried first: `Z` (X), `+00` (x), `+0000` (xx, Z),
    /// `+00:00` (xxx).
    pub no_offset: &'static str,
}

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// Text matched ignoring ASCII case.
    Literal(String),
    /// Digits: at least `min`, at most `max` (both the same for a fixed width).
    Number {
        field: NumberField,
        min: usize,
        max: usize,
    },
    /// `yy`: two digits, the year 2000 + n.
    ReducedYear,
    /// `MMM` (Jan) or `MMMM` (January), English, any case.
    MonthText {
        full: bool,
    },
    /// `S...S`: 1 up to `max` digits of a fraction of a second.
    Fraction {
        max: usize,
    },
    /// `a`: AM or PM, any case.
    AmPm,
    Offset(OffsetStyle),
    /// `[...]`: read when it matches, skipped when not.
    Optional(Vec<Item>),
}

/// A compiled pattern, with what the date-time part says about which fields it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub items: Vec<Item>,
}

impl Pattern {
    /// Compiles a Spark datetime pattern, or says which part of it is not read.
    pub fn compile(pattern: &str) -> Result<Pattern, String> {
        if pattern.is_empty() {
            return Err("is empty".into());
        }
        let chars: Vec<char> = pattern.chars().collect();
        let mut at = 0;
        let items = compile_items(&chars, &mut at, 0)?;
        if at < chars.len() {
            return Err(format!("has a ']' at {} without its '['", at + 1));
        }
        Ok(Pattern { items })
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The English name of a month (1-12), full or in three letters.
pub fn month_name(month: usize, full: bool) -> &'static str {
    let name = MONTHS[month - 1];
    if full { name } else { &name[..3] }
}

fn compile_items(chars: &[char], at: &mut usize, depth: usize) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    while *at < chars.len() {
        let c = chars[*at];
        match c {
            '[' => {
                if depth >= 4 {
                    return Err("nests optional sections more than 4 deep".into());
                }
                *at += 1;
                let inner = compile_items(chars, at, depth + 1)?;
                if chars.get(*at) != Some(&']') {
                    return Err("has a '[' without its ']'".into());
                }
                *at += 1;
                items.push(Item::Optional(inner));
            }
            ']' => {
                if depth == 0 {
                    return Err(format!("has a ']' at {} without its '['", *at + 1));
                }
                return Ok(items);
            }
            '\'' => {
                let start = *at;
                *at += 1;
                let mut text = String::new();
                loop {
                    match chars.get(*at) {
                        None => {
                            return Err(format!("has a quote at {} that is not closed", start + 1));
                        }
                        Some('\'') if chars.get(*at + 1) == Some(&'\'') => {
                            text.push('\'');
                            *at += 2;
                        }
                        Some('\'') => {
                            *at += 1;
                            break;
                        }
                        Some(other) => {
                            text.push(*other);
                            *at += 1;
                        }
                    }
                }
                // '' alone is a quote character.
                if text.is_empty() {
                    text.push('\'');
                }
                items.push(Item::Literal(text));
            }
            c if c.is_ascii_alphabetic() => {
                let count = chars[*at..].iter().take_while(|&&d| d == c).count();
                *at += count;
                items.push(letter(c, count)?);
            }
            '{' | '}' | '#' => {
                return Err(format!("uses '{c}', which Spark reserves"));
            }
            other => {
                items.push(Item::Literal(other.to_string()));
                *at += 1;
            }
        }
    }
    Ok(items)
}

fn letter(c: char, count: usize) -> Result<Item, String> {
    let number = |field, min, max| Item::Number { field, min, max };
    let numeric = |field| -> Result<Item, String> {
        match count {
            1 => Ok(number(field, 1, 19)),
            2 => Ok(number(field, 2, 2)),
            _ => Err(format!("has {count} '{c}' letters; use 1 or 2")),
        }
    };
    match c {
        'y' => match count {
            2 => Ok(Item::ReducedYear),
            1 | 3 => Ok(number(NumberField::Year, count, 19)),
            4..=6 => Ok(number(NumberField::Year, count, 19)),
            _ => Err(format!("has {count} 'y' letters; use at most 6")),
        },
        'M' | 'L' => match count {
            1 | 2 => numeric(NumberField::Month),
            3 => Ok(Item::MonthText { full: false }),
            4 => Ok(Item::MonthText { full: true }),
            _ => Err(format!("has {count} '{c}' letters; use 1 to 4")),
        },
        'd' => numeric(NumberField::Day),
        'H' => numeric(NumberField::HourOfDay),
        'h' => numeric(NumberField::ClockHourOfAmPm),
        'm' => numeric(NumberField::Minute),
        's' => numeric(NumberField::Second),
        'S' if count <= 9 => Ok(Item::Fraction { max: count }),
        'S' => Err(format!("has {count} 'S' letters; use at most 9")),
        'a' if count == 1 => Ok(Item::AmPm),
        'a' => Err(format!("has {count} 'a' letters; use one")),
        'X' | 'x' if count <= 3 => Ok(Item::Offset(OffsetStyle {
            colon: count == 3,
            minutes_optional: count == 1,
            no_offset: match (c, count) {
                ('X', _) => "Z",
                (_, 1) => "+00",
                (_, 2) => "+0000",
                _ => "+00:00",
            },
        })),
        'Z' if count <= 3 => Ok(Item::Offset(OffsetStyle {
            colon: false,
            minutes_optional: false,
            no_offset: "+0000",
        })),
        'X' | 'x' | 'Z' => Err(format!(
            "has {count} '{c}' letters; Tributary reads offsets written as {c} (+HHmm), {c}{c} (+HHMM) or {c}{c}{c} (+HH:MM)"
        )),
        'z' | 'V' | 'O' | 'v' => Err(format!(
            "uses '{c}' (a time zone name), which Tributary does not read: write offsets (X, XXX) in the data, or set timeZone"
        )),
        'E' | 'F' | 'q' | 'Q' => Err(format!(
            "uses '{c}', which Spark only writes and never reads"
        )),
        'Y' | 'w' | 'W' | 'u' | 'e' | 'c' => Err(format!(
            "uses '{c}' (a week-based field), which Spark refuses since 3.0"
        )),
        other => Err(format!(
            "uses '{other}', which Tributary does not read (it reads y M d H h m s S a X x Z, quoted text and [optional] sections)"
        )),
    }
}

/// A time zone of the `timeZone` option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// A fixed offset east of UTC, in seconds.
    Fixed(i32),
    /// A region of the tz database, with its daylight saving rules.
    Region(chrono_tz::Tz),
}

impl Zone {
    /// Reads a zone id as Spark's `timeZone` option does (Java's `ZoneId.of` after Spark's
    /// repairs of `+h:mm` and `+hh:m`): `UTC`, `Z`, `GMT`, offsets (`+01:00`, `-0530`, `+1`),
    /// `UTC+01:00`, and region ids (`Europe/Paris`). Java's three-letter aliases (`PST`, `CST`)
    /// are refused: they are not tz database regions.
    pub fn parse(text: &str) -> Result<Zone, String> {
        let not = || {
            format!(
                "\"{text}\" is not a time zone: use a region such as Europe/Paris, UTC, or an offset such as +01:00"
            )
        };
        let repaired = repair_offset(text);
        let id = repaired.as_str();
        if id == "Z" {
            return Ok(Zone::Fixed(0));
        }
        for prefix in ["UTC", "GMT", "UT"] {
            if let Some(rest) = id.strip_prefix(prefix) {
                if rest.is_empty() {
                    return Ok(Zone::Fixed(0));
                }
                if rest.starts_with(['+', '-']) {
                    return offset_seconds(rest).map(Zone::Fixed).ok_or_else(not);
                }
            }
        }
        if id.starts_with(['+', '-']) {
            return offset_seconds(id).map(Zone::Fixed).ok_or_else(not);
        }
        if !id.contains('/') && id.len() <= 4 && id.chars().all(|c| c.is_ascii_uppercase()) {
            // EST, MST and HST are fixed zones in both Java and the tz database; the other
            // short ids are Java's own aliases, which the tz database does not have.
            if !matches!(id, "EST" | "MST" | "HST") {
                return Err(format!(
                    "\"{text}\" is a short zone alias; name the region (America/Los_Angeles, Europe/Paris) or an offset"
                ));
            }
        }
        id.parse::<chrono_tz::Tz>()
            .map(Zone::Region)
            .map_err(|_| not())
    }
}

/// Spark's repairs before Java reads a zone id: `+h:` becomes `+0h:`, a final `+hh:m` becomes
/// `+hh:0m`. The decoder repairs a timestamp's written zone the same way.
pub fn repair_offset(zone: &str) -> String {
    let mut s = zone.to_string();
    let b = s.as_bytes();
    if let Some(i) = (0..b.len().saturating_sub(2))
        .find(|&i| matches!(b[i], b'+' | b'-') && b[i + 1].is_ascii_digit() && b[i + 2] == b':')
    {
        s.insert(i + 1, '0');
    }
    let b = s.as_bytes();
    let n = b.len();
    if n >= 5
        && matches!(b[n - 5], b'+' | b'-')
        && b[n - 4].is_ascii_digit()
        && b[n - 3].is_ascii_digit()
        && b[n - 2] == b':'
        && b[n - 1].is_ascii_digit()
    {
        s.insert(n - 1, '0');
    }
    s
}

/// Java's `ZoneOffset.of`: `+h`, `+hh`, `+hhmm`, `+hh:mm`, `+hhmmss`, `+hh:mm:ss`, at most 18
/// hours.
pub fn offset_seconds(offset: &str) -> Option<i32> {
    let b = offset.as_bytes();
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let two = |at: usize, colon: bool| -> Option<i32> {
        if colon && b.get(at - 1) != Some(&b':') {
            return None;
        }
        let d = b.get(at..at + 2)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(i32::from(d[0] - b'0') * 10 + i32::from(d[1] - b'0'))
    };
    let (hours, minutes, seconds) = match b.len() {
        2 if b[1].is_ascii_digit() => (i32::from(b[1] - b'0'), 0, 0),
        3 => (two(1, false)?, 0, 0),
        5 => (two(1, false)?, two(3, false)?, 0),
        6 => (two(1, false)?, two(4, true)?, 0),
        7 => (two(1, false)?, two(3, false)?, two(5, false)?),
        9 => (two(1, false)?, two(4, true)?, two(7, true)?),
        _ => return None,
    };
    if hours > 18 || minutes > 59 || seconds > 59 {
        return None;
    }
    let total = hours * 3600 + minutes * 60 + seconds;
    (total <= 18 * 3600).then_some(sign * total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_to_items() {
        let pattern = Pattern::compile("yyyy-MM-dd'T'HH:mm:ss[.SSS][XXX]").expect("compiles");
        assert_eq!(pattern.items.len(), 13);
        assert_eq!(
            pattern.items[0],
            Item::Number {
                field: NumberField::Year,
                min: 4,
                max: 19
            }
        );
        assert_eq!(pattern.items[5], Item::Literal("T".into()));
        assert_eq!(
            pattern.items[11],
            Item::Optional(vec![Item::Literal(".".into()), Item::Fraction { max: 3 }])
        );
        assert!(Pattern::compile("dd/MMM/yyyy h:mm a").is_ok());
        assert!(Pattern::compile("'it''s' yy").is_ok());
    }

    #[test]
    fn patterns_tributary_does_not_read_are_refused_with_the_letter() {
        for (pattern, says) in [
            ("yyyy-MM-dd HH:mm z", "'z' (a time zone name)"),
            ("YYYY-ww", "'Y' (a week-based field)"),
            ("EEE dd", "'E', which Spark only writes"),
            ("yyyy-DDD", "'D', which Tributary does not read"),
            ("yyyy-MM-dd'T", "not closed"),
            ("yyyy[-MM", "without its ']'"),
            ("yyyy]", "without its '['"),
            ("XXXX", "'X' letters"),
            ("", "is empty"),
        ] {
            let error = Pattern::compile(pattern).expect_err(pattern);
            assert!(error.contains(says), "{pattern}: {error}");
        }
    }

    #[test]
    fn zones_read_as_sparks_time_zone_option() {
        assert_eq!(Zone::parse("UTC"), Ok(Zone::Fixed(0)));
        assert_eq!(Zone::parse("+01:00"), Ok(Zone::Fixed(3600)));
        assert_eq!(Zone::parse("+1:00"), Ok(Zone::Fixed(3600)));
        assert_eq!(Zone::parse("-0530"), Ok(Zone::Fixed(-19800)));
        assert_eq!(Zone::parse("GMT+02:00"), Ok(Zone::Fixed(7200)));
        assert_eq!(
            Zone::parse("Europe/Paris"),
            Ok(Zone::Region(chrono_tz::Tz::Europe__Paris))
        );
        assert!(Zone::parse("PST").expect_err("alias").contains("alias"));
        assert!(Zone::parse("Mars/Olympus").is_err());
        assert!(Zone::parse("+19:00").is_err());
    }
}
