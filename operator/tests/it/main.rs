//! The operator's integration tests, in one binary (each test binary links everything).

mod cli;
mod controller;
mod harness;
mod leader;
mod watch;
