//! Connections per peer: one client address may hold at most a few of a
//! listener's connections, so a single client cannot take all of them.
//!
//! A peer is an IPv4 address, or an IPv6 /64 (one host usually owns a whole
//! /64, so counting single IPv6 addresses would cap nothing). IPv4 addresses
//! mapped into IPv6 (a dual-stack socket) count as IPv4.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, PoisonError},
};

/// The open connections of every peer of one listener.
#[derive(Debug)]
pub(super) struct PeerLimit {
    /// Most connections one peer may hold.
    max: usize,
    /// Open connections by peer; peers with none are absent.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's hold on its peer's count, given back when dropped.
#[derive(Debug)]
pub(super) struct PeerSlot {
    limit: Arc<PeerLimit>,
    peer: IpAddr,
}

impl PeerLimit {
    /// At most `max` (at least 1) connections per peer.
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            open: Mutex::default(),
        })
    }

    /// A slot for a connection from `remote`, unless its peer holds `max`.
    pub(super) fn take(self: &Arc<Self>, remote: IpAddr) -> Option<PeerSlot> {
        let peer = peer_of(remote);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(peer).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            limit: self.clone(),
            peer,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .limit
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// The peer `remote` counts as: itself for IPv4, its /64 for IPv6.
fn peer_of(remote: IpAddr) -> IpAddr {
    match remote.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_peer_holds_at_most_max_and_gets_slots_back() {
        let limit = PeerLimit::new(2);
        let first = limit.take(ip("127.0.0.1")).unwrap();
        let _second = limit.take(ip("127.0.0.1")).unwrap();
        assert!(limit.take(ip("127.0.0.1")).is_none());
        // Another peer has its own count.
        let _other = limit.take(ip("127.0.0.2")).unwrap();
        drop(first);
        assert!(limit.take(ip("127.0.0.1")).is_some());
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let limit = PeerLimit::new(1);
        let _held = limit.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(limit.take(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(limit.take(ip("2001:db8:1:3::1")).is_some());
        let _v4 = limit.take(ip("192.0.2.7")).unwrap();
        assert!(limit.take(ip("::ffff:192.0.2.7")).is_none());
    }

    #[test]
    fn counts_of_gone_peers_are_forgotten() {
        let limit = PeerLimit::new(3);
        let slots: Vec<_> = (1..=3)
            .map(|n| limit.take(ip(&format!("10.0.0.{n}"))).unwrap())
            .collect();
        drop(slots);
        assert!(limit.open.lock().unwrap().is_empty());
    }
}
