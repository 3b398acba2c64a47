//! `UserService`: user lookups, exports and counts.

use std::{collections::HashSet, pin::Pin, sync::Arc};

use futures_util::{Stream, stream};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::{DEFAULT_DEADLINE, call_deadline, convert, status};
use crate::{
    clerk::{UpstreamError, UserFilter},
    export::{self, Chunk, Cursor, ExportPlan},
    pb::{self, user_service_server::UserService},
    token::TokenKey,
    users::{MAX_BATCH_IDS, Users},
};

/// The `UserService` implementation.
#[derive(Debug, Clone)]
pub struct UserApi {
    users: Arc<Users>,
    tokens: TokenKey,
    /// Turns true when the broker starts draining: exports then end.
    draining: watch::Receiver<bool>,
}

impl UserApi {
    /// Serves lookups from `users`; resume tokens are signed with `tokens`.
    pub fn new(users: Arc<Users>, tokens: TokenKey, draining: watch::Receiver<bool>) -> Self {
        Self {
            users,
            tokens,
            draining,
        }
    }
}

/// The deadline of a unary call: its own, or the default.
fn unary_deadline<T>(request: &Request<T>) -> Instant {
    call_deadline(request.metadata()).unwrap_or_else(|| Instant::now() + DEFAULT_DEADLINE)
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let deadline = unary_deadline(&request);
        let id = request.into_inner().user_id;
        let mut violations = convert::Violations::new();
        convert::check_user_id("user_id", &id, &mut violations);
        status::check(violations)?;
        match self.users.get(&id, deadline).await {
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
        let deadline = unary_deadline(&request);
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
            .batch_get(&ids, deadline)
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
        let deadline = call_deadline(request.metadata());
        let request = request.into_inner();
        let mut violations = convert::Violations::new();
        let chunk_size = convert::page_size(request.page_size, &mut violations);
        let cursor = if request.resume_token.is_empty() {
            let filter = convert::user_filter(request.filter, &mut violations);
            Cursor::start(
                filter,
                convert::order_by(&request.order_by, &mut violations),
            )
        } else {
            self.resume(&request, &mut violations)
        };
        status::check(violations)?;
        let plan = ExportPlan {
            cursor,
            chunk_size,
            max_users: (request.max_users > 0).then_some(request.max_users),
            deadline,
        };
        let chunks = export::start(self.users.clone(), plan);
        Ok(Response::new(Box::pin(export_stream(
            chunks,
            self.tokens.clone(),
            self.draining.clone(),
        ))))
    }

    async fn count_users(
        &self,
        request: Request<pb::CountUsersRequest>,
    ) -> Result<Response<pb::CountUsersResponse>, Status> {
        let deadline = unary_deadline(&request);
        let mut violations = convert::Violations::new();
        let filter = convert::user_filter(request.into_inner().filter, &mut violations);
        status::check(violations)?;
        let total_count = self
            .users
            .count(&filter, deadline)
            .await
            .map_err(|error| status::upstream(&error))?;
        Ok(Response::new(pb::CountUsersResponse { total_count }))
    }
}

impl UserApi {
    /// The cursor of a resumed export; filter and order come from the token.
    fn resume(
        &self,
        request: &pb::ListUsersRequest,
        violations: &mut convert::Violations,
    ) -> Cursor {
        if request.filter.is_some() {
            violations.push((
                "filter".to_owned(),
                "must be unset when resuming: the resume_token carries the original filter"
                    .to_owned(),
            ));
        }
        if !request.order_by.is_empty() {
            violations.push((
                "order_by".to_owned(),
                "must be empty when resuming: the resume_token carries the original order"
                    .to_owned(),
            ));
        }
        match self.tokens.open::<Cursor>(&request.resume_token) {
            Ok(cursor) if cursor.v == 1 => cursor,
            Ok(_) => {
                violations.push((
                    "resume_token".to_owned(),
                    "comes from an incompatible broker version: start a new export".to_owned(),
                ));
                Cursor::start(UserFilter::default(), Default::default())
            }
            Err(error) => {
                violations.push((
                    "resume_token".to_owned(),
                    format!(
                        "is invalid ({error}): pass a token from a ListUsersResponse unchanged"
                    ),
                ));
                Cursor::start(UserFilter::default(), Default::default())
            }
        }
    }
}

/// The state of one export stream.
struct ExportStream {
    chunks: mpsc::Receiver<Result<Chunk, UpstreamError>>,
    tokens: TokenKey,
    draining: watch::Receiver<bool>,
    /// The token of the last message sent, repeated in a drain status.
    last_token: Option<String>,
    done: bool,
}

/// Turns export chunks into response messages; ends the stream with
/// UNAVAILABLE (and the last resume token in `x-resume-token` metadata) when
/// the broker starts draining.
fn export_stream(
    chunks: mpsc::Receiver<Result<Chunk, UpstreamError>>,
    tokens: TokenKey,
    draining: watch::Receiver<bool>,
) -> impl Stream<Item = Result<pb::ListUsersResponse, Status>> {
    let state = ExportStream {
        chunks,
        tokens,
        draining,
        last_token: None,
        done: false,
    };
    stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = tokio::select! {
            biased;
            () = drained(state.draining.clone()) => {
                state.done = true;
                let mut status = status::draining();
                if let Some(token) = state.last_token.as_deref().and_then(|t| MetadataValue::try_from(t).ok()) {
                    status.metadata_mut().insert("x-resume-token", token);
                }
                Err(status)
            }
            chunk = state.chunks.recv() => match chunk? {
                Ok(chunk) => {
                    let resume_token = state.tokens.seal(&chunk.cursor);
                    state.last_token = Some(resume_token.clone());
                    Ok(pb::ListUsersResponse {
                        users: chunk.users.iter().map(convert::user).collect(),
                        resume_token,
                    })
                }
                Err(error) => {
                    state.done = true;
                    Err(status::upstream(&error))
                }
            },
        };
        Some((item, state))
    })
}

/// Resolves once draining starts; never if the broker cannot drain.
async fn drained(mut draining: watch::Receiver<bool>) {
    if draining.wait_for(|&draining| draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}
