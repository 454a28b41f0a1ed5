//! The dead-letter lifecycle end to end: letters from the full sync and from the stream are
//! counted; a later good version or a delete resolves a letter in the transaction that writes
//! its rows; `dead-letters --json` and `status` list the open ones; a fixed mapping and a
//! restart write the refused documents and resolve their letters. Also: every labelled
//! counter starts at 0, and `on_error: null` is counted.

use bson::doc;
use mongo_sim::SimOptions;
use tributary::config::SourceKind;
use tributary::metrics::{self, ERROR_KINDS};

use super::{sample_sum, wait_until, ConfigFile, Running};
use crate::stream::World;

/// `size` is an integer column: a document whose `size` is a string is refused.
const REFUSING: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
      - { name: size, source: size, type: integer }
    children:
      - table: order_items
        source: items
        parent_key: order_id
        columns:
          - { name: sku, source: sku, type: text }
"#;

/// The fix: `size` goes to a text column (added in place by `sync` at start).
const FIXED: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id,        source: _id,  type: text }
      - { name: qty,       source: qty,  type: integer }
      - { name: name,      source: name, type: text }
      - { name: size_text, source: size, type: text }
    children:
      - table: order_items
        source: items
        parent_key: order_id
        columns:
          - { name: sku, source: sku, type: text }
"#;

/// `tributary <args>` run to completion; stdout as text, which must exit 0.
async fn cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "tributary {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn cli_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&cli(args).await).unwrap()
}

/// Whether the letters of `id` are all resolved (`None`: it has no letter).
async fn resolved(w: &World, id: &str) -> Option<bool> {
    w.db.client
        .query_one(
            "SELECT bool_and(resolved_at IS NOT NULL) FROM tributary.dead_letters \
             WHERE document_key = to_jsonb($1::text)",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_mapping_and_a_restart_write_the_refused_documents_and_resolve_their_letters() {
    let w = World::with_mapping(
        SourceKind::ChangeStream,
        100,
        SimOptions::default(),
        "",
        REFUSING,
    )
    .await;
    // The same stream, database and mapping file as `w.config`, for the binary.
    let config_file = ConfigFile::new(&w, "test", "public", "change_stream", 100);
    let config_arg = config_file.path.to_str().unwrap();
    w.orders()
        .insert_one(doc! {"_id": "good", "qty": 1, "size": 3, "items": [{"sku": "a"}]})
        .await
        .unwrap();
    // Refused by the full sync.
    w.orders()
        .insert_one(doc! {"_id": "bad-copy", "qty": 2, "size": "L", "items": [{"sku": "b"}]})
        .await
        .unwrap();

    let run = Running::start(&w.config, w.mappings.clone(), 30).await;
    w.sync_point("copied").await;
    // Refused by the stream, twice (two versions of one document).
    w.orders()
        .insert_one(doc! {"_id": "bad-stream", "qty": 3, "size": "XL"})
        .await
        .unwrap();
    w.orders()
        .update_one(doc! {"_id": "bad-stream"}, doc! {"$set": {"name": "v2"}})
        .await
        .unwrap();
    // Refused, then repaired by a later version: resolved with that version's rows.
    w.orders()
        .insert_one(doc! {"_id": "flip", "qty": 4, "size": "M"})
        .await
        .unwrap();
    // Refused, then deleted: resolved with the delete.
    w.orders()
        .insert_one(doc! {"_id": "gone", "qty": 5, "size": "S"})
        .await
        .unwrap();
    w.sync_point("refused").await;
    w.orders()
        .update_one(doc! {"_id": "flip"}, doc! {"$set": {"size": 7}})
        .await
        .unwrap();
    w.orders().delete_one(doc! {"_id": "gone"}).await.unwrap();
    w.sync_point("repaired").await;

    assert_eq!(resolved(&w, "flip").await, Some(true), "flip's letter");
    assert_eq!(resolved(&w, "gone").await, Some(true), "gone's letter");
    assert_eq!(resolved(&w, "bad-copy").await, Some(false));
    assert_eq!(resolved(&w, "bad-stream").await, Some(false));
    // Every path's letters are counted: one from the copy, four from the stream.
    assert_eq!(
        run.counter(metrics::DEAD_LETTERS_TOTAL, "namespace=\"shop.orders\""),
        5.0,
        "{}",
        run.metrics.render()
    );
    run.stop().await;

    // The open letters, by document, before the fix.
    let listed = cli_json(&["dead-letters", "--config", config_arg, "--json"]).await;
    assert_eq!(listed["open"], 2, "{listed:#}");
    let letters = listed["letters"].as_array().unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l["_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bad-copy", "bad-stream"], "oldest first: {listed:#}");
    assert_eq!(letters[1]["versions"], 2);
    assert_eq!(letters[1]["namespace"], "shop.orders");
    assert!(letters[1]["error"].as_str().unwrap().contains("size"));
    assert!(letters[0]["first_seen"].is_string());
    let other = cli_json(&[
        "dead-letters",
        "--config",
        config_arg,
        "--namespace",
        "shop.other",
        "--json",
    ])
    .await;
    assert_eq!(other["open"], 0);
    let status = cli_json(&["status", "--config", config_arg, "--json"]).await;
    assert_eq!(status["streams"][0]["open_dead_letters"], 3, "{status:#}");
    assert!(status["streams"][0]["oldest_open_dead_letter_seconds"].is_number());
    let text = cli(&["status", "--config", config_arg]).await;
    assert!(text.contains("dead letters: 3 open, the oldest"), "{text}");

    // Fix the mapping and restart: the refused documents' current versions are written and
    // their letters resolved.
    let mapping_file = w.config.sync.mappings.clone();
    std::fs::write(&mapping_file, FIXED).unwrap();
    let fixed = std::sync::Arc::new(tributary::mapping::load(&mapping_file).unwrap());
    // MongoDB refuses the retry's first lookup (as it refuses an `_id` its matcher takes for
    // operators): the retry looks each letter up alone instead of giving up on all of them.
    super::fail_point(
        &w.mongo,
        doc! {"times": 1}.into(),
        doc! {"failCommands": ["find"], "errorCode": 2, "namespace": "shop.orders"},
    )
    .await;
    let run = Running::start(&w.config, fixed, 30).await;
    wait_until(60, "bad-copy and bad-stream written", || async {
        w.db.client
            .query_one(
                "SELECT count(*) FROM public.orders WHERE id IN ('bad-copy', 'bad-stream')",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 2)
    })
    .await;
    let row =
        w.db.client
            .query_one(
                "SELECT size_text, name FROM public.orders WHERE id = 'bad-stream'",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("XL"));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("v2"));
    let items: i64 =
        w.db.client
            .query_one(
                "SELECT count(*) FROM public.order_items WHERE order_id = 'bad-copy'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
    assert_eq!(items, 1, "the child rows come with the retried document");
    assert_eq!(resolved(&w, "bad-copy").await, Some(true));
    assert_eq!(resolved(&w, "bad-stream").await, Some(true));
    run.stop().await;

    let status = cli_json(&["status", "--config", config_arg, "--json"]).await;
    assert_eq!(status["streams"][0]["open_dead_letters"], 0, "{status:#}");
    assert!(status["streams"][0]["oldest_open_dead_letter_seconds"].is_null());
    let listed = cli_json(&["dead-letters", "--config", config_arg, "--json"]).await;
    assert_eq!(listed["open"], 0, "{listed:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_refused_document_keeps_one_open_letter_across_restarts() {
    let w = World::with_mapping(
        SourceKind::ChangeStream,
        100,
        SimOptions::default(),
        "",
        REFUSING,
    )
    .await;
    w.orders()
        .insert_one(doc! {"_id": "still-bad", "qty": "x"})
        .await
        .unwrap();
    for round in 0..2 {
        let run = Running::start(&w.config, w.mappings.clone(), 30).await;
        w.sync_point(&format!("round{round}")).await;
        run.stop().await;
    }
    let (letters, open): (i64, i64) = {
        let r =
            w.db.client
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE resolved_at IS NULL) \
                 FROM tributary.dead_letters",
                    &[],
                )
                .await
                .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((letters, open), (1, 1), "one letter, still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_sync_serves_every_error_kind_at_zero_and_counts_nulled_values() {
    const NULLING: &str = r#"
database: shop
collections:
  orders:
    on_error: "null"
    columns:
      - { name: id,   source: _id,  type: text }
      - { name: qty,  source: qty,  type: integer }
      - { name: name, source: name, type: text }
"#;
    let w = World::with_mapping(
        SourceKind::ChangeStream,
        100,
        SimOptions::default(),
        "",
        NULLING,
    )
    .await;
    // Nulled by the full sync.
    w.orders()
        .insert_one(doc! {"_id": "copied", "qty": "many"})
        .await
        .unwrap();
    let run = Running::start(&w.config, w.mappings.clone(), 30).await;
    w.sync_point("copied").await;

    let (status, text) = run.get("/metrics").await;
    assert_eq!(status, 200);
    for kind in ERROR_KINDS {
        let line = format!("{}{{kind=\"{kind}\"}} 0", metrics::ERRORS_TOTAL);
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    for op in tributary::event::Op::LABELS {
        let series = format!("namespace=\"shop.orders\",op=\"{op}\"");
        assert!(
            text.lines()
                .any(|l| l.starts_with(metrics::EVENTS_TOTAL) && l.contains(&series)),
            "{} {series} missing:\n{text}",
            metrics::EVENTS_TOTAL
        );
    }
    assert!(text.contains(&format!(
        "{}{{namespace=\"shop.orders\"}} 0",
        metrics::DEAD_LETTERS_TOTAL
    )));
    assert!(
        text.lines()
            .any(|l| l.starts_with(metrics::NULLED_VALUES_TOTAL)
                && l.contains("column=\"name\"")
                && l.contains("namespace=\"shop.orders\"")
                && l.ends_with(" 0")),
        "{text}"
    );
    let nulled = |text: &str| sample_sum(text, metrics::NULLED_VALUES_TOTAL, "column=\"qty\"");
    assert_eq!(nulled(&text), 1.0, "the copy's NULL:\n{text}");

    // Nulled by the stream.
    w.orders()
        .insert_one(doc! {"_id": "streamed", "qty": 2.5})
        .await
        .unwrap();
    w.sync_point("streamed").await;
    assert_eq!(
        nulled(&run.get("/metrics").await.1),
        2.0,
        "the stream's NULL"
    );
    let qty: Option<i32> =
        w.db.client
            .query_one("SELECT qty FROM public.orders WHERE id = 'streamed'", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(qty, None);
    run.stop().await;
}
