//! The `tributary-worker` binary: the command line of [`tributary_worker::cli`].

use std::process::ExitCode;

use clap::Parser;
use tributary_worker::cli::Cli;

fn main() -> ExitCode {
    // Before anything allocates much: the allocator's settings apply from here on.
    tributary_worker::memory::configure();
    Cli::parse().run()
}
