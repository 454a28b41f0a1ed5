//! What the binary writes to stderr when it is not a terminal: plain text, no colour escape
//! codes (a file, a pipe, journald or a log shipper would keep them as garbage).

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tributary::config::SourceKind;

use super::ConfigFile;
use crate::stream::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_to_a_pipe_hold_no_escape_codes() {
    let w = World::new(SourceKind::ChangeStream, 100).await;
    let config = ConfigFile::new(&w, "test", "public", "change_stream", 100);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["sync", "--config"])
        .arg(&config.path)
        .env("RUST_LOG", "info,tokio_postgres=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let streaming = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            if line.contains("Streaming changes.") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(streaming, Ok(true), "sync never logged streaming:\n{log}");
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(" INFO "), "{log}");
    assert!(
        !log.contains("\u{1b}["),
        "escape codes in piped logs:\n{log:?}"
    );
}
