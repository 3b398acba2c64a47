//! The command line: clap derive, every global flag with an env var and a
//! default, and the filter flags shared by `count` and `export`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use clerk_broker_client::{DEFAULT_URL, pb};

/// Talks to a clerk-broker: look up users, take permits, count and export.
#[derive(Debug, Parser)]
#[command(name = "clerk-broker-cli", version)]
pub(crate) struct Cli {
    /// The broker's URL.
    #[arg(long, env = "CLERK_BROKER_URL", default_value = DEFAULT_URL, global = true)]
    pub(crate) url: String,
    /// The caller's bearer token (needed when the broker has a policy file).
    /// Prefer the environment variable: a flag is visible to other users of
    /// the machine. The value is never printed.
    #[arg(
        long,
        env = "CLERK_BROKER_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub(crate) token: Option<String>,
    /// Deadline of each call (except exports), e.g. 500ms, 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub(crate) timeout: Duration,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print users by id, one JSON object (Clerk's own) per line.
    Get {
        /// Clerk user ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Take a permit to spend upstream requests; exit 3 if refused.
    Permit {
        /// The budget; empty means the upstream Clerk budget.
        #[arg(long, default_value = "")]
        budget: String,
        /// How many requests the permit covers.
        #[arg(long, default_value_t = 1)]
        cost: u32,
        /// How long to wait for it, e.g. 5s (default: do not wait).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        wait: Duration,
        /// Ask at bulk priority.
        #[arg(long)]
        bulk: bool,
    },
    /// Print how many users match the filters.
    Count {
        /// Which users.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Export users to a JSON Lines file, resuming an interrupted export.
    ///
    /// After every message the last resume token is saved atomically in
    /// OUT.resume, with the length of OUT it matches. Running the same command
    /// again continues from there (dropping any partial line written after
    /// it) and appends; the file is removed once the export is complete.
    Export {
        /// The output file.
        #[arg(long)]
        out: PathBuf,
        /// Which users.
        #[command(flatten)]
        filter: FilterArgs,
        /// Sort order, e.g. +created_at (default: Clerk's, newest first).
        #[arg(long, default_value = "")]
        order_by: String,
        /// Users per streamed message (1-500).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
        page_size: u32,
        /// Stop after this many users in this run; run again to continue.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_users: Option<u64>,
        /// Start again even if OUT exists, discarding it and its resume file.
        #[arg(long)]
        overwrite: bool,
    },
}

/// Clerk's user filters: values of one flag are OR-ed, flags are AND-ed.
#[derive(Debug, Args, Default, Clone, PartialEq)]
pub(crate) struct FilterArgs {
    /// Only these user ids (repeatable).
    #[arg(long = "user-id")]
    user_ids: Vec<String>,
    /// Only users with one of these email addresses (repeatable).
    #[arg(long = "email")]
    email_addresses: Vec<String>,
    /// Only users with one of these phone numbers (repeatable).
    #[arg(long = "phone")]
    phone_numbers: Vec<String>,
    /// Only users with one of these external ids (repeatable).
    #[arg(long = "external-id")]
    external_ids: Vec<String>,
    /// Only users with one of these usernames (repeatable).
    #[arg(long = "username")]
    usernames: Vec<String>,
    /// Only members of one of these organizations (repeatable).
    #[arg(long = "organization-id")]
    organization_ids: Vec<String>,
    /// Partial match over emails, phone numbers, usernames, ids and names.
    #[arg(long)]
    query: Option<String>,
    /// Partial match over email addresses.
    #[arg(long)]
    email_query: Option<String>,
    /// Partial match over usernames.
    #[arg(long)]
    username_query: Option<String>,
    /// Partial match over first and last names.
    #[arg(long)]
    name_query: Option<String>,
    /// Only banned (true) or only non-banned (false) users.
    #[arg(long)]
    banned: Option<bool>,
    /// Only users created after this instant (RFC 3339).
    #[arg(long)]
    created_after: Option<prost_types::Timestamp>,
    /// Only users created before this instant (RFC 3339).
    #[arg(long)]
    created_before: Option<prost_types::Timestamp>,
}

impl FilterArgs {
    /// The filter as the API takes it.
    pub(crate) fn to_proto(&self) -> pb::UserFilter {
        pb::UserFilter {
            user_ids: self.user_ids.clone(),
            email_addresses: self.email_addresses.clone(),
            phone_numbers: self.phone_numbers.clone(),
            external_ids: self.external_ids.clone(),
            usernames: self.usernames.clone(),
            organization_ids: self.organization_ids.clone(),
            query: self.query.clone().unwrap_or_default(),
            email_address_query: self.email_query.clone().unwrap_or_default(),
            username_query: self.username_query.clone().unwrap_or_default(),
            name_query: self.name_query.clone().unwrap_or_default(),
            banned: self.banned,
            created_after: self.created_after,
            created_before: self.created_before,
            ..Default::default()
        }
    }
}

/// Parses `250ms`, `5s`, `1.5s`, `2m` or `1h`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. 500ms, 5s, 2m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{text:?} has an unknown unit: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["5", "s", "5x", "-1s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_map_to_the_api() {
        let cli = Cli::try_parse_from([
            "clerk-broker-cli",
            "count",
            "--email",
            "a@example.org",
            "--email",
            "b@example.org",
            "--banned",
            "false",
            "--created-after",
            "2024-01-01T00:00:00Z",
        ])
        .unwrap();
        let Command::Count { filter } = cli.command else {
            panic!("not count")
        };
        let filter = filter.to_proto();
        assert_eq!(filter.email_addresses, ["a@example.org", "b@example.org"]);
        assert_eq!(filter.banned, Some(false));
        assert_eq!(filter.created_after.unwrap().seconds, 1_704_067_200);
    }
}
