//! `Batcher`: gathers items submitted from anywhere into batches of at most
//! `max` items, each sent on when it is full or when `window` has passed since
//! its first item, whichever comes first.
//!
//! Lookups use it to turn concurrent misses for different ids into one
//! `GET /users?user_id=…` request per 100 ids. The gathering runs in its own
//! task, so no caller's future owns a batch; it ends when the `Batcher` is
//! dropped. Generic over the item, so its timing is tested on its own, in
//! paused time.

use std::time::Duration;

use tokio::{
    sync::mpsc::{self, UnboundedReceiver, UnboundedSender, error::TryRecvError},
    time::Instant,
};

/// The submitting end of a batching task.
#[derive(Debug)]
pub(crate) struct Batcher<T> {
    items: UnboundedSender<T>,
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the gathering task (on the current tokio runtime); `dispatch`
    /// receives each batch and must not block (spawn the work it starts).
    pub(crate) fn spawn(
        window: Duration,
        max: usize,
        dispatch: impl FnMut(Vec<T>) + Send + 'static,
    ) -> Self {
        let (items, receiver) = mpsc::unbounded_channel();
        tokio::spawn(gather(receiver, window, max.max(1), dispatch));
        Self { items }
    }

    /// Adds `item` to the next batch; gives it back if the task has ended.
    pub(crate) fn submit(&self, item: T) -> Result<(), T> {
        self.items.send(item).map_err(|error| error.0)
    }
}

/// The gathering loop: one batch at a time.
async fn gather<T>(
    mut items: UnboundedReceiver<T>,
    window: Duration,
    max: usize,
    mut dispatch: impl FnMut(Vec<T>),
) {
    while let Some(first) = items.recv().await {
        let mut batch = Vec::with_capacity(max);
        batch.push(first);
        let close = Instant::now() + window;
        let mut open = true;
        while open && batch.len() < max {
            tokio::select! {
                biased;
                item = items.recv() => match item {
                    Some(item) => batch.push(item),
                    None => open = false,
                },
                () = tokio::time::sleep_until(close) => {
                    // Tasks woken together with the timer (after a stall of
                    // this process, say) may be about to submit: let them,
                    // then take whatever is already queued.
                    tokio::task::yield_now().await;
                    take_queued(&mut items, &mut batch, max);
                    open = false;
                }
            }
        }
        dispatch(batch);
    }
}

/// Moves already-queued items into `batch`, up to `max` in all.
fn take_queued<T>(items: &mut UnboundedReceiver<T>, batch: &mut Vec<T>, max: usize) {
    while batch.len() < max {
        match items.try_recv() {
            Ok(item) => batch.push(item),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Seen = Arc<Mutex<Vec<(Duration, Vec<u32>)>>>;

    /// A batcher recording each batch with the time it was dispatched.
    fn recorder(window: Duration, max: usize) -> (Batcher<u32>, Seen) {
        let seen: Seen = Arc::default();
        let start = Instant::now();
        let log = seen.clone();
        let batcher = Batcher::spawn(window, max, move |batch| {
            log.lock().unwrap().push((start.elapsed(), batch));
        });
        (batcher, seen)
    }

    fn sizes(seen: &Seen) -> Vec<(u128, usize)> {
        let seen = seen.lock().unwrap();
        seen.iter()
            .map(|(at, batch)| (at.as_millis(), batch.len()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn full_batches_go_at_once_and_the_rest_after_the_window() {
        let (batcher, seen) = recorder(Duration::from_millis(5), 100);
        for i in 0..250 {
            batcher.submit(i).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
        assert_eq!(sizes(&seen), [(0, 100), (0, 100)]);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(sizes(&seen), [(0, 100), (0, 100), (5, 50)]);
        let all: Vec<u32> = seen
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert_eq!(
            all,
            (0..250).collect::<Vec<_>>(),
            "each item once, in order"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_opens_with_the_first_item_of_each_batch() {
        let (batcher, seen) = recorder(Duration::from_millis(5), 100);
        batcher.submit(1).unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        batcher.submit(2).unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        batcher.submit(3).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (Duration::from_millis(5), vec![1, 2]),
                (Duration::from_millis(11), vec![3]),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_window_sends_what_is_queued_without_waiting() {
        let (batcher, seen) = recorder(Duration::ZERO, 3);
        for i in 0..4 {
            batcher.submit(i).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(sizes(&seen), [(0, 3), (0, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_batcher_and_flushes_first() {
        let (batcher, seen) = recorder(Duration::from_secs(60), 100);
        batcher.submit(7).unwrap();
        drop(batcher);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(sizes(&seen), [(0, 1)]);
    }
}
