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

pub use resolve::{Renewal, locate_sink};

pub use crate::error::CatalogProblem;
