//! Clerk's per-endpoint "system limits", which apply besides the instance-wide rate limit:
//! user updates and user metadata writes 10 per 10 s per user, the same per organization for
//! organizations, and invitations 100 per hour for the instance. Each limited key gets its own
//! sliding-log [`Limiter`]; a request over a limit blocks that key (only) for the limit's window,
//! which `Retry-After` announces, as Clerk blocks "that specific endpoint".

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::limit::{Admission, Limiter};

/// An endpoint with a limit of its own, counted per key (the user or organization of the path,
/// or the whole instance for invitations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LimitedEndpoint {
    /// `PATCH /v1/users/{user_id}`, per user.
    UserUpdate,
    /// `PATCH` and `PUT /v1/users/{user_id}/metadata`, per user (one count for both methods).
    UserMetadata,
    /// `PATCH /v1/organizations/{organization_id}`, per organization.
    OrganizationUpdate,
    /// `PATCH` and `PUT /v1/organizations/{organization_id}/metadata`, per organization.
    OrganizationMetadata,
    /// `POST /v1/invitations`, per instance.
    InvitationCreate,
}

/// The per-endpoint limits a fake enforces: at most `.0` accepted requests per key in any
/// interval of length `.1`; `None` = unlimited. The default is Clerk's documented values.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointLimits {
    /// `PATCH /v1/users/{user_id}`; Clerk: 10 per 10 s per user.
    pub user_update: Option<(u32, Duration)>,
    /// `PATCH`/`PUT /v1/users/{user_id}/metadata`; Clerk: 10 per 10 s per user.
    pub user_metadata: Option<(u32, Duration)>,
    /// `PATCH /v1/organizations/{organization_id}`; Clerk: 10 per 10 s per organization.
    pub organization_update: Option<(u32, Duration)>,
    /// `PATCH`/`PUT /v1/organizations/{organization_id}/metadata`; Clerk: 10 per 10 s per
    /// organization.
    pub organization_metadata: Option<(u32, Duration)>,
    /// `POST /v1/invitations`; Clerk: 100 per hour.
    pub invitation_create: Option<(u32, Duration)>,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        Self::clerk()
    }
}

impl EndpointLimits {
    /// Clerk's values.
    pub fn clerk() -> Self {
        let ten_per_ten_seconds = Some((10, Duration::from_secs(10)));
        Self {
            user_update: ten_per_ten_seconds,
            user_metadata: ten_per_ten_seconds,
            organization_update: ten_per_ten_seconds,
            organization_metadata: ten_per_ten_seconds,
            invitation_create: Some((100, Duration::from_secs(3600))),
        }
    }

    /// No per-endpoint limit at all (the instance-wide one still applies).
    pub fn off() -> Self {
        Self {
            user_update: None,
            user_metadata: None,
            organization_update: None,
            organization_metadata: None,
            invitation_create: None,
        }
    }

    /// The user and organization write limits all set to `max` per `window` (tests shorten
    /// Clerk's 10 s window this way); the invitation limit is kept.
    pub fn writes(mut self, max: u32, window: Duration) -> Self {
        for endpoint in [
            LimitedEndpoint::UserUpdate,
            LimitedEndpoint::UserMetadata,
            LimitedEndpoint::OrganizationUpdate,
            LimitedEndpoint::OrganizationMetadata,
        ] {
            *self.slot(endpoint) = Some((max, window));
        }
        self
    }

    /// The limit of `endpoint`.
    pub fn get(&self, endpoint: LimitedEndpoint) -> Option<(u32, Duration)> {
        match endpoint {
            LimitedEndpoint::UserUpdate => self.user_update,
            LimitedEndpoint::UserMetadata => self.user_metadata,
            LimitedEndpoint::OrganizationUpdate => self.organization_update,
            LimitedEndpoint::OrganizationMetadata => self.organization_metadata,
            LimitedEndpoint::InvitationCreate => self.invitation_create,
        }
    }

    /// The field holding `endpoint`'s limit.
    fn slot(&mut self, endpoint: LimitedEndpoint) -> &mut Option<(u32, Duration)> {
        match endpoint {
            LimitedEndpoint::UserUpdate => &mut self.user_update,
            LimitedEndpoint::UserMetadata => &mut self.user_metadata,
            LimitedEndpoint::OrganizationUpdate => &mut self.organization_update,
            LimitedEndpoint::OrganizationMetadata => &mut self.organization_metadata,
            LimitedEndpoint::InvitationCreate => &mut self.invitation_create,
        }
    }
}

/// How many keyed limiters may pile up before the idle ones are dropped.
const PRUNE_AT: usize = 4096;

/// One sliding-log limiter per (endpoint, key) seen.
pub(super) struct EndpointLimiter {
    /// The limits in force.
    limits: EndpointLimits,
    /// The limiters of the keys seen recently.
    keys: HashMap<(LimitedEndpoint, String), Limiter>,
}

impl EndpointLimiter {
    /// A limiter enforcing `limits`, with nothing seen.
    pub(super) fn new(limits: EndpointLimits) -> Self {
        Self {
            limits,
            keys: HashMap::new(),
        }
    }

    /// Replaces the limits; what was counted so far (and any block) is forgotten.
    pub(super) fn set_limits(&mut self, limits: EndpointLimits) {
        self.limits = limits;
        self.keys.clear();
    }

    /// Decides on a request to `endpoint` for `key` arriving at `now`: accepted with the
    /// number of accepted requests of that key in the window (0 when unlimited), or blocked.
    pub(super) fn admit(
        &mut self,
        endpoint: LimitedEndpoint,
        key: &str,
        now: Instant,
    ) -> Admission {
        let Some((max, window)) = self.limits.get(endpoint) else {
            return Admission::Accepted { in_window: 0 };
        };
        if self.keys.len() >= PRUNE_AT {
            self.keys.retain(|_, limiter| !limiter.is_idle(now));
        }
        self.keys
            .entry((endpoint, key.to_owned()))
            .or_insert_with(|| Limiter::new(Some((max, window)), window))
            .admit(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn each_key_has_its_own_budget_and_block() {
        let t0 = Instant::now();
        let limits = EndpointLimits::off().writes(2, ms(1000));
        let mut limiter = EndpointLimiter::new(limits);
        let user = LimitedEndpoint::UserMetadata;
        for (i, expected) in [1, 2].into_iter().enumerate() {
            assert_eq!(
                limiter.admit(user, "user_a", t0 + ms(i as u64)),
                Admission::Accepted {
                    in_window: expected
                }
            );
        }
        assert_eq!(
            limiter.admit(user, "user_a", t0 + ms(10)),
            Admission::Blocked {
                retry_after: ms(1000)
            }
        );
        // Another user, and another endpoint of the same user, are not affected.
        assert_eq!(
            limiter.admit(user, "user_b", t0 + ms(10)),
            Admission::Accepted { in_window: 1 }
        );
        assert_eq!(
            limiter.admit(LimitedEndpoint::UserUpdate, "user_a", t0 + ms(10)),
            Admission::Accepted { in_window: 1 }
        );
        // The block lasts one window from the refused request.
        assert!(matches!(
            limiter.admit(user, "user_a", t0 + ms(1009)),
            Admission::Blocked { .. }
        ));
        assert_eq!(
            limiter.admit(user, "user_a", t0 + ms(1010)),
            Admission::Accepted { in_window: 1 }
        );
    }

    #[test]
    fn unlimited_endpoints_always_pass_and_defaults_are_clerks() {
        let t0 = Instant::now();
        let mut limiter = EndpointLimiter::new(EndpointLimits::off());
        for _ in 0..100 {
            assert_eq!(
                limiter.admit(LimitedEndpoint::InvitationCreate, "", t0),
                Admission::Accepted { in_window: 0 }
            );
        }
        let clerk = EndpointLimits::default();
        assert_eq!(
            clerk.get(LimitedEndpoint::UserUpdate),
            Some((10, Duration::from_secs(10)))
        );
        assert_eq!(
            clerk.get(LimitedEndpoint::InvitationCreate),
            Some((100, Duration::from_secs(3600)))
        );
        let shortened = EndpointLimits::clerk().writes(10, ms(2000));
        assert_eq!(
            shortened.get(LimitedEndpoint::OrganizationMetadata),
            Some((10, ms(2000)))
        );
        assert_eq!(
            shortened.invitation_create,
            Some((100, Duration::from_secs(3600)))
        );
    }

    #[test]
    fn idle_keys_are_pruned_without_changing_verdicts() {
        let t0 = Instant::now();
        let mut limiter = EndpointLimiter::new(EndpointLimits::off().writes(1, ms(100)));
        let endpoint = LimitedEndpoint::OrganizationUpdate;
        for n in 0..PRUNE_AT {
            limiter.admit(endpoint, &format!("org_{n}"), t0);
        }
        assert_eq!(limiter.keys.len(), PRUNE_AT);
        // org_0 is still inside its window: the prune must keep it.
        limiter.admit(endpoint, "org_0", t0 + ms(50));
        assert!(matches!(
            limiter.admit(endpoint, "org_0", t0 + ms(60)),
            Admission::Blocked { .. }
        ));
        limiter.admit(endpoint, "org_new", t0 + ms(200));
        assert!(limiter.keys.len() < 10, "{} keys left", limiter.keys.len());
    }
}
