//! `full` mode: every document and every row, both ways, in memory bounded by configuration.
//!
//! 1. Documents → rows. The collection is read by the full sync's own `_id`-range readers
//!    (`source::snapshot`, up to `readers` ranges in parallel, one chunk of
//!    `sync.batch_max_rows` documents shared between them). Each chunk is checked by a task of
//!    its own (up to `workers` at once, each on one pooled connection): its rows are fetched by
//!    key (`key = ANY($1)` on the parent table, `parent_key = ANY($1)` on each child table) and
//!    every document is converted and compared (`check`). Documents found different go to a
//!    recheck task (`recheck::documents`) through a small bounded channel.
//! 2. Rows → documents. Every row fetched in step 1 was counted in its key bucket
//!    (`buckets`); Postgres then counts each whole table per bucket, and only buckets it does
//!    not agree on are read again, key by key through a portal in chunks, and their keys looked
//!    up in MongoDB (`recheck::extra_rows`, `recheck::orphan_rows`).
//!
//! Why rows are fetched by key rather than both sides streamed in key order and merged:
//! Postgres orders keys by its collation and type (`text` under the database's collation,
//! numerics by value), MongoDB by BSON type bracket and binary string order, so a merge needs
//! both sides in one order: `ORDER BY key COLLATE "C"` for string keys, and it cannot follow
//! the range readers (whose ranges span type brackets) without a sort per range. Fetching by
//! key uses the primary-key index for any key type, keeps the ranges parallel and independent,
//! and costs one round trip per chunk and table. Measured on this machine (2 CPUs shared with
//! the simulator and Postgres; `cargo bench --bench pipeline -- full-sync`, BENCHMARKS.md):
//! see docs/verify.md "Performance" for the numbers of the last run.
//!
//! Memory: the chunks in flight (at most `workers` + 1 chunks of documents and their rows),
//! a recheck batch, and two numbers per key bucket per table. Nothing grows with the
//! collection.

use std::sync::Arc;

use bson::Bson;
use bson::RawDocumentBuf;
use mongodb::Client;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::buckets::Buckets;
use super::check::{fetch_rows, id_of, judge, keys_of, Target};
use super::error::VerifyError;
use super::progress::CollectionProgress;
use super::recheck::{self, Live};
use super::report::{ChildReport, CollectionReport, Finding, Tally};
use super::rows::connection;
use super::Settings;
use crate::event::Namespace;
use crate::mapping::value::PgValue;
use crate::sink::postgres::plan::key_text;
use crate::source::snapshot::SnapshotReader;

/// What checking one chunk found.
struct ChunkResult {
    documents: u64,
    elements: Vec<u64>,
    parent_hashes: Vec<i32>,
    child_hashes: Vec<Vec<i32>>,
    /// `_id`s of the documents that differ.
    suspects: Vec<Bson>,
}

async fn check_chunk(
    target: Arc<Target>,
    docs: Vec<RawDocumentBuf>,
) -> Result<ChunkResult, VerifyError> {
    let ids: Vec<Option<Bson>> = docs.iter().map(id_of).collect();
    let present: Vec<Bson> = ids.iter().flatten().cloned().collect();
    let rows = fetch_rows(&target, &keys_of(&target, &present)).await?;
    let mut elements = vec![0u64; target.children.len()];
    let mut suspects = Vec::new();
    for (doc, id) in docs.iter().zip(ids) {
        let Some(id) = id else { continue };
        let (j, n) = judge(&target, &id, Some(doc), &rows);
        for (e, k) in elements.iter_mut().zip(n) {
            *e += k;
        }
        if !j.is_equal() {
            suspects.push(id);
        }
    }
    Ok(ChunkResult {
        documents: docs.len() as u64,
        elements,
        parent_hashes: rows.parent_hashes,
        child_hashes: rows.child_hashes,
        suspects,
    })
}

/// Consumes suspects, rechecks them in batches, and tallies what persisted.
async fn recheck_task(
    target: Arc<Target>,
    live: Live,
    batch: usize,
    mut rx: mpsc::Receiver<Vec<Bson>>,
) -> Result<Tally, VerifyError> {
    let mut tally = Tally::new(&target.tables);
    while let Some(mut ids) = rx.recv().await {
        while ids.len() < batch {
            match rx.try_recv() {
                Ok(more) => ids.extend(more),
                Err(_) => break,
            }
        }
        tally.rechecked += ids.len() as u64;
        for f in recheck::documents(&target, &live, ids).await? {
            tally.add(f);
        }
    }
    Ok(tally)
}

fn task_error(target: &Target, e: tokio::task::JoinError) -> VerifyError {
    VerifyError::Task {
        namespace: target.namespace.clone(),
        reason: e.to_string(),
    }
}

/// Verifies one collection in full.
pub async fn run(
    target: Arc<Target>,
    mongo: &Client,
    live: &Live,
    settings: &Settings,
    progress: &mut CollectionProgress,
) -> Result<CollectionReport, VerifyError> {
    let mapping = target.mapping.clone();
    let mut reader = SnapshotReader::new(
        mongo.clone(),
        Namespace::new(&mapping.database, &mapping.collection),
        settings.chunk,
    )
    .with_readers(settings.readers);
    progress.set_total(reader.estimated_count().await);

    let (tx, rx) = mpsc::channel::<Vec<Bson>>(4);
    let rechecker = tokio::spawn(recheck_task(
        target.clone(),
        live.clone(),
        settings.chunk,
        rx,
    ));
    let mut seen_parent = Buckets::new(settings.buckets);
    let mut seen_children = vec![seen_parent.clone(); target.children.len()];
    let mut documents = 0u64;
    let mut elements = vec![0u64; target.children.len()];
    let mut tasks: JoinSet<Result<ChunkResult, VerifyError>> = JoinSet::new();
    let mut absorb = |r: Result<Result<ChunkResult, VerifyError>, tokio::task::JoinError>| {
        let r = r.map_err(|e| task_error(&target, e))??;
        documents += r.documents;
        progress.inc(r.documents);
        for h in r.parent_hashes {
            seen_parent.add(h);
        }
        for (seen, hashes) in seen_children.iter_mut().zip(r.child_hashes) {
            for h in hashes {
                seen.add(h);
            }
        }
        for (e, n) in elements.iter_mut().zip(r.elements) {
            *e += n;
        }
        Ok::<_, VerifyError>(r.suspects)
    };
    // Suspects wait here when the recheck task is busy; a send fails only when it stopped,
    // and its error is returned below.
    let mut suspects: Vec<Vec<Bson>> = Vec::new();
    let mut exhausted = false;
    'read: while !exhausted || !tasks.is_empty() {
        if !exhausted && tasks.len() < settings.workers {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => {
                    tasks.spawn(check_chunk(target.clone(), chunk));
                }
                Ok(None) => exhausted = true,
                Err(source) => {
                    return Err(VerifyError::Read {
                        namespace: target.namespace.clone(),
                        source,
                    })
                }
            }
            while let Some(r) = tasks.try_join_next() {
                suspects.push(absorb(r)?);
            }
        } else if let Some(r) = tasks.join_next().await {
            suspects.push(absorb(r)?);
        }
        for s in suspects.drain(..).filter(|s| !s.is_empty()) {
            if tx.send(s).await.is_err() {
                break 'read;
            }
        }
    }
    drop(tx);
    progress.phase("rechecking differences");
    let mut tally = rechecker.await.map_err(|e| task_error(&target, e))??;

    progress.phase("looking for rows without documents");
    let rows = extra_rows(&target, live, settings, &seen_parent, &mut tally).await?;
    let mut children = Vec::with_capacity(target.children.len());
    for (i, seen) in seen_children.iter().enumerate() {
        let child_rows = orphan_rows(&target, live, settings, i, seen, &mut tally).await?;
        let [missing, extra, different] = tally.children[i];
        children.push(ChildReport {
            table: target.children[i].name.clone(),
            elements: elements[i],
            rows: child_rows,
            missing,
            extra,
            different,
        });
    }
    Ok(CollectionReport {
        namespace: target.namespace.clone(),
        table: target.parent.name.clone(),
        documents,
        rows,
        checked: documents,
        missing: tally.missing,
        extra: tally.extra,
        different: tally.different,
        dead_letter: tally.dead_letter,
        rechecked: tally.rechecked,
        children,
        differences: tally.differences(),
    })
}

/// The buckets of a table as Postgres counts them.
async fn table_buckets(
    target: &Target,
    table: &super::rows::TableQueries,
    buckets: usize,
) -> Result<Buckets, VerifyError> {
    let mut b = Buckets::new(buckets);
    let client = connection(&target.pool).await?;
    for (bucket, count, sum) in table.bucket_counts(&client, b.mask()).await? {
        b.set(bucket, count, sum);
    }
    Ok(b)
}

/// Reads the keys (and `idx`) of the rows in `buckets` through a portal, `batch` rows at a
/// time (child rows ordered by parent key), hands each batch to `each` and tallies what it
/// found.
async fn scan_buckets<F, Fut>(
    target: &Target,
    table: &super::rows::TableQueries,
    mask: i32,
    buckets: Vec<i32>,
    batch: usize,
    tally: &mut Tally,
    mut each: F,
) -> Result<(), VerifyError>
where
    F: FnMut(Vec<Vec<PgValue>>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Finding>, u64), VerifyError>>,
{
    let doing = || format!("reading keys of {}", table.qualified);
    let mut client = connection(&target.pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(VerifyError::postgres(doing()))?;
    let stmt = tx
        .prepare(table.keys_in_buckets_sql())
        .await
        .map_err(VerifyError::postgres(doing()))?;
    let portal = tx
        .bind(&stmt, &[&mask, &buckets])
        .await
        .map_err(VerifyError::postgres(doing()))?;
    let max = i32::try_from(batch).unwrap_or(i32::MAX).max(1);
    loop {
        let rows = tx
            .query_portal(&portal, max)
            .await
            .map_err(VerifyError::postgres(doing()))?;
        if rows.is_empty() {
            break;
        }
        let keys = rows
            .iter()
            .map(|r| table.key_row(r))
            .collect::<Result<Vec<_>, _>>()?;
        let (found, rechecked) = each(keys).await?;
        tally.rechecked += rechecked;
        for f in found {
            tally.add(f);
        }
    }
    tx.commit().await.map_err(VerifyError::postgres(doing()))
}

/// Finds parent rows without a document in the buckets `seen` does not account for; returns
/// the table's row count.
async fn extra_rows(
    target: &Target,
    live: &Live,
    settings: &Settings,
    seen: &Buckets,
    tally: &mut Tally,
) -> Result<u64, VerifyError> {
    let table = table_buckets(target, &target.parent, settings.buckets).await?;
    let unaccounted = seen.unaccounted(&table);
    if !unaccounted.is_empty() {
        scan_buckets(
            target,
            &target.parent,
            table.mask(),
            unaccounted,
            settings.chunk,
            tally,
            |rows| {
                let keys: Vec<PgValue> = rows
                    .into_iter()
                    .filter_map(|r| r.into_iter().next())
                    .collect();
                recheck::extra_rows(target, live, keys)
            },
        )
        .await?;
    }
    Ok(table.total())
}

/// Finds rows of child table `child` whose parent document does not exist; returns the
/// table's row count.
async fn orphan_rows(
    target: &Target,
    live: &Live,
    settings: &Settings,
    child: usize,
    seen: &Buckets,
    tally: &mut Tally,
) -> Result<u64, VerifyError> {
    let table_queries = &target.children[child];
    let table = table_buckets(target, table_queries, settings.buckets).await?;
    let unaccounted = seen.unaccounted(&table);
    if !unaccounted.is_empty() {
        // Rows arrive ordered by parent key; a key split between two batches was handled
        // (with all its rows) in the first one.
        let mut previous: Option<String> = None;
        scan_buckets(
            target,
            table_queries,
            table.mask(),
            unaccounted,
            settings.chunk,
            tally,
            |rows| {
                let mut keys: Vec<PgValue> = Vec::new();
                for key in rows.into_iter().filter_map(|r| r.into_iter().next()) {
                    let text = key_text(&key);
                    if previous.as_ref() != Some(&text) {
                        previous = Some(text);
                        keys.push(key);
                    }
                }
                recheck::orphan_rows(target, live, child, keys)
            },
        )
        .await?;
    }
    Ok(table.total())
}
