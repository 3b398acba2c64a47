//! What lookups share with the other replicas (Redis): entries fetched
//! from Clerk once for all, claims on ids being fetched, and invalidations.
//! The interface only; `store::users` implements it.

use std::{collections::HashMap, sync::Arc};

use tokio::time::Duration;

use crate::clerk::ClerkUser;

/// An entry shared between replicas.
#[derive(Clone, Debug, PartialEq)]
pub struct SharedEntry {
    /// The user's JSON text exactly as Clerk sent it; `None`: no such user.
    pub json: Option<String>,
    /// The entry's time for ordering webhooks (Unix ms): the user's
    /// `updated_at`, or when "no such user" was learnt; `None` if unknown.
    pub as_of: Option<i64>,
    /// How long it stays fresh.
    pub fresh_for: Duration,
}

impl SharedEntry {
    /// `user`, fresh for `fresh_for`.
    pub fn user(user: &ClerkUser, fresh_for: Duration) -> Self {
        Self {
            json: Some(user.text().to_owned()),
            as_of: user.millis("updated_at"),
            fresh_for,
        }
    }

    /// "No such user" since `since` (Unix ms), fresh for `fresh_for`.
    pub fn missing(since: i64, fresh_for: Duration) -> Self {
        Self {
            json: None,
            as_of: Some(since),
            fresh_for,
        }
    }
}

/// Users shared with the other replicas (Redis): fetched from Clerk once
/// for all, and invalidations fanned out. Every method is best effort and
/// bounded in time: on failure lookups simply go to Clerk.
#[tonic::async_trait]
pub trait SharedUsers: Send + Sync + std::fmt::Debug {
    /// The fresh shared entries among `ids`.
    async fn get(&self, ids: &[Arc<str>]) -> HashMap<Arc<str>, SharedEntry>;
    /// For each id: its fresh shared entry, else a claim of the right to
    /// fetch it for every replica (a short lock). Fails open: `Mine`.
    async fn claim(&self, ids: &[Arc<str>]) -> Vec<Claim>;
    /// Stores what lookups found where no entry is stored, and releases this
    /// replica's claims on them.
    async fn put(&self, entries: &[(Arc<str>, SharedEntry)]);
    /// Stores what a webhook said about `id`, unless the stored entry wins
    /// over it (the cache's rule: a later version of the user, or "no such
    /// user" learnt at or after a user's `updated_at`; a deletion always
    /// replaces). `Some(true)`: stored; `Some(false)`: the stored entry won;
    /// `None`: the store could not be reached.
    async fn put_newer(&self, id: &str, entry: SharedEntry) -> Option<bool>;
    /// Tells the other replicas to drop their local entry for `id`, after
    /// dropping the shared one if `drop_shared`.
    async fn invalidate(&self, id: &str, drop_shared: bool);
}

/// What the shared store says about one id.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// Another replica fetched it: here it is.
    Found(SharedEntry),
    /// This replica fetches it for all.
    Mine,
    /// Another replica is fetching it.
    Theirs,
}
