//! Rust client for clerk-broker.
