//! tributary-operator: reconciles StreamingIngestion into Deployments, Jobs and CronJobs.
//!
//! A pure core ([`resources`], [`status`], [`checkpoint`]) computes what should exist and what
//! the status says; [`reconcile`] is the thin edge that reads and writes the API.

pub mod checkpoint;
pub mod cli;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod resources;
pub mod status;

pub use error::{Error, Result};
