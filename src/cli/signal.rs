//! Process signals: the future that resolves on the first SIGINT or SIGTERM, which every
//! long-running command passes down as its shutdown argument.

use futures::future::{FutureExt, Shared};
use std::future::Future;
use std::pin::Pin;

pub type Shutdown = Shared<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Resolves once on SIGINT (Ctrl-C) or SIGTERM. Clone it freely: every clone resolves together.
pub fn shutdown_on_signal() -> Shutdown {
    let fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                // Without a handler we can never be asked to stop this way; wait forever.
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received: finishing the current batch, then stopping"),
            _ = term => tracing::info!("SIGTERM received: finishing the current batch, then stopping"),
        }
    });
    fut.shared()
}
