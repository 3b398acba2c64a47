//! The time bounds of a user filter (`created_*`, `last_active_*`), from
//! protobuf timestamps to the whole Unix milliseconds Clerk takes.
//!
//! Clerk's bounds are exclusive and its timestamps whole milliseconds, so a
//! bound with a fraction of a millisecond is rounded outward: `*_before` up,
//! `*_after` down. A user at millisecond `m` lies before `b` exactly when
//! `m < ceil(b)`, and after `a` exactly when `m > floor(a)`: the rounding
//! neither loses nor adds a user.
//!
//! A range whose `before` is not later than its `after` holds no instant at
//! all, so no user: it is refused (INVALID_ARGUMENT, naming both fields)
//! rather than spending an upstream request on an empty answer. A range
//! that is merely empty at millisecond granularity (`after` = 5 ms, `before`
//! = 6 ms) is sent to Clerk: that it is empty depends on how Clerk stores
//! time, and a refusal rests on the request alone.

use prost_types::Timestamp;

use super::violations::Violations;
use crate::clerk::TimeField;

/// The two ranges of a filter: (after field, its name, before field, its name).
const RANGES: [(TimeField, &str, TimeField, &str); 2] = [
    (
        TimeField::CreatedAfter,
        "created_after",
        TimeField::CreatedBefore,
        "created_before",
    ),
    (
        TimeField::LastActiveAfter,
        "last_active_after",
        TimeField::LastActiveBefore,
        "last_active_before",
    ),
];

/// Which way a bound goes to whole milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Round {
    /// To the millisecond at or before it (`*_after` bounds).
    Down,
    /// To the millisecond at or after it (`*_before` bounds).
    Up,
}

/// Validates and converts the bounds of a filter: `ranges` holds (after,
/// before) of `created_*`, then of `last_active_*`.
pub(crate) fn convert(
    ranges: [(Option<Timestamp>, Option<Timestamp>); 2],
    violations: &mut Violations,
) -> Vec<(TimeField, i64)> {
    let mut times = Vec::new();
    for ((after, before), (after_field, after_name, before_field, before_name)) in
        ranges.into_iter().zip(RANGES)
    {
        let after = after.map(|time| (time, to_millis(&time, Round::Down)));
        let before = before.map(|time| (time, to_millis(&time, Round::Up)));
        for (field, name, bound) in [
            (after_field, after_name, after),
            (before_field, before_name, before),
        ] {
            match bound {
                None => {}
                Some((_, Some(ms))) => times.push((field, ms)),
                Some((_, None)) => violations.push((
                    format!("filter.{name}"),
                    "is not a valid timestamp (nanos must be 0 to 999999999, seconds within \
                     years 1970 to 9999)"
                        .to_owned(),
                )),
            }
        }
        if let (Some((after, Some(_))), Some((before, Some(_)))) = (after, before)
            && (before.seconds, before.nanos) <= (after.seconds, after.nanos)
        {
            violations.push((
                format!("filter.{before_name}"),
                format!(
                    "must be later than filter.{after_name}: both bounds are exclusive, so this \
                     range holds no user"
                ),
            ));
        }
    }
    times
}

/// A timestamp as whole Unix milliseconds, rounded `round`; `None` if it is
/// not a valid timestamp within years 1970 to 9999.
pub(crate) fn to_millis(time: &Timestamp, round: Round) -> Option<i64> {
    const MAX_SECONDS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(0..1_000_000_000).contains(&time.nanos) || !(0..=MAX_SECONDS).contains(&time.seconds) {
        return None;
    }
    let ms = time.seconds * 1000 + i64::from(time.nanos) / 1_000_000;
    let fraction = time.nanos % 1_000_000 != 0;
    Some(if round == Round::Up && fraction {
        ms + 1
    } else {
        ms
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    #[test]
    fn fractions_of_a_millisecond_round_outward() {
        let half = Timestamp {
            seconds: 1,
            nanos: 2_500_000,
        };
        assert_eq!(to_millis(&half, Round::Down), Some(1_002));
        assert_eq!(to_millis(&half, Round::Up), Some(1_003));
        let whole = Timestamp {
            seconds: 1,
            nanos: 2_000_000,
        };
        assert_eq!(to_millis(&whole, Round::Down), Some(1_002));
        assert_eq!(to_millis(&whole, Round::Up), Some(1_002));
        let last = Timestamp {
            seconds: 253_402_300_799,
            nanos: 999_999_999,
        };
        assert_eq!(to_millis(&last, Round::Up), Some(253_402_300_800_000));
        for bad in [(-1, 0), (0, -1), (0, 1_000_000_000), (253_402_300_800, 0)] {
            let time = Timestamp {
                seconds: bad.0,
                nanos: bad.1,
            };
            assert_eq!(to_millis(&time, Round::Up), None, "{bad:?}");
        }
    }

    #[test]
    fn bounds_convert_in_order_with_before_rounded_up() {
        let mut violations = Violations::new();
        let times = convert(
            [(at(1, 0), at(2, 500_000)), (at(3, 999_999), at(4, 0))],
            &mut violations,
        );
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(
            times,
            [
                (TimeField::CreatedAfter, 1_000),
                (TimeField::CreatedBefore, 2_001),
                (TimeField::LastActiveAfter, 3_000),
                (TimeField::LastActiveBefore, 4_000),
            ]
        );
    }

    #[test]
    fn ranges_holding_no_instant_are_refused_naming_both_fields() {
        for (after, before) in [
            (at(5, 0), at(5, 0)),
            (at(5, 1), at(5, 0)),
            (at(6, 0), at(5, 999_999_999)),
        ] {
            let mut violations = Violations::new();
            convert([(after, before), (None, None)], &mut violations);
            let (kept, more) = violations.into_parts();
            assert_eq!((kept.len(), more), (1, 0), "{after:?} {before:?}");
            assert_eq!(kept[0].0, "filter.created_before");
            assert!(kept[0].1.contains("filter.created_after"), "{}", kept[0].1);
        }
        let mut violations = Violations::new();
        convert([(None, None), (at(9, 0), at(1, 0))], &mut violations);
        let (kept, _) = violations.into_parts();
        assert_eq!(kept[0].0, "filter.last_active_before");
        assert!(kept[0].1.contains("filter.last_active_after"));
        // One nanosecond apart is a range: Clerk is asked.
        let mut violations = Violations::new();
        let times = convert([(at(5, 0), at(5, 1)), (None, None)], &mut violations);
        assert!(violations.is_empty());
        assert_eq!(
            times,
            [
                (TimeField::CreatedAfter, 5_000),
                (TimeField::CreatedBefore, 5_001)
            ]
        );
        // An invalid bound is reported once, not also as an empty range.
        let mut violations = Violations::new();
        convert([(at(5, -1), at(1, 0)), (None, None)], &mut violations);
        assert_eq!(violations.len(), 1);
    }
}
