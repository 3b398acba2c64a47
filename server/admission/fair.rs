//! `FairQueue`: who among the waiters of one budget goes next.
//!
//! Two classes, interactive and bulk. While both have waiters, they share the
//! budget by stride scheduling with weights `1 - bulk_share` and `bulk_share`:
//! interactive work goes first almost always, yet bulk work keeps its minimum
//! share, so neither can starve the other; when one class is idle the other
//! gets everything. Within a class, callers share by their weights, again by
//! stride scheduling: each caller has a `pass` that grows by cost / weight
//! when it is served, and the waiting caller with the smallest pass goes next.
//! A caller (or class) that was idle rejoins at the current virtual time, so
//! idleness earns no credit. Within one caller, first come, first served.

use std::collections::{HashMap, VecDeque};

use super::{CallerName, Priority};

/// One waiting request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Identifies the waiter.
    pub(crate) ticket: u64,
    /// Units it asks for.
    pub(crate) cost: u32,
}

/// The waiters of one caller in one class.
#[derive(Debug, Default)]
struct Lane {
    weight: f64,
    pass: f64,
    waiting: VecDeque<Entry>,
    /// Sum of the costs in `waiting`.
    queued: u64,
}

/// The waiters of one class.
#[derive(Debug, Default)]
struct Class {
    /// Share of the budget while both classes wait (stride weight).
    share: f64,
    pass: f64,
    /// The pass of the caller served last: where idle callers rejoin.
    virtual_time: f64,
    lanes: HashMap<CallerName, Lane>,
    queued: u64,
}

impl Class {
    fn active(&self) -> bool {
        self.queued > 0
    }

    /// The waiting caller with the smallest pass (ties: by name, stable).
    fn next_lane(&self) -> Option<(&CallerName, &Lane)> {
        self.lanes
            .iter()
            .filter(|(_, lane)| !lane.waiting.is_empty())
            .min_by(|(a_name, a), (b_name, b)| a.pass.total_cmp(&b.pass).then(a_name.cmp(b_name)))
    }
}

/// The fair queue of one budget.
#[derive(Debug)]
pub(crate) struct FairQueue {
    /// Interactive, then bulk.
    classes: [Class; 2],
    /// The pass of the class served last.
    virtual_time: f64,
}

fn index(priority: Priority) -> usize {
    match priority {
        Priority::Interactive => 0,
        Priority::Bulk => 1,
    }
}

impl FairQueue {
    /// A queue in which bulk work keeps `bulk_share` (0 to 1) of the budget
    /// while interactive work waits too.
    pub(crate) fn new(bulk_share: f64) -> Self {
        let bulk_share = bulk_share.clamp(0.001, 0.999);
        Self {
            classes: [
                Class {
                    share: 1.0 - bulk_share,
                    ..Class::default()
                },
                Class {
                    share: bulk_share,
                    ..Class::default()
                },
            ],
            virtual_time: 0.0,
        }
    }

    /// Takes a new bulk share; waiters keep their places.
    pub(crate) fn set_bulk_share(&mut self, bulk_share: f64) {
        let bulk_share = bulk_share.clamp(0.001, 0.999);
        self.classes[0].share = 1.0 - bulk_share;
        self.classes[1].share = bulk_share;
    }

    /// Whether nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.classes.iter().all(|class| !class.active())
    }

    /// Units waiting in one class.
    pub(crate) fn queued(&self, priority: Priority) -> u64 {
        self.classes[index(priority)].queued
    }

    /// Every caller with units waiting: (class, caller, weight, units).
    pub(crate) fn waiting_lanes(&self) -> Vec<(Priority, CallerName, u32, u64)> {
        let mut lanes = Vec::new();
        for (class, priority) in self
            .classes
            .iter()
            .zip([Priority::Interactive, Priority::Bulk])
        {
            for (name, lane) in &class.lanes {
                if lane.queued > 0 {
                    lanes.push((priority, name.clone(), lane.weight as u32, lane.queued));
                }
            }
        }
        lanes
    }

    /// Units a caller has waiting in all classes.
    pub(crate) fn queued_by(&self, caller: &str) -> u64 {
        self.classes
            .iter()
            .filter_map(|class| class.lanes.get(caller))
            .map(|lane| lane.queued)
            .sum()
    }

    /// Queues a request of `caller` with `weight` (at least 1).
    pub(crate) fn push(
        &mut self,
        caller: &CallerName,
        weight: u32,
        priority: Priority,
        entry: Entry,
    ) {
        let class_was_idle = !self.classes[index(priority)].active();
        if class_was_idle {
            let class = &mut self.classes[index(priority)];
            class.pass = class.pass.max(self.virtual_time);
        }
        let class = &mut self.classes[index(priority)];
        let virtual_time = class.virtual_time;
        let lane = class.lanes.entry(caller.clone()).or_default();
        if lane.waiting.is_empty() {
            lane.pass = lane.pass.max(virtual_time);
        }
        lane.weight = f64::from(weight.max(1));
        lane.queued += u64::from(entry.cost);
        class.queued += u64::from(entry.cost);
        lane.waiting.push_back(entry);
    }

    /// The request that goes next, without removing it.
    pub(crate) fn peek(&self) -> Option<&Entry> {
        let class = self.next_class()?;
        let (_, lane) = self.classes[class].next_lane()?;
        lane.waiting.front()
    }

    /// Removes the next request and charges its cost to its caller and class.
    pub(crate) fn pop(&mut self) -> Option<Entry> {
        let class_index = self.next_class()?;
        let class = &mut self.classes[class_index];
        let name = class.next_lane()?.0.clone();
        let lane = class.lanes.get_mut(&name)?;
        let entry = lane.waiting.pop_front()?;
        let cost = f64::from(entry.cost);
        class.virtual_time = lane.pass;
        lane.pass += cost / lane.weight;
        lane.queued -= u64::from(entry.cost);
        class.queued -= u64::from(entry.cost);
        self.virtual_time = class.pass;
        class.pass += cost / class.share;
        self.forget_idle(class_index, &name);
        Some(entry)
    }

    /// Removes a waiter that gave up; it is charged nothing.
    pub(crate) fn remove(&mut self, ticket: u64) -> bool {
        for class_index in 0..self.classes.len() {
            let class = &mut self.classes[class_index];
            let found = class.lanes.iter_mut().find_map(|(name, lane)| {
                let position = lane
                    .waiting
                    .iter()
                    .position(|entry| entry.ticket == ticket)?;
                let entry = lane.waiting.remove(position)?;
                lane.queued -= u64::from(entry.cost);
                Some((name.clone(), entry.cost))
            });
            if let Some((name, cost)) = found {
                class.queued -= u64::from(cost);
                self.forget_idle(class_index, &name);
                return true;
            }
        }
        false
    }

    /// Units that will likely be served before a new request of `cost` from
    /// `caller` with `weight`, given everyone's shares: the basis of an
    /// honest estimate of its wait.
    pub(crate) fn ahead_of(&self, caller: &str, weight: u32, priority: Priority, cost: u32) -> u64 {
        let this = &self.classes[index(priority)];
        let other = &self.classes[1 - index(priority)];
        let own = this.lanes.get(caller).map_or(0, |lane| lane.queued) + u64::from(cost);
        let weight = f64::from(weight.max(1));
        let total_weight: f64 = weight
            + this
                .lanes
                .iter()
                .filter(|(name, lane)| name.as_ref() != caller && !lane.waiting.is_empty())
                .map(|(_, lane)| lane.weight)
                .sum::<f64>();
        // Units of this class served until ours are, at our share of it.
        let in_class =
            ((own as f64) * total_weight / weight).min((this.queued + u64::from(cost)) as f64);
        // The other class takes its share meanwhile, as far as it has work.
        let from_other = if other.active() {
            (in_class * other.share / this.share).min(other.queued as f64)
        } else {
            0.0
        };
        ((in_class + from_other) as u64).saturating_sub(u64::from(cost))
    }

    fn next_class(&self) -> Option<usize> {
        match (self.classes[0].active(), self.classes[1].active()) {
            (false, false) => None,
            (true, false) => Some(0),
            (false, true) => Some(1),
            // Ties go to interactive work.
            (true, true) => Some(usize::from(self.classes[1].pass < self.classes[0].pass)),
        }
    }

    /// Drops the lane of a caller with nothing waiting, keeping maps small;
    /// its pass is not needed again (it rejoins at the virtual time).
    fn forget_idle(&mut self, class_index: usize, name: &str) {
        let class = &mut self.classes[class_index];
        if class
            .lanes
            .get(name)
            .is_some_and(|lane| lane.waiting.is_empty())
            && class.lanes.len() > 64
        {
            class.lanes.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `rounds` units from saturating callers and counts each one's.
    fn serve(
        queue: &mut FairQueue,
        callers: &[(&str, u32, Priority)],
        rounds: usize,
    ) -> Vec<usize> {
        let names: Vec<CallerName> = callers
            .iter()
            .map(|(name, ..)| CallerName::from(*name))
            .collect();
        let mut ticket = 0;
        let mut owner = HashMap::new();
        // Keep every caller saturated: two requests waiting each.
        for _ in 0..2 {
            for (i, (_, weight, priority)) in callers.iter().enumerate() {
                queue.push(&names[i], *weight, *priority, Entry { ticket, cost: 1 });
                owner.insert(ticket, i);
                ticket += 1;
            }
        }
        let mut served = vec![0; callers.len()];
        for _ in 0..rounds {
            let entry = queue.pop().unwrap();
            let i = owner.remove(&entry.ticket).unwrap();
            served[i] += 1;
            let (_, weight, priority) = callers[i];
            queue.push(&names[i], weight, priority, Entry { ticket, cost: 1 });
            owner.insert(ticket, i);
            ticket += 1;
        }
        // Those still waiting give up (uncharged), leaving the queue empty.
        for ticket in owner.keys() {
            assert!(queue.remove(*ticket));
        }
        assert!(queue.is_empty());
        served
    }

    #[test]
    fn saturating_callers_share_by_weight() {
        let mut queue = FairQueue::new(0.1);
        let served = serve(
            &mut queue,
            &[
                ("a", 3, Priority::Interactive),
                ("b", 1, Priority::Interactive),
            ],
            4000,
        );
        assert_eq!(served, [3000, 1000]);
    }

    #[test]
    fn bulk_keeps_its_minimum_share_and_no_more() {
        let mut queue = FairQueue::new(0.1);
        let served = serve(
            &mut queue,
            &[
                ("web", 1, Priority::Interactive),
                ("export", 5, Priority::Bulk),
            ],
            1000,
        );
        assert_eq!(served, [900, 100]);
    }

    #[test]
    fn a_lone_class_or_caller_gets_everything() {
        let mut queue = FairQueue::new(0.1);
        assert_eq!(
            serve(&mut queue, &[("export", 1, Priority::Bulk)], 50),
            [50]
        );
    }

    #[test]
    fn idle_time_earns_no_credit() {
        let mut queue = FairQueue::new(0.1);
        serve(&mut queue, &[("a", 1, Priority::Interactive)], 100);
        // b joins late: it shares from now on instead of catching up 100 units.
        let served = serve(
            &mut queue,
            &[
                ("a", 1, Priority::Interactive),
                ("b", 1, Priority::Interactive),
            ],
            100,
        );
        assert!((45..=55).contains(&served[1]), "{served:?}");
    }

    #[test]
    fn removed_waiters_are_not_charged() {
        let mut queue = FairQueue::new(0.1);
        let a = CallerName::from("a");
        queue.push(&a, 1, Priority::Interactive, Entry { ticket: 1, cost: 5 });
        queue.push(&a, 1, Priority::Interactive, Entry { ticket: 2, cost: 1 });
        assert_eq!(queue.queued_by("a"), 6);
        assert!(queue.remove(1));
        assert!(!queue.remove(1));
        assert_eq!(queue.peek(), Some(&Entry { ticket: 2, cost: 1 }));
        assert_eq!(queue.queued_by("a"), 1);
        queue.pop();
        assert!(queue.is_empty());
    }

    #[test]
    fn estimates_scale_with_the_callers_share() {
        let mut queue = FairQueue::new(0.1);
        let (a, b) = (CallerName::from("a"), CallerName::from("b"));
        for ticket in 0..30 {
            queue.push(&a, 1, Priority::Interactive, Entry { ticket, cost: 1 });
            queue.push(
                &b,
                3,
                Priority::Interactive,
                Entry {
                    ticket: 100 + ticket,
                    cost: 1,
                },
            );
        }
        // a has 30 waiting at weight 1 of 4: about 4 x 31 units go first.
        assert_eq!(queue.ahead_of("a", 1, Priority::Interactive, 1), 60);
        // b's next unit: 31 of its own at 3/4 of the class.
        assert_eq!(queue.ahead_of("b", 3, Priority::Interactive, 1), 40);
    }
}
