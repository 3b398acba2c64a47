//! `ListUsers` exports: page through Clerk at the largest page size and hand
//! users on in chunks, with backpressure.
//!
//! The export runs as a task that fetches one upstream page at a time and
//! sends chunks into a channel of capacity one: while the caller has not taken
//! a chunk, the task waits, so at most one page is held ahead of the caller.
//! Paging is by offset in the requested order; a user created or deleted
//! during an export can shift later pages (see ARCHITECTURE.md).

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, time::Instant};

use crate::{
    admission::Demand,
    clerk::{ClerkUser, ListQuery, MAX_PAGE, OrderBy, UpstreamError, UserFilter},
    users::Users,
};

/// How long one upstream page may take when the call set no deadline.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// Where an export stands: everything needed to continue it. This is what a
/// resume token carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Format version of the cursor.
    pub v: u8,
    /// The export's filter.
    pub filter: UserFilter,
    /// The export's order.
    pub order_by: OrderBy,
    /// Users already delivered.
    pub offset: u64,
}

impl Cursor {
    /// The start of an export.
    pub fn start(filter: UserFilter, order_by: OrderBy) -> Self {
        Self {
            v: 1,
            filter,
            order_by,
            offset: 0,
        }
    }
}

/// Users handed on together, and the cursor just after the last of them.
#[derive(Debug)]
pub struct Chunk {
    /// Up to `page_size` users.
    pub users: Vec<ClerkUser>,
    /// Continues right after the last user of this chunk.
    pub cursor: Cursor,
}

/// What to export and how.
#[derive(Debug)]
pub struct ExportPlan {
    /// Where to start.
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
    tokio::spawn(async move {
        let ExportPlan {
            mut cursor,
            chunk_size,
            max_users,
            demand,
            deadline,
        } = plan;
        let mut left = max_users.unwrap_or(u64::MAX);
        while left > 0 {
            let limit = left.min(u64::from(MAX_PAGE)) as u32;
            let query = ListQuery {
                filter: cursor.filter.clone(),
                order_by: cursor.order_by,
                limit,
                offset: cursor.offset,
            };
            let demand = Demand {
                deadline: deadline.unwrap_or_else(|| Instant::now() + PAGE_DEADLINE),
                ..demand.clone()
            };
            let page = tokio::select! {
                page = users.list(&query, &demand) => page,
                () = tx.closed() => return,
            };
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    let _ = tx.send(Err(error)).await;
                    return;
                }
            };
            let last_page = page.len() < limit as usize;
            let mut page = page.into_iter().peekable();
            while page.peek().is_some() {
                let users: Vec<ClerkUser> = page.by_ref().take(chunk_size).collect();
                cursor.offset += users.len() as u64;
                left -= users.len() as u64;
                let chunk = Chunk {
                    users,
                    cursor: cursor.clone(),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
            if last_page {
                return;
            }
        }
    });
    rx
}
