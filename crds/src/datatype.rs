//! Spark SQL data types, written as Spark writes them in DDL (`DataType.simpleString`):
//! `string`, `decimal(10,2)`, `array<double>`, `map<string,int>`, `struct<lat:double,lon:double>`.
//!
//! A CRD schema cannot be recursive, so nested types live in the type string rather than in
//! nested YAML; this module is the one parser for it, used by validation and by the worker.

use std::fmt;

/// The primitive type names a schema field may use, as listed in error messages.
pub const TYPE_NAMES: &str = "string, boolean, byte, short, int, long, float, double, decimal(p,s), \
     date, timestamp, timestamp_ntz, binary, array<T>, map<K,V>, struct<name:T,...>";

/// One Spark SQL data type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataType {
    String,
    Boolean,
    Byte,
    Short,
    Int,
    Long,
    Float,
    Double,
    /// `decimal(precision, scale)`; Spark's bare `decimal` is `decimal(10,0)`.
    Decimal {
        precision: u8,
        scale: u8,
    },
    Date,
    /// Timestamp with time zone semantics (stored as UTC microseconds).
    Timestamp,
    /// Timestamp without time zone.
    TimestampNtz,
    Binary,
    Array(Box<DataType>),
    Map(Box<DataType>, Box<DataType>),
    Struct(Vec<StructField>),
}

/// A named member of a `struct<...>` type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructField {
    pub name: String,
    pub data_type: DataType,
}

/// Why a type string did not parse; rendered as the message after the field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TypeParseError(String);

/// Spark's maximum decimal precision.
pub const MAX_DECIMAL_PRECISION: u8 = 38;

impl DataType {
    /// Parses a Spark DDL type string. Case-insensitive, whitespace-tolerant, as Spark is.
    pub fn parse(text: &str) -> Result<DataType, TypeParseError> {
        let mut parser = Parser { text, pos: 0 };
        let data_type = parser.data_type()?;
        parser.skip_ws();
        if parser.pos != text.len() {
            return Err(parser.error(&format!(
                "unexpected \"{}\" after the type",
                &text[parser.pos..]
            )));
        }
        Ok(data_type)
    }

    /// True for types Delta can partition by (primitive, non-binary, non-floating).
    pub fn is_partitionable(&self) -> bool {
        !matches!(
            self,
            DataType::Array(_)
                | DataType::Map(..)
                | DataType::Struct(_)
                | DataType::Binary
                | DataType::Float
                | DataType::Double
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::String => f.write_str("string"),
            DataType::Boolean => f.write_str("boolean"),
            DataType::Byte => f.write_str("byte"),
            DataType::Short => f.write_str("short"),
            DataType::Int => f.write_str("int"),
            DataType::Long => f.write_str("long"),
            DataType::Float => f.write_str("float"),
            DataType::Double => f.write_str("double"),
            DataType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            DataType::Date => f.write_str("date"),
            DataType::Timestamp => f.write_str("timestamp"),
            DataType::TimestampNtz => f.write_str("timestamp_ntz"),
            DataType::Binary => f.write_str("binary"),
            DataType::Array(element) => write!(f, "array<{element}>"),
            DataType::Map(key, value) => write!(f, "map<{key},{value}>"),
            DataType::Struct(fields) => {
                f.write_str("struct<")?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{}", field.name, field.data_type)?;
                }
                f.write_str(">")
            }
        }
    }
}

/// A small recursive-descent parser over the type string.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> TypeParseError {
        TypeParseError(format!("{what} in type \"{}\"", self.text))
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn expect(&mut self, wanted: char) -> Result<(), TypeParseError> {
        self.skip_ws();
        match self.peek() {
            Some(c) if c == wanted => {
                self.pos += c.len_utf8();
                Ok(())
            }
            Some(c) => Err(self.error(&format!("expected '{wanted}' but found '{c}'"))),
            None => Err(self.error(&format!("expected '{wanted}' but the type ended"))),
        }
    }

    /// A run of identifier characters (letters, digits, underscore).
    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !(c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn number(&mut self) -> Result<u8, TypeParseError> {
        let word = self.word().to_string();
        word.parse::<u8>()
            .map_err(|_| self.error(&format!("expected a number but found \"{word}\"")))
    }

    fn data_type(&mut self) -> Result<DataType, TypeParseError> {
        let word = self.word().to_ascii_lowercase();
        let data_type = match word.as_str() {
            "string" | "varchar" | "char" => {
                // varchar(n)/char(n) are strings to Delta; accept and drop the length.
                self.skip_ws();
                if word != "string" && self.peek() == Some('(') {
                    self.expect('(')?;
                    self.number_u32()?;
                    self.expect(')')?;
                }
                DataType::String
            }
            "boolean" | "bool" => DataType::Boolean,
            "byte" | "tinyint" => DataType::Byte,
            "short" | "smallint" => DataType::Short,
            "int" | "integer" => DataType::Int,
            "long" | "bigint" => DataType::Long,
            "float" | "real" => DataType::Float,
            "double" => DataType::Double,
            "date" => DataType::Date,
            "timestamp" | "timestamp_ltz" => DataType::Timestamp,
            "timestamp_ntz" => DataType::TimestampNtz,
            "binary" => DataType::Binary,
            "decimal" | "dec" | "numeric" => self.decimal()?,
            "array" => {
                self.expect('<')?;
                let element = self.data_type()?;
                self.expect('>')?;
                DataType::Array(Box::new(element))
            }
            "map" => {
                self.expect('<')?;
                let key = self.data_type()?;
                self.expect(',')?;
                let value = self.data_type()?;
                self.expect('>')?;
                DataType::Map(Box::new(key), Box::new(value))
            }
            "struct" => self.struct_fields()?,
            "" => return Err(self.error("expected a type name")),
            other => {
                return Err(TypeParseError(format!(
                    "unknown type \"{other}\" (expected one of {TYPE_NAMES})"
                )));
            }
        };
        Ok(data_type)
    }

    fn number_u32(&mut self) -> Result<u32, TypeParseError> {
        let word = self.word().to_string();
        word.parse::<u32>()
            .map_err(|_| self.error(&format!("expected a number but found \"{word}\"")))
    }

    fn decimal(&mut self) -> Result<DataType, TypeParseError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Ok(DataType::Decimal {
                precision: 10,
                scale: 0,
            });
        }
        self.expect('(')?;
        let precision = self.number()?;
        self.skip_ws();
        let scale = if self.peek() == Some(',') {
            self.expect(',')?;
            self.number()?
        } else {
            0
        };
        self.expect(')')?;
        if precision == 0 || precision > MAX_DECIMAL_PRECISION {
            return Err(self.error(&format!(
                "decimal precision {precision} is outside 1..={MAX_DECIMAL_PRECISION}"
            )));
        }
        if scale > precision {
            return Err(self.error(&format!(
                "decimal scale {scale} is larger than its precision {precision}"
            )));
        }
        Ok(DataType::Decimal { precision, scale })
    }

    fn struct_fields(&mut self) -> Result<DataType, TypeParseError> {
        self.expect('<')?;
        let mut fields: Vec<StructField> = Vec::new();
        self.skip_ws();
        if self.peek() == Some('>') {
            return Err(self.error("a struct needs at least one field"));
        }
        loop {
            let name = self.field_name()?;
            if fields.iter().any(|f| f.name.eq_ignore_ascii_case(&name)) {
                return Err(self.error(&format!("struct field \"{name}\" appears twice")));
            }
            self.expect(':')?;
            let data_type = self.data_type()?;
            fields.push(StructField { name, data_type });
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('>') => {
                    self.pos += 1;
                    return Ok(DataType::Struct(fields));
                }
                Some(c) => {
                    return Err(self.error(&format!("expected ',' or '>' but found '{c}'")));
                }
                None => return Err(self.error("the struct is not closed with '>'")),
            }
        }
    }

    /// A struct member name: an identifier, or any text in backquotes as Spark allows.
    fn field_name(&mut self) -> Result<String, TypeParseError> {
        self.skip_ws();
        if self.peek() == Some('`') {
            self.pos += 1;
            let start = self.pos;
            let end = self.text[start..]
                .find('`')
                .ok_or_else(|| self.error("a backquoted field name is not closed"))?;
            self.pos = start + end + 1;
            return Ok(self.text[start..start + end].to_string());
        }
        let name = self.word().to_string();
        if name.is_empty() {
            return Err(self.error("expected a struct field name"));
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_primitive_and_alias() {
        for (text, expected) in [
            ("string", DataType::String),
            ("STRING", DataType::String),
            ("varchar(20)", DataType::String),
            ("boolean", DataType::Boolean),
            ("tinyint", DataType::Byte),
            ("smallint", DataType::Short),
            ("int", DataType::Int),
            ("integer", DataType::Int),
            ("bigint", DataType::Long),
            ("long", DataType::Long),
            ("float", DataType::Float),
            ("double", DataType::Double),
            ("date", DataType::Date),
            ("timestamp", DataType::Timestamp),
            ("timestamp_ntz", DataType::TimestampNtz),
            ("binary", DataType::Binary),
            (
                "decimal",
                DataType::Decimal {
                    precision: 10,
                    scale: 0,
                },
            ),
            (
                "decimal(38, 4)",
                DataType::Decimal {
                    precision: 38,
                    scale: 4,
                },
            ),
        ] {
            assert_eq!(DataType::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn parses_nested_types_and_prints_them_back() {
        let text = "struct<id:string,loc:struct<lat:double,lon:double>,tags:array<string>,m:map<string,decimal(5,2)>>";
        let parsed = DataType::parse(text).expect("parses");
        assert_eq!(parsed.to_string(), text);
        assert_eq!(
            DataType::parse(" array < map < string , int > > ").expect("parses"),
            DataType::Array(Box::new(DataType::Map(
                Box::new(DataType::String),
                Box::new(DataType::Int)
            )))
        );
        let quoted = DataType::parse("struct<`odd name`:int>").expect("parses");
        assert_eq!(
            quoted,
            DataType::Struct(vec![StructField {
                name: "odd name".into(),
                data_type: DataType::Int
            }])
        );
    }

    #[test]
    fn rejects_bad_types_with_a_message_that_says_why() {
        let cases = [
            (
                "dobule",
                "unknown type \"dobule\" (expected one of string, boolean",
            ),
            ("decimal(40,2)", "decimal precision 40 is outside 1..=38"),
            (
                "decimal(5,6)",
                "decimal scale 6 is larger than its precision 5",
            ),
            ("array<int", "expected '>' but the type ended"),
            ("map<string>", "expected ',' but found '>'"),
            ("struct<>", "a struct needs at least one field"),
            ("struct<a:int,a:string>", "struct field \"a\" appears twice"),
            ("int extra", "unexpected \"extra\" after the type"),
            ("", "expected a type name"),
        ];
        for (text, expected) in cases {
            let error = DataType::parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn partitionable_types_are_primitive_and_exact() {
        assert!(DataType::String.is_partitionable());
        assert!(DataType::Date.is_partitionable());
        assert!(!DataType::Double.is_partitionable());
        assert!(!DataType::Array(Box::new(DataType::Int)).is_partitionable());
    }
}
