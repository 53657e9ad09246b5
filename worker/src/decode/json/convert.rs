//! One JSON value -> one cell of a Spark type, by the rules of Spark's `from_json` (its
//! JacksonParser with the default options). A value that Spark would not read (Spark: null, the
//! record marked corrupt) or would read in a way this decoder cannot reproduce exactly is an
//! error naming why; the caller rescues it or fails the record. Each rule says which it is.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tributary_crds::DataType;

use super::parse::{Doc, Member, Value, is_integer};
use super::pattern::{date_with_pattern, timestamp_ntz_with_pattern, timestamp_with_pattern};
use super::time::{Formats, parse_date, parse_timestamp};

/// A decoded value, before it goes into an Arrow array. Strings borrow from the record's
/// value when they hold no escape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    I8(i8),
    I16(i16),
    /// int, and date (days since the epoch).
    I32(i32),
    /// long, and timestamps (microseconds since the epoch).
    I64(i64),
    F32(f32),
    F64(f64),
    /// A decimal's unscaled value.
    Decimal(i128),
    Str(Cow<'a, str>),
    Bin(Vec<u8>),
    List(Vec<Cell<'a>>),
    Map(Vec<(Cow<'a, str>, Cell<'a>)>),
    Struct(Vec<Cell<'a>>),
}

/// Base64 as Jackson reads it for Spark's binary columns: the standard alphabet with padding;
/// Jackson ignores bits left over in the last character, so does this.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Converts `value` (read into `doc`) to `data_type`. Errors say what the value is and why it
/// is not read. Dates and timestamps follow `formats` (from_json's dateFormat,
/// timestampFormat, timeZone).
pub(crate) fn convert<'a>(
    data_type: &DataType,
    value: Value,
    doc: &Doc<'a>,
    formats: &Formats,
) -> Result<Cell<'a>, String> {
    if let Value::Null = value {
        return Ok(Cell::Null);
    }
    // A string's text, when the value is a non-empty string.
    let text = match value {
        Value::Str(text) => Some(doc.str(text)).filter(|text| !text.is_empty()),
        _ => None,
    };
    match data_type {
        DataType::String => string(value, doc).map(Cell::Str),
        DataType::Boolean => match value {
            Value::Bool(b) => Ok(Cell::Bool(b)),
            other => Err(not_read(other, doc, "boolean", "only true and false")),
        },
        DataType::Byte => integer(value, doc, "byte", i64::from(i8::MIN), i64::from(i8::MAX))
            .map(|v| Cell::I8(v as i8)),
        DataType::Short => integer(
            value,
            doc,
            "short",
            i64::from(i16::MIN),
            i64::from(i16::MAX),
        )
        .map(|v| Cell::I16(v as i16)),
        DataType::Int => integer(value, doc, "int", i64::from(i32::MIN), i64::from(i32::MAX))
            .map(|v| Cell::I32(v as i32)),
        DataType::Long => integer(value, doc, "long", i64::MIN, i64::MAX).map(Cell::I64),
        DataType::Float => {
            floating(value, doc, "float").and_then(|(text, special)| match special {
                Some(v) => Ok(Cell::F32(v as f32)),
                None => parse_float::<f32>(text).map(Cell::F32),
            })
        }
        DataType::Double => {
            floating(value, doc, "double").and_then(|(text, special)| match special {
                Some(v) => Ok(Cell::F64(v)),
                None => match short_decimal(text) {
                    Some(v) => Ok(Cell::F64(v)),
                    None => parse_float::<f64>(text).map(Cell::F64),
                },
            })
        }
        DataType::Decimal { precision, scale } => {
            let digits: String = match (value, text) {
                (Value::Number(number), _) => doc.slice(number).to_string(),
                // Spark (locale en-US) drops every ',' and reads the rest as Java's BigDecimal.
                (_, Some(text)) => text.replace(',', ""),
                (other, None) => {
                    return Err(not_read(
                        other,
                        doc,
                        "decimal",
                        "numbers and numeric strings",
                    ));
                }
            };
            decimal(&digits, *precision, *scale)
                .map(Cell::Decimal)
                .map_err(|why| format!("{} {why}", describe(value, doc)))
        }
        DataType::Date => match (value, text) {
            // With a dateFormat Spark reads only that pattern (no fallback to its cast).
            (_, Some(text)) => match &formats.date {
                Some(pattern) => date_with_pattern(pattern, text).map(Cell::I32),
                None => parse_date(text).map(Cell::I32),
            },
            (other, None) => Err(not_read(other, doc, "date", "date strings")),
        },
        DataType::Timestamp => match (value, text) {
            // With a timestampFormat Spark reads only that pattern (no fallback to its cast).
            (_, Some(text)) => match &formats.timestamp {
                Some(pattern) => timestamp_with_pattern(pattern, text, &formats.zone),
                None => parse_timestamp(text, false, &formats.zone),
            }
            .map(Cell::I64),
            // Spark reads an integer as seconds since the epoch.
            (Value::Number(number), _) if is_integer(doc.slice(number)) => {
                let text = doc.slice(number);
                text.parse::<i64>()
                    .ok()
                    .and_then(|seconds| seconds.checked_mul(1_000_000))
                    .map(Cell::I64)
                    .ok_or_else(|| {
                        format!(
                            "{text} seconds since the epoch is out of the range of a \
                             timestamp (Spark's multiplication would overflow)"
                        )
                    })
            }
            (other, None) => Err(not_read(
                other,
                doc,
                "timestamp",
                "timestamp strings and whole seconds since the epoch",
            )),
        },
        DataType::TimestampNtz => match (value, text) {
            // With a timestampNTZFormat Spark reads only that pattern.
            (_, Some(text)) => match &formats.timestamp_ntz {
                Some(pattern) => timestamp_ntz_with_pattern(pattern, text),
                None => parse_timestamp(text, true, &formats.zone),
            }
            .map(Cell::I64),
            (other, None) => Err(not_read(other, doc, "timestamp_ntz", "timestamp strings")),
        },
        DataType::Binary => match value {
            Value::Str(text) => BASE64
                .decode(doc.str(text).as_bytes())
                .map(Cell::Bin)
                .map_err(|_| {
                    format!(
                        "{} is not base64, which Spark reads into binary",
                        describe(value, doc)
                    )
                }),
            other => Err(not_read(other, doc, "binary", "base64 strings")),
        },
        DataType::Array(element) => match value {
            Value::Array(items) => doc
                .items(items)
                .iter()
                .map(|item| convert(element, *item, doc, formats))
                .collect::<Result<Vec<_>, _>>()
                .map(Cell::List)
                .map_err(|why| format!("an element: {why}")),
            other => Err(not_read(other, doc, "array", "arrays")),
        },
        DataType::Map(key, value_type) => match value {
            Value::Object(members) => {
                if **key != DataType::String {
                    return Err(format!(
                        "Spark's from_json reads map keys as strings only, not {key}"
                    ));
                }
                let members = doc.members(members);
                no_duplicates(members, doc)?;
                members
                    .iter()
                    .map(|m| {
                        convert(value_type, m.value, doc, formats)
                            .map(|cell| (doc.string(m.key), cell))
                            .map_err(|why| format!("key \"{}\": {why}", doc.str(m.key)))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Cell::Map)
            }
            other => Err(not_read(other, doc, "map", "objects")),
        },
        DataType::Struct(fields) => match value {
            Value::Object(members) => {
                let members = doc.members(members);
                no_duplicates(members, doc)?;
                let mut cells = vec![Cell::Null; fields.len()];
                // Names match exactly, as in Spark's parser (whatever spark.sql.caseSensitive
                // says); members not in the struct are skipped, as Spark skips them.
                for member in members {
                    let name = doc.str(member.key);
                    if let Some(i) = fields.iter().position(|f| f.name == name) {
                        cells[i] = convert(&fields[i].data_type, member.value, doc, formats)
                            .map_err(|why| format!("field \"{name}\": {why}"))?;
                    }
                }
                Ok(Cell::Struct(cells))
            }
            other => Err(not_read(other, doc, "struct", "objects")),
        },
    }
}

/// Spark keeps the last of duplicate names in a struct and every duplicate key in a map; both
/// are refused here, so that the table never holds one of two values silently.
pub(crate) fn no_duplicates(members: &[Member], doc: &Doc<'_>) -> Result<(), String> {
    if members.len() < 2 {
        return Ok(());
    }
    // Most objects are small: compare pairs without allocating.
    if members.len() <= 12 {
        for (i, a) in members.iter().enumerate() {
            let name = doc.str(a.key);
            if members[i + 1..].iter().any(|b| doc.str(b.key) == name) {
                return Err(appears_twice(name));
            }
        }
        return Ok(());
    }
    let mut keys: Vec<&str> = members.iter().map(|m| doc.str(m.key)).collect();
    keys.sort_unstable();
    match keys.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(appears_twice(w[0])),
        None => Ok(()),
    }
}

/// The problem of an object that has `name` twice.
pub(crate) fn appears_twice(name: &str) -> String {
    format!("the name \"{name}\" appears twice in an object")
}

fn describe(value: Value, doc: &Doc<'_>) -> String {
    match value {
        Value::Number(number) => doc.slice(number).to_string(),
        Value::Str(text) if doc.str(text).chars().count() <= 60 => {
            format!("the string \"{}\"", doc.str(text))
        }
        Value::Str(_) => "the string".into(),
        other => doc.kind(other).into(),
    }
}

fn not_read(value: Value, doc: &Doc<'_>, type_name: &str, reads: &str) -> String {
    let what = match value {
        Value::Str(text) if doc.str(text).is_empty() => "an empty string".to_string(),
        Value::Number(number) => format!("{} ({})", doc.kind(value), doc.slice(number)),
        Value::Str(_) => describe(value, doc),
        other => doc.kind(other).to_string(),
    };
    format!(
        "{what} is not read into {} {type_name} column (Spark reads {reads})",
        article(type_name)
    )
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// An integer token in `min..=max`. Spark reads no fraction, exponent or string into an
/// integer column. (Jackson lets 128..=255 into a byte as negative numbers; that wrap is
/// refused here.)
fn integer(
    value: Value,
    doc: &Doc<'_>,
    type_name: &str,
    min: i64,
    max: i64,
) -> Result<i64, String> {
    let number = match value {
        Value::Number(number) => Some(doc.slice(number)).filter(|text| is_integer(text)),
        _ => None,
    };
    match number {
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| {
                format!(
                    "{text} is out of the range of {} {type_name} ({min}..{max})",
                    article(type_name)
                )
            }),
        None => Err(not_read(
            value,
            doc,
            type_name,
            "integers without fraction or exponent",
        )),
    }
}

/// A float or double: a number's text, or a non-numeric value (NaN, infinities) as Spark
/// accepts them: the bare tokens, or the strings "NaN", "Infinity", "+Infinity", "-Infinity",
/// "+INF", "-INF".
fn floating<'d>(
    value: Value,
    doc: &'d Doc<'_>,
    type_name: &str,
) -> Result<(&'d str, Option<f64>), String> {
    match value {
        Value::Number(number) => Ok((doc.slice(number), None)),
        Value::NonFinite(v) => Ok(("", Some(v))),
        Value::Str(text) => match doc.str(text) {
            "NaN" => Ok(("", Some(f64::NAN))),
            "Infinity" | "+Infinity" | "+INF" => Ok(("", Some(f64::INFINITY))),
            "-Infinity" | "-INF" => Ok(("", Some(f64::NEG_INFINITY))),
            _ => Err(not_read(
                value,
                doc,
                type_name,
                "numbers and the strings NaN, Infinity, +Infinity, -Infinity, +INF, -INF",
            )),
        },
        other => Err(not_read(other, doc, type_name, "numbers")),
    }
}

/// A number's text as the nearest float (ties to even), as Java parses it. An integer token is
/// converted as an integer, so `-0` is `0.0`.
fn parse_float<F: std::str::FromStr + Default + PartialEq>(text: &str) -> Result<F, String> {
    let v: F = text
        .parse()
        .map_err(|_| format!("{text} is not a number"))?;
    if is_integer(text) && v == F::default() {
        return Ok(F::default());
    }
    Ok(v)
}

/// A number of at most 15 digits without an exponent (`21.53`, `-7`, what sensors write) as
/// the nearest double: its digits and the power of ten are exact doubles, so their quotient
/// is rounded once, to the nearest, as [`parse_float`] and Java round it, at a fraction of
/// the cost of the general parser. None for any other text, which that parser reads.
fn short_decimal(text: &str) -> Option<f64> {
    const POWERS_OF_TEN: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, body) = match text.as_bytes() {
        [b'-', body @ ..] => (true, body),
        body => (false, body),
    };
    let mut digits = 0u64;
    let mut count = 0usize;
    let mut point = None;
    for (at, &b) in body.iter().enumerate() {
        match b {
            b'0'..=b'9' if count < 15 => {
                digits = digits * 10 + u64::from(b - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(at),
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    let fraction_digits = point.map_or(0, |at| body.len() - at - 1);
    let magnitude = digits as f64 / POWERS_OF_TEN[fraction_digits];
    Some(match (negative, point) {
        // An integer token is converted as an integer: `-0` is 0.0 (see parse_float).
        (true, None) if digits == 0 => 0.0,
        (true, _) => -magnitude,
        (false, _) => magnitude,
    })
}

/// Java's BigDecimal grammar (`[+-]` digits with an optional `.`, an optional exponent) rounded
/// to `scale` digits HALF_UP and refused when more than `precision` digits remain, as Spark's
/// Decimal.set does. Returns the unscaled value.
pub(crate) fn decimal(text: &str, precision: u8, scale: u8) -> Result<i128, String> {
    let bad = || "is not a decimal number".to_string();
    let (negative, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => {
            let exp = &body[i + 1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad());
            }
            let e: i64 = exp.parse().map_err(|_| bad())?;
            if i32::try_from(e).is_err() {
                return Err(bad());
            }
            (&body[..i], e)
        }
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let all: String = format!("{int_part}{frac_part}");
    let digits = all.trim_start_matches('0');
    // value = digits * 10^(exponent - frac digits); unscaled = value * 10^scale.
    let shift = exponent - frac_part.len() as i64 + i64::from(scale);
    let overflow = || {
        format!(
            "does not fit a decimal({precision},{scale}) (Spark rounds half up to {scale} \
             digits after the point and reads no more than {precision} digits)"
        )
    };
    let unscaled: i128 = if digits.is_empty() {
        0
    } else if shift >= 0 {
        if digits.len() as i64 + shift > i64::from(precision) {
            return Err(overflow());
        }
        let base: i128 = digits.parse().map_err(|_| overflow())?;
        base * 10i128.pow(shift as u32)
    } else {
        let keep = digits.len() as i64 + shift;
        if keep > i64::from(precision) {
            return Err(overflow());
        }
        if keep < 0 {
            0
        } else {
            let keep = keep as usize;
            let kept: i128 = if keep == 0 {
                0
            } else {
                digits[..keep].parse().map_err(|_| overflow())?
            };
            let round_up = digits.as_bytes()[keep] >= b'5';
            kept + i128::from(round_up)
        }
    };
    if unscaled >= 10i128.pow(u32::from(precision)) {
        return Err(overflow());
    }
    Ok(if negative { -unscaled } else { unscaled })
}

/// A value read into a string column. A string is its text; anything else is its JSON text as
/// Spark writes it back with Jackson: compact, numbers as Java prints them (an integer as
/// written, a fraction or exponent through a double: `1e5` is `100000.0`).
fn string<'a>(value: Value, doc: &Doc<'a>) -> Result<Cow<'a, str>, String> {
    match value {
        Value::Str(text) => Ok(doc.string(text)),
        other => {
            let mut out = String::new();
            write_json(other, doc, &mut out)?;
            Ok(Cow::Owned(out))
        }
    }
}

fn write_json(value: Value, doc: &Doc<'_>, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Value::Number(number) if is_integer(doc.slice(number)) => {
            let text = doc.slice(number);
            let digits = text.trim_start_matches('-');
            if digits.bytes().all(|b| b == b'0') {
                out.push('0');
            } else {
                out.push_str(text);
            }
        }
        Value::Number(number) => {
            let text = doc.slice(number);
            let v: f64 = text
                .parse()
                .map_err(|_| format!("{text} is not a number"))?;
            // Java 17's Double.toString prints more digits than needed for some doubles from
            // 10^16 up, and for subnormals; Java 21 does not. Spark's text for those depends
            // on its JVM, so they are not reproduced (measured against Java 17 over 1.5
            // million doubles: no difference elsewhere).
            if v.is_finite() && (v.abs() >= 1e16 || (v != 0.0 && v.abs() < f64::MIN_POSITIVE)) {
                return Err(format!(
                    "{text} read as text: Spark prints it through a double, whose digits from \
                     10^16 up and below 10^-308 depend on the JVM's version"
                ));
            }
            write_double(v, out);
        }
        Value::NonFinite(v) => write_double(v, out),
        Value::Str(text) => write_string(doc.str(text), out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in doc.items(items).iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(*item, doc, out)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, member) in doc.members(members).iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(doc.str(member.key), out);
                out.push(':');
                write_json(member.value, doc, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A double as Jackson writes it: Java's text, NaN and the infinities in quotes.
fn write_double(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        out.push_str(&java_double(v));
    }
}

/// A JSON string as Jackson writes it: `"` and `\` escaped, the control characters as `\b`
/// `\t` `\n` `\f` `\r` or `\u00XX` (upper-case hex), everything else as is.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Java's Double.toString of a finite double: the shortest digits that read back as the same
/// double, plain for 10^-3 <= |v| < 10^7 (`100000.0`, `0.001`), otherwise as `d.dddE[-]n`.
pub(crate) fn java_double(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` prints the shortest round-trip digits: `d.ddde[-]n`.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if v < 0.0 { "-" } else { "" };
    let abs = v.abs();
    if (1e-3..1e7).contains(&abs) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{text}")
    } else {
        let rest = if digits.len() > 1 { &digits[1..] } else { "0" };
        format!("{sign}{}.{rest}E{exp}", &digits[..1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short path gives the general parser's double for every text it takes: numbers of
    /// one to 15 digits with the point at each place, both signs, and the edges (zeros, the
    /// largest 15-digit numbers, halfway cases); and it leaves longer or other texts alone.
    #[test]
    fn short_decimals_read_as_the_general_parser_reads_them() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 11
        };
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "0.5",
            "-0.5",
            ".5",
            "1.",
            "21.53",
            "-7",
            "0.1",
            "0.3",
            "999999999999999",
            "-99999999999999.9",
            "0.000000000000001",
            "9007199254740.993",
            "4503599627370.4965",
            "2.225",
            "1.7976931348623",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        for _ in 0..20_000 {
            let count = 1 + (next() % 15) as usize;
            let digits: String = (0..count)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            let point = (next() % (count as u64 + 1)) as usize;
            let sign = if next() % 2 == 0 { "-" } else { "" };
            texts.push(format!("{sign}{}", digits));
            texts.push(format!("{sign}{}.{}", &digits[..point], &digits[point..]));
        }
        let mut taken = 0;
        for text in &texts {
            let general = parse_float::<f64>(text);
            match short_decimal(text) {
                Some(v) => {
                    taken += 1;
                    let general = general.unwrap_or_else(|e| panic!("{text}: {e}"));
                    assert_eq!(
                        v.to_bits(),
                        general.to_bits(),
                        "{text}: {v} against {general}"
                    );
                }
                None => {
                    let digits = text.bytes().filter(u8::is_ascii_digit).count();
                    assert!(
                        digits == 0 || digits > 15,
                        "{text} left to the general parser"
                    );
                }
            }
        }
        assert!(taken >= 40_000, "{taken}");
        for text in [
            "1e5",
            "1234567890123456",
            "0.1234567890123456",
            "1.2.3",
            "--1",
            "+1",
            "",
            "-",
            ".",
        ] {
            assert_eq!(short_decimal(text), None, "{text}");
        }
    }

    #[test]
    fn java_double_prints_as_javas_double_to_string() {
        assert_eq!(java_double(1e5), "100000.0");
        assert_eq!(java_double(-1.5), "-1.5");
        assert_eq!(java_double(1e7), "1.0E7");
        assert_eq!(java_double(1.2345e-7), "1.2345E-7");
        assert_eq!(java_double(0.001), "0.001");
        assert_eq!(java_double(0.0001), "1.0E-4");
        assert_eq!(java_double(1234567.0), "1234567.0");
        assert_eq!(java_double(-0.0), "-0.0");
        assert_eq!(java_double(2.5), "2.5");
    }

    #[test]
    fn decimals_round_half_up_and_refuse_overflow() {
        assert_eq!(decimal("1.239", 10, 2), Ok(124));
        assert_eq!(decimal("1.235", 10, 2), Ok(124));
        assert_eq!(decimal("-1.235", 10, 2), Ok(-124));
        assert_eq!(decimal("1.234", 10, 2), Ok(123));
        assert_eq!(decimal("0.005", 10, 2), Ok(1));
        assert_eq!(decimal("0.0049999", 10, 2), Ok(0));
        assert_eq!(decimal("1e2", 10, 2), Ok(10000));
        assert_eq!(decimal("12.345e1", 10, 2), Ok(12345));
        assert_eq!(decimal("1e-400", 10, 2), Ok(0));
        assert_eq!(decimal(".5", 10, 2), Ok(50));
        assert_eq!(decimal("5.", 10, 2), Ok(500));
        assert_eq!(decimal("+1.5", 10, 2), Ok(150));
        assert_eq!(decimal("12345678.995", 10, 2), Ok(1_234_567_900));
        assert!(decimal("99999999.995", 10, 2).is_err());
        assert!(decimal("123456789", 10, 2).is_err());
        assert!(decimal("1e400", 10, 2).is_err());
        assert!(decimal(" 1.5", 10, 2).is_err());
        assert!(decimal(".", 10, 2).is_err());
        assert!(decimal("1e", 10, 2).is_err());
        assert_eq!(decimal("2.5", 5, 0), Ok(3));
        assert_eq!(decimal("-2.5", 5, 0), Ok(-3));
        assert_eq!(
            decimal("0.0000000000000000005", 38, 18),
            Ok(1),
            "the first dropped digit decides"
        );
        assert_eq!(
            decimal("12345678901234567890.123456789012345678", 38, 18),
            Ok(12_345_678_901_234_567_890_123_456_789_012_345_678)
        );
    }
}
