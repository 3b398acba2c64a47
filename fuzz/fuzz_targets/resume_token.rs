//! Resume tokens, as callers send them back, and the export step they drive
//! (`clerk_broker::token`, `clerk_broker::export`).
//!
//! Input: two bytes (message size, users wanted), then `cursor JSON \n page`.
//! The whole input after the two bytes is first opened as a token as sent
//! (any string). Then the cursor JSON is sealed with the broker's key, as if
//! this broker had issued it (a signed token is the only way a cursor gets
//! in), opened, read as a cursor, and one export step runs on it with `page`
//! as Clerk's answer (`GET /users` body).
//!
//! Properties: nothing panics; a sealed cursor opens to itself; a forged or
//! altered token is refused; the step asks Clerk for 1 to 500 users, delivers
//! no more than wanted, in messages of at most the size asked, and every
//! position it reaches seals into a token that opens to the same cursor.

#![no_main]

use clerk_broker::{
    clerk::{ClerkUser, MAX_PAGE},
    export::{self, Cursor},
    secret::SecretKey,
    token::{TokenError, TokenKey},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [size, wanted, rest @ ..] = data else {
        return;
    };
    let key = TokenKey::derive(&SecretKey::parse("sk_test_fuzz_resume_tokens").expect("key"));
    if let Ok(token) = std::str::from_utf8(rest) {
        // Nobody can forge a tag: whatever was sent, it is refused.
        let opened = key.open::<serde_json::Value>(token);
        assert!(
            matches!(
                opened,
                Err(TokenError::Malformed | TokenError::BadSignature)
            ),
            "{opened:?}"
        );
    }
    let (json, page) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return;
    };
    let token = key.seal(&value);
    let opened: serde_json::Value = key.open(&token).expect("a sealed token opens");
    // (Compared as cursors: JSON floats need not survive text exactly, and a
    // cursor holds none.)
    let cursor = Cursor::from_json(opened);
    assert_eq!(cursor, Cursor::from_json(value));
    let Ok(cursor) = cursor else {
        return;
    };
    let chunk_size = usize::from(*size) % 64 + 1;
    let wanted = if *wanted == 0 {
        u64::MAX
    } else {
        u64::from(*wanted)
    };
    let rows = ClerkUser::parse_list(page).unwrap_or_default();
    let Ok(step) = export::step(&cursor, wanted, chunk_size, rows) else {
        return;
    };
    assert!(
        (1..=MAX_PAGE).contains(&step.query.limit),
        "{:?}",
        step.query
    );
    let _ = step.query.params();
    let mut delivered = 0u64;
    for chunk in &step.delivered {
        assert!(chunk.users.len() <= chunk_size);
        delivered += chunk.users.len() as u64;
        let token = key.seal(&cursor.at(&chunk.at));
        let again = Cursor::from_json(key.open(&token).expect("opens")).expect("a cursor");
        assert_eq!(again.at, chunk.at);
        assert_eq!(again.filter, cursor.filter);
    }
    assert!(delivered <= wanted);
    if let Some(next) = &step.next {
        let token = key.seal(&cursor.at(next));
        let again = Cursor::from_json(key.open(&token).expect("opens")).expect("a cursor");
        assert_eq!(&again.at, next);
    }
});
