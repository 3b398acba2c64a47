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
//! and [`Visibility`]), bounded by bytes; and, for the Clerk-compatible
//! front, their JSON text as a caller with that visibility reads it (the
//! cache keeps texts packed: a remembered one is not unpacked again). One
//! memo serves both, within one bound. An entry is the encoding of one
//! exact text of the user (Clerk's JSON): it is used only for that very text,
//! so a user changed by Clerk, a webhook or a write is encoded again on its
//! next answer, and the memo needs no invalidation of its own. The user cache
//! still decides what is served (fresh, stale, missing); the memo only saves
//! the work of turning it into a message.
//!
//! The memo is a table of buckets of four slots (one slot per 2 KiB of the
//! bound): the bucket of a user is picked by hashing its id and the form
//! kept (a message or a text, for one visibility),
//! and a user served from the cache takes a slot of its bucket, the least
//! recently used one when all four are taken. A lookup is a hash, an
//! uncontended lock and a few comparisons — a batch of 100 does it 100
//! times, where a concurrent cache's lookup (its read log, its clock) cost as
//! much as the rest of the batch's work. Hot users sharing a bucket keep
//! their encodings unless more than four of them do (with one slot per
//! user, two hot users sharing a slot took turns: in one run of `bench-hot`
//! in seven, two of the batch's 100 users were encoded again on every call).

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
use crate::{
    clerk::{ClerkUser, PackedText},
    pb,
};

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

/// Bytes counted per remembered encoding on top of its bytes, id and packed
/// text (which it keeps alive): the handles to them.
const MEMO_OVERHEAD: usize = 64;

/// Bytes of the bound per slot of the table: about one encoded user.
const BYTES_PER_SLOT: u64 = 2 << 10;

/// Slots per bucket.
const WAYS: usize = 4;

/// Most buckets of a table (80 MiB of slots).
const MAX_BUCKETS: u64 = 1 << 18;

/// One remembered encoding: of this exact text of the user, as callers with
/// this visibility see it.
#[derive(Debug)]
struct Memo {
    id: Arc<str>,
    form: Form,
    /// The text as the cache keeps it.
    text: PackedText,
    /// The `User` message's bytes, or the JSON text's.
    bytes: Bytes,
}

/// What of a user a memo entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// The `User` message a caller with this visibility gets (gRPC).
    Message(Visibility),
    /// The JSON text a caller with this visibility gets (the front).
    Json(Visibility),
}

impl Form {
    /// A number of its own, for hashing.
    fn number(self) -> u8 {
        match self {
            Self::Message(Visibility::Full) => 0,
            Self::Message(Visibility::WithoutPrivateMetadata) => 1,
            Self::Json(Visibility::Full) => 2,
            Self::Json(Visibility::WithoutPrivateMetadata) => 3,
        }
    }
}

impl Memo {
    /// The bytes it is counted for.
    fn size(&self) -> u64 {
        (self.id.len() + self.text.len() + self.bytes.len() + MEMO_OVERHEAD) as u64
    }

    /// Whether it holds `form` of `id`.
    fn is_of(&self, id: &str, form: Form) -> bool {
        self.form == form && *self.id == *id
    }
}

/// The slots of one bucket, the most recently used first (taken slots
/// before empty ones).
type Bucket = [Option<Memo>; WAYS];

/// Encoded users, remembered for the users served recently (see the module
/// docs).
#[derive(Debug)]
pub struct EncodedUsers {
    /// A power of two of them.
    buckets: Box<[Mutex<Bucket>]>,
    hasher: foldhash::fast::RandomState,
    /// Bytes of the memos held, never over `max_bytes`.
    held: AtomicU64,
    max_bytes: u64,
}

impl EncodedUsers {
    /// A memo holding at most `max_bytes` of encodings (and their ids), in
    /// a table of one slot per 2 KiB of it.
    pub fn new(max_bytes: u64) -> Self {
        let buckets = (max_bytes / BYTES_PER_SLOT / WAYS as u64)
            .clamp(1, MAX_BUCKETS)
            .next_power_of_two();
        Self {
            buckets: (0..buckets).map(|_| Mutex::default()).collect(),
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
        EncodedUser(self.form_of(user, Form::Message(visibility), hit, || {
            EncodedUser::new(&convert::user(user, visibility)).0
        }))
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

    /// `user`'s JSON text as a caller with `visibility` reads it (the front's
    /// answers: less every `private_metadata` member without the scope),
    /// remembered as [`EncodedUsers::get`] remembers encodings.
    pub(crate) fn json(&self, user: &ClerkUser, visibility: Visibility, hit: bool) -> Bytes {
        self.form_of(user, Form::Json(visibility), hit, || {
            // A text that cannot be filtered (never: see `visible_text`) is
            // answered as an empty object rather than with the member.
            convert::visible_text(user, visibility)
                .map_or(Bytes::from_static(b"{}"), |text| text.into_owned().into())
        })
    }

    /// `form` of `user`: remembered if made from this text of the user
    /// before, made otherwise, and then remembered if `hit`.
    fn form_of(
        &self,
        user: &ClerkUser,
        form: Form,
        hit: bool,
        make: impl FnOnce() -> Bytes,
    ) -> Bytes {
        // Users served from the cache hold their text packed, as the memo
        // keeps it; a user just read from Clerk is encoded.
        let Some(text) = user.packed_text() else {
            return make();
        };
        let id = user.id();
        let bucket = self.bucket(id, form);
        {
            let mut slots = lock(bucket);
            if let Some(at) = position(&slots, id, form)
                && let Some(known) = &slots[at]
                && known.text.is_same(text)
            {
                let bytes = known.bytes.clone();
                // Now the most recently used.
                slots[..=at].rotate_right(1);
                return bytes;
            }
        }
        let bytes = make();
        if hit {
            self.remember(
                bucket,
                Memo {
                    id: user.shared_id(),
                    form,
                    text: text.clone(),
                    bytes: bytes.clone(),
                },
            );
        }
        bytes
    }

    /// The bucket of `form` of `id`.
    fn bucket(&self, id: &str, form: Form) -> &Mutex<Bucket> {
        let hash = self.hasher.hash_one((id, form.number()));
        // A power of two of buckets: the low bits pick one.
        &self.buckets[hash as usize & (self.buckets.len() - 1)]
    }

    /// Puts `memo` first in `bucket`, in place of the user's older entry of
    /// that form if the bucket holds one, else of the least recently used
    /// slot. When the bytes held would then pass the bound, the bucket's
    /// other entries make room, least recently used first; when even an
    /// empty bucket would not, it keeps what it had.
    fn remember(&self, bucket: &Mutex<Bucket>, memo: Memo) {
        let mut slots = lock(bucket);
        let at = position(&slots, &memo.id, memo.form).unwrap_or(WAYS - 1);
        let added = memo.size();
        // The slots given up: `at`, then the others from the least recent.
        let mut candidates = [at; WAYS];
        let mut count = 1;
        for index in (0..WAYS).rev() {
            if index != at && slots[index].is_some() {
                candidates[count] = index;
                count += 1;
            }
        }
        let mut freed = 0;
        for given in 1..=count {
            freed += slots[candidates[given - 1]].as_ref().map_or(0, Memo::size);
            // Under the bucket's lock, `freed` is this bucket's own: the sum
            // stays exact whatever other buckets do meanwhile.
            let fits = self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                    let total = total - freed + added;
                    (total <= self.max_bytes).then_some(total)
                });
            if fits.is_ok() {
                let mut old = std::mem::take(&mut *slots).map(Some);
                for &index in &candidates[..given] {
                    old[index] = None;
                }
                // `memo` first, then the entries kept in their order.
                let kept = old.into_iter().flatten().flatten();
                for (slot, entry) in slots.iter_mut().zip(std::iter::once(memo).chain(kept)) {
                    *slot = Some(entry);
                }
                return;
            }
        }
    }

    /// Bytes of the encodings remembered now.
    #[cfg(test)]
    fn held_bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The encodings remembered now.
    #[cfg(test)]
    fn memos(&self) -> Vec<(Arc<str>, Form, u64)> {
        self.buckets
            .iter()
            .flat_map(|bucket| {
                lock(bucket)
                    .iter()
                    .flatten()
                    .map(|memo| (memo.id.clone(), memo.form, memo.size()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many encodings are remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.memos().len()
    }
}

/// Where `slots` hold `form` of `id`.
fn position(slots: &Bucket, id: &str, form: Form) -> Option<usize> {
    slots
        .iter()
        .position(|slot| slot.as_ref().is_some_and(|memo| memo.is_of(id, form)))
}

/// The slots of a bucket (a panic while it was held left them whole: slots
/// are only rotated, or refilled from entries taken out whole).
fn lock(bucket: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    bucket.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user as the cache serves it: its text packed.
    fn user(text: &str) -> ClerkUser {
        let read = ClerkUser::from_text(text).unwrap();
        ClerkUser::packed(read.shared_id(), read.pack())
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
        // A user read from Clerk (its text not packed by the cache) is
        // encoded, the same, and not remembered.
        let read = ClerkUser::from_text(r#"{"id":"user_b","first_name":"Bob"}"#).unwrap();
        let encoded = users.get(&read, Visibility::Full, true);
        assert_eq!(
            encoded,
            EncodedUser::new(&convert::user(&read, Visibility::Full))
        );
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
        let counted: u64 = memo.memos().iter().map(|(_, _, size)| size).sum();
        assert_eq!(counted, memo.held_bytes());
        assert!(memo.remembered() >= 10, "{}", memo.remembered());
    }

    #[test]
    fn users_sharing_a_bucket_keep_their_encodings_and_the_least_recent_goes() {
        // 8 KiB: one bucket of four slots, and bytes for more than five users.
        let memo = EncodedUsers::new(8 << 10);
        assert_eq!(memo.buckets.len(), 1);
        let users: Vec<ClerkUser> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|name| user(&format!(r#"{{"id":"user_{name}","first_name":"{name}"}}"#)))
            .collect();
        let first: Vec<EncodedUser> = users[..4]
            .iter()
            .map(|user| memo.get(user, Visibility::Full, true))
            .collect();
        // All four served from the memo: the very bytes encoded first.
        for _ in 0..3 {
            for (user, first) in users[..4].iter().zip(&first) {
                let served = memo.get(user, Visibility::Full, true);
                assert_eq!(served.0.as_ptr(), first.0.as_ptr(), "{}", user.id());
            }
        }
        // "a" served again is the most recent; a fifth user takes the slot
        // of the least recently served, "b".
        memo.get(&users[0], Visibility::Full, true);
        memo.get(&users[4], Visibility::Full, true);
        let mut held: Vec<String> = memo.memos().iter().map(|(id, ..)| id.to_string()).collect();
        held.sort();
        assert_eq!(held, ["user_a", "user_c", "user_d", "user_e"]);
        let counted: u64 = memo.memos().iter().map(|(_, _, size)| size).sum();
        assert_eq!(counted, memo.held_bytes());
        let again = memo.get(&users[1], Visibility::Full, true);
        assert_ne!(again.0.as_ptr(), first[1].0.as_ptr());
        assert_eq!(again, first[1]);
    }

    #[test]
    fn a_full_memo_makes_room_in_the_bucket_for_the_user_served_last() {
        // One bucket; bytes for one of these users (each ~5 KB encoded),
        // not two.
        let memo = EncodedUsers::new(8 << 10);
        let big = |id: &str, name: &str| {
            user(&format!(
                r#"{{"id":"{id}","first_name":"{}"}}"#,
                name.repeat(2500)
            ))
        };
        let (alice, bob) = (big("user_a", "a"), big("user_b", "b"));
        memo.get(&alice, Visibility::Full, true);
        let ids = |memo: &EncodedUsers| -> Vec<String> {
            memo.memos().iter().map(|(id, ..)| id.to_string()).collect()
        };
        assert_eq!(ids(&memo), ["user_a"]);
        // Bob does not fit beside Alice: she makes room.
        memo.get(&bob, Visibility::Full, true);
        assert_eq!(ids(&memo), ["user_b"]);
        // Bob's new text takes his old entry's place.
        let renamed = big("user_b", "c");
        let served = memo.get(&renamed, Visibility::Full, true);
        assert_eq!(
            served,
            EncodedUser::new(&convert::user(&renamed, Visibility::Full))
        );
        assert_eq!(ids(&memo), ["user_b"]);
        let counted: u64 = memo.memos().iter().map(|(_, _, size)| size).sum();
        assert_eq!(counted, memo.held_bytes());
        assert!(memo.held_bytes() <= 8 << 10);
        // An entry larger than the whole bound is not kept; what was stays.
        memo.get(&big("user_d", "dd"), Visibility::Full, true);
        assert_eq!(ids(&memo), ["user_b"]);
    }

    #[test]
    fn the_front_gets_the_text_remembered_beside_the_encodings() {
        let memo = EncodedUsers::new(1 << 20);
        let alice = user(ALICE);
        let full = memo.json(&alice, Visibility::Full, true);
        assert_eq!(&full[..], ALICE.as_bytes());
        let hidden = memo.json(&alice, Visibility::WithoutPrivateMetadata, true);
        assert_eq!(&hidden[..], br#"{"id":"user_a","first_name":"Alice"}"#);
        memo.get(&alice, Visibility::Full, true);
        assert_eq!(memo.remembered(), 3);
        // Served again from the memo: the very bytes, not unpacked again.
        let again = memo.json(&alice, Visibility::Full, true);
        assert_eq!(again.as_ptr(), full.as_ptr());
        // A user read from Clerk is written out, not remembered.
        let read = ClerkUser::from_text(r#"{"id":"user_b","private_metadata":{}}"#).unwrap();
        assert_eq!(
            &memo.json(&read, Visibility::WithoutPrivateMetadata, true)[..],
            br#"{"id":"user_b"}"#
        );
        assert_eq!(memo.remembered(), 3);
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
