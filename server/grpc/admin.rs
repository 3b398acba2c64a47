//! `AdminService`: operations on the broker's own state (no upstream cost).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, status, wire::admin_service_server::AdminService};
use crate::{pb, users::Users};

/// The `AdminService` implementation.
#[derive(Debug, Clone)]
pub struct AdminApi {
    users: Arc<Users>,
}

impl AdminApi {
    /// Administers the lookups of `users`.
    pub fn new(users: Arc<Users>) -> Self {
        Self { users }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn invalidate_user(
        &self,
        request: Request<pb::InvalidateUserRequest>,
    ) -> Result<Response<pb::InvalidateUserResponse>, Status> {
        let id = request.into_inner().user_id;
        let mut violations = convert::Violations::new();
        convert::check_user_id("user_id", &id, &mut violations);
        status::check(violations)?;
        let was_cached = self.users.invalidate(&id).await;
        tracing::info!(user_id = %id, was_cached, "user invalidated by the admin API");
        Ok(Response::new(pb::InvalidateUserResponse { was_cached }))
    }
}
