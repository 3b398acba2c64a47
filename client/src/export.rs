//! Exports that survive broken connections: [`Export`] yields the messages of
//! `ListUsers` and, when the stream breaks (a lost connection, `UNAVAILABLE`
//! from a draining broker or a failing Clerk), calls `ListUsers` again with
//! the last `resume_token` it received, so that every user arrives exactly
//! once. [`UserStream`] flattens the messages into users.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{
    Stream, StreamExt as _,
    stream::{self, BoxStream},
};
use tonic::{Code, Status, codec::Streaming};

use crate::{AuthChannel, Error, pb, pb::user_service_client::UserServiceClient};

/// Trailer in which a draining broker repeats the last token it sent.
const RESUME_TOKEN_TRAILER: &str = "x-resume-token";

/// How an export retries after its stream breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePolicy {
    /// Failures in a row (with no message in between) before giving up.
    pub max_retries: u32,
    /// Pause before the first retry; doubled on each failure in a row.
    pub initial_backoff: Duration,
    /// Longest pause between two retries.
    pub max_backoff: Duration,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl ResumePolicy {
    /// The pause before retry number `attempt` (1-based): exponential, with
    /// half of it random so that many clients do not come back in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .initial_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        full / 2 + full.mul_f64(fastrand::f64() / 2.0)
    }
}

/// Whether an export may continue after `status` ended its stream.
///
/// `UNAVAILABLE` is the broker's word for "try again" (draining, Clerk down).
/// A connection that broke mid-stream shows up as UNKNOWN, INTERNAL or
/// CANCELLED made locally by the transport: such statuses carry the transport
/// error as their source, which a status sent by the broker never has.
pub(crate) fn resumable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled => {
            std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

/// The messages of one export, resumed across broken streams.
pub struct Export {
    inner: BoxStream<'static, Result<pb::ListUsersResponse, Error>>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export").finish_non_exhaustive()
    }
}

/// Where an export stands between messages.
struct Progress {
    stub: UserServiceClient<AuthChannel>,
    /// The call as first made (filter, order, page size, limit, maybe a token).
    request: pb::ListUsersRequest,
    policy: ResumePolicy,
    /// The token of the last message received, if any.
    resume_token: Option<String>,
    /// Users received so far, to shrink `max_users` on a resumed call.
    delivered: u64,
    /// Failures since the last message.
    failures: u32,
    stream: Option<Streaming<pb::ListUsersResponse>>,
    done: bool,
}

impl Progress {
    /// The request for the next attempt: the original one, or the same
    /// export continued after the last token (the token binds the filter
    /// and order, which must then be left unset).
    fn next_request(&self) -> Option<pb::ListUsersRequest> {
        let max_users = match self.request.max_users {
            0 => 0,
            limit if self.delivered >= limit => return None,
            limit => limit - self.delivered,
        };
        Some(match &self.resume_token {
            None => self.request.clone(),
            Some(token) => pb::ListUsersRequest {
                filter: None,
                order_by: String::new(),
                page_size: self.request.page_size,
                max_users,
                resume_token: token.clone(),
            },
        })
    }

    /// Counts a failure; waits before the next attempt, or gives up.
    async fn retry_after(&mut self, status: Status) -> Result<(), Error> {
        if let Some(token) = status
            .metadata()
            .get(RESUME_TOKEN_TRAILER)
            .and_then(|value| value.to_str().ok())
        {
            self.resume_token = Some(token.to_owned());
        }
        if !resumable(&status) || self.failures >= self.policy.max_retries {
            return Err(status.into());
        }
        self.failures += 1;
        tokio::time::sleep(self.policy.backoff(self.failures)).await;
        Ok(())
    }

    /// The next message, opening or reopening the stream as needed.
    async fn next(&mut self) -> Option<Result<pb::ListUsersResponse, Error>> {
        while !self.done {
            let Some(stream) = self.stream.as_mut() else {
                let request = self.next_request()?;
                match self.stub.list_users(request).await {
                    Ok(response) => self.stream = Some(response.into_inner()),
                    Err(status) => {
                        if let Err(error) = self.retry_after(status).await {
                            self.done = true;
                            return Some(Err(error));
                        }
                    }
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(message)) => {
                    self.failures = 0;
                    self.delivered += message.users.len() as u64;
                    self.resume_token = Some(message.resume_token.clone());
                    return Some(Ok(message));
                }
                Ok(None) => self.done = true,
                Err(status) => {
                    self.stream = None;
                    if let Err(error) = self.retry_after(status).await {
                        self.done = true;
                        return Some(Err(error));
                    }
                }
            }
        }
        None
    }
}

impl Export {
    pub(crate) fn new(
        stub: UserServiceClient<AuthChannel>,
        request: pb::ListUsersRequest,
        policy: ResumePolicy,
    ) -> Self {
        let progress = Progress {
            stub,
            request,
            policy,
            resume_token: None,
            delivered: 0,
            failures: 0,
            stream: None,
            done: false,
        };
        let inner = stream::unfold(progress, |mut progress| async move {
            let item = progress.next().await?;
            Some((item, progress))
        })
        .boxed();
        Self { inner }
    }
}

impl Stream for Export {
    type Item = Result<pb::ListUsersResponse, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// The users of an export, one at a time (see [`Export`]).
pub struct UserStream {
    inner: BoxStream<'static, Result<pb::User, Error>>,
}

impl std::fmt::Debug for UserStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStream").finish_non_exhaustive()
    }
}

impl UserStream {
    pub(crate) fn new(export: Export) -> Self {
        let inner = export
            .flat_map(|message| {
                let users: Vec<Result<pb::User, Error>> = match message {
                    Ok(message) => message.users.into_iter().map(Ok).collect(),
                    Err(error) => vec![Err(error)],
                };
                stream::iter(users)
            })
            .boxed();
        Self { inner }
    }
}

impl Stream for UserStream {
    type Item = Result<pb::User, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retryable_failures_resume() {
        assert!(resumable(&Status::unavailable("draining")));
        assert!(!resumable(&Status::invalid_argument("bad token")));
        assert!(!resumable(&Status::resource_exhausted("budget")));
        // Sent by the broker: no source, not a broken connection.
        assert!(!resumable(&Status::unknown("bug")));
        let broken = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(resumable(&broken), "{broken:?}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let policy = ResumePolicy::default();
        for attempt in 1..=10 {
            let full = (policy.initial_backoff * (1 << (attempt - 1))).min(policy.max_backoff);
            let pause = policy.backoff(attempt);
            assert!(pause >= full / 2 && pause <= full, "{attempt}: {pause:?}");
        }
    }
}
