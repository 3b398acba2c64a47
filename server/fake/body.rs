//! Request bodies of the fake's write endpoints: the JSON object, its parameters checked one by
//! one with Clerk's `form_param_*` 422 errors, the metadata merge and replace rules, and the
//! `updated_at` bump every write makes.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{Map, Value};

/// A rejected request, before the trace id is added: the status and Clerk's error fields.
#[derive(Debug, PartialEq)]
pub(super) struct Rejection {
    /// HTTP status.
    pub(super) status: StatusCode,
    /// Clerk's machine-readable `code`.
    pub(super) code: &'static str,
    /// Clerk's short `message`.
    pub(super) message: &'static str,
    /// What was wrong and what to do, as `long_message`.
    pub(super) long_message: String,
    /// The parameter at fault, sent as `meta.param_name`.
    pub(super) param: Option<String>,
}

impl Rejection {
    /// A 422 on `param` with `code`.
    fn form(code: &'static str, message: &'static str, param: &str, long: String) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            message,
            long_message: long,
            param: Some(param.to_owned()),
        }
    }

    /// 422 `form_param_format_invalid`: `param` has the wrong type or shape.
    pub(super) fn format(param: &str, expected: &str) -> Self {
        let long = format!("{param} must be {expected}");
        Self::form("form_param_format_invalid", "is invalid", param, long)
    }

    /// 422 `form_param_value_invalid`: `param` has an unacceptable value.
    pub(super) fn value(param: &str, long: impl Into<String>) -> Self {
        Self::form("form_param_value_invalid", "is invalid", param, long.into())
    }

    /// 422 `form_param_missing`.
    pub(super) fn missing(param: &str) -> Self {
        let long = format!("{param} must be included");
        Self::form("form_param_missing", "is missing", param, long)
    }

    /// 422 `form_identifier_exists`: a unique value already taken by another resource.
    pub(super) fn taken(param: &str, long: impl Into<String>) -> Self {
        Self::form("form_identifier_exists", "is taken", param, long.into())
    }

    /// 404 `resource_not_found`.
    pub(super) fn not_found(long: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "resource_not_found",
            message: "not found",
            long_message: long,
            param: None,
        }
    }
}

/// A JSON request body, as an object. An empty body is an empty object (a `PATCH` changing
/// nothing); anything but a JSON object is a 422.
pub(super) struct Body {
    /// The parameters given.
    fields: Map<String, Value>,
}

impl Body {
    /// Parses `bytes`; every key must be one of `known`, else 422 `form_param_unknown` (as
    /// Clerk answers unknown parameters).
    pub(super) fn parse(bytes: &[u8], known: &[&str]) -> Result<Self, Rejection> {
        let fields = if bytes.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(fields)) => fields,
                _ => {
                    return Err(Rejection {
                        status: StatusCode::UNPROCESSABLE_ENTITY,
                        code: "form_param_format_invalid",
                        message: "is invalid",
                        long_message: "The request body must be a JSON object".to_owned(),
                        param: None,
                    });
                }
            }
        };
        if let Some(unknown) = fields.keys().find(|key| !known.contains(&key.as_str())) {
            let long = format!("{unknown} is not a valid parameter for this request");
            return Err(Rejection::form(
                "form_param_unknown",
                "is unknown",
                unknown,
                long,
            ));
        }
        Ok(Self { fields })
    }

    /// `name` as a string or null: `None` if absent, `Some(None)` if null.
    pub(super) fn nullable_string(&self, name: &str) -> Result<Option<Option<String>>, Rejection> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(text)) => Ok(Some(Some(text.clone()))),
            Some(_) => Err(Rejection::format(name, "a string or null")),
        }
    }

    /// `name` as a string, required non-null when present.
    pub(super) fn string(&self, name: &str) -> Result<Option<String>, Rejection> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(Rejection::format(name, "a string")),
        }
    }

    /// `name` as a boolean; null counts as absent.
    pub(super) fn bool(&self, name: &str) -> Result<Option<bool>, Rejection> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(_) => Err(Rejection::format(name, "a boolean")),
        }
    }

    /// `name` as an integer or null: `None` if absent, `Some(None)` if null.
    pub(super) fn nullable_int(&self, name: &str) -> Result<Option<Option<i64>>, Rejection> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(value) => value
                .as_i64()
                .map(|n| Some(Some(n)))
                .ok_or_else(|| Rejection::format(name, "an integer or null")),
        }
    }

    /// `name` as a JSON object; null counts as absent.
    pub(super) fn object(&self, name: &str) -> Result<Option<&Map<String, Value>>, Rejection> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object)),
            Some(_) => Err(Rejection::format(name, "a JSON object")),
        }
    }

    /// `name` as a JSON object or null, for replace semantics: `None` if absent.
    pub(super) fn object_or_null(&self, name: &str) -> Result<Option<&Value>, Rejection> {
        match self.fields.get(name) {
            None => Ok(None),
            Some(value @ (Value::Null | Value::Object(_))) => Ok(Some(value)),
            Some(_) => Err(Rejection::format(name, "a JSON object or null")),
        }
    }
}

/// A metadata field's name and the object to merge into it.
pub(super) type Patch<'a> = (&'static str, &'a Map<String, Value>);

/// The metadata fields named in `names` that a merge request gives, as objects; each field
/// absent or null is left alone, anything else but an object is a 422.
pub(super) fn metadata_patches<'a>(
    body: &'a Body,
    names: &[&'static str],
) -> Result<Vec<Patch<'a>>, Rejection> {
    let mut patches = Vec::new();
    for &name in names {
        if let Some(patch) = body.object(name)? {
            patches.push((name, patch));
        }
    }
    Ok(patches)
}

/// The metadata fields named in `names` that a replace request gives: each replaces the stored
/// value in full (an object, or null to store null); absent fields are left alone.
pub(super) fn metadata_replacements(
    body: &Body,
    names: &[&'static str],
) -> Result<Vec<(&'static str, Value)>, Rejection> {
    let mut replacements = Vec::new();
    for &name in names {
        if let Some(value) = body.object_or_null(name)? {
            replacements.push((name, value.clone()));
        }
    }
    Ok(replacements)
}

/// Deep-merges each patch into the resource's field of the same name.
pub(super) fn apply_patches(resource: &mut Value, patches: &[Patch<'_>]) {
    if let Some(fields) = resource.as_object_mut() {
        for (name, patch) in patches {
            let slot = fields.entry(*name).or_insert(Value::Null);
            merge_metadata(slot, patch);
        }
    }
}

/// Sets `name` on a resource object; an existing key keeps its place, a new one goes last.
pub(super) fn set_field(resource: &mut Value, name: &str, value: Value) {
    if let Some(fields) = resource.as_object_mut() {
        fields.insert(name.to_owned(), value);
    }
}

/// Sets `updated_at` to now in Unix ms, and always later than before, so each write shows.
pub(super) fn touch(resource: &mut Value) {
    let previous = resource.get("updated_at").and_then(Value::as_i64);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    let updated_at = previous.map_or(now, |previous| now.max(previous.saturating_add(1)));
    set_field(resource, "updated_at", Value::from(updated_at));
}

/// Merges `patch` into `target` as Clerk's metadata merge does (JSON Merge Patch, RFC 7396):
/// nested objects merge key by key, a `null` removes the key at any depth, anything else
/// (arrays included) replaces. A `target` that is not an object (e.g. null metadata) starts
/// out empty. Keys keep their order; new keys go last.
pub(super) fn merge_metadata(target: &mut Value, patch: &Map<String, Value>) {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        return;
    };
    for (key, value) in patch {
        match value {
            Value::Null => {
                // Rebuilt rather than `remove`d, so the order of the other keys is kept
                // whichever map serde_json was built with.
                if fields.contains_key(key) {
                    *fields = std::mem::take(fields)
                        .into_iter()
                        .filter(|(name, _)| name != key)
                        .collect();
                }
            }
            Value::Object(inner) => {
                let slot = fields.entry(key.clone()).or_insert(Value::Null);
                merge_metadata(slot, inner);
            }
            other => {
                fields.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_is_deep_and_null_removes_at_any_depth() {
        let mut target = json!({
            "plan": "free",
            "limits": {"seats": 3, "storage": {"gb": 5, "tier": "s"}},
            "tags": ["a", "b"],
            "gone": 1,
        });
        let patch = object(json!({
            "plan": "pro",
            "limits": {"storage": {"gb": 50, "tier": null}, "api": true},
            "tags": ["c"],
            "gone": null,
            "absent": null,
            "new": {"nested": {"x": null, "y": 1}},
        }));
        merge_metadata(&mut target, &patch);
        assert_eq!(
            target,
            json!({
                "plan": "pro",
                "limits": {"seats": 3, "storage": {"gb": 50}, "api": true},
                "tags": ["c"],
                "new": {"nested": {"y": 1}},
            })
        );
    }

    #[test]
    fn merge_into_null_metadata_starts_empty() {
        let mut target = Value::Null;
        merge_metadata(&mut target, &object(json!({"a": 1, "b": null})));
        assert_eq!(target, json!({"a": 1}));
    }

    #[test]
    fn touch_moves_updated_at_forward_even_from_the_future() {
        let mut resource = json!({"id": "x", "updated_at": 1});
        touch(&mut resource);
        let now = resource["updated_at"].as_i64().expect("ms");
        assert!(now > 1_700_000_000_000, "{now}");
        let future = i64::MAX - 5;
        set_field(&mut resource, "updated_at", json!(future));
        touch(&mut resource);
        assert_eq!(resource["updated_at"], json!(future + 1));
    }

    #[test]
    fn bodies_are_objects_with_known_typed_parameters() {
        let known = ["first_name", "banned", "public_metadata", "limit"];
        let body = Body::parse(
            br#"{"first_name": null, "banned": true, "public_metadata": {"a": 1}, "limit": 3}"#,
            &known,
        )
        .expect("valid");
        assert_eq!(body.nullable_string("first_name"), Ok(Some(None)));
        assert_eq!(body.bool("banned"), Ok(Some(true)));
        assert_eq!(body.nullable_int("limit"), Ok(Some(Some(3))));
        assert!(body.object("public_metadata").expect("object").is_some());
        assert_eq!(body.string("absent"), Ok(None));
        assert!(Body::parse(b"  ", &known).is_ok());
        let errors = [
            (&br#"{"nope": 1}"#[..], "form_param_unknown"),
            (b"[1]", "form_param_format_invalid"),
            (b"{not json", "form_param_format_invalid"),
        ];
        for (bytes, code) in errors {
            let rejection = Body::parse(bytes, &known).err().expect("rejected");
            assert_eq!(
                (rejection.status, rejection.code),
                (StatusCode::UNPROCESSABLE_ENTITY, code)
            );
        }
        let body =
            Body::parse(br#"{"first_name": 5, "public_metadata": "x"}"#, &known).expect("parsed");
        let wrong = body.nullable_string("first_name").expect_err("type");
        assert_eq!(wrong.param.as_deref(), Some("first_name"));
        assert_eq!(
            body.object("public_metadata").expect_err("type").code,
            "form_param_format_invalid"
        );
    }
}
