//! tributary-operator: reconciles StreamingIngestion into Deployments, Jobs and CronJobs.
//!
//! A pure core ([`resources`], [`scaling`], [`status`], [`checkpoint`]) computes what should
//! exist and what the status says; [`reconcile`] is the thin edge that reads the caches and
//! writes the API; [`controller`] runs the watches that trigger it and fill its [`cache`].

pub mod cache;
pub mod checkpoint;
pub mod cli;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod resources;
pub mod scaling;
pub mod status;

pub use error::{Error, Result};
