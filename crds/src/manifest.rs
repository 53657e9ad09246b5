//! Reading StreamingIngestion manifests from YAML files, as `kubectl apply -f --validate=strict`
//! and the API server would: several documents per file, other kinds (a Secret beside the
//! ingestion) skipped, every field of an ingestion known to the schema, and the one validation.
//!
//! Manifests are bounded before they are parsed: at most [`MAX_MANIFEST_BYTES`] and
//! [`MAX_NESTING_DEPTH`] levels, so a huge or deeply nested file is refused at once with a
//! message rather than read, parsed and rendered into a ConfigMap the API server would refuse.

use std::io::Read;

use serde_saphyr::MessageFormatter;
use std::path::Path;

use crate::strict::{self, Node, SchemaProblems};
use crate::{StreamingIngestion, ValidationErrors, validate};

/// Largest manifest file, and largest manifest the operator hands to its workers. The workers
/// read theirs from a ConfigMap, whose data the API server limits to 1 MiB (1,048,576 bytes);
/// the rest is room for the ConfigMap's key.
pub const MAX_MANIFEST_BYTES: usize = 1_000_000;

/// Why [`MAX_MANIFEST_BYTES`], for messages.
pub const MANIFEST_BOUND_REASON: &str = "a manifest may hold at most 1,000,000 bytes: the operator hands it to the workers in a ConfigMap, which the API server limits to 1 MiB";

/// Deepest nesting of mappings and lists. The deepest a StreamingIngestion needs is about 12
/// (a worker's affinity terms).
pub const MAX_NESTING_DEPTH: usize = 32;

/// The errors of this crate: reading, parsing or validating a manifest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read manifest {path}: {source}")]
    ReadManifest {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin} is more than {MAX_MANIFEST_BYTES} bytes; {MANIFEST_BOUND_REASON}")]
    TooLarge { origin: String },
    #[error("{origin}: document {document}, line {line}: {message}")]
    ParseManifest {
        origin: String,
        document: usize,
        line: u64,
        message: String,
    },
    #[error(
        "{origin}: document {document} is a StreamingIngestion of apiVersion {found}, which this version of Tributary does not know (use tributary.dev/v1alpha1)"
    )]
    UnknownVersion {
        origin: String,
        document: usize,
        found: String,
    },
    #[error(
        "{origin}: StreamingIngestion {name} does not match the API (the API server and kubectl apply --validate=strict refuse it too):{problems}"
    )]
    Schema {
        origin: String,
        name: String,
        problems: SchemaProblems,
    },
    #[error(
        "{origin} holds no StreamingIngestion (apiVersion: tributary.dev/v1alpha1, kind: StreamingIngestion)"
    )]
    NoIngestion { origin: String },
    #[error("{origin}: StreamingIngestion {name} is invalid: {errors}")]
    InvalidIngestion {
        origin: String,
        name: String,
        errors: ValidationErrors,
    },
}

/// Reads and validates every StreamingIngestion in a file (at most [`MAX_MANIFEST_BYTES`]).
pub fn load_file(path: &Path) -> Result<Vec<StreamingIngestion>, Error> {
    let origin = path.display().to_string();
    let read_error = |source| Error::ReadManifest {
        path: origin.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // Read one byte past the bound, so a larger file (or an endless device) stops there.
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge { origin });
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text",
        ))
    })?;
    load_str(&text, &origin)
}

/// Parses and validates every StreamingIngestion in a YAML text; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<Vec<StreamingIngestion>, Error> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(Error::TooLarge {
            origin: origin.to_string(),
        });
    }
    let mut found = Vec::new();
    for (index, (first_line, document)) in split_documents(text).into_iter().enumerate() {
        let number = index + 1;
        let parse_error = |error: &serde_saphyr::Error, tree: Option<&Node>| {
            parse_error(origin, number, first_line, error, tree)
        };
        let tree: Node = serde_saphyr::from_str_with_options(document, parse_options())
            .map_err(|e| parse_error(&e, None))?;
        let kind = tree.get("kind").and_then(Node::as_str);
        let api_version = tree.get("apiVersion").and_then(Node::as_str);
        let ours = format!("{}/{}", crate::GROUP, crate::VERSION);
        match (kind, api_version) {
            (Some("StreamingIngestion"), Some(version)) if version == ours => {}
            (Some("StreamingIngestion"), Some(version))
                if version.starts_with(&format!("{}/", crate::GROUP)) =>
            {
                return Err(Error::UnknownVersion {
                    origin: origin.to_string(),
                    document: number,
                    found: version.to_string(),
                });
            }
            _ => continue,
        }
        let problems = strict::check(&tree, first_line as u64);
        if !problems.is_empty() {
            let name = tree
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str)
                .unwrap_or("(unnamed)");
            return Err(Error::Schema {
                origin: origin.to_string(),
                name: name.to_string(),
                problems: SchemaProblems(problems),
            });
        }
        let ingestion: StreamingIngestion =
            serde_saphyr::from_str_with_options(document, parse_options())
                .map_err(|e| parse_error(&e, Some(&tree)))?;
        validate(&ingestion).map_err(|errors| Error::InvalidIngestion {
            origin: origin.to_string(),
            name: ingestion.metadata.name.clone().unwrap_or_default(),
            errors,
        })?;
        found.push(ingestion);
    }
    if found.is_empty() {
        return Err(Error::NoIngestion {
            origin: origin.to_string(),
        });
    }
    Ok(found)
}

/// The manifest the operator hands to a worker: the ingestion with its metadata reduced to name
/// and namespace (no uid, resourceVersion or last-applied annotation, which would change its
/// hash without changing the query) and the spec as the user wrote it, less how many workers
/// run (replicas, autoscaling, maxRestarts): the pods roll when the manifest changes, and
/// scaling must not restart the workers that keep running. The spec holds only Secret
/// *references*; values are mounted from the Secrets themselves.
pub fn worker_manifest(
    ingestion: &StreamingIngestion,
    name: &str,
    namespace: &str,
) -> Result<String, serde_saphyr::SerializeError> {
    let spec = ingestion.spec.without_scale();
    let document = serde_json::json!({
        "apiVersion": format!("{}/{}", crate::GROUP, crate::VERSION),
        "kind": "StreamingIngestion",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    serde_saphyr::to_string(&document)
}

/// How manifests are parsed: bounded nesting, duplicate keys refused (as kubectl's strict
/// validation does), and errors without a snippet of the text (which could show a secret
/// typed on a neighbouring line).
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_NESTING_DEPTH;
    budget.flow_nesting_limit = MAX_NESTING_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.with_snippet = false;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options
}

/// A parse error in the words a user needs: the file line and, when the document could be read
/// as a tree, the field the error is at.
fn parse_error(
    origin: &str,
    document: usize,
    first_line: usize,
    error: &serde_saphyr::Error,
    tree: Option<&Node>,
) -> Error {
    let error = error.without_snippet();
    let location = error.location();
    let local_line = location.map_or(1, |l| l.line().max(1));
    let line = local_line + first_line as u64 - 1;
    let raw = serde_saphyr::UserMessageFormatter.format_message(error);
    let text: String = raw.chars().filter(|c| !c.is_control()).collect();
    let depth = matches!(
        error,
        serde_saphyr::Error::Budget {
            breach: serde_saphyr::budget::BudgetBreach::Depth { .. },
            ..
        }
    ) || text.contains("recursion limit");
    let message = if depth {
        format!(
            "nests mappings and lists deeper than {MAX_NESTING_DEPTH} levels; a StreamingIngestion needs about 12"
        )
    } else {
        let field = tree
            .zip(location)
            .and_then(|(tree, l)| strict::path_at(tree, l.line(), l.column()));
        match field {
            Some(path) => format!("{path}: {text}"),
            None => text,
        }
    };
    Error::ParseManifest {
        origin: origin.to_string(),
        document,
        line,
        message,
    }
}

/// Splits a multi-document YAML text at `---` (and `...`) lines; returns each non-empty
/// document with the line it starts on (1-based). YAML ends any block scalar at such a line,
/// so splitting on lines is exact.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || line.starts_with("--- ") || trimmed == "..." {
            documents.push((start_line, &text[start_byte..offset]));
            let marker = if line.starts_with("--- ") {
                4
            } else {
                line.len()
            };
            // Content after "--- " on the marker line belongs to the next document.
            start_byte = offset + marker.min(line.len());
            start_line = if marker < line.len() {
                number + 1
            } else {
                number + 2
            };
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start_byte..]));
    documents
        .into_iter()
        .filter(|(_, doc)| {
            doc.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers_with_their_first_lines() {
        let text = "a: 1\n---\nb: 2\n--- {c: 3}\n...\n# only a comment\n---\n\nd: 4\n";
        assert_eq!(
            split_documents(text),
            vec![
                (1, "a: 1\n"),
                (3, "b: 2\n"),
                (4, "{c: 3}\n"),
                (8, "\nd: 4\n")
            ]
        );
    }
}
