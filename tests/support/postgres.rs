//! A Postgres server for the whole test process and a fresh database per test.
//!
//! Server: `TEST_DATABASE_URL` when set (a server URL, in URL form, such as
//! `postgres://postgres@127.0.0.1:5432/postgres`; tests create their own databases on it), else a
//! throwaway cluster started once per process with `initdb`/`pg_ctl` in a temp dir on a free
//! port (binaries from `pg_config --bindir`, else `/usr/lib/postgresql/*/bin`; run as user
//! `postgres` when we are root). The cluster is stopped and removed when the process exits
//! (an `atexit` hook, plus a detached watchdog for processes that are killed); leftovers of
//! crashed runs are removed at the next start.
//!
//! Database: `fresh_database()` creates `test_<random>` and drops it (`WITH (FORCE)`) when the
//! returned `TestDb` is dropped, so tests run in parallel without seeing each other.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use tokio_postgres::{Client, NoTls};

/// A database of its own for one test.
pub struct TestDb {
    /// Connection URL of this database (pass it to the code under test).
    pub url: String,
    pub name: String,
    /// A connection to this database, ready to use.
    pub client: Client,
    admin_url: String,
}

impl TestDb {
    /// Another connection to this database (e.g. to kill or observe a writer).
    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on a future itself: a short
        // thread with its own runtime drops the database before the test finishes.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin_url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Creates a fresh, empty database on the process-wide server.
pub async fn fresh_database() -> TestDb {
    let server = server();
    let admin = connect(&server.admin_url).await;
    let name = format!("test_{:016x}", rand::random::<u64>());
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e:?}"));
    let url = with_database(&server.admin_url, &name);
    TestDb {
        client: connect(&url).await,
        url,
        name,
        admin_url: server.admin_url.clone(),
    }
}

/// URL of the server's `postgres` database (or whatever `TEST_DATABASE_URL` names).
pub fn server_url() -> String {
    server().admin_url.clone()
}

/// Opens a connection and drives it on the current runtime.
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test Postgres {url}: {e:?}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

struct Server {
    admin_url: String,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Server { admin_url: url },
        _ => start_cluster().unwrap_or_else(|e| panic!("cannot start a test Postgres: {e}")),
    })
}

/// `url` with its database path replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{db}{query}", &base[..authority_end])
}

pub(crate) const DIR_PREFIX: &str = "tributary-test-pg-";

fn start_cluster() -> Result<Server, String> {
    let bindir = find_bindir().ok_or(
        "no Postgres server binaries (initdb, pg_ctl) found: run scripts/ensure-postgres.sh \
         or set TEST_DATABASE_URL",
    )?;
    let as_root = is_root();
    remove_leftovers(&bindir, as_root);

    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
        .map_err(|e| format!("writing owner.pid: {e}"))?;
    if as_root {
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(&dir))?;
    }
    let data = dir.join("data");
    run(pg_command(&bindir, "initdb", as_root)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]))?;

    // Keep the stop hooks armed before the server exists, so a failed start cleans up too.
    CLUSTER
        .set(Cluster {
            bindir: bindir.clone(),
            dir: dir.clone(),
            as_root,
        })
        .map_err(|_| "cluster started twice".to_owned())?;
    register_exit_hook();
    spawn_watchdog(&bindir, &dir, as_root);

    let mut last_err = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=400 -c shared_buffers=256MB \
             -c max_wal_size=2GB",
            dir.display()
        );
        let started = run(pg_command(&bindir, "pg_ctl", as_root)
            .arg("start")
            .arg("-w")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .arg("-o")
            .arg(&opts));
        match started {
            Ok(()) => {
                return Ok(Server {
                    admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                })
            }
            Err(e) => last_err = e,
        }
    }
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    Err(format!("pg_ctl start failed: {last_err}\n{log}"))
}

struct Cluster {
    bindir: PathBuf,
    dir: PathBuf,
    as_root: bool,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn stop_cluster_at_exit() {
    if let Some(c) = CLUSTER.get() {
        stop_and_remove(&c.bindir, &c.dir, c.as_root);
    }
}

fn register_exit_hook() {
    // SAFETY: `atexit` only stores the function pointer; the callback is a plain `extern "C"`
    // function that touches nothing but a `OnceLock` already initialised before registration.
    unsafe {
        atexit(stop_cluster_at_exit);
    }
}

/// A detached shell that outlives a killed test process, stops its cluster and removes it.
pub(crate) fn spawn_watchdog(bindir: &Path, dir: &Path, as_root: bool) {
    let pg_ctl = bindir.join("pg_ctl");
    let runner = if as_root {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         {runner}'{pg_ctl}' stop -D '{data}' -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = pg_ctl.display(),
        data = dir.join("data").display(),
        dir = dir.display(),
    );
    let _ = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn stop_and_remove(bindir: &Path, dir: &Path, as_root: bool) {
    let data = dir.join("data");
    if data.join("postmaster.pid").exists() {
        let _ = pg_command(bindir, "pg_ctl", as_root)
            .arg("stop")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes clusters of earlier test processes that died without cleaning up.
pub(crate) fn remove_leftovers(bindir: &Path, as_root: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let owner_alive = std::fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !owner_alive {
            stop_and_remove(bindir, &dir, as_root);
        }
    }
}

pub(crate) fn pg_command(bindir: &Path, program: &str, as_root: bool) -> Command {
    let path = bindir.join(program);
    if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub(crate) fn find_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_tools(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

pub(crate) fn is_root() -> bool {
    // No libc dependency: the effective uid is in /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

pub(crate) fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("finding a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

#[test]
fn with_database_replaces_only_the_path() {
    assert_eq!(
        with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "t1"),
        "postgres://u:p@h:5432/t1?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "t2"), "postgres://u@h/t2");
    assert_eq!(
        with_database("postgresql://h:1/a/b", "t3"),
        "postgresql://h:1/t3"
    );
}
