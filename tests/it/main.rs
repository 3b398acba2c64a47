//! Integration tests: the real broker on `127.0.0.1:0`, a fake Clerk behind
//! it, and generated clients in front. One concern per module.

mod harness;
mod pki;
mod redis;

mod access;
mod budget;
mod cache;
mod callers;
mod cli;
mod exports;
mod faults;
mod front;
mod front_writes;
mod grpc_limits;
mod grpcurl;
mod http_limits;
mod lease_store;
mod lookups;
mod metrics_labels;
mod raw_json;
mod reload;
mod secrecy;
mod shutdown;
mod time_bounds;
mod tls;
mod upstream_faults;
mod validation;
mod webhooks;

/// The admission suites again, unchanged, with every broker sharing its
/// budgets through Redis (the harness sees the `shared::` test names).
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "."]
mod shared {
    mod budget;
    mod callers;
}

mod replicas;
