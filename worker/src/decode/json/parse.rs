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
//!
//! ```text
//! record text ──parse──> Doc { top-level members, arenas of nested items and members,
//!                              unescaped strings }  <──spans── Value, Member (16/32 bytes, Copy)
//! ```
//!
//! A value is a small `Copy` token that says where its text is (a span of the record) or
//! where its children are (a run of the document's arenas), not a tree of owned nodes: the
//! parser's functions return it in registers. Returning a tree node of 32 bytes or more
//! through memory and moving it into its parent right away stalled the CPU on every member
//! (a load of bytes the callee had just stored in other widths: a fifth of the decoder's
//! time reading the benchmark's readings). The arenas are kept from record to record, so a
//! micro-batch is read without an allocation per record.

use std::borrow::Cow;

/// How deep arrays and objects may nest (Jackson's default limit).
const MAX_DEPTH: usize = 1000;

/// Where a token's text is in the record: its start and end byte offsets in one word (a
/// record is checked to be below 2 GiB before it is read), so that a function that returns
/// one returns a register. A struct of two fields came back through memory and was read in
/// one load that spanned both stores: the stall the module doc describes, once per member.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span(u64);

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span(start as u64 | (end as u64) << 32)
    }

    fn range(self) -> std::ops::Range<usize> {
        (self.0 as u32 as usize)..((self.0 >> 32) as u32 as usize)
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.range())
    }
}

/// A string as read: its body in the record when it holds no escape, or its unescaped text
/// in the document's buffer (the top bit of the span's word, which a 2 GiB offset leaves
/// free, says which).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Text(u64);

const UNESCAPED: u64 = 1 << 63;

impl Text {
    fn plain(span: Span) -> Text {
        Text(span.0)
    }

    fn unescaped(span: Span) -> Text {
        Text(span.0 | UNESCAPED)
    }

    /// Whether the string held escapes (its text is the document's, not the record's).
    pub fn is_unescaped(self) -> bool {
        self.0 & UNESCAPED != 0
    }

    fn span(self) -> Span {
        Span(self.0 & !UNESCAPED)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_unescaped() {
            "unescaped"
        } else {
            "plain"
        };
        write!(f, "{kind} {:?}", self.span())
    }
}

/// Where an array's items or an object's members are in the document's arenas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    start: u32,
    len: u32,
}

/// A parsed JSON value; its text and children are in the [`Doc`] it was read into.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// A number literal, as written (RFC 8259 grammar).
    Number(Span),
    /// `NaN`, `Infinity` or `-Infinity` written as a bare token.
    NonFinite(f64),
    Str(Text),
    Array(Run),
    Object(Run),
}

/// One member of an object.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Member {
    pub key: Text,
    pub value: Value,
    /// The value's text exactly as in the input.
    pub raw: Span,
}

/// What [`Doc::parse`] found.
pub(crate) enum TopLevel {
    /// One JSON object, whose members are [`Doc::top_members`].
    Object,
    /// Another JSON value.
    Other(Value),
}

/// One record's JSON, parsed; reused from record to record (`parse` clears it).
#[derive(Default)]
pub(crate) struct Doc<'a> {
    text: &'a str,
    /// The members of the objects being read, innermost last; once the top-level object is
    /// read, its members.
    open_members: Vec<Member>,
    /// The items of the arrays being read, innermost last.
    open_items: Vec<Value>,
    /// The members of nested objects read, each object's in one run.
    members: Vec<Member>,
    /// The items of arrays read, each array's in one run.
    items: Vec<Value>,
    /// The text of strings that held escapes, unescaped.
    unescaped: String,
}

/// Why the parser stopped; what and where are in [`Parser::failure`]. Zero-sized, so that a
/// `Result` of a token still fits in registers.
struct Stop;

type Parsed<T> = Result<T, Stop>;

impl<'a> Doc<'a> {
    /// Parses one complete JSON value; whitespace around it is allowed, anything else after
    /// it is not.
    pub fn parse(&mut self, text: &'a str) -> Result<TopLevel, String> {
        self.text = text;
        self.open_members.clear();
        self.open_items.clear();
        self.members.clear();
        self.items.clear();
        self.unescaped.clear();
        if text
            .bytes()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Err("the value is empty".into());
        }
        if i32::try_from(text.len()).is_err() {
            return Err("the value is larger than 2 GiB, which this reader does not read".into());
        }
        let mut parser = Parser {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            depth: 0,
            failure: ("", 0),
            doc: self,
        };
        parser.document().map_err(|Stop| {
            let (what, at) = parser.failure;
            format!("the value is not valid JSON: {what} at byte {at}")
        })
    }

    /// The top-level object's members, in the order written.
    pub fn top_members(&self) -> &[Member] {
        &self.open_members
    }

    /// A nested object's members.
    pub fn members(&self, run: Run) -> &[Member] {
        &self.members[run.start as usize..][..run.len as usize]
    }

    /// An array's items.
    pub fn items(&self, run: Run) -> &[Value] {
        &self.items[run.start as usize..][..run.len as usize]
    }

    /// A span of the record's text (a number's literal, a member's raw value).
    pub fn slice(&self, span: Span) -> &'a str {
        &self.text[span.range()]
    }

    /// A string's text, to read or compare.
    pub fn str(&self, text: Text) -> &str {
        if text.is_unescaped() {
            &self.unescaped[text.span().range()]
        } else {
            self.slice(text.span())
        }
    }

    /// A string's text to keep: borrowed from the record unless it held escapes.
    pub fn string(&self, text: Text) -> Cow<'a, str> {
        if text.is_unescaped() {
            Cow::Owned(self.str(text).to_owned())
        } else {
            Cow::Borrowed(self.slice(text.span()))
        }
    }

    /// What a JSON value is called in messages.
    pub fn kind(&self, value: Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(span) if is_integer(self.slice(span)) => "an integer",
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

/// Moves the values of a closed array or object, `open[from..]` (the top of the open stack),
/// to the end of `arena`, and says where they are. Run bounds fit 32 bits: the text was
/// checked to be below 2 GiB, and holds more bytes than values.
fn close_run<T>(open: &mut Vec<T>, from: usize, arena: &mut Vec<T>) -> Run {
    let run = Run {
        start: arena.len() as u32,
        len: (open.len() - from) as u32,
    };
    arena.extend(open.drain(from..));
    run
}

struct Parser<'a, 'd> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    /// What stopped the parser, and at which byte.
    failure: (&'static str, usize),
    doc: &'d mut Doc<'a>,
}

impl<'a> Parser<'a, '_> {
    fn fail(&mut self, what: &'static str) -> Stop {
        self.failure = (what, self.pos);
        Stop
    }

    fn span(&self, start: usize) -> Span {
        Span::new(start, self.pos)
    }

    fn document(&mut self) -> Parsed<TopLevel> {
        self.skip_ws();
        let parsed = if self.peek() == Some(b'{') {
            // The top-level members stay where they were read.
            self.members()?;
            TopLevel::Object
        } else {
            TopLevel::Other(self.value()?)
        };
        self.skip_ws();
        if self.pos != self.bytes.len() {
            return Err(self.fail("text after the JSON value"));
        }
        Ok(parsed)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn value(&mut self) -> Parsed<Value> {
        match self.peek() {
            Some(quote @ (b'"' | b'\'')) => Ok(Value::Str(self.string(quote)?)),
            Some(b'0'..=b'9') => self.number().map(Value::Number),
            Some(b'-') if self.peek_at(1) != Some(b'I') => self.number().map(Value::Number),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
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
                let rest = &self.text[self.pos + 1..];
                let word = if rest.starts_with("Infinity") {
                    &self.text[self.pos..self.pos + 9]
                } else {
                    self.text.get(self.pos..self.pos + 4).unwrap_or("")
                };
                match word {
                    "+Infinity" | "-Infinity" | "+INF" | "-INF" => {
                        self.word(word, Value::NonFinite(v))
                    }
                    _ => Err(self.fail("unexpected word")),
                }
            }
            Some(_) => Err(self.fail("unexpected character")),
            None => Err(self.fail("unexpected end")),
        }
    }

    fn word(&mut self, word: &str, value: Value) -> Parsed<Value> {
        if !self.text[self.pos..].starts_with(word) {
            return Err(self.fail("unexpected word"));
        }
        self.pos += word.len();
        // A letter or digit straight after the word makes it another word (`nullx`).
        if let Some(b) = self.peek()
            && (b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(self.fail("unexpected word"));
        }
        Ok(value)
    }

    fn number(&mut self) -> Parsed<Span> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.fail("a number with a leading zero"));
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.fail("a number without digits")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.fail("a decimal point without digits after it"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.fail("an exponent without digits"));
            }
            self.digits();
        }
        if let Some(b) = self.peek()
            && (b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        {
            return Err(self.fail("unexpected character in a number"));
        }
        Ok(self.span(start))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string in `quote` (the reader is on the opening quote).
    fn string(&mut self, quote: u8) -> Parsed<Text> {
        self.pos += 1;
        let start = self.pos;
        // Most strings hold no escape: one scan to the first byte that is not plain text.
        self.skip_plain_text(quote);
        match self.peek() {
            None => return Err(self.fail("an unterminated string")),
            Some(b) if b == quote => {
                let body = self.span(start);
                self.pos += 1;
                return Ok(Text::plain(body));
            }
            Some(b'\\') => {}
            Some(_) => return Err(self.fail("a control character in a string")),
        }
        let out_start = self.doc.unescaped.len();
        self.doc.unescaped.push_str(&self.text[start..self.pos]);
        loop {
            match self.peek() {
                None => return Err(self.fail("an unterminated string")),
                Some(b) if b == quote => {
                    self.pos += 1;
                    let end = self.doc.unescaped.len();
                    return Ok(Text::unescaped(Span::new(out_start, end)));
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
                            self.doc.unescaped.push(c);
                            continue;
                        }
                        _ => return Err(self.fail("an unknown escape in a string")),
                    };
                    self.pos += 1;
                    self.doc.unescaped.push(escaped);
                }
                Some(b) if b < 0x20 => {
                    return Err(self.fail("a control character in a string"));
                }
                Some(_) => {
                    // Copy up to the next quote or backslash in one go (UTF-8 boundaries are
                    // safe: both are ASCII).
                    let run_start = self.pos;
                    self.skip_plain_text(quote);
                    self.doc.unescaped.push_str(&self.text[run_start..self.pos]);
                }
            }
        }
    }

    /// Moves past string text that needs no care: up to the closing `quote`, a backslash, a
    /// control character, or the end.
    #[inline]
    fn skip_plain_text(&mut self, quote: u8) {
        const ONES: u64 = u64::from_le_bytes([1; 8]);
        const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
        /// Whether a byte of `word` is below `n` (n at most 0x80): subtracting `n` from each
        /// byte borrows into the high bit only of a byte that was below it.
        fn any_below(word: u64, n: u8) -> bool {
            word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH_BITS != 0
        }
        let rest = &self.bytes[self.pos..];
        let (quotes, backslashes) = (ONES * u64::from(quote), ONES * u64::from(b'\\'));
        // Eight bytes at a time while none of them ends the plain text (a byte equal to the
        // quote or a backslash is a zero byte after the xor): names and values are a few words
        // long, and a byte at a time was most of the string reader's time.
        let mut skipped = 0;
        while let Some(Ok(bytes)) = rest.get(skipped..skipped + 8).map(<[u8; 8]>::try_from) {
            let word = u64::from_le_bytes(bytes);
            if any_below(word, 0x20)
                || any_below(word ^ quotes, 1)
                || any_below(word ^ backslashes, 1)
            {
                break;
            }
            skipped += 8;
        }
        skipped += rest[skipped..]
            .iter()
            .position(|&b| b == quote || b == b'\\' || b < 0x20)
            .unwrap_or(rest.len() - skipped);
        self.pos += skipped;
    }

    /// The four hex digits after `\u` (and a low surrogate's escape after a high one).
    fn unicode_escape(&mut self) -> Parsed<char> {
        let high = self.hex4()?;
        if (0xD800..0xDC00).contains(&high) {
            if self.text[self.pos..].starts_with("\\u") {
                self.pos += 2;
                let low = self.hex4()?;
                if (0xDC00..0xE000).contains(&low) {
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    return char::from_u32(code).ok_or_else(|| self.fail("an invalid escape"));
                }
            }
            return Err(self.fail("an escaped lone surrogate"));
        }
        char::from_u32(high).ok_or_else(|| self.fail("an escaped lone surrogate"))
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let Some(digits) = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Err(self.fail("a \\u escape without four hex digits"));
        };
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| self.fail("an invalid \\u escape"))
    }

    fn enter(&mut self) -> Parsed<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.fail("arrays and objects nested too deeply"));
        }
        Ok(())
    }

    fn array(&mut self) -> Parsed<Value> {
        self.enter()?;
        self.pos += 1;
        let open = self.doc.open_items.len();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let item = self.value()?;
                self.doc.open_items.push(item);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.fail("expected ',' or ']'")),
                }
            }
        }
        self.depth -= 1;
        let doc = &mut *self.doc;
        Ok(Value::Array(close_run(
            &mut doc.open_items,
            open,
            &mut doc.items,
        )))
    }

    /// A nested object: its members, read onto the open stack, move to the arena in one run.
    fn object(&mut self) -> Parsed<Value> {
        let open = self.doc.open_members.len();
        self.members()?;
        let doc = &mut *self.doc;
        Ok(Value::Object(close_run(
            &mut doc.open_members,
            open,
            &mut doc.members,
        )))
    }

    /// An object's members, pushed onto the open stack (the reader is on the `{`).
    fn members(&mut self) -> Parsed<()> {
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
                _ => return Err(self.fail("expected a quoted name")),
            };
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.fail("expected ':'"));
            }
            self.pos += 1;
            self.skip_ws();
            let start = self.pos;
            // Strings and numbers, most members' values, come back in registers.
            let value = match self.peek() {
                Some(quote @ (b'"' | b'\'')) => Value::Str(self.string(quote)?),
                Some(b'0'..=b'9') => Value::Number(self.number()?),
                _ => self.value()?,
            };
            let raw = self.span(start);
            self.doc.open_members.push(Member { key, value, raw });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.fail("expected ',' or '}'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_and_a_member_are_small_enough_to_return_in_registers() {
        // The reason for spans and runs (module doc): a token of two words comes back from
        // the parser's functions in registers, not through memory.
        assert!(std::mem::size_of::<Value>() <= 16);
        assert!(std::mem::size_of::<Parsed<Value>>() <= 16);
        assert!(std::mem::size_of::<Parsed<Text>>() <= 16);
        assert!(std::mem::size_of::<Parsed<Span>>() <= 16);
        assert!(std::mem::size_of::<Member>() <= 40);
    }

    #[test]
    fn nested_values_are_read_into_runs_in_order() {
        let mut doc = Doc::default();
        let text = r#"{"a": [1, {"b": "x\ny", "c": [true, null]}, "z"], "d": {}, 'e': -Infinity}"#;
        assert!(matches!(doc.parse(text), Ok(TopLevel::Object)));
        let top = doc.top_members();
        let names: Vec<&str> = top.iter().map(|m| doc.str(m.key)).collect();
        assert_eq!(names, ["a", "d", "e"]);
        assert_eq!(
            doc.slice(top[0].raw),
            r#"[1, {"b": "x\ny", "c": [true, null]}, "z"]"#
        );
        let Value::Array(items) = top[0].value else {
            panic!("an array: {:?}", top[0].value)
        };
        let items = doc.items(items);
        assert_eq!(items.len(), 3);
        assert!(matches!(items[0], Value::Number(n) if doc.slice(n) == "1"));
        assert!(matches!(items[2], Value::Str(s) if doc.str(s) == "z"));
        let Value::Object(inner) = items[1] else {
            panic!("an object: {:?}", items[1])
        };
        let inner = doc.members(inner);
        assert_eq!(doc.str(inner[0].key), "b");
        assert!(matches!(inner[0].value, Value::Str(s) if doc.str(s) == "x\ny"));
        let Value::Array(flags) = inner[1].value else {
            panic!("an array: {:?}", inner[1].value)
        };
        assert_eq!(doc.items(flags), [Value::Bool(true), Value::Null]);
        assert!(matches!(top[1].value, Value::Object(run) if doc.members(run).is_empty()));
        assert_eq!(top[2].value, Value::NonFinite(f64::NEG_INFINITY));
    }

    #[test]
    fn a_document_read_after_another_holds_nothing_of_it() {
        let mut doc = Doc::default();
        assert!(doc.parse(r#"{"a": {"b": "\u00e9"}, "c": [1]}"#).is_ok());
        assert!(matches!(doc.parse(r#"{"k": "\t"}"#), Ok(TopLevel::Object)));
        let top = doc.top_members();
        assert_eq!(top.len(), 1);
        assert!(matches!(top[0].value, Value::Str(s) if doc.str(s) == "\t"));
        assert!(
            matches!(doc.parse("[]"), Ok(TopLevel::Other(Value::Array(run))) if doc.items(run).is_empty())
        );
        assert!(doc.top_members().is_empty());
    }

    #[test]
    fn a_string_ends_at_its_quote_escape_or_control_character_wherever_it_falls_in_a_word() {
        // The plain-text scan reads eight bytes at a time: each stop must be found at every
        // place within a word and across words, and bytes of multibyte characters, the other
        // quote and 0x7F must not stop it; nor the bytes one above a stop ('#' after '"', ']'
        // after '\\', '&' after '\'', a space after the control characters), which a borrow
        // in the word-at-a-time test could flag.
        let filler = ["a", "é", "'", "\u{7f}", "€", "z", "#", "]", " ", "&"];
        for len in 0..40 {
            let plain: String = filler.iter().cycle().take(len).copied().collect();
            let mut doc = Doc::default();
            let text = format!(r#"{{"k": "{plain}"}}"#);
            assert!(doc.parse(&text).is_ok(), "{text}");
            assert!(
                matches!(doc.top_members()[0].value, Value::Str(s) if !s.is_unescaped() && doc.str(s) == plain)
            );

            let text = format!(r#"{{"k": "{plain}\n{plain}"}}"#);
            assert!(doc.parse(&text).is_ok(), "{text}");
            let Value::Str(value) = doc.top_members()[0].value else {
                panic!("a string")
            };
            assert_eq!(doc.str(value), format!("{plain}\n{plain}"));

            let text = format!("{{\"k\": \"{plain}\u{1}\"}}");
            let at = 7 + plain.len();
            assert_eq!(
                doc.parse(&text).err(),
                Some(format!(
                    "the value is not valid JSON: a control character in a string at byte {at}"
                ))
            );

            // In single quotes the filler's quote is escaped, and `"` is plain text.
            let single = format!("{{'k': '{}\"'}}", plain.replace('\'', "\\'"));
            assert!(doc.parse(&single).is_ok(), "{single}");
            let Value::Str(value) = doc.top_members()[0].value else {
                panic!("a string")
            };
            assert_eq!(doc.str(value), format!("{plain}\""));
        }
    }

    #[test]
    fn errors_say_what_and_at_which_byte() {
        let mut doc = Doc::default();
        let error = |doc: &mut Doc<'_>, text: &'static str| match doc.parse(text) {
            Err(message) => message,
            Ok(_) => panic!("{text} parsed"),
        };
        assert_eq!(
            error(&mut doc, r#"{"a": 01}"#),
            "the value is not valid JSON: a number with a leading zero at byte 7"
        );
        assert_eq!(
            error(&mut doc, r#"{"a": "\ud800"}"#),
            "the value is not valid JSON: an escaped lone surrogate at byte 13"
        );
        assert_eq!(
            error(&mut doc, r#"{"a": 1} x"#),
            "the value is not valid JSON: text after the JSON value at byte 9"
        );
        assert_eq!(error(&mut doc, " \n"), "the value is empty");
    }
}
