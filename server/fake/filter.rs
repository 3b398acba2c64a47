//! The query-string grammar of `GET /v1/users` and `/v1/users/count`: parsing and validating
//! `limit`, `offset`, `order_by` and the filters into a [`UserFilter`] and a [`Page`], with
//! Clerk's 422 errors and its `limit > 500` quirk (`store.rs` matches records against them).

use std::collections::HashSet;

/// Clerk's largest page.
const MAX_LIMIT: u64 = 500;
/// The page size when `limit` is absent, and (a faithful quirk) when it exceeds 500.
const DEFAULT_LIMIT: usize = 10;
/// Clerk's cap on the values of one exact-match array filter.
const MAX_FILTER_VALUES: usize = 100;

/// A sortable user field of `order_by`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum OrderField {
    /// `created_at`.
    CreatedAt,
    /// `updated_at`.
    UpdatedAt,
    /// `email_address` (the primary one).
    EmailAddress,
    /// `web3wallet` (the first one).
    Web3Wallet,
    /// `first_name`.
    FirstName,
    /// `last_name`.
    LastName,
    /// `phone_number` (the primary one).
    PhoneNumber,
    /// `username`.
    Username,
    /// `last_active_at`.
    LastActiveAt,
    /// `last_sign_in_at`.
    LastSignInAt,
}

impl OrderField {
    /// Every field with its `order_by` name; the index is the field's discriminant.
    pub(super) const ALL: [(&'static str, OrderField); 10] = [
        ("created_at", Self::CreatedAt),
        ("updated_at", Self::UpdatedAt),
        ("email_address", Self::EmailAddress),
        ("web3wallet", Self::Web3Wallet),
        ("first_name", Self::FirstName),
        ("last_name", Self::LastName),
        ("phone_number", Self::PhoneNumber),
        ("username", Self::Username),
        ("last_active_at", Self::LastActiveAt),
        ("last_sign_in_at", Self::LastSignInAt),
    ];
}

/// A parsed `order_by`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct OrderBy {
    /// The field sorted on.
    pub(super) field: OrderField,
    /// `-` prefix: largest first.
    pub(super) descending: bool,
}

impl OrderBy {
    /// Parses `[+|-]field`; no prefix means ascending.
    fn parse(value: &str) -> Option<Self> {
        let (descending, name) = match value.as_bytes().first() {
            Some(b'-') => (true, &value[1..]),
            Some(b'+') => (false, &value[1..]),
            _ => (false, value),
        };
        let (_, field) = OrderField::ALL.iter().find(|(known, _)| *known == name)?;
        Some(Self {
            field: *field,
            descending,
        })
    }
}

/// Which slice of the ordered, filtered users a list call returns.
#[derive(Debug)]
pub(super) struct Page {
    /// Page size, 1..=500.
    pub(super) limit: usize,
    /// Matching users skipped.
    pub(super) offset: usize,
    /// Sort order.
    pub(super) order: OrderBy,
}

/// An exact-match array filter of the users endpoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum ExactField {
    /// `user_id`.
    UserId,
    /// `email_address`.
    EmailAddress,
    /// `phone_number`.
    PhoneNumber,
    /// `external_id`.
    ExternalId,
    /// `username`.
    Username,
    /// `web3_wallet`.
    Web3Wallet,
    /// `organization_id`.
    OrganizationId,
}

impl ExactField {
    /// Every exact filter with its parameter name.
    const ALL: [(&'static str, ExactField); 7] = [
        ("user_id", Self::UserId),
        ("email_address", Self::EmailAddress),
        ("phone_number", Self::PhoneNumber),
        ("external_id", Self::ExternalId),
        ("username", Self::Username),
        ("web3_wallet", Self::Web3Wallet),
        ("organization_id", Self::OrganizationId),
    ];
}

/// The filters of one list or count call; every present filter must match (AND), any value
/// of one exact filter may match (OR).
#[derive(Debug, Default)]
pub(super) struct UserFilter {
    /// Exact filters given, each with its accepted values.
    pub(super) exact: Vec<(ExactField, HashSet<String>)>,
    /// `query`, lowercased.
    pub(super) query: Option<String>,
    /// `email_address_query`, lowercased.
    pub(super) email_query: Option<String>,
    /// `phone_number_query`, lowercased.
    pub(super) phone_query: Option<String>,
    /// `username_query`, lowercased.
    pub(super) username_query: Option<String>,
    /// `name_query`, lowercased.
    pub(super) name_query: Option<String>,
    /// `banned`.
    pub(super) banned: Option<bool>,
    /// `created_at_before`, Unix ms, exclusive.
    pub(super) created_before: Option<i64>,
    /// `created_at_after`, Unix ms, exclusive.
    pub(super) created_after: Option<i64>,
    /// `last_active_at_before`, Unix ms, exclusive.
    pub(super) active_before: Option<i64>,
    /// `last_active_at_after`, Unix ms, exclusive.
    pub(super) active_after: Option<i64>,
}

/// A rejected parameter, answered 422 `form_param_value_invalid`.
#[derive(Debug, PartialEq)]
pub(super) struct ParamError {
    /// The parameter's name, sent as `meta.param_name`.
    pub(super) param: &'static str,
    /// Why, sent as `long_message`.
    pub(super) long_message: String,
}

impl ParamError {
    /// An error on `param`.
    fn new(param: &'static str, long_message: impl Into<String>) -> Self {
        Self {
            param,
            long_message: long_message.into(),
        }
    }
}

/// Parses the parameters of `GET /v1/users`; unknown parameters are ignored.
pub(super) fn parse_list(pairs: &[(String, String)]) -> Result<(UserFilter, Page), ParamError> {
    let mut page = Page {
        limit: DEFAULT_LIMIT,
        offset: 0,
        order: OrderBy {
            field: OrderField::CreatedAt,
            descending: true,
        },
    };
    for (key, value) in pairs {
        match key.as_str() {
            "limit" => page.limit = parse_limit(value)?,
            "offset" => {
                let offset = value.parse::<u64>().map_err(|_| {
                    ParamError::new("offset", "offset must be a non-negative integer")
                })?;
                page.offset = usize::try_from(offset).unwrap_or(usize::MAX);
            }
            "order_by" => page.order = parse_order(value)?,
            _ => {}
        }
    }
    Ok((parse_count(pairs)?, page))
}

/// `order_by`: `[+|-]field`.
pub(super) fn parse_order(value: &str) -> Result<OrderBy, ParamError> {
    OrderBy::parse(value)
        .ok_or_else(|| ParamError::new("order_by", format!("order_by {value:?} is not supported")))
}

/// `limit` of the paginated lists (memberships): 1..=500, anything else is a 422.
pub(super) fn parse_page_limit(value: &str) -> Result<usize, ParamError> {
    match value.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIMIT as usize).contains(&limit) => Ok(limit),
        _ => Err(ParamError::new(
            "limit",
            "limit must be an integer between 1 and 500",
        )),
    }
}

/// `limit`: 1..=500; larger values silently mean 10, as Clerk has been seen to do.
fn parse_limit(value: &str) -> Result<usize, ParamError> {
    let invalid = || ParamError::new("limit", "limit must be an integer between 1 and 500");
    match value.parse::<u64>() {
        Ok(0) | Err(_) => Err(invalid()),
        Ok(limit) if limit > MAX_LIMIT => Ok(DEFAULT_LIMIT),
        Ok(limit) => usize::try_from(limit).map_err(|_| invalid()),
    }
}

/// Parses the filters shared by list and count (count ignores `limit`, `offset`, `order_by`).
pub(super) fn parse_count(pairs: &[(String, String)]) -> Result<UserFilter, ParamError> {
    let mut filter = UserFilter::default();
    for (key, value) in pairs {
        if let Some(&(_, field)) = ExactField::ALL.iter().find(|(name, _)| name == key) {
            match filter.exact.iter_mut().find(|(f, _)| *f == field) {
                Some((_, values)) => {
                    values.insert(value.clone());
                }
                None => filter.exact.push((field, HashSet::from([value.clone()]))),
            }
            continue;
        }
        let text = || Some(value.to_lowercase()).filter(|v| !v.is_empty());
        match key.as_str() {
            "query" => filter.query = text(),
            "email_address_query" => filter.email_query = text(),
            "phone_number_query" => filter.phone_query = text(),
            "username_query" => filter.username_query = text(),
            "name_query" => filter.name_query = text(),
            "banned" => filter.banned = Some(parse_bool(value)?),
            "created_at_before" => {
                filter.created_before = Some(parse_ms("created_at_before", value)?)
            }
            "created_at_after" => filter.created_after = Some(parse_ms("created_at_after", value)?),
            "last_active_at_before" => {
                filter.active_before = Some(parse_ms("last_active_at_before", value)?);
            }
            "last_active_at_after" => {
                filter.active_after = Some(parse_ms("last_active_at_after", value)?);
            }
            _ => {}
        }
    }
    for (name, field) in ExactField::ALL {
        let given = pairs.iter().filter(|(key, _)| key == name).count();
        if given > MAX_FILTER_VALUES && filter.exact.iter().any(|(f, _)| *f == field) {
            let why = format!("{name} accepts at most {MAX_FILTER_VALUES} values, got {given}");
            return Err(ParamError::new(name, why));
        }
    }
    Ok(filter)
}

/// `banned`: `true` or `false`.
fn parse_bool(value: &str) -> Result<bool, ParamError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ParamError::new("banned", "banned must be true or false")),
    }
}

/// A Unix-milliseconds timestamp parameter.
fn parse_ms(param: &'static str, value: &str) -> Result<i64, ParamError> {
    value
        .parse()
        .map_err(|_| ParamError::new(param, format!("{param} must be a Unix timestamp in ms")))
}

impl UserFilter {
    /// True when no filter was given: every user matches.
    pub(super) fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && [
                &self.query,
                &self.email_query,
                &self.phone_query,
                &self.username_query,
                &self.name_query,
            ]
            .iter()
            .all(|q| q.is_none())
            && self.banned.is_none()
            && [
                self.created_before,
                self.created_after,
                self.active_before,
                self.active_after,
            ]
            .iter()
            .all(Option::is_none)
    }

    /// The `user_id` values, if given: the store then looks them up instead of scanning.
    pub(super) fn user_ids(&self) -> Option<&HashSet<String>> {
        let (_, ids) = self.exact.iter().find(|(f, _)| *f == ExactField::UserId)?;
        Some(ids)
    }
}
