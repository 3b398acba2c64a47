//! A model of Clerk's list endpoint for paging tests (bounds strict or
//! inclusive, ties in any order) and an export driver over it.

use std::collections::HashMap;

use serde_json::json;

use super::paging::{Chunking, Position, query, read};
use crate::clerk::{ClerkUser, ListQuery, OrderBy, OrderField, TimeField, UserFilter};

/// Clerk's list endpoint over `(id, created_at, username)` rows.
pub(super) struct Model {
    pub(super) users: Vec<(String, i64, String)>,
    /// Whether `created_at_after/before` include the bound itself.
    inclusive: bool,
    /// Shuffles users sharing a sort key on every request (else: by id).
    shuffle: Option<fastrand::Rng>,
    /// Requests served.
    pub(super) requests: usize,
}

impl Model {
    pub(super) fn new(
        users: Vec<(String, i64, String)>,
        inclusive: bool,
        shuffle: Option<u64>,
    ) -> Self {
        Self {
            users,
            inclusive,
            shuffle: shuffle.map(fastrand::Rng::with_seed),
            requests: 0,
        }
    }

    pub(super) fn list(&mut self, query: &ListQuery) -> Vec<ClerkUser> {
        self.requests += 1;
        let inclusive = self.inclusive;
        let passes = |at: i64| {
            query
                .filter
                .times
                .iter()
                .all(|&(field, bound)| match field {
                    TimeField::CreatedAfter => at > bound || (inclusive && at == bound),
                    TimeField::CreatedBefore => at < bound || (inclusive && at == bound),
                    _ => true,
                })
        };
        let mut rows: Vec<(u64, &(String, i64, String))> = self
            .users
            .iter()
            .filter(|(_, at, _)| passes(*at))
            .map(|user| (self.shuffle.as_mut().map_or(0, |rng| rng.u64(..)), user))
            .collect();
        let order = query.order_by;
        rows.sort_by(|(ta, a), (tb, b)| {
            let key = match order.field {
                OrderField::CreatedAt => a.1.cmp(&b.1),
                _ => a.2.cmp(&b.2),
            };
            let key = if order.descending { key.reverse() } else { key };
            key.then(ta.cmp(tb)).then(a.0.cmp(&b.0))
        });
        rows.into_iter()
            .skip(query.offset as usize)
            .take(query.limit as usize)
            .map(|(_, (id, at, name))| json!({"id": id, "created_at": at, "username": name}))
            .filter_map(ClerkUser::from_json)
            .collect()
    }
}

/// `count` users over `spread` distinct milliseconds (ties when spread < count).
pub(super) fn users(
    rng: &mut fastrand::Rng,
    count: usize,
    spread: i64,
) -> Vec<(String, i64, String)> {
    (0..count)
        .map(|n| {
            let at = 1_000 + rng.i64(0..spread);
            (
                format!("user_{n:05}"),
                at,
                format!("name_{:05}", rng.u32(..)),
            )
        })
        .collect()
}

/// An export's outcome: delivered ids, the position after each chunk.
#[derive(Default)]
pub(super) struct Run {
    pub(super) ids: Vec<String>,
    pub(super) keys: Vec<i64>,
    pub(super) positions: Vec<(usize, Position)>,
}

/// Runs an export from `at` to the end (or `wanted` users), calling
/// `between` after every page.
pub(super) fn export(
    model: &mut Model,
    order: OrderBy,
    filter: &UserFilter,
    mut at: Position,
    wanted: u64,
    mut between: impl FnMut(&mut Model),
) -> Run {
    let mut run = Run::default();
    let mut left = wanted;
    loop {
        let query = query(filter, order, &at, left);
        let rows = model.list(&query);
        let chunking = Chunking {
            size: 37,
            pending: run.ids.len() % 37,
        };
        let page = read(order, &at, &query, rows, chunking, left).unwrap();
        let mut carried = chunking.pending;
        for (users, position) in page.chunks {
            carried += users.len();
            assert!(carried <= chunking.size, "a message of at most page_size");
            carried %= chunking.size;
            left -= users.len() as u64;
            for user in users {
                run.keys.push(user.millis("created_at").unwrap());
                run.ids.push(user.id().to_owned());
            }
            run.positions.push((run.ids.len(), position));
        }
        between(model);
        match page.next {
            Some(next) => at = next,
            None => return run,
        }
        assert!(model.requests < 100_000, "no progress");
    }
}

pub(super) fn order(text: &str) -> OrderBy {
    text.parse().unwrap()
}

/// Asserts each of `expected` delivered exactly once and no id twice.
pub(super) fn assert_exactly_once(ids: &[String], expected: impl IntoIterator<Item = String>) {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in ids {
        *counts.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let missing: Vec<String> = expected
        .into_iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
}

pub(super) fn assert_sorted(keys: &[i64], descending: bool) {
    let sorted = keys.windows(2).all(|w| {
        if descending {
            w[0] >= w[1]
        } else {
            w[0] <= w[1]
        }
    });
    assert!(sorted, "not in the requested order");
}
