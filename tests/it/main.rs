//! Integration tests: the real broker on `127.0.0.1:0`, a fake Clerk behind
//! it, and generated clients in front. One concern per module.

mod harness;

mod budget;
mod callers;
mod cli;
mod grpcurl;
mod lookups;
mod reload;
mod shutdown;
mod upstream_faults;
mod validation;
