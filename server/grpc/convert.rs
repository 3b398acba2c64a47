//! Conversions between protobuf messages and domain types, in one place.
//!
//! Inbound conversions validate: they collect the problems of a request as
//! field violations (`field`, what to fix), so a caller learns them at once
//! (the first twenty, and how many more: `violations`), before any upstream
//! budget is spent.

use prost_types::{Duration as ProtoDuration, Struct, Timestamp, Value as ProtoValue, value::Kind};
use serde_json::Value;
use std::{borrow::Cow, collections::BTreeMap, time::Duration};

use super::time_bounds;
use crate::{
    admission::Priority,
    callers::{Caller, Scope},
    clerk::{
        ClerkUser, ExactField, MAX_FILTER_VALUES, MAX_PAGE, OrderBy, PartialField, UserFilter,
    },
    json, pb,
};

/// Longest accepted user id, filter value or query text.
pub(crate) const MAX_VALUE_LEN: usize = 256;
/// Longest accepted user id.
pub(crate) const MAX_USER_ID_LEN: usize = 128;

pub(crate) use super::violations::Violations;

/// Checks one user id; `field` names it in the violation.
pub(crate) fn check_user_id(field: &str, id: &str, violations: &mut Violations) {
    if let Some(problem) = user_id_problem(id) {
        violations.push((field.to_owned(), problem.to_owned()));
    }
}

/// The bytes a user id may hold: letters, digits, '_' and '-' (a table: a
/// batch checks 100 ids byte by byte).
static ID_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        allowed[b] = byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-';
        b += 1;
    }
    allowed
};

/// What is wrong with a user id, if anything.
pub(crate) fn user_id_problem(id: &str) -> Option<&'static str> {
    Some(if id.is_empty() {
        "is required: pass a Clerk user id such as user_2abc…"
    } else if id.len() > MAX_USER_ID_LEN {
        "is longer than 128 characters: pass a Clerk user id such as user_2abc…"
    } else if !id.bytes().all(|b| ID_BYTES[usize::from(b)]) {
        "may contain only letters, digits, '_' and '-': pass a Clerk user id such as user_2abc…"
    } else {
        return None;
    })
}

/// Validates and converts a filter (`None` is "all users").
pub(crate) fn user_filter(
    filter: Option<pb::UserFilter>,
    violations: &mut Violations,
) -> UserFilter {
    let Some(filter) = filter else {
        return UserFilter::default();
    };
    let mut out = UserFilter {
        banned: filter.banned,
        ..UserFilter::default()
    };
    let exact = [
        (ExactField::UserId, "user_ids", filter.user_ids),
        (
            ExactField::EmailAddress,
            "email_addresses",
            filter.email_addresses,
        ),
        (
            ExactField::PhoneNumber,
            "phone_numbers",
            filter.phone_numbers,
        ),
        (ExactField::ExternalId, "external_ids", filter.external_ids),
        (ExactField::Username, "usernames", filter.usernames),
        (ExactField::Web3Wallet, "web3_wallets", filter.web3_wallets),
        (
            ExactField::OrganizationId,
            "organization_ids",
            filter.organization_ids,
        ),
    ];
    for (field, name, values) in exact {
        if values.is_empty() {
            continue;
        }
        let path = format!("filter.{name}");
        if values.len() > MAX_FILTER_VALUES {
            violations.push((
                path.clone(),
                format!(
                    "has {} values; Clerk accepts at most {MAX_FILTER_VALUES}: split the request",
                    values.len()
                ),
            ));
        }
        for (i, value) in values.iter().enumerate() {
            if value.is_empty() || value.len() > MAX_VALUE_LEN {
                violations.push_with(|| {
                    (
                        format!("{path}[{i}]"),
                        format!("must be 1 to {MAX_VALUE_LEN} characters long"),
                    )
                });
            }
        }
        out.exact.push((field, values));
    }
    let partial = [
        (PartialField::Query, "query", filter.query),
        (
            PartialField::EmailAddressQuery,
            "email_address_query",
            filter.email_address_query,
        ),
        (
            PartialField::PhoneNumberQuery,
            "phone_number_query",
            filter.phone_number_query,
        ),
        (
            PartialField::UsernameQuery,
            "username_query",
            filter.username_query,
        ),
        (PartialField::NameQuery, "name_query", filter.name_query),
    ];
    for (field, name, text) in partial {
        if text.is_empty() {
            continue;
        }
        if text.len() > MAX_VALUE_LEN {
            violations.push((
                format!("filter.{name}"),
                format!("must be at most {MAX_VALUE_LEN} characters long"),
            ));
        }
        out.partial.push((field, text));
    }
    out.times = time_bounds::convert(
        [
            (filter.created_after, filter.created_before),
            (filter.last_active_after, filter.last_active_before),
        ],
        violations,
    );
    out
}

/// Validates and converts `order_by` ("" is Clerk's default, newest first).
pub(crate) fn order_by(text: &str, violations: &mut Violations) -> OrderBy {
    if text.is_empty() {
        return OrderBy::default();
    }
    text.parse()
        .unwrap_or_else(|error: crate::clerk::OrderByParseError| {
            violations.push(("order_by".to_owned(), error.to_string()));
            OrderBy::default()
        })
}

/// Validates a `page_size` (0 means 100).
pub(crate) fn page_size(size: u32, violations: &mut Violations) -> usize {
    match size {
        0 => 100,
        1..=MAX_PAGE => size as usize,
        _ => {
            violations.push((
                "page_size".to_owned(),
                format!("must be 1 to {MAX_PAGE} (0 means 100), got {size}"),
            ));
            100
        }
    }
}

/// Validates a `Priority` (unspecified means interactive).
pub(crate) fn priority(value: i32, violations: &mut Violations) -> Priority {
    match pb::Priority::try_from(value) {
        Ok(pb::Priority::Bulk) => Priority::Bulk,
        Ok(pb::Priority::Interactive | pb::Priority::Unspecified) => Priority::Interactive,
        Err(_) => {
            violations.push((
                "priority".to_owned(),
                format!("{value} is not a Priority: use PRIORITY_INTERACTIVE or PRIORITY_BULK"),
            ));
            Priority::Interactive
        }
    }
}

/// A non-negative protobuf duration as a std duration.
pub(crate) fn duration(value: &ProtoDuration) -> Option<Duration> {
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return None;
    }
    Some(Duration::new(value.seconds as u64, value.nanos as u32))
}

/// A std duration as a protobuf duration.
pub(crate) fn proto_duration(value: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(value.as_secs()).unwrap_or(i64::MAX),
        nanos: value.subsec_nanos() as i32,
    }
}

fn millis_to_timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A Clerk user as the protobuf `User`, reading every field leniently.
/// What of a user a caller may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// Everything Clerk returned.
    Full,
    /// All but `private_metadata`, which is removed from the `Struct` field
    /// and from `raw_json` alike.
    WithoutPrivateMetadata,
}

impl Visibility {
    /// What `caller` may see.
    pub(crate) fn of(caller: &Caller) -> Self {
        if caller.may(Scope::ReadPrivateMetadata) {
            Self::Full
        } else {
            Self::WithoutPrivateMetadata
        }
    }
}

/// The upstream field only callers with `read_private_metadata` see.
const PRIVATE_METADATA: &str = "private_metadata";

/// The user's text as a caller with `visibility` may read it: the exact
/// text Clerk sent; without the scope, less every `private_metadata` member
/// at any depth (`json::try_without_key`: every other byte kept). `None` if
/// the member could not be removed: the text parsed as JSON when the user
/// was made, so this cannot happen, and if it did the caller gets no text
/// rather than text that might hold the member.
pub(crate) fn visible_text(user: &ClerkUser, visibility: Visibility) -> Option<Cow<'_, str>> {
    match visibility {
        Visibility::Full => Some(Cow::Borrowed(user.text())),
        Visibility::WithoutPrivateMetadata => {
            json::try_without_key(user.text(), PRIVATE_METADATA).ok()
        }
    }
}

/// A Clerk user as the caller may see it; `raw_json` is its
/// [`visible_text`] (empty if that could not be made).
pub(crate) fn user(user: &ClerkUser, visibility: Visibility) -> pb::User {
    let json = user.json();
    let private_metadata = match visibility {
        Visibility::Full => json.get(PRIVATE_METADATA).and_then(to_struct),
        Visibility::WithoutPrivateMetadata => None,
    };
    let raw_json = visible_text(user, visibility)
        .map(Cow::into_owned)
        .unwrap_or_default();
    let owned = |field: &str| user.str(field).map(str::to_owned);
    let primary_email_address_id = owned("primary_email_address_id");
    let email_addresses = objects(json.get("email_addresses"))
        .map(|entry| pb::EmailAddress {
            id: text(entry, "id"),
            email_address: text(entry, "email_address"),
            verification_status: verification(entry),
        })
        .collect::<Vec<_>>();
    let primary_email_address = primary_email_address_id.as_ref().and_then(|primary| {
        email_addresses
            .iter()
            .find(|address| &address.id == primary)
            .map(|address| address.email_address.clone())
    });
    pb::User {
        id: user.id().to_owned(),
        external_id: owned("external_id"),
        username: owned("username"),
        first_name: owned("first_name"),
        last_name: owned("last_name"),
        image_url: owned("image_url").unwrap_or_default(),
        has_image: user.flag("has_image"),
        primary_email_address_id,
        primary_email_address,
        primary_phone_number_id: owned("primary_phone_number_id"),
        email_addresses,
        phone_numbers: objects(json.get("phone_numbers"))
            .map(|entry| pb::PhoneNumber {
                id: text(entry, "id"),
                phone_number: text(entry, "phone_number"),
                verification_status: verification(entry),
            })
            .collect(),
        public_metadata: json.get("public_metadata").and_then(to_struct),
        private_metadata,
        unsafe_metadata: json.get("unsafe_metadata").and_then(to_struct),
        banned: user.flag("banned"),
        locked: user.flag("locked"),
        password_enabled: user.flag("password_enabled"),
        two_factor_enabled: user.flag("two_factor_enabled"),
        created_at: user.millis("created_at").map(millis_to_timestamp),
        updated_at: user.millis("updated_at").map(millis_to_timestamp),
        last_sign_in_at: user.millis("last_sign_in_at").map(millis_to_timestamp),
        last_active_at: user.millis("last_active_at").map(millis_to_timestamp),
        raw_json,
    }
}

fn objects(value: Option<&Value>) -> impl Iterator<Item = &serde_json::Map<String, Value>> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn text(entry: &serde_json::Map<String, Value>, field: &str) -> String {
    entry
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn verification(entry: &serde_json::Map<String, Value>) -> String {
    entry
        .get("verification")
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Deepest JSON nesting inside a metadata field converted to `Struct`
/// values; deeper objects and arrays arrive as their JSON text (a string).
/// Each JSON level costs protobuf decoders two or three levels of message
/// nesting, and decoders refuse messages nested deeper than 100 (prost's and
/// the other official runtimes' default): without this bound one user whose
/// metadata nests 40 levels (`unsafe_metadata` is writable from the browser)
/// would make every message carrying that user undecodable.
pub(crate) const MAX_METADATA_DEPTH: usize = 24;

/// A JSON object as a `Struct`; anything else (null included) as `None`.
fn to_struct(value: &Value) -> Option<Struct> {
    struct_at(value.as_object()?, 1)
}

/// `object` at nesting level `depth` (1: the metadata field itself).
fn struct_at(object: &serde_json::Map<String, Value>, depth: usize) -> Option<Struct> {
    Some(Struct {
        fields: object
            .iter()
            .map(|(key, value)| (key.clone(), to_value(value, depth + 1)))
            .collect::<BTreeMap<_, _>>(),
    })
}

fn to_value(value: &Value, depth: usize) -> ProtoValue {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(_) | Value::Object(_) if depth > MAX_METADATA_DEPTH => {
            Kind::StringValue(value.to_string())
        }
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(|item| to_value(item, depth + 1)).collect(),
        }),
        Value::Object(object) => Kind::StructValue(struct_at(object, depth).unwrap_or_default()),
    };
    ProtoValue { kind: Some(kind) }
}

/// A protobuf `Struct` as the JSON object it stands for (numbers that are
/// whole and within ±2^53 become JSON integers, as Clerk's metadata has them).
pub(crate) fn struct_json(value: &Struct) -> Value {
    Value::Object(
        value
            .fields
            .iter()
            .map(|(key, value)| (key.clone(), proto_json(value)))
            .collect(),
    )
}

fn proto_json(value: &ProtoValue) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(flag)) => Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => {
            if number.fract() == 0.0 && number.abs() <= 9_007_199_254_740_992.0 {
                Value::from(*number as i64)
            } else {
                serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(text)) => Value::String(text.clone()),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(proto_json).collect()),
        Some(Kind::StructValue(object)) => struct_json(object),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn converts_a_full_user_and_keeps_the_raw_object() {
        let clerk = ClerkUser::from_json(json!({
            "id": "user_1", "first_name": "Ada", "last_name": null, "username": "ada",
            "primary_email_address_id": "idn_2",
            "email_addresses": [
                {"id": "idn_1", "email_address": "old@example.com"},
                {"id": "idn_2", "email_address": "ada@example.com", "verification": {"status": "verified"}}
            ],
            "phone_numbers": "not a list",
            "public_metadata": {"plan": "pro", "seats": 3, "tags": ["a"], "nested": {"x": null}},
            "private_metadata": null,
            "banned": true, "created_at": 1_700_000_000_123_i64, "future_field": 7
        }))
        .unwrap();
        let user = user(&clerk, Visibility::Full);
        assert_eq!(user.id, "user_1");
        assert_eq!(user.first_name.as_deref(), Some("Ada"));
        assert_eq!(user.last_name, None);
        assert_eq!(
            user.primary_email_address.as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(user.email_addresses[1].verification_status, "verified");
        assert!(user.phone_numbers.is_empty());
        let public = user.public_metadata.unwrap();
        assert_eq!(public.fields["seats"].kind, Some(Kind::NumberValue(3.0)));
        assert_eq!(user.private_metadata, None);
        assert!(user.banned);
        assert_eq!(
            user.created_at,
            Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 123_000_000
            })
        );
        let raw: Value = serde_json::from_str(&user.raw_json).unwrap();
        assert_eq!(raw["future_field"], 7);
    }

    /// Found by the `clerk_user` fuzz target: metadata nested 60 levels made
    /// a `User` that protobuf decoders refuse (recursion limit).
    #[test]
    fn deeply_nested_metadata_still_decodes() {
        use prost::Message as _;
        let mut nested = json!("bottom");
        // 120 levels: within serde_json's parsing limit of 128, as from Clerk.
        for _ in 0..60 {
            nested = json!({ "a": [nested] });
        }
        let clerk =
            ClerkUser::from_json(json!({"id": "user_1", "unsafe_metadata": nested})).unwrap();
        let message = user(&clerk, Visibility::Full);
        let decoded = pb::User::decode(message.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, message);
        // Shallow levels stay structured; the deepest arrive as JSON text.
        let mut value = &decoded.unsafe_metadata.unwrap().fields["a"];
        let mut levels = 1;
        loop {
            value = match &value.kind {
                Some(Kind::ListValue(list)) => &list.values[0],
                Some(Kind::StructValue(object)) => &object.fields["a"],
                _ => break,
            };
            levels += 1;
        }
        assert_eq!(levels, MAX_METADATA_DEPTH);
        let Some(Kind::StringValue(text)) = &value.kind else {
            panic!("{value:?}")
        };
        let rest: Value = serde_json::from_str(text).unwrap();
        assert!(rest.pointer("/a/0/a/0/a/0").is_some(), "{text}");
        assert!(text.contains(r#"{"a":["bottom"]}"#), "{text}");
    }

    #[test]
    fn private_metadata_is_shown_only_with_its_scope() {
        let clerk = ClerkUser::from_json(json!({
            "id": "user_1",
            "public_metadata": {"plan": "pro"},
            "private_metadata": {"stripe_customer": "cus_secret"},
            "unsafe_metadata": {}
        }))
        .unwrap();
        let full = user(&clerk, Visibility::Full);
        let secret = full.private_metadata.unwrap();
        assert!(secret.fields.contains_key("stripe_customer"));
        assert!(full.raw_json.contains("cus_secret"));

        let kept = user(&clerk, Visibility::WithoutPrivateMetadata);
        assert_eq!(kept.private_metadata, None);
        let raw: Value = serde_json::from_str(&kept.raw_json).unwrap();
        assert_eq!(raw.get("private_metadata"), None);
        assert_eq!(raw["public_metadata"]["plan"], "pro");
        assert_eq!(raw["id"], "user_1");
        assert!(!kept.raw_json.contains("cus_secret"));

        let mut caller = Caller::anonymous();
        assert_eq!(Visibility::of(&caller), Visibility::Full);
        caller.scopes = [Scope::ReadUsers].into_iter().collect();
        assert_eq!(Visibility::of(&caller), Visibility::WithoutPrivateMetadata);
    }

    /// `raw_json` is Clerk's text byte for byte (order, spacing, numbers,
    /// escapes); without the scope it loses `private_metadata` wherever it
    /// is, and nothing else.
    #[test]
    fn raw_json_is_the_exact_text_clerk_sent() {
        let text = r#"{"object":"user","id":"user_1","private_metadata":{"k":1},"n":1.50E+3,"s":"\u00e9","public_metadata":{"private_\u006detadata":2,"z":[]}}"#;
        let clerk = ClerkUser::from_text(text).unwrap();
        assert_eq!(user(&clerk, Visibility::Full).raw_json, text);
        let kept = user(&clerk, Visibility::WithoutPrivateMetadata);
        assert_eq!(
            kept.raw_json,
            r#"{"object":"user","id":"user_1","n":1.50E+3,"s":"\u00e9","public_metadata":{"z":[]}}"#
        );
        assert_eq!(kept.private_metadata, None);
    }

    #[test]
    fn reports_every_problem_of_a_filter() {
        let filter = pb::UserFilter {
            user_ids: (0..101).map(|i| format!("user_{i}")).collect(),
            usernames: vec![String::new()],
            query: "q".repeat(300),
            created_after: Some(Timestamp {
                seconds: 1,
                nanos: -1,
            }),
            ..Default::default()
        };
        let mut violations = Violations::new();
        user_filter(Some(filter), &mut violations);
        let (kept, _) = violations.into_parts();
        let fields: Vec<&str> = kept.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "filter.user_ids",
                "filter.usernames[0]",
                "filter.query",
                "filter.created_after"
            ]
        );
    }

    #[test]
    fn validates_ids_order_and_page_size() {
        let mut violations = Violations::new();
        check_user_id("user_id", "user_2abcXYZ", &mut violations);
        assert!(violations.is_empty());
        check_user_id("user_id", "", &mut violations);
        check_user_id("user_id", "user/../x", &mut violations);
        check_user_id("user_id", &"u".repeat(129), &mut violations);
        assert_eq!(violations.len(), 3);
        assert_eq!(
            order_by("-username", &mut violations).to_string(),
            "-username"
        );
        order_by("name", &mut violations);
        assert_eq!(page_size(0, &mut violations), 100);
        page_size(501, &mut violations);
        assert_eq!(violations.len(), 5);
    }

    #[test]
    fn converts_durations_and_times() {
        assert_eq!(
            duration(&ProtoDuration {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        assert_eq!(
            duration(&proto_duration(Duration::from_millis(1500))),
            Some(Duration::from_millis(1500))
        );
        let round = time_bounds::Round::Up;
        assert_eq!(
            time_bounds::to_millis(&millis_to_timestamp(-1), round),
            None
        );
        assert_eq!(
            time_bounds::to_millis(&millis_to_timestamp(1_234), round),
            Some(1_234)
        );
    }
}
