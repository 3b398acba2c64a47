//! Paging against a model of Clerk's list endpoint: bounds strict or
//! inclusive, ties in any order, users created and deleted between pages.

use std::collections::HashSet;

use serde_json::json;

use super::*;
use crate::export::model::{Model, assert_exactly_once, assert_sorted, export, order, users};

#[test]
fn ties_are_delivered_once_whatever_the_tie_order_and_the_bound() {
    for seed in 0..6 {
        let mut rng = fastrand::Rng::with_seed(seed);
        // 3,000 users over 400 ms: about 7.5 per millisecond, some far more.
        let all = users(&mut rng, 3_000, 400);
        for (inclusive, text) in [(false, "+created_at"), (true, "-created_at")] {
            let mut model = Model::new(all.clone(), inclusive, Some(seed));
            let run = export(
                &mut model,
                order(text),
                &UserFilter::default(),
                Position::default(),
                u64::MAX,
                |_| {},
            );
            assert_exactly_once(&run.ids, all.iter().map(|u| u.0.clone()));
            assert_eq!(run.ids.len(), all.len());
            assert_sorted(&run.keys, order(text).descending);
            // Keyset pages overlap only by the few users of one millisecond.
            assert!(
                model.requests <= 3_000 / 450 + 2,
                "{} requests",
                model.requests
            );
        }
    }
}

#[test]
fn milliseconds_shared_by_more_than_a_page_are_read_by_offset() {
    let mut rng = fastrand::Rng::with_seed(9);
    let mut all = users(&mut rng, 1_500, 50);
    // A bulk import: 1,200 users in one millisecond, and 600 in the next.
    all.extend((0..1_200).map(|n| (format!("bulk_a{n:04}"), 500, format!("a{n}"))));
    all.extend((0..600).map(|n| (format!("bulk_b{n:04}"), 501, format!("b{n}"))));
    for inclusive in [false, true] {
        for text in ["+created_at", "-created_at"] {
            let mut model = Model::new(all.clone(), inclusive, None);
            let run = export(
                &mut model,
                order(text),
                &UserFilter::default(),
                Position::default(),
                u64::MAX,
                |_| {},
            );
            assert_exactly_once(&run.ids, all.iter().map(|u| u.0.clone()));
            assert_eq!(run.ids.len(), all.len(), "{text} inclusive={inclusive}");
            assert_sorted(&run.keys, order(text).descending);
            let tokens = run.positions.iter().map(|(_, p)| p.seen.len());
            assert!(tokens.max().unwrap() <= MAX_SEEN);
        }
    }
    // REWIND deletions per page inside the bulk millisecond.
    for text in ["+created_at", "-created_at"] {
        let mut model = Model::new(all.clone(), true, None);
        let mut deleted = HashSet::new();
        let run = export(
            &mut model,
            order(text),
            &UserFilter::default(),
            Position::default(),
            u64::MAX,
            |model| {
                for _ in 0..REWIND {
                    let bulk: Vec<usize> = (0..model.users.len())
                        .filter(|&i| model.users[i].1 == 500)
                        .collect();
                    let at = bulk[rng.usize(..bulk.len())];
                    deleted.insert(model.users.remove(at).0);
                }
            },
        );
        let stable = all
            .iter()
            .map(|u| u.0.clone())
            .filter(|id| !deleted.contains(id));
        assert_exactly_once(&run.ids, stable);
        assert_sorted(&run.keys, order(text).descending);
    }
}

#[test]
fn users_existing_throughout_are_delivered_once_while_others_come_and_go() {
    for seed in 0..8 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let all = users(&mut rng, 4_000, 1_500);
        let inclusive = seed % 2 == 1;
        let text = if seed % 4 < 2 {
            "+created_at"
        } else {
            "-created_at"
        };
        let mut model = Model::new(all.clone(), inclusive, Some(seed));
        let mut deleted = HashSet::new();
        let mut created = 0;
        let run = export(
            &mut model,
            order(text),
            &UserFilter::default(),
            Position::default(),
            u64::MAX,
            |model| {
                // Delete 30 users anywhere, create 30 at existing or new instants.
                for _ in 0..30 {
                    let at = rng.usize(..model.users.len());
                    deleted.insert(model.users.swap_remove(at).0);
                    let instant = match rng.u8(..3) {
                        0 => model.users[rng.usize(..model.users.len())].1,
                        1 => 1_000 + rng.i64(0..1_500),
                        _ => 9_999,
                    };
                    model
                        .users
                        .push((format!("new_{created:05}"), instant, format!("n{created}")));
                    created += 1;
                }
            },
        );
        let stable = all
            .iter()
            .map(|u| u.0.clone())
            .filter(|id| !deleted.contains(id));
        assert_exactly_once(&run.ids, stable);
        assert_sorted(&run.keys, order(text).descending);
    }
}

#[test]
fn resuming_at_any_chunk_continues_exactly_after_it() {
    let mut rng = fastrand::Rng::with_seed(4);
    let mut all = users(&mut rng, 1_200, 100);
    all.extend((0..700).map(|n| (format!("bulk_{n:04}"), 1_050, format!("b{n}"))));
    for text in ["+created_at", "-created_at", "+username"] {
        let mut model = Model::new(all.clone(), true, None);
        let full = export(
            &mut model,
            order(text),
            &UserFilter::default(),
            Position::default(),
            u64::MAX,
            |_| {},
        );
        assert_eq!(full.ids.len(), all.len());
        for (done, position) in full.positions.iter().step_by(3) {
            // Through JSON, as a token carries it.
            let position: Position =
                serde_json::from_str(&serde_json::to_string(position).unwrap()).unwrap();
            let rest = export(
                &mut model,
                order(text),
                &UserFilter::default(),
                position,
                u64::MAX,
                |_| {},
            );
            let mut ids = full.ids[..*done].to_vec();
            ids.extend(rest.ids);
            assert_eq!(ids, full.ids, "{text}, resumed after {done}");
        }
    }
}

#[test]
fn max_users_stops_exactly_and_resumes_from_the_last_chunk() {
    let mut rng = fastrand::Rng::with_seed(5);
    let all = users(&mut rng, 1_000, 300);
    let mut model = Model::new(all.clone(), false, Some(5));
    let head = export(
        &mut model,
        order("-created_at"),
        &UserFilter::default(),
        Position::default(),
        130,
        |_| {},
    );
    assert_eq!(head.ids.len(), 130);
    assert_eq!(model.requests, 1, "one page serves 130 users");
    let (_, at) = head.positions.last().unwrap().clone();
    let tail = export(
        &mut model,
        order("-created_at"),
        &UserFilter::default(),
        at,
        u64::MAX,
        |_| {},
    );
    let mut ids = head.ids;
    ids.extend(tail.ids);
    assert_eq!(ids.len(), all.len());
    assert_exactly_once(&ids, all.iter().map(|u| u.0.clone()));
}

#[test]
fn caller_bounds_combine_with_the_keyset_bound_tightest_wins() {
    let mut filter = UserFilter::default();
    filter.times.push((TimeField::CreatedAfter, 2_000));
    filter.times.push((TimeField::CreatedBefore, 9_000));
    let at = |anchor| Position {
        anchor: Some(anchor),
        last: Some(anchor),
        ..Position::default()
    };
    let bound = |query: ListQuery, field| {
        let found: Vec<i64> = query
            .filter
            .times
            .iter()
            .filter(|(f, _)| *f == field)
            .map(|&(_, ms)| ms)
            .collect();
        assert_eq!(found.len(), 1, "one bound per field");
        found[0]
    };
    let asc = order("+created_at");
    assert_eq!(
        bound(query(&filter, asc, &at(5_000), 10), TimeField::CreatedAfter),
        4_999
    );
    assert_eq!(
        bound(query(&filter, asc, &at(1_500), 10), TimeField::CreatedAfter),
        2_000
    );
    assert_eq!(
        bound(
            query(&filter, asc, &at(5_000), 10),
            TimeField::CreatedBefore
        ),
        9_000
    );
    let desc = order("-created_at");
    assert_eq!(
        bound(
            query(&filter, desc, &at(5_000), 10),
            TimeField::CreatedBefore
        ),
        5_001
    );
    assert_eq!(
        bound(
            query(&filter, desc, &at(9_500), 10),
            TimeField::CreatedBefore
        ),
        9_000
    );
    assert_eq!(
        bound(
            query(&filter, desc, &at(5_000), 10),
            TimeField::CreatedAfter
        ),
        2_000
    );
    // Other orders never add a bound; the first page neither.
    let name = query(&filter, order("+username"), &at(5_000), 10);
    assert_eq!(name.filter, filter);
    assert_eq!(query(&filter, asc, &Position::default(), 10).filter, filter);
    assert_eq!(
        query(&filter, asc, &Position::default(), u64::MAX).limit,
        MAX_PAGE
    );

    // End to end: the caller's bounds hold throughout.
    let mut rng = fastrand::Rng::with_seed(6);
    let all = users(&mut rng, 2_000, 10_000);
    for text in ["+created_at", "-created_at"] {
        let mut model = Model::new(all.clone(), false, Some(1));
        let run = export(
            &mut model,
            order(text),
            &filter,
            Position::default(),
            u64::MAX,
            |_| {},
        );
        let inside = all
            .iter()
            .filter(|u| u.1 > 2_000 && u.1 < 9_000)
            .map(|u| u.0.clone());
        let inside: Vec<String> = inside.collect();
        assert_exactly_once(&run.ids, inside.clone());
        assert_eq!(run.ids.len(), inside.len());
    }
}

#[test]
fn offset_orders_absorb_a_few_deletions_and_creations_between_pages() {
    let mut rng = fastrand::Rng::with_seed(8);
    let all = users(&mut rng, 3_000, 1_000);
    for text in ["+username", "-username"] {
        let mut model = Model::new(all.clone(), false, None);
        let mut deleted = HashSet::new();
        let mut created = 0;
        let run = export(
            &mut model,
            order(text),
            &UserFilter::default(),
            Position::default(),
            u64::MAX,
            |model| {
                for _ in 0..REWIND {
                    let at = rng.usize(..model.users.len());
                    deleted.insert(model.users.swap_remove(at).0);
                }
                for _ in 0..(MAX_SEEN - REWIND) / 2 {
                    model.users.push((
                        format!("new_{created}"),
                        5,
                        format!("name_{:05}", rng.u32(..)),
                    ));
                    created += 1;
                }
            },
        );
        let stable = all
            .iter()
            .map(|u| u.0.clone())
            .filter(|id| !deleted.contains(id));
        assert_exactly_once(&run.ids, stable);
    }
}

const CHUNKS: Chunking = Chunking {
    size: 10,
    pending: 0,
};

#[test]
fn malformed_pages_are_refused() {
    let asc = order("+created_at");
    let query = query(&UserFilter::default(), asc, &Position::default(), 10);
    let row =
        |id: &str, at: i64| ClerkUser::from_json(json!({"id": id, "created_at": at})).unwrap();
    let unsorted = vec![row("a", 2), row("b", 1)];
    assert_eq!(
        read(asc, &Position::default(), &query, unsorted, CHUNKS, 10).unwrap_err(),
        PageError::OutOfOrder
    );
    let undated = vec![ClerkUser::from_json(json!({"id": "a"})).unwrap()];
    assert_eq!(
        read(asc, &Position::default(), &query, undated, CHUNKS, 10).unwrap_err(),
        PageError::NoCreatedAt
    );
}

#[test]
fn a_position_taken_just_after_seen_overflows_resumes_exactly() {
    // 64 users of one millisecond delivered (all remembered), then one more:
    // the position switches to offset paging within that millisecond.
    let mut all: Vec<(String, i64, String)> = (0..200)
        .map(|n| (format!("tie_{n:03}"), 50, format!("t{n}")))
        .collect();
    all.push(("later".into(), 60, "l".into()));
    let asc = order("+created_at");
    let seen: Vec<String> = (0..MAX_SEEN).map(|n| format!("tie_{n:03}")).collect();
    let at = Position {
        anchor: Some(50),
        last: Some(50),
        seen,
        ..Position::default()
    };
    let mut model = Model::new(all.clone(), false, None);
    let first = export(&mut model, asc, &UserFilter::default(), at, 1, |_| {});
    assert_eq!(first.ids, ["tie_064"]);
    let (_, after) = first.positions.last().unwrap().clone();
    assert!(after.partial, "65 ids of one millisecond: paging by offset");
    assert_eq!(after.offset, 65);
    let rest = export(
        &mut model,
        asc,
        &UserFilter::default(),
        after,
        u64::MAX,
        |_| {},
    );
    let expected: Vec<String> = all[65..].iter().map(|u| u.0.clone()).collect();
    assert_eq!(rest.ids, expected);
}
