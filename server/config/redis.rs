//! Flags of shared state in Redis (several replicas, one budget).

use clap::Args;

use super::{ConfigError, duration};
use crate::store::RedisConfig;

/// Redis flags, shared by `serve` and `demo`.
#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://…` or `rediss://…` for TLS): every budget, the
    /// user cache's fills and invalidations are shared by all replicas
    /// through it. Unset: each replica alone, in memory.
    #[arg(long, env = "CLERK_BROKER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Longest any Redis call may take before the broker does without it.
    #[arg(long, env = "CLERK_BROKER_REDIS_TIMEOUT", default_value = "50ms")]
    pub redis_timeout: String,
    /// How many replicas share the budget (for the share each uses alone
    /// while Redis is unreachable). Default: counted through heartbeats in Redis.
    #[arg(long, env = "CLERK_BROKER_REPLICAS")]
    pub replicas: Option<u32>,
    /// Prefix of every Redis key and channel (several brokers, one Redis).
    #[arg(
        long,
        env = "CLERK_BROKER_REDIS_PREFIX",
        default_value = "clerk-broker"
    )]
    pub redis_prefix: String,
}

impl RedisArgs {
    /// The validated Redis settings; `None` without `--redis-url`.
    pub fn config(&self) -> Result<Option<RedisConfig>, ConfigError> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError::new(
                "--redis-url must start with redis:// or rediss://",
            ));
        }
        // Parsed (not connected) now, so a bad URL stops the broker at start;
        // the message never repeats the URL (it may hold a password).
        if ::redis::Client::open(url.as_str()).is_err() {
            return Err(ConfigError::new(
                "--redis-url is not a valid Redis URL (redis://[user:password@]host[:port][/db])",
            ));
        }
        let timeout = duration("--redis-timeout", &self.redis_timeout)?;
        if timeout.is_zero() {
            return Err(ConfigError::new("--redis-timeout must be above 0"));
        }
        if self.replicas == Some(0) {
            return Err(ConfigError::new("--replicas must be at least 1"));
        }
        if self.redis_prefix.is_empty() {
            return Err(ConfigError::new("--redis-prefix must not be empty"));
        }
        Ok(Some(RedisConfig {
            url: url.clone(),
            timeout,
            replicas: self.replicas,
            prefix: self.redis_prefix.clone(),
        }))
    }
}
