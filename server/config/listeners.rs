//! Flags of the listeners themselves: TLS (for `serve`), and the HTTP and
//! gRPC listeners' resource limits (for `serve` and `demo`).

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{ConfigError, duration, lookup::bytes};
pub use crate::http::HttpLimits;
use crate::tls::TlsFiles;

/// TLS flags of `serve`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) served on both listeners; with
    /// --tls-key, turns TLS on. Reloaded when the file changes.
    #[arg(long, env = "CLERK_BROKER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CLERK_BROKER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: clients may present a certificate issued by one
    /// of them (mutual TLS) and be the caller whose `tls_identity` it names.
    #[arg(long, env = "CLERK_BROKER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, checked now so that a bad set stops the broker at start.
    pub fn files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        };
        files
            .load()
            .map_err(|error| ConfigError::new(error.to_string()))?;
        Ok(Some(files))
    }
}

/// Limits of the HTTP listener, shared by `serve` and `demo`.
#[derive(Debug, Args)]
pub struct HttpLimitArgs {
    /// Largest accepted webhook body; larger deliveries get 413.
    #[arg(long, env = "CLERK_BROKER_HTTP_MAX_BODY", default_value = "1MiB")]
    pub http_max_body: String,
    /// Time a client has to send a request's headers (and an idle
    /// keep-alive connection to start its next request) before it is
    /// disconnected.
    #[arg(long, env = "CLERK_BROKER_HTTP_HEADER_TIMEOUT", default_value = "10s")]
    pub http_header_timeout: String,
    /// Longest time from a request's headers to its answer, body included;
    /// beyond, 408.
    #[arg(long, env = "CLERK_BROKER_HTTP_REQUEST_TIMEOUT", default_value = "30s")]
    pub http_request_timeout: String,
    /// Longest time from a request's headers to the end of its body; beyond,
    /// 408 (a client announcing a body it does not send is cut early).
    #[arg(long, env = "CLERK_BROKER_HTTP_BODY_TIMEOUT", default_value = "5s")]
    pub http_body_timeout: String,
    /// Most connections open at once (TLS handshakes included); further
    /// clients wait to be accepted.
    #[arg(long, env = "CLERK_BROKER_HTTP_MAX_CONNECTIONS", default_value_t = 256)]
    pub http_max_connections: usize,
    /// Most connections open at once from one client address (an IPv4
    /// address or an IPv6 /64); further ones are closed at once. Behind a
    /// proxy every connection comes from the proxy: raise it to
    /// --http-max-connections there.
    #[arg(
        long,
        env = "CLERK_BROKER_HTTP_MAX_CONNECTIONS_PER_PEER",
        default_value_t = 16
    )]
    pub http_max_connections_per_peer: usize,
}

impl HttpLimits {
    /// Validates `args`.
    pub fn from_args(args: &HttpLimitArgs) -> Result<Self, ConfigError> {
        let max_body = usize::try_from(bytes("--http-max-body", &args.http_max_body)?)
            .map_err(|_| ConfigError::new("--http-max-body is too large"))?;
        let header_timeout = duration("--http-header-timeout", &args.http_header_timeout)?;
        let request_timeout = duration("--http-request-timeout", &args.http_request_timeout)?;
        let body_timeout = duration("--http-body-timeout", &args.http_body_timeout)?;
        for (flag, value) in [
            ("--http-header-timeout", header_timeout),
            ("--http-request-timeout", request_timeout),
            ("--http-body-timeout", body_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(format!("{flag} must be above 0")));
            }
        }
        if args.http_max_connections == 0 {
            return Err(ConfigError::new(
                "--http-max-connections must be at least 1",
            ));
        }
        if args.http_max_connections_per_peer == 0 {
            return Err(ConfigError::new(
                "--http-max-connections-per-peer must be at least 1",
            ));
        }
        Ok(Self {
            max_body,
            header_timeout,
            request_timeout,
            body_timeout,
            max_connections: args.http_max_connections,
            max_connections_per_peer: args.http_max_connections_per_peer,
        })
    }
}

/// Limits of the gRPC listeners (the main one and `--health-listen`), shared
/// by `serve` and `demo`.
#[derive(Debug, Args)]
pub struct GrpcLimitArgs {
    /// Most gRPC connections open at once (TLS handshakes included); further
    /// clients wait to be accepted.
    #[arg(
        long,
        env = "CLERK_BROKER_GRPC_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub grpc_max_connections: usize,
    /// Time a client has, from its connection, to complete the TLS handshake
    /// and send the HTTP/2 preface before it is disconnected.
    #[arg(
        long,
        env = "CLERK_BROKER_GRPC_HANDSHAKE_TIMEOUT",
        default_value = "10s"
    )]
    pub grpc_handshake_timeout: String,
    /// Time a connection with no call (stream) open stays open; a
    /// connection with an open stream is never cut for idleness.
    #[arg(long, env = "CLERK_BROKER_GRPC_IDLE_TIMEOUT", default_value = "5m")]
    pub grpc_idle_timeout: String,
    /// Time without a frame from a client before the broker sends it an
    /// HTTP/2 PING.
    #[arg(
        long,
        env = "CLERK_BROKER_GRPC_KEEPALIVE_INTERVAL",
        default_value = "30s"
    )]
    pub grpc_keepalive_interval: String,
    /// Time a client has to acknowledge a PING before it is disconnected.
    #[arg(
        long,
        env = "CLERK_BROKER_GRPC_KEEPALIVE_TIMEOUT",
        default_value = "10s"
    )]
    pub grpc_keepalive_timeout: String,
    /// Most calls (HTTP/2 streams) open at once on one connection; clients
    /// queue further calls, or open another connection.
    #[arg(
        long,
        env = "CLERK_BROKER_GRPC_MAX_CONCURRENT_STREAMS",
        default_value_t = 200
    )]
    pub grpc_max_concurrent_streams: u32,
}

/// The gRPC listeners' validated limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Most connections open at once, handshakes included.
    pub max_connections: usize,
    /// Time from accept to the end of the TLS handshake and of the client's
    /// HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Time a connection may stay open with no stream.
    pub idle_timeout: Duration,
    /// Time without a frame from the peer before the broker pings it.
    pub keepalive_interval: Duration,
    /// Time the peer has to acknowledge a ping.
    pub keepalive_timeout: Duration,
    /// Most streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for GrpcLimits {
    /// The documented defaults.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 200,
        }
    }
}

impl GrpcLimits {
    /// Validates `args`.
    pub fn from_args(args: &GrpcLimitArgs) -> Result<Self, ConfigError> {
        let handshake_timeout = duration("--grpc-handshake-timeout", &args.grpc_handshake_timeout)?;
        let idle_timeout = duration("--grpc-idle-timeout", &args.grpc_idle_timeout)?;
        let keepalive_interval =
            duration("--grpc-keepalive-interval", &args.grpc_keepalive_interval)?;
        let keepalive_timeout = duration("--grpc-keepalive-timeout", &args.grpc_keepalive_timeout)?;
        for (flag, value) in [
            ("--grpc-handshake-timeout", handshake_timeout),
            ("--grpc-idle-timeout", idle_timeout),
            ("--grpc-keepalive-interval", keepalive_interval),
            ("--grpc-keepalive-timeout", keepalive_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(format!("{flag} must be above 0")));
            }
        }
        if args.grpc_max_connections == 0 {
            return Err(ConfigError::new(
                "--grpc-max-connections must be at least 1",
            ));
        }
        if args.grpc_max_concurrent_streams == 0 {
            return Err(ConfigError::new(
                "--grpc-max-concurrent-streams must be at least 1",
            ));
        }
        Ok(Self {
            max_connections: args.grpc_max_connections,
            handshake_timeout,
            idle_timeout,
            keepalive_interval,
            keepalive_timeout,
            max_concurrent_streams: args.grpc_max_concurrent_streams,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: HttpLimitArgs,
        #[command(flatten)]
        grpc: GrpcLimitArgs,
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn flags(extra: &[&str]) -> Result<Flags, clap::Error> {
        let mut argv = vec!["test"];
        argv.extend(extra);
        Flags::try_parse_from(argv)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let parsed = HttpLimits::from_args(&flags(&[]).unwrap().limits).unwrap();
        assert_eq!(parsed, HttpLimits::default());
        let grpc = GrpcLimits::from_args(&flags(&[]).unwrap().grpc).unwrap();
        assert_eq!(grpc, GrpcLimits::default());
        assert_eq!(flags(&[]).unwrap().tls.files().unwrap(), None);
    }

    #[test]
    fn bad_limits_are_explained() {
        let cases: [(&[&str], &str); 6] = [
            (&["--http-max-body", "big"], "--http-max-body"),
            (&["--http-header-timeout", "0s"], "--http-header-timeout"),
            (
                &["--http-request-timeout", "soon"],
                "--http-request-timeout",
            ),
            (&["--http-max-connections", "0"], "--http-max-connections"),
            (&["--http-body-timeout", "0s"], "--http-body-timeout"),
            (
                &["--http-max-connections-per-peer", "0"],
                "--http-max-connections-per-peer",
            ),
        ];
        for (extra, expected) in cases {
            let error = HttpLimits::from_args(&flags(extra).unwrap().limits).unwrap_err();
            assert!(error.to_string().contains(expected), "{extra:?}: {error}");
        }
    }

    #[test]
    fn bad_grpc_limits_are_explained() {
        let cases: [(&[&str], &str); 6] = [
            (&["--grpc-max-connections", "0"], "--grpc-max-connections"),
            (
                &["--grpc-handshake-timeout", "0s"],
                "--grpc-handshake-timeout",
            ),
            (&["--grpc-idle-timeout", "soon"], "--grpc-idle-timeout"),
            (
                &["--grpc-keepalive-interval", "0ms"],
                "--grpc-keepalive-interval",
            ),
            (
                &["--grpc-keepalive-timeout", "0s"],
                "--grpc-keepalive-timeout",
            ),
            (
                &["--grpc-max-concurrent-streams", "0"],
                "--grpc-max-concurrent-streams",
            ),
        ];
        for (extra, expected) in cases {
            let error = GrpcLimits::from_args(&flags(extra).unwrap().grpc).unwrap_err();
            assert!(error.to_string().contains(expected), "{extra:?}: {error}");
        }
    }

    #[test]
    fn tls_needs_both_a_certificate_and_a_key() {
        assert!(flags(&["--tls-cert", "a.pem"]).is_err());
        assert!(flags(&["--tls-key", "a.pem"]).is_err());
        assert!(flags(&["--tls-client-ca", "ca.pem"]).is_err());
        let missing = flags(&["--tls-cert", "/nonexistent/c.pem", "--tls-key", "k.pem"])
            .unwrap()
            .tls
            .files()
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("--tls-cert /nonexistent/c.pem"),
            "{missing}"
        );
    }
}
