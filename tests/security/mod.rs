//! Security and connectivity (issue 13): Postgres over TLS with libpq's `sslmode`s against a
//! server that accepts nothing but TLS, a least-privilege role, secrets that never reach any
//! output, and MongoDB secured like a real deployment (`mongo`: mongo-sim with TLS, SCRAM
//! users and X.509 client certificates).
//!
//! The server: one throwaway cluster per test process, separate from `support::postgres`'s
//! (which must keep accepting plain connections), started with `ssl = on`, a certificate for
//! `localhost` signed by a CA made here with the `openssl` CLI (`support::pki`), and a
//! `pg_hba.conf` that allows TCP logins only over TLS (`hostssl`, SCRAM passwords). Tests administer it through its Unix
//! socket (`local … trust`). Cleanup: the same watchdog as `support::postgres` (it stops the
//! cluster once this process is gone), and leftovers of killed runs are removed at the next
//! start through the shared directory prefix.

mod mongo;
mod privileges;
mod secrets;
mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

use mongo_sim::SimHandle;
use tokio_postgres::{Client, NoTls};
use tributary::config::Config;
use tributary::mapping::model::MappingSet;

use crate::support::pki::TestCa;
use crate::support::postgres::{
    find_bindir, free_port, is_root, pg_command, remove_leftovers, run, spawn_watchdog, DIR_PREFIX,
};

/// The superuser's password on the TLS cluster (it must not show up in outputs either).
pub const ADMIN_PASSWORD: &str = "Adm1n-pw-7c41e9";

/// The TLS-only cluster and its certificates.
pub struct TlsServer {
    pub port: u16,
    /// The Unix socket directory (administration without TLS).
    socket_dir: PathBuf,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that did not.
    pub other_ca: PathBuf,
}

pub fn server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| start().unwrap_or_else(|e| panic!("cannot start the TLS Postgres: {e}")))
}

fn start() -> Result<TlsServer, String> {
    let bindir = find_bindir().ok_or("no Postgres server binaries (initdb, pg_ctl) found")?;
    let as_root = is_root();
    remove_leftovers(&bindir, as_root);
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}tls-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
        .map_err(|e| e.to_string())?;
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).map_err(|e| e.to_string())?;
    // Two CAs, and a server certificate for `localhost` only (no IP: the tests that connect
    // to 127.0.0.1 expect a host name mismatch).
    let ca = TestCa::new(&certs, "ca");
    let other_ca = TestCa::new(&certs, "other-ca");
    let (server_crt, server_key) = ca.server_for("server", "DNS:localhost");
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
    spawn_watchdog(&bindir, &dir, as_root);
    // TCP only over TLS with a password; the socket (tests' administration) trusts.
    let hba = "local all all trust\n\
               hostssl all all 127.0.0.1/32 scram-sha-256\n\
               hostssl all all ::1/128 scram-sha-256\n";
    // The files are written by this process (as root, possibly) into the postgres-owned data
    // directory; `pg_ctl` reads them as postgres, so they get the same owner below.
    std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
    let key = data.join("server.key");
    std::fs::copy(&server_key, &key).map_err(|e| e.to_string())?;
    std::fs::copy(&server_crt, data.join("server.crt")).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    if as_root {
        run(Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(&data))?;
    }
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=localhost -c ssl=on -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
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
                let server = TlsServer {
                    port,
                    socket_dir: dir.clone(),
                    ca: ca.cert.clone(),
                    other_ca: other_ca.cert.clone(),
                };
                return Ok(server);
            }
            Err(e) => last = e,
        }
    }
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    Err(format!("pg_ctl start failed: {last}\n{log}"))
}

impl TlsServer {
    /// A superuser connection over the Unix socket, to `db`.
    pub async fn admin(&self, db: &str) -> Client {
        let conninfo = format!(
            "host={} port={} user=postgres dbname={db}",
            self.socket_dir.display(),
            self.port
        );
        let (client, conn) = tokio_postgres::connect(&conninfo, NoTls)
            .await
            .unwrap_or_else(|e| panic!("admin connection to the TLS cluster: {e:?}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// A fresh database, with the superuser's password set (idempotent).
    pub async fn fresh_database(&self) -> String {
        let admin = self.admin("postgres").await;
        let name = format!("sec_{:016x}", rand::random::<u64>());
        // Once per process: concurrent ALTER ROLEs of one role fail ("tuple concurrently
        // updated").
        static PASSWORD_SET: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        PASSWORD_SET
            .get_or_init(|| async {
                admin
                    .batch_execute(&format!("ALTER ROLE postgres PASSWORD '{ADMIN_PASSWORD}'"))
                    .await
                    .unwrap();
            })
            .await;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        name
    }

    /// A TCP URL for `user:password` to `db` through `host`, with `params` as its query.
    pub fn url(&self, host: &str, user: &str, password: &str, db: &str, params: &str) -> String {
        format!(
            "postgres://{user}:{password}@{host}:{}/{db}?{params}",
            self.port
        )
    }

    /// `sslmode=verify-full&sslrootcert=<the test CA>`.
    pub fn verify_full(&self) -> String {
        format!("sslmode=verify-full&sslrootcert={}", self.ca.display())
    }
}

pub const MAPPING: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
    children:
      - table: order_items
        source: items
        parent_key: order_id
        columns:
          - { name: sku, source: sku, type: text }
"#;

/// A config file for `mongo_uri` and `pg_uri` in a temp dir, with `MAPPING`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub mappings: Arc<MappingSet>,
}

impl Setup {
    pub fn new(mongo_uri: &str, pg_uri: &str) -> Setup {
        Setup::with_mappings(mongo_uri, "change_stream", pg_uri, &[MAPPING])
    }

    /// A config for `mongo_uri` read with `source` (`change_stream` or `oplog`) and `pg_uri`,
    /// with `mappings` as the files of its mapping directory.
    pub fn with_mappings(mongo_uri: &str, source: &str, pg_uri: &str, mappings: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mappings")).unwrap();
        for (i, mapping) in mappings.iter().enumerate() {
            std::fs::write(dir.path().join(format!("mappings/{i}.yml")), mapping).unwrap();
        }
        let text = format!(
            "[mongo]\nuri = \"{mongo_uri}\"\nsource = \"{source}\"\n[postgres]\nuri = \"{pg_uri}\"\npool_size = 3\n\
             [sync]\nname = \"sec\"\nmappings = \"mappings\"\nbatch_max_wait_ms = 20\n\
             [metrics]\nlisten = \"\"\n"
        );
        let path = dir.path().join("tributary.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::from_str_at(&text, &path).unwrap();
        let mappings =
            Arc::new(tributary::mapping::load(Path::new(&config.sync.mappings)).unwrap());
        Setup {
            dir,
            config,
            mappings,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("tributary.toml")
    }

    /// Runs the binary with `args` and `--config <this config>`.
    pub async fn tributary(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        full.push("--config".into());
        full.push(self.path().display().to_string());
        tributary(full, env).await
    }
}

/// Runs the `tributary` binary (killed after 60 s, so a hang fails instead of blocking).
pub async fn tributary(args: Vec<String>, env: &[(&str, &str)]) -> Output {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(&args)
        .env("RUST_LOG", "warn")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("tributary {args:?} did not exit within 60 s"))
        .expect("run tributary")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A mongo-sim for a test.
pub async fn sim() -> SimHandle {
    mongo_sim::start(mongo_sim::SimOptions::default())
        .await
        .unwrap()
}

/// Copies `shop.orders` with `full-sync --mode upsert`, then streams a workload with `sync`
/// (library calls, as `config` says) and checks Postgres equals MongoDB: `n` orders inserted
/// before the copy, `n` after it (one of them updated, one deleted).
pub async fn copy_then_stream(setup: &Setup, admin: &Client, n: usize) {
    use bson::doc;
    use tributary::pipeline::full_sync::{full_sync, FullSyncMode};
    use tributary::pipeline::sync::{sync, SyncOptions};

    // The config's URI: credentials and TLS options included when the simulator is secured.
    let mongo = mongodb::Client::with_uri_str(setup.config.mongo.uri.expose())
        .await
        .unwrap();
    let orders = mongo
        .database("shop")
        .collection::<bson::Document>("orders");
    let order = |i: usize| doc! {"_id": format!("o{i:04}"), "qty": i as i32, "items": [{"sku": format!("s{i}")}]};
    orders
        .insert_many((0..n).map(order).collect::<Vec<_>>())
        .await
        .unwrap();
    let report = full_sync(
        &setup.config,
        setup.mappings.clone(),
        None,
        FullSyncMode::Upsert,
        None,
        std::future::pending(),
    )
    .await
    .unwrap_or_else(|e| panic!("full-sync failed: {e}"));
    assert_eq!(report.collections[0].documents, n as u64);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = setup.config.clone();
    let mappings = setup.mappings.clone();
    let task = tokio::spawn(async move {
        let opts = SyncOptions {
            initial_sync: true,
            metrics: None,
        };
        sync(&config, mappings, opts, async {
            let _ = stopped.await;
        })
        .await
    });
    orders
        .insert_many((n..2 * n).map(order).collect::<Vec<_>>())
        .await
        .unwrap();
    orders
        .update_one(doc! {"_id": "o0000"}, doc! {"$set": {"qty": -1}})
        .await
        .unwrap();
    orders.delete_one(doc! {"_id": "o0001"}).await.unwrap();
    orders
        .insert_one(doc! {"_id": "~last", "qty": 0})
        .await
        .unwrap();
    crate::support::wait_until(60, "the last order in Postgres", || async {
        if task.is_finished() {
            return true;
        }
        matches!(admin.query("SELECT 1 FROM public.orders WHERE id = '~last'", &[]).await, Ok(r) if !r.is_empty())
    })
    .await;
    assert!(!task.is_finished(), "sync stopped early: {:?}", task.await);
    let _ = stop.send(());
    let result = tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .expect("sync did not stop")
        .unwrap();
    assert!(result.is_ok(), "sync failed: {result:?}");

    let mut expected = Vec::new();
    let mut cursor = orders.find(doc! {}).await.unwrap();
    use futures::StreamExt;
    while let Some(d) = cursor.next().await {
        let d = d.unwrap();
        expected.push((d.get_str("_id").unwrap().to_owned(), d.get_i32("qty").ok()));
    }
    expected.sort();
    let actual: Vec<(String, Option<i32>)> = admin
        .query("SELECT id, qty FROM public.orders ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(actual, expected, "Postgres differs from MongoDB");
    let items: i64 = admin
        .query_one("SELECT count(*) FROM public.order_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(items, 2 * n as i64 - 1, "child rows");
}
