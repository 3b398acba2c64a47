//! Route patterns of the Clerk Backend API: who may call which route through
//! the Clerk-compatible front (the policy's allow-lists), and which routes
//! carry Clerk's per-endpoint limits (keyed budgets).
//!
//! A pattern is a method (or `*` for any) and a path of segments:
//! a literal segment matches itself, `*` any one segment, `{name}` any one
//! segment that also keys a budget (per user, per organization…), and a
//! final `**` any number of further segments (none included). Examples:
//! `GET /v1/users/*`, `PATCH /v1/users/{user_id}/metadata`,
//! `* /v1/organizations/**`.

use std::{fmt, time::Duration};

use crate::admission::{BudgetSpec, Rate};

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// Matches any one segment.
    Any,
    /// Matches any one segment, which becomes part of the budget key.
    Key(String),
    /// Matches the rest of the path (last segment only).
    Rest,
}

/// A method and path pattern, parsed from `"METHOD /path/..."`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    /// Upper-case method, or `None` for any.
    method: Option<String>,
    segments: Vec<Segment>,
}

/// Why a pattern could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "route {pattern:?}: {problem} (expected \"METHOD /path\", e.g. \"GET /v1/users/*\" or \
     \"* /v1/organizations/**\")"
)]
pub struct RouteParseError {
    pattern: String,
    problem: &'static str,
}

impl RoutePattern {
    /// Reads `"METHOD /path"`.
    pub fn parse(text: &str) -> Result<Self, RouteParseError> {
        let fail = |problem| RouteParseError {
            pattern: text.to_owned(),
            problem,
        };
        let (method, path) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| fail("no space between method and path"))?;
        let method = match method {
            "*" => None,
            method if !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic()) => {
                Some(method.to_ascii_uppercase())
            }
            _ => return Err(fail("the method must be letters or `*`")),
        };
        let path = path.trim();
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| fail("the path must start with `/`"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            segments.push(match *part {
                "" => return Err(fail("empty path segment")),
                "**" if index + 1 == parts.len() => Segment::Rest,
                "**" => return Err(fail("`**` may only end a path")),
                "*" => Segment::Any,
                part if part.starts_with('{') && part.ends_with('}') && part.len() > 2 => {
                    Segment::Key(part[1..part.len() - 1].to_owned())
                }
                part if part.contains(['*', '{', '}', '?', '#', ' ']) => {
                    return Err(fail("a segment is literal, `*`, `{name}` or a final `**`"));
                }
                part => Segment::Literal(part.to_owned()),
            });
        }
        Ok(Self { method, segments })
    }

    /// Whether a request of `method` to `path` (without query) matches.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.key(method, path).is_some()
    }

    /// If the request matches, the values of its `{name}` segments joined by
    /// `/` (empty when the pattern has none): the key of a keyed budget.
    pub fn key(&self, method: &str, path: &str) -> Option<String> {
        if self
            .method
            .as_deref()
            .is_some_and(|wanted| !wanted.eq_ignore_ascii_case(method))
        {
            return None;
        }
        let mut parts = path.strip_prefix('/')?.split('/');
        let mut key = String::new();
        for segment in &self.segments {
            if *segment == Segment::Rest {
                return Some(key);
            }
            let part = parts.next().filter(|part| !part.is_empty())?;
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Any => {}
                Segment::Key(_) => {
                    if !key.is_empty() {
                        key.push('/');
                    }
                    key.push_str(part);
                }
                Segment::Rest => unreachable!("handled above"),
            }
        }
        parts.next().is_none().then_some(key)
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.method.as_deref().unwrap_or("*"))?;
        f.write_str(" ")?;
        for segment in &self.segments {
            f.write_str("/")?;
            match segment {
                Segment::Literal(text) => f.write_str(text)?,
                Segment::Any => f.write_str("*")?,
                Segment::Key(name) => write!(f, "{{{name}}}")?,
                Segment::Rest => f.write_str("**")?,
            }
        }
        Ok(())
    }
}

/// A per-endpoint limit: requests matching `pattern` draw, besides the
/// upstream budget, on the budget of their key (the `{name}` segments)
/// under this limit's `rate`.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteLimit {
    /// The limit's name: metrics, logs and the keyed budgets' names.
    pub name: String,
    /// The requests it covers.
    pub pattern: RoutePattern,
    /// At most this many requests per key in any window.
    pub rate: Rate,
}

/// The name of Clerk's per-user write limit (profile and metadata).
pub const USER_WRITES: &str = "user-writes";

/// Clerk's own per-endpoint limits (its "system limits", per instance):
/// applied to every request through the front, so no caller meets Clerk's
/// 429 for them. Writes of one user (profile and metadata) share one budget
/// per user, and likewise per organization and per membership: the safe
/// reading of "10 per 10 s per user" whether Clerk counts them together or
/// apart.
pub fn clerk_limits() -> Vec<RouteLimit> {
    let per_10s = Rate {
        limit: 10,
        window: Duration::from_secs(10),
    };
    let per_hour = |limit| Rate {
        limit,
        window: Duration::from_secs(3600),
    };
    let limit = |name: &str, patterns: &[&str], rate: Rate| {
        patterns
            .iter()
            .map(|pattern| RouteLimit {
                name: name.to_owned(),
                pattern: RoutePattern::parse(pattern).expect("built-in pattern"),
                rate,
            })
            .collect::<Vec<_>>()
    };
    [
        limit(
            USER_WRITES,
            &[
                "PATCH /v1/users/{user_id}",
                "PATCH /v1/users/{user_id}/metadata",
                "PUT /v1/users/{user_id}/metadata",
            ],
            per_10s,
        ),
        limit(
            "organization-writes",
            &[
                "PATCH /v1/organizations/{organization_id}",
                "PATCH /v1/organizations/{organization_id}/metadata",
            ],
            per_10s,
        ),
        limit(
            "membership-writes",
            &[
                "PATCH /v1/organizations/{organization_id}/memberships/{user_id}",
                "PATCH /v1/organizations/{organization_id}/memberships/{user_id}/metadata",
            ],
            per_10s,
        ),
        limit("invitations", &["POST /v1/invitations"], per_hour(100)),
        limit(
            "invitations-bulk",
            &["POST /v1/invitations/bulk"],
            per_hour(25),
        ),
        limit(
            "organization-invitations",
            &["POST /v1/organizations/*/invitations"],
            per_hour(250),
        ),
        limit(
            "organization-invitations-bulk",
            &["POST /v1/organizations/*/invitations/bulk"],
            per_hour(50),
        ),
    ]
    .concat()
}

/// The spec of each keyed budget of `limits`, by limit name (a limit named
/// by several patterns is one budget per key): a key may use its whole
/// limit at once (Clerk counts only N per W), with `margin` on its window.
pub fn keyed_specs(
    limits: &[RouteLimit],
    margin: impl Fn(Rate) -> Duration,
) -> Vec<(String, BudgetSpec)> {
    let mut specs: Vec<(String, BudgetSpec)> = Vec::new();
    for limit in limits {
        if specs.iter().any(|(name, _)| *name == limit.name) {
            continue;
        }
        let mut spec = BudgetSpec::new(limit.rate);
        spec.burst = Some(limit.rate.limit);
        spec.margin = margin(limit.rate);
        specs.push((limit.name.clone(), spec));
    }
    specs
}

/// Path words of Clerk's API kept as they are in route templates; any other
/// segment (an id, a slug, an e-mail) becomes `{id}`.
const PATH_WORDS: &[&str] = &[
    "v1",
    "users",
    "count",
    "metadata",
    "organizations",
    "organization_memberships",
    "memberships",
    "invitations",
    "organization_invitations",
    "bulk",
    "revoke",
    "jwks",
    "sessions",
    "refresh",
    "tokens",
    "verify",
    "clients",
    "handshake_payload",
    "ban",
    "unban",
    "lock",
    "unlock",
    "profile_image",
    "logo",
    "mfa",
    "totp",
    "backup_code",
    "passkeys",
    "web3_wallets",
    "external_accounts",
    "email_addresses",
    "phone_numbers",
    "oauth_access_tokens",
    "verify_password",
    "verify_totp",
    "allowlist_identifiers",
    "blocklist_identifiers",
    "domains",
    "actor_tokens",
    "sign_in_tokens",
    "sign_ups",
    "redirect_urls",
    "jwt_templates",
    "instance",
    "webhooks",
    "svix",
    "saml_connections",
    "testing_tokens",
    "waitlist_entries",
    "machines",
    "api_keys",
    "m2m_tokens",
    "billing",
    "public",
    "private",
];

/// The route template of a request path for metrics and logs: known words
/// kept, every other segment `{id}`, at most 8 segments. Never holds an id,
/// and takes finitely many values whatever callers send.
pub fn template(path: &str) -> String {
    let mut out = String::new();
    for (index, part) in path.trim_start_matches('/').split('/').enumerate() {
        if index == 8 {
            out.push_str("/…");
            break;
        }
        out.push('/');
        out.push_str(if PATH_WORDS.contains(&part) {
            part
        } else {
            "{id}"
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_patterns() {
        for text in [
            "GET /v1/users/*",
            "PATCH /v1/users/{user_id}/metadata",
            "* /v1/organizations/**",
            "POST /v1/invitations",
        ] {
            assert_eq!(RoutePattern::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            RoutePattern::parse("get /v1/users").unwrap().to_string(),
            "GET /v1/users"
        );
        for bad in [
            "GET",
            "GET v1/users",
            "GET /v1//users",
            "GET /v1/**/users",
            "G3T /v1",
            "GET /v1/us*rs",
        ] {
            assert!(RoutePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matches_methods_segments_and_rests() {
        let one = RoutePattern::parse("GET /v1/users/*").unwrap();
        assert!(one.matches("GET", "/v1/users/user_1"));
        assert!(one.matches("get", "/v1/users/user_1"));
        assert!(!one.matches("PATCH", "/v1/users/user_1"));
        assert!(!one.matches("GET", "/v1/users"));
        assert!(!one.matches("GET", "/v1/users/user_1/metadata"));
        assert!(!one.matches("GET", "/v1/users/"));
        let rest = RoutePattern::parse("* /v1/organizations/**").unwrap();
        assert!(rest.matches("DELETE", "/v1/organizations"));
        assert!(rest.matches("POST", "/v1/organizations/org_1/memberships"));
        assert!(!rest.matches("GET", "/v1/organizationsX"));
        assert!(!rest.matches("GET", "/v1/users"));
    }

    #[test]
    fn keys_join_the_named_segments() {
        let pattern =
            RoutePattern::parse("PATCH /v1/organizations/{org}/memberships/{user}").unwrap();
        assert_eq!(
            pattern.key("PATCH", "/v1/organizations/org_1/memberships/user_2"),
            Some("org_1/user_2".to_owned())
        );
        assert_eq!(
            RoutePattern::parse("POST /v1/invitations")
                .unwrap()
                .key("POST", "/v1/invitations"),
            Some(String::new())
        );
    }

    #[test]
    fn clerk_limits_cover_the_documented_routes() {
        let limits = clerk_limits();
        let find = |method: &str, path: &str| {
            limits
                .iter()
                .find_map(|limit| Some((limit.name.as_str(), limit.pattern.key(method, path)?)))
        };
        assert_eq!(
            find("PATCH", "/v1/users/user_1/metadata"),
            Some(("user-writes", "user_1".to_owned()))
        );
        assert_eq!(
            find("PATCH", "/v1/users/user_1"),
            Some(("user-writes", "user_1".to_owned()))
        );
        assert_eq!(
            find("POST", "/v1/invitations"),
            Some(("invitations", String::new()))
        );
        assert_eq!(
            find("PATCH", "/v1/organizations/org_1/memberships/user_2"),
            Some(("membership-writes", "org_1/user_2".to_owned()))
        );
        assert_eq!(find("GET", "/v1/users/user_1"), None);
        assert_eq!(find("GET", "/v1/jwks"), None);
    }

    #[test]
    fn templates_never_hold_ids() {
        assert_eq!(template("/v1/users/user_2abc"), "/v1/users/{id}");
        assert_eq!(
            template("/v1/users/user_2abc/metadata"),
            "/v1/users/{id}/metadata"
        );
        assert_eq!(template("/v1/jwks"), "/v1/jwks");
        assert_eq!(
            template("/v1/x/y/z/a/b/c/d/e/f/g"),
            "/v1/{id}/{id}/{id}/{id}/{id}/{id}/{id}/…"
        );
    }
}
