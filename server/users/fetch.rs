//! The fetch task of one batch: flights answered from the cache if one
//! landed meanwhile, else claimed from the other replicas (with
//! `--redis-url`) or fetched from Clerk in one list request, then landed.

use std::{collections::HashMap, sync::Arc};

use tokio::time::{Duration, Instant};
use tracing::Instrument as _;

use super::{
    Claim, Shared, SharedEntry, SharedUsers,
    flight::{Flight, Landing},
};
use crate::{
    clerk::{ClerkUser, ListQuery, OrderBy, UserFilter},
    telemetry,
    webhook::unix_millis,
};

/// Longest a lookup waits for another replica's fetch of the same id
/// before fetching it itself.
const CLAIM_WAIT: Duration = Duration::from_millis(1_500);

/// Sends one batch of flights to Clerk as one list request and lands them.
/// Runs as its own task: no caller's future owns it.
pub(super) async fn fetch(shared: Arc<Shared>, batch: Vec<Arc<Flight>>) {
    let mut landing = Landing::new(&shared.flights, batch);
    // A flight for one of these ids may have landed between its caller's
    // cache miss and the start of this flight: answer those from the cache.
    let now = Instant::now();
    let mut cached = HashMap::new();
    for flight in landing.pending() {
        if let Some(entry) = shared.cache.get(flight.id()).await
            && entry.is_fresh(now)
        {
            cached.insert(flight.id().clone(), entry.user);
        }
    }
    landing.land_where(|flight| cached.remove(flight.id()).map(Ok));
    // Several replicas: what another one fetched is not fetched again, and
    // what another one is fetching now is awaited (apart, so that this
    // replica's own claims go to Clerk meanwhile).
    if let Some(remote) = shared.remote.clone() {
        let theirs = claim(&shared, &remote, &mut landing).await;
        if !theirs.is_empty() {
            let span = telemetry::replica_wait_span(theirs.len());
            tokio::spawn(await_other_replicas(shared.clone(), remote, theirs).instrument(span));
        }
    }
    from_clerk(&shared, &mut landing).await;
}

/// Fetches the pending flights of `landing` from Clerk in one request and
/// lands them.
async fn from_clerk(shared: &Arc<Shared>, landing: &mut Landing<'_>) {
    let pending = landing.pending();
    // The request is made for the waiter who waits longest, so it can still
    // serve everyone else who stays (see ARCHITECTURE.md, invariant 9).
    let Some(demand) = pending
        .iter()
        .map(|flight| flight.demand())
        .max_by_key(|demand| demand.deadline)
    else {
        return;
    };
    shared.events.batch_sent(pending.len());
    let query = ListQuery {
        filter: UserFilter::ids(pending.iter().map(|f| f.id().to_string()).collect()),
        order_by: OrderBy::default(),
        limit: pending.len() as u32,
        offset: 0,
    };
    let (answer, request) = telemetry::capture(shared.clerk.list_users(&query, &demand)).await;
    for flight in landing.pending() {
        flight.answered_by().set(request.as_ref());
    }
    match answer {
        Ok(users) => {
            let answered_at = unix_millis(std::time::SystemTime::now());
            let mut by_id: HashMap<String, ClerkUser> = users
                .into_iter()
                .map(|user| (user.id().to_owned(), user))
                .collect();
            let mut answers = HashMap::new();
            let mut entries = Vec::new();
            for flight in landing.pending() {
                let user = by_id.remove(flight.id().as_ref());
                let id = flight.id().clone();
                shared
                    .cache
                    .store_unless(id.clone(), user.as_ref(), answered_at, || {
                        flight.is_storable()
                    })
                    .await;
                if shared.remote.is_some() && flight.is_storable() {
                    let fresh_for = shared.cache.ttl(user.is_some());
                    entries.push((
                        id.clone(),
                        match &user {
                            Some(user) => SharedEntry::user(user, fresh_for),
                            None => SharedEntry::missing(answered_at, fresh_for),
                        },
                    ));
                }
                answers.insert(id, user);
            }
            landing.land_where(|flight| answers.remove(flight.id()).map(Ok));
            if let Some(remote) = &shared.remote {
                remote.put(&entries).await;
            }
        }
        // Our claims expire by themselves; other replicas then try.
        Err(error) => landing.land_where(|_| Some(Err(error.clone()))),
    }
}

/// Lands the flights whose ids another replica has fetched, and takes out
/// (returns) those another replica is fetching now; the rest are this
/// replica's to fetch.
async fn claim(
    shared: &Shared,
    remote: &Arc<dyn SharedUsers>,
    landing: &mut Landing<'_>,
) -> Vec<Arc<Flight>> {
    let ids: Vec<Arc<str>> = landing.pending().iter().map(|f| f.id().clone()).collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut found = HashMap::new();
    let mut others = std::collections::HashSet::new();
    for (id, claim) in ids.iter().zip(remote.claim(&ids).await) {
        match claim {
            Claim::Found(entry) => {
                found.insert(id.clone(), entry);
            }
            Claim::Theirs => {
                others.insert(id.clone());
            }
            Claim::Mine => {}
        }
    }
    land_shared(shared, landing, &mut found).await;
    landing.take_where(|flight| others.contains(flight.id()))
}

/// Waits (boundedly) for other replicas' fetches of `flights`; fetches from
/// Clerk what did not come in time.
async fn await_other_replicas(
    shared: Arc<Shared>,
    remote: Arc<dyn SharedUsers>,
    flights: Vec<Arc<Flight>>,
) {
    let mut landing = Landing::new(&shared.flights, flights);
    let mut others: Vec<Arc<str>> = landing.pending().iter().map(|f| f.id().clone()).collect();
    // Another replica is fetching these: wait for its answer, at most until
    // the latest waiter's deadline or CLAIM_WAIT; then fetch them anyway.
    let latest = landing
        .pending()
        .iter()
        .map(|flight| flight.demand().deadline)
        .max()
        .unwrap_or_else(Instant::now);
    let give_up = latest.min(Instant::now() + CLAIM_WAIT);
    while !others.is_empty() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut found = remote.get(&others).await;
        others.retain(|id| !found.contains_key(id));
        land_shared(&shared, &mut landing, &mut found).await;
    }
    from_clerk(&shared, &mut landing).await;
}

/// Stores entries found in the shared store here and lands their flights.
async fn land_shared(
    shared: &Shared,
    landing: &mut Landing<'_>,
    found: &mut HashMap<Arc<str>, SharedEntry>,
) {
    if found.is_empty() {
        return;
    }
    let mut answers = HashMap::new();
    for flight in landing.pending() {
        let Some(entry) = found.remove(flight.id()) else {
            continue;
        };
        let user = match entry.json {
            Some(text) => match ClerkUser::from_text(text) {
                Some(user) => Some(user),
                None => continue,
            },
            None => None,
        };
        shared
            .cache
            .store_shared(
                flight.id().clone(),
                user.as_ref(),
                entry.as_of,
                entry.fresh_for,
                || flight.is_storable(),
            )
            .await;
        answers.insert(flight.id().clone(), user);
    }
    landing.land_where(|flight| answers.remove(flight.id()).map(Ok));
}
