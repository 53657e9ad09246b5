//! What the API server checks of a manifest before it stores it, for the manifests no API server
//! sees (`run -f`, `render -f`): every field is one the CRD's schema knows (as
//! `kubectl apply --validate=strict` insists), of the schema's type and within its bounds.
//!
//! serde's `deny_unknown_fields` cannot do this: it does not combine with the `flatten` the
//! sources use, and it would stop at the first problem without its path. Instead the YAML is
//! read into a tree that remembers the line of every key and walked against the generated
//! schema, so a misspelt optional field (`startingOffset`) is refused, with the nearest known
//! name, instead of being dropped for a default.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A YAML value with the position of every mapping key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key of a mapping, where it was written (1-based, within its document) and its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub line: u64,
    pub column: u64,
    pub value: Node,
}

impl Node {
    /// The value under `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(text) => Some(text),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// A mapping key: any scalar, as text (YAML allows `1: x`; JSON and Kubernetes see "1").
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(i128::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(i128::from(v)))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
                Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
                Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<serde_saphyr::Spanned<Key>>()? {
                    let value = map.next_value()?;
                    entries.push(Entry {
                        key: key.value.0,
                        line: key.referenced.line(),
                        column: key.referenced.column(),
                        value,
                    });
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// One way a manifest differs from the schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaProblem {
    /// The line (in the file) of the key the problem is at, or of its mapping.
    pub line: u64,
    /// e.g. `spec.source.kafka.startingOffset`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.path, self.message)
    }
}

/// Every problem found in one document; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaProblems(pub Vec<SchemaProblem>);

impl fmt::Display for SchemaProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

/// The CRD manifest the cluster is given, which a test keeps equal to [`crate::crd::crd`].
const CRD_MANIFEST: &str = include_str!("../streamingingestions.tributary.dev.yaml");

/// The CRD's schema of a StreamingIngestion, with `metadata` described as Kubernetes'
/// ObjectMeta (the CRD only says "an object" there; the API server knows the rest).
///
/// Read from the committed manifest rather than generated from the types: generating it cost
/// every `run -f` 10-20 ms on an idle 2-core machine, 60 ms and more on a busy one, before the
/// worker did anything; and the manifest is the very schema the API server checks against.
fn ingestion_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = serde_saphyr::from_str::<Value>(CRD_MANIFEST)
            .unwrap_or_else(|_| serde_json::to_value(crate::crd::crd()).unwrap_or(Value::Null));
        let mut schema = crd
            .pointer("/spec/versions/0/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or(Value::Null);
        // The generated CRD leaves the type's own fields to the API server.
        if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
            properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
            properties.insert("kind".into(), serde_json::json!({"type": "string"}));
            properties.insert("metadata".into(), object_meta_schema());
        }
        schema
    })
}

fn object_meta_schema() -> Value {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|settings| settings.inline_subschemas = true)
        .into_generator();
    let schema = generator.into_root_schema_for::<ObjectMeta>();
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        for key in ["$schema", "title", "definitions", "$defs", "components"] {
            map.remove(key);
        }
    }
    value
}

/// Checks a StreamingIngestion document against the schema. `first_line` is the file line the
/// document starts on, so the lines reported are the file's.
pub(crate) fn check(document: &Node, first_line: u64) -> Vec<SchemaProblem> {
    let mut walk = Walk {
        offset: first_line.saturating_sub(1),
        problems: Vec::new(),
    };
    walk.node(ingestion_schema(), document, "", first_line);
    walk.problems
}

struct Walk {
    offset: u64,
    problems: Vec<SchemaProblem>,
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Walk {
    fn push(&mut self, line: u64, path: &str, message: impl Into<String>) {
        self.problems.push(SchemaProblem {
            line,
            path: if path.is_empty() {
                "(document)".to_string()
            } else {
                path.to_string()
            },
            message: message.into(),
        });
    }

    /// Checks `node`, written at file line `line`, against `schema`.
    fn node(&mut self, schema: &Value, node: &Node, path: &str, line: u64) {
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            && schema.get("properties").is_none()
        {
            return;
        }
        if matches!(node, Node::Null) {
            // The API server drops a null of a non-nullable field: it counts as absent.
            return;
        }
        let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        let expected = schema.get("type").and_then(Value::as_str);
        let type_ok = match (expected, node) {
            _ if int_or_string => matches!(node, Node::Int(_) | Node::Str(_)),
            (None, _) => true,
            (Some("string"), Node::Str(_))
            | (Some("boolean"), Node::Bool(_))
            | (Some("integer"), Node::Int(_))
            | (Some("number"), Node::Int(_) | Node::Float(_))
            | (Some("object"), Node::Map(_))
            | (Some("array"), Node::Seq(_)) => true,
            // A whole number too large for the YAML parser's integers is still a number the
            // user meant as an integer: report its bound, not its type.
            (Some("integer"), Node::Float(f)) if f.is_finite() && f.fract() == 0.0 => {
                self.number_bounds(schema, *f, path, line);
                return;
            }
            _ => false,
        };
        if !type_ok {
            let wanted = match expected {
                _ if int_or_string => "an integer or a string",
                Some("string") => "a string",
                Some("boolean") => "a boolean (true or false)",
                Some("integer") => "an integer",
                Some("number") => "a number",
                Some("object") => "a mapping",
                Some("array") => "a list",
                _ => "of another type",
            };
            let wants_text = int_or_string || expected == Some("string");
            let hint = if wants_text && !matches!(node, Node::Map(_) | Node::Seq(_)) {
                " (put the value in quotes)"
            } else {
                ""
            };
            // The value itself is never shown: it may be a credential typed in the wrong place.
            self.push(
                line,
                path,
                format!("must be {wanted}, not {}{hint}", node.type_name()),
            );
            return;
        }
        match node {
            Node::Str(text) => self.string(schema, text, path, line),
            Node::Int(value) => self.integer(schema, *value, path, line),
            Node::Float(value) => self.number_bounds(schema, *value, path, line),
            Node::Seq(items) => self.list(schema, items, path, line),
            Node::Map(entries) => self.mapping(schema, entries, path, line),
            Node::Null | Node::Bool(_) => {}
        }
    }

    fn string(&mut self, schema: &Value, text: &str, path: &str, line: u64) {
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            let names: Vec<&str> = choices.iter().filter_map(Value::as_str).collect();
            if !names.contains(&text) {
                let mut message = format!(
                    "\"{}\" is not one of {}",
                    crate::limits::excerpt(text),
                    names.join(", ")
                );
                if let Some(near) = nearest(text, names.iter().copied()) {
                    message.push_str(&format!("; did you mean {near}?"));
                }
                self.push(line, path, message);
            }
            return;
        }
        let length = text.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            self.push(
                line,
                path,
                format!("must be at most {max} characters long, not {length}"),
            );
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            let message = if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("must be at least {min} characters long, not {length}")
            };
            self.push(line, path, message);
        }
    }

    fn integer(&mut self, schema: &Value, value: i128, path: &str, line: u64) {
        let (format_min, format_max) = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => (i128::from(i32::MIN), i128::from(i32::MAX)),
            _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
        };
        let max = schema
            .get("maximum")
            .and_then(Value::as_f64)
            .map_or(format_max, |m| (m as i128).min(format_max));
        let min = schema
            .get("minimum")
            .and_then(Value::as_f64)
            .map_or(format_min, |m| (m as i128).max(format_min));
        if value > max {
            self.push(line, path, format!("must be at most {max}, not {value}"));
        } else if value < min {
            self.push(line, path, format!("must be at least {min}, not {value}"));
        }
    }

    fn number_bounds(&mut self, schema: &Value, value: f64, path: &str, line: u64) {
        let integer = schema.get("type").and_then(Value::as_str) == Some("integer");
        let format_max = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => f64::from(i32::MAX),
            _ if integer => i64::MAX as f64,
            _ => f64::MAX,
        };
        let max = schema
            .get("maximum")
            .and_then(Value::as_f64)
            .map_or(format_max, |m| m.min(format_max));
        let min = schema
            .get("minimum")
            .and_then(Value::as_f64)
            .map_or(-format_max, |m| m.max(-format_max));
        let shown = |bound: f64| {
            if integer {
                format!("{}", bound as i128)
            } else {
                format!("{bound}")
            }
        };
        if value > max {
            self.push(
                line,
                path,
                format!("must be at most {}, not {value:e}", shown(max)),
            );
        } else if value < min {
            self.push(
                line,
                path,
                format!("must be at least {}, not {value:e}", shown(min)),
            );
        }
    }

    fn list(&mut self, schema: &Value, items: &[Node], path: &str, line: u64) {
        let count = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            self.push(
                line,
                path,
                format!("must have at most {max} items, not {count}"),
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            self.push(
                line,
                path,
                format!("must have at least {min} item(s), not {count}"),
            );
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.node(item_schema, item, &format!("{path}[{i}]"), line);
            }
        }
    }

    fn mapping(&mut self, schema: &Value, entries: &[Entry], path: &str, line: u64) {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let count = entries.len() as u64;
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && count > max
        {
            self.push(
                line,
                path,
                format!("must have at most {max} entries, not {count}"),
            );
        }
        for entry in entries {
            let entry_line = entry.line + self.offset;
            if let Some(child) = properties.and_then(|p| p.get(&entry.key)) {
                self.node(
                    child,
                    &entry.value,
                    &child_path(path, &entry.key),
                    entry_line,
                );
            } else if let Some(value_schema) = additional.filter(|a| a.is_object()) {
                let at = format!("{path}[{}]", entry.key);
                self.node(value_schema, &entry.value, &at, entry_line);
            } else if additional == Some(&Value::Bool(true))
                || schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            {
            } else if let Some(properties) = properties {
                let known = properties.keys().map(String::as_str);
                let message = match nearest(&entry.key, known.clone()) {
                    Some(near) => format!("unknown field; did you mean {near}?"),
                    None => {
                        let names: Vec<&str> = known.collect();
                        format!("unknown field (known fields here: {})", names.join(", "))
                    }
                };
                self.push(entry_line, &child_path(path, &entry.key), message);
            }
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                let present = entries
                    .iter()
                    .any(|e| e.key == name && !matches!(e.value, Node::Null));
                if !present {
                    self.push(line, &child_path(path, name), "required field is missing");
                }
            }
        }
    }
}

/// The known name nearest to `unknown`: equal but for case, `_`, `-` or `.` (bootstrap_servers,
/// Spark's kafka.bootstrap.servers), or a few edits away (startingOffset, onErorr).
pub(crate) fn nearest<'a>(unknown: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let normalise = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = normalise(unknown);
    let mut best: Option<(usize, &str)> = None;
    for name in known {
        let candidate = normalise(name);
        let distance = if candidate == wanted {
            0
        } else if wanted.ends_with(&candidate) && candidate.len() >= 6 {
            // A known name behind a prefix, such as Spark's kafka.<option>.
            1
        } else {
            strsim::osa_distance(&wanted, &candidate)
        };
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, name));
        }
    }
    let limit = (wanted.chars().count() / 3).clamp(1, 4);
    best.filter(|(d, _)| *d <= limit).map(|(_, name)| name)
}

/// The path of the key written last at or before `line`:`column` (1-based, within the
/// document): where a typed deserialisation error points.
pub(crate) fn path_at(document: &Node, line: u64, column: u64) -> Option<String> {
    fn visit(node: &Node, path: &str, target: (u64, u64), best: &mut Option<((u64, u64), String)>) {
        match node {
            Node::Map(entries) => {
                for entry in entries {
                    let at = (entry.line, entry.column);
                    if at > target {
                        continue;
                    }
                    let here = child_path(path, &entry.key);
                    if best.as_ref().is_none_or(|(b, _)| at >= *b) {
                        *best = Some((at, here.clone()));
                    }
                    visit(&entry.value, &here, target, best);
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    visit(item, &format!("{path}[{i}]"), target, best);
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    visit(document, "", (line, column), &mut best);
    best.map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers as f64: YAML reads `minimum: 1` as an integer where the generated schema holds
    /// 1.0, the same bound to the check.
    fn numbers_as_floats(value: Value) -> Value {
        match value {
            Value::Number(n) => serde_json::json!(n.as_f64()),
            Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, numbers_as_floats(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    #[test]
    fn the_embedded_manifest_reads_as_the_generated_crd() {
        let embedded: Value = serde_saphyr::from_str(CRD_MANIFEST).expect("the manifest parses");
        let generated = serde_json::to_value(crate::crd::crd()).expect("the CRD serializes");
        assert!(
            numbers_as_floats(embedded) == numbers_as_floats(generated),
            "crds/streamingingestions.tributary.dev.yaml is not the generated CRD: run `cargo run --bin crdgen`"
        );
    }

    #[test]
    fn nearest_names_cover_typos_case_and_spark_prefixes() {
        let kafka = [
            "bootstrapServers",
            "subscribe",
            "subscribePattern",
            "assign",
            "startingOffsets",
            "maxOffsetsPerTrigger",
            "failOnDataLoss",
            "options",
            "secretOptions",
        ];
        for (typo, expected) in [
            ("startingOffset", Some("startingOffsets")),
            ("maxOffsetPerTrigger", Some("maxOffsetsPerTrigger")),
            ("bootstrap_servers", Some("bootstrapServers")),
            ("kafka.bootstrap.servers", Some("bootstrapServers")),
            ("subscibe", Some("subscribe")),
            ("topic", None),
            ("x", None),
        ] {
            assert_eq!(nearest(typo, kafka.iter().copied()), expected, "{typo}");
        }
        assert_eq!(
            nearest("onErorr", ["schema", "onError", "deadLetter"].into_iter()),
            Some("onError")
        );
    }
}
