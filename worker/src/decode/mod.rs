//! The decode stage: a batch's records -> Arrow rows in the table's schema, or bad records.

mod json;

pub use json::{Decoded, JsonDecoder};
