//! clerk-broker: a gRPC service that owns the Clerk secret key and its rate-limit budget.

/// Code generated from `proto/` by `build.rs`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("clerk_broker.v1");

    /// The encoded descriptor set of `proto/`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("clerk_broker_descriptor");
}

pub mod admission;
pub mod callers;
pub mod clerk;
pub mod config;
pub mod counts;
pub mod demo;
pub mod export;
pub mod fake;
pub mod front;
pub mod grpc;
pub mod guarded;
pub mod http;
pub mod json;
pub mod logs;
pub mod metrics;
pub mod panics;
pub mod reload;
pub mod routes;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod users;
pub mod webhook;
