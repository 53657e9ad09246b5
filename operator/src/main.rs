//! Placeholder until the operator lands.
fn main() {}
