//! Exports through `ListUsers` (and counts): what is delivered (`delivery`),
//! what upstream work it costs (`flow`), and how a stream follows the policy
//! and ends by its lifetime (`standing`). Helpers shared by all live here.

mod delivery;
mod flow;
mod standing;

use std::collections::HashMap;

use clerk_broker::pb::{ListUsersRequest, ListUsersResponse};
use tonic::{Status, Streaming};

use crate::harness::Harness;

/// What a client saw of one export stream.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) ids: Vec<String>,
    /// `created_at` of each user, Unix ms.
    pub(super) created: Vec<i64>,
    pub(super) tokens: Vec<String>,
    /// How the stream ended: None when it completed.
    pub(super) status: Option<Status>,
}

impl Seen {
    pub(super) fn take(&mut self, message: ListUsersResponse) {
        for user in message.users {
            let at = user.created_at.expect("created_at");
            self.created
                .push(at.seconds * 1_000 + i64::from(at.nanos) / 1_000_000);
            self.ids.push(user.id);
        }
        self.tokens.push(message.resume_token);
    }
}

/// Reads `stream` to its end, calling `after` after each message.
pub(super) async fn read_all(
    stream: &mut Streaming<ListUsersResponse>,
    mut after: impl FnMut(&Seen),
) -> Seen {
    let mut seen = Seen::default();
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                seen.take(message);
                after(&seen);
            }
            Ok(None) => return seen,
            Err(status) => {
                seen.status = Some(status);
                return seen;
            }
        }
    }
}

pub(super) async fn open(
    harness: &Harness,
    request: ListUsersRequest,
) -> Streaming<ListUsersResponse> {
    let mut client = harness.users().await;
    client.list_users(request).await.unwrap().into_inner()
}

pub(super) fn request(order_by: &str, page_size: u32) -> ListUsersRequest {
    ListUsersRequest {
        order_by: order_by.into(),
        page_size,
        ..Default::default()
    }
}

/// Asserts no id twice and every one of `expected` present.
pub(super) fn assert_exactly_once<'a>(
    ids: &[String],
    expected: impl IntoIterator<Item = &'a String>,
) {
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    let repeated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(repeated, 0, "users delivered more than once");
    let missing = expected
        .into_iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    assert_eq!(missing, 0, "users never delivered");
}

pub(super) fn assert_ordered(created: &[i64], descending: bool) {
    let ordered = created.windows(2).all(|pair| {
        if descending {
            pair[0] >= pair[1]
        } else {
            pair[0] <= pair[1]
        }
    });
    assert!(ordered, "users out of the requested order");
}

/// Pages of 500 needed for `users`, plus the boundary overlap of keyset paging.
pub(super) fn pages_for(users: usize) -> u64 {
    users.div_ceil(500) as u64 + 2
}
