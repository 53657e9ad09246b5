//! The decode stage: a batch's records -> Arrow rows in the table's schema, or bad records.

mod json;
mod raw;

pub use json::{Decoded, JsonDecoder};
pub use raw::RawDecoder;

use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use tributary_crds::{Format, MetadataColumn, OnError};

use crate::error::{Error, Result};
use crate::record::Record;

/// The decoder of an ingestion's format.
pub enum Decoder {
    Json(JsonDecoder),
    Raw(RawDecoder),
}

impl Decoder {
    pub fn new(format: &Format, metadata: &[MetadataColumn]) -> Result<Decoder> {
        match (&format.json, &format.raw) {
            (Some(json), None) => Ok(Decoder::Json(JsonDecoder::new(json, metadata)?)),
            (None, Some(raw)) => Ok(Decoder::Raw(RawDecoder::new(raw, metadata)?)),
            _ => Err(Error::Unsupported(
                tributary_crds::FORMAT_ONE_OF_MESSAGE.to_string(),
            )),
        }
    }

    /// Decodes one batch; the records are shared so that a large JSON batch can be decoded in
    /// parts on several threads.
    pub fn decode(&self, records: &Arc<Vec<Record>>) -> Result<Decoded> {
        match self {
            Decoder::Json(json) => json.decode_shared(records),
            Decoder::Raw(raw) => raw.decode(records),
        }
    }

    /// What happens to a bad record: the JSON format's onError; a raw format's only bad
    /// records (bytes a string column cannot hold) stop the query.
    pub fn on_error(&self) -> OnError {
        match self {
            Decoder::Json(json) => json.on_error(),
            Decoder::Raw(_) => OnError::Fail,
        }
    }

    /// The error that stops the query at a bad record (with `on_error` Fail).
    pub fn stop_at(&self, record: &Record, reason: String) -> Error {
        let (topic, partition, offset) =
            (record.topic.to_string(), record.partition, record.offset);
        match self {
            Decoder::Json(_) => Error::BadRecord {
                topic,
                partition,
                offset,
                reason,
            },
            Decoder::Raw(_) => Error::RawRecord {
                topic,
                partition,
                offset,
                reason,
            },
        }
    }

    pub fn table_schema(&self) -> SchemaRef {
        match self {
            Decoder::Json(json) => json.table_schema(),
            Decoder::Raw(raw) => raw.table_schema(),
        }
    }
}
