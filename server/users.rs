//! `Users`: the lookups behind `UserService`, over the Clerk client.
//!
//! Batch lookups are served by Clerk's list endpoint with the `user_id` filter,
//! up to 100 ids per upstream request, instead of one request per id.

use std::{collections::HashMap, sync::Arc};

use crate::{
    admission::Demand,
    clerk::{
        ClerkClient, ClerkUser, ListQuery, MAX_FILTER_VALUES, OrderBy, UpstreamError, UserFilter,
    },
};
use futures_util::future::try_join_all;

/// Most ids one `BatchGetUsers` call may name.
pub const MAX_BATCH_IDS: usize = 500;

/// The users found by a batch lookup and the ids that were not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Found users, in the order of the requested ids.
    pub found: Vec<ClerkUser>,
    /// Requested ids Clerk does not know, in request order.
    pub missing: Vec<String>,
}

/// User lookups. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Users {
    clerk: Arc<ClerkClient>,
}

impl Users {
    /// Lookups through `clerk`.
    pub fn new(clerk: Arc<ClerkClient>) -> Self {
        Self { clerk }
    }

    /// One user; `UpstreamError::NotFound` if Clerk has none with this id.
    pub async fn get(&self, id: &str, demand: &Demand) -> Result<ClerkUser, UpstreamError> {
        self.clerk.get_user(id, demand).await
    }

    /// Many users by id (distinct, validated ids), 100 per upstream request,
    /// the requests running concurrently.
    pub async fn batch_get(&self, ids: &[String], demand: &Demand) -> Result<Batch, UpstreamError> {
        let pages = ids.chunks(MAX_FILTER_VALUES).map(|chunk| {
            let query = ListQuery {
                filter: UserFilter::ids(chunk.to_vec()),
                order_by: OrderBy::default(),
                limit: chunk.len() as u32,
                offset: 0,
            };
            async move { self.clerk.list_users(&query, demand).await }
        });
        let mut by_id: HashMap<String, ClerkUser> = try_join_all(pages)
            .await?
            .into_iter()
            .flatten()
            .map(|user| (user.id().to_owned(), user))
            .collect();
        let mut batch = Batch::default();
        for id in ids {
            match by_id.remove(id) {
                Some(user) => batch.found.push(user),
                None => batch.missing.push(id.clone()),
            }
        }
        Ok(batch)
    }

    /// One page of a list.
    pub async fn list(
        &self,
        query: &ListQuery,
        demand: &Demand,
    ) -> Result<Vec<ClerkUser>, UpstreamError> {
        self.clerk.list_users(query, demand).await
    }

    /// How many users match `filter`.
    pub async fn count(&self, filter: &UserFilter, demand: &Demand) -> Result<u64, UpstreamError> {
        self.clerk.count_users(filter, demand).await
    }
}
