//! `ClerkUser`: a user object exactly as Clerk sent it.

use std::sync::Arc;

use serde_json::{Map, Value};

/// A Clerk user, kept as the complete JSON object Clerk returned, so fields
/// Clerk adds later are passed on rather than lost. Cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub struct ClerkUser {
    /// The user's id (the object's `id` field).
    id: Arc<str>,
    /// The whole object.
    json: Arc<Map<String, Value>>,
}

impl ClerkUser {
    /// Wraps a JSON value; `None` unless it is an object with a string `id`.
    pub fn from_json(value: Value) -> Option<Self> {
        let Value::Object(json) = value else {
            return None;
        };
        let id = json.get("id")?.as_str()?.into();
        Some(Self {
            id,
            json: Arc::new(json),
        })
    }

    /// SHIM (replaced by the exact text): the JSON text.
    pub fn text(&self) -> String {
        serde_json::to_string(&*self.json).unwrap_or_default()
    }

    /// The user's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The complete object.
    pub fn json(&self) -> &Map<String, Value> {
        &self.json
    }

    /// A string field, if present and a string.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.json.get(field)?.as_str()
    }

    /// A boolean field; absent or mistyped reads as false.
    pub fn flag(&self, field: &str) -> bool {
        self.json
            .get(field)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// A Unix-milliseconds timestamp field, if present and a number.
    pub fn millis(&self, field: &str) -> Option<i64> {
        self.json.get(field)?.as_i64()
    }

    /// Reads the body of `GET /users/{id}`: one user object; `None` if it is
    /// not JSON or not a user.
    pub fn parse_one(body: &[u8]) -> Option<Self> {
        Self::from_json(serde_json::from_slice(body).ok()?)
    }

    /// Reads the body of `GET /users`: a bare JSON array of users; elements
    /// that are not user objects are skipped. `None` if it is not a JSON array.
    pub fn parse_list(body: &[u8]) -> Option<Vec<Self>> {
        let values: Vec<Value> = serde_json::from_slice(body).ok()?;
        Some(values.into_iter().filter_map(Self::from_json).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_unknown_fields_and_reads_leniently() {
        let user = ClerkUser::from_json(json!({
            "id": "user_1", "first_name": null, "banned": "yes",
            "created_at": 1_700_000_000_000_i64, "brand_new_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(user.id(), "user_1");
        assert_eq!(user.str("first_name"), None);
        assert!(!user.flag("banned"));
        assert_eq!(user.millis("created_at"), Some(1_700_000_000_000));
        assert!(user.json().contains_key("brand_new_field"));
        assert!(ClerkUser::from_json(json!({"object": "user"})).is_none());
        assert!(ClerkUser::from_json(json!([1, 2])).is_none());
    }

    /// Found by the `clerk_user` fuzz target: the cache keeps a user as JSON
    /// text and parses it again on every hit, so a number must survive the
    /// round trip exactly, or a hit and a miss disagree.
    #[test]
    fn cached_text_reads_back_to_the_same_numbers() {
        let body = br#"{"id":"user_1","public_metadata":{"score":368934.4073709551616,"n":84467.4073709551616}}"#;
        let user = ClerkUser::parse_one(body).unwrap();
        let text = serde_json::to_string(user.json()).unwrap();
        let again = ClerkUser::parse_one(text.as_bytes()).unwrap();
        assert_eq!(again, user);
    }
}
