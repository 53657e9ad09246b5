//! Reading StreamingIngestion manifests from YAML files, as `kubectl apply -f` would: several
//! documents per file, other kinds (a Secret beside the ingestion) skipped.

use std::path::Path;

use serde_yaml::Value;

use crate::{StreamingIngestion, ValidationErrors, validate};

/// The errors of this crate: reading, parsing or validating a manifest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read manifest {path}: {source}")]
    ReadManifest {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{origin}: document {document} (starting at line {line}) is not valid YAML for its kind: {source}"
    )]
    ParseManifest {
        origin: String,
        document: usize,
        line: usize,
        source: serde_yaml::Error,
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

/// Reads and validates every StreamingIngestion in a file.
pub fn load_file(path: &Path) -> Result<Vec<StreamingIngestion>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadManifest {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, &path.display().to_string())
}

/// Parses and validates every StreamingIngestion in a YAML text; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<Vec<StreamingIngestion>, Error> {
    let mut found = Vec::new();
    for (index, (line, document)) in split_documents(text).into_iter().enumerate() {
        let parse_error = |source| Error::ParseManifest {
            origin: origin.to_string(),
            document: index + 1,
            line,
            source,
        };
        let value: Value = serde_yaml::from_str(document).map_err(parse_error)?;
        if !is_streaming_ingestion(&value) {
            continue;
        }
        let ingestion: StreamingIngestion = serde_yaml::from_str(document).map_err(parse_error)?;
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

fn is_streaming_ingestion(value: &Value) -> bool {
    let field = |name: &str| value.get(name).and_then(Value::as_str);
    field("kind") == Some("StreamingIngestion")
        && field("apiVersion") == Some(&format!("{}/{}", crate::GROUP, crate::VERSION))
}

/// Splits a multi-document YAML text at `---` lines; returns each non-empty document with the
/// line it starts on (1-based).
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            documents.push((start_line, &text[start_byte..offset]));
            start_byte = offset + line.len();
            start_line = number + 2;
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
