//! Configuration text: the policy file (TOML, `Policy::parse`, reloaded
//! while the broker runs), rates and durations as flags and files spell them.
//!
//! Properties: nothing panics; an accepted policy authenticates its callers'
//! tokens without panicking; a rate that parses prints as text that parses
//! back to the same rate.

#![no_main]

use clerk_broker::{admission::Rate, callers::Policy, config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::parse(text, config::default_margin) {
        for header in [&b"Bearer test"[..], b"Bearer ", b"bearer x", data] {
            let _ = policy.authenticate(Some(header));
        }
        let _ = policy.authenticate(None);
    }
    for line in text.lines().take(8) {
        if let Ok(rate) = line.parse::<Rate>() {
            let printed = rate.to_string();
            assert_eq!(printed.parse::<Rate>().as_ref(), Ok(&rate), "{printed}");
        }
        let _ = config::duration("--flag", line);
    }
});
