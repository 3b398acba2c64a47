//! Clerk's answers about users, as they arrive over the network: the body of
//! `GET /users` (a JSON array) and of `GET /users/{id}` (one object), read
//! into `ClerkUser`s, cached as Clerk's exact text, and converted to the
//! `User` message (`clerk_broker::clerk`, `clerk_broker::grpc::user_message`).
//!
//! Properties: nothing panics; a user's text is JSON for exactly its object,
//! and reads back to the same user (the cache keeps only the text and reads
//! it again on every hit); the message keeps the id, carries the text itself
//! as `raw_json`, and survives a protobuf round trip; without the scope,
//! `raw_json` is the text less `private_metadata` (`json::without_key`),
//! which reads as the object less every member of that name at any depth.

#![no_main]

use clerk_broker::{clerk::ClerkUser, json, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use serde_json::Value;

/// `value` without `key` in any object: the model of `json::without_key`.
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
    let one = ClerkUser::parse_one(data);
    let list = ClerkUser::parse_list(data).unwrap_or_default();
    for user in one.iter().chain(&list) {
        let parsed: Value = serde_json::from_str(user.text()).expect("a user's text is JSON");
        assert_eq!(parsed.as_object(), Some(user.json()));
        // What the cache stores and reads again on a hit.
        let again = ClerkUser::from_text(user.text()).expect("cached text reads back");
        assert_eq!(&again, user);

        let message = clerk_broker::grpc::user_message(user, true);
        assert_eq!(message.id, user.id());
        assert_eq!(message.raw_json, user.text());
        let decoded = pb::User::decode(message.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, message);

        // Without the scope: the same bytes less private_metadata, wherever.
        let kept = clerk_broker::grpc::user_message(user, false);
        assert_eq!(kept.private_metadata, None);
        assert_eq!(
            kept.raw_json,
            json::without_key(user.text(), "private_metadata")
        );
        let raw: Value = serde_json::from_str(&kept.raw_json).expect("raw_json is JSON");
        let mut expected = parsed;
        strip(&mut expected, "private_metadata");
        assert_eq!(raw, expected);
        let decoded = pb::User::decode(kept.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, kept);
    }
});
