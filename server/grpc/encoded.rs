//! Users as the servers send them: `User` messages encoded once, and a memo
//! of them for the users served most, so that a cache hit is a lookup and a
//! copy rather than a parse of Clerk's JSON and an encoding.
//!
//! The servers' messages that hold a `User` (`grpc::wire`, made by
//! `build.rs`) carry an [`EncodedUser`]: the bytes of a `pb::User` message,
//! written into the answer as they are. The bytes on the wire are the same as
//! for the `pb::User` they were made from.
//!
//! [`EncodedUsers`] remembers the encoding of recently served users, one memo
//! per [`Visibility`], bounded by bytes. An entry is the encoding of one exact
//! text of the user (Clerk's JSON): it is used only for that very text, so a
//! user changed by Clerk, a webhook or a write is encoded again on its next
//! answer, and the memo needs no invalidation of its own. The user cache
//! still decides what is served (fresh, stale, missing); the memo only saves
//! the work of turning it into a message.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use moka::future::Cache;
use prost::Message;

use super::convert::{self, Visibility};
use crate::{clerk::ClerkUser, pb};

/// A `User` message, already encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedUser(Bytes);

impl EncodedUser {
    /// Encodes `user`.
    pub fn new(user: &pb::User) -> Self {
        Self(user.encode_to_vec().into())
    }

    /// The message, decoded again.
    pub fn decode(&self) -> Result<pb::User, prost::DecodeError> {
        pb::User::decode(&self.0[..])
    }

    /// Its size, in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it encodes an empty message.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Message for EncodedUser {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Decoding is never on a path of the broker's (the servers only send
    /// users): done through `pb::User`, for completeness.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        let mut user = self.decode()?;
        user.merge_field(tag, wire_type, buf, ctx)?;
        *self = Self::new(&user);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// Bytes counted per memo entry on top of the encoding: the key, the shared
/// text's handle and moka's bookkeeping.
const MEMO_OVERHEAD: usize = 160;

/// One remembered encoding: of this exact text of the user.
#[derive(Clone, Debug)]
struct Memo {
    text: Arc<str>,
    encoded: EncodedUser,
}

/// Encoded users, remembered for the users served most (see the module docs).
#[derive(Debug)]
pub(crate) struct EncodedUsers {
    /// One memo per visibility: `Full`, then `WithoutPrivateMetadata`.
    memos: [Cache<Arc<str>, Memo>; 2],
}

impl EncodedUsers {
    /// Memos holding at most `max_bytes` of encodings in all.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let memo = || {
            Cache::builder()
                .max_capacity((max_bytes / 2).max(1))
                .weigher(|id: &Arc<str>, memo: &Memo| {
                    u32::try_from(id.len() + memo.encoded.len() + MEMO_OVERHEAD).unwrap_or(u32::MAX)
                })
                .build()
        };
        Self {
            memos: [memo(), memo()],
        }
    }

    /// `user` as a caller with `visibility` sees it, encoded: remembered if
    /// this text of the user was encoded before, encoded otherwise, and then
    /// remembered if it was served from the cache (`hit`): a user fetched
    /// once and never asked for again takes no memory here.
    pub(crate) async fn get(
        &self,
        user: &ClerkUser,
        visibility: Visibility,
        hit: bool,
    ) -> EncodedUser {
        let memo = match visibility {
            Visibility::Full => &self.memos[0],
            Visibility::WithoutPrivateMetadata => &self.memos[1],
        };
        let text = user.shared_text();
        if let Some(known) = memo.get(user.id()).await
            && (Arc::ptr_eq(&known.text, &text) || known.text == text)
        {
            return known.encoded;
        }
        let encoded = EncodedUser::new(&convert::user(user, visibility));
        if !hit {
            return encoded;
        }
        memo.insert(
            user.shared_id(),
            Memo {
                text,
                encoded: encoded.clone(),
            },
        )
        .await;
        encoded
    }

    /// Users of a batch, encoded as [`EncodedUsers::get`] does (`hit`: all
    /// were served from the cache).
    pub(crate) async fn get_all(
        &self,
        users: &[ClerkUser],
        visibility: Visibility,
        hit: bool,
    ) -> Vec<EncodedUser> {
        let mut encoded = Vec::with_capacity(users.len());
        for user in users {
            encoded.push(self.get(user, visibility, hit).await);
        }
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> ClerkUser {
        ClerkUser::from_text(text).unwrap()
    }

    const ALICE: &str = r#"{"id":"user_a","first_name":"Alice","private_metadata":{"k":1}}"#;

    #[test]
    fn an_encoded_user_is_the_bytes_of_its_message() {
        let message = convert::user(&user(ALICE), Visibility::Full);
        let encoded = EncodedUser::new(&message);
        assert_eq!(encoded.encode_to_vec(), message.encode_to_vec());
        assert_eq!(encoded.decode().unwrap(), message);
        // Inside another message, it is a field like any other.
        let answer = super::super::wire::BatchGetUsersResponse {
            users: vec![encoded.clone(), encoded],
            missing_user_ids: vec!["user_gone".into()],
        };
        let plain = pb::BatchGetUsersResponse {
            users: vec![message.clone(), message],
            missing_user_ids: vec!["user_gone".into()],
        };
        assert_eq!(answer.encode_to_vec(), plain.encode_to_vec());
        assert_eq!(
            super::super::wire::BatchGetUsersResponse::decode(&plain.encode_to_vec()[..]).unwrap(),
            answer
        );
    }

    #[tokio::test]
    async fn only_users_served_from_the_cache_are_remembered() {
        let users = EncodedUsers::new(1 << 20);
        let alice = user(ALICE);
        users.get(&alice, Visibility::Full, false).await;
        users.memos[0].run_pending_tasks().await;
        assert_eq!(users.memos[0].entry_count(), 0);
        users.get(&alice, Visibility::Full, true).await;
        users.memos[0].run_pending_tasks().await;
        assert_eq!(users.memos[0].entry_count(), 1);
        assert_eq!(users.memos[1].entry_count(), 0);
    }

    #[tokio::test]
    async fn the_memo_serves_the_encoding_of_the_same_text_only() {
        let users = EncodedUsers::new(1 << 20);
        let alice = user(ALICE);
        for visibility in [Visibility::Full, Visibility::WithoutPrivateMetadata] {
            let expected = EncodedUser::new(&convert::user(&alice, visibility));
            assert_eq!(users.get(&alice, visibility, true).await, expected);
            assert_eq!(users.get(&alice, visibility, true).await, expected);
        }
        let hidden = users
            .get(&alice, Visibility::WithoutPrivateMetadata, true)
            .await
            .decode()
            .unwrap();
        assert!(hidden.private_metadata.is_none());
        assert!(!hidden.raw_json.contains("private_metadata"));
        // Alice changed: her new text is encoded again, in both memos.
        let renamed = user(r#"{"id":"user_a","first_name":"Alicia","private_metadata":{"k":2}}"#);
        for visibility in [Visibility::Full, Visibility::WithoutPrivateMetadata] {
            let served = users
                .get(&renamed, visibility, true)
                .await
                .decode()
                .unwrap();
            assert_eq!(served.first_name.as_deref(), Some("Alicia"));
            assert_eq!(served, convert::user(&renamed, visibility));
        }
    }
}
