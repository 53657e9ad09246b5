//! The StreamingIngestion API (`tributary.dev/v1alpha1`), shared by the worker and the operator.
//!
//! spec (what the user declares) -> [`validate`] (every problem, with its field path) ->
//! worker / operator; status is written back by both, each under its own field manager.

pub mod conditions;
pub mod crd;
pub mod datatype;
pub mod datetime;
pub mod limits;
pub mod manifest;
pub mod pod;
pub mod secrets;
pub mod spec;
pub mod status;
pub mod strict;
pub mod transform;
pub mod validate;

pub use datatype::DataType;
pub use manifest::Error;
pub use spec::*;
pub use status::*;
pub use validate::{FieldError, ValidationErrors, validate};

/// The API group.
pub const GROUP: &str = "tributary.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";
