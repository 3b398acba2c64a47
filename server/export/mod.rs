//! `ListUsers` exports: page through Clerk at the largest page size and hand
//! users on in chunks, with backpressure, exactly once, resumably.
//!
//! The export runs as a task that fetches one upstream page at a time, at
//! bulk priority, and sends chunks into a channel of capacity one: while the
//! caller has not taken a chunk, the task waits, and it fetches the next page
//! only once the channel is empty, so it holds at most one page ahead of what
//! the transport has taken. (The transport holds the rest of the look-ahead:
//! HTTP/2 send buffers and the client's flow-control window, both bounded in
//! bytes.) When the receiver goes away (the caller cancelled, its deadline
//! passed, the broker drains) the task stops, even in the middle of an
//! upstream request.
//!
//! `paging` decides which page to fetch and which of its users to deliver
//! (keyset paging on `created_at`, offset paging otherwise); `cursor` is what
//! a resume token carries.

mod cursor;
#[cfg(test)]
mod model;
mod paging;

use std::{sync::Arc, time::Duration};

use tokio::{sync::mpsc, time::Instant};

pub use cursor::{CURSOR_VERSION, Cursor, CursorError, CursorRef};
pub use paging::{MAX_SEEN, PageError, Position, REWIND, keyset};

use paging::Chunking;

use crate::{
    admission::Demand,
    clerk::{ClerkUser, ListQuery, UpstreamError},
    users::Users,
};

/// How long one upstream page may take when the call set no deadline.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// Users handed on together, and the position just after the last of them.
#[derive(Debug)]
pub struct Chunk {
    /// Up to `chunk_size` users.
    pub users: Vec<ClerkUser>,
    /// Continues right after the last user of this chunk (with the export's
    /// filter and order, see [`Cursor::at`]).
    pub at: Position,
}

/// What to export and how.
#[derive(Debug)]
pub struct ExportPlan {
    /// The export's filter and order, and where to start.
    pub cursor: Cursor,
    /// Users per chunk, 1 to 500.
    pub chunk_size: usize,
    /// Stop after this many users (None: all).
    pub max_users: Option<u64>,
    /// On whose behalf and at which priority pages are fetched; its
    /// deadline is replaced page by page.
    pub demand: Demand,
    /// The call's deadline, if it set one.
    pub deadline: Option<Instant>,
}

/// Starts an export; chunks arrive on the returned channel, which closes at
/// the end. An error is the last item. The task stops as soon as the receiver
/// is dropped, even in the middle of an upstream request.
pub fn start(users: Arc<Users>, plan: ExportPlan) -> mpsc::Receiver<Result<Chunk, UpstreamError>> {
    let (tx, rx) = mpsc::channel(1);
    // Its pages' upstream requests belong to the call's trace.
    let span = crate::telemetry::inherited();
    let task = async move {
        users.events().export(true);
        if let Err(error) = run(&users, plan, &tx).await {
            let _ = tx.send(Err(error)).await;
        }
        users.events().export(false);
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
    rx
}

/// One page of an export, without I/O.
#[derive(Debug)]
pub struct Step {
    /// The upstream query sent for the page.
    pub query: ListQuery,
    /// Users delivered from the page, in messages of at most `chunk_size`.
    pub delivered: Vec<Chunk>,
    /// Where the next page starts; `None` when the export is complete.
    pub next: Option<Position>,
}

/// The page an export at `cursor` asks Clerk for (at most `wanted` users),
/// and what it makes of `rows`, Clerk's answer: what the export task does for
/// one page. Public for the fuzz targets in `fuzz/`: a cursor comes from a
/// caller's resume token and the rows from Clerk, both outside the broker.
pub fn step(
    cursor: &Cursor,
    wanted: u64,
    chunk_size: usize,
    rows: Vec<ClerkUser>,
) -> Result<Step, PageError> {
    let query = paging::query(&cursor.filter, cursor.order_by, &cursor.at, wanted);
    let chunking = Chunking {
        size: chunk_size,
        pending: 0,
    };
    let page = paging::read(cursor.order_by, &cursor.at, &query, rows, chunking, wanted)?;
    Ok(Step {
        query,
        delivered: page
            .chunks
            .into_iter()
            .map(|(users, at)| Chunk { users, at })
            .collect(),
        next: page.next,
    })
}

/// The export task: page after page until the end, an error, or until the
/// receiver is gone (then it returns Ok early).
async fn run(
    users: &Users,
    plan: ExportPlan,
    tx: &mpsc::Sender<Result<Chunk, UpstreamError>>,
) -> Result<(), UpstreamError> {
    let ExportPlan {
        cursor,
        chunk_size,
        max_users,
        demand,
        deadline,
    } = plan;
    let mut at = cursor.at.clone();
    let mut left = max_users.unwrap_or(u64::MAX);
    // An unfinished message (fewer than `chunk_size` users) waits for the
    // next page to complete it, with the position after its last user.
    let mut pending = Chunk {
        users: Vec::new(),
        at: Position::default(),
    };
    while left > 0 {
        // Fetch only once the caller's transport has taken every chunk of
        // the previous page: the task then holds at most this one page.
        if tx.reserve().await.is_err() {
            return Ok(());
        }
        let query = paging::query(&cursor.filter, cursor.order_by, &at, left);
        let demand = Demand {
            deadline: deadline.unwrap_or_else(|| Instant::now() + PAGE_DEADLINE),
            ..demand.clone()
        };
        let rows = tokio::select! {
            rows = users.list(&query, &demand) => rows?,
            () = tx.closed() => return Ok(()),
        };
        // Users streamed also warm the cache (unless it holds newer data).
        for user in &rows {
            users.cache().store_newer(user).await;
        }
        let chunking = Chunking {
            size: chunk_size,
            pending: pending.users.len(),
        };
        let page = paging::read(cursor.order_by, &at, &query, rows, chunking, left)
            .map_err(|error| UpstreamError::Unavailable(error.to_string()))?;
        for (users, position) in page.chunks {
            left = left.saturating_sub(users.len() as u64);
            pending.users.extend(users);
            pending.at = position;
            if pending.users.len() >= chunk_size && !send(tx, &mut pending).await {
                return Ok(());
            }
        }
        match page.next {
            Some(next) => at = next,
            None => break,
        }
    }
    if !pending.users.is_empty() {
        send(tx, &mut pending).await;
    }
    Ok(())
}

/// Sends the pending chunk; false once the receiver is gone.
async fn send(tx: &mpsc::Sender<Result<Chunk, UpstreamError>>, pending: &mut Chunk) -> bool {
    let chunk = Chunk {
        users: std::mem::take(&mut pending.users),
        at: std::mem::take(&mut pending.at),
    };
    tx.send(Ok(chunk)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clerk::{ExactField, PartialField, TimeField, UserFilter},
        secret::SecretKey,
        token::{MAX_TOKEN_LEN, TokenKey},
    };

    #[test]
    fn the_largest_token_stays_within_the_accepted_length() {
        // Every filter at its validated maximum, of characters JSON escapes
        // the longest, and a position remembering as many ids as it can.
        let value = "\u{1}".repeat(256);
        let exact = [
            ExactField::UserId,
            ExactField::EmailAddress,
            ExactField::PhoneNumber,
            ExactField::ExternalId,
            ExactField::Username,
            ExactField::Web3Wallet,
            ExactField::OrganizationId,
        ];
        let partial = [
            PartialField::Query,
            PartialField::EmailAddressQuery,
            PartialField::PhoneNumberQuery,
            PartialField::UsernameQuery,
            PartialField::NameQuery,
        ];
        let filter = UserFilter {
            exact: exact.map(|field| (field, vec![value.clone(); 100])).into(),
            partial: partial.map(|field| (field, value.clone())).into(),
            banned: Some(true),
            times: vec![(TimeField::CreatedAfter, i64::MIN); 4],
        };
        let mut cursor = Cursor::start(filter, "-created_at".parse().unwrap());
        cursor.at = Position {
            anchor: Some(i64::MIN),
            offset: u64::MAX,
            last: Some(i64::MIN),
            seen: vec!["u".repeat(128); MAX_SEEN],
            partial: true,
        };
        let key = TokenKey::derive(&SecretKey::parse("sk_test_bound").unwrap());
        let token = key.seal(&cursor.at(&cursor.at));
        assert!(token.len() <= MAX_TOKEN_LEN, "{} bytes", token.len());
        let opened: serde_json::Value = key.open(&token).unwrap();
        assert_eq!(Cursor::from_json(opened), Ok(cursor));
    }
}
