//! `counts` mode: per collection, the exact document count against the rows of its table, and
//! the total length of each child array (an aggregate `$sum` of `$size`) against the rows of
//! the child table. Nothing is compared document by document, so nothing is listed.
//!
//! Dead letters: a document refused on insert has no row, so the open dead letters of the
//! namespace (when the state table marks letters resolved) are counted as `dead_letter` and
//! taken off the missing rows: `missing = documents - rows - dead_letter`, at least 0.
//!
//! Live: the count's cluster time is known, so with a running `sync` the rows are counted once
//! the checkpoint passed it; counts that still differ are counted again (both sides) until
//! they agree, stop changing, or the recheck wait is over.

use std::time::{Duration, Instant};

use super::check::Target;
use super::error::VerifyError;
use super::mongo;
use super::recheck::Live;
use super::report::{ChildReport, CollectionReport};
use super::rows::connection;

/// Counts of both sides at one moment.
struct Counts {
    documents: u64,
    elements: Vec<u64>,
    rows: u64,
    child_rows: Vec<u64>,
    dead_letter: u64,
}

impl Counts {
    fn missing(&self) -> u64 {
        self.documents
            .saturating_sub(self.rows)
            .saturating_sub(self.dead_letter)
    }
    fn extra(&self) -> u64 {
        self.rows.saturating_sub(self.documents)
    }
    fn agree(&self) -> bool {
        self.documents == self.rows && self.elements == self.child_rows && self.dead_letter == 0
    }
    fn same_as(&self, other: &Counts) -> bool {
        (
            self.documents,
            &self.elements,
            self.rows,
            &self.child_rows,
            self.dead_letter,
        ) == (
            other.documents,
            &other.elements,
            other.rows,
            &other.child_rows,
            other.dead_letter,
        )
    }
}

/// Pause between two counts of a live system that disagree.
const RECOUNT_PAUSE: Duration = Duration::from_millis(200);

async fn count(target: &Target, live: &Live, deadline: Instant) -> Result<Counts, VerifyError> {
    let (documents, elements, t) = mongo::counts(&target.coll, &target.mapping.children).await?;
    live.caught_up(t, deadline).await?;
    let client = connection(&target.pool).await?;
    let rows = target.parent.count(&client).await?;
    let mut child_rows = Vec::with_capacity(target.children.len());
    for c in &target.children {
        child_rows.push(c.count(&client).await?);
    }
    let dead_letter = target
        .dead_letters
        .open_count(&client, &target.stream, &target.namespace)
        .await?;
    Ok(Counts {
        documents,
        elements,
        rows,
        child_rows,
        dead_letter,
    })
}

pub async fn run(target: &Target, live: &Live) -> Result<CollectionReport, VerifyError> {
    let deadline = live.deadline();
    let mut counts = count(target, live, deadline).await?;
    let mut rechecked = 0;
    // Counts that disagree are counted again while they keep changing: a live stream catches
    // up; counts that stay the same are the answer.
    while !counts.agree() && live.waits() && Instant::now() < deadline {
        rechecked += 1;
        tokio::time::sleep(RECOUNT_PAUSE).await;
        let again = count(target, live, deadline).await?;
        let stable = again.same_as(&counts);
        counts = again;
        if stable {
            break;
        }
    }
    let children = target
        .children
        .iter()
        .zip(counts.elements.iter().zip(&counts.child_rows))
        .map(|(c, (&elements, &rows))| ChildReport {
            table: c.name.clone(),
            elements,
            rows,
            missing: elements.saturating_sub(rows),
            extra: rows.saturating_sub(elements),
            different: 0,
        })
        .collect();
    Ok(CollectionReport {
        namespace: target.namespace.clone(),
        table: target.parent.name.clone(),
        documents: counts.documents,
        rows: counts.rows,
        checked: 0,
        missing: counts.missing(),
        extra: counts.extra(),
        different: 0,
        dead_letter: counts.dead_letter,
        rechecked,
        children,
        differences: Vec::new(),
    })
}
