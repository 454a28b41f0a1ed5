//! Mapping reload without a restart (SIGHUP, `tributary reload`). A watcher task waits for a
//! SIGHUP or a `reload` request in `<state_schema>.requests`, loads the mapping files again and
//! validates them (as at start, plus each column's type against its live table); an invalid set
//! is reported, answered and forgotten, and the stream goes on untouched. A valid set is staged
//! and the streaming `run` is told to stop after its current batch (`RunOutcome::Reload`); `sync`
//! then applies it between batches (`apply`): missing tables and columns are created, the
//! collections whose rows change are marked for a copy, and streaming resumes from the
//! committed checkpoint with the new set.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::mapping::model::{CollectionMapping, MappingSet, OnError};
use crate::mapping::{self, MappingError};
use crate::metrics::Metrics;
use crate::sink::postgres::catalog::{self, catalog_type};
use crate::sink::postgres::ddl::{self, qualified, quote_ident};
use crate::sink::postgres::requests;
use crate::sink::SinkError;

/// The `kind` of a reload request in `<state_schema>.requests`.
pub const REQUEST_KIND: &str = "reload";
/// How often the watcher looks for reload requests.
const POLL: Duration = Duration::from_secs(1);
/// The answer of a request whose mappings were applied.
pub const APPLIED: &str = "ok";
/// The start of the answer of a request whose mappings were invalid (the errors follow, one
/// a line).
pub const INVALID: &str = "invalid mappings:";
/// The start of the answer of a request whose valid mappings could not be applied.
pub const FAILED: &str = "failed:";

/// Where and how the stream reloads: the mapping files, the schemas, the stream.
#[derive(Clone)]
pub struct ReloadSource {
    pub mappings_path: PathBuf,
    pub schema: String,
    pub state_schema: String,
    pub stream: String,
}

/// A validated mapping set waiting to be applied, and the requests that asked for it.
pub struct Staged {
    pub mappings: MappingSet,
    pub requests: Vec<i64>,
}

/// The hand-over from the watcher to `sync`: one staged set (a newer one replaces it and
/// inherits its requests), and the signal `run` stops on.
#[derive(Clone, Default)]
pub struct Reloads {
    staged: Arc<Mutex<Option<Staged>>>,
    /// Notified once per staged set; `run` returns `RunOutcome::Reload` on it.
    pub ready: Arc<Notify>,
}

impl Reloads {
    /// The staged set, if any, taken.
    pub fn take(&self) -> Option<Staged> {
        self.staged.lock().ok().and_then(|mut s| s.take())
    }

    fn stage(&self, mappings: MappingSet, request: Option<i64>) {
        if let Ok(mut slot) = self.staged.lock() {
            let mut requests = slot.take().map(|s| s.requests).unwrap_or_default();
            requests.extend(request);
            *slot = Some(Staged { mappings, requests });
        }
        self.ready.notify_one();
    }
}

/// Why a reload was refused: the mapping errors (each naming its file:line), or a failure to
/// read what validation needs.
#[derive(Debug)]
pub enum Refusal {
    Invalid(Vec<MappingError>),
    Failed(String),
}

impl Refusal {
    /// The answer written to the request.
    pub fn outcome(&self) -> String {
        match self {
            Refusal::Invalid(errors) => {
                let mut out = INVALID.to_owned();
                for e in errors {
                    out.push('\n');
                    out.push_str(&e.to_string());
                }
                out
            }
            Refusal::Failed(why) => format!("{FAILED} {why}"),
        }
    }
}

/// Loads the mapping files and validates them as `sync` does at start, plus every column that
/// already exists in Postgres against its live type: a reload never changes a type (the
/// binary COPY would fail on it), so a changed one is refused with the `ALTER` to run first.
pub async fn validate(pool: &Pool, source: &ReloadSource) -> Result<MappingSet, Refusal> {
    let (set, places) =
        mapping::load_placed(&source.mappings_path).map_err(|errors| Refusal::Invalid(errors.0))?;
    let client = pool.get().await.map_err(|e| {
        Refusal::Failed(format!(
            "cannot reach Postgres to check the live tables: {e}"
        ))
    })?;
    let names: Vec<String> = set.tables().into_iter().map(|t| t.name).collect();
    let live = catalog::column_types(&client, &source.schema, &names)
        .await
        .map_err(|e| {
            Refusal::Failed(format!(
                "cannot read the live tables' column types: {}",
                crate::sink::error::describe(&e)
            ))
        })?;
    let mut errors = Vec::new();
    for (i, c) in set.collections.iter().enumerate() {
        for table in c.tables() {
            for (column, ty) in &table.columns {
                let Some(now) = live.get(&(table.name.clone(), column.clone())) else {
                    continue;
                };
                let wanted = catalog_type(ty);
                if *now == wanted {
                    continue;
                }
                let alter = format!(
                    "ALTER TABLE {} ALTER COLUMN {col} TYPE {ty} USING {col}::{ty}",
                    qualified(&source.schema, &table.name),
                    col = quote_ident(column),
                );
                errors.push(places.column_error(
                    &set,
                    i,
                    &table.name,
                    column,
                    format!(
                        "column {} of table {} is {now} in Postgres but the mapping says {ty}; a reload never changes a column's type",
                        quote_ident(column),
                        qualified(&source.schema, &table.name)
                    ),
                    format!("put the type back, or change the live column first with `{alter}` and reload again"),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(Refusal::Invalid(errors))
    }
}

/// The watcher task; it stops when this is dropped.
pub struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `watch`.
pub fn spawn_watch(
    pool: Pool,
    source: ReloadSource,
    sighup: Option<Arc<Notify>>,
    reloads: Reloads,
    metrics: Option<Arc<Metrics>>,
) -> Watcher {
    Watcher(tokio::spawn(watch(pool, source, sighup, reloads, metrics)))
}

/// Runs until its task is aborted: on each SIGHUP (`sighup`) or `reload` request of the
/// stream, validates the mapping files; stages a valid set in `reloads`, reports and answers an
/// invalid one.
async fn watch(
    pool: Pool,
    source: ReloadSource,
    sighup: Option<Arc<Notify>>,
    reloads: Reloads,
    metrics: Option<Arc<Metrics>>,
) {
    let signal = || async {
        match &sighup {
            Some(n) => n.notified().await,
            None => std::future::pending::<()>().await,
        }
    };
    loop {
        let request = tokio::select! {
            () = signal() => {
                tracing::info!("SIGHUP received: reloading the mappings");
                None
            }
            () = tokio::time::sleep(POLL) => match take_request(&pool, &source).await {
                Some(id) => {
                    tracing::info!(request = id, "`tributary reload` asked: reloading the mappings");
                    Some(id)
                }
                None => continue,
            },
        };
        match validate(&pool, &source).await {
            Ok(set) => reloads.stage(set, request),
            Err(refusal) => {
                report_refusal(&refusal, metrics.as_deref());
                if let Some(id) = request {
                    answer(&pool, &source.state_schema, id, &refusal.outcome()).await;
                }
            }
        }
    }
}

async fn take_request(pool: &Pool, source: &ReloadSource) -> Option<i64> {
    let client = pool.get().await.ok()?;
    match requests::take_next(
        &**client,
        &source.state_schema,
        &source.stream,
        REQUEST_KIND,
    )
    .await
    {
        Ok(r) => r.map(|r| r.id),
        Err(e) => {
            tracing::debug!(error = %e, "Looking for reload requests failed; trying again.");
            None
        }
    }
}

/// Writes request `id`'s answer; a failure is logged (the command then times out and says so).
pub async fn answer(pool: &Pool, state_schema: &str, id: i64, outcome: &str) {
    let written = match pool.get().await {
        Ok(client) => requests::finish(&**client, state_schema, id, outcome).await,
        Err(e) => Err(SinkError::Pool {
            detail: e.to_string(),
            retryable: true,
        }),
    };
    if let Err(e) = written {
        tracing::warn!(request = id, error = %e, "Could not answer the reload request; `tributary reload` will time out.");
    }
}

/// One ERROR line per problem, then what happens; counted as refused.
pub fn report_refusal(refusal: &Refusal, metrics: Option<&Metrics>) {
    match refusal {
        Refusal::Invalid(errors) => {
            for e in errors {
                tracing::error!("Reload refused: {e}");
            }
            tracing::error!(
                errors = errors.len(),
                "The new mappings are invalid and were not applied; the stream goes on with the running ones."
            );
        }
        Refusal::Failed(why) => tracing::error!(
            "The new mappings were not applied ({why}); the stream goes on with the running ones."
        ),
    }
    if let Some(m) = metrics {
        m.reloads_total.with_label_values(&["refused"]).inc();
    }
}

/// What applying a new set changes, for the log and for the copies.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Collections of the new set whose rows change (new, or mapped differently): copied again.
    pub recopy: Vec<usize>,
}

/// Compares the running set with the new one. A collection is copied again when it is new or
/// when the rows its documents become change (columns, sources, types, children, key,
/// `extra_props`); `on_error` alone changes no stored row.
pub fn changes(old: &MappingSet, new: &MappingSet) -> Changes {
    let old_ns: HashSet<String> = old.collections.iter().map(|c| c.namespace()).collect();
    let new_ns: HashSet<String> = new.collections.iter().map(|c| c.namespace()).collect();
    let mut out = Changes {
        removed: old
            .collections
            .iter()
            .map(|c| c.namespace())
            .filter(|n| !new_ns.contains(n))
            .collect(),
        ..Changes::default()
    };
    for (i, c) in new.collections.iter().enumerate() {
        let ns = c.namespace();
        if !old_ns.contains(&ns) {
            out.added.push(ns);
            out.recopy.push(i);
        } else if let Some(before) = old.collections.iter().find(|o| o.namespace() == ns) {
            if !same_rows(before, c) {
                out.recopy.push(i);
            }
        }
    }
    out
}

fn same_rows(a: &CollectionMapping, b: &CollectionMapping) -> bool {
    let mut b = b.clone();
    b.on_error = OnError::default();
    let mut a = a.clone();
    a.on_error = OnError::default();
    a == b
}

impl Changes {
    /// The reload's one INFO line (and the `ok:` answer of its requests), `created` being what
    /// the DDL added.
    pub fn describe(&self, new: &MappingSet, created: &[String]) -> String {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        let recopy: Vec<String> = self
            .recopy
            .iter()
            .filter_map(|&i| new.collections.get(i).map(CollectionMapping::namespace))
            .collect();
        format!(
            "collections added: {}; collections removed (their tables stay): {}; created: {}; copied again: {}",
            list(&self.added),
            list(&self.removed),
            list(created),
            list(&recopy)
        )
    }
}

/// The statements of `ddl::schema_ddl` for `set` whose objects are missing, named for the log.
pub async fn missing_objects(
    client: &tokio_postgres::Client,
    set: &MappingSet,
    schema: &str,
    state_schema: &str,
) -> Result<Vec<String>, SinkError> {
    let statements = ddl::schema_ddl(set, schema, state_schema);
    let missing = catalog::missing(client, &statements)
        .await
        .map_err(|e| SinkError::postgres("reading the catalog for missing tables", e))?;
    Ok(catalog::summary(&missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn set(yaml: &str) -> MappingSet {
        mapping::load::load_str(yaml, Path::new("m.yml")).unwrap()
    }

    const BASE: &str = r#"
database: shop
collections:
  orders:
    columns:
      - { name: id, source: _id, type: text }
      - { name: qty, source: qty, type: integer }
  customers:
    columns:
      - { name: id, source: _id, type: text }
"#;

    #[test]
    fn a_new_column_recopies_its_collection_only() {
        let old = set(BASE);
        let new = set(&BASE.replace(
            "      - { name: qty, source: qty, type: integer }\n",
            "      - { name: qty, source: qty, type: integer }\n      - { name: note, source: note, type: text }\n",
        ));
        let c = changes(&old, &new);
        assert_eq!(c.recopy, vec![0]);
        assert!(c.added.is_empty() && c.removed.is_empty());
    }

    #[test]
    fn added_and_removed_collections_are_named_and_only_the_added_one_is_copied() {
        let old = set(BASE);
        let new = set(&BASE.replace("  customers:", "  invoices:"));
        let c = changes(&old, &new);
        assert_eq!(c.added, vec!["shop.invoices".to_owned()]);
        assert_eq!(c.removed, vec!["shop.customers".to_owned()]);
        assert_eq!(c.recopy, vec![1]);
    }

    #[test]
    fn on_error_alone_copies_nothing() {
        let old = set(BASE);
        let new = set(&BASE.replace("  orders:\n", "  orders:\n    on_error: \"null\"\n"));
        assert_ne!(old, new);
        assert_eq!(changes(&old, &new), Changes::default());
    }

    #[test]
    fn an_unchanged_set_changes_nothing() {
        assert_eq!(changes(&set(BASE), &set(BASE)), Changes::default());
    }
}
