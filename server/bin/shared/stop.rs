//! How the benchmarks' baselines stop: at SIGTERM or Ctrl-C, returning from
//! `main` (so that a profile-collecting build, `scripts/build-pgo.sh`, writes
//! its profile). Included by each with `#[path]`.

/// Resolves at SIGTERM or Ctrl-C.
pub(crate) async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // No SIGTERM handler: Ctrl-C still stops.
        return std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
