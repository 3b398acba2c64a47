//! The broker's domain objects ([`Broker`]), built from a validated
//! configuration and shared by every listener's handlers.

use std::sync::Arc;

use super::ServeError;
use crate::{
    admission::{Admission, LeaseStore},
    clerk::ClerkClient,
    config::{Config, default_margin},
    counts::CountCache,
    metrics::Metrics,
    reload::ReloadStats,
    routes::keyed_specs,
    store::{RedisStore, RedisUsers},
    token::TokenKey,
    users::{SharedUsers, Users},
    webhook::Webhooks,
};

/// The broker's domain objects, shared by all handlers.
#[derive(Debug, Clone)]
pub struct Broker {
    /// All budgets; every upstream request passes here.
    pub admission: Arc<Admission>,
    /// The only client that talks to Clerk.
    pub clerk: Arc<ClerkClient>,
    /// User lookups.
    pub users: Arc<Users>,
    /// Signs resume tokens.
    pub tokens: TokenKey,
    /// Outcomes of policy reloads.
    pub reloads: Arc<ReloadStats>,
    /// Everything operators can scrape.
    pub metrics: Arc<Metrics>,
    /// Verifies Clerk's webhook deliveries.
    pub webhooks: Arc<Webhooks>,
    /// Shared state with the other replicas, with `--redis-url`.
    pub redis: Option<Arc<RedisStore>>,
    /// Users shared with the other replicas, with `--redis-url`.
    pub redis_users: Option<Arc<RedisUsers>>,
    /// `CountUsers` answers by filter, shared by gRPC and the front.
    pub counts: Arc<CountCache>,
}

impl Broker {
    /// Builds the domain objects from a validated configuration (inside a
    /// tokio runtime: lookups start their batching task).
    pub fn new(config: &Config) -> Result<Self, ServeError> {
        let metrics = Arc::new(Metrics::new());
        let redis = match &config.redis {
            Some(redis) => Some(
                RedisStore::new(redis, config.clerk.request_timeout).map_err(ServeError::Redis)?,
            ),
            None => None,
        };
        let admission = Arc::new(Admission::with_store(
            config.upstream_spec(),
            config.policy.budgets.clone(),
            metrics.clone(),
            redis.clone().map(|store| store as Arc<dyn LeaseStore>),
        ));
        let redis_users = redis.clone().map(RedisUsers::new);
        let tokens = TokenKey::derive(&config.clerk.secret_key);
        let clerk = Arc::new(
            ClerkClient::new(config.clerk.clone(), admission.clone())?.observed(metrics.clone()),
        );
        let users = Arc::new(Users::with_remote(
            clerk.clone(),
            &config.lookup,
            metrics.clone(),
            redis_users
                .clone()
                .map(|shared| shared as Arc<dyn SharedUsers>),
        ));
        let webhooks = Arc::new(Webhooks::new(config.lookup.webhook_secret.clone()));
        admission.apply_keyed(keyed_specs(&config.policy.route_limits, default_margin));
        Ok(Self {
            admission,
            clerk,
            users,
            tokens,
            reloads: Arc::default(),
            metrics,
            webhooks,
            redis,
            redis_users,
            counts: Arc::default(),
        })
    }
}
