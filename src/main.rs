//! Binary edge: parse the command line, set up logging, run the command, map errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use tributary::cli::{self, Cli, LogFormat};

/// mimalloc instead of glibc malloc: every document becomes many short-lived BSON nodes, rows and
/// JSON values, and glibc's malloc/free/consolidation was a third of a full sync's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::exit::RUNTIME);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(failure) => {
            // `{:#}` prints the whole context chain on one line: what failed, where, and why.
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn init_tracing(format: LogFormat) {
    // Postgres NOTICEs (e.g. "already exists, skipping" from idempotent DDL) are noise at info.
    // The pool's own warnings ("Connection error: db error") repeat, without the detail, what
    // Tributary logs about the same failure; `RUST_LOG=deadpool=warn` shows them again.
    let from_env = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    if !from_env.contains("deadpool") {
        if let Ok(quiet) = "deadpool=error".parse() {
            filter = filter.add_directive(quiet);
        }
    }
    // Colour codes only for a person at a terminal: in a file, a pipe or journald they are
    // noise that breaks grep and log shippers. `NO_COLOR` (no-color.org) turns them off there too.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Lines go to stderr through the progress module, which prints them above any progress bars.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(tributary::progress::log_writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
