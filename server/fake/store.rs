//! The fake's users: each Clerk User object kept verbatim next to a small parsed [`Record`]
//! of the fields that filters and sorting need, plus lazily built sort orders.
//!
//! Parsing once at insert time and caching each `order_by` keeps a page out of 100,000 users
//! to a few milliseconds; any write drops the cached orders.
//!
//! Users are served with their fields in Clerk's order ([`UserJson`]), not sorted as
//! `serde_json::Value` keeps them, so that a broker that re-serialized Clerk's answers would
//! show it.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ops::Deref;
use std::sync::{LazyLock, OnceLock};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::filter::{ExactField, OrderBy, OrderField, Page, UserFilter};

/// A stored user: the JSON object as given, serialized with its fields in Clerk's order
/// (as Clerk's answers list them; fields it does not know follow, sorted). Reads as the
/// `Value` it wraps.
pub(super) struct UserJson(Value);

impl Deref for UserJson {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Serialize for UserJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        InClerkOrder(&self.0).serialize(serializer)
    }
}

/// Field names in the order Clerk's answers give them, for users and, at the front, for the
/// email addresses, phone numbers and verifications inside them.
const CLERK_ORDER: [&str; 55] = [
    "id",
    "object",
    "email_address",
    "phone_number",
    "reserved_for_second_factor",
    "default_second_factor",
    "reserved",
    "status",
    "strategy",
    "attempts",
    "expire_at",
    "verification",
    "linked_to",
    "username",
    "first_name",
    "last_name",
    "image_url",
    "has_image",
    "primary_email_address_id",
    "primary_phone_number_id",
    "primary_web3_wallet_id",
    "password_enabled",
    "two_factor_enabled",
    "totp_enabled",
    "backup_code_enabled",
    "email_addresses",
    "phone_numbers",
    "web3_wallets",
    "passkeys",
    "external_accounts",
    "saml_accounts",
    "enterprise_accounts",
    "public_metadata",
    "private_metadata",
    "unsafe_metadata",
    "external_id",
    "last_sign_in_at",
    "banned",
    "locked",
    "lockout_expires_in_seconds",
    "verification_attempts_remaining",
    "created_at",
    "updated_at",
    "delete_self_enabled",
    "create_organization_enabled",
    "create_organizations_limit",
    "last_active_at",
    "mfa_enabled_at",
    "mfa_disabled_at",
    "legal_accepted_at",
    "profile_image_url",
    "organization_memberships",
    "matches_sso_connection",
    "backup_codes",
    "requires_verification",
];

/// A field's place in [`CLERK_ORDER`]; unknown fields come after every known one.
fn clerk_rank(field: &str) -> usize {
    static RANKS: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
        CLERK_ORDER
            .iter()
            .enumerate()
            .map(|(rank, field)| (*field, rank))
            .collect()
    });
    RANKS.get(field).copied().unwrap_or(CLERK_ORDER.len())
}

/// A JSON value serialized with every object's fields in Clerk's order.
struct InClerkOrder<'a>(&'a Value);

impl Serialize for InClerkOrder<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(object) => {
                let mut fields: Vec<(&String, &Value)> = object.iter().collect();
                // Stable: unknown fields keep their sorted order.
                fields.sort_by_key(|(field, _)| clerk_rank(field));
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (field, value) in fields {
                    map.serialize_entry(field, &InClerkOrder(value))?;
                }
                map.end()
            }
            Value::Array(items) => serializer.collect_seq(items.iter().map(InClerkOrder)),
            other => other.serialize(serializer),
        }
    }
}

/// One stored user: the JSON served verbatim and the fields the fake filters and sorts on.
pub(super) struct Record {
    /// The user as given, served with its fields in Clerk's order.
    pub(super) user: UserJson,
    /// `id`.
    pub(super) id: String,
    /// Every `email_addresses[].email_address`.
    pub(super) emails: Vec<String>,
    /// Every `phone_numbers[].phone_number`.
    pub(super) phones: Vec<String>,
    /// Every `web3_wallets[].web3_wallet`.
    pub(super) web3_wallets: Vec<String>,
    /// `public_metadata.organization_ids`: the fake's stand-in for organization memberships.
    pub(super) organization_ids: Vec<String>,
    /// `username`.
    pub(super) username: Option<String>,
    /// `external_id`.
    pub(super) external_id: Option<String>,
    /// `first_name`.
    pub(super) first_name: Option<String>,
    /// `last_name`.
    pub(super) last_name: Option<String>,
    /// The primary (else first) email address: the `email_address` sort key.
    pub(super) primary_email: Option<String>,
    /// The primary (else first) phone number: the `phone_number` sort key.
    pub(super) primary_phone: Option<String>,
    /// `banned`.
    pub(super) banned: bool,
    /// `created_at`, Unix ms.
    pub(super) created_at: Option<i64>,
    /// `updated_at`, Unix ms.
    pub(super) updated_at: Option<i64>,
    /// `last_active_at`, Unix ms.
    pub(super) last_active_at: Option<i64>,
    /// `last_sign_in_at`, Unix ms.
    pub(super) last_sign_in_at: Option<i64>,
    /// Lowercased emails, NUL-separated, for `email_address_query`.
    pub(super) email_text: String,
    /// Lowercased phone numbers, NUL-separated, for `phone_number_query`.
    pub(super) phone_text: String,
    /// Lowercased "first last", for `name_query`.
    pub(super) name_text: String,
    /// Lowercased username, for `username_query`.
    pub(super) username_text: String,
    /// Lowercased id, external id, emails, phones, username and names, for `query`.
    pub(super) any_text: String,
}

impl Record {
    /// Parses the indexed fields of `user`; `None` if it has no string `id`.
    fn parse(user: Value) -> Option<Self> {
        let id = user.get("id")?.as_str()?.to_owned();
        let text = |key: &str| user.get(key).and_then(Value::as_str).map(str::to_owned);
        let millis = |key: &str| user.get(key).and_then(Value::as_i64);
        let emails = strings_in(&user, "email_addresses", "email_address");
        let phones = strings_in(&user, "phone_numbers", "phone_number");
        let primary_email = primary(&user, "email_addresses", "email_address", &emails);
        let primary_phone = primary(&user, "phone_numbers", "phone_number", &phones);
        let organization_ids = user
            .pointer("/public_metadata/organization_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_owned))
            .map_or_else(Vec::new, Iterator::collect);
        let (username, external_id) = (text("username"), text("external_id"));
        let (first_name, last_name) = (text("first_name"), text("last_name"));
        let name_text = [first_name.as_deref(), last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let email_text = emails.join("\0").to_lowercase();
        let phone_text = phones.join("\0").to_lowercase();
        let username_text = username.as_deref().unwrap_or_default().to_lowercase();
        let any_text = [
            id.to_lowercase().as_str(),
            &external_id.as_deref().unwrap_or_default().to_lowercase(),
            &email_text,
            &phone_text,
            &username_text,
            &name_text,
        ]
        .join("\0");
        Some(Self {
            web3_wallets: strings_in(&user, "web3_wallets", "web3_wallet"),
            banned: user.get("banned").and_then(Value::as_bool).unwrap_or(false),
            created_at: millis("created_at"),
            updated_at: millis("updated_at"),
            last_active_at: millis("last_active_at"),
            last_sign_in_at: millis("last_sign_in_at"),
            id,
            emails,
            phones,
            organization_ids,
            username,
            external_id,
            first_name,
            last_name,
            primary_email,
            primary_phone,
            email_text,
            phone_text,
            name_text,
            username_text,
            any_text,
            user: UserJson(user),
        })
    }

    /// Orders two records by `order`: nulls last in both directions, ties by id ascending.
    pub(super) fn compare(&self, other: &Self, order: OrderBy) -> Ordering {
        let desc = order.descending;
        let by_key = match order.field {
            OrderField::CreatedAt => nulls_last(self.created_at, other.created_at, desc),
            OrderField::UpdatedAt => nulls_last(self.updated_at, other.updated_at, desc),
            OrderField::LastActiveAt => nulls_last(self.last_active_at, other.last_active_at, desc),
            OrderField::LastSignInAt => {
                nulls_last(self.last_sign_in_at, other.last_sign_in_at, desc)
            }
            OrderField::EmailAddress => nulls_last(
                self.primary_email.as_deref(),
                other.primary_email.as_deref(),
                desc,
            ),
            OrderField::PhoneNumber => nulls_last(
                self.primary_phone.as_deref(),
                other.primary_phone.as_deref(),
                desc,
            ),
            OrderField::Web3Wallet => {
                nulls_last(self.web3_wallets.first(), other.web3_wallets.first(), desc)
            }
            OrderField::FirstName => nulls_last(
                self.first_name.as_deref(),
                other.first_name.as_deref(),
                desc,
            ),
            OrderField::LastName => {
                nulls_last(self.last_name.as_deref(), other.last_name.as_deref(), desc)
            }
            OrderField::Username => {
                nulls_last(self.username.as_deref(), other.username.as_deref(), desc)
            }
        };
        by_key.then_with(|| self.id.cmp(&other.id))
    }

    /// Whether this record passes every filter of `filter`.
    pub(super) fn matches(&self, filter: &UserFilter) -> bool {
        filter
            .exact
            .iter()
            .all(|(field, values)| exact_match(self, *field, values))
            && contains(&self.any_text, &filter.query)
            && contains(&self.email_text, &filter.email_query)
            && contains(&self.phone_text, &filter.phone_query)
            && contains(&self.username_text, &filter.username_query)
            && contains(&self.name_text, &filter.name_query)
            && filter.banned.is_none_or(|banned| self.banned == banned)
            && before(self.created_at, filter.created_before)
            && after(self.created_at, filter.created_after)
            && before(self.last_active_at, filter.active_before)
            && after(self.last_active_at, filter.active_after)
    }
}

/// Whether any value of `field` in `record` is one of `values`.
fn exact_match(record: &Record, field: ExactField, values: &HashSet<String>) -> bool {
    let any = |items: &[String]| items.iter().any(|item| values.contains(item));
    match field {
        ExactField::UserId => values.contains(&record.id),
        ExactField::EmailAddress => any(&record.emails),
        ExactField::PhoneNumber => any(&record.phones),
        ExactField::Web3Wallet => any(&record.web3_wallets),
        // A fake's simplification: Clerk matches real organization memberships; the fake
        // matches the string array `public_metadata.organization_ids` (set by the seed).
        ExactField::OrganizationId => any(&record.organization_ids),
        ExactField::ExternalId => record
            .external_id
            .as_ref()
            .is_some_and(|v| values.contains(v)),
        ExactField::Username => record.username.as_ref().is_some_and(|v| values.contains(v)),
    }
}

/// Case-insensitive substring match (`needle` is already lowercased); no needle matches all.
fn contains(haystack: &str, needle: &Option<String>) -> bool {
    needle
        .as_deref()
        .is_none_or(|needle| haystack.contains(needle))
}

/// `value < bound` when bounded; a missing value never passes a bound.
fn before(value: Option<i64>, bound: Option<i64>) -> bool {
    bound.is_none_or(|bound| value.is_some_and(|value| value < bound))
}

/// `value > bound` when bounded; a missing value never passes a bound.
fn after(value: Option<i64>, bound: Option<i64>) -> bool {
    bound.is_none_or(|bound| value.is_some_and(|value| value > bound))
}

/// Compares optional keys with `None` after every value, whatever the direction.
fn nulls_last<T: Ord>(a: Option<T>, b: Option<T>, descending: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) if descending => b.cmp(&a),
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// The string `field` of every object in the array `user[array]`.
fn strings_in(user: &Value, array: &str, field: &str) -> Vec<String> {
    let items = user.get(array).and_then(Value::as_array);
    items
        .into_iter()
        .flatten()
        .filter_map(|item| item.get(field)?.as_str().map(str::to_owned))
        .collect()
}

/// The `field` of the item of `user[array]` named by `primary_<singular>_id`, else the first.
fn primary(user: &Value, array: &str, field: &str, all: &[String]) -> Option<String> {
    let primary_id = user
        .get(format!("primary_{field}_id"))
        .and_then(Value::as_str);
    let found = primary_id.and_then(|wanted| {
        let items = user.get(array)?.as_array()?;
        let item = items
            .iter()
            .find(|item| item.get("id").and_then(Value::as_str) == Some(wanted))?;
        item.get(field)?.as_str().map(str::to_owned)
    });
    found.or_else(|| all.first().cloned())
}

/// The number of distinct `order_by` values: 10 fields, two directions.
const ORDERS: usize = OrderField::ALL.len() * 2;

/// All users, densely stored, with an id index and cached sort orders.
pub(super) struct Store {
    /// The users, in no particular order.
    records: Vec<Record>,
    /// `id` → position in `records`.
    by_id: HashMap<String, usize>,
    /// Positions of every record sorted by each `order_by`, built on first use.
    orders: [OnceLock<Vec<u32>>; ORDERS],
}

impl Store {
    /// A store holding `users`; those without a string `id` are skipped, later duplicates win.
    pub(super) fn new(users: Vec<Value>) -> Self {
        let mut store = Self {
            records: Vec::with_capacity(users.len()),
            by_id: HashMap::with_capacity(users.len()),
            orders: std::array::from_fn(|_| OnceLock::new()),
        };
        for user in users {
            if !store.upsert(user) {
                tracing::warn!("fake Clerk skipped a seed user without a string id");
            }
        }
        store
    }

    /// Inserts or replaces `user` by id; false (and nothing stored) without a string `id`.
    pub(super) fn upsert(&mut self, user: Value) -> bool {
        let Some(record) = Record::parse(user) else {
            return false;
        };
        match self.by_id.get(&record.id) {
            Some(&at) => self.records[at] = record,
            None => {
                self.by_id.insert(record.id.clone(), self.records.len());
                self.records.push(record);
            }
        }
        self.orders = std::array::from_fn(|_| OnceLock::new());
        true
    }

    /// Removes the user `id`; false if absent.
    pub(super) fn delete(&mut self, id: &str) -> bool {
        let Some(at) = self.by_id.remove(id) else {
            return false;
        };
        self.records.swap_remove(at);
        if let Some(moved) = self.records.get(at) {
            self.by_id.insert(moved.id.clone(), at);
        }
        self.orders = std::array::from_fn(|_| OnceLock::new());
        true
    }

    /// The user `id`.
    pub(super) fn get(&self, id: &str) -> Option<&UserJson> {
        self.by_id.get(id).map(|&at| &self.records[at].user)
    }

    /// How many users are stored.
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Every stored user, in no particular order.
    pub(super) fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter()
    }

    /// Applies `change` to a copy of the user `id` and stores the result (re-indexed), unless
    /// `change` fails; `None` if there is no such user. `change` also sees the store, e.g. to
    /// check that a username is free. It must keep the `id`.
    pub(super) fn update<E>(
        &mut self,
        id: &str,
        change: impl FnOnce(&Self, &mut Value) -> Result<(), E>,
    ) -> Option<Result<&UserJson, E>> {
        let mut user = Value::clone(self.get(id)?);
        if let Err(error) = change(self, &mut user) {
            return Some(Err(error));
        }
        self.upsert(user);
        self.get(id).map(Ok)
    }

    /// One page of the users matching `filter`, in `page.order`.
    pub(super) fn list(&self, filter: &UserFilter, page: &Page) -> Vec<&UserJson> {
        if let Some(ids) = filter.user_ids() {
            return self.list_by_ids(ids, filter, page);
        }
        let order = self.order(page.order);
        let matching = order.iter().map(|&at| &self.records[at as usize]);
        let matching: Box<dyn Iterator<Item = &Record>> = if filter.is_empty() {
            Box::new(matching)
        } else {
            Box::new(matching.filter(|record| record.matches(filter)))
        };
        matching
            .skip(page.offset)
            .take(page.limit)
            .map(|record| &record.user)
            .collect()
    }

    /// How many users match `filter`.
    pub(super) fn count(&self, filter: &UserFilter) -> usize {
        if let Some(ids) = filter.user_ids() {
            return self.by_ids(ids, filter).len();
        }
        if filter.is_empty() {
            return self.records.len();
        }
        self.records.iter().filter(|r| r.matches(filter)).count()
    }

    /// The page when `user_id` narrows the candidates to at most 100: no full scan.
    fn list_by_ids(
        &self,
        ids: &HashSet<String>,
        filter: &UserFilter,
        page: &Page,
    ) -> Vec<&UserJson> {
        let mut found = self.by_ids(ids, filter);
        found.sort_unstable_by(|a, b| a.compare(b, page.order));
        let found = found.into_iter().skip(page.offset).take(page.limit);
        found.map(|record| &record.user).collect()
    }

    /// The users among `ids` matching `filter`, unordered.
    fn by_ids(&self, ids: &HashSet<String>, filter: &UserFilter) -> Vec<&Record> {
        let records = ids.iter().filter_map(|id| self.by_id.get(id));
        let records = records.map(|&at| &self.records[at]);
        records.filter(|record| record.matches(filter)).collect()
    }

    /// Positions of all records in `order`, sorted on first use.
    fn order(&self, order: OrderBy) -> &[u32] {
        let slot = order.field as usize * 2 + usize::from(order.descending);
        self.orders[slot].get_or_init(|| {
            let mut positions: Vec<u32> = (0..self.records.len() as u32).collect();
            positions.sort_unstable_by(|&a, &b| {
                self.records[a as usize].compare(&self.records[b as usize], order)
            });
            positions
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn users_are_served_in_clerks_field_order() {
        let user = json!({
            "updated_at": 2, "id": "user_1", "zeta": 1, "alpha": 0, "object": "user",
            "email_addresses": [{"verification": {"strategy": "email_code", "status": "verified"},
                "email_address": "a@example.com", "object": "email_address", "id": "idn_1"}],
            "private_metadata": null, "first_name": "Ada"
        });
        let text = serde_json::to_string(&UserJson(user.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"id":"user_1","object":"user","first_name":"Ada","email_addresses":[{"id":"idn_1","object":"email_address","email_address":"a@example.com","verification":{"status":"verified","strategy":"email_code"}}],"private_metadata":null,"updated_at":2,"alpha":0,"zeta":1}"#
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), user);
    }
}
