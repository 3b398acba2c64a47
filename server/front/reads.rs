//! Reads the front answers from the broker's domain instead of passing them
//! through: a user by id (the cache, one flight per id, the batcher), a
//! list whose only filter is `user_id` (a batch lookup, ordered and paged as
//! Clerk would), a count (the count cache), and the JWKS (cached 5 minutes,
//! one flight). Every answer is what Clerk itself would send: each user's
//! JSON exactly as Clerk sent it.
//!
//! Only requests of an API version whose user reads answer what the pinned
//! version answers (or of none) are served here: answers can differ by
//! version, and the cache holds the pinned one's.

use std::{cmp::Ordering, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, StatusCode},
    response::Response,
};
use bytes::Bytes;
use tokio::{sync::Mutex, time::Instant};

use super::{Front, reply};
use crate::{
    admission::Demand,
    clerk::{API_VERSION, ClerkUser, Forward, MAX_FILTER_VALUES, OrderBy, OrderField, UserFilter},
    grpc::Visibility,
    users::CacheStatus,
};

/// How long the JWKS is served from memory.
pub(super) const JWKS_TTL: Duration = Duration::from_secs(300);

/// API versions whose `GET /v1/users…` and `GET /v1/jwks` answers are
/// those of the pinned version, so the cache serves their callers too:
/// 2026-05-12 (sent by `@clerk/backend`) changed only `PATCH
/// /v1/users/{id}` (metadata moved to the metadata endpoints). Any other
/// version passes through.
pub(super) const READ_COMPATIBLE_VERSIONS: [&str; 2] = [API_VERSION, "2026-05-12"];

/// Clerk's default page size of `GET /v1/users`.
const DEFAULT_LIMIT: usize = 10;

/// The JWKS as last fetched: one fetch at a time (the lock is held across
/// it), served for [`JWKS_TTL`].
#[derive(Debug, Default)]
pub(super) struct JwksCache(Mutex<Option<(Instant, Bytes)>>);

/// A read the front answers itself, recognised from the request.
enum Read<'a> {
    User(&'a str),
    ListByIds {
        ids: Vec<String>,
        order_by: OrderBy,
        limit: usize,
        offset: usize,
    },
    Count(UserFilter),
    /// A count whose only filter is `user_id`: the batch's found users.
    CountIds(Vec<String>),
    Jwks,
}

/// The answer to `method` `path`?`query` if the front serves it from the
/// domain, `None` if it passes through.
pub(super) async fn serve(
    front: &Front,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    demand: &Demand,
    private_metadata: bool,
) -> Option<Response> {
    let pinned = headers.get("clerk-api-version").is_none_or(|version| {
        READ_COMPATIBLE_VERSIONS
            .iter()
            .any(|known| version.as_bytes() == known.as_bytes())
    });
    if *method != Method::GET || !pinned {
        return None;
    }
    let params: Vec<(String, String)> = query
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    if params.iter().any(|(name, _)| name == "__clerk_api_version") {
        return None;
    }
    let answer = match recognise(path, &params)? {
        Read::User(id) => match front.parts.users.get(id, demand).await {
            Ok(lookup) => match lookup.user {
                Some(user) => user_answer(front, &[user], false, private_metadata, lookup.cache),
                None => with_cache(
                    reply::error(
                        StatusCode::NOT_FOUND,
                        "resource_not_found",
                        "not found",
                        &format!("No user was found with id {id}"),
                    ),
                    lookup.cache,
                ),
            },
            Err(error) => reply::upstream(&error),
        },
        Read::ListByIds {
            ids,
            order_by,
            limit,
            offset,
        } => match front.parts.users.batch_get(&ids, demand).await {
            Ok(batch) => {
                let mut users = batch.found;
                users.sort_by(|a, b| compare(a, b, order_by));
                let page: Vec<ClerkUser> = users.into_iter().skip(offset).take(limit).collect();
                user_answer(front, &page, true, private_metadata, batch.cache)
            }
            Err(error) => reply::upstream(&error),
        },
        Read::Count(filter) => {
            match front
                .parts
                .counts
                .count(&filter, front.parts.users.count(&filter, demand))
                .await
            {
                Ok(total) => total_count(total),
                Err(error) => reply::upstream(&error),
            }
        }
        Read::CountIds(ids) => match front.parts.users.batch_get(&ids, demand).await {
            Ok(batch) => with_cache(total_count(batch.found.len() as u64), batch.cache),
            Err(error) => reply::upstream(&error),
        },
        Read::Jwks => jwks(front, headers, demand).await,
    };
    Some(answer)
}

/// Which read a request is, if the front serves it.
fn recognise<'a>(path: &'a str, params: &[(String, String)]) -> Option<Read<'a>> {
    match path {
        "/v1/jwks" if params.is_empty() => Some(Read::Jwks),
        "/v1/users/count" => match ids_only(params) {
            // `getUserList({ userId })` asks for this count beside the list:
            // the same lookup answers it, from the cache.
            Some(ids) => Some(Read::CountIds(ids)),
            None => UserFilter::from_params(params).map(Read::Count),
        },
        "/v1/users" => list_by_ids(params),
        _ => {
            let id = path.strip_prefix("/v1/users/")?;
            valid_id(id).then_some(Read::User(id))
        }
    }
}

/// `GET /v1/users` whose only filter is `user_id` (1 to 100 ids), with
/// Clerk's `limit`, `offset` and an `order_by` on a timestamp (other orders
/// compare text as Clerk's database does, which the broker does not mimic:
/// they pass through).
fn list_by_ids(params: &[(String, String)]) -> Option<Read<'static>> {
    let mut ids: Vec<String> = Vec::new();
    let mut order_by = OrderBy::default();
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for (name, value) in params {
        match name.as_str() {
            "user_id" if valid_id(value) => {
                if !ids.contains(value) {
                    ids.push(value.clone());
                }
            }
            "limit" => limit = value.parse().ok().filter(|n| (1..=500).contains(n))?,
            "offset" => offset = value.parse().ok()?,
            "order_by" => {
                order_by = value.parse().ok()?;
                if !matches!(
                    order_by.field,
                    OrderField::CreatedAt | OrderField::UpdatedAt
                ) {
                    return None;
                }
            }
            _ => return None,
        }
    }
    (!ids.is_empty() && ids.len() <= MAX_FILTER_VALUES).then_some(Read::ListByIds {
        ids,
        order_by,
        limit,
        offset,
    })
}

/// The ids of a query whose only parameters are 1 to 100 valid `user_id`s.
fn ids_only(params: &[(String, String)]) -> Option<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for (name, value) in params {
        if name != "user_id" || !valid_id(value) {
            return None;
        }
        if !ids.contains(value) {
            ids.push(value.clone());
        }
    }
    (!ids.is_empty() && ids.len() <= MAX_FILTER_VALUES).then_some(ids)
}

/// Clerk's count answer.
fn total_count(total: u64) -> Response {
    reply::json(
        StatusCode::OK,
        format!(r#"{{"object":"total_count","total_count":{total}}}"#),
    )
}

/// Clerk's order on a timestamp field, missing values last, ties by id.
fn compare(a: &ClerkUser, b: &ClerkUser, order_by: OrderBy) -> Ordering {
    let key = |user: &ClerkUser| user.millis(order_by.field.as_str());
    let by_key = match (key(a), key(b)) {
        (Some(x), Some(y)) if order_by.descending => y.cmp(&x),
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    by_key.then_with(|| a.id().cmp(b.id()))
}

/// A user id the broker looks up (1–128 of `[A-Za-z0-9_-]`); others pass
/// through for Clerk to answer.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// One user, or a JSON array of them, each as Clerk sent it (without
/// `private_metadata` unless the caller may see it).
/// Users served from the cache (`cache` a hit) are answered from the memo
/// of texts as answered, and remembered there.
fn user_answer(
    front: &Front,
    users: &[ClerkUser],
    list: bool,
    private_metadata: bool,
    cache: CacheStatus,
) -> Response {
    let visibility = if private_metadata {
        Visibility::Full
    } else {
        Visibility::WithoutPrivateMetadata
    };
    let hit = cache == CacheStatus::Hit;
    let body = match users {
        [user] if !list => Body::from(front.parts.encoded.json(user, visibility, hit)),
        _ => {
            // UTF-8 throughout: JSON punctuation and users' texts.
            let mut body = Vec::new();
            if list {
                body.push(b'[');
            }
            for (index, user) in users.iter().enumerate() {
                if index > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&front.parts.encoded.json(user, visibility, hit));
            }
            if list {
                body.push(b']');
            }
            Body::from(body)
        }
    };
    with_cache(reply::json(StatusCode::OK, body), cache)
}

/// Marks where an answer came from (`x-cache: hit|miss|stale`).
fn with_cache(mut response: Response, cache: CacheStatus) -> Response {
    response
        .headers_mut()
        .insert("x-cache", HeaderValue::from_static(cache.as_str()));
    response
}

/// `GET /v1/jwks`: from memory while fresh, else fetched once for everyone
/// waiting (through the upstream budget, like every request).
async fn jwks(front: &Front, headers: &HeaderMap, demand: &Demand) -> Response {
    let mut cached = front.jwks.0.lock().await;
    if let Some((fetched, body)) = cached.as_ref()
        && fetched.elapsed() < JWKS_TTL
    {
        return with_cache(reply::json(StatusCode::OK, body.clone()), CacheStatus::Hit);
    }
    let request = Forward {
        method: Method::GET,
        path_and_query: "jwks".to_owned(),
        headers: headers.clone(),
        body: Bytes::new(),
        route: "/v1/jwks".to_owned(),
    };
    match front.parts.clerk.forward(&request, None, demand).await {
        Ok(answer) if answer.status.is_success() => {
            *cached = Some((Instant::now(), answer.body.clone()));
            with_cache(reply::json(StatusCode::OK, answer.body), CacheStatus::Miss)
        }
        Ok(answer) => super::passed_back(answer),
        Err(error) => reply::upstream(&error),
    }
}
