//! Frees large values (a committed batch's or chunk's rows) on a helper thread, so the writer
//! goes on while the other core walks and frees millions of small allocations.
//!
//! At most one value is being freed and one waits: when both places are taken, the caller frees
//! the value itself. Unbounded deferral (`spawn_blocking` per value, as before) let freed-later
//! chunks pile up whenever the blocking threads got less CPU than the writer: a full sync then
//! held ten or more chunks' rows at once and peaked near 210 MiB instead of ~55 in about one run
//! in 25 (issue 17 item 6).

use std::any::Any;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};

type Boxed = Box<dyn Any + Send>;

/// The helper thread's queue; `None` when the thread could not be started (values are then
/// freed in place).
fn queue() -> &'static Mutex<Option<SyncSender<Boxed>>> {
    static QUEUE: OnceLock<Mutex<Option<SyncSender<Boxed>>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        // One waiting value: with the one being freed, two values at most are held here.
        let (tx, rx) = sync_channel::<Boxed>(1);
        let started = std::thread::Builder::new()
            .name("tributary-free".into())
            .spawn(move || {
                for value in rx {
                    drop(value);
                }
            });
        Mutex::new(started.ok().map(|_| tx))
    })
}

/// Frees `value` on the helper thread, or here when the helper is busy with two values already.
pub fn free_later<T: Send + 'static>(value: T) {
    let boxed: Boxed = Box::new(value);
    let refused = match queue().lock() {
        Ok(guard) => match guard.as_ref() {
            Some(tx) => match tx.try_send(boxed) {
                Ok(()) => None,
                Err(TrySendError::Full(v) | TrySendError::Disconnected(v)) => Some(v),
            },
            None => Some(boxed),
        },
        Err(_) => Some(boxed),
    };
    drop(refused);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, Receiver};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Holds the helper thread until released.
    struct Blocker(Mutex<Receiver<()>>);
    impl Drop for Blocker {
        fn drop(&mut self) {
            if let Ok(rx) = self.0.lock() {
                let _ = rx.recv_timeout(Duration::from_secs(60));
            }
        }
    }

    #[test]
    fn at_most_two_values_are_held_and_every_one_is_freed() {
        let (release, held) = channel();
        free_later(Blocker(Mutex::new(held)));
        let dropped = Arc::new(AtomicUsize::new(0));
        let mut deferred = 0;
        for _ in 0..10 {
            let before = dropped.load(Ordering::SeqCst);
            free_later(Counted(dropped.clone()));
            if dropped.load(Ordering::SeqCst) == before {
                deferred += 1;
            }
        }
        // The blocker is being freed (or waits); at most one more value may wait beside it.
        assert!(
            deferred <= 1,
            "{deferred} values were deferred behind a busy helper"
        );
        release.send(()).expect("the blocker is alive");
        let deadline = Instant::now() + Duration::from_secs(60);
        while dropped.load(Ordering::SeqCst) < 10 {
            assert!(
                Instant::now() < deadline,
                "a deferred value was never freed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
