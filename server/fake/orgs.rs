//! The fake's organizations and their memberships.
//!
//! Organizations are derived, deterministically, from the users: every id a user lists in
//! `public_metadata.organization_ids` (the fake's stand-in for memberships, which the
//! `organization_id` user filter already matches) is an organization, founded one day before
//! its earliest member joined, by that member (role `org:admin`; the others are
//! `org:member`). Memberships are computed from the users on each request, so they always
//! agree with `GET /v1/users?organization_id=…`. Organizations are stored and writable:
//! `PATCH /v1/organizations/{id}` and its metadata merge (`PATCH …/metadata`) and replace
//! (`PUT …/metadata`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::body::{
    Body, Rejection, apply_patches, metadata_patches, metadata_replacements, set_field, touch,
};
use super::filter::{OrderBy, OrderField, ParamError, parse_order, parse_page_limit};
use super::seed::{SEED_NOW_MS, clerk_id};
use super::store::{Record, Store};

/// One day in ms: how long before its first member an organization was created.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// Fictitious company names (the ones software documentation uses), for organization names.
const COMPANIES: [&str; 12] = [
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Tailspin",
    "Adventure Works",
    "Wide World",
    "Proseware",
    "Litware",
    "Lucerne",
    "Woodgrove",
    "Alpine Ski",
    "Coho",
];

/// Second words of organization names.
const SUFFIXES: [&str; 6] = ["Labs", "Systems", "Works", "Group", "Traders", "Partners"];

/// Regions put in an organization's `public_metadata.region`.
const REGIONS: [&str; 3] = ["eu", "us", "apac"];

/// The metadata fields of an organization.
const METADATA: [&str; 2] = ["public_metadata", "private_metadata"];

/// Every parameter `PATCH /v1/organizations/{organization_id}` accepts (2025-11-10); those not
/// modelled (`created_at`, `role_set_key`) are accepted and ignored.
const UPDATE_PARAMS: &[&str] = &[
    "name",
    "slug",
    "max_allowed_memberships",
    "admin_delete_enabled",
    "public_metadata",
    "private_metadata",
    "created_at",
    "role_set_key",
];

/// The permissions of the `org:admin` role (Clerk's system permissions).
const ADMIN_PERMISSIONS: [&str; 6] = [
    "org:sys_profile:manage",
    "org:sys_profile:delete",
    "org:sys_memberships:read",
    "org:sys_memberships:manage",
    "org:sys_domains:read",
    "org:sys_domains:manage",
];

/// The permissions of the `org:member` role.
const MEMBER_PERMISSIONS: [&str; 1] = ["org:sys_memberships:read"];

/// The organizations, by id.
pub(super) struct Organizations {
    /// Organization objects by id.
    by_id: BTreeMap<String, Value>,
}

impl Organizations {
    /// The organizations the users of `store` belong to, as described in the module doc.
    pub(super) fn derive(store: &Store) -> Self {
        // Organization id → (earliest joining instant, that member's id).
        let mut founders: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
        for record in store.records() {
            let joined = record.created_at.unwrap_or(SEED_NOW_MS);
            for org in &record.organization_ids {
                let candidate = (joined, record.id.as_str());
                founders
                    .entry(org.as_str())
                    .and_modify(|founder| *founder = (*founder).min(candidate))
                    .or_insert(candidate);
            }
        }
        let by_id = founders
            .into_iter()
            .enumerate()
            .map(|(n, (id, (joined, founder)))| {
                (id.to_owned(), organization(n, id, joined - DAY_MS, founder))
            })
            .collect();
        Self { by_id }
    }

    /// The organization whose id, else slug, is `id_or_slug`.
    pub(super) fn find(&self, id_or_slug: &str) -> Option<&Value> {
        self.by_id.get(id_or_slug).or_else(|| {
            self.by_id
                .values()
                .find(|org| org["slug"].as_str() == Some(id_or_slug))
        })
    }

    /// Every organization, by id.
    pub(super) fn all(&self) -> impl Iterator<Item = &Value> {
        self.by_id.values()
    }

    /// `PATCH /v1/organizations/{organization_id}`: name, slug, limits and metadata (each
    /// metadata object given replaces the stored one).
    pub(super) fn update(&mut self, id: &str, bytes: &[u8]) -> Result<Value, Rejection> {
        let body = Body::parse(bytes, UPDATE_PARAMS)?;
        let mut changes: Vec<(&str, Value)> = Vec::new();
        if let Some(name) = body.string("name")? {
            if name.trim().is_empty() {
                return Err(Rejection::value("name", "name must not be empty"));
            }
            changes.push(("name", Value::String(name)));
        }
        if let Some(slug) = body.string("slug")? {
            let valid = !slug.is_empty()
                && slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                let long = "slug must contain only lowercase letters, digits and dashes";
                return Err(Rejection::value("slug", long));
            }
            let taken = self
                .by_id
                .iter()
                .any(|(other, org)| other != id && org["slug"].as_str() == Some(&slug));
            if taken {
                let long = "This slug is already taken by another organization";
                return Err(Rejection::taken("slug", long));
            }
            changes.push(("slug", Value::String(slug)));
        }
        if let Some(Some(max)) = body.nullable_int("max_allowed_memberships")? {
            if max < 0 {
                let long = "max_allowed_memberships must be 0 (unlimited) or more";
                return Err(Rejection::value("max_allowed_memberships", long));
            }
            changes.push(("max_allowed_memberships", Value::from(max)));
        }
        if let Some(flag) = body.bool("admin_delete_enabled")? {
            changes.push(("admin_delete_enabled", Value::Bool(flag)));
        }
        for name in METADATA {
            if let Some(metadata) = body.object(name)? {
                changes.push((name, Value::Object(metadata.clone())));
            }
        }
        self.write(id, |org| {
            for (name, value) in changes {
                set_field(org, name, value);
            }
        })
    }

    /// `PATCH /v1/organizations/{organization_id}/metadata`: deep merge, as for users.
    pub(super) fn merge_metadata(&mut self, id: &str, bytes: &[u8]) -> Result<Value, Rejection> {
        let body = Body::parse(bytes, &METADATA)?;
        let patches = metadata_patches(&body, &METADATA)?;
        self.write(id, |org| apply_patches(org, &patches))
    }

    /// `PUT /v1/organizations/{organization_id}/metadata`: replace each field given.
    pub(super) fn replace_metadata(&mut self, id: &str, bytes: &[u8]) -> Result<Value, Rejection> {
        let body = Body::parse(bytes, &METADATA)?;
        let replacements = metadata_replacements(&body, &METADATA)?;
        self.write(id, |org| {
            for (name, value) in replacements {
                set_field(org, name, value);
            }
        })
    }

    /// Applies `change` to the organization `id` (an id: writes do not take slugs), bumps its
    /// `updated_at` and answers it.
    fn write(&mut self, id: &str, change: impl FnOnce(&mut Value)) -> Result<Value, Rejection> {
        let org = self.by_id.get_mut(id).ok_or_else(|| not_found(id))?;
        change(org);
        touch(org);
        Ok(org.clone())
    }
}

/// The 404 for an unknown organization id or slug.
pub(super) fn not_found(id_or_slug: &str) -> Rejection {
    Rejection::not_found(format!(
        "No organization was found with id or slug {id_or_slug}"
    ))
}

/// `GET /v1/organizations/{organization_id}`: the organization, with `members_count` when
/// `include_members_count=true`.
pub(super) fn get(
    orgs: &Organizations,
    users: &Store,
    id_or_slug: &str,
    pairs: &[(String, String)],
) -> Result<Value, Rejection> {
    let org = orgs.find(id_or_slug).ok_or_else(|| not_found(id_or_slug))?;
    let mut org = org.clone();
    let wants_count = pairs
        .iter()
        .any(|(key, value)| key == "include_members_count" && value == "true");
    if wants_count {
        let id = org["id"].as_str().unwrap_or_default();
        let count = members(users, id).count();
        set_field(&mut org, "members_count", Value::from(count));
    }
    Ok(org)
}

/// `GET /v1/organizations/{organization_id}/memberships`: Clerk's paginated envelope
/// `{"data":[…],"total_count":N}`, newest first unless `order_by` says otherwise; `limit`
/// (1..=500, default 10), `offset`, and the `user_id` and `role` filters (repeatable).
pub(super) fn memberships(
    orgs: &Organizations,
    users: &Store,
    id: &str,
    pairs: &[(String, String)],
) -> Result<Value, Rejection> {
    let org = orgs.find(id).ok_or_else(|| not_found(id))?;
    let org_id = org["id"].as_str().unwrap_or_default();
    let founder = org["created_by"].as_str().unwrap_or_default();
    let page = parse_memberships(pairs)
        .map_err(|error| Rejection::value(error.param, error.long_message))?;
    let role_of = |record: &Record| {
        if record.id == founder {
            "org:admin"
        } else {
            "org:member"
        }
    };
    let mut found: Vec<&Record> = members(users, org_id)
        .filter(|record| page.user_ids.is_empty() || page.user_ids.contains(&record.id))
        .filter(|record| page.roles.is_empty() || page.roles.iter().any(|r| r == role_of(record)))
        .collect();
    found.sort_unstable_by(|a, b| a.compare(b, page.order));
    let total = found.len();
    let data: Vec<Value> = found
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .map(|record| membership(org, record, role_of(record)))
        .collect();
    Ok(json!({"data": data, "total_count": total}))
}

/// The members of `org_id`.
fn members<'a>(users: &'a Store, org_id: &'a str) -> impl Iterator<Item = &'a Record> {
    users
        .records()
        .filter(move |record| record.organization_ids.iter().any(|org| org == org_id))
}

/// The parameters of a memberships list.
struct MembershipsPage {
    /// Page size.
    limit: usize,
    /// Members skipped.
    offset: usize,
    /// Sort order (the members' user fields; `created_at` is when they joined).
    order: OrderBy,
    /// `user_id` filter values.
    user_ids: Vec<String>,
    /// `role` filter values.
    roles: Vec<String>,
}

/// Parses the memberships list parameters; unknown ones are ignored.
fn parse_memberships(pairs: &[(String, String)]) -> Result<MembershipsPage, ParamError> {
    let mut page = MembershipsPage {
        limit: 10,
        offset: 0,
        order: OrderBy {
            field: OrderField::CreatedAt,
            descending: true,
        },
        user_ids: Vec::new(),
        roles: Vec::new(),
    };
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => page.limit = parse_page_limit(value)?,
            "offset" => {
                page.offset = value.parse().map_err(|_| ParamError {
                    param: "offset",
                    long_message: "offset must be a non-negative integer".to_owned(),
                })?;
            }
            "order_by" => page.order = parse_order(value)?,
            "user_id" => page.user_ids.push(value.clone()),
            "role" => page.roles.push(value.clone()),
            _ => {}
        }
    }
    Ok(page)
}

/// The `n`th derived organization `id`, created at `created_at` by `founder`.
fn organization(n: usize, id: &str, created_at: i64, founder: &str) -> Value {
    let hash = fnv1a(id.as_bytes());
    let company = COMPANIES[(hash % COMPANIES.len() as u64) as usize];
    let suffix = SUFFIXES[((hash >> 16) % SUFFIXES.len() as u64) as usize];
    let name = format!("{company} {suffix}");
    let slug = format!("{}-{n}", name.to_lowercase().replace(' ', "-"));
    json!({
        "object": "organization",
        "id": id,
        "name": name,
        "slug": slug,
        "image_url": "https://img.example.com/default-organization.png",
        "has_image": false,
        "max_allowed_memberships": 0,
        "admin_delete_enabled": true,
        "public_metadata": {"region": REGIONS[((hash >> 32) % REGIONS.len() as u64) as usize]},
        "private_metadata": {"crm_account": format!("crm_{:06}", hash % 1_000_000)},
        "created_by": founder,
        "created_at": created_at,
        "updated_at": created_at,
    })
}

/// The membership of `record` in `org`: its id and private metadata derive from both ids.
fn membership(org: &Value, record: &Record, role: &str) -> Value {
    let org_id = org["id"].as_str().unwrap_or_default();
    let pair = format!("{org_id}/{}", record.id);
    let hash = fnv1a(pair.as_bytes());
    let joined = record
        .created_at
        .or_else(|| org["created_at"].as_i64())
        .unwrap_or(SEED_NOW_MS);
    let (role_name, permissions): (&str, &[&str]) = if role == "org:admin" {
        ("Admin", &ADMIN_PERMISSIONS)
    } else {
        ("Member", &MEMBER_PERMISSIONS)
    };
    let user = &record.user;
    let image_url = user["image_url"]
        .as_str()
        .unwrap_or("https://img.example.com/default-avatar.png");
    let identifier = record
        .primary_email
        .clone()
        .or_else(|| record.username.clone())
        .or_else(|| record.primary_phone.clone());
    json!({
        "object": "organization_membership",
        "id": clerk_id(&mut fastrand::Rng::with_seed(hash), "orgmem_"),
        "public_metadata": {},
        "private_metadata": {"cost_center": format!("cc-{:03}", hash % 1000)},
        "role": role,
        "role_name": role_name,
        "permissions": permissions,
        "created_at": joined,
        "updated_at": joined,
        "organization": org,
        "public_user_data": {
            "user_id": record.id,
            "first_name": record.first_name,
            "last_name": record.last_name,
            "profile_image_url": image_url,
            "image_url": image_url,
            "has_image": user["has_image"].as_bool().unwrap_or(false),
            "identifier": identifier,
            "username": record.username,
        },
    })
}

/// 64-bit FNV-1a: a hash that stays the same across Rust versions, for derived values.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
