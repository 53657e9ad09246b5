//! Placeholder until the worker lands.
fn main() {}
