//! What each caller holds now: unary calls in flight (gRPC calls and
//! requests to the Clerk-compatible front together) and open streams, each
//! kind up to the caller's limit. A [`Slot`] is given back when dropped.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;

use super::Caller;
use crate::admission::CallerName;

/// Suggested wait before retrying a call refused for too many in flight.
pub const IN_FLIGHT_RETRY: Duration = Duration::from_millis(50);
/// Suggested wait before retrying a stream refused for too many open.
pub const STREAM_RETRY: Duration = Duration::from_secs(1);

/// The slots every caller holds; one per broker, shared by every listener.
/// (Keyed by the policy's caller names: a fast hash, no flooding.)
#[derive(Debug, Default)]
pub struct Slots(DashMap<CallerName, Arc<Held>, foldhash::fast::RandomState>);

/// What one caller holds now.
#[derive(Debug, Default)]
struct Held {
    calls: AtomicU32,
    streams: AtomicU32,
}

/// A kind of slot a caller holds, each with its own limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// A unary call (or a front request) in flight.
    Call,
    /// An open `ListUsers` stream.
    Stream,
}

impl SlotKind {
    fn counter(self, held: &Held) -> &AtomicU32 {
        match self {
            Self::Call => &held.calls,
            Self::Stream => &held.streams,
        }
    }

    /// How many slots of this kind `caller` may hold.
    fn limit(self, caller: &Caller) -> u32 {
        match self {
            Self::Call => caller.limits.max_in_flight,
            Self::Stream => caller.limits.max_streams,
        }
    }

    /// When a refused caller should retry.
    pub fn retry(self) -> Duration {
        match self {
            Self::Call => IN_FLIGHT_RETRY,
            Self::Stream => STREAM_RETRY,
        }
    }
}

/// A caller already holds its limit of one kind of slot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "caller {caller:?} already has {limit} {what}, its limit ({setting} in the policy file): \
     retry when some have ended",
    what = match kind { SlotKind::Call => "calls in flight", SlotKind::Stream => "ListUsers streams open" },
    setting = match kind { SlotKind::Call => "max_in_flight", SlotKind::Stream => "max_streams" },
)]
pub struct SlotRefusal {
    /// The caller's name.
    pub caller: CallerName,
    /// The kind of slot.
    pub kind: SlotKind,
    /// Its limit.
    pub limit: u32,
}

/// One hold on a caller's slots, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    held: Arc<Held>,
    kind: SlotKind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.kind.counter(&self.held).fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slots {
    /// Takes one slot of `kind` for `caller`, unless it holds its limit.
    pub fn take(&self, caller: &Caller, kind: SlotKind) -> Result<Slot, SlotRefusal> {
        let held = self
            .0
            .entry(caller.name.clone())
            .or_default()
            .value()
            .clone();
        let (counter, limit) = (kind.counter(&held), kind.limit(caller));
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(SlotRefusal {
                caller: caller.name.clone(),
                kind,
                limit,
            });
        }
        Ok(Slot { held, kind })
    }

    /// Slots of `kind` `caller` holds now (for tests and metrics).
    pub fn held(&self, caller: &str, kind: SlotKind) -> u32 {
        self.0
            .get(caller)
            .map_or(0, |held| kind.counter(&held).load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::CallerLimits;

    #[test]
    fn slots_are_limited_per_kind_and_given_back_on_drop() {
        let slots = Slots::default();
        let caller = Caller {
            name: "c".into(),
            limits: CallerLimits {
                max_in_flight: 2,
                max_streams: 1,
            },
            ..Caller::anonymous()
        };
        let first = slots.take(&caller, SlotKind::Call).unwrap();
        let _second = slots.take(&caller, SlotKind::Call).unwrap();
        let refused = slots.take(&caller, SlotKind::Call).unwrap_err();
        assert!(refused.to_string().contains("max_in_flight"), "{refused}");
        assert_eq!(refused.kind.retry(), IN_FLIGHT_RETRY);
        // Streams are counted apart from unary calls.
        let stream = slots.take(&caller, SlotKind::Stream).unwrap();
        let refused = slots.take(&caller, SlotKind::Stream).unwrap_err();
        assert!(refused.to_string().contains("max_streams"), "{refused}");
        assert_eq!(slots.held("c", SlotKind::Call), 2);
        drop(first);
        drop(stream);
        assert!(slots.take(&caller, SlotKind::Call).is_ok());
        assert!(slots.take(&caller, SlotKind::Stream).is_ok());
    }
}
