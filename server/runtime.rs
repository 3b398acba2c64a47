//! The tokio runtime the broker serves on.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// Whether this build turns the scheduler's LIFO slot off: it needs tokio's
/// unstable options, compiled in by `--cfg tokio_unstable`
/// (`.cargo/config.toml`). A build without the flag keeps the slot, and the
/// broker warns at start.
pub const LIFO_SLOT_OFF: bool = cfg!(tokio_unstable);

/// The multi-thread runtime, one worker per available CPU, with the
/// scheduler's LIFO slot off.
///
/// With the slot, a task woken by the running task is polled next, ahead of
/// every task already queued. A call's task finishing its answer wakes its
/// connection's task, so the connection wrote that single answer at once:
/// each answer cost its own `writev` (and the client its own read, and so
/// the next requests arrived one by one too). Without it, the connection's
/// task waits behind the calls already ready and writes their answers
/// together: 0.75 → 0.09 system calls per `AcquirePermit` under load, and
/// 1.7 times the permits per CPU second (README, Hot paths). A task in the slot
/// is also one no idle worker can steal.
pub fn build() -> io::Result<Runtime> {
    builder().build()
}

/// The builder of [`build`]'s runtime, to change before building (tests
/// set the number of workers).
pub fn builder() -> Builder {
    let mut builder = Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    /// With the LIFO slot, the task spawned (or woken) last would run first.
    #[test]
    fn tasks_run_in_the_order_they_became_ready() {
        let runtime = super::builder().worker_threads(1).build().unwrap();
        let order = runtime.block_on(async {
            // On the worker: `block_on`'s own future runs outside it.
            tokio::spawn(async {
                let (sender, order) = mpsc::channel();
                let tasks: Vec<_> = ['a', 'b', 'c']
                    .into_iter()
                    .map(|name| {
                        let sender = sender.clone();
                        tokio::spawn(async move { sender.send(name).unwrap() })
                    })
                    .collect();
                drop(sender);
                for task in tasks {
                    task.await.unwrap();
                }
                order.iter().collect::<String>()
            })
            .await
            .unwrap()
        });
        assert_eq!(
            order, "abc",
            "built without `--cfg tokio_unstable` (is .cargo/config.toml in effect, or does a \
             RUSTFLAGS variable replace it?)"
        );
    }
}
