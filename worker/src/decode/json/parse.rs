//! A JSON reader that accepts what Spark's Jackson parser accepts by default for `from_json`,
//! and keeps what the conversion to Spark's types needs: the text of each number (an integer
//! and `1.0` are different tokens to Spark), the order of object members and their duplicates,
//! and the raw text of each top-level member (for `_rescued_data`).
//!
//! Beyond RFC 8259 it accepts, as Spark's defaults do: strings and names in single quotes
//! (`allowSingleQuotes`), the tokens `NaN`, `Infinity`, `+Infinity`, `-Infinity`, `+INF` and `-INF`
//! (`allowNonNumericNumbers`) and the escape `\'`. It refuses what Spark refuses: leading
//! zeros, unquoted names, comments, trailing commas, raw control characters in strings. Unlike
//! Jackson it also refuses text after the value (Jackson stops reading after the first value)
//! and escaped lone surrogates (which Spark turns into `?`): such a record is bad input, never
//! a different value.

use std::borrow::Cow;

/// How deep arrays and objects may nest (Jackson's default limit).
const MAX_DEPTH: usize = 1000;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    /// A number literal, as written (RFC 8259 grammar).
    Number(&'a str),
    /// `NaN`, `Infinity` or `-Infinity` written as a bare token.
    NonFinite(f64),
    Str(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<Member<'a>>),
}

/// One member of an object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member<'a> {
    pub key: Cow<'a, str>,
    pub value: Value<'a>,
    /// The value's text exactly as in the input.
    pub raw: &'a str,
}

impl Value<'_> {
    /// What a JSON value is called in messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(text) if is_integer(text) => "an integer",
            Value::Number(_) => "a number with a fraction or exponent",
            Value::NonFinite(_) => "a non-numeric number token",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// True when a number literal has neither fraction nor exponent (Jackson's VALUE_NUMBER_INT).
pub(crate) fn is_integer(number: &str) -> bool {
    !number.bytes().any(|b| matches!(b, b'.' | b'e' | b'E'))
}

/// What [`parse_object_into`] found.
pub(crate) enum TopLevel<'a> {
    /// One JSON object, whose members are in the buffer given.
    Object,
    /// Another JSON value.
    Other(Value<'a>),
}

/// Parses one complete JSON value; whitespace around it is allowed, anything else after it is
/// not. An object's members go into `members` (cleared first) rather than into a vector of
/// their own: a micro-batch's records are read through one buffer, not an allocation each.
pub(crate) fn parse_object_into<'a>(
    text: &'a str,
    members: &mut Vec<Member<'a>>,
) -> Result<TopLevel<'a>, String> {
    members.clear();
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    parser.skip_ws();
    if parser.pos == parser.bytes.len() {
        return Err("the value is empty".into());
    }
    let parsed = if parser.peek() == Some(b'{') {
        parser.members(members)?;
        TopLevel::Object
    } else {
        TopLevel::Other(parser.value()?)
    };
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("text after the JSON value"));
    }
    Ok(parsed)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, what: &str) -> String {
        format!("the value is not valid JSON: {what} at byte {}", self.pos)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self) -> Result<Value<'a>, String> {
        match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(quote @ (b'"' | b'\'')) => Ok(Value::Str(self.string(quote)?)),
            Some(b't') => self.word("true", Value::Bool(true)),
            Some(b'f') => self.word("false", Value::Bool(false)),
            Some(b'n') => self.word("null", Value::Null),
            Some(b'N') => self.word("NaN", Value::NonFinite(f64::NAN)),
            Some(b'I') => self.word("Infinity", Value::NonFinite(f64::INFINITY)),
            Some(sign @ (b'+' | b'-')) if self.peek_at(1) == Some(b'I') => {
                let v = if sign == b'+' {
                    f64::INFINITY
                } else {
                    f64::NEG_INFINITY
                };
                let word = if self.text[self.pos + 1..].starts_with("Infinity") {
                    &self.text[self.pos..self.pos + 9]
                } else {
                    self.text.get(self.pos..self.pos + 4).unwrap_or("")
                };
                match word {
                    "+Infinity" | "-Infinity" | "+INF" | "-INF" => {
                        self.word(word, Value::NonFinite(v))
                    }
                    _ => Err(self.error("unexpected word")),
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
            None => Err(self.error("unexpected end")),
        }
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn word(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, String> {
        if !self.text[self.pos..].starts_with(word) {
            return Err(self.error("unexpected word"));
        }
        self.pos += word.len();
        // A letter or digit straight after the word makes it another word (`nullx`).
        if let Some(b) = self.peek()
            && (b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(self.error("unexpected word"));
        }
        Ok(value)
    }

    fn number(&mut self) -> Result<Value<'a>, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error("a number with a leading zero"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("a number without digits")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("a decimal point without digits after it"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("an exponent without digits"));
            }
            self.digits();
        }
        if let Some(b) = self.peek()
            && (b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(self.error("unexpected character in a number"));
        }
        Ok(Value::Number(&self.text[start..self.pos]))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string in `quote` (the reader is on the opening quote).
    fn string(&mut self, quote: u8) -> Result<Cow<'a, str>, String> {
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes. One scan to the first byte that is not plain text.
        self.skip_plain_text(quote);
        match self.peek() {
            None => return Err(self.error("an unterminated string")),
            Some(b) if b == quote => {
                let text = &self.text[start..self.pos];
                self.pos += 1;
                return Ok(Cow::Borrowed(text));
            }
            Some(b'\\') => {}
            Some(_) => return Err(self.error("a control character in a string")),
        }
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            match self.peek() {
                None => return Err(self.error("an unterminated string")),
                Some(b) if b == quote => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\'') => '\'',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let c = self.unicode_escape()?;
                            out.push(c);
                            continue;
                        }
                        _ => return Err(self.error("an unknown escape in a string")),
                    };
                    self.pos += 1;
                    out.push(escaped);
                }
                Some(b) if b < 0x20 => {
                    return Err(self.error("a control character in a string"));
                }
                Some(_) => {
                    // Copy up to the next quote or backslash in one go (UTF-8 boundaries are
                    // safe: both are ASCII).
                    let run_start = self.pos;
                    self.skip_plain_text(quote);
                    out.push_str(&self.text[run_start..self.pos]);
                }
            }
        }
    }

    /// Moves past string text that needs no care: up to the closing `quote`, a backslash, a
    /// control character, or the end.
    fn skip_plain_text(&mut self, quote: u8) {
        self.pos += self.bytes[self.pos..]
            .iter()
            .position(|&b| b == quote || b == b'\\' || b < 0x20)
            .unwrap_or(self.bytes.len() - self.pos);
    }

    /// The four hex digits after `\u` (and a low surrogate's escape after a high one).
    fn unicode_escape(&mut self) -> Result<char, String> {
        let high = self.hex4()?;
        if (0xD800..0xDC00).contains(&high) {
            if self.text[self.pos..].starts_with("\\u") {
                self.pos += 2;
                let low = self.hex4()?;
                if (0xDC00..0xE000).contains(&low) {
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    return char::from_u32(code).ok_or_else(|| self.error("an invalid escape"));
                }
            }
            return Err(self.error("an escaped lone surrogate"));
        }
        char::from_u32(high).ok_or_else(|| self.error("an escaped lone surrogate"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("a \\u escape without four hex digits"))?;
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| self.error("an invalid \\u escape"))
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("arrays and objects nested too deeply"));
        }
        Ok(())
    }

    fn array(&mut self) -> Result<Value<'a>, String> {
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self) -> Result<Value<'a>, String> {
        let mut members = Vec::new();
        self.members(&mut members)?;
        Ok(Value::Object(members))
    }

    /// An object's members, pushed onto `members` (the reader is on the `{`).
    fn members(&mut self, members: &mut Vec<Member<'a>>) -> Result<(), String> {
        self.enter()?;
        self.pos += 1;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            let key = match self.peek() {
                Some(quote @ (b'"' | b'\'')) => self.string(quote)?,
                _ => return Err(self.error("expected a quoted name")),
            };
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let start = self.pos;
            let value = self.value()?;
            members.push(Member {
                key,
                value,
                raw: &self.text[start..self.pos],
            });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }
}
