//! Integration tests of the Rust client and `clerk-broker-cli` against the
//! real broker, started in-process on `127.0.0.1:0` in front of the fake
//! Clerk. One concern per module.

mod harness;

mod cli;
mod export;
mod lookups;
mod permits;
