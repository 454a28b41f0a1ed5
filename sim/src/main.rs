//! `mongo-sim`: runs the simulator until SIGINT/SIGTERM.

use clap::Parser;

/// mimalloc instead of glibc malloc: the simulator allocates and frees
/// millions of small BSON nodes per second, and glibc spent a third of the
/// CPU in `malloc`/`free`/`malloc_consolidate` (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An in-memory MongoDB 7 replica-set primary (set `rs0`) for tests and demos.
#[derive(Parser, Debug)]
#[command(name = "mongo-sim", version)]
struct Args {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 27017)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// Oplog capacity in entries; older entries are truncated.
    #[arg(long, default_value_t = 1_000_000)]
    oplog_max_entries: usize,
    /// Load the `shop` demo database with this many orders at start.
    #[arg(long, default_value_t = 0)]
    seed_demo: usize,
    /// Serve TLS only (mongod's requireTLS), with this PEM certificate chain (leaf first).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
    /// Access control: USER:PASSWORD[:ROLE[+ROLE...]][,...] with ROLE root (default),
    /// readWriteAnyDatabase, readAnyDatabase, read@DB or readWrite@DB; users log in with
    /// SCRAM-SHA-256 or SCRAM-SHA-1 against authSource=admin.
    #[arg(long, value_name = "USERS")]
    auth: Option<String>,
    /// Ask clients for a certificate and verify it against this PEM CA (mongod's
    /// net.tls.CAFile); a client without one is refused unless
    /// --tls-allow-connections-without-certificates.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_ca_file: Option<std::path::PathBuf>,
    /// With --tls-ca-file, let clients without a certificate connect (mongod's
    /// net.tls.allowConnectionsWithoutCertificates), e.g. SCRAM users.
    #[arg(long, requires = "tls_ca_file")]
    tls_allow_connections_without_certificates: bool,
    /// A MONGODB-X509 user in $external: SUBJECT[:ROLE[+ROLE...]], SUBJECT the client
    /// certificate's subject in RFC 2253 form (e.g. CN=tributary,OU=sync,O=Example), ROLE as
    /// in --auth (default root). Repeatable; needs --tls-ca-file.
    #[arg(long, requires = "tls_ca_file", value_name = "SUBJECT[:ROLE]")]
    x509_user: Vec<String>,
    /// Run a sharded cluster: the port is a mongos in front of N in-process shards, each a
    /// replica set (shard0, shard1, ...) on a port of its own.
    #[arg(long, default_value_t = 0, value_name = "N")]
    shards: usize,
    /// With --shards, run the balancer every MS milliseconds (one chunk per round).
    #[arg(long, requires = "shards", value_name = "MS")]
    balancer_interval_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let handle = mongo_sim::start(mongo_sim::SimOptions {
        bind: args.bind,
        port: args.port,
        oplog_max_entries: args.oplog_max_entries,
        seed_demo: args.seed_demo,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(mongo_sim::TlsFiles { cert, key }),
            _ => None,
        },
        auth: args.auth,
        tls_ca_file: args.tls_ca_file,
        tls_allow_connections_without_certificates: args.tls_allow_connections_without_certificates,
        x509_users: args.x509_user,
        shards: args.shards,
        balancer_interval_ms: args.balancer_interval_ms,
        ..mongo_sim::SimOptions::default()
    })
    .await;
    // A bad --auth, --x509-user, --tls-cert, --tls-key or --tls-ca-file (or a port in use) is a sentence, not a Debug dump.
    let handle = match handle {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mongo-sim: {e}");
            std::process::exit(2);
        }
    };
    for (k, addr) in handle.shard_addrs().iter().enumerate() {
        println!("mongo-sim shard shard{k} on {addr}");
    }
    println!("mongo-sim listening on {}", handle.addr());
    wait_for_signal().await;
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
