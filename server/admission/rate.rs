//! `Rate`: "N requests per window", as written in flags and config files.

use std::{fmt, str::FromStr, time::Duration};

/// At most `limit` requests in any interval of length `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per window.
    pub limit: u32,
    /// The length of the sliding window.
    pub window: Duration,
}

/// The largest `limit` a rate may have: the limiter keeps one timestamp per
/// request of the window, so this bounds its memory.
pub const MAX_LIMIT: u32 = 1_000_000;

/// Why a rate string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid rate {input:?}: {reason} (expected e.g. 100/10s, 1000/10s or 5/500ms)")]
pub struct RateParseError {
    input: String,
    reason: &'static str,
}

impl Rate {
    /// Clerk's limit for production instances: 1000 requests per 10 s.
    pub const CLERK_PRODUCTION: Rate = Rate {
        limit: 1000,
        window: Duration::from_secs(10),
    };
    /// Clerk's limit for development instances: 100 requests per 10 s.
    pub const CLERK_DEVELOPMENT: Rate = Rate {
        limit: 100,
        window: Duration::from_secs(10),
    };
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| RateParseError {
            input: input.to_owned(),
            reason,
        };
        let (limit, window) = input.trim().split_once('/').ok_or(fail("missing '/'"))?;
        let limit: u32 = limit
            .trim()
            .parse()
            .map_err(|_| fail("the limit is not a whole number"))?;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(fail("the limit must be between 1 and 1000000"));
        }
        let window = parse_duration(window.trim()).ok_or(fail("the window is not a duration"))?;
        if window < Duration::from_millis(1) || window > Duration::from_secs(86_400) {
            return Err(fail("the window must be between 1ms and 24h"));
        }
        Ok(Rate { limit, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.window.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}/{}s", self.limit, ms / 1000)
        } else {
            write!(f, "{}/{ms}ms", self.limit)
        }
    }
}

/// Parses `10s`, `500ms`, `1m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().ok()?;
    let ms_per_unit = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(value.checked_mul(ms_per_unit)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_rates() {
        let rate: Rate = "100/10s".parse().unwrap();
        assert_eq!(rate, Rate::CLERK_DEVELOPMENT);
        assert_eq!(rate.to_string(), "100/10s");
        let rate: Rate = " 5 / 500ms ".parse().unwrap();
        assert_eq!((rate.limit, rate.window), (5, Duration::from_millis(500)));
        assert_eq!(rate.to_string(), "5/500ms");
        assert_eq!(
            "60/1m".parse::<Rate>().unwrap().window,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn rejects_bad_rates_with_a_reason() {
        for bad in [
            "",
            "100",
            "0/10s",
            "x/10s",
            "100/",
            "100/10x",
            "100/0s",
            "2000000/1s",
        ] {
            let err = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(err.contains("expected e.g. 100/10s"), "{bad}: {err}");
        }
    }
}
