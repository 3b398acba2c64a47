//! `json::without_key`: removing every member with one name from a JSON text
//! at any depth, every other byte kept. Used on every user a caller without
//! `read_private_metadata` receives, on Clerk's text.
//!
//! Input: one byte choosing the key (among `KEYS`), then the text (UTF-8).
//!
//! Properties: nothing panics, on any text; on text `serde_json` accepts,
//! the result is JSON for the text's value less every member of that name
//! (`strip`, the model), borrowed only if the model removes nothing, and on
//! `serde_json`'s compact writing of a value it is exactly the compact
//! writing of the stripped value; `without_key` returns text it cannot scan
//! unchanged.

#![no_main]

use std::borrow::Cow;

use clerk_broker::json::{try_without_key, without_key};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Keys removed: the one the broker removes, and names that stress the
/// matching (empty, short escapes, non-ASCII, a surrogate pair).
const KEYS: [&str; 7] = ["private_metadata", "a", "", "\"", "\\/", "é", "😀"];

/// `value` without `key` in any object.
fn strip(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|value| strip(value, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|value| strip(value, key)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let key = KEYS[usize::from(choice) % KEYS.len()];
    let tried = try_without_key(text, key);
    let given = without_key(text, key);
    match &tried {
        Ok(out) => assert_eq!(given, *out),
        Err(_) => assert_eq!(given, text, "unscannable text is returned unchanged"),
    }
    let Ok(original) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let out = tried.expect("text serde_json accepts scans");
    let mut expected = original.clone();
    strip(&mut expected, key);
    let parsed: Value = serde_json::from_str(&out).expect("the result is JSON");
    assert_eq!(parsed, expected);
    if matches!(out, Cow::Borrowed(_)) {
        assert_eq!(original, expected, "a member was left in");
    }
    let compact = serde_json::to_string(&original).expect("a value serializes");
    let expected = serde_json::to_string(&expected).expect("a value serializes");
    assert_eq!(without_key(&compact, key), expected);
});
