//! `UserService.ListUsers`: validates an export request (or its resume
//! token), starts the export, and turns its chunks into a response stream that
//! ends resumably when the broker drains, the call's deadline passes, the
//! stream reaches its maximum lifetime, or a policy reload takes away what
//! the caller needs (its caller is checked again before the next message).

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::{Stream, stream};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use super::{
    EncodedUser, auth, call_deadline, convert, standing::Standing, status, upstream_demand, wire,
};
use crate::{
    admission::Priority,
    clerk::{UpstreamError, UserFilter},
    export::{self, Chunk, Cursor, ExportPlan},
    pb,
    token::TokenKey,
    users::Users,
};

/// Longest token repeated in the `x-resume-token` trailer of a status that
/// asks to resume; a longer one (a huge filter) is left out, and the caller
/// resumes with the token of the last message it received, which is the same.
const MAX_TRAILER_TOKEN: usize = 8 * 1024;

/// The response stream of `ListUsers`.
pub(super) type ListUsersStream =
    Pin<Box<dyn Stream<Item = Result<wire::ListUsersResponse, Status>> + Send>>;

/// What `ListUsers` needs of the user service.
pub(super) struct ExportApi<'a> {
    /// User lookups, whose pages the export reads.
    pub(super) users: &'a Arc<Users>,
    /// Signs and opens resume tokens.
    pub(super) tokens: &'a TokenKey,
    /// Turns true when the broker starts draining: exports then end.
    pub(super) draining: &'a watch::Receiver<bool>,
    /// Longest time one stream stays open.
    pub(super) max_stream_lifetime: Duration,
}

/// Handles `ListUsers` for `api`.
pub(super) fn list_users(
    api: ExportApi<'_>,
    request: Request<pb::ListUsersRequest>,
) -> Result<Response<ListUsersStream>, Status> {
    let deadline = call_deadline(request.metadata());
    // Pages are fetched at bulk priority, each with its own deadline.
    let demand = upstream_demand(&request, Priority::Bulk, tokio::time::Instant::now())?;
    let visibility = convert::Visibility::of(&auth::caller(&request));
    let standing = request.extensions().get::<Standing>().cloned();
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
        resume(api.tokens, &request, &mut violations)
    };
    status::check(violations)?;
    let plan = ExportPlan {
        cursor,
        chunk_size,
        max_users: (request.max_users > 0).then_some(request.max_users),
        demand,
        deadline,
    };
    let base = plan.cursor.clone();
    let chunks = export::start(api.users.clone(), plan);
    Ok(Response::new(Box::pin(export_stream(ExportStream {
        chunks,
        base,
        tokens: api.tokens.clone(),
        draining: api.draining.clone(),
        deadline,
        // Too far to represent (a huge setting): no end.
        lifetime_ends: Instant::now().checked_add(api.max_stream_lifetime),
        visibility,
        standing,
        last_token: None,
        done: false,
    }))))
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
    let opened = tokens.open::<serde_json::Value>(&request.resume_token);
    let problem = match opened.map(Cursor::from_json) {
        Ok(Ok(cursor)) => return cursor,
        Ok(Err(error)) => error.to_string(),
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
    /// The export's filter and order, sealed with each chunk's position.
    base: Cursor,
    tokens: TokenKey,
    draining: watch::Receiver<bool>,
    /// The call's deadline: the stream ends there, resumably.
    deadline: Option<Instant>,
    /// The end of the stream's allowed lifetime: it ends there, resumably.
    lifetime_ends: Option<Instant>,
    /// What of each user the caller may see.
    visibility: convert::Visibility,
    /// The caller across policy reloads (None: a call that passed no gate).
    standing: Option<Standing>,
    /// The token of the last message sent, repeated in a resumable status.
    last_token: Option<String>,
    done: bool,
}

impl ExportStream {
    /// `status`, carrying the last token in `x-resume-token` when it has one.
    fn resumable(&self, mut status: Status) -> Status {
        let token = self.last_token.as_deref();
        let token = token.filter(|token| token.len() <= MAX_TRAILER_TOKEN);
        if let Some(token) = token.and_then(|token| MetadataValue::try_from(token).ok()) {
            status.metadata_mut().insert("x-resume-token", token);
        }
        status
    }

    /// The next message, or the status ending the stream.
    async fn next(&mut self) -> Option<Result<wire::ListUsersResponse, Status>> {
        loop {
            let ending = tokio::select! {
                biased;
                () = drained(self.draining.clone()) => status::draining(),
                () = expired(self.deadline) => status::export_deadline(),
                () = expired(self.lifetime_ends) => status::stream_lifetime(),
                // A reload is seen before the next message goes out.
                () = reloaded(self.standing.as_mut()) => {
                    match self.standing.as_mut().map(|standing| standing.recheck(self.visibility)) {
                        Some(Err(lapse)) => lapse.status(),
                        _ => continue,
                    }
                }
                chunk = self.chunks.recv() => match chunk? {
                    Ok(chunk) => return Some(Ok(self.message(&chunk))),
                    Err(error) => status::upstream(&error),
                },
            };
            self.done = true;
            return Some(Err(self.resumable(ending)));
        }
    }

    /// The message carrying `chunk`.
    fn message(&mut self, chunk: &Chunk) -> wire::ListUsersResponse {
        let resume_token = self.tokens.seal(&self.base.at(&chunk.at));
        self.last_token = Some(resume_token.clone());
        wire::ListUsersResponse {
            users: chunk
                .users
                .iter()
                .map(|user| EncodedUser::new(&convert::user(user, self.visibility)))
                .collect(),
            resume_token,
        }
    }
}

/// Turns export chunks into response messages. Ends the stream with
/// UNAVAILABLE when the broker starts draining or the stream reaches its
/// maximum lifetime, DEADLINE_EXCEEDED when the call's deadline passes, and
/// UNAUTHENTICATED or PERMISSION_DENIED when a policy reload revoked the
/// caller or what the export needs. Every status ending a stream early
/// (these, and upstream failures) carries the last resume token in
/// `x-resume-token` metadata. Ending the stream drops the channel, which
/// stops the export task.
fn export_stream(
    state: ExportStream,
) -> impl Stream<Item = Result<wire::ListUsersResponse, Status>> {
    stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        let item = state.next().await?;
        Some((item, state))
    })
}

/// Resolves when the policy in force changes; never without a standing.
async fn reloaded(standing: Option<&mut Standing>) {
    match standing {
        Some(standing) => standing.changed().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `deadline`; never without one.
async fn expired(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves once draining starts; never if the broker cannot drain.
async fn drained(mut draining: watch::Receiver<bool>) {
    if draining.wait_for(|&draining| draining).await.is_err() {
        std::future::pending::<()>().await;
    }
}
