//! The `$out` and `$merge` stages: the last stage of an aggregate that writes its results to a
//! collection instead of returning them. They write through the ordinary write path, so the
//! target gets the oplog entries (and change events) of those writes: `$out` empties the
//! target and inserts the results (mongod instead fills a temporary collection and renames it
//! over the target, so its entries differ), `$merge` updates or inserts each result by `_id`.
//! What mongo-sim does not do is refused: `$merge` on fields other than `_id`, a pipeline for
//! `whenMatched`, either stage inside a transaction (263 as on mongod).

use bson::{Bson, Document};

use super::Req;
use crate::bson_order::OrderedBson;
use crate::error::CommandError;
use crate::node::writes::{self, UpdateStatement, WriteError};
use crate::update::{ArrayFilters, UpdateSpec};

pub struct Output {
    db: String,
    coll: String,
    /// `$merge` only: `whenMatched` and `whenNotMatched`.
    merge: Option<(String, String)>,
}

fn stage_error(code: i32, message: String) -> CommandError {
    CommandError::new(code, &format!("Location{code}"), message)
}

/// `{db, coll}` or a collection name in `default_db`.
fn target(spec: &Bson, default_db: &str, stage: &str) -> Result<(String, String), CommandError> {
    match spec {
        Bson::String(coll) => Ok((default_db.to_string(), coll.clone())),
        Bson::Document(d) => match (d.get_str("db"), d.get_str("coll")) {
            (Ok(db), Ok(coll)) => Ok((db.to_string(), coll.to_string())),
            _ => Err(CommandError::failed_to_parse(format!(
                "{stage} needs a string or an object {{db, coll}}, found {spec}"
            ))),
        },
        other => Err(stage_error(
            16990,
            format!("{stage} only supports a string or object argument, but found {other}"),
        )),
    }
}

/// Takes a final `$out` or `$merge` off `stages`; either one anywhere else is 40601.
pub fn take(stages: &mut Vec<Document>, req: &Req<'_>) -> Result<Option<Output>, CommandError> {
    let is_output = |s: &Document| s.contains_key("$out") || s.contains_key("$merge");
    let n = stages.len();
    if let Some(s) = stages[..n.saturating_sub(1)].iter().find(|s| is_output(s)) {
        let name = s.keys().next().cloned().unwrap_or_default();
        return Err(stage_error(
            40601,
            format!("{name} can only be the final stage in the pipeline"),
        ));
    }
    let Some(last) = stages.last().filter(|s| is_output(s)) else {
        return Ok(None);
    };
    let (stage, spec) = match (last.get("$out"), last.get("$merge")) {
        (Some(spec), _) => ("$out", spec.clone()),
        (_, Some(spec)) => ("$merge", spec.clone()),
        _ => return Ok(None),
    };
    if req.txn.is_some() {
        return Err(CommandError::new(
            263,
            "OperationNotSupportedInTransaction",
            format!("{stage} cannot be used in a transaction"),
        ));
    }
    let level = req
        .cmd
        .get_document("readConcern")
        .ok()
        .and_then(|rc| rc.get_str("level").ok());
    if level == Some("linearizable") {
        return Err(CommandError::new(
            72,
            "InvalidOptions",
            format!("{stage} cannot be used with a 'linearizable' read concern level"),
        ));
    }
    let out = if stage == "$out" {
        let (db, coll) = target(&spec, &req.db, stage)?;
        Output {
            db,
            coll,
            merge: None,
        }
    } else {
        let (into, opts) = match &spec {
            Bson::Document(d) => (d.get("into").cloned().unwrap_or(Bson::Null), d.clone()),
            other => (other.clone(), Document::new()),
        };
        let (db, coll) = target(&into, &req.db, stage)?;
        for key in opts.keys() {
            if !matches!(
                key.as_str(),
                "into" | "on" | "whenMatched" | "whenNotMatched"
            ) {
                return Err(CommandError::new(
                    40415,
                    "Location40415",
                    format!("BSON field '$merge.{key}' is an unknown field."),
                ));
            }
        }
        let on_id = match opts.get("on") {
            None => true,
            Some(Bson::String(f)) => f == "_id",
            Some(Bson::Array(fs)) => fs.len() == 1 && fs[0].as_str() == Some("_id"),
            Some(_) => false,
        };
        if !on_id {
            return Err(CommandError::bad_value(
                "$merge 'on' fields other than _id are not supported by mongo-sim",
            ));
        }
        let choice = |key: &str, default: &str, allowed: &[&str]| match opts.get(key) {
            None => Ok(default.to_string()),
            Some(Bson::String(s)) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            Some(other) => Err(CommandError::bad_value(format!(
                "$merge {key}: {other} is not supported by mongo-sim"
            ))),
        };
        let matched = choice(
            "whenMatched",
            "merge",
            &["merge", "replace", "keepExisting", "fail"],
        )?;
        let not_matched = choice("whenNotMatched", "insert", &["insert", "discard", "fail"])?;
        Output {
            db,
            coll,
            merge: Some((matched, not_matched)),
        }
    };
    stages.pop();
    Ok(Some(out))
}

/// Writes the pipeline's results to the stage's target.
pub fn write(req: &Req<'_>, out: &Output, docs: Vec<Document>) -> Result<(), CommandError> {
    let (db, coll) = (out.db.as_str(), out.coll.as_str());
    let result = req.with_target(|t| -> Result<(), WriteError> {
        let Some((matched, not_matched)) = &out.merge else {
            writes::delete(t, db, coll, &Document::new(), false, None)?;
            for d in docs {
                writes::insert_one(t, db, coll, d)?;
            }
            return Ok(());
        };
        for d in docs {
            let id = d.get("_id").cloned().unwrap_or(Bson::Null);
            let existing = t
                .read(db, coll)
                .and_then(|c| c.docs.get(&OrderedBson(id.clone())))
                .map(|s| s.doc().into_owned());
            let Some(existing) = existing else {
                match not_matched.as_str() {
                    "insert" => writes::insert_one(t, db, coll, d)?,
                    "discard" => {}
                    _ => {
                        return Err(stage_error(
                            13113,
                            "$merge could not find a matching document in the target \
                             collection for at least one document in the source collection"
                                .into(),
                        )
                        .into())
                    }
                }
                continue;
            };
            let replacement = match matched.as_str() {
                "keepExisting" => continue,
                "fail" => {
                    // Like any DuplicateKey reply, it names the index key and the value.
                    return Err(WriteError {
                        code: 11000,
                        code_name: "DuplicateKey".into(),
                        errmsg: format!(
                            "$merge failed due to a DuplicateKey error :: caused by :: \
                             E11000 duplicate key error collection: {db}.{coll} index: _id_ \
                             dup key: {{ _id: {id} }}"
                        ),
                        details: Some(Box::new(bson::doc! {
                            "keyPattern": {"_id": 1},
                            "keyValue": {"_id": id.clone()},
                        })),
                    });
                }
                "replace" => d,
                _ => {
                    let mut merged = existing;
                    for (k, v) in d {
                        merged.insert(k, v);
                    }
                    merged
                }
            };
            let filter = bson::doc! {"_id": id};
            writes::update(
                t,
                db,
                coll,
                &UpdateStatement {
                    filter: &filter,
                    spec: &UpdateSpec::Replacement(replacement),
                    multi: false,
                    upsert: false,
                    sort: None,
                    array_filters: &ArrayFilters::default(),
                },
            )?;
        }
        Ok(())
    })?;
    result.map_err(|e| e.to_command_error())
}
