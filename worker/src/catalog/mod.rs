//! Unity Catalog: resolves `catalog.schema.table` through the catalog's REST API
//! (`/api/2.1/unity-catalog`, served alike by Databricks and the open-source server) to the
//! table's id, type, format, storage location and columns; registers an absent table as an
//! EXTERNAL Delta table; and asks for short-lived storage credentials for it
//! (`temporary-table-credentials`), mapped to object_store options and renewed before they
//! expire.
//!
//! Every error names the catalog, the table and what the catalog said; the token, the OAuth
//! client secret and vended credentials never appear in one.

mod client;
mod credentials;
mod model;
mod resolve;

use std::fmt;

pub use credentials::Renewal;
pub use resolve::locate_sink;

/// What went wrong with the catalog: decides the remedy, and lets callers tell a refused token
/// from an absent table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogProblem {
    /// The catalog cannot be reached or did not answer in time.
    Unreachable,
    /// The token or the OAuth client was refused (401), or the principal lacks a privilege (403).
    Unauthorized,
    UnknownCatalog,
    UnknownSchema,
    TableNotFound,
    /// The table exists but cannot be written by this worker (not Delta, a view, managed).
    Unwritable,
    /// Any other refusal or an answer that does not parse.
    Failed,
}

impl fmt::Display for CatalogProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CatalogProblem::Unreachable => "CatalogUnreachable",
            CatalogProblem::Unauthorized => "CatalogUnauthorized",
            CatalogProblem::UnknownCatalog => "CatalogNotFound",
            CatalogProblem::UnknownSchema => "SchemaNotFound",
            CatalogProblem::TableNotFound => "TableNotFound",
            CatalogProblem::Unwritable => "TableNotWritable",
            CatalogProblem::Failed => "CatalogError",
        })
    }
}
