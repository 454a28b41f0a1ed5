//! `sample` mode: `--sample-size N` documents drawn by MongoDB's `$sample` per collection, each
//! converted and compared with its row and child rows (fetched by key, as in `full`); and, the
//! other way, N keys drawn at random from the parent table, each looked up in MongoDB, so rows
//! without a document are found too. Documents `$sample` returns twice are checked once.

use std::collections::HashSet;

use bson::Bson;

use super::check::{fetch_rows, id_of, judge, keys_of, Target};
use super::error::VerifyError;
use super::mongo;
use super::progress::CollectionProgress;
use super::recheck::{self, Live};
use super::report::{ChildReport, CollectionReport, Tally};
use super::rows::connection;
use super::Settings;

pub async fn run(
    target: &Target,
    live: &Live,
    settings: &Settings,
    size: usize,
    progress: &mut CollectionProgress,
) -> Result<CollectionReport, VerifyError> {
    let mut docs = mongo::sample(&target.coll, size).await?;
    let mut seen = HashSet::new();
    docs.retain(|d| id_of(d).is_some_and(|id| seen.insert(format!("{id:?}"))));
    progress.set_total(Some(docs.len() as u64));

    let mut tally = Tally::new(&target.tables);
    let mut elements = vec![0u64; target.children.len()];
    let mut child_rows = vec![0u64; target.children.len()];
    let mut suspects: Vec<Bson> = Vec::new();
    for chunk in docs.chunks(settings.chunk.max(1)) {
        let ids: Vec<Bson> = chunk.iter().filter_map(id_of).collect();
        let rows = fetch_rows(target, &keys_of(target, &ids)).await?;
        for (r, n) in child_rows.iter_mut().zip(rows.child_rows()) {
            *r += n;
        }
        for (doc, id) in chunk.iter().zip(&ids) {
            let (j, n) = judge(target, id, Some(doc), &rows);
            for (e, k) in elements.iter_mut().zip(n) {
                *e += k;
            }
            if !j.is_equal() {
                suspects.push(id.clone());
            }
        }
        progress.inc(chunk.len() as u64);
    }
    let checked = docs.len() as u64;
    drop(docs);
    for batch in suspects.chunks(settings.chunk.max(1)) {
        tally.rechecked += batch.len() as u64;
        for f in recheck::documents(target, live, batch.to_vec()).await? {
            tally.add(f);
        }
    }

    progress.phase("looking for rows without documents");
    let (documents, rows, keys) = {
        let client = connection(&target.pool).await?;
        let n = i64::try_from(size).unwrap_or(i64::MAX);
        (
            target
                .coll
                .estimated_document_count()
                .await
                .map_err(VerifyError::mongo(format!("counting {}", target.namespace)))?,
            target.parent.count(&client).await?,
            target.parent.sample_keys(&client, n).await?,
        )
    };
    let (found, rechecked) = recheck::extra_rows(target, live, keys).await?;
    tally.rechecked += rechecked;
    for f in found {
        tally.add(f);
    }

    let children = target
        .children
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let [missing, extra, different] = tally.children[i];
            ChildReport {
                table: c.name.clone(),
                elements: elements[i],
                rows: child_rows[i],
                missing,
                extra,
                different,
            }
        })
        .collect();
    Ok(CollectionReport {
        namespace: target.namespace.clone(),
        table: target.parent.name.clone(),
        documents,
        rows,
        checked,
        missing: tally.missing,
        extra: tally.extra,
        different: tally.different,
        dead_letter: tally.dead_letter,
        rechecked: tally.rechecked,
        children,
        differences: tally.differences(),
    })
}
