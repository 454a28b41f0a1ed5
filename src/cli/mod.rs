//! The command line: argument definitions (clap derive), dispatch to one file per subcommand, and
//! the mapping from failures to SPEC's exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod check;
mod cutover;
mod dead_letters;
mod load;
mod reload;
mod resync;
mod schema;
mod signal;
mod status;
mod sync;
mod verify;

/// Exit codes of SPEC "Command line".
pub mod exit {
    /// Success, equal, ready.
    pub const OK: u8 = 0;
    /// Verification found differences, or cutover is not ready.
    pub const DIFFERENT: u8 = 1;
    /// Usage, config or mapping error; nothing was written.
    pub const USAGE: u8 = 2;
    /// Runtime failure: a connection that stayed down, a fatal source error.
    pub const RUNTIME: u8 = 3;
}

/// A failure on its way to `main`: the message for the operator and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit::USAGE,
            error: error.into(),
        }
    }
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: exit::RUNTIME,
            error: error.into(),
        }
    }
}

pub type CliResult = Result<ExitCode, Failure>;

#[derive(Debug, Parser)]
#[command(
    name = "tributary",
    version,
    about = "Streams MongoDB into PostgreSQL with transactional checkpoints",
    propagate_version = true
)]
pub struct Cli {
    /// Log line format on stderr. `RUST_LOG` sets the level (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path of the TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: initial full sync of never-copied collections, then stream forever.
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Skip the initial full copy; stream from the stored position (or from now).
        #[arg(long)]
        no_initial_sync: bool,
        /// Serve /metrics, /healthz and /readyz here (overrides `metrics.listen`).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<String>,
    },
    /// Copy some or all mapped collections once, recording the stream position for `sync`.
    FullSync {
        #[command(flatten)]
        config: ConfigArg,
        /// Comma-separated `db.coll` list (default: every mapped collection).
        #[arg(long, value_delimiter = ',', value_name = "db.coll,...")]
        collections: Vec<String>,
        /// `upsert` writes into the live tables; `replace` loads fresh tables and swaps them in.
        #[arg(long, value_enum, default_value_t = FullSyncMode::Upsert)]
        mode: FullSyncMode,
    },
    /// Re-copy collections online: the running daemon does it while it streams the others
    /// (this command waits for it); with no daemon running, this process copies them.
    Resync {
        #[command(flatten)]
        config: ConfigArg,
        /// Comma-separated `db.coll` list.
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "db.coll,...",
            required = true
        )]
        collections: Vec<String>,
    },
    /// Catch up to now, prove MongoDB is quiet, verify, and give a migration verdict.
    Cutover {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        timeout: u64,
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        quiet_period: u64,
        #[arg(long, value_enum, default_value_t = VerifyMode::Counts)]
        verify: VerifyMode,
        /// Ask MongoDB to refuse user writes first (`setUserWriteBlockMode`, 6.0+); they stay
        /// blocked when the verdict is ready, and are lifted again when it is not.
        #[arg(long)]
        block_writes: bool,
        /// Only lift a block of user writes (a rollback); nothing else runs.
        #[arg(long, conflicts_with_all = ["block_writes", "json"])]
        unblock_writes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Compare Postgres with MongoDB through the mappings.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value_t = VerifyMode::Counts)]
        mode: VerifyMode,
        #[arg(long, value_name = "N", default_value_t = 1000)]
        sample_size: usize,
        #[arg(long)]
        json: bool,
    },
    /// Print the DDL for the mapped tables and the state tables (or apply it with --apply).
    Schema {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        apply: bool,
    },
    /// Validate config and mappings (every error at once), then ping MongoDB and Postgres.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// One JSON document of every finding, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show checkpoints, phases, lag and dead letters from the state tables.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Ask the running `sync` of the stream to reload its mappings (as SIGHUP does) and print
    /// its answer: exit 0 applied, 2 refused (every error, file:line), 3 no daemon runs it.
    Reload {
        #[command(flatten)]
        config: ConfigArg,
        /// How long to wait for the daemon's answer.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        timeout: u64,
    },
    /// List the open dead letters of the stream: one line per refused document.
    DeadLetters {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this `db.collection`.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FullSyncMode {
    Upsert,
    Replace,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum VerifyMode {
    Counts,
    Sample,
    Full,
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Check { config, json } => check::run(&config.config, json).await,
        Command::Schema { config, apply } => schema::run(&config.config, apply).await,
        Command::Status { config, json } => status::run(&config.config, json).await,
        Command::DeadLetters {
            config,
            namespace,
            json,
        } => dead_letters::run(&config.config, namespace, json).await,
        Command::Reload { config, timeout } => reload::run(&config.config, timeout).await,
        Command::Sync {
            config,
            no_initial_sync,
            metrics_addr,
        } => sync::run_sync(&config.config, !no_initial_sync, metrics_addr).await,
        Command::FullSync {
            config,
            collections,
            mode,
        } => sync::run_full_sync(&config.config, collections, mode).await,
        Command::Resync {
            config,
            collections,
        } => resync::run(&config.config, collections).await,
        Command::Cutover {
            config,
            unblock_writes: true,
            ..
        } => cutover::unblock(&config.config).await,
        Command::Cutover {
            config,
            timeout,
            quiet_period,
            verify: mode,
            block_writes,
            json,
            ..
        } => {
            let verify = crate::verify::VerifyOptions {
                mode: verify::mode_of(mode),
                ..crate::verify::VerifyOptions::default()
            };
            let opts = cutover::options(timeout, quiet_period, verify, block_writes);
            cutover::run(&config.config, opts, json).await
        }
        Command::Verify {
            config,
            mode,
            sample_size,
            json,
        } => verify::run(&config.config, mode, sample_size, json).await,
    }
}
