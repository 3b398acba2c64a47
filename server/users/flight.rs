//! One flight per id: concurrent misses for the same id share one upstream
//! lookup.
//!
//! A [`Flight`] is the pending answer about one id. The first miss starts it
//! (and hands it to the batcher); later misses join it. Its answer is
//! published through a `watch` channel to every waiter, so no waiter owns the
//! lookup: a caller that gives up leaves, and the flight lands all the same
//! (into the cache, for the next caller).

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use dashmap::{DashMap, mapref::entry::Entry};
use tokio::{sync::watch, time::Instant};

use crate::{
    admission::{Demand, Priority},
    clerk::{ClerkUser, UpstreamError},
    telemetry::AnsweredBy,
};

/// What a lookup learned: the user, `None` if Clerk has no such user, or why
/// Clerk could not say.
pub(crate) type Outcome = Result<Option<ClerkUser>, UpstreamError>;

/// The pending lookup of one id.
#[derive(Debug)]
pub(crate) struct Flight {
    id: Arc<str>,
    /// `None` until the flight lands.
    outcome: watch::Sender<Option<Outcome>>,
    /// The demand the upstream request is made with: of everyone who joined
    /// before it was sent, the one with the latest deadline.
    demand: Mutex<Demand>,
    /// Cleared when an invalidation (webhook, admin) arrives during the
    /// flight: its answer, possibly older, must then not be cached.
    storable: AtomicBool,
    /// The upstream request that answered, for the waiters' span links
    /// (set only when tracing is on).
    answered_by: AnsweredBy,
}

impl Flight {
    fn new(id: Arc<str>, demand: Demand) -> Self {
        Self {
            id,
            outcome: watch::Sender::new(None),
            demand: Mutex::new(demand),
            storable: AtomicBool::new(true),
            answered_by: AnsweredBy::default(),
        }
    }

    /// The id looked up.
    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The demand to send the lookup with (see the field).
    pub(crate) fn demand(&self) -> Demand {
        self.demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The upstream request that answered (see the field).
    pub(crate) fn answered_by(&self) -> &AnsweredBy {
        &self.answered_by
    }

    /// Whether the answer may still be cached.
    pub(crate) fn is_storable(&self) -> bool {
        self.storable.load(Ordering::Acquire)
    }

    /// Waits for the answer until `deadline`; `None` if the deadline came
    /// first. The flight goes on either way.
    pub(crate) async fn wait(&self, deadline: Instant) -> Option<Outcome> {
        let mut answers = self.outcome.subscribe();
        let answer = tokio::time::timeout_at(deadline, answers.wait_for(Option::is_some)).await;
        match answer {
            Err(_elapsed) => None,
            Ok(Ok(outcome)) => outcome.clone(),
            // Every flight is landed before it is dropped (see `Landing`);
            // this only guards against a bug there.
            Ok(Err(_closed)) => Some(Err(UpstreamError::Unavailable(
                "the lookup ended without an answer".into(),
            ))),
        }
    }

    /// Raises the flight's demand to `demand` if that waits longer, and to
    /// interactive priority if `demand` is interactive.
    fn join(&self, demand: &Demand) {
        let mut current = self.demand.lock().unwrap_or_else(PoisonError::into_inner);
        let interactive =
            current.priority == Priority::Interactive || demand.priority == Priority::Interactive;
        if demand.deadline > current.deadline {
            *current = demand.clone();
        }
        if interactive {
            current.priority = Priority::Interactive;
        }
    }
}

/// The flights in the air, at most one per id.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: DashMap<Arc<str>, Arc<Flight>>,
}

impl Flights {
    /// Joins the flight for `id`, or starts one. The boolean is true for a
    /// new flight, which the caller must send on its way.
    pub(crate) fn join_or_start(&self, id: &str, demand: &Demand) -> (Arc<Flight>, bool) {
        if let Some(flight) = self.map.get(id) {
            flight.join(demand);
            return (flight.clone(), false);
        }
        match self.map.entry(id.into()) {
            Entry::Occupied(entry) => {
                entry.get().join(demand);
                (entry.get().clone(), false)
            }
            Entry::Vacant(entry) => {
                let flight = Arc::new(Flight::new(entry.key().clone(), demand.clone()));
                entry.insert(flight.clone());
                (flight, true)
            }
        }
    }

    /// Publishes the answer of `flight` to its waiters and takes it out of
    /// the air: the next miss for its id starts a new flight.
    pub(crate) fn land(&self, flight: &Flight, outcome: Outcome) {
        flight.outcome.send_replace(Some(outcome));
        self.map.remove_if(&flight.id, |_, current| {
            std::ptr::eq(current.as_ref(), flight)
        });
    }

    /// Forbids the flight for `id`, if any, to cache its answer.
    pub(crate) fn forbid_store(&self, id: &str) {
        if let Some(flight) = self.map.get(id) {
            flight.storable.store(false, Ordering::Release);
        }
    }

    /// How many flights are in the air.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no flight is in the air.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Lands every flight of a batch that is still in the air when dropped (the
/// lookup task panicked or was cancelled), so no waiter hangs and the id can
/// fly again.
pub(crate) struct Landing<'a> {
    flights: &'a Flights,
    pending: Vec<Arc<Flight>>,
}

impl<'a> Landing<'a> {
    /// Guards `pending`, flights of `flights`.
    pub(crate) fn new(flights: &'a Flights, pending: Vec<Arc<Flight>>) -> Self {
        Self { flights, pending }
    }

    /// The flights not landed yet.
    pub(crate) fn pending(&self) -> &[Arc<Flight>] {
        &self.pending
    }

    /// Takes the flights `which` chooses out of this landing (another
    /// landing guards them then).
    pub(crate) fn take_where(
        &mut self,
        mut which: impl FnMut(&Flight) -> bool,
    ) -> Vec<Arc<Flight>> {
        let (taken, kept) = self.pending.drain(..).partition(|flight| which(flight));
        self.pending = kept;
        taken
    }

    /// Lands the flights `outcome` chooses an answer for, keeping the others.
    pub(crate) fn land_where(&mut self, mut outcome: impl FnMut(&Flight) -> Option<Outcome>) {
        let flights = self.flights;
        self.pending.retain(|flight| match outcome(flight) {
            Some(answer) => {
                flights.land(flight, answer);
                false
            }
            None => true,
        });
    }
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        for flight in self.pending.drain(..) {
            self.flights.land(
                &flight,
                Err(UpstreamError::Unavailable(
                    "the lookup was cut short; retry".into(),
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn demand(caller: &str, in_ms: u64, priority: Priority) -> Demand {
        Demand {
            caller: caller.into(),
            weight: 1,
            priority,
            deadline: Instant::now() + Duration::from_millis(in_ms),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_flight_per_id_with_the_latest_deadline() {
        let flights = Flights::default();
        let (first, started) = flights.join_or_start("user_1", &demand("a", 100, Priority::Bulk));
        assert!(started);
        let (second, started) = flights.join_or_start("user_1", &demand("b", 300, Priority::Bulk));
        assert!(!started && Arc::ptr_eq(&first, &second));
        flights.join_or_start("user_1", &demand("c", 200, Priority::Interactive));
        let chosen = first.demand();
        assert_eq!(chosen.caller.as_ref(), "b");
        assert_eq!(chosen.priority, Priority::Interactive);
        assert_eq!(flights.len(), 1);
        let (_, started) = flights.join_or_start("user_2", &demand("a", 100, Priority::Bulk));
        assert!(started);
    }

    #[tokio::test(start_paused = true)]
    async fn every_waiter_gets_the_answer_and_a_late_one_times_out_alone() {
        let flights = Arc::new(Flights::default());
        let (flight, _) =
            flights.join_or_start("user_1", &demand("a", 1_000, Priority::Interactive));
        let impatient = tokio::spawn({
            let flight = flight.clone();
            async move {
                flight
                    .wait(Instant::now() + Duration::from_millis(10))
                    .await
            }
        });
        let patient = tokio::spawn({
            let flight = flight.clone();
            async move { flight.wait(Instant::now() + Duration::from_secs(1)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            impatient.await.unwrap().is_none(),
            "gave up at its deadline"
        );
        flights.land(&flight, Ok(None));
        assert_eq!(patient.await.unwrap(), Some(Ok(None)));
        // Landed: gone from the air, and a late waiter still reads the answer.
        assert!(flights.is_empty());
        assert_eq!(flight.wait(Instant::now()).await, Some(Ok(None)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_landing_fails_its_flights_instead_of_hanging_them() {
        let flights = Flights::default();
        let (flight, _) =
            flights.join_or_start("user_1", &demand("a", 1_000, Priority::Interactive));
        let (other, _) =
            flights.join_or_start("user_2", &demand("a", 1_000, Priority::Interactive));
        flights.forbid_store("user_1");
        assert!(!flight.is_storable() && other.is_storable());
        let mut landing = Landing::new(&flights, vec![flight.clone(), other.clone()]);
        landing.land_where(|f| (f.id().as_ref() == "user_2").then_some(Ok(None)));
        assert_eq!(landing.pending().len(), 1);
        drop(landing);
        assert!(matches!(
            flight.wait(Instant::now()).await,
            Some(Err(UpstreamError::Unavailable(_)))
        ));
        assert_eq!(other.wait(Instant::now()).await, Some(Ok(None)));
        assert!(flights.is_empty());
    }
}
