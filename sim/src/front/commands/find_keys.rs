//! `find`'s index options: `min`/`max` (index bounds, which need a `hint` as in mongod 4.2+),
//! `returnKey` (the index keys of the plan's index instead of the documents, `{}` for a
//! collection scan) and `showRecordId` (`$recordId`, the record's place in `$natural` order).
//! The plan's index is the hinted one, else the one whose key is the sort (either direction),
//! else the only index on a filtered field; when several could serve, which one mongod's
//! planner would pick is not simulated, and `returnKey` is refused with a stderr line instead
//! of guessing.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::Req;
use crate::bson_order::compare;
use crate::error::CommandError;
use crate::node::store::Collection;
use crate::query::get_path;

/// The options as the command gives them.
#[derive(Debug, Default)]
pub struct KeyOptions {
    pub min: Option<Document>,
    pub max: Option<Document>,
    pub return_key: bool,
    pub show_record_id: bool,
}

impl KeyOptions {
    pub fn parse(req: &Req<'_>) -> Result<Self, CommandError> {
        let bound = |name: &str| -> Result<Option<Document>, CommandError> {
            Ok(req.doc_arg(name)?.filter(|d| !d.is_empty()).cloned())
        };
        Ok(KeyOptions {
            min: bound("min")?,
            max: bound("max")?,
            return_key: super::truthy(req.cmd.get("returnKey")),
            show_record_id: super::truthy(req.cmd.get("showRecordId")),
        })
    }

    /// Whether the results need the document-at-a-time path (not the paged scan).
    pub fn any(&self) -> bool {
        self.min.is_some() || self.max.is_some() || self.return_key || self.show_record_id
    }

    /// Checks the bounds against the hinted index's key pattern (`None`: no hint, or a
    /// `$natural` one) before the query runs, with mongod's planner errors.
    pub fn check_bounds(&self, hinted: Option<&Document>) -> Result<(), CommandError> {
        if self.min.is_none() && self.max.is_none() {
            return Ok(());
        }
        let Some(key) = hinted else {
            return Err(CommandError::new(
                51173,
                "Location51173",
                "When using min()/max() a hint of which index to use must be provided",
            ));
        };
        let compatible = |b: &Document| b.keys().eq(key.keys());
        if [&self.min, &self.max]
            .into_iter()
            .flatten()
            .any(|b| !compatible(b))
        {
            return Err(CommandError::new(
                51174,
                "Location51174",
                "The index chosen is not compatible with min/max",
            ));
        }
        Ok(())
    }

    /// Keeps the documents whose index key is within `[min, max)` in the index's order.
    pub fn apply_bounds(&self, docs: &mut Vec<Document>, key: Option<&Document>) {
        let Some(key) = key else { return };
        if self.min.is_none() && self.max.is_none() {
            return;
        }
        docs.retain(|d| {
            let above_min = self
                .min
                .as_ref()
                .is_none_or(|m| cmp_to_bound(d, key, m) != Ordering::Less);
            let below_max = self
                .max
                .as_ref()
                .is_none_or(|m| cmp_to_bound(d, key, m) == Ordering::Less);
            above_min && below_max
        });
    }
}

/// The document's key in `key`'s order against a bound with the same fields.
fn cmp_to_bound(doc: &Document, key: &Document, bound: &Document) -> Ordering {
    for ((field, dir), b) in key.iter().zip(bound.values()) {
        let v = get_path(doc, field).unwrap_or(&Bson::Null);
        let mut o = compare(v, b);
        if is_descending(dir) {
            o = o.reverse();
        }
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn is_descending(dir: &Bson) -> bool {
    crate::bson_order::number_as_i64(dir).is_some_and(|n| n < 0)
}

/// The key pattern of the index the plan scans, `None` for a collection scan.
pub fn plan_index(
    c: &Collection,
    hinted: Option<&Document>,
    sort: Option<&Document>,
    filter: &Document,
) -> Result<Option<Document>, CommandError> {
    if let Some(h) = hinted {
        return Ok(Some(h.clone()));
    }
    let keys = || {
        c.indexes
            .iter()
            .filter_map(|ix| ix.get_document("key").ok())
    };
    if let Some(sort) = sort.filter(|s| !s.is_empty()) {
        let reversed = |k: &Document| {
            k.len() == sort.len()
                && k.iter()
                    .zip(sort.iter())
                    .all(|((a, da), (b, db))| a == b && is_descending(da) != is_descending(db))
        };
        if let Some(k) = keys().find(|k| *k == sort || reversed(k)) {
            return Ok(Some(k.clone()));
        }
    }
    let relevant: Vec<&Document> = keys()
        .filter(|k| k.keys().next().is_some_and(|f| filter.contains_key(f)))
        .collect();
    match relevant.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some((*one).clone())),
        _ => {
            let e = CommandError::bad_value(
                "returnKey with several indexes that could serve the query: mongo-sim does not \
                 simulate the planner's choice; hint the index",
            );
            tracing::warn!(code = e.code, "refused: {}", e.message);
            Err(e)
        }
    }
}

/// What `returnKey` returns for one document: its key in the plan's index, `{}` without one.
pub fn index_key(doc: &Document, key: Option<&Document>) -> Document {
    let mut out = Document::new();
    for field in key.into_iter().flat_map(Document::keys) {
        out.insert(field, get_path(doc, field).cloned().unwrap_or(Bson::Null));
    }
    out
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn bounds_follow_the_index_order() {
        let opts = KeyOptions {
            min: Some(doc! {"j": 3}),
            max: Some(doc! {"j": 6}),
            ..Default::default()
        };
        let mut docs: Vec<Document> = (0..10).map(|j| doc! {"j": j}).collect();
        opts.apply_bounds(&mut docs, Some(&doc! {"j": 1}));
        assert_eq!(docs, [doc! {"j": 3}, doc! {"j": 4}, doc! {"j": 5}]);
        // A descending index: min is the high end.
        let opts = KeyOptions {
            min: Some(doc! {"j": 6}),
            ..Default::default()
        };
        let mut docs: Vec<Document> = (0..10).map(|j| doc! {"j": j}).collect();
        opts.apply_bounds(&mut docs, Some(&doc! {"j": -1}));
        assert_eq!(docs.len(), 7);
        assert_eq!(
            opts.check_bounds(Some(&doc! {"k": 1})).unwrap_err().code,
            51174
        );
        assert_eq!(opts.check_bounds(None).unwrap_err().code, 51173);
    }
}
