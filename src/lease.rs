//! The stream's exclusive-writer lease: a Postgres session-level advisory lock, keyed by the
//! stream name, held on a dedicated connection while `sync` writes (SPEC "Exclusion and
//! fail-over").
//!
//! - **Why a session lock on its own connection.** The lock lives exactly as long as the
//!   session: when the holder dies (even SIGKILL), its socket closes, Postgres ends the session
//!   and the lock is free. A pooled connection cannot hold it (the pool recycles and replaces
//!   connections), so the lease opens one connection of its own, named
//!   `tributary sync <stream>` in `pg_stat_activity`.
//! - **Standby.** A second `sync` with the same name connects, tries the lock, and when it is
//!   taken logs once who holds it, then tries again every `POLL` until it gets it. Each try
//!   uses a fresh connection, so the holder's `backend_start` is the moment it took the lock
//!   (shown as `since` by `holder`), and a standby survives Postgres restarts without noticing.
//! - **Keep-alive.** While held, a task runs `SELECT 1` on the lock connection every second.
//!   When the connection dies (server restart, `pg_terminate_backend`, network) the lease flag
//!   drops to "lost"; the sink checks the flag right before every `COMMIT` and refuses to
//!   commit without it, and `sync` goes back to standby. The check is a flag, not a query, so
//!   there is a window of up to one keep-alive period in which a commit can follow an unnoticed
//!   loss; the delete-then-COPY sink turns a racing second writer into a unique violation
//!   rather than a wrong row.
//! - **Who holds it.** `holder` reads `pg_locks` ⋈ `pg_stat_activity`; `status` and `cutover`
//!   use it to tell whether a daemon is writing a stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pg::Connector;
use crate::sink::error::LEASE_LOST_KIND;
use crate::sink::SinkError;

/// How often a standby tries the lock (SPEC: take over within 10 s of the holder's death).
pub const POLL: Duration = Duration::from_millis(500);
/// How often the holder checks that its lock connection is alive.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// A keep-alive that takes longer than this counts as a lost connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a holder that lost its connection keeps trying to reach Postgres again before
/// giving up ("a connection that stayed down", exit 3).
const RECONNECT_PATIENCE: Duration = Duration::from_secs(300);
/// How often an outage longer than a restart is reported while the lock is retried.
const UNREACHABLE_REPORT: Duration = Duration::from_secs(10);

/// Why the lease could not be taken or kept.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("postgres.uri is not a valid connection string ({0}); fix it in the config file")]
    InvalidUri(String),
    #[error("cannot open the lock connection of stream {stream:?} to Postgres: {detail}; check postgres.uri and that the server is up")]
    Connect { stream: String, detail: String },
    #[error("Postgres failed while {doing} for stream {stream:?}: {detail}")]
    Postgres {
        stream: String,
        doing: &'static str,
        detail: String,
    },
}

/// The advisory-lock key of stream `$1`, computed by Postgres: `hashtextextended` is stable
/// across Postgres versions (hash partitioning depends on it), so every Tributary process, and an
/// operator in psql, computes the same 64-bit key.
pub const KEY_SQL: &str = "hashtextextended('tributary.stream:' || $1, 0)";

/// The `application_name` of a stream's lock connection.
pub fn application_name(stream: &str) -> String {
    format!("tributary sync {stream}")
}

/// The session holding a stream's lock, as Postgres sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    /// Postgres backend pid of the lock connection (`pg_terminate_backend(pid)` forces a
    /// fail-over).
    pub pid: i32,
    pub application_name: String,
    /// Address of the holding host; `None` over a Unix socket.
    pub client_addr: Option<String>,
    pub client_port: Option<i32>,
    /// When the holder took the lock (its lock connection's `backend_start`).
    pub since: Option<DateTime<Utc>>,
}

/// Who holds `stream`'s lock in the database `client` is connected to, if anyone.
pub async fn holder(
    client: &Client,
    stream: &str,
) -> Result<Option<Holder>, tokio_postgres::Error> {
    // A bigint advisory lock shows in pg_locks as classid = its high 32 bits, objid = its low
    // 32 bits (both unsigned), objsubid = 1.
    let sql = format!(
        "WITH k AS (SELECT {KEY_SQL} AS key) \
         SELECT a.pid, coalesce(a.application_name, ''), host(a.client_addr), a.client_port, \
                a.backend_start \
         FROM k, pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND l.classid::text::bigint = (k.key >> 32) & 4294967295 \
           AND l.objid::text::bigint = k.key & 4294967295 \
         LIMIT 1"
    );
    let row = client.query_opt(&sql, &[&stream]).await?;
    Ok(row.map(|r| Holder {
        pid: r.get(0),
        application_name: r.get(1),
        client_addr: r.get(2),
        client_port: r.get(3),
        since: r.get(4),
    }))
}

/// "Still held" as seen by the writer: cheap to clone and to check before every commit.
#[derive(Clone, Debug)]
pub struct LeaseFlag {
    stream: String,
    held: watch::Receiver<bool>,
}

impl LeaseFlag {
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// `Err(SinkError::LeaseLost)` unless the lease is still held; the sink calls this right
    /// before `COMMIT`.
    pub fn ensure_held(&self) -> Result<(), SinkError> {
        if self.is_held() {
            Ok(())
        } else {
            Err(SinkError::LeaseLost {
                stream: self.stream.clone(),
            })
        }
    }

    /// Resolves once the lease is lost.
    pub async fn lost(&self) {
        let mut held = self.held.clone();
        // An error means the lease itself was dropped: lost as well.
        let _ = held.wait_for(|h| !*h).await;
    }
}

/// A held lock. Dropping it ends the lock session, which releases the lock.
pub struct Lease {
    client: Arc<Client>,
    held: Arc<watch::Sender<bool>>,
    flag: LeaseFlag,
    keepalive: JoinHandle<()>,
    backend_pid: i32,
}

impl Lease {
    /// Takes `stream`'s lock, standing by while someone else holds it. Returns `None` when
    /// `shutdown` fires first. With `patient`, an unreachable Postgres is retried for a few
    /// minutes (used after a lost lease: the server is probably restarting); otherwise the
    /// first connection failure is returned, so a wrong URI fails at start.
    pub async fn acquire(
        uri: &str,
        stream: &str,
        patient: bool,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Option<Lease>, LeaseError> {
        let connector = lock_connector(uri, stream)?;
        tokio::pin!(shutdown);
        let mut announced = false;
        let mut unreachable_since: Option<tokio::time::Instant> = None;
        let mut next_report = UNREACHABLE_REPORT;
        loop {
            match try_lock(&connector, stream).await {
                Ok(Attempt::Held(lease)) => {
                    // Taken back after this process lost it to an outage: the caller's
                    // "Streaming changes." is the one line that says so.
                    if patient && !announced {
                        tracing::debug!(
                            stream,
                            backend_pid = lease.backend_pid,
                            "Holding the lock of stream {stream} again."
                        );
                    } else {
                        tracing::info!(
                            stream,
                            backend_pid = lease.backend_pid,
                            "Holding the lock of stream {stream}: this process is its writer."
                        );
                    }
                    return Ok(Some(lease));
                }
                Ok(Attempt::Taken(holder)) => {
                    unreachable_since = None;
                    next_report = UNREACHABLE_REPORT;
                    if !announced {
                        announced = true;
                        let (pid, host, since) = describe_holder(holder.as_ref());
                        tracing::info!(stream, holder_pid = pid, holder_host = %host, holder_since = %since, "Standing by: stream {stream} is being written by another process (Postgres backend pid {pid} from {host}, since {since}); taking over when its lock is released.");
                    }
                }
                Err(e @ LeaseError::InvalidUri(_)) => return Err(e),
                Err(e) => {
                    if !patient {
                        return Err(e);
                    }
                    let first = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                    let down = first.elapsed();
                    if down > RECONNECT_PATIENCE {
                        return Err(e);
                    }
                    // Patience follows a loss already reported at WARN: a restart of a few
                    // seconds stays that one line; an outage is reported again every
                    // UNREACHABLE_REPORT while the retries go on.
                    if down >= next_report {
                        next_report += UNREACHABLE_REPORT;
                        tracing::warn!(stream, error = %e, down_secs = down.as_secs(), "Postgres is still unreachable, so the lock of stream {stream} cannot be taken; trying again every {} ms for up to {} s.", POLL.as_millis(), RECONNECT_PATIENCE.as_secs());
                    } else {
                        tracing::debug!(stream, error = %e, "Cannot reach Postgres to take the lock of stream {stream}; trying again.");
                    }
                }
            }
            tokio::select! {
                () = &mut shutdown => return Ok(None),
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One try, no standby: `None` when another session holds the lock (`full-sync` refuses
    /// to race a running `sync`).
    pub async fn try_take(uri: &str, stream: &str) -> Result<Option<Lease>, LeaseError> {
        let connector = lock_connector(uri, stream)?;
        Ok(match try_lock(&connector, stream).await? {
            Attempt::Held(lease) => Some(lease),
            Attempt::Taken(_) => None,
        })
    }

    pub fn flag(&self) -> LeaseFlag {
        self.flag.clone()
    }

    /// Postgres backend pid of the lock connection (what `holder` reports as `pid`).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Checks the lock connection now (instead of waiting for the next keep-alive) and returns
    /// whether the lease is still held. `sync` asks after an error, to tell "Postgres went
    /// away" (standby again) from a failure of its own.
    pub async fn check(&self) -> bool {
        if !self.flag.is_held() {
            return false;
        }
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, self.client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => true,
            _ => {
                self.held.send_replace(false);
                false
            }
        }
    }
}

impl Lease {
    /// Lets go of the lock before the connection closes: a closed connection's backend ends,
    /// and frees the lock, some time after the client is gone, so a `full-sync` or standby
    /// started right after this process exits could still find it taken. Best effort: a lock
    /// that cannot be released here goes with its connection as before.
    pub async fn release(self) {
        let unlock = format!("SELECT pg_advisory_unlock({KEY_SQL})");
        let stream = self.flag.stream.clone();
        let _ =
            tokio::time::timeout(KEEPALIVE_TIMEOUT, self.client.execute(&unlock, &[&stream])).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keepalive.abort();
        self.held.send_replace(false);
    }
}

enum Attempt {
    Held(Lease),
    /// Someone else holds it (`None` if they let go between the try and the look-up).
    Taken(Option<Holder>),
}

async fn try_lock(connector: &Connector, stream: &str) -> Result<Attempt, LeaseError> {
    let (client, connection) = connector
        .connect_raw()
        .await
        .map_err(|e| LeaseError::Connect {
            stream: stream.to_owned(),
            detail: crate::sink::error::describe(&e),
        })?;
    let (held_tx, held_rx) = watch::channel(true);
    let held = Arc::new(held_tx);
    let on_close = held.clone();
    // When the session ends for any reason, the lock is gone with it.
    tokio::spawn(async move {
        let _ = connection.await;
        on_close.send_replace(false);
    });
    let pg = |doing: &'static str| {
        move |e: tokio_postgres::Error| LeaseError::Postgres {
            stream: stream.to_owned(),
            doing,
            detail: crate::sink::error::describe(&e),
        }
    };
    let row = client
        .query_one(
            &format!("SELECT pg_try_advisory_lock({KEY_SQL}), pg_backend_pid()"),
            &[&stream],
        )
        .await
        .map_err(pg("trying the stream's advisory lock"))?;
    if !row.get::<_, bool>(0) {
        let who = holder(&client, stream)
            .await
            .map_err(pg("looking up the lock's holder"))?;
        return Ok(Attempt::Taken(who));
    }
    let client = Arc::new(client);
    let keepalive = tokio::spawn(keep_alive(client.clone(), held.clone(), stream.to_owned()));
    Ok(Attempt::Held(Lease {
        client,
        flag: LeaseFlag {
            stream: stream.to_owned(),
            held: held_rx,
        },
        held,
        keepalive,
        backend_pid: row.get(1),
    }))
}

async fn keep_alive(client: Arc<Client>, held: Arc<watch::Sender<bool>>, stream: String) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !*held.borrow() {
            break;
        }
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(stream = %stream, error = %crate::sink::error::describe(&e), "Lost the lock connection of stream {stream}: no more commits until the lock is taken again.");
                break;
            }
            Err(_) => {
                tracing::warn!(stream = %stream, "The lock connection of stream {stream} stopped answering: no more commits until the lock is taken again.");
                break;
            }
        }
    }
    held.send_replace(false);
}

/// Runs `run` only while holding the stream's lock: stands by until the lock is free, runs
/// `run(flag, stop)` where `stop` fires on `shutdown` or when the lock is lost, and after a
/// lost lock stands by again (the next `run` reads the checkpoint and continues). Returns when
/// `shutdown` fires, or with `run`'s result when it ended with the lock still held. A lost lock
/// is counted as `tributary_errors_total{kind="lease_lost"}` even when no commit was refused
/// (the keep-alive noticed first): operators should see that the writer lost its lock.
///
/// Generic over `run`'s error (the pipeline's `SyncError`), so this lower layer does not
/// import the pipeline: all it needs is to turn its own `LeaseError` into it and to log it.
pub async fn sync_exclusively<'a, F, Fut, E>(
    config: &Config,
    metrics: Option<&Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'a,
    mut run: F,
) -> Result<(), E>
where
    F: FnMut(LeaseFlag, BoxFuture<'a, ()>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: From<LeaseError> + std::fmt::Display,
{
    let stream = config.sync.name.as_str();
    let shutdown = shutdown.boxed().shared();
    let mut patient = false;
    loop {
        let Some(lease) =
            Lease::acquire(&config.postgres.uri, stream, patient, shutdown.clone()).await?
        else {
            return Ok(());
        };
        let flag = lease.flag();
        let lost = lease.flag();
        let until = shutdown.clone();
        let stop = async move {
            tokio::select! {
                () = until => {}
                () = lost.lost() => {}
            }
        }
        .boxed();
        let result = run(flag, stop).await;
        let stopping = shutdown.clone().now_or_never().is_some();
        if stopping || lease.check().await {
            lease.release().await;
            return result;
        }
        // Counted here only, whether a commit was refused for it (streaming or copying) or the
        // keep-alive noticed first.
        if let Some(m) = metrics {
            m.errors_total.with_label_values(&[LEASE_LOST_KIND]).inc();
        }
        match &result {
            Ok(()) => tracing::warn!(stream, "Lost the lock of stream {stream}; stopped writing and standing by to take it again."),
            Err(e) => tracing::warn!(stream, error = %e, "Lost the lock of stream {stream} while writing; nothing after the last checkpoint was committed. Standing by to take it again and resume from that checkpoint."),
        }
        drop(lease);
        patient = true;
    }
}

/// The lock connection's connector: `postgres.uri` through `crate::pg` (TLS, keep-alives), named
/// after the stream in `pg_stat_activity`.
fn lock_connector(uri: &str, stream: &str) -> Result<Connector, LeaseError> {
    let mut connector =
        Connector::from_uri(uri).map_err(|e| LeaseError::InvalidUri(e.to_string()))?;
    connector.set_application_name(&application_name(stream));
    Ok(connector)
}

fn describe_holder(h: Option<&Holder>) -> (i32, String, String) {
    match h {
        Some(h) => (
            h.pid,
            match (&h.client_addr, h.client_port) {
                (Some(a), Some(p)) => format!("{a}:{p}"),
                (Some(a), None) => a.clone(),
                _ => "a local socket".to_owned(),
            },
            h.since
                .map(|s| s.to_rfc3339())
                .unwrap_or_else(|| "unknown".to_owned()),
        ),
        None => (0, "unknown".to_owned(), "unknown".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_names_the_stream() {
        assert_eq!(application_name("orders"), "tributary sync orders");
    }
}
