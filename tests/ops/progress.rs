//! Progress of a full sync, as an operator sees it: a bar with the estimated total when stderr is
//! a terminal (run under a pseudo-terminal with util-linux's `script`), structured log lines
//! with a percentage when it is not.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tributary::config::SourceKind;

use super::ConfigFile;
use crate::stream::{order, World};

/// Documents in the collection: ten chunks of `CHUNK`, so there is progress to show.
const DOCUMENTS: usize = 1000;
const CHUNK: usize = 100;

async fn seeded_world() -> (World, ConfigFile) {
    let w = World::new(SourceKind::ChangeStream, CHUNK).await;
    let docs: Vec<_> = (0..DOCUMENTS)
        .map(|i| order(&format!("o{i:05}"), i as i32, &["a", "b"]))
        .collect();
    w.orders().insert_many(docs).await.unwrap();
    let config = ConfigFile::new(&w, "test", "public", "change_stream", CHUNK);
    (w, config)
}

/// Single quotes for `sh -c`: the paths are temporary directories, but quote them anyway.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Width of the pseudo-terminal (`stty cols` below).
const COLUMNS: usize = 200;

/// The rows a terminal shows after `output`: a small emulator of what indicatif and the log
/// writer send (text, `\r`, `\n`, cursor up/down/left/right, clear line; colours ignored).
/// A log line written between two redraws of the bars, instead of above them, is overwritten or
/// glued to a bar here, as on a real screen.
fn rendered(output: &str) -> Vec<String> {
    let mut rows: Vec<Vec<char>> = vec![Vec::new()];
    let (mut row, mut col) = (0usize, 0usize);
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => col = 0,
            '\n' => row += 1,
            '\u{1b}' if chars.peek() == Some(&'[') => {
                chars.next();
                let mut param = String::new();
                let mut op = ' ';
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        op = c;
                        break;
                    }
                    param.push(c);
                }
                let n: usize = param.parse().unwrap_or(1);
                match op {
                    'A' => row = row.saturating_sub(n),
                    'B' => row += n,
                    'C' => col += n,
                    'D' => col = col.saturating_sub(n),
                    'K' if rows.len() > row => {
                        let from = if param == "2" { 0 } else { col };
                        rows[row].truncate(from);
                    }
                    _ => {}
                }
            }
            c => {
                if col >= COLUMNS {
                    row += 1;
                    col = 0;
                }
                if rows.len() <= row {
                    rows.resize(row + 1, Vec::new());
                }
                let line = &mut rows[row];
                if line.len() <= col {
                    line.resize(col + 1, ' ');
                }
                line[col] = c;
                col += 1;
            }
        }
        if rows.len() <= row {
            rows.resize(row + 1, Vec::new());
        }
    }
    rows.into_iter()
        .map(|r| r.into_iter().collect::<String>().trim_end().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_on_a_terminal_draws_bars_with_the_estimated_total() {
    let (w, config) = seeded_world().await;
    // A pseudo-terminal without a size reads as 0x0; a wide one keeps each bar on one row, so
    // the assertions below do not depend on how a narrow terminal wraps it.
    let command = format!(
        "stty cols 200 rows 50; exec {} full-sync --config {}",
        quoted(env!("CARGO_BIN_EXE_tributary")),
        quoted(&config.path.to_string_lossy())
    );
    // `script` runs the command with a pseudo-terminal as its stdin/stdout/stderr and copies
    // what the command writes there to its own stdout; `-e` returns the command's exit code.
    let run = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("RUST_LOG", "info,tokio_postgres=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("full-sync under script did not finish within 120 s")
        .expect("util-linux `script` is needed for this test");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "full-sync failed: {:?}\n{screen}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The collection's bar and the overall bar, each ending at the estimated total.
    let total = format!("{DOCUMENTS}/{DOCUMENTS} documents");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("shop.orders") && l.contains(&total)),
        "no bar for shop.orders with its total:\n{screen}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.contains("overall") && l.contains(&total)),
        "no overall bar with the total:\n{screen}"
    );
    // On the screen, log lines stand whole above the bars: never overwritten by a redraw,
    // never sharing a row with a bar.
    let rows = rendered(&screen);
    let shown = rows.join("\n");
    for line in [
        "Full sync of the collection started. namespace=shop.orders",
        "Full sync of the collection finished. namespace=shop.orders documents=1000",
    ] {
        assert!(
            rows.iter().any(|r| r.contains(line)),
            "log line {line:?} not whole on the screen:\n{shown}"
        );
    }
    assert!(
        !rows
            .iter()
            .any(|r| r.contains(" INFO ") && r.contains("documents/s")),
        "a log line and a bar share a row:\n{shown}"
    );
    assert!(
        !screen.contains("Full sync in progress."),
        "progress log lines on a terminal, where the bars show it:\n{screen}"
    );
    assert_eq!(
        w.db.connect()
            .await
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        DOCUMENTS as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_without_a_terminal_logs_progress_with_a_percentage() {
    let (_w, config) = seeded_world().await;
    let run = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["full-sync", "--config"])
        .arg(&config.path)
        // A line after every chunk instead of every 10 s (docs/config.md, "Environment").
        .env("TRIBUTARY_PROGRESS_INTERVAL", "0")
        .env("RUST_LOG", "info,tokio_postgres=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("full-sync did not finish within 120 s")
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "full-sync failed:\n{log}");
    let progress: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Full sync in progress."))
        .collect();
    assert!(
        progress.len() >= 2,
        "fewer than two progress lines for {} chunks:\n{log}",
        DOCUMENTS / CHUNK
    );
    for line in &progress {
        assert!(line.contains("namespace=shop.orders"), "{line}");
        assert!(
            line.contains(&format!("estimated_total={DOCUMENTS}")),
            "{line}"
        );
        assert!(line.contains("percent="), "{line}");
        assert!(line.contains("overall_percent="), "{line}");
    }
    // Counts only grow, and the last line is the whole collection.
    let percents: Vec<f64> = progress
        .iter()
        .filter_map(|l| l.split("percent=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(percents.len(), progress.len(), "{log}");
    assert!(percents.windows(2).all(|p| p[0] <= p[1]), "{percents:?}");
    assert_eq!(percents.last(), Some(&100.0), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes without a terminal:\n{log:?}"
    );
    assert!(
        !log.contains("[="),
        "a progress bar without a terminal:\n{log}"
    );
}

/// Runs `tributary sync` until `done` holds, then stops it with SIGTERM; returns its log.
async fn sync_until<F, Fut>(config: &ConfigFile, log_name: &str, what: &str, done: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let log_path = config.dir.path().join(log_name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["sync", "--config"])
        .arg(&config.path)
        .env("RUST_LOG", "info")
        .env("TRIBUTARY_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    crate::support::wait_until(120, what, done).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().await.unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    log
}

/// `sync` restarted behind a backlog older than the display's threshold logs its catch-up
/// (lag and changes/s) and says when it has caught up; a start with nothing to catch up says
/// nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_logs_its_catch_up_after_a_restart_behind_a_backlog() {
    const BACKLOG: usize = 5000;
    let w = World::new(SourceKind::ChangeStream, 50).await;
    let config = ConfigFile::new(&w, "test", "public", "change_stream", 50);
    w.orders().insert_one(order("first", 1, &[])).await.unwrap();
    let pg = w.db.connect().await;
    let count = || async {
        pg.query_one("SELECT count(*) FROM public.orders", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let log = sync_until(&config, "first.log", "the first row", || async {
        count().await == 1
    })
    .await;
    assert!(!log.contains("Catching up"), "nothing to catch up:\n{log}");

    // A backlog written while the stream is stopped, older than the 10 s threshold when the
    // stream resumes.
    let written = tokio::time::Instant::now();
    let docs: Vec<_> = (0..BACKLOG)
        .map(|i| order(&format!("b{i:05}"), i as i32, &["x"]))
        .collect();
    w.orders().insert_many(docs).await.unwrap();
    tokio::time::sleep_until(written + Duration::from_secs(12)).await;
    let log = sync_until(
        &config,
        "second.log",
        "the backlog and the caught-up line",
        || {
            let log_path = config.dir.path().join("second.log");
            async move { std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("Caught up")) }
        },
    )
    .await;
    assert_eq!(count().await, BACKLOG as i64 + 1);
    assert!(
        log.contains("Catching up with MongoDB from the checkpoint"),
        "{log}"
    );
    let caught_up = log
        .lines()
        .find(|l| l.contains("Caught up with MongoDB"))
        .unwrap_or_else(|| panic!("no caught-up line:\n{log}"));
    assert!(
        caught_up.contains("changes=") && caught_up.contains("changes_per_second="),
        "{caught_up}"
    );
    w.stop().await;
}
