//! `UserService`: user lookups and counts; exports live in `grpc::export`.

use std::{
    collections::HashSet,
    sync::{Arc, LazyLock},
    time::Duration,
};

use tokio::sync::watch;
use tonic::{
    Request, Response, Status,
    metadata::{Ascii, MetadataKey, MetadataValue},
};

use super::{
    EncodedUser, EncodedUsers, auth, convert, export, status, unary_deadline, upstream_demand,
    wire::{self, user_service_server::UserService},
};
use crate::{
    admission::{Admission, Demand, Priority},
    callers::Scope,
    clerk::UpstreamError,
    counts::CountCache,
    pb, routes,
    token::TokenKey,
    users::{CacheStatus, Lookup, MAX_BATCH_IDS, Users},
};

/// The `UserService` implementation.
#[derive(Debug, Clone)]
pub struct UserApi {
    pub(super) users: Arc<Users>,
    pub(super) tokens: TokenKey,
    /// Turns true when the broker starts draining: exports then end.
    pub(super) draining: watch::Receiver<bool>,
    /// Recent `CountUsers` answers (shared with the Clerk-compatible front).
    counts: Arc<CountCache>,
    /// Keyed budgets of Clerk's per-user write limit, for `UpdateUserMetadata`.
    admission: Arc<Admission>,
    /// Longest time one `ListUsers` stream stays open; it then ends
    /// resumably.
    pub(super) max_stream_lifetime: Duration,
    /// The encodings of the users served most.
    encoded: Arc<EncodedUsers>,
}

impl UserApi {
    /// Serves lookups from `users` and counts through `counts`; writes draw
    /// on the keyed budgets of `admission`; resume tokens are signed with
    /// `tokens`. Streams last at most [`DEFAULT_MAX_STREAM_LIFETIME`].
    pub fn new(
        users: Arc<Users>,
        counts: Arc<CountCache>,
        admission: Arc<Admission>,
        tokens: TokenKey,
        draining: watch::Receiver<bool>,
    ) -> Self {
        Self {
            users,
            tokens,
            draining,
            counts,
            admission,
            max_stream_lifetime: DEFAULT_MAX_STREAM_LIFETIME,
            encoded: Arc::new(EncodedUsers::new(DEFAULT_ENCODED_BYTES)),
        }
    }

    /// Remembers the encodings in `memo` (shared with the Clerk-compatible
    /// front's texts) instead of a memo of its own.
    pub(crate) fn with_encoded(mut self, memo: Arc<EncodedUsers>) -> Self {
        self.encoded = memo;
        self
    }

    /// Ends each `ListUsers` stream, resumably, once it has been open for
    /// `lifetime`.
    pub fn with_max_stream_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_stream_lifetime = lifetime;
        self
    }
}

/// Most bytes of users as answered remembered (encodings and the front's
/// texts): a quarter of the user cache's default bound (and at most a
/// quarter of a smaller one).
pub const DEFAULT_ENCODED_BYTES: u64 = 64 << 20;

/// How long a `ListUsers` stream stays open by default: an export of a
/// million users (2,000 pages) takes about 35 min at a development key's
/// bulk share (100 req/10 s, 10%) when interactive work saturates the budget,
/// so most exports end by themselves; longer ones resume.
pub const DEFAULT_MAX_STREAM_LIFETIME: Duration = Duration::from_secs(3600);

/// The response header saying where a lookup's answer came from: named
/// once (a name given as text is parsed on each insert).
static X_CACHE: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("x-cache"));

fn cache_value(cache: CacheStatus) -> MetadataValue<Ascii> {
    MetadataValue::from_static(cache.as_str())
}

fn with_cache_header<T>(mut response: Response<T>, cache: CacheStatus) -> Response<T> {
    response
        .metadata_mut()
        .insert(&*X_CACHE, cache_value(cache));
    response
}

fn not_found(id: &str) -> Status {
    Status::not_found(format!("no Clerk user has id {id:?}"))
}

/// Interactive demand of the caller of `request`, until its deadline.
fn interactive<T>(request: &Request<T>) -> Result<Demand, Status> {
    upstream_demand(request, Priority::Interactive, unary_deadline(request))
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<EncodedUser>, Status> {
        let demand = interactive(&request)?;
        let visibility = convert::Visibility::of(&auth::caller(&request));
        let id = request.into_inner().user_id;
        let mut violations = convert::Violations::new();
        convert::check_user_id("user_id", &id, &mut violations);
        status::check(violations)?;
        match self.users.get(&id, &demand).await {
            Ok(Lookup {
                user: Some(user),
                cache,
            }) => Ok(with_cache_header(
                Response::new(
                    self.encoded
                        .get(&user, visibility, cache == CacheStatus::Hit),
                ),
                cache,
            )),
            Ok(Lookup { user: None, cache }) => {
                let mut status = not_found(&id);
                status.metadata_mut().insert(&*X_CACHE, cache_value(cache));
                Err(status)
            }
            Err(error) => {
                let mut status = match error {
                    UpstreamError::NotFound(_) => not_found(&id),
                    error => status::upstream(&error),
                };
                status
                    .metadata_mut()
                    .insert(&*X_CACHE, cache_value(CacheStatus::Miss));
                Err(status)
            }
        }
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<wire::BatchGetUsersResponse>, Status> {
        let demand = interactive(&request)?;
        let visibility = convert::Visibility::of(&auth::caller(&request));
        let requested = request.into_inner().user_ids;
        let mut violations = convert::Violations::new();
        // Each id once, in the order first asked for, without copying any.
        let mut seen = HashSet::with_capacity_and_hasher(
            requested.len(),
            foldhash::fast::RandomState::default(),
        );
        let first: Vec<bool> = requested.iter().map(|id| seen.insert(&**id)).collect();
        drop(seen);
        let ids: Vec<String> = requested
            .into_iter()
            .zip(first)
            .filter_map(|(id, first)| first.then_some(id))
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
            if let Some(problem) = convert::user_id_problem(id) {
                violations.push_with(|| (format!("user_ids[{i}]"), problem.to_owned()));
            }
        }
        status::check(violations)?;
        let batch = self
            .users
            .batch_get(&ids, &demand)
            .await
            .map_err(|error| status::upstream(&error))?;
        let reply = wire::BatchGetUsersResponse {
            users: self
                .encoded
                .get_all(&batch.found, visibility, batch.cache == CacheStatus::Hit),
            missing_user_ids: batch.missing,
        };
        Ok(with_cache_header(Response::new(reply), batch.cache))
    }

    type ListUsersStream = export::ListUsersStream;

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<Self::ListUsersStream>, Status> {
        let api = export::ExportApi {
            users: &self.users,
            tokens: &self.tokens,
            draining: &self.draining,
            max_stream_lifetime: self.max_stream_lifetime,
        };
        export::list_users(api, request)
    }

    async fn count_users(
        &self,
        request: Request<pb::CountUsersRequest>,
    ) -> Result<Response<pb::CountUsersResponse>, Status> {
        let demand = interactive(&request)?;
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

    async fn update_user_metadata(
        &self,
        request: Request<pb::UpdateUserMetadataRequest>,
    ) -> Result<Response<wire::UpdateUserMetadataResponse>, Status> {
        let caller = auth::caller(&request);
        if !caller.may(Scope::WriteUsers) {
            return Err(Status::permission_denied(format!(
                "caller {:?} lacks the scope write_users: ask an operator",
                caller.name
            )));
        }
        let demand = interactive(&request)?;
        let visibility = convert::Visibility::of(&caller);
        let update = request.into_inner();
        let mut violations = convert::Violations::new();
        convert::check_user_id("user_id", &update.user_id, &mut violations);
        let mut body = serde_json::Map::new();
        for (field, value) in [
            ("public_metadata", &update.public_metadata),
            ("private_metadata", &update.private_metadata),
            ("unsafe_metadata", &update.unsafe_metadata),
        ] {
            if let Some(value) = value {
                body.insert(field.to_owned(), convert::struct_json(value));
            }
        }
        if body.is_empty() {
            violations.push((
                "public_metadata".to_owned(),
                "set at least one of public_metadata, private_metadata, unsafe_metadata".to_owned(),
            ));
        }
        status::check(violations)?;
        let keyed = self
            .admission
            .keyed(routes::USER_WRITES)
            .map(|budgets| budgets.budget(&update.user_id));
        let body = serde_json::Value::Object(body).to_string();
        match self
            .users
            .update_metadata(&update.user_id, body.into(), keyed.as_deref(), &demand)
            .await
        {
            Ok(user) => Ok(Response::new(wire::UpdateUserMetadataResponse {
                user: Some(self.encoded.get(&user, visibility, false)),
            })),
            Err(UpstreamError::NotFound(_)) => Err(not_found(&update.user_id)),
            Err(UpstreamError::Rejected { code }) => Err(Status::invalid_argument(format!(
                "Clerk rejected the metadata ({code}): check that each field is a JSON object \
                 within Clerk's size limits"
            ))),
            Err(error) => Err(status::upstream(&error)),
        }
    }
}
