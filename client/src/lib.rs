//! Rust client for clerk-broker: the generated stubs of `proto/`, and a helper
//! to connect.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use clerk_broker_client::{connect, pb::{GetUserRequest, user_service_client::UserServiceClient}};
//!
//! let channel = connect("http://127.0.0.1:50051").await?;
//! let mut users = UserServiceClient::new(channel);
//! let user = users
//!     .get_user(GetUserRequest { user_id: "user_123".into() })
//!     .await?
//!     .into_inner();
//! println!("{}", user.id);
//! # Ok(())
//! # }
//! ```

/// The generated messages and client stubs of `clerk_broker.v1`.
pub mod pb {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    tonic::include_proto!("clerk_broker.v1");
}

use tonic::transport::{Channel, Endpoint, Error};

/// Connects to a broker at `url` (e.g. `http://127.0.0.1:50051`).
pub async fn connect(url: impl Into<String>) -> Result<Channel, Error> {
    Endpoint::from_shared(url.into())?.connect().await
}
