//! `tributary resync` as users run it, against the `sync` binary: the running daemon answers
//! the request by re-copying online; a daemon SIGKILLed in the middle of a re-copy leaves the
//! request queued and the collection pending, and the next start re-copies it online again:
//! readers never see fewer rows than the documents, and the table ends equal.

use std::time::Duration;

use bson::doc;
use tributary::config::SourceKind;

use super::{phase, wait_until, ConfigFile, Daemon};
use crate::stream::recopy::count_reader;
use crate::stream::{order, World};

const DOCS: usize = 2000;
const COUNT: &str = "SELECT count(*) FROM public.orders";

/// A streaming daemon over `DOCS` orders whose re-copies go 40 documents a chunk with a pause,
/// slow enough to be caught half-way; every row's `qty` is then set to -1 in Postgres so that
/// the rows a re-copy has rewritten can be counted.
async fn streaming_daemon() -> (World, ConfigFile, Daemon) {
    let w = World::new(SourceKind::ChangeStream, 200).await;
    let docs: Vec<bson::Document> = (0..DOCS)
        .map(|i| order(&format!("o{i:05}"), i as i32, &["a"]))
        .collect();
    w.orders().insert_many(docs).await.unwrap();
    let cfg = ConfigFile::new(&w, "test", "public", "change_stream", 200);
    let text = std::fs::read_to_string(&cfg.path).unwrap().replace(
        "[metrics]",
        "recopy_chunk_rows = 40\nrecopy_pause_ms = 60\n[metrics]",
    );
    std::fs::write(&cfg.path, text).unwrap();
    let daemon = Daemon::spawn(&cfg.path, cfg.dir.path().join("first.log"));
    wait_until(120, "the initial copy to finish", || async {
        phase(&w).await.as_deref() == Some("streaming")
    })
    .await;
    w.db.client
        .execute("UPDATE public.orders SET qty = -1", &[])
        .await
        .unwrap();
    (w, cfg, daemon)
}

async fn rewritten(w: &World) -> i64 {
    w.db.client
        .query_one("SELECT count(*) FROM public.orders WHERE qty >= 0", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn resync_command(cfg: &ConfigFile) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(["resync", "--config"])
        .arg(&cfg.path)
        .args(["--collections", "shop.orders"])
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_daemon_answers_resync_by_re_copying_online() {
    let (w, cfg, daemon) = streaming_daemon().await;
    let reader = count_reader(&w, COUNT);
    let out = tokio::time::timeout(Duration::from_secs(300), resync_command(&cfg).output())
        .await
        .expect("resync did not end within 300 s")
        .unwrap();
    let (least, reads) = reader.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "resync failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("re-copied online by the running daemon"),
        "{stdout}"
    );
    assert_eq!(rewritten(&w).await, DOCS as i64, "every row re-copied");
    assert!(
        reads > 0 && least == DOCS as i64,
        "a reader counted {least} rows"
    );
    w.assert_equal().await;
    assert_eq!(daemon.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_copy_killed_half_way_is_done_again_online_at_the_next_start() {
    let (w, cfg, daemon) = streaming_daemon().await;
    let reader = count_reader(&w, COUNT);
    let resync = resync_command(&cfg).output();
    let resync = tokio::spawn(resync);
    wait_until(120, "a fifth of the re-copy", || async {
        rewritten(&w).await >= (DOCS / 5) as i64
    })
    .await;
    daemon.kill().await;
    let at_kill = rewritten(&w).await;
    assert!(
        at_kill < DOCS as i64,
        "the re-copy finished before the kill; it must land half-way"
    );
    let out = tokio::time::timeout(Duration::from_secs(120), resync)
        .await
        .expect("resync did not notice the daemon's death")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("is queued"), "{stdout}");
    // Written while no daemon runs: streamed after the restart.
    w.orders()
        .update_one(doc! {"_id": "o00007"}, doc! {"$set": {"qty": 7007}})
        .await
        .unwrap();
    let second = Daemon::spawn(&cfg.path, cfg.dir.path().join("second.log"));
    wait_until(180, "the re-copy to be done again", || async {
        rewritten(&w).await == DOCS as i64 && phase(&w).await.as_deref() == Some("streaming")
    })
    .await;
    let (least, reads) = reader.stop().await;
    assert!(
        reads > 0 && least == DOCS as i64,
        "a reader counted {least} rows"
    );
    wait_until(60, "the change made while stopped to arrive", || async {
        w.expected().await == w.actual().await
    })
    .await;
    w.assert_equal().await;
    let log = second.log_text();
    assert!(
        log.contains("Re-copying online"),
        "the restart did not re-copy online:\n{log}"
    );
    assert!(
        !log.contains("Full sync of the collection started."),
        "the restart copied in bulk instead of online:\n{log}"
    );
    assert_eq!(second.terminate().await, Some(0));
}
