//! Callers and budgets: the policy file, and who a bearer token belongs to.
//!
//! The file (TOML; see `deploy/k8s/base/policy.toml`) names the extra budgets and
//! the callers. A caller has a name, the SHA-256 of its bearer token (the
//! token itself is never stored) and/or the identity its client certificate
//! names (`tls_identity`, with mutual TLS), a weight for fair sharing, the
//! budgets it may draw on, its scopes (which services and data it may use)
//! and its concurrency limits. Without a file, every call is the one
//! anonymous caller, allowed everything and unlimited (demo mode, or a
//! broker only reachable by trusted callers).
//!
//! Here: callers, scopes, limits and the front's route allow-lists, and the
//! [`Policy`]; `policy_file.rs`: parsing and validation of the file;
//! `authenticate.rs`: who a call belongs to; `store.rs`: the policy in force.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

mod authenticate;
mod policy_file;
mod slots;
mod store;

pub use authenticate::{AuthError, token_digest};
pub use policy_file::{PolicyError, is_valid_name};
pub use slots::{IN_FLIGHT_RETRY, STREAM_RETRY, Slot, SlotKind, SlotRefusal, Slots};
pub use store::PolicyStore;

use crate::routes::{RouteLimit, RoutePattern, clerk_limits};

use crate::admission::{ANONYMOUS, BudgetSpec, CallerName, UPSTREAM_BUDGET};

/// Share of a budget bulk work keeps while interactive work waits too.
pub const DEFAULT_BULK_SHARE: f64 = 0.1;

/// Most unary calls one caller may have in flight at once, by default.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
/// Most `ListUsers` streams one caller may have open at once, by default.
pub const DEFAULT_MAX_STREAMS: u32 = 8;

/// What a caller may do; each RPC needs one scope, and one field of the
/// answers (`private_metadata`) needs its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `UserService`: GetUser, BatchGetUsers, ListUsers, CountUsers.
    ReadUsers,
    /// See users' `private_metadata` (removed from answers otherwise).
    ReadPrivateMetadata,
    /// `QuotaService.AcquirePermit`, on the caller's budgets.
    AcquirePermits,
    /// `AdminService`: invalidate cached users.
    Admin,
    /// `UserService.UpdateUserMetadata`, and the user write routes of the
    /// Clerk-compatible front (`PATCH /v1/users/*`, `…/metadata`).
    WriteUsers,
}

impl Scope {
    /// Every scope, in the order the policy file documents them.
    pub const ALL: [Scope; 5] = [
        Scope::ReadUsers,
        Scope::ReadPrivateMetadata,
        Scope::AcquirePermits,
        Scope::Admin,
        Scope::WriteUsers,
    ];

    /// Its name in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadUsers => "read_users",
            Scope::ReadPrivateMetadata => "read_private_metadata",
            Scope::AcquirePermits => "acquire_permits",
            Scope::Admin => "admin",
            Scope::WriteUsers => "write_users",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    /// The scopes of a caller whose entry names none: read users and acquire
    /// permits, but neither private metadata nor admin.
    pub fn default_for_callers() -> Self {
        [Scope::ReadUsers, Scope::AcquirePermits]
            .into_iter()
            .collect()
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> Self {
        Self(scopes.into_iter().fold(0, |bits, scope| bits | scope.bit()))
    }
}

/// How much of the broker one caller may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerLimits {
    /// Unary calls in flight.
    pub max_in_flight: u32,
    /// Open `ListUsers` streams.
    pub max_streams: u32,
}

impl CallerLimits {
    /// No limits (the anonymous caller stands for every client at once).
    pub const UNLIMITED: Self = Self {
        max_in_flight: u32::MAX,
        max_streams: u32::MAX,
    };
}

impl Default for CallerLimits {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

/// A known caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Caller {
    /// Its name, used in logs, metrics and fair sharing.
    pub name: CallerName,
    /// Its weight in fair sharing, at least 1.
    pub weight: u32,
    /// The budgets it may draw on; `None` means all.
    pub budgets: Option<HashSet<String>>,
    /// What it may do.
    pub scopes: Scopes,
    /// How much of the broker it may hold at once.
    pub limits: CallerLimits,
    /// Routes of the Clerk-compatible front it may call beyond those its
    /// scopes imply; `None`: every route (the anonymous caller).
    pub routes: Option<Vec<RoutePattern>>,
}

impl Caller {
    /// The caller of a broker without a policy file: allowed everything,
    /// unlimited.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.into(),
            weight: 1,
            budgets: None,
            scopes: Scopes::all(),
            limits: CallerLimits::UNLIMITED,
            routes: None,
        }
    }

    /// Whether it may call `method` `path` through the Clerk-compatible
    /// front: a route of its allow-list, one its scopes imply
    /// (`read_users`: the user reads; `write_users`: the user writes), or
    /// `GET /v1/jwks` (public keys, needed to verify sessions).
    pub fn may_call(&self, method: &str, path: &str) -> bool {
        let Some(routes) = &self.routes else {
            return true;
        };
        let implied = |scope, patterns: &[&str]| {
            self.may(scope)
                && patterns.iter().any(|pattern| {
                    RoutePattern::parse(pattern).is_ok_and(|pattern| pattern.matches(method, path))
                })
        };
        routes.iter().any(|route| route.matches(method, path))
            || implied(Scope::ReadUsers, &READ_USER_ROUTES)
            || implied(Scope::WriteUsers, &WRITE_USER_ROUTES)
            || (method.eq_ignore_ascii_case("GET") && path == "/v1/jwks")
    }

    /// Whether it has `scope`.
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// Whether it may draw on the budget `name` ("" is the upstream budget).
    pub fn may_use(&self, name: &str) -> bool {
        let name = if name.is_empty() {
            UPSTREAM_BUDGET
        } else {
            name
        };
        self.budgets
            .as_ref()
            .is_none_or(|budgets| budgets.contains(name))
    }
}

/// The front's routes `read_users` allows.
const READ_USER_ROUTES: [&str; 3] = ["GET /v1/users", "GET /v1/users/count", "GET /v1/users/*"];

/// The front's routes `write_users` allows.
const WRITE_USER_ROUTES: [&str; 3] = [
    "PATCH /v1/users/*",
    "PATCH /v1/users/*/metadata",
    "PUT /v1/users/*/metadata",
];

/// The callers and budgets in force.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Callers by the SHA-256 of their token; empty: anonymous mode.
    /// Looked up on every call; keys are the policy's digests (a fast
    /// hash: lookups cannot flood it).
    by_token: HashMap<[u8; 32], Arc<Caller>, foldhash::fast::RandomState>,
    /// Callers by the identity their client certificate names.
    by_tls_identity: HashMap<String, Arc<Caller>>,
    /// The caller of every call in anonymous mode.
    anonymous: Option<Arc<Caller>>,
    /// Extra budgets (the upstream budget is configured by flags).
    pub budgets: Vec<(String, BudgetSpec)>,
    /// Share of every budget bulk work keeps while interactive work waits.
    pub bulk_share: f64,
    /// Per-endpoint limits of the Clerk-compatible front: Clerk's own, then
    /// the file's.
    pub route_limits: Vec<RouteLimit>,
}

impl Policy {
    /// No file: one anonymous caller allowed everything, no extra budgets.
    pub fn anonymous() -> Self {
        Self {
            by_token: HashMap::default(),
            by_tls_identity: HashMap::new(),
            anonymous: Some(Arc::new(Caller::anonymous())),
            budgets: Vec::new(),
            bulk_share: DEFAULT_BULK_SHARE,
            route_limits: clerk_limits(),
        }
    }

    /// Whether calls need no token.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    /// The callers, in name order (for logs and tests).
    pub fn callers(&self) -> Vec<Arc<Caller>> {
        let mut callers: Vec<_> = self
            .by_token
            .values()
            .chain(self.by_tls_identity.values())
            .cloned()
            .collect();
        callers.sort_by(|a, b| a.name.cmp(&b.name));
        callers.dedup_by(|a, b| a.name == b.name);
        callers
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;

    const TOKEN_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"; // "test"

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, |_| Duration::ZERO)
    }

    #[test]
    fn reads_callers_and_budgets() {
        let policy = parse(&format!(
            r#"
            bulk_share = 0.2
            [[budgets]]
            name = "writes"
            rate = "10/10s"
            burst = 2
            [[callers]]
            name = "checkout"
            token_sha256 = "{TOKEN_HASH}"
            weight = 3
            budgets = ["clerk", "writes"]
            "#
        ))
        .unwrap();
        assert!(!policy.is_anonymous());
        assert_eq!(policy.bulk_share, 0.2);
        assert_eq!(policy.budgets[0].0, "writes");
        assert_eq!(policy.budgets[0].1.burst, Some(2));
        let caller = policy.authenticate(Some(b"Bearer test")).unwrap();
        assert_eq!((&*caller.name, caller.weight), ("checkout", 3));
        assert!(caller.may_use("") && caller.may_use("writes") && !caller.may_use("other"));
        assert_eq!(
            policy.authenticate(Some(b"Bearer nope")),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            policy.authenticate(Some(b"Basic x")),
            Err(AuthError::Malformed)
        );
        assert_eq!(policy.authenticate(None), Err(AuthError::Missing));
    }

    #[test]
    fn reads_scopes_and_limits_with_their_defaults() {
        let other = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"; // "test2"
        let policy = parse(&format!(
            r#"
            max_streams = 3
            [[callers]]
            name = "reader"
            token_sha256 = "{TOKEN_HASH}"
            scopes = ["read_users", "read_private_metadata"]
            max_in_flight = 10
            [[callers]]
            name = "plain"
            token_sha256 = "{other}"
            "#
        ))
        .unwrap();
        let reader = policy.authenticate(Some(b"Bearer test")).unwrap();
        assert!(reader.may(Scope::ReadUsers) && reader.may(Scope::ReadPrivateMetadata));
        assert!(!reader.may(Scope::AcquirePermits) && !reader.may(Scope::Admin));
        assert_eq!(
            reader.limits,
            CallerLimits {
                max_in_flight: 10,
                max_streams: 3
            }
        );
        let plain = policy.authenticate(Some(b"Bearer test2")).unwrap();
        assert_eq!(plain.scopes, Scopes::default_for_callers());
        assert!(!plain.may(Scope::ReadPrivateMetadata) && !plain.may(Scope::Admin));
        assert_eq!(plain.limits.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(plain.limits.max_streams, 3);
        let anonymous = Policy::anonymous().authenticate(None).unwrap();
        assert!(Scope::ALL.into_iter().all(|scope| anonymous.may(scope)));
        assert_eq!(anonymous.limits, CallerLimits::UNLIMITED);
    }

    #[test]
    fn rejects_unknown_scopes_and_zero_limits() {
        let error = parse(&format!(
            "max_in_flight = 0
[[callers]]
name = \"a\"
token_sha256 = \"{TOKEN_HASH}\"
\
             scopes = [\"read_users\", \"write_everything\"]
max_streams = 0
"
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("unknown scope \"write_everything\" (known: read_users, read_private_metadata, acquire_permits, admin, write_users)"), "{error}");
        assert!(
            error.contains("the top level: max_in_flight must be between 1 and 100000"),
            "{error}"
        );
        assert!(
            error.contains("callers[0] (\"a\"): max_streams must be"),
            "{error}"
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let text = "[[callers]]\nname = \"\"\ntoken_sha256 = \"x\"\nweight = 0\n";
        let error = parse(text).unwrap_err().to_string();
        assert_eq!(error.lines().count(), 3, "{error}");
    }

    #[test]
    fn the_example_policy_in_deploy_is_valid() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/k8s/base/policy.toml"
        ));
        let policy = Policy::load(path, |_| Duration::ZERO).unwrap();
        let names: Vec<_> = policy
            .callers()
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(names, ["checkout", "nightly-export"]);
        assert_eq!(policy.budgets[0].1.burst, Some(2));
    }

    #[test]
    fn a_client_certificate_identity_names_a_caller() {
        let policy = parse(&format!(
            r#"
            [[callers]]
            name = "checkout"
            token_sha256 = "{TOKEN_HASH}"
            tls_identity = "spiffe://example.org/checkout"
            [[callers]]
            name = "export"
            tls_identity = "export.internal"
            "#
        ))
        .unwrap();
        let names = |caller: Result<Arc<Caller>, AuthError>| caller.map(|c| c.name.to_string());
        assert_eq!(
            names(policy.authenticate_tls(["spiffe://example.org/checkout"])),
            Ok("checkout".into())
        );
        // The first name that is a caller's identity wins: URIs come first.
        assert_eq!(
            names(policy.authenticate_tls(["spiffe://other", "export.internal"])),
            Ok("export".into())
        );
        assert_eq!(
            names(policy.authenticate_tls(["stranger.internal"])),
            Err(AuthError::UnknownIdentity("stranger.internal".into()))
        );
        assert_eq!(
            names(policy.authenticate(Some(b"Bearer test"))),
            Ok("checkout".into())
        );
        let callers: Vec<_> = policy
            .callers()
            .iter()
            .map(|c| c.name.to_string())
            .collect();
        assert_eq!(callers, ["checkout", "export"]);
        assert_eq!(
            names(Policy::anonymous().authenticate_tls(["x"])),
            Ok(ANONYMOUS.into())
        );
    }

    #[test]
    fn anonymous_mode_lets_everyone_in() {
        let policy = Policy::anonymous();
        let caller = policy.authenticate(None).unwrap();
        assert_eq!(&*caller.name, ANONYMOUS);
        assert!(caller.may_use("anything"));
    }

    #[test]
    fn explains_each_mistake_with_its_place() {
        let caller = format!("[[callers]]\nname = \"a\"\ntoken_sha256 = \"{TOKEN_HASH}\"\n");
        let cases = [
            ("[[callers]]\nname = 3\n".to_owned(), "line 2"),
            ("colour = \"red\"\n".to_owned(), "unknown field"),
            (
                format!("{caller}weight = 0\n"),
                "callers[0] (\"a\"): weight",
            ),
            (
                format!("{caller}budgets = [\"x\"]\n"),
                "unknown budget \"x\"",
            ),
            (caller.replace(TOKEN_HASH, "abc"), "64 hex digits"),
            (format!("{caller}{caller}"), "the name is taken"),
            (
                "[[callers]]\nname = \"a\"\n".to_owned(),
                "set token_sha256, tls_identity",
            ),
            (
                "[[callers]]\nname = \"a\"\ntls_identity = \"spiffe://x/a\"\n\
                 [[callers]]\nname = \"b\"\ntls_identity = \"spiffe://x/a\"\n"
                    .to_owned(),
                "callers[1] (\"b\"): another caller has the same tls_identity",
            ),
            (
                "[[callers]]\nname = \"a\"\ntls_identity = \" a \"\n".to_owned(),
                "surrounding spaces",
            ),
            (
                "[[budgets]]\nname = \"clerk\"\nrate = \"1/1s\"\n".to_owned(),
                "upstream budget",
            ),
            (
                "[[budgets]]\nname = \"b\"\nrate = \"1/1x\"\n".to_owned(),
                "invalid rate",
            ),
            ("bulk_share = 0.9\n".to_owned(), "bulk_share"),
            (String::new(), "no callers"),
        ];
        for (text, expected) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn routes_come_from_the_allow_list_and_the_scopes() {
        let policy = parse(&format!(
            r#"
            [[route_limits]]
            name = "exports"
            route = "POST /v1/exports/{{id}}"
            rate = "5/1m"
            [[callers]]
            name = "orgs"
            token_sha256 = "{TOKEN_HASH}"
            scopes = ["write_users"]
            routes = ["* /v1/organizations/**", "POST /v1/invitations"]
            "#
        ))
        .unwrap();
        let caller = policy.authenticate(Some(b"Bearer test")).unwrap();
        assert!(caller.may_call("GET", "/v1/organizations/org_1"));
        assert!(caller.may_call("DELETE", "/v1/organizations/org_1/memberships/u"));
        assert!(caller.may_call("POST", "/v1/invitations"));
        assert!(!caller.may_call("GET", "/v1/invitations"));
        assert!(
            caller.may_call("PATCH", "/v1/users/user_1/metadata"),
            "write_users"
        );
        assert!(!caller.may_call("GET", "/v1/users/user_1"), "no read_users");
        assert!(
            caller.may_call("GET", "/v1/jwks"),
            "public keys for everyone"
        );
        assert!(Caller::anonymous().may_call("DELETE", "/v1/users/user_1"));
        let limit = policy.route_limits.last().unwrap();
        assert_eq!(limit.name, "exports");
        assert_eq!(
            limit.pattern.key("POST", "/v1/exports/e1"),
            Some("e1".into())
        );
        assert!(
            policy.route_limits.len() > 1,
            "Clerk's own limits come first"
        );
    }

    #[test]
    fn bad_routes_and_route_limits_are_explained() {
        let caller = format!("[[callers]]\nname = \"a\"\ntoken_sha256 = \"{TOKEN_HASH}\"\n");
        let cases = [
            (
                format!("{caller}routes = [\"GET v1/users\"]\n"),
                "must start with `/`",
            ),
            (
                format!(
                    "[[route_limits]]\nname = \"user-writes\"\nroute = \"GET /v1/x\"\nrate = \"1/1s\"\n{caller}"
                ),
                "built-in",
            ),
            (
                format!(
                    "[[route_limits]]\nname = \"x\"\nroute = \"GET /v1/**/x\"\nrate = \"1/1s\"\n{caller}"
                ),
                "may only end a path",
            ),
            (
                format!(
                    "[[route_limits]]\nname = \"x\"\nroute = \"GET /v1/x\"\nrate = \"often\"\n{caller}"
                ),
                "route_limits[0]",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
