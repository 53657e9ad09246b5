//! tributary-e2e's integration tests: one binary (each file under tests/ would link
//! everything again), one module per suite.

mod bench_smoke;
mod spark;
