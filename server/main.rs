//! The `clerk-broker` binary.
fn main() {}
