//! What a resume token carries: the export's filter and order, bound for good,
//! and the [`Position`] reached in it.
//!
//! A cursor is sealed into a token by `token::TokenKey` (signed, so the broker
//! can trust what it opens). Version 2 carries a keyset position; version 1
//! tokens (plain offsets, issued before keyset paging) are still accepted and
//! continue by offset until the first page has been read.

use serde::{Deserialize, Serialize};

use super::paging::Position;
use crate::clerk::{OrderBy, UserFilter};

/// The cursor format written by this broker.
pub const CURSOR_VERSION: u8 = 2;

/// Where an export stands: everything needed to continue it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Format version of the cursor ([`CURSOR_VERSION`]).
    pub v: u8,
    /// The export's filter, exactly as the first call gave it.
    pub filter: UserFilter,
    /// The export's order.
    pub order_by: OrderBy,
    /// How far the export has come.
    pub at: Position,
}

/// A borrowed cursor, sealed into every message's token without cloning the
/// (possibly large) filter; serializes exactly like [`Cursor`].
#[derive(Debug, Serialize)]
pub struct CursorRef<'a> {
    /// Always [`CURSOR_VERSION`].
    pub v: u8,
    /// The export's filter.
    pub filter: &'a UserFilter,
    /// The export's order.
    pub order_by: OrderBy,
    /// How far the export has come.
    pub at: &'a Position,
}

/// Why an opened token holds no usable cursor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    /// Written by a broker version this one does not know.
    #[error("comes from an incompatible broker version (cursor v{0}): start a new export")]
    Version(u64),
    /// Signed, yet not a cursor of the version it claims.
    #[error("does not hold an export cursor: pass a token from a ListUsersResponse unchanged")]
    Shape,
}

/// The cursor of broker versions before keyset paging.
#[derive(Deserialize)]
struct CursorV1 {
    filter: UserFilter,
    order_by: OrderBy,
    offset: u64,
}

impl Cursor {
    /// The start of an export.
    pub fn start(filter: UserFilter, order_by: OrderBy) -> Self {
        Self {
            v: CURSOR_VERSION,
            filter,
            order_by,
            at: Position::default(),
        }
    }

    /// This cursor, borrowed, at another position.
    pub fn at<'a>(&'a self, at: &'a Position) -> CursorRef<'a> {
        CursorRef {
            v: CURSOR_VERSION,
            filter: &self.filter,
            order_by: self.order_by,
            at,
        }
    }

    /// Reads the JSON of an opened token, of this version or of version 1.
    pub fn from_json(json: serde_json::Value) -> Result<Self, CursorError> {
        let version = json.get("v").and_then(serde_json::Value::as_u64);
        match version {
            Some(2) => serde_json::from_value(json).map_err(|_| CursorError::Shape),
            Some(1) => {
                let old: CursorV1 = serde_json::from_value(json).map_err(|_| CursorError::Shape)?;
                Ok(Self {
                    v: CURSOR_VERSION,
                    filter: old.filter,
                    order_by: old.order_by,
                    at: Position::from_offset(old.offset),
                })
            }
            Some(other) => Err(CursorError::Version(other)),
            None => Err(CursorError::Shape),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clerk::TimeField;

    #[test]
    fn a_borrowed_cursor_serializes_like_an_owned_one() {
        let mut filter = UserFilter::ids(vec!["user_a".into()]);
        filter.times.push((TimeField::CreatedAfter, 5));
        let mut cursor = Cursor::start(filter, "+created_at".parse().unwrap());
        cursor.at = Position {
            anchor: Some(7),
            last: Some(7),
            seen: vec!["user_a".into()],
            ..Position::default()
        };
        let owned = serde_json::to_value(&cursor).unwrap();
        let borrowed = serde_json::to_value(cursor.at(&cursor.at)).unwrap();
        assert_eq!(owned, borrowed);
        assert_eq!(Cursor::from_json(borrowed), Ok(cursor));
    }

    #[test]
    fn reads_version_one_offsets_and_refuses_unknown_versions() {
        let v1 = json!({"v": 1, "filter": UserFilter::default(),
                        "order_by": {"field": "created_at", "descending": true}, "offset": 1500});
        let cursor = Cursor::from_json(v1).unwrap();
        assert_eq!(cursor.v, CURSOR_VERSION);
        assert_eq!(cursor.at, Position::from_offset(1500));
        assert_eq!(cursor.order_by, OrderBy::default());

        let v9 = json!({"v": 9, "anything": true});
        assert_eq!(Cursor::from_json(v9), Err(CursorError::Version(9)));
        assert_eq!(
            Cursor::from_json(json!({"offset": 3})),
            Err(CursorError::Shape)
        );
        assert_eq!(
            Cursor::from_json(json!({"v": 2, "filter": 3})),
            Err(CursorError::Shape)
        );
    }
}
