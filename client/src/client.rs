//! `Client`: one connection to a broker, the caller's token on every call, and
//! a default deadline on every unary call.

use std::{fmt, time::Duration};

use tonic::{
    Request,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    CallerToken, Error,
    export::{Export, ResumePolicy, UserStream},
    pb::{self, quota_service_client::QuotaServiceClient, user_service_client::UserServiceClient},
};

/// Where a broker listens by default (the demo's address).
pub const DEFAULT_URL: &str = "http://127.0.0.1:50051";

/// Deadline of a unary call unless the builder sets another.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Longest time to set up a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings on a busy connection find a dead peer (a half-open TCP
/// connection) within interval + timeout, so a stalled export is resumed
/// rather than waiting forever: exports have no deadline of their own.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel that carries the caller's token.
pub type AuthChannel = InterceptedService<Channel, CallerToken>;

/// A connection to a broker. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) users: UserServiceClient<AuthChannel>,
    pub(crate) quota: QuotaServiceClient<AuthChannel>,
    /// Applied to every unary call.
    deadline: Duration,
    /// How exports survive broken connections.
    resume: ResumePolicy,
}

/// Settings of a [`Client`]: the URL, an optional caller token, deadlines.
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    deadline: Duration,
    connect_timeout: Duration,
    resume: ResumePolicy,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("deadline", &self.deadline)
            .field("connect_timeout", &self.connect_timeout)
            .field("resume", &self.resume)
            .finish()
    }
}

impl ClientBuilder {
    /// Settings for a broker at `url` (e.g. `http://127.0.0.1:50051`).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            deadline: DEFAULT_DEADLINE,
            connect_timeout: CONNECT_TIMEOUT,
            resume: ResumePolicy::default(),
        }
    }

    /// The caller's bearer token (from the broker's policy file); without one
    /// the call is anonymous, which only brokers without a policy accept.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The token, if any: convenient with `std::env::var("…").ok()`.
    pub fn token_opt(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Deadline of every unary call (default 10 s). The broker keeps part of
    /// it to deliver its answer, and refuses at once work it cannot finish in time.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Longest time to set up a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How exports retry after a broken connection or `UNAVAILABLE`.
    pub fn resume_policy(mut self, policy: ResumePolicy) -> Self {
        self.resume = policy;
        self
    }

    /// Connects now: fails if the broker cannot be reached.
    pub async fn connect(self) -> Result<Client, Error> {
        let (endpoint, token) = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            url: self.url.clone(),
            source,
        })?;
        Ok(self.client(channel, token))
    }

    /// Connects on the first call (and reconnects after failures, as every
    /// client does): for programs that start before the broker.
    pub fn connect_lazy(self) -> Result<Client, Error> {
        let (endpoint, token) = self.endpoint()?;
        let channel = endpoint.connect_lazy();
        Ok(self.client(channel, token))
    }

    fn endpoint(&self) -> Result<(Endpoint, CallerToken), Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(invalid("it must start with http:// or https://".into()));
        }
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|error| invalid(error.to_string()))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
        let token = CallerToken::new(self.token.as_deref())?;
        Ok((endpoint, token))
    }

    fn client(self, channel: Channel, token: CallerToken) -> Client {
        Client {
            users: UserServiceClient::with_interceptor(channel.clone(), token.clone()),
            quota: QuotaServiceClient::with_interceptor(channel, token),
            deadline: self.deadline,
            resume: self.resume,
        }
    }
}

impl Client {
    /// Settings for a broker at `url`; finish with [`ClientBuilder::connect`].
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url)
    }

    /// Connects to `url` anonymously, with the default deadline.
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        ClientBuilder::new(url).connect().await
    }

    /// One user by id. `NOT_FOUND` if Clerk has no such user.
    pub async fn get_user(&self, user_id: impl Into<String>) -> Result<pb::User, Error> {
        let request = self.unary(pb::GetUserRequest {
            user_id: user_id.into(),
        });
        Ok(self.users.clone().get_user(request).await?.into_inner())
    }

    /// Many users at once (1 to 500 distinct ids); unknown ids come back in
    /// `missing_user_ids` rather than failing the call.
    pub async fn batch_get_users<I, S>(
        &self,
        user_ids: I,
    ) -> Result<pb::BatchGetUsersResponse, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let request = self.unary(pb::BatchGetUsersRequest {
            user_ids: user_ids.into_iter().map(Into::into).collect(),
        });
        Ok(self
            .users
            .clone()
            .batch_get_users(request)
            .await?
            .into_inner())
    }

    /// How many users match `filter` (`UserFilter::default()` counts all).
    pub async fn count_users(&self, filter: pb::UserFilter) -> Result<u64, Error> {
        let request = self.unary(pb::CountUsersRequest {
            filter: Some(filter),
        });
        Ok(self
            .users
            .clone()
            .count_users(request)
            .await?
            .into_inner()
            .total_count)
    }

    /// Every user `request` selects, one at a time, resuming transparently
    /// after a broken connection or `UNAVAILABLE` (see [`Client::export`]).
    pub fn list_users(&self, request: pb::ListUsersRequest) -> UserStream {
        UserStream::new(self.export(request))
    }

    /// The messages of an export, each with its `resume_token`. After a broken
    /// connection or `UNAVAILABLE` the export continues from the last token
    /// received (bounded retries with backoff, see [`ResumePolicy`]), so the
    /// stream yields every user exactly once. Exports have no deadline: they
    /// take as long as the budget allows; dead connections are found by
    /// HTTP/2 keep-alive pings.
    pub fn export(&self, request: pb::ListUsersRequest) -> Export {
        Export::new(self.users.clone(), request, self.resume.clone())
    }

    /// The generated `UserService` stub on this connection (with the token),
    /// for anything the helpers do not cover.
    pub fn user_service(&self) -> UserServiceClient<AuthChannel> {
        self.users.clone()
    }

    /// The generated `QuotaService` stub on this connection (with the token).
    pub fn quota_service(&self) -> QuotaServiceClient<AuthChannel> {
        self.quota.clone()
    }

    /// The deadline applied to unary calls.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// A request with the default deadline.
    pub(crate) fn unary<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.deadline);
        request
    }
}
