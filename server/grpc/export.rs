//! `UserService.ListUsers`: validates an export request (or its resume
//! token), starts the export, and turns its chunks into a response stream that
//! ends resumably when the broker drains.

use futures_util::{Stream, stream};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::{call_deadline, convert, status, upstream_demand, users::UserApi};
use crate::{
    admission::Priority,
    clerk::{UpstreamError, UserFilter},
    export::{self, Chunk, Cursor, ExportPlan},
    pb,
    token::TokenKey,
};

/// Handles `ListUsers` for `api`.
pub(super) fn list_users(
    api: &UserApi,
    request: Request<pb::ListUsersRequest>,
) -> Result<Response<<UserApi as pb::user_service_server::UserService>::ListUsersStream>, Status> {
    let deadline = call_deadline(request.metadata());
    // Pages are fetched at bulk priority, each with its own deadline.
    let demand = upstream_demand(&request, Priority::Bulk, tokio::time::Instant::now())?;
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
        resume(&api.tokens, &request, &mut violations)
    };
    status::check(violations)?;
    let plan = ExportPlan {
        cursor,
        chunk_size,
        max_users: (request.max_users > 0).then_some(request.max_users),
        demand,
        deadline,
    };
    let chunks = export::start(api.users.clone(), plan);
    Ok(Response::new(Box::pin(export_stream(
        chunks,
        api.tokens.clone(),
        api.draining.clone(),
    ))))
}

/// The cursor of a resumed export; filter and order come from the token.
fn resume(
    tokens: &TokenKey,
    request: &pb::ListUsersRequest,
    violations: &mut convert::Violations,
) -> Cursor {
    if request.filter.is_some() {
        violations.push((
            "filter".to_owned(),
            "must be unset when resuming: the resume_token carries the original filter".to_owned(),
        ));
    }
    if !request.order_by.is_empty() {
        violations.push((
            "order_by".to_owned(),
            "must be empty when resuming: the resume_token carries the original order".to_owned(),
        ));
    }
    let problem = match tokens.open::<Cursor>(&request.resume_token) {
        Ok(cursor) if cursor.v == 1 => return cursor,
        Ok(_) => "comes from an incompatible broker version: start a new export".to_owned(),
        Err(error) => {
            format!("is invalid ({error}): pass a token from a ListUsersResponse unchanged")
        }
    };
    violations.push(("resume_token".to_owned(), problem));
    Cursor::start(UserFilter::default(), Default::default())
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
                let token = state.last_token.as_deref().and_then(|t| MetadataValue::try_from(t).ok());
                if let Some(token) = token {
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
