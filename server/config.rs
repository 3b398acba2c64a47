//! Command-line flags and environment, validated into a `Config` before
//! anything starts.
//!
//! Every flag can also be set through an environment variable. The Clerk
//! secret key is never a flag value (it would show in `ps`): it comes from
//! `CLERK_SECRET_KEY` or from a file.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand};
use reqwest::Url;

mod front;
mod listeners;
mod lookup;
mod redis;

pub use front::{FrontArgs, FrontConfig};
pub use listeners::{GrpcLimitArgs, GrpcLimits, HttpLimitArgs, HttpLimits, TlsArgs};
pub use lookup::{LookupArgs, LookupConfig, WEBHOOK_SECRET_ENV};
pub use redis::RedisArgs;

pub use crate::admission::default_margin;

use crate::{
    admission::{BudgetSpec, Rate, default_burst, parse_duration},
    callers::Policy,
    clerk::{ClerkConfig, DEFAULT_BASE_URL},
    grpc::DEFAULT_MAX_STREAM_LIFETIME,
    secret::{KeyKind, SecretKey},
    tls::TlsFiles,
};

/// clerk-broker: one owner for the Clerk secret key and its rate limit.
#[derive(Debug, Parser)]
#[command(name = "clerk-broker", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr: human-readable text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "CLERK_BROKER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Export traces over OTLP/gRPC to this collector (e.g.
    /// http://otel-collector:4317); off when unset. README: Tracing.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The broker's modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the real Clerk API (needs CLERK_SECRET_KEY or --clerk-secret-key-file).
    Serve(ServeArgs),
    /// Serve an embedded fake Clerk seeded with synthetic users, and print
    /// grpcurl commands to try.
    Demo(DemoArgs),
    /// Run only the fake Clerk API over HTTP (for benchmarks and experiments).
    FakeClerk(FakeClerkArgs),
    /// Validate a policy file and explain every error with its location.
    CheckConfig {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

/// Flags shared by `serve` and `demo`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Policy file (TOML) naming callers, their tokens' SHA-256, weights and
    /// budgets, and extra budgets. Without it every call is anonymous.
    #[arg(long, env = "CLERK_BROKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Upstream budget, e.g. 100/10s: at most N requests in any interval of
    /// the window. Default: 1000/10s for sk_live_ keys, 100/10s for sk_test_.
    #[arg(long, env = "CLERK_BROKER_UPSTREAM_RATE")]
    pub upstream_rate: Option<String>,
    /// Most upstream requests sent at once (refilled at the budget's rate).
    /// Default: a tenth of the limit.
    #[arg(long, env = "CLERK_BROKER_UPSTREAM_BURST")]
    pub upstream_burst: Option<u32>,
    /// Extra length counted on every window, so jitter between sending and
    /// arrival at Clerk cannot squeeze N+1 requests into one window.
    /// Default: 2% of the window.
    #[arg(long, env = "CLERK_BROKER_UPSTREAM_MARGIN")]
    pub upstream_margin: Option<String>,
    /// Longest time one HTTP request to Clerk may take.
    #[arg(long, env = "CLERK_BROKER_UPSTREAM_TIMEOUT", default_value = "10s")]
    pub upstream_timeout: String,
    /// How long in-flight calls may run on after SIGTERM before the broker exits.
    #[arg(long, env = "CLERK_BROKER_SHUTDOWN_GRACE", default_value = "20s")]
    pub shutdown_grace: String,
    /// After SIGTERM, how long to keep serving with readiness NOT_SERVING,
    /// so load balancers stop sending new calls before the drain begins.
    #[arg(long, env = "CLERK_BROKER_DRAIN_DELAY", default_value = "0s")]
    pub drain_delay: String,
    /// Longest time one ListUsers stream stays open; it then ends with
    /// UNAVAILABLE and its resume token, and the client resumes.
    #[arg(long, env = "CLERK_BROKER_MAX_STREAM_LIFETIME", default_value = "1h")]
    pub max_stream_lifetime: String,
    /// Cache, batching and webhook flags.
    #[command(flatten)]
    pub lookup: LookupArgs,
    /// Limits of the HTTP listener.
    #[command(flatten)]
    pub http: HttpLimitArgs,
    /// Limits of the gRPC listeners.
    #[command(flatten)]
    pub grpc: GrpcLimitArgs,
    /// Shared state in Redis.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The Clerk-compatible front.
    #[command(flatten)]
    pub front: FrontArgs,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "CLERK_BROKER_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: String,
    /// Base URL of the Clerk Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = DEFAULT_BASE_URL)]
    pub clerk_api_url: String,
    /// File holding the Clerk secret key (instead of CLERK_SECRET_KEY).
    #[arg(long, env = "CLERK_SECRET_KEY_FILE")]
    pub clerk_secret_key_file: Option<PathBuf>,
    /// TLS on both listeners.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Address of an extra plaintext gRPC listener serving only the health
    /// service, for Kubernetes' gRPC probes (which cannot speak TLS) when the
    /// main listener uses TLS. Default: none.
    #[arg(long, env = "CLERK_BROKER_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// Flags shared with `demo`.
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Flags of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address the gRPC server listens on.
    #[arg(long, env = "CLERK_BROKER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// How many synthetic users the fake Clerk holds.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Flags shared with `serve`.
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// Flags of `fake-clerk`.
#[derive(Debug, Args)]
pub struct FakeClerkArgs {
    /// Address the fake Clerk API listens on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// How many synthetic users it holds.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Rate limit it enforces with 429s, e.g. 100/10s (default: none).
    #[arg(long)]
    pub rate: Option<String>,
}

/// A configuration problem, reported on one line before exiting with 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A problem described in one line.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The validated configuration of a broker.
#[derive(Clone, Debug)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// How to reach Clerk.
    pub clerk: ClerkConfig,
    /// The upstream budget.
    pub upstream_rate: Rate,
    /// Most upstream requests at once.
    pub upstream_burst: u32,
    /// Extra length counted on every window of the upstream budget.
    pub upstream_margin: Duration,
    /// Time in-flight calls get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Time served on, NOT_SERVING, after a shutdown signal.
    pub drain_delay: Duration,
    /// Longest time a `ListUsers` stream stays open before it ends resumably.
    pub max_stream_lifetime: Duration,
    /// Callers and extra budgets.
    pub policy: Arc<Policy>,
    /// Where the policy came from, to reload it (None: anonymous mode).
    pub policy_path: Option<PathBuf>,
    /// Cache, batching and webhooks of user lookups.
    pub lookup: LookupConfig,
    /// Limits of the HTTP listener.
    pub http: HttpLimits,
    /// Limits of the gRPC listeners.
    pub grpc: GrpcLimits,
    /// TLS on both listeners (None: plain TCP).
    pub tls: Option<TlsFiles>,
    /// The plaintext health-only listener (None: none).
    pub health_listen: Option<SocketAddr>,
    /// Shared state in Redis (None: this replica alone, in memory).
    pub redis: Option<crate::store::RedisConfig>,
    /// The Clerk-compatible front.
    pub front: FrontConfig,
}

impl Config {
    /// A configuration with every optional setting at its default: for
    /// embedding the broker (benchmarks, tests); adjust fields after.
    pub fn with_defaults(listen: SocketAddr, clerk: ClerkConfig, upstream_rate: Rate) -> Self {
        Self {
            listen,
            clerk,
            upstream_rate,
            upstream_burst: default_burst(upstream_rate),
            upstream_margin: default_margin(upstream_rate),
            shutdown_grace: Duration::from_secs(20),
            drain_delay: Duration::ZERO,
            max_stream_lifetime: DEFAULT_MAX_STREAM_LIFETIME,
            policy: Arc::new(Policy::anonymous()),
            policy_path: None,
            lookup: LookupConfig::default(),
            http: HttpLimits::default(),
            grpc: GrpcLimits::default(),
            tls: None,
            health_listen: None,
            redis: None,
            front: FrontConfig::with_listen(SocketAddr::new(listen.ip(), 0)),
        }
    }

    /// The spec of the upstream budget.
    pub fn upstream_spec(&self) -> BudgetSpec {
        let mut spec = BudgetSpec::new(self.upstream_rate);
        spec.burst = Some(self.upstream_burst);
        spec.margin = self.upstream_margin;
        spec.bulk_share = self.policy.bulk_share;
        spec
    }

    /// Validates `serve` flags; the key comes from `env_key` (CLERK_SECRET_KEY)
    /// or the key file, exactly one of them.
    pub fn from_serve(args: &ServeArgs, env_key: Option<String>) -> Result<Self, ConfigError> {
        let raw_key = match (env_key, &args.clerk_secret_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "set either CLERK_SECRET_KEY or --clerk-secret-key-file, not both".into(),
                ));
            }
            (Some(key), None) => key,
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
                ConfigError(format!(
                    "cannot read --clerk-secret-key-file {}: {error}",
                    path.display()
                ))
            })?,
            (None, None) => {
                return Err(ConfigError(
                    "no Clerk secret key: set CLERK_SECRET_KEY or --clerk-secret-key-file".into(),
                ));
            }
        };
        let key = SecretKey::parse(&raw_key).map_err(|error| ConfigError(error.to_string()))?;
        let url = Url::parse(&args.clerk_api_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                ConfigError(format!(
                    "--clerk-api-url {:?} is not an http(s) URL",
                    args.clerk_api_url
                ))
            })?;
        let mut config = Self::build(&args.listen, url, key, &args.broker)?;
        config.tls = args.tls.files()?;
        config.health_listen = match &args.health_listen {
            Some(text) => Some(text.parse().map_err(|_| {
                ConfigError(format!(
                    "--health-listen {text:?} is not an address such as 0.0.0.0:8086"
                ))
            })?),
            None => None,
        };
        Ok(config)
    }

    /// Validates the flags of a broker talking to `url` with `key`.
    pub fn build(
        listen: &str,
        url: Url,
        key: SecretKey,
        args: &BrokerArgs,
    ) -> Result<Self, ConfigError> {
        let listen = listen.parse().map_err(|_| {
            ConfigError(format!(
                "--listen {listen:?} is not an address such as 0.0.0.0:50051"
            ))
        })?;
        let upstream_rate = match &args.upstream_rate {
            Some(text) => text
                .parse()
                .map_err(|error| ConfigError(format!("--upstream-rate: {error}")))?,
            None if key.kind() == KeyKind::Live => Rate::CLERK_PRODUCTION,
            None => Rate::CLERK_DEVELOPMENT,
        };
        let upstream_margin = match &args.upstream_margin {
            Some(text) => duration("--upstream-margin", text)?,
            None => default_margin(upstream_rate),
        };
        let upstream_burst = args
            .upstream_burst
            .unwrap_or_else(|| default_burst(upstream_rate));
        if upstream_burst == 0 || upstream_burst > upstream_rate.limit {
            return Err(ConfigError(format!(
                "--upstream-burst {upstream_burst} must be between 1 and the budget's limit {}",
                upstream_rate.limit
            )));
        }
        let upstream_timeout = duration("--upstream-timeout", &args.upstream_timeout)?;
        if upstream_timeout.is_zero() {
            return Err(ConfigError("--upstream-timeout must be above 0".into()));
        }
        let max_stream_lifetime = duration("--max-stream-lifetime", &args.max_stream_lifetime)?;
        if max_stream_lifetime.is_zero() {
            return Err(ConfigError(
                "--max-stream-lifetime must be above 0 (exports resume after it)".into(),
            ));
        }
        let policy = match &args.config {
            Some(path) => Policy::load(path, default_margin)
                .map_err(|error| ConfigError(format!("--config {error}")))?,
            None => Policy::anonymous(),
        };
        Ok(Self {
            policy: Arc::new(policy),
            policy_path: args.config.clone(),
            listen,
            clerk: ClerkConfig {
                base_url: url,
                secret_key: key,
                request_timeout: upstream_timeout,
                max_attempts: 4,
            },
            upstream_rate,
            upstream_burst,
            upstream_margin,
            shutdown_grace: duration("--shutdown-grace", &args.shutdown_grace)?,
            drain_delay: duration("--drain-delay", &args.drain_delay)?,
            max_stream_lifetime,
            lookup: LookupConfig::from_args(
                &args.lookup,
                listen,
                std::env::var(WEBHOOK_SECRET_ENV).ok(),
            )?,
            http: HttpLimits::from_args(&args.http)?,
            grpc: GrpcLimits::from_args(&args.grpc)?,
            tls: None,
            health_listen: None,
            redis: args.redis.config()?,
            front: FrontConfig::from_args(&args.front, listen)?,
        })
    }
}

/// Parses a duration flag such as `10s` or `500ms`.
pub fn duration(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text.trim()).ok_or_else(|| {
        ConfigError(format!(
            "{flag} {text:?} is not a duration such as 10s or 500ms"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["clerk-broker", "serve"];
        argv.extend(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_key_decides_the_default_budget() {
        let live = Config::from_serve(&serve(&[]), Some("sk_live_abc".into())).unwrap();
        assert_eq!(live.upstream_rate, Rate::CLERK_PRODUCTION);
        assert_eq!(live.upstream_margin, Duration::from_millis(200));
        let test = Config::from_serve(&serve(&[]), Some("sk_test_abc".into())).unwrap();
        assert_eq!(test.upstream_rate, Rate::CLERK_DEVELOPMENT);
        assert_eq!(test.max_stream_lifetime, DEFAULT_MAX_STREAM_LIFETIME);
        let custom = serve(&["--upstream-rate", "50/1s", "--upstream-margin", "5ms"]);
        let custom = Config::from_serve(&custom, Some("sk_live_abc".into())).unwrap();
        assert_eq!(custom.upstream_rate.limit, 50);
        assert_eq!(custom.upstream_margin, Duration::from_millis(5));
    }

    #[test]
    fn the_health_only_listener_is_optional_and_checked() {
        let key = || Some("sk_test_abc".to_owned());
        assert_eq!(
            Config::from_serve(&serve(&[]), key())
                .unwrap()
                .health_listen,
            None
        );
        let config = Config::from_serve(&serve(&["--health-listen", "0.0.0.0:8086"]), key());
        assert_eq!(
            config.unwrap().health_listen,
            Some("0.0.0.0:8086".parse().unwrap())
        );
        let error = Config::from_serve(&serve(&["--health-listen", "8086"]), key()).unwrap_err();
        assert!(
            error.to_string().contains("--health-listen \"8086\""),
            "{error}"
        );
    }

    #[test]
    fn bad_configuration_is_explained_without_the_key() {
        let cases: [(&[&str], Option<&str>, &str); 6] = [
            (&[], None, "no Clerk secret key"),
            (
                &[],
                Some("pk_live_abc"),
                "must start with sk_live_ or sk_test_",
            ),
            (
                &["--upstream-rate", "fast"],
                Some("sk_test_abc"),
                "--upstream-rate",
            ),
            (&["--listen", "nowhere"], Some("sk_test_abc"), "--listen"),
            (
                &["--max-stream-lifetime", "0s"],
                Some("sk_test_abc"),
                "--max-stream-lifetime",
            ),
            (
                &["--clerk-api-url", "ftp://x"],
                Some("sk_test_abc"),
                "--clerk-api-url",
            ),
        ];
        for (flags, key, expected) in cases {
            let error = Config::from_serve(&serve(flags), key.map(str::to_owned))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{flags:?}: {error}");
            assert!(!error.contains("abc"), "{error}");
        }
    }
}
