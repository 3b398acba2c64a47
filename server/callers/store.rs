//! The policy in force ([`PolicyStore`]), swapped whole on reload.

use std::sync::Arc;

use tokio::sync::watch;

use super::Policy;

/// The policy in force, replaced whole on reload; readers take a snapshot,
/// and long calls subscribe to learn of every replacement.
#[derive(Debug)]
pub struct PolicyStore(watch::Sender<Arc<Policy>>);

impl PolicyStore {
    /// A store holding `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Self(watch::Sender::new(policy))
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.0.borrow().clone()
    }

    /// Follows the policy in force: the receiver sees every replacement from
    /// now on (open streams re-check their caller with it).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.0.subscribe()
    }

    /// Puts `policy` in force for every call from now on, and tells
    /// subscribers.
    pub fn replace(&self, policy: Arc<Policy>) {
        self.0.send_replace(policy);
    }
}
