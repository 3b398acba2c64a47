//! Demo mode: the broker in front of an embedded fake Clerk seeded with
//! synthetic users, with grpcurl commands to paste.

use std::future::Future;

use reqwest::Url;

use crate::{
    admission::Rate,
    config::{Config, ConfigError, DemoArgs},
    fake::{FakeClerk, FakeClerkConfig, seed},
    http::WEBHOOK_PATH,
    secret::SecretKey,
    server::{self, Listeners, ServeError},
};

/// Seed of the synthetic users, fixed so that demo ids are stable across runs.
pub const DEMO_SEED: u64 = 42;

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad flags.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The broker failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// Runs the demo until `shutdown` resolves. The fake Clerk enforces the same
/// rate limit as the broker's budget, so a 429 would show any overspending.
pub async fn run(args: DemoArgs, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let key = format!("sk_test_demo{:016x}", fastrand::u64(..));
    let secret = SecretKey::parse(&key).map_err(|error| ConfigError::new(error.to_string()))?;
    let users = seed::synthetic_users(args.users, DEMO_SEED);
    let samples: Vec<String> = users
        .iter()
        .take(2)
        .filter_map(|user| user.get("id")?.as_str().map(str::to_owned))
        .collect();
    let fake = FakeClerk::new(FakeClerkConfig::new(key), users);
    let url = fake.spawn().await?;
    let url = Url::parse(&url).map_err(|error| ConfigError::new(error.to_string()))?;
    let config = Config::build(&args.listen, url, secret, &args.broker)?;
    let rate = config.upstream_rate;
    fake.set_rate_limit(Some((rate.limit, rate.window)));
    let listeners = Listeners::bind(&config).await?;
    let address = listeners.grpc.local_addr()?;
    let webhooks = format!(
        "Clerk webhooks: POST http://{}{WEBHOOK_PATH} ({})",
        listeners.http.local_addr()?,
        if config.lookup.webhook_secret.is_some() {
            "enabled"
        } else {
            "answers 503 until CLERK_WEBHOOK_SIGNING_SECRET is set"
        }
    );
    let front = match &listeners.front {
        Some(listener) => front_banner(
            &listener.local_addr()?.to_string(),
            &samples,
            config.policy.is_anonymous(),
        ),
        None => String::new(),
    };
    println!(
        "{}",
        banner(
            &address.to_string(),
            &samples,
            fake.user_count(),
            rate,
            &format!("{webhooks}{front}"),
            config.policy.is_anonymous(),
        )
    );
    let result = server::run(listeners, config, shutdown).await;
    let stats = fake.stats();
    println!(
        "fake Clerk saw {} requests and sent {} 429s",
        stats.requests, stats.rate_limited
    );
    Ok(result?)
}

/// The start-up lines of the Clerk-compatible front: a request to paste,
/// and the two settings of Clerk's SDKs.
fn front_banner(address: &str, samples: &[String], anonymous: bool) -> String {
    let first = samples.first().map_or("user_unknown", String::as_str);
    let tokens = if anonymous {
        "any token works without --config"
    } else {
        "use a caller token of the --config file"
    };
    format!(
        "\nClerk-compatible Backend API on http://{address} ({tokens}):\n\
         curl -s -H 'Authorization: Bearer sk_test_demo' http://{address}/v1/users/{first}\n\
         @clerk/backend: createClerkClient({{ secretKey: 'sk_test_demo', apiUrl: 'http://{address}' }})\n\
         (or CLERK_API_URL=http://{address} CLERK_SECRET_KEY=sk_test_demo for Clerk's framework SDKs)"
    )
}

/// The start-up text: what runs, and commands to try.
fn banner(
    address: &str,
    samples: &[String],
    users: usize,
    rate: Rate,
    webhooks: &str,
    anonymous: bool,
) -> String {
    let first = samples.first().map_or("user_unknown", String::as_str);
    let second = samples.get(1).map_or("user_unknown", String::as_str);
    let grpcurl = "grpcurl -plaintext";
    let tokens = if anonymous {
        "No caller token is needed (no --config: every call is the anonymous caller)."
    } else {
        "Calls need a caller token of the --config file (grpcurl -H 'authorization: Bearer …')."
    };
    format!(
        "clerk-broker demo: serving gRPC on {address} in front of a fake Clerk with {users} \
         synthetic users and a budget of {rate}.\n{tokens}\n\
         {webhooks}\n\
         Try:\n\
         {grpcurl} {address} list\n\
         {grpcurl} {address} describe clerk_broker.v1.UserService\n\
         {grpcurl} -d '{{\"service\":\"\"}}' {address} grpc.health.v1.Health/Check\n\
         {grpcurl} -d '{{\"user_id\":\"{first}\"}}' {address} clerk_broker.v1.UserService/GetUser\n\
         {grpcurl} -d '{{\"user_ids\":[\"{first}\",\"{second}\",\"user_doesnotexist\"]}}' {address} clerk_broker.v1.UserService/BatchGetUsers\n\
         {grpcurl} -d '{{\"order_by\":\"+created_at\",\"page_size\":2,\"max_users\":4}}' {address} clerk_broker.v1.UserService/ListUsers\n\
         {grpcurl} -d '{{\"filter\":{{\"email_address_query\":\"example.org\"}}}}' {address} clerk_broker.v1.UserService/CountUsers\n\
         {grpcurl} -d '{{\"cost\":1,\"max_wait\":\"2s\"}}' {address} clerk_broker.v1.QuotaService/AcquirePermit\n\
         Press Ctrl-C to stop.",
    )
}
