//! Users as the servers send them: `User` messages encoded once, and a memo
//! of them for the users served most, so that a cache hit is a lookup and a
//! copy rather than a parse of Clerk's JSON and an encoding.
//!
//! The servers' messages that hold a `User` (`grpc::wire`, made by
//! `build.rs`) carry an [`EncodedUser`]: the bytes of a `pb::User` message,
//! written into the answer as they are. The bytes on the wire are the same as
//! for the `pb::User` they were made from.
//!
//! [`EncodedUsers`] remembers the encoding of recently served users (by id
//! and [`Visibility`]), bounded by bytes. An entry is the encoding of one
//! exact text of the user (Clerk's JSON): it is used only for that very text,
//! so a user changed by Clerk, a webhook or a write is encoded again on its
//! next answer, and the memo needs no invalidation of its own. The user cache
//! still decides what is served (fresh, stale, missing); the memo only saves
//! the work of turning it into a message.
//!
//! The memo is a table of slots, each holding at most one encoding: the slot
//! of a user is picked by hashing its id and visibility, and a user served
//! from the cache takes its slot over. A lookup is a hash, an uncontended
//! lock and a pointer comparison — a batch of 100 does it 100 times, where a
//! concurrent cache's lookup (its read log, its clock) cost as much as the
//! rest of the batch's work. Two hot users sharing a slot take turns; with a
//! slot per 2 KiB of the bound, that is rare.

use std::{
    hash::BuildHasher as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::{BufMut, Bytes};
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

/// Bytes counted per remembered encoding on top of its bytes and id: the
/// handles to its id and text.
const MEMO_OVERHEAD: usize = 64;

/// Bytes of the bound per slot of the table: about one encoded user.
const BYTES_PER_SLOT: u64 = 2 << 10;

/// Most slots of a table (80 MiB of them).
const MAX_SLOTS: u64 = 1 << 20;

/// One remembered encoding: of this exact text of the user, as callers with
/// this visibility see it.
#[derive(Debug)]
struct Memo {
    id: Arc<str>,
    visibility: Visibility,
    text: Arc<str>,
    encoded: EncodedUser,
}

impl Memo {
    /// The bytes it is counted for.
    fn size(&self) -> u64 {
        (self.id.len() + self.encoded.len() + MEMO_OVERHEAD) as u64
    }
}

/// Encoded users, remembered for the users served recently (see the module
/// docs).
#[derive(Debug)]
pub(crate) struct EncodedUsers {
    /// A power of two of them.
    slots: Box<[Mutex<Option<Memo>>]>,
    hasher: foldhash::fast::RandomState,
    /// Bytes of the memos held, never over `max_bytes`.
    held: AtomicU64,
    max_bytes: u64,
}

impl EncodedUsers {
    /// A memo holding at most `max_bytes` of encodings (and their ids), in
    /// a table of one slot per 2 KiB of it.
    pub(crate) fn new(max_bytes: u64) -> Self {
        let slots = (max_bytes / BYTES_PER_SLOT)
            .clamp(1, MAX_SLOTS)
            .next_power_of_two();
        Self {
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
            hasher: foldhash::fast::RandomState::default(),
            held: AtomicU64::new(0),
            max_bytes,
        }
    }

    /// `user` as a caller with `visibility` sees it, encoded: remembered if
    /// this text of the user was encoded before, encoded otherwise, and then
    /// remembered if it was served from the cache (`hit`): a user fetched
    /// once and never asked for again takes no memory here.
    pub(crate) fn get(&self, user: &ClerkUser, visibility: Visibility, hit: bool) -> EncodedUser {
        let id = user.id();
        let slot = self.slot(id, visibility);
        let text = user.shared_text();
        if let Some(known) = &*lock(slot)
            && known.visibility == visibility
            && *known.id == *id
            && (Arc::ptr_eq(&known.text, &text) || known.text == text)
        {
            return known.encoded.clone();
        }
        let encoded = EncodedUser::new(&convert::user(user, visibility));
        if hit {
            self.remember(
                slot,
                Memo {
                    id: user.shared_id(),
                    visibility,
                    text,
                    encoded: encoded.clone(),
                },
            );
        }
        encoded
    }

    /// Users of a batch, encoded as [`EncodedUsers::get`] does (`hit`: all
    /// were served from the cache).
    pub(crate) fn get_all(
        &self,
        users: &[ClerkUser],
        visibility: Visibility,
        hit: bool,
    ) -> Vec<EncodedUser> {
        users
            .iter()
            .map(|user| self.get(user, visibility, hit))
            .collect()
    }

    /// The slot of `id` seen with `visibility`.
    fn slot(&self, id: &str, visibility: Visibility) -> &Mutex<Option<Memo>> {
        let hash = self.hasher.hash_one((id, visibility == Visibility::Full));
        // A power of two of slots: the low bits pick one.
        &self.slots[hash as usize & (self.slots.len() - 1)]
    }

    /// Puts `memo` in `slot`, in place of what it held, unless the bytes
    /// held would then pass the bound (the slot then keeps what it had).
    fn remember(&self, slot: &Mutex<Option<Memo>>, memo: Memo) {
        let mut held = lock(slot);
        let freed = held.as_ref().map_or(0, Memo::size);
        let added = memo.size();
        // Under the slot's lock, `freed` is this slot's own: the sum stays
        // exact whatever other slots do meanwhile.
        let fits = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                let total = total - freed + added;
                (total <= self.max_bytes).then_some(total)
            });
        if fits.is_ok() {
            *held = Some(memo);
        }
    }

    /// Bytes of the encodings remembered now.
    #[cfg(test)]
    fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Encodings remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| lock(slot).is_some())
            .count()
    }
}

/// The memo a slot holds (a panic while it was held left it whole: a slot
/// is only ever replaced as a whole).
fn lock(slot: &Mutex<Option<Memo>>) -> std::sync::MutexGuard<'_, Option<Memo>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[test]
    fn only_users_served_from_the_cache_are_remembered() {
        let users = EncodedUsers::new(1 << 20);
        let alice = user(ALICE);
        users.get(&alice, Visibility::Full, false);
        assert_eq!(users.remembered(), 0);
        users.get(&alice, Visibility::Full, true);
        assert_eq!(users.remembered(), 1);
        users.get(&alice, Visibility::WithoutPrivateMetadata, true);
        assert_eq!(users.remembered(), 2);
    }

    #[test]
    fn the_memo_never_holds_more_than_its_bound() {
        let users: Vec<ClerkUser> = (0..200)
            .map(|i| {
                let name = "x".repeat(3000 + i);
                user(&format!(r#"{{"id":"user_{i}","first_name":"{name}"}}"#))
            })
            .collect();
        let one = EncodedUser::new(&convert::user(&users[199], Visibility::Full)).len() as u64;
        let bound = 20 * (one + 64);
        let memo = EncodedUsers::new(bound);
        for round in 0..3 {
            for user in &users {
                let served = memo.get(user, Visibility::Full, true);
                assert_eq!(
                    served,
                    EncodedUser::new(&convert::user(user, Visibility::Full))
                );
                assert!(
                    memo.held_bytes() <= bound,
                    "round {round}: {}",
                    memo.held_bytes()
                );
            }
        }
        // Bytes bind before slots do (users of over 3 KB, a slot per 2 KiB):
        // full, or nearly, and what it holds is counted exactly.
        let counted: u64 = memo
            .slots
            .iter()
            .filter_map(|slot| lock(slot).as_ref().map(Memo::size))
            .sum();
        assert_eq!(counted, memo.held_bytes());
        assert!(memo.remembered() >= 10, "{}", memo.remembered());
    }

    #[test]
    fn the_memo_serves_the_encoding_of_the_same_text_only() {
        let users = EncodedUsers::new(1 << 20);
        let alice = user(ALICE);
        for visibility in [Visibility::Full, Visibility::WithoutPrivateMetadata] {
            let expected = EncodedUser::new(&convert::user(&alice, visibility));
            assert_eq!(users.get(&alice, visibility, true), expected);
            assert_eq!(users.get(&alice, visibility, true), expected);
        }
        let hidden = users
            .get(&alice, Visibility::WithoutPrivateMetadata, true)
            .decode()
            .unwrap();
        assert!(hidden.private_metadata.is_none());
        assert!(!hidden.raw_json.contains("private_metadata"));
        // Alice changed: her new text is encoded again, in both memos.
        let renamed = user(r#"{"id":"user_a","first_name":"Alicia","private_metadata":{"k":2}}"#);
        for visibility in [Visibility::Full, Visibility::WithoutPrivateMetadata] {
            let served = users.get(&renamed, visibility, true).decode().unwrap();
            assert_eq!(served.first_name.as_deref(), Some("Alicia"));
            assert_eq!(served, convert::user(&renamed, visibility));
        }
    }
}
