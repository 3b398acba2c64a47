//! Flags and validated settings of user lookups: the cache, batching, and
//! the HTTP listener that receives Clerk's webhooks.
//!
//! The webhook signing secret, like the Clerk key, is never a flag value: it
//! comes from `CLERK_WEBHOOK_SIGNING_SECRET` or from a file.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{ConfigError, duration};
pub use crate::users::LookupConfig;
use crate::{users::DEFAULT_HTTP_PORT, webhook::WebhookSecret};

/// The environment variable holding the webhook signing secret.
pub const WEBHOOK_SECRET_ENV: &str = "CLERK_WEBHOOK_SIGNING_SECRET";

/// Longest accepted batch window: anything longer only adds latency.
const MAX_BATCH_WINDOW: Duration = Duration::from_secs(1);

/// Flags of the lookup path, shared by `serve` and `demo`.
#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Most users (and "no such user" answers) the cache holds.
    #[arg(
        long,
        env = "CLERK_BROKER_CACHE_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub cache_max_entries: u64,
    /// Most memory the cache's entries may take, estimated (e.g. 256MiB, 1GiB).
    #[arg(long, env = "CLERK_BROKER_CACHE_MAX_BYTES", default_value = "256MiB")]
    pub cache_max_bytes: String,
    /// How long a cached user is served without asking Clerk again.
    #[arg(long, env = "CLERK_BROKER_CACHE_TTL", default_value = "60s")]
    pub cache_ttl: String,
    /// How long "no such user" is cached.
    #[arg(long, env = "CLERK_BROKER_CACHE_NEGATIVE_TTL", default_value = "10s")]
    pub cache_negative_ttl: String,
    /// How long after expiry an entry may still be served (marked stale)
    /// when Clerk fails or the budget cannot serve the lookup in time; 0 disables.
    #[arg(long, env = "CLERK_BROKER_CACHE_MAX_STALE", default_value = "5m")]
    pub cache_max_stale: String,
    /// How long concurrent misses are gathered into one Clerk request (up to
    /// 100 ids); 0 sends what is queued at once.
    #[arg(long, env = "CLERK_BROKER_BATCH_WINDOW", default_value = "5ms")]
    pub batch_window: String,
    /// Address of the HTTP listener (Clerk webhooks at POST /webhooks/clerk).
    /// Default: port 8080 on the gRPC listen address's IP.
    #[arg(long, env = "CLERK_BROKER_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// Address of a listener serving only GET /metrics. When set, the
    /// --http-listen listener (the one Clerk must reach) serves webhooks
    /// only. Default: none (metrics on --http-listen).
    #[arg(long, env = "CLERK_BROKER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// File holding the Clerk webhook signing secret (whsec_…), instead of
    /// CLERK_WEBHOOK_SIGNING_SECRET. Without either, webhooks are refused.
    #[arg(long, env = "CLERK_WEBHOOK_SIGNING_SECRET_FILE")]
    pub webhook_signing_secret_file: Option<PathBuf>,
}

impl LookupConfig {
    /// Validates `args`; `grpc_listen` decides the default HTTP address and
    /// `env_secret` is the value of `CLERK_WEBHOOK_SIGNING_SECRET`, if set.
    pub fn from_args(
        args: &LookupArgs,
        grpc_listen: SocketAddr,
        env_secret: Option<String>,
    ) -> Result<Self, ConfigError> {
        if args.cache_max_entries == 0 {
            return Err(ConfigError::new("--cache-max-entries must be at least 1"));
        }
        let cache_max_bytes = bytes("--cache-max-bytes", &args.cache_max_bytes)?;
        if cache_max_bytes < args.cache_max_entries {
            return Err(ConfigError::new(
                "--cache-max-bytes must be at least one byte per --cache-max-entries entry",
            ));
        }
        let cache_ttl = duration("--cache-ttl", &args.cache_ttl)?;
        if cache_ttl.is_zero() {
            return Err(ConfigError::new("--cache-ttl must be above 0"));
        }
        let batch_window = duration("--batch-window", &args.batch_window)?;
        if batch_window > MAX_BATCH_WINDOW {
            return Err(ConfigError::new(
                "--batch-window must be at most 1s (a few ms is plenty)",
            ));
        }
        let http_listen = match &args.http_listen {
            Some(text) => text.parse().map_err(|_| {
                ConfigError::new(format!(
                    "--http-listen {text:?} is not an address such as 0.0.0.0:8080"
                ))
            })?,
            None => SocketAddr::new(grpc_listen.ip(), DEFAULT_HTTP_PORT),
        };
        let metrics_listen = match &args.metrics_listen {
            Some(text) => Some(text.parse().map_err(|_| {
                ConfigError::new(format!(
                    "--metrics-listen {text:?} is not an address such as 0.0.0.0:9090"
                ))
            })?),
            None => None,
        };
        Ok(Self {
            cache_max_entries: args.cache_max_entries,
            cache_max_bytes,
            cache_ttl,
            negative_ttl: duration("--cache-negative-ttl", &args.cache_negative_ttl)?,
            max_stale: duration("--cache-max-stale", &args.cache_max_stale)?,
            batch_window,
            http_listen,
            metrics_listen,
            webhook_secret: webhook_secret(env_secret, args.webhook_signing_secret_file.as_ref())?,
        })
    }
}

/// The signing secret from the environment or a file, at most one of them.
fn webhook_secret(
    env: Option<String>,
    file: Option<&PathBuf>,
) -> Result<Option<WebhookSecret>, ConfigError> {
    let raw = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(format!(
                "set either {WEBHOOK_SECRET_ENV} or --webhook-signing-secret-file, not both"
            )));
        }
        (Some(secret), None) => secret,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new(format!(
                "cannot read --webhook-signing-secret-file {}: {error}",
                path.display()
            ))
        })?,
        (None, None) => return Ok(None),
    };
    WebhookSecret::parse(&raw)
        .map(Some)
        .map_err(|error| ConfigError::new(error.to_string()))
}

/// Parses a size such as `256MiB`, `1GiB`, `512KiB` or a plain byte count.
pub(super) fn bytes(flag: &str, text: &str) -> Result<u64, ConfigError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => u32::MAX,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| shift != u32::MAX)
        .and_then(|value| value.checked_mul(1u64.checked_shl(shift)?))
        .filter(|value| *value > 0)
        .ok_or_else(|| {
            ConfigError::new(format!(
                "{flag} {text:?} is not a size such as 256MiB, 1GiB or 500000"
            ))
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        lookup: LookupArgs,
    }

    fn config(flags: &[&str], env: Option<&str>) -> Result<LookupConfig, ConfigError> {
        let mut argv = vec!["test"];
        argv.extend(flags);
        let args = Flags::try_parse_from(argv).unwrap().lookup;
        LookupConfig::from_args(
            &args,
            "127.0.0.1:50051".parse().unwrap(),
            env.map(Into::into),
        )
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let parsed = config(&[], None).unwrap();
        let documented = LookupConfig {
            http_listen: "127.0.0.1:8080".parse().unwrap(),
            ..LookupConfig::default()
        };
        assert_eq!(parsed, documented);
    }

    #[test]
    fn reads_sizes_durations_and_the_secret() {
        let parsed = config(
            &[
                "--cache-max-bytes",
                "1GiB",
                "--batch-window",
                "0ms",
                "--http-listen",
                "[::1]:9000",
                "--metrics-listen",
                "127.0.0.1:9090",
            ],
            Some("whsec_c2VjcmV0"),
        )
        .unwrap();
        assert_eq!(parsed.cache_max_bytes, 1 << 30);
        assert_eq!(parsed.batch_window, Duration::ZERO);
        assert_eq!(parsed.http_listen, "[::1]:9000".parse().unwrap());
        assert_eq!(
            parsed.metrics_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert!(parsed.webhook_secret.is_some());
        assert_eq!(bytes("x", "512KiB").unwrap(), 512 << 10);
        assert_eq!(bytes("x", "123").unwrap(), 123);
    }

    #[test]
    fn bad_values_are_explained_without_the_secret() {
        let cases: [(&[&str], Option<&str>, &str); 8] = [
            (&["--cache-max-entries", "0"], None, "--cache-max-entries"),
            (&["--cache-max-bytes", "lots"], None, "--cache-max-bytes"),
            (
                &["--cache-max-bytes", "10", "--cache-max-entries", "20"],
                None,
                "--cache-max-bytes",
            ),
            (&["--cache-ttl", "0s"], None, "--cache-ttl"),
            (&["--batch-window", "2s"], None, "--batch-window"),
            (&["--http-listen", "anywhere"], None, "--http-listen"),
            (&["--metrics-listen", "9090"], None, "--metrics-listen"),
            (
                &[],
                Some("whsec_!!not-base64-secret!!"),
                "webhook signing secret",
            ),
        ];
        for (flags, env, expected) in cases {
            let error = config(flags, env).unwrap_err().to_string();
            assert!(error.contains(expected), "{flags:?}: {error}");
            assert!(!error.contains("not-base64-secret"), "{error}");
        }
        let both = config(
            &["--webhook-signing-secret-file", "/nonexistent"],
            Some("whsec_c2VjcmV0"),
        );
        assert!(both.unwrap_err().to_string().contains("not both"));
    }
}
