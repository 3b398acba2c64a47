//! Rust client for clerk-broker.
//!
//! [`Client`] wraps the generated stubs of `proto/` (in [`pb`]) with what
//! every caller needs: the caller's bearer token on every call, a default
//! deadline on every unary call, permits that wait and retry
//! ([`Client::acquire_permit`]), and exports that resume by themselves after
//! a broken connection ([`Client::list_users`]).
//!
//! Hello broker (with `clerk-broker demo` running):
//!
//! ```no_run
//! # async fn hello() -> Result<(), clerk_broker_client::Error> {
//! use clerk_broker_client::Client;
//!
//! let client = Client::connect("http://127.0.0.1:50051").await?;
//! let user = client.get_user("user_WjqhESHrprLoQRaGgNMIoIuAr9n").await?;
//! println!("{} {:?}", user.id, user.primary_email_address);
//! # Ok(())
//! # }
//! ```
//!
//! With a caller token (brokers with a policy file) and a shorter deadline:
//!
//! ```
//! use std::time::Duration;
//! use clerk_broker_client::Client;
//!
//! # fn main() -> Result<(), clerk_broker_client::Error> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # let _guard = rt.enter();
//! let client = Client::builder("http://127.0.0.1:50051")
//!     .token_opt(std::env::var("CLERK_BROKER_TOKEN").ok())
//!     .deadline(Duration::from_secs(2))
//!     .connect_lazy()?; // or `.connect().await?` to fail fast
//! assert_eq!(client.deadline(), Duration::from_secs(2));
//! # Ok(())
//! # }
//! ```
//!
//! A permit before calling Clerk directly, waiting up to 5 s in the fair queue:
//!
//! ```no_run
//! # async fn permit(client: clerk_broker_client::Client) -> Result<(), clerk_broker_client::Error> {
//! use std::time::Duration;
//! use clerk_broker_client::PermitRequest;
//!
//! let grant = client
//!     .acquire_permit(PermitRequest::new(1).budget("user-writes").wait(Duration::from_secs(5)))
//!     .await?;
//! println!("granted after {:?}", grant.waited);
//! # Ok(())
//! # }
//! ```
//!
//! An export, as a stream of users that survives a broker restart:
//!
//! ```no_run
//! # async fn export(client: clerk_broker_client::Client) -> Result<(), clerk_broker_client::Error> {
//! use futures_util::TryStreamExt as _;
//! use clerk_broker_client::pb::{ListUsersRequest, UserFilter};
//!
//! let request = ListUsersRequest {
//!     filter: Some(UserFilter { email_address_query: "example.org".into(), ..Default::default() }),
//!     page_size: 500,
//!     ..Default::default()
//! };
//! let mut users = client.list_users(request);
//! while let Some(user) = users.try_next().await? {
//!     println!("{}", user.id);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors carry the gRPC status and, for `RESOURCE_EXHAUSTED`, the broker's
//! `google.rpc.RetryInfo`:
//!
//! ```no_run
//! # async fn errors(client: clerk_broker_client::Client) {
//! match client.get_user("user_123").await {
//!     Ok(user) => println!("{}", user.id),
//!     Err(error) if error.code() == Some(tonic::Code::NotFound) => println!("no such user"),
//!     Err(error) => match error.retry_after() {
//!         Some(delay) => println!("busy, retry in {delay:?}"),
//!         None => eprintln!("{error}"),
//!     },
//! }
//! # }
//! ```

mod auth;
mod client;
mod error;
mod export;
mod permit;

/// The generated messages and client stubs of `clerk_broker.v1`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("clerk_broker.v1");
}

pub use auth::CallerToken;
pub use client::{AuthChannel, Client, ClientBuilder, DEFAULT_DEADLINE, DEFAULT_URL};
pub use error::{Error, code_name};
pub use export::{Export, ResumePolicy, UserStream};
pub use permit::{Grant, PermitRequest};
pub use tonic::{Code, Status};

use tonic::transport::{Channel, Endpoint};

/// Connects to a broker at `url` and returns the bare channel, for the
/// generated stubs in [`pb`]. Prefer [`Client`], which adds the token and
/// deadlines.
pub async fn connect(url: impl Into<String>) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(url.into())?.connect().await
}
