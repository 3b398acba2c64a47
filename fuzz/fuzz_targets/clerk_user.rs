//! Clerk's answers about users, as they arrive over the network: the body of
//! `GET /users` (a JSON array) and of `GET /users/{id}` (one object), read
//! into `ClerkUser`s, cached as compact text, and converted to the `User`
//! message (`clerk_broker::clerk`, `clerk_broker::grpc::user_message`).
//!
//! Properties: nothing panics; a user's cached text reads back to the same
//! object (the cache re-parses it on every hit); the message keeps the id and
//! the raw JSON, and survives a protobuf round trip.

#![no_main]

use clerk_broker::{clerk::ClerkUser, pb};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let one = ClerkUser::parse_one(data);
    let list = ClerkUser::parse_list(data).unwrap_or_default();
    for user in one.iter().chain(&list) {
        // What the cache stores and parses again on a hit.
        let text = serde_json::to_string(user.json()).expect("a JSON object serializes");
        let again = ClerkUser::parse_one(text.as_bytes()).expect("cached text reads back");
        assert_eq!(again.json(), user.json());

        let message = clerk_broker::grpc::user_message(user, true);
        assert_eq!(message.id, user.id());
        let raw: serde_json::Value =
            serde_json::from_str(&message.raw_json).expect("raw_json is JSON");
        assert_eq!(raw.as_object(), Some(user.json()));
        let decoded = pb::User::decode(message.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, message);

        // Without the scope: the same user less private_metadata, nowhere else.
        let kept = clerk_broker::grpc::user_message(user, false);
        assert_eq!(kept.private_metadata, None);
        let raw: serde_json::Value =
            serde_json::from_str(&kept.raw_json).expect("raw_json is JSON");
        let mut expected = user.json().clone();
        expected.remove("private_metadata");
        assert_eq!(raw.as_object(), Some(&expected));
        let decoded = pb::User::decode(kept.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, kept);
    }
});
