//! `ClerkUser`: a user object exactly as Clerk sent it.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use serde_json::{Map, Value, value::RawValue};

/// A Clerk user, kept as the complete JSON object Clerk returned: its exact
/// text (the bytes of that object in Clerk's answer or webhook, so key order,
/// spacing, number spellings and escapes reach callers unchanged, and fields
/// Clerk adds later are passed on), and the parsed object for reading fields,
/// parsed from the text on first use (a cache hit that only passes the text
/// on never parses it, nor allocates for it). A user read from the cache
/// holds its text packed ([`PackedText`]) and unpacks it on first read (a hit
/// whose encoding is remembered never does). Cheap to clone while neither
/// happened; a clone made after the parse shares it, one made after the
/// unpacking copies the text.
#[derive(Clone)]
pub struct ClerkUser {
    /// The user's id (the object's `id` field).
    id: Arc<str>,
    /// The object's text as Clerk wrote it.
    text: Text,
    /// The whole object, parsed from the text when first read.
    json: OnceLock<Arc<Map<String, Value>>>,
}

/// A user's text, as read or as the cache keeps it.
#[derive(Clone)]
enum Text {
    /// As read from Clerk (an answer or a webhook).
    Plain(Arc<str>),
    /// Packed, from the cache; unpacked when first read.
    Packed(PackedText, OnceLock<String>),
}

/// A user's text, compressed (an LZ4 block, its length first): what the cache
/// keeps of a user (Clerk's user objects, with their repeated keys, pack to
/// about half). Unpacking gives back the very bytes packed. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedText(Arc<[u8]>);

impl PackedText {
    /// `text`, packed.
    pub fn pack(text: &str) -> Self {
        Self(lz4_flex::block::compress_prepend_size(text.as_bytes()).into())
    }

    /// The text again, byte for byte.
    pub fn unpack(&self) -> String {
        // Only `pack` makes these bytes, from a `str`: they always unpack, to
        // UTF-8. A failure is a bug, answered INTERNAL (a gRPC call's gate,
        // the front's handler).
        let bytes = lz4_flex::block::decompress_size_prepended(&self.0)
            .expect("packed by PackedText::pack");
        String::from_utf8(bytes).expect("packed from a str")
    }

    /// Its size, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it packs the empty text (never, for a user's).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `other` packs the same text: the same bytes, shared or not
    /// (packing is deterministic).
    pub fn is_same(&self, other: &PackedText) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl fmt::Debug for ClerkUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkUser")
            .field("id", &self.id)
            .field("text", &self.text())
            .finish()
    }
}

impl PartialEq for ClerkUser {
    /// Two users are equal when Clerk sent the same text.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.text() == other.text()
    }
}

impl ClerkUser {
    /// Wraps a JSON value (its text is `serde_json`'s writing of it);
    /// `None` unless it is an object with a string `id`.
    pub fn from_json(value: Value) -> Option<Self> {
        let text = serde_json::to_string(&value).ok()?;
        Self::from_parts(text.into(), value)
    }

    /// Reads one user object from its exact text, which is kept as is; `None`
    /// if it is not JSON, or not an object with a string `id`.
    pub fn from_text(text: impl Into<Arc<str>>) -> Option<Self> {
        let text = text.into();
        let value = serde_json::from_str(&text).ok()?;
        Self::from_parts(text, value)
    }

    fn from_parts(text: Arc<str>, value: Value) -> Option<Self> {
        let Value::Object(json) = value else {
            return None;
        };
        let id = json.get("id")?.as_str()?.into();
        Some(Self {
            id,
            text: Text::Plain(text),
            json: OnceLock::from(Arc::new(json)),
        })
    }

    /// A user whose text was read by [`ClerkUser::from_text`] before and
    /// then packed (the cache's entries), with its `id`: not unpacked until
    /// its text is read, nor parsed until a field is.
    pub(crate) fn packed(id: Arc<str>, text: PackedText) -> Self {
        Self {
            id,
            text: Text::Packed(text, OnceLock::new()),
            json: OnceLock::new(),
        }
    }

    /// The user's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The same id, shared.
    pub fn shared_id(&self) -> Arc<str> {
        self.id.clone()
    }

    /// The object's text exactly as Clerk sent it.
    pub fn text(&self) -> &str {
        match &self.text {
            Text::Plain(text) => text,
            Text::Packed(packed, plain) => plain.get_or_init(|| packed.unpack()),
        }
    }

    /// The text packed, as the cache keeps it (packed now if it was read
    /// from Clerk).
    pub fn pack(&self) -> PackedText {
        match &self.text {
            Text::Plain(text) => PackedText::pack(text),
            Text::Packed(packed, _) => packed.clone(),
        }
    }

    /// The packed text of a user read from the cache; `None` for a user read
    /// from Clerk.
    pub fn packed_text(&self) -> Option<&PackedText> {
        match &self.text {
            Text::Plain(_) => None,
            Text::Packed(packed, _) => Some(packed),
        }
    }

    /// The complete object (parsed now if it was not yet; text that was
    /// checked when it entered the broker always parses).
    pub fn json(&self) -> &Map<String, Value> {
        self.json
            .get_or_init(|| Arc::new(serde_json::from_str(self.text()).unwrap_or_default()))
    }

    /// A string field, if present and a string.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.json().get(field)?.as_str()
    }

    /// A boolean field; absent or mistyped reads as false.
    pub fn flag(&self, field: &str) -> bool {
        self.json()
            .get(field)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// A Unix-milliseconds timestamp field, if present and a number.
    pub fn millis(&self, field: &str) -> Option<i64> {
        self.json().get(field)?.as_i64()
    }

    /// Reads the body of `GET /users/{id}`: one user object (its text is
    /// the body less surrounding whitespace); `None` if it is not JSON or not
    /// a user.
    pub fn parse_one(body: &[u8]) -> Option<Self> {
        let raw: &RawValue = serde_json::from_slice(body).ok()?;
        Self::from_text(raw.get())
    }

    /// Reads the body of `GET /users`: a bare JSON array of users, each
    /// keeping its own bytes of the body; elements that are not user objects
    /// are skipped. `None` if it is not a JSON array.
    pub fn parse_list(body: &[u8]) -> Option<Vec<Self>> {
        let raws: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
        Some(
            raws.into_iter()
                .filter_map(|raw| Self::from_text(raw.get()))
                .collect(),
        )
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
        let again = ClerkUser::from_text(user.text()).unwrap();
        assert_eq!(again, user);
    }

    /// The cache keeps texts packed: unpacked, they are the very bytes, and
    /// a user read back from its packed text is the same user.
    #[test]
    fn a_packed_text_unpacks_to_the_same_bytes() {
        let text = r#"{"id":"user_1","s":"\u00e9\/ é 🦀","n":1.50E+3,"a":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#;
        let user = ClerkUser::from_text(text).unwrap();
        assert!(user.packed_text().is_none());
        let packed = user.pack();
        assert_eq!(packed.unpack(), text);
        let again = ClerkUser::packed(user.shared_id(), packed.clone());
        assert!(again.packed_text().unwrap().is_same(&packed));
        assert!(again.pack().is_same(&packed));
        assert_eq!(again.text(), text);
        assert_eq!(again, user);
        assert_eq!(again.str("s"), Some("é/ é 🦀"));
        assert!(PackedText::pack(text).is_same(&packed));
        assert!(!PackedText::pack(&text.replace("1.50", "1.5")).is_same(&packed));
        // Users' repeated keys and values pack well.
        for user in crate::fake::seed::synthetic_users(3, 7) {
            let text = serde_json::to_string(&user).unwrap();
            assert!(PackedText::pack(&text).len() < text.len() * 3 / 4, "{text}");
        }
    }

    /// Clerk's bytes, not a re-serialization: key order, spacing, number
    /// spellings and escapes of each object, from one object or a list.
    #[test]
    fn keeps_the_exact_text_of_each_object() {
        let one = r#"{"object":"user","id":"user_1","n":1.50E+3,"s":"\u00e9\/","z":{"b":1,"a":2}}"#;
        let user = ClerkUser::parse_one(format!(" \n{one}\t").as_bytes()).unwrap();
        assert_eq!(user.text(), one);
        assert_eq!(user.str("s"), Some("é/"));
        let two = r#"{ "id" : "user_2" }"#;
        let list = format!("[{one},\n  {two} ,1,{{\"x\":1}}]");
        let users = ClerkUser::parse_list(list.as_bytes()).unwrap();
        let texts: Vec<&str> = users.iter().map(ClerkUser::text).collect();
        assert_eq!(texts, [one, two]);
        assert!(ClerkUser::parse_one(b"{\"id\":\"u\"} x").is_none());
        assert!(ClerkUser::parse_list(b"{\"id\":\"u\"}").is_none());
    }
}
