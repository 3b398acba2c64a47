//! The policy file changes without a restart: rates and weights follow
//! within about a second, a Kubernetes-style symlink swap is seen, and an
//! invalid edit changes nothing.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use clerk_broker::{callers::Policy, pb::AcquirePermitRequest};
use tonic::Code;

use crate::{
    callers::{as_caller, policy_text, saturate_permits},
    harness::{Harness, Options},
};

/// A directory laid out like a mounted ConfigMap: `policy.toml` ->
/// `..data/policy.toml`, `..data` -> `..v<N>`.
pub(crate) struct ConfigMap {
    dir: PathBuf,
    version: u32,
}

impl ConfigMap {
    pub(crate) fn new(text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "clerk-broker-reload-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        fs::create_dir_all(&dir).unwrap();
        let mut map = Self { dir, version: 0 };
        map.publish(text);
        symlink("..data/policy.toml", map.path()).unwrap();
        map
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }

    /// Writes a new version and swaps `..data` to it atomically.
    pub(crate) fn publish(&mut self, text: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        fs::create_dir_all(self.dir.join(&version)).unwrap();
        fs::write(self.dir.join(&version).join("policy.toml"), text).unwrap();
        let staging = self.dir.join("..data_tmp");
        let _ = fs::remove_file(&staging);
        symlink(Path::new(&version), &staging).unwrap();
        fs::rename(&staging, self.dir.join("..data")).unwrap();
    }
}

impl Drop for ConfigMap {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The limit of "writes" as seen by `token`, or the status code.
async fn writes_limit(harness: &Harness, token: &str) -> Result<u32, Code> {
    let request = AcquirePermitRequest {
        budget: "writes".into(),
        ..Default::default()
    };
    let mut quota = harness.quota().await;
    quota
        .acquire_permit(as_caller(token, request))
        .await
        .map(|reply| reply.into_inner().limit)
        .map_err(|status| status.code())
}

/// Polls `check` until it holds, for at most 3 s (reloads poll every 1 s).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 3 s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_weights_and_callers_follow_the_file() {
    let v1 = policy_text(
        "40/1s",
        &[
            ("a", "a-token", 1, &["writes"]),
            ("b", "b-token", 1, &["writes"]),
        ],
    );
    let mut map = ConfigMap::new(&v1);
    let harness = Harness::start(Options {
        policy: Policy::load(&map.path(), |_| Duration::ZERO).unwrap(),
        policy_path: Some(map.path()),
        ..Options::default()
    })
    .await;
    assert_eq!(writes_limit(&harness, "a-token").await, Ok(40));
    assert_eq!(
        writes_limit(&harness, "c-token").await,
        Err(Code::Unauthenticated)
    );

    // A new version: a's weight 3, the rate 60/1s, and a new caller c.
    let v2 = policy_text(
        "60/1s",
        &[
            ("a", "a-token", 3, &["writes"]),
            ("b", "b-token", 1, &["writes"]),
            ("c", "c-token", 1, &["writes"]),
        ],
    );
    map.publish(&v2);
    eventually("the new rate and caller", async || {
        writes_limit(&harness, "c-token").await == Ok(60)
    })
    .await;
    let granted = saturate_permits(&harness, &["a-token", "b-token"], Duration::from_secs(3)).await;
    let share = f64::from(granted[0]) / f64::from(granted[0] + granted[1]);
    println!(
        "after reload: a {}, b {}: share {share:.3}",
        granted[0], granted[1]
    );
    assert!((0.70..=0.80).contains(&share), "{granted:?}");

    // An invalid edit changes nothing.
    map.publish("[[callers]]\nname = \"broken\"\n");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(writes_limit(&harness, "c-token").await, Ok(60));
}
