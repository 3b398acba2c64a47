//! The list and count filters of `GET /v1/users`, as domain types.
//!
//! Values here are already validated (see `grpc::convert`); this module only
//! knows how to write them as Clerk query parameters.

use std::{fmt, str::FromStr};

/// Most values Clerk accepts in one exact-match array filter.
pub const MAX_FILTER_VALUES: usize = 100;
/// Largest page Clerk's list endpoint returns.
pub const MAX_PAGE: u32 = 500;

/// A field users can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderField {
    /// Creation time.
    CreatedAt,
    /// Last update time.
    UpdatedAt,
    /// Primary email address.
    EmailAddress,
    /// Web3 wallet.
    Web3wallet,
    /// First name.
    FirstName,
    /// Last name.
    LastName,
    /// Primary phone number.
    PhoneNumber,
    /// Username.
    Username,
    /// Last activity time.
    LastActiveAt,
    /// Last sign-in time.
    LastSignInAt,
}

impl OrderField {
    const ALL: [(OrderField, &'static str); 10] = [
        (OrderField::CreatedAt, "created_at"),
        (OrderField::UpdatedAt, "updated_at"),
        (OrderField::EmailAddress, "email_address"),
        (OrderField::Web3wallet, "web3wallet"),
        (OrderField::FirstName, "first_name"),
        (OrderField::LastName, "last_name"),
        (OrderField::PhoneNumber, "phone_number"),
        (OrderField::Username, "username"),
        (OrderField::LastActiveAt, "last_active_at"),
        (OrderField::LastSignInAt, "last_sign_in_at"),
    ];

    /// Clerk's name of the field.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(field, _)| *field == self)
            .map_or("created_at", |(_, name)| name)
    }
}

/// A sort order: a field and a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderBy {
    /// The field sorted by.
    pub field: OrderField,
    /// Largest first.
    pub descending: bool,
}

impl Default for OrderBy {
    /// Clerk's default: newest first.
    fn default() -> Self {
        Self {
            field: OrderField::CreatedAt,
            descending: true,
        }
    }
}

/// An `order_by` value that Clerk would not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a sort order: use one of created_at, updated_at, email_address, web3wallet, \
     first_name, last_name, phone_number, username, last_active_at, last_sign_in_at, \
     optionally prefixed by + or -"
)]
pub struct OrderByParseError(String);

impl FromStr for OrderBy {
    type Err = OrderByParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (descending, name) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        OrderField::ALL
            .iter()
            .find(|(_, known)| *known == name)
            .map(|&(field, _)| OrderBy { field, descending })
            .ok_or_else(|| OrderByParseError(echo(text)))
    }
}

/// The start of a refused `order_by`, enough to recognise it: an error never
/// repeats a whole (up to 1 MiB) input.
fn echo(text: &str) -> String {
    const MAX_ECHO_CHARS: usize = 40;
    let mut chars = text.chars();
    let mut echo: String = chars.by_ref().take(MAX_ECHO_CHARS).collect();
    if chars.next().is_some() {
        echo.push('…');
    }
    echo
}

impl fmt::Display for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.descending { '-' } else { '+' };
        write!(f, "{sign}{}", self.field.as_str())
    }
}

/// Which users a list or count covers (Clerk's filters).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserFilter {
    /// Exact-match filters: (Clerk parameter name, values), at most 100 values each.
    pub exact: Vec<(ExactField, Vec<String>)>,
    /// Partial-match filters: (Clerk parameter name, text).
    pub partial: Vec<(PartialField, String)>,
    /// Only banned or only non-banned users.
    pub banned: Option<bool>,
    /// Time bounds in Unix milliseconds: (Clerk parameter name, value).
    pub times: Vec<(TimeField, i64)>,
}

/// An exact-match array filter of Clerk's list endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExactField {
    /// `user_id`
    UserId,
    /// `email_address`
    EmailAddress,
    /// `phone_number`
    PhoneNumber,
    /// `external_id`
    ExternalId,
    /// `username`
    Username,
    /// `web3_wallet`
    Web3Wallet,
    /// `organization_id`
    OrganizationId,
}

impl ExactField {
    /// Clerk's parameter name.
    pub fn param(self) -> &'static str {
        match self {
            ExactField::UserId => "user_id",
            ExactField::EmailAddress => "email_address",
            ExactField::PhoneNumber => "phone_number",
            ExactField::ExternalId => "external_id",
            ExactField::Username => "username",
            ExactField::Web3Wallet => "web3_wallet",
            ExactField::OrganizationId => "organization_id",
        }
    }
}

/// A partial-match filter of Clerk's list endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartialField {
    /// `query`: emails, phones, usernames, ids and names.
    Query,
    /// `email_address_query`
    EmailAddressQuery,
    /// `phone_number_query`
    PhoneNumberQuery,
    /// `username_query`
    UsernameQuery,
    /// `name_query`
    NameQuery,
}

impl PartialField {
    /// Clerk's parameter name.
    pub fn param(self) -> &'static str {
        match self {
            PartialField::Query => "query",
            PartialField::EmailAddressQuery => "email_address_query",
            PartialField::PhoneNumberQuery => "phone_number_query",
            PartialField::UsernameQuery => "username_query",
            PartialField::NameQuery => "name_query",
        }
    }
}

/// A time bound of Clerk's list endpoint (Unix milliseconds, exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeField {
    /// `created_at_after`
    CreatedAfter,
    /// `created_at_before`
    CreatedBefore,
    /// `last_active_at_after`
    LastActiveAfter,
    /// `last_active_at_before`
    LastActiveBefore,
}

impl TimeField {
    /// Clerk's parameter name.
    pub fn param(self) -> &'static str {
        match self {
            TimeField::CreatedAfter => "created_at_after",
            TimeField::CreatedBefore => "created_at_before",
            TimeField::LastActiveAfter => "last_active_at_after",
            TimeField::LastActiveBefore => "last_active_at_before",
        }
    }
}

impl UserFilter {
    /// A filter selecting exactly these ids (at most 100).
    pub fn ids(ids: Vec<String>) -> Self {
        Self {
            exact: vec![(ExactField::UserId, ids)],
            ..Self::default()
        }
    }

    /// The filter a Clerk query string states, if every parameter is one of
    /// the filters and every value valid (≤ 100 values per array, values of
    /// 1–256 characters, `banned` a boolean, times integers); `None`
    /// otherwise, so that Clerk answers what the broker would not.
    pub fn from_params(params: &[(String, String)]) -> Option<Self> {
        const EXACT: [ExactField; 7] = [
            ExactField::UserId,
            ExactField::EmailAddress,
            ExactField::PhoneNumber,
            ExactField::ExternalId,
            ExactField::Username,
            ExactField::Web3Wallet,
            ExactField::OrganizationId,
        ];
        const PARTIAL: [PartialField; 5] = [
            PartialField::Query,
            PartialField::EmailAddressQuery,
            PartialField::PhoneNumberQuery,
            PartialField::UsernameQuery,
            PartialField::NameQuery,
        ];
        const TIMES: [TimeField; 4] = [
            TimeField::CreatedAfter,
            TimeField::CreatedBefore,
            TimeField::LastActiveAfter,
            TimeField::LastActiveBefore,
        ];
        let mut filter = Self::default();
        for (name, value) in params {
            if value.is_empty() || value.chars().count() > 256 {
                return None;
            }
            if let Some(field) = EXACT.into_iter().find(|f| f.param() == name) {
                match filter.exact.iter_mut().find(|(f, _)| *f == field) {
                    Some((_, values)) if values.len() < MAX_FILTER_VALUES => {
                        values.push(value.clone());
                    }
                    Some(_) => return None,
                    None => filter.exact.push((field, vec![value.clone()])),
                }
            } else if let Some(field) = PARTIAL.into_iter().find(|f| f.param() == name) {
                if filter.partial.iter().any(|(f, _)| *f == field) {
                    return None;
                }
                filter.partial.push((field, value.clone()));
            } else if let Some(field) = TIMES.into_iter().find(|f| f.param() == name) {
                if filter.times.iter().any(|(f, _)| *f == field) {
                    return None;
                }
                filter.times.push((field, value.parse().ok()?));
            } else if name == "banned" && filter.banned.is_none() {
                filter.banned = Some(value.parse().ok()?);
            } else {
                return None;
            }
        }
        Some(filter)
    }

    /// Appends the filter as query parameters.
    pub fn write_params(&self, params: &mut Vec<(&'static str, String)>) {
        for (field, values) in &self.exact {
            params.extend(values.iter().map(|value| (field.param(), value.clone())));
        }
        for (field, text) in &self.partial {
            params.push((field.param(), text.clone()));
        }
        if let Some(banned) = self.banned {
            params.push(("banned", banned.to_string()));
        }
        for (field, ms) in &self.times {
            params.push((field.param(), ms.to_string()));
        }
    }
}

/// One page of a list: filter, order, and the window of results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// Which users.
    pub filter: UserFilter,
    /// In which order.
    pub order_by: OrderBy,
    /// Page size, 1 to 500.
    pub limit: u32,
    /// Users to skip.
    pub offset: u64,
}

impl ListQuery {
    /// The query parameters of this page.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("limit", self.limit.clamp(1, MAX_PAGE).to_string()),
            ("offset", self.offset.to_string()),
            ("order_by", self.order_by.to_string()),
        ];
        self.filter.write_params(&mut params);
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_round_trips() {
        assert_eq!("".parse::<OrderBy>().ok(), None);
        let order: OrderBy = "-last_sign_in_at".parse().unwrap();
        assert_eq!(order.field, OrderField::LastSignInAt);
        assert!(order.descending);
        assert_eq!(order.to_string(), "-last_sign_in_at");
        assert_eq!(
            "username".parse::<OrderBy>().unwrap().to_string(),
            "+username"
        );
        assert!(
            "-email"
                .parse::<OrderBy>()
                .unwrap_err()
                .to_string()
                .contains("is not a sort order: use one of created_at")
        );
        let long = "x"
            .repeat(1 << 20)
            .parse::<OrderBy>()
            .unwrap_err()
            .to_string();
        assert!(
            long.starts_with(&format!("\"{}…\" is not", "x".repeat(40))),
            "{long}"
        );
        assert!(long.len() < 400);
    }

    #[test]
    fn params_repeat_array_values_and_never_exceed_the_page_limit() {
        let mut filter = UserFilter::ids(vec!["user_a".into(), "user_b".into()]);
        filter.banned = Some(false);
        filter
            .times
            .push((TimeField::CreatedAfter, 1_700_000_000_000));
        let query = ListQuery {
            filter,
            order_by: OrderBy::default(),
            limit: 900,
            offset: 0,
        };
        let params = query.params();
        assert!(params.contains(&("limit", "500".into())));
        assert!(params.contains(&("user_id", "user_a".into())));
        assert!(params.contains(&("user_id", "user_b".into())));
        assert!(params.contains(&("banned", "false".into())));
        assert!(params.contains(&("created_at_after", "1700000000000".into())));
        assert!(params.contains(&("order_by", "-created_at".into())));
    }
}
