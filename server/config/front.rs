//! Flags and validated settings of the Clerk-compatible front: where it
//! listens, how large a request body may be, and the deadline of requests
//! that name none.

use std::{net::SocketAddr, time::Duration};

use clap::Args;

use super::{ConfigError, duration, lookup::bytes};

/// Port of the front when `--clerk-api-listen` is not given.
const DEFAULT_FRONT_PORT: u16 = 8090;

/// Flags of the front, shared by `serve` and `demo`.
#[derive(Debug, Args)]
pub struct FrontArgs {
    /// Address of the Clerk-compatible Backend API (point Clerk's SDKs'
    /// API URL here). Keep it inside the cluster: it spends the key.
    /// Default: port 8090 on the gRPC listen address's IP.
    #[arg(long, env = "CLERK_BROKER_CLERK_API_LISTEN")]
    pub clerk_api_listen: Option<String>,
    /// Largest request body the front accepts (413 beyond).
    #[arg(long, env = "CLERK_BROKER_CLERK_API_MAX_BODY", default_value = "4MiB")]
    pub clerk_api_max_body: String,
    /// Deadline of a front request without an `x-clerk-broker-timeout` header.
    #[arg(long, env = "CLERK_BROKER_CLERK_API_TIMEOUT", default_value = "30s")]
    pub clerk_api_timeout: String,
}

/// The validated settings of the front.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Largest request body.
    pub max_body: usize,
    /// Deadline of a request that names none.
    pub default_timeout: Duration,
}

impl FrontConfig {
    /// The defaults, listening on `listen`.
    pub fn with_listen(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_body: 4 << 20,
            default_timeout: Duration::from_secs(30),
        }
    }

    /// Validates `args`; `grpc_listen` decides the default address.
    pub fn from_args(args: &FrontArgs, grpc_listen: SocketAddr) -> Result<Self, ConfigError> {
        let listen = match &args.clerk_api_listen {
            Some(text) => text.parse().map_err(|_| {
                ConfigError::new(format!(
                    "--clerk-api-listen {text:?} is not an address such as 0.0.0.0:8090"
                ))
            })?,
            None => SocketAddr::new(grpc_listen.ip(), DEFAULT_FRONT_PORT),
        };
        let max_body = usize::try_from(bytes("--clerk-api-max-body", &args.clerk_api_max_body)?)
            .ok()
            .filter(|max| *max > 0)
            .ok_or_else(|| ConfigError::new("--clerk-api-max-body must be above 0"))?;
        let default_timeout = duration("--clerk-api-timeout", &args.clerk_api_timeout)?;
        if default_timeout.is_zero() || default_timeout > crate::front::MAX_TIMEOUT {
            return Err(ConfigError::new(
                "--clerk-api-timeout must be above 0 and at most 300s",
            ));
        }
        Ok(Self {
            listen,
            max_body,
            default_timeout,
        })
    }
}
