//! The policy file: its TOML form, parsed and validated into a [`Policy`],
//! every problem listed with its location.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
};

use serde::Deserialize;

use super::{
    Caller, CallerLimits, DEFAULT_BULK_SHARE, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_STREAMS, Policy,
    Scope, Scopes,
};
use crate::{
    admission::{ANONYMOUS, BudgetSpec, DEFAULT_QUEUE_LIMIT, Rate, UPSTREAM_BUDGET, default_burst},
    routes::{RouteLimit, RoutePattern, clerk_limits},
};

impl Policy {
    /// Reads and validates a policy file; `margin` is added to every
    /// budget's window, as for the upstream budget.
    pub fn load(
        path: &Path,
        margin: impl Fn(Rate) -> tokio::time::Duration,
    ) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| PolicyError(format!("cannot read {}: {error}", path.display())))?;
        Self::parse(&text, margin)
            .map_err(|error| PolicyError(format!("{}: {}", path.display(), error.0)))
    }

    /// Validates a policy file's text.
    pub fn parse(
        text: &str,
        margin: impl Fn(Rate) -> tokio::time::Duration,
    ) -> Result<Self, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|error| PolicyError(describe(text, &error)))?;
        // Every problem is collected, so one run of `check-config` shows all.
        let mut problems = Vec::new();
        let bulk_share = file.bulk_share.unwrap_or(DEFAULT_BULK_SHARE);
        let default_limits = CallerLimits {
            max_in_flight: file.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            max_streams: file.max_streams.unwrap_or(DEFAULT_MAX_STREAMS),
        };
        check_limits("the top level", default_limits, &mut problems);
        if !(0.01..=0.5).contains(&bulk_share) {
            problems.push(format!(
                "bulk_share {bulk_share} must be between 0.01 and 0.5"
            ));
        }
        let mut budgets = Vec::new();
        let mut names = HashSet::from([UPSTREAM_BUDGET.to_owned()]);
        for (i, entry) in file.budgets.into_iter().enumerate() {
            let at = format!("budgets[{i}] ({:?})", entry.name);
            if !names.insert(entry.name.clone()) {
                problems.push(format!(
                    "{at}: the name is taken (\"{UPSTREAM_BUDGET}\" is the upstream budget)"
                ));
            }
            check_name(&at, &entry.name, &mut problems);
            let rate: Rate = match entry.rate.parse() {
                Ok(rate) => rate,
                Err(error) => {
                    problems.push(format!("{at}: {error}"));
                    continue;
                }
            };
            if entry
                .burst
                .is_some_and(|burst| burst == 0 || burst > rate.limit)
            {
                problems.push(format!(
                    "{at}: burst must be between 1 and the rate's limit {}",
                    rate.limit
                ));
            }
            let mut spec = BudgetSpec::new(rate);
            spec.burst = Some(entry.burst.unwrap_or_else(|| default_burst(rate)));
            spec.margin = margin(rate);
            spec.queue_limit = entry.queue_limit.unwrap_or(DEFAULT_QUEUE_LIMIT).max(1);
            spec.bulk_share = bulk_share;
            budgets.push((entry.name, spec));
        }
        let mut route_limits = clerk_limits();
        let builtin: HashSet<String> = route_limits.iter().map(|l| l.name.clone()).collect();
        for (i, entry) in file.route_limits.into_iter().enumerate() {
            let at = format!("route_limits[{i}] ({:?})", entry.name);
            check_name(&at, &entry.name, &mut problems);
            if builtin.contains(&entry.name) {
                problems.push(format!("{at}: the name is one of Clerk's built-in limits"));
            }
            let pattern = RoutePattern::parse(&entry.route)
                .map_err(|error| problems.push(format!("{at}: {error}")));
            let rate = entry
                .rate
                .parse::<Rate>()
                .map_err(|error| problems.push(format!("{at}: {error}")));
            if let (Ok(pattern), Ok(rate)) = (pattern, rate) {
                route_limits.push(RouteLimit {
                    name: entry.name,
                    pattern,
                    rate,
                });
            }
        }
        let mut by_token = HashMap::default();
        let mut by_tls_identity = HashMap::new();
        let mut caller_names = HashSet::new();
        for (i, entry) in file.callers.into_iter().enumerate() {
            let at = format!("callers[{i}] ({:?})", entry.name);
            check_name(&at, &entry.name, &mut problems);
            if !caller_names.insert(entry.name.clone()) || entry.name == ANONYMOUS {
                problems.push(format!("{at}: the name is taken"));
            }
            let weight = entry.weight.unwrap_or(1);
            if weight == 0 || weight > 1000 {
                problems.push(format!("{at}: weight must be between 1 and 1000"));
            }
            let allowed = entry
                .budgets
                .unwrap_or_else(|| vec![UPSTREAM_BUDGET.to_owned()]);
            for unknown in allowed.iter().filter(|name| !names.contains(*name)) {
                problems.push(format!("{at}: unknown budget {unknown:?}"));
            }
            let digest = match entry.token_sha256.as_deref().map(parse_sha256) {
                Some(Some(digest)) => Some(digest),
                Some(None) => {
                    problems.push(format!(
                        "{at}: token_sha256 must be 64 hex digits (e.g. `printf %s \"$TOKEN\" | sha256sum`)"
                    ));
                    continue;
                }
                None if entry.tls_identity.is_none() => {
                    problems.push(format!(
                        "{at}: set token_sha256, tls_identity (a client certificate's URI or DNS \
                         name, or CN), or both"
                    ));
                    continue;
                }
                None => None,
            };
            let scopes = match entry.scopes {
                None => Scopes::default_for_callers(),
                Some(names) => names
                    .iter()
                    .filter_map(|name| {
                        let scope = Scope::parse(name);
                        if scope.is_none() {
                            problems.push(format!(
                                "{at}: unknown scope {name:?} (known: {})",
                                Scope::ALL.map(Scope::as_str).join(", ")
                            ));
                        }
                        scope
                    })
                    .collect(),
            };
            let limits = CallerLimits {
                max_in_flight: entry.max_in_flight.unwrap_or(default_limits.max_in_flight),
                max_streams: entry.max_streams.unwrap_or(default_limits.max_streams),
            };
            check_limits(&at, limits, &mut problems);
            let routes = entry
                .routes
                .unwrap_or_default()
                .iter()
                .filter_map(|route| {
                    RoutePattern::parse(route)
                        .map_err(|error| problems.push(format!("{at}: {error}")))
                        .ok()
                })
                .collect();
            let caller = Arc::new(Caller {
                name: entry.name.as_str().into(),
                weight,
                budgets: Some(allowed.into_iter().collect()),
                scopes,
                limits,
                routes: Some(routes),
            });
            if let Some(identity) = entry.tls_identity {
                if identity.is_empty() || identity.trim() != identity {
                    problems.push(format!(
                        "{at}: tls_identity must be a name without surrounding spaces"
                    ));
                } else if by_tls_identity
                    .insert(identity.clone(), caller.clone())
                    .is_some()
                {
                    problems.push(format!(
                        "{at}: another caller has the same tls_identity {identity:?}"
                    ));
                }
            }
            if let Some(digest) = digest
                && by_token.insert(digest, caller).is_some()
            {
                problems.push(format!("{at}: another caller has the same token"));
            }
        }
        if caller_names.is_empty() {
            problems.push("no callers: add at least one [[callers]] entry".into());
        }
        if !problems.is_empty() {
            return Err(PolicyError(problems.join("\n")));
        }
        Ok(Self {
            by_token,
            by_tls_identity,
            anonymous: None,
            budgets,
            bulk_share,
            route_limits,
        })
    }
}

/// An invalid policy file, explained with its location.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    bulk_share: Option<f64>,
    max_in_flight: Option<u32>,
    max_streams: Option<u32>,
    #[serde(default)]
    budgets: Vec<BudgetEntry>,
    #[serde(default)]
    callers: Vec<CallerEntry>,
    #[serde(default)]
    route_limits: Vec<RouteLimitEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteLimitEntry {
    name: String,
    route: String,
    rate: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetEntry {
    name: String,
    rate: String,
    burst: Option<u32>,
    queue_limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallerEntry {
    name: String,
    token_sha256: Option<String>,
    tls_identity: Option<String>,
    weight: Option<u32>,
    budgets: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    max_in_flight: Option<u32>,
    max_streams: Option<u32>,
    routes: Option<Vec<String>>,
}

fn check_limits(at: &str, limits: CallerLimits, problems: &mut Vec<String>) {
    for (name, value) in [
        ("max_in_flight", limits.max_in_flight),
        ("max_streams", limits.max_streams),
    ] {
        if !(1..=100_000).contains(&value) {
            problems.push(format!("{at}: {name} must be between 1 and 100000"));
        }
    }
}

/// Whether `name` can name a budget or a caller: 1 to 64 characters of
/// letters, digits, '-', '_' and '.'.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_name(at: &str, name: &str, problems: &mut Vec<String>) {
    if !is_valid_name(name) {
        problems.push(format!(
            "{at}: a name must be 1 to 64 characters of letters, digits, '-', '_' and '.'"
        ));
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A TOML error with its line and column.
fn describe(text: &str, error: &toml::de::Error) -> String {
    let message = error.message();
    match error.span() {
        Some(span) => {
            let line = text[..span.start].matches('\n').count() + 1;
            let column = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}
