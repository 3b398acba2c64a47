//! How an export pages through Clerk: which page to ask for next, and which
//! users of the page to deliver. Pure functions over a [`Position`]; no I/O.
//!
//! **Keyset paging** (`order_by` `created_at`, either direction). A user's
//! `created_at` never changes, so the export asks for the users at or beyond
//! the millisecond of the last user it delivered (`created_at_after = ms − 1`
//! ascending, `created_at_before = ms + 1` descending, tightened with the
//! caller's own bound) and drops what it already delivered: users before that
//! millisecond, and the users of that millisecond whose ids it remembers in
//! `seen`. This holds whether Clerk's bound is strict (as the fake's) or
//! inclusive, and whatever order Clerk gives users sharing a millisecond:
//! every user that exists for the whole export is delivered exactly once,
//! however many others are created or deleted meanwhile.
//!
//! `seen` holds at most [`MAX_SEEN`] ids, to keep tokens small. A millisecond
//! shared by more users (a bulk import) is read by offset within the query
//! anchored at it ([`Position::offset`]), re-reading the last [`REWIND`] rows
//! and skipping the remembered ones: exact as long as Clerk orders ties the
//! same way on every request and at most [`REWIND`] of those users are
//! deleted (or `MAX_SEEN − REWIND` created at that very millisecond) between
//! two pages. A page that would end inside such a millisecond is cut after
//! its first [`MAX_SEEN`] users there, so that the next page is again asked
//! by key, and offset paging stays confined to that one millisecond.
//!
//! **Offset paging** (every other `order_by`: Clerk has no keyset filter for
//! them, and their values change while users act). Pages are read by offset
//! with the same rewind-and-skip overlap, so up to [`REWIND`] deletions (or
//! `MAX_SEEN − REWIND` creations) before the current position between two
//! pages cost neither a gap nor a repeat; beyond that, or when a user's sort
//! key changes during the export, a user can be skipped or repeated.

use std::{cmp::Ordering, collections::VecDeque};

use serde::{Deserialize, Serialize};

use crate::clerk::{ClerkUser, ListQuery, MAX_PAGE, OrderBy, OrderField, TimeField, UserFilter};

/// Most ids a position remembers (bounds the size of a resume token).
pub const MAX_SEEN: usize = 64;
/// Rows re-read at the start of an offset page, to notice and absorb shifts.
pub const REWIND: usize = 16;

/// How far an export has come; what a resume token carries besides the
/// filter and order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Keyset: the `created_at` (Unix ms) the next query starts at; none
    /// before the first page (the query starts where the caller's filter does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<i64>,
    /// Rows of the (anchored) query already read; 0 for pure keyset paging.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Keyset: the `created_at` of the last user delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<i64>,
    /// Ids to skip when met again, oldest first, at most [`MAX_SEEN`]. Keyset:
    /// users of millisecond `last` already delivered; offset: the last rows read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
    /// Keyset: `seen` lacks some users of millisecond `last` already delivered
    /// (more than [`MAX_SEEN`] share it), so paging continues by offset.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Position {
    /// A plain offset (what version 1 cursors carried): nothing to skip.
    pub fn from_offset(offset: u64) -> Self {
        Self {
            offset,
            ..Self::default()
        }
    }

    /// Rows re-read before `offset`: only remembered ones, so they are skipped.
    fn rewind(&self) -> u64 {
        if self.offset == 0 {
            0
        } else {
            REWIND.min(self.seen.len()) as u64
        }
    }
}

/// Whether exports in `order` page by key (see the module docs).
pub fn keyset(order: OrderBy) -> bool {
    order.field == OrderField::CreatedAt
}

/// The next upstream page of an export at `at`, for at most `wanted` more users.
pub(super) fn query(filter: &UserFilter, order: OrderBy, at: &Position, wanted: u64) -> ListQuery {
    let mut filter = filter.clone();
    if let (true, Some(anchor)) = (keyset(order), at.anchor) {
        if order.descending {
            tighten(
                &mut filter,
                TimeField::CreatedBefore,
                anchor.saturating_add(1),
                i64::min,
            );
        } else {
            tighten(
                &mut filter,
                TimeField::CreatedAfter,
                anchor.saturating_sub(1),
                i64::max,
            );
        }
    }
    // Room for the rows skipped again, so that every full page makes progress.
    let overlap = (at.seen.len() + REWIND) as u64;
    let limit = wanted.saturating_add(overlap).min(u64::from(MAX_PAGE)) as u32;
    ListQuery {
        filter,
        order_by: order,
        limit,
        offset: at.offset.saturating_sub(at.rewind()),
    }
}

/// Sets the time bound `field` to the tightest of `bound` and the caller's own.
fn tighten(filter: &mut UserFilter, field: TimeField, bound: i64, tighter: fn(i64, i64) -> i64) {
    let own = filter.times.iter().filter(|(f, _)| *f == field);
    let bound = own.map(|&(_, ms)| ms).fold(bound, tighter);
    filter.times.retain(|(f, _)| *f != field);
    filter.times.push((field, bound));
}

/// Why a page cannot be paged through safely.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PageError {
    /// A user without a numeric `created_at` in a keyset export.
    #[error("Clerk sent a user without created_at")]
    NoCreatedAt,
    /// Users not sorted as asked.
    #[error("Clerk sent a page out of the requested order")]
    OutOfOrder,
}

/// How delivered users are grouped into messages across pages.
#[derive(Clone, Copy, Debug)]
pub(super) struct Chunking {
    /// Users per message.
    pub(super) size: usize,
    /// Users of an unfinished message carried over from the previous page.
    pub(super) pending: usize,
}

/// What one page yields.
#[derive(Debug, Default)]
pub(super) struct PageRead {
    /// Users to deliver, each group with the position right after its last
    /// user. The first group completes the carried-over message; every group
    /// completes a message, except perhaps the last, which the next page
    /// completes unless the export ends here.
    pub(super) chunks: Vec<(Vec<ClerkUser>, Position)>,
    /// Where the next page starts; `None` when the export is complete (the
    /// page was not full, or `wanted` users were delivered).
    pub(super) next: Option<Position>,
}

/// Reads the page `rows` that `query` fetched from position `from`.
pub(super) fn read(
    order: OrderBy,
    from: &Position,
    query: &ListQuery,
    mut rows: Vec<ClerkUser>,
    chunking: Chunking,
    wanted: u64,
) -> Result<PageRead, PageError> {
    let full = rows.len() >= query.limit as usize;
    let keys = if keyset(order) {
        let keys = keys(&rows, order.descending)?;
        if full {
            rows.truncate(cut(&keys, from.last, order.descending));
        }
        Some(keys)
    } else {
        None
    };
    let mut walk = Walk::new(order, from, query.offset);
    let mut read = PageRead::default();
    let mut chunk = Vec::new();
    let mut room = chunking.size.saturating_sub(chunking.pending).max(1);
    let mut delivered = 0;
    for (i, row) in rows.into_iter().enumerate() {
        if !walk.consume(&row, keys.as_ref().map(|keys| keys[i])) {
            continue;
        }
        chunk.push(row);
        delivered += 1;
        if chunk.len() >= room || delivered >= wanted {
            room = chunking.size;
            read.chunks
                .push((std::mem::take(&mut chunk), walk.position()));
        }
        if delivered >= wanted {
            return Ok(read);
        }
    }
    if !chunk.is_empty() {
        read.chunks.push((chunk, walk.position()));
    }
    read.next = full.then(|| walk.next());
    Ok(read)
}

/// The `created_at` of every row, checked to be in the requested order.
fn keys(rows: &[ClerkUser], descending: bool) -> Result<Vec<i64>, PageError> {
    let keys: Vec<i64> = rows
        .iter()
        .map(|row| row.millis("created_at").ok_or(PageError::NoCreatedAt))
        .collect::<Result<_, _>>()?;
    let sorted = keys.windows(2).all(|pair| {
        let (a, b) = (pair[0], pair[1]);
        if descending { a >= b } else { a <= b }
    });
    sorted.then_some(keys).ok_or(PageError::OutOfOrder)
}

/// How many rows of a full page to read: all, unless the page ends inside a
/// millisecond beyond `last` with more than [`MAX_SEEN`] users, which is then
/// cut after its first [`MAX_SEEN`] so the next page can start by key.
fn cut(keys: &[i64], last: Option<i64>, descending: bool) -> usize {
    let Some(&end) = keys.last() else { return 0 };
    let beyond = last.is_none_or(|last| further(end, last, descending) == Ordering::Greater);
    let group = keys.iter().rev().take_while(|&&key| key == end).count();
    if beyond && group > MAX_SEEN {
        keys.len() - group + MAX_SEEN
    } else {
        keys.len()
    }
}

/// How `key` lies relative to `last` along the export: Greater is further.
fn further(key: i64, last: i64, descending: bool) -> Ordering {
    if descending {
        last.cmp(&key)
    } else {
        key.cmp(&last)
    }
}

/// The state of reading one page, row by row.
struct Walk {
    /// Keyset or offset paging.
    keyset: bool,
    /// The export's direction.
    descending: bool,
    /// The anchor of the query the page came from.
    anchor: Option<i64>,
    /// The offset the page was fetched at.
    fetched_at: u64,
    /// Rows of the page read so far.
    consumed: u64,
    /// As in [`Position`].
    last: Option<i64>,
    /// As in [`Position`].
    seen: VecDeque<String>,
    /// As in [`Position`].
    partial: bool,
}

impl Walk {
    fn new(order: OrderBy, from: &Position, fetched_at: u64) -> Self {
        Self {
            keyset: keyset(order),
            descending: order.descending,
            anchor: from.anchor,
            fetched_at,
            consumed: 0,
            last: from.last,
            seen: from.seen.iter().cloned().collect(),
            partial: from.partial,
        }
    }

    /// Reads one row (`key`: its `created_at`, keyset only); true if it is to
    /// be delivered.
    fn consume(&mut self, row: &ClerkUser, key: Option<i64>) -> bool {
        self.consumed += 1;
        if let (true, Some(key)) = (self.keyset, key) {
            let relation = self.last.map(|last| further(key, last, self.descending));
            match relation {
                // Before the last millisecond delivered: delivered already, or
                // created during the export with an old timestamp.
                Some(Ordering::Less) => return false,
                Some(Ordering::Equal) => {}
                Some(Ordering::Greater) | None => {
                    self.last = Some(key);
                    self.seen.clear();
                    self.seen.push_back(row.id().to_owned());
                    self.partial = false;
                    return true;
                }
            }
        }
        if let Some(at) = self.seen.iter().position(|id| id == row.id()) {
            // Met again: keep it among the most recent rows read.
            if let Some(id) = self.seen.remove(at) {
                self.seen.push_back(id);
            }
            return false;
        }
        // Nothing is forgotten within a page (whatever order Clerk gives
        // ties in); positions keep the most recent MAX_SEEN.
        self.seen.push_back(row.id().to_owned());
        true
    }

    /// Whether a position taken now would lack some ids of `last`.
    fn is_partial(&self) -> bool {
        self.partial || self.seen.len() > MAX_SEEN
    }

    /// The most recent [`MAX_SEEN`] ids.
    fn recent(&self) -> Vec<String> {
        let skip = self.seen.len().saturating_sub(MAX_SEEN);
        self.seen.iter().skip(skip).cloned().collect()
    }

    /// The position right after the rows read so far.
    fn position(&self) -> Position {
        match (self.keyset && !self.is_partial(), self.last) {
            (true, Some(last)) => self.keyed(last),
            _ => self.offset(),
        }
    }

    /// The position of the next page once the whole (full) page is read: by
    /// key when the page reached a new millisecond with all its ids at hand,
    /// else by offset in the same query (which then always moves forward).
    fn next(&self) -> Position {
        match (self.keyset && !self.is_partial(), self.last) {
            (true, Some(last)) if self.anchor != Some(last) => self.keyed(last),
            _ => self.offset(),
        }
    }

    fn keyed(&self, last: i64) -> Position {
        Position {
            anchor: Some(last),
            offset: 0,
            last: Some(last),
            seen: self.recent(),
            partial: false,
        }
    }

    fn offset(&self) -> Position {
        Position {
            anchor: self.anchor,
            offset: self.fetched_at + self.consumed,
            last: self.last,
            seen: self.recent(),
            partial: self.keyset && self.is_partial(),
        }
    }
}

#[cfg(test)]
#[path = "paging_tests.rs"]
mod tests;
