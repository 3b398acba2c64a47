//! `UserService`: user lookups and counts; exports live in `grpc::export`.

use std::{collections::HashSet, pin::Pin, sync::Arc};

use futures_util::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::{caller, convert, export, status, unary_deadline};
use crate::{
    admission::Demand,
    clerk::UpstreamError,
    counts::CountCache,
    pb::{self, user_service_server::UserService},
    token::TokenKey,
    users::{MAX_BATCH_IDS, Users},
};

/// The `UserService` implementation.
#[derive(Debug, Clone)]
pub struct UserApi {
    pub(super) users: Arc<Users>,
    pub(super) tokens: TokenKey,
    /// Turns true when the broker starts draining: exports then end.
    pub(super) draining: watch::Receiver<bool>,
    /// Recent `CountUsers` answers.
    counts: Arc<CountCache>,
}

impl UserApi {
    /// Serves lookups from `users`; resume tokens are signed with `tokens`.
    pub fn new(users: Arc<Users>, tokens: TokenKey, draining: watch::Receiver<bool>) -> Self {
        Self {
            users,
            tokens,
            draining,
            counts: Arc::default(),
        }
    }
}

/// Interactive demand of the caller of `request`, until its deadline.
fn interactive<T>(request: &Request<T>) -> Demand {
    Demand::interactive(caller(request), unary_deadline(request))
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let demand = interactive(&request);
        let id = request.into_inner().user_id;
        let mut violations = convert::Violations::new();
        convert::check_user_id("user_id", &id, &mut violations);
        status::check(violations)?;
        match self.users.get(&id, &demand).await {
            Ok(user) => Ok(Response::new(convert::user(&user))),
            Err(UpstreamError::NotFound(_)) => {
                Err(Status::not_found(format!("no Clerk user has id {id:?}")))
            }
            Err(error) => Err(status::upstream(&error)),
        }
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let demand = interactive(&request);
        let requested = request.into_inner().user_ids;
        let mut violations = convert::Violations::new();
        let mut seen = HashSet::new();
        let ids: Vec<String> = requested
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect();
        if ids.is_empty() || ids.len() > MAX_BATCH_IDS {
            violations.push((
                "user_ids".to_owned(),
                format!(
                    "names {} distinct ids; pass 1 to {MAX_BATCH_IDS} per call",
                    ids.len()
                ),
            ));
        }
        for (i, id) in ids.iter().enumerate().take(MAX_BATCH_IDS + 1) {
            convert::check_user_id(&format!("user_ids[{i}]"), id, &mut violations);
        }
        status::check(violations)?;
        let batch = self
            .users
            .batch_get(&ids, &demand)
            .await
            .map_err(|error| status::upstream(&error))?;
        Ok(Response::new(pb::BatchGetUsersResponse {
            users: batch.found.iter().map(convert::user).collect(),
            missing_user_ids: batch.missing,
        }))
    }

    type ListUsersStream =
        Pin<Box<dyn Stream<Item = Result<pb::ListUsersResponse, Status>> + Send>>;

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        export::list_users(self, request)
    }

    async fn count_users(
        &self,
        request: Request<pb::CountUsersRequest>,
    ) -> Result<Response<pb::CountUsersResponse>, Status> {
        let demand = interactive(&request);
        let mut violations = convert::Violations::new();
        let filter = convert::user_filter(request.into_inner().filter, &mut violations);
        status::check(violations)?;
        let total_count = self
            .counts
            .count(&filter, self.users.count(&filter, &demand))
            .await
            .map_err(|error| status::upstream(&error))?;
        Ok(Response::new(pb::CountUsersResponse { total_count }))
    }
}
