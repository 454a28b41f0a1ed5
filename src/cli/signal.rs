//! Process signals: the future that resolves on the first SIGINT or SIGTERM, which every
//! long-running command passes down as its shutdown argument, and SIGHUP, which asks `sync`
//! to reload its mappings.

use futures::future::{FutureExt, Shared};
use std::future::Future;
use std::pin::Pin;

pub type Shutdown = Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Resolves once on SIGINT (Ctrl-C) or SIGTERM. Clone it freely: every clone resolves together.
///
/// The handlers are installed here, not when the future is first polled: a signal that arrives
/// during start-up, before anything awaits the future, must still ask for a clean stop instead
/// of killing the process with the default action (a SIGTERM right after "Streaming changes."
/// did). tokio keeps a signal delivered before the first poll for that poll.
pub fn shutdown_on_signal() -> Shutdown {
    #[cfg(unix)]
    let fut: Pin<Box<dyn Future<Output = ()> + Send>> = {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        Box::pin(async move {
            // Without a handler we can never be asked to stop that way; wait forever.
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => tracing::info!("SIGINT received: finishing the current batch, then stopping"),
                _ = wait(terminate) => tracing::info!("SIGTERM received: finishing the current batch, then stopping"),
            }
        })
    };
    #[cfg(not(unix))]
    let fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("SIGINT received: finishing the current batch, then stopping");
        } else {
            std::future::pending::<()>().await;
        }
    });
    fut.shared()
}

/// Notified on each SIGHUP (several before the first wait count once): the daemon's "reload the
/// mappings". Installed at once, like `shutdown_on_signal`, so a SIGHUP during start-up does
/// not kill the process with the default action. `None` where there is no SIGHUP.
pub fn reload_on_sighup() -> Option<std::sync::Arc<tokio::sync::Notify>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).ok()?;
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let tx = notify.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tx.notify_one();
            }
        });
        Some(notify)
    }
    #[cfg(not(unix))]
    None
}
