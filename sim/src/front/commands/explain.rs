//! `explain` of find, aggregate, count, distinct, update, delete and findAndModify: a
//! plausible `queryPlanner` (a collection scan, or EOF for a missing collection) and, at the
//! `executionStats` and `allPlansExecution` verbosities, the counts of running the read part
//! (how many documents match); writes are not performed, as on mongod. Plans, indexes and
//! timings are not simulated; explain of any other command is refused.

use bson::{doc, Bson, Document};

use super::{CmdResult, Req};
use crate::error::CommandError;
use crate::node::writes::matching_docs;
use crate::query::Filter;

/// The filter the explained command reads with.
fn filter_of(name: &str, inner: &Document) -> Document {
    let get = |k: &str| inner.get_document(k).cloned().unwrap_or_default();
    match name {
        "find" => get("filter"),
        "count" | "distinct" | "findAndModify" | "findandmodify" => get("query"),
        "aggregate" => inner
            .get_array("pipeline")
            .ok()
            .and_then(|p| p.first())
            .and_then(Bson::as_document)
            .and_then(|s| s.get_document("$match").ok())
            .cloned()
            .unwrap_or_default(),
        "update" | "delete" => {
            let list = if name == "update" {
                "updates"
            } else {
                "deletes"
            };
            inner
                .get_array(list)
                .ok()
                .and_then(|l| l.first())
                .and_then(Bson::as_document)
                .and_then(|s| s.get_document("q").ok())
                .cloned()
                .unwrap_or_default()
        }
        _ => Document::new(),
    }
}

pub fn explain(req: &Req<'_>) -> CmdResult {
    let inner = req.cmd.get_document("explain").map_err(|_| {
        CommandError::type_mismatch(
            "BSON field 'explain.explain' is the wrong type, expected type 'object'",
        )
    })?;
    let verbosity = req.cmd.get_str("verbosity").unwrap_or("allPlansExecution");
    if !matches!(
        verbosity,
        "queryPlanner" | "executionStats" | "allPlansExecution"
    ) {
        return Err(CommandError::bad_value(format!(
            "verbosity string must be one of {{'queryPlanner', 'executionStats', \
             'allPlansExecution'}}, got '{verbosity}'"
        )));
    }
    let name = inner.keys().next().cloned().unwrap_or_default();
    if !matches!(
        name.as_str(),
        "find"
            | "aggregate"
            | "count"
            | "distinct"
            | "update"
            | "delete"
            | "findAndModify"
            | "findandmodify"
    ) {
        return Err(CommandError::new(
            59,
            "CommandNotFound",
            format!("explain of '{name}' is not supported by mongo-sim"),
        ));
    }
    let coll = match inner.get(&name) {
        Some(Bson::String(c)) => c.clone(),
        _ => String::new(),
    };
    let ns = format!("{}.{coll}", req.db);
    let filter = filter_of(&name, inner);
    let parsed = Filter::parse(&filter)?;
    let (exists, examined, returned) = {
        let st = req.shared.state();
        // A hint naming no index fails the plan, explained or not.
        let natural = inner
            .get_document("hint")
            .is_ok_and(|h| h.contains_key("$natural"));
        if let Some(hint) = inner.get("hint").filter(|_| name == "find" && !natural) {
            super::read::hinted_index(st.catalog.get(&req.db, &coll), hint, &ns)?;
        }
        match st.catalog.get(&req.db, &coll) {
            Some(c) => (true, c.docs.len(), matching_docs(c, &parsed).len()),
            None => (false, 0, 0),
        }
    };
    let stage = if exists { "COLLSCAN" } else { "EOF" };
    let mut winning = doc! {"stage": stage};
    if exists {
        winning.insert("filter", filter.clone());
        winning.insert("direction", "forward");
    }
    let mut command = inner.clone();
    command.insert("$db", req.db.clone());
    let mut reply = doc! {
        "explainVersion": "1",
        "queryPlanner": {
            "namespace": ns,
            "indexFilterSet": false,
            "parsedQuery": filter,
            "maxIndexedOrSolutionsReached": false,
            "maxIndexedAndSolutionsReached": false,
            "maxScansToExplodeReached": false,
            "winningPlan": winning,
            "rejectedPlans": [],
        },
    };
    if verbosity != "queryPlanner" {
        let n = returned as i64;
        let mut stats = doc! {
            "executionSuccess": true,
            "nReturned": n,
            "executionTimeMillis": 0i64,
            "totalKeysExamined": 0i64,
            "totalDocsExamined": examined as i64,
            "executionStages": {
                "stage": stage,
                "nReturned": n,
                "executionTimeMillisEstimate": 0i64,
                "works": examined as i64 + 1,
                "advanced": n,
                "isEOF": 1,
                "docsExamined": examined as i64,
            },
        };
        if verbosity == "allPlansExecution" {
            stats.insert("allPlansExecution", Vec::<Bson>::new());
        }
        reply.insert("executionStats", stats);
    }
    reply.insert("command", command);
    reply.insert(
        "serverInfo",
        doc! {"host": "mongo-sim", "port": 27017, "version": "7.0.0", "gitVersion": "mongo-sim"},
    );
    Ok(reply)
}
