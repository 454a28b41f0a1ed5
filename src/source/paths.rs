//! What an update changed, as dotted paths: read from a change stream's `updateDescription` and
//! from an oplog entry's update (`$set`/`$unset`, or the 5.0+ `{$v: 2, diff}`).
//!
//! The paths only let the sink skip rewriting child tables whose arrays an update left alone,
//! so every doubt errs towards "changed": an operator or diff field this module does not know
//! makes the whole update unknown (`None`), and a diff it cannot follow further is reported at
//! the deepest path it is sure of.

use bson::{RawBsonRef, RawDocument};
use mongodb::change_stream::event::UpdateDescription;

/// The paths of a change stream update event: updated, removed and truncated fields.
pub fn from_update_description(d: &UpdateDescription) -> Vec<String> {
    let mut paths: Vec<String> = d.updated_fields.keys().cloned().collect();
    paths.extend(d.removed_fields.iter().cloned());
    paths.extend(d.truncated_arrays.iter().flatten().map(|t| t.field.clone()));
    paths
}

/// The paths of an oplog update's `o`; `None` for a form this module does not know.
pub fn from_oplog_update(o: &RawDocument) -> Option<Vec<String>> {
    let mut paths = Vec::new();
    let mut diff = None;
    for field in o {
        let (name, value) = field.ok()?;
        match name {
            "$v" => {}
            "$set" | "$unset" => {
                for f in value.as_document()? {
                    paths.push(f.ok()?.0.to_owned());
                }
            }
            "diff" => diff = Some(value.as_document()?),
            _ => return None,
        }
    }
    if let Some(diff) = diff {
        diff_paths(diff, "", &mut paths)?;
    }
    Some(paths)
}

/// Walks a `$v: 2` diff under `prefix` (`""` at the top). `u`/`i`/`d` name changed fields,
/// `s<field>` holds a nested diff; an array diff (`a: true`) is reported as its array.
fn diff_paths(diff: &RawDocument, prefix: &str, out: &mut Vec<String>) -> Option<()> {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    for field in diff {
        let (name, value) = field.ok()?;
        match (name, value) {
            ("u" | "i" | "d", RawBsonRef::Document(fields)) => {
                for f in fields {
                    out.push(join(f.ok()?.0));
                }
            }
            (sub, RawBsonRef::Document(nested)) if sub.len() > 1 && sub.starts_with('s') => {
                let path = join(&sub[1..]);
                if nested.get("a").ok()?.is_some() {
                    out.push(path);
                } else {
                    diff_paths(nested, &path, out)?;
                }
            }
            // Anything else (array entries, a length, a form added later): the whole
            // sub-document counts as changed.
            _ if !prefix.is_empty() => out.push(prefix.to_owned()),
            _ => return None,
        }
    }
    Some(())
}

/// True when a change at `path` (dotted) may change what is read at `source` (its segments):
/// one is the other or lies inside it.
pub fn overlaps(path: &str, source: &[String]) -> bool {
    path.is_empty() || path.split('.').zip(source).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn set_and_unset_name_their_paths() {
        let o = rawdoc! {"$v": 1, "$set": {"status": "paid", "a.b": 1}, "$unset": {"note": true}};
        assert_eq!(
            from_oplog_update(&o),
            Some(vec!["status".into(), "a.b".into(), "note".into()])
        );
        assert_eq!(from_oplog_update(&rawdoc! {"$inc": {"n": 1}}), None);
    }

    #[test]
    fn diffs_are_followed_into_sub_documents_and_stop_at_arrays() {
        let o = rawdoc! {"$v": 2, "diff": {
            "u": {"status": "paid"},
            "i": {"new": 1},
            "d": {"old": false},
            "scustomer": {"u": {"email": "x"}},
            "sitems": {"a": true, "u1": {"qty": 2}},
            "sdeep": {"sinner": {"a": true, "l": 0}},
        }};
        assert_eq!(
            from_oplog_update(&o),
            Some(vec![
                "status".into(),
                "new".into(),
                "old".into(),
                "customer.email".into(),
                "items".into(),
                "deep.inner".into(),
            ])
        );
    }

    #[test]
    fn unknown_diff_fields_count_as_changes_of_their_sub_document() {
        let o = rawdoc! {"$v": 2, "diff": {"sa": {"x": 1}}};
        assert_eq!(from_oplog_update(&o), Some(vec!["a".into()]));
        assert_eq!(
            from_oplog_update(&rawdoc! {"$v": 2, "diff": {"x": 1}}),
            None
        );
    }

    #[test]
    fn overlap_is_by_whole_path_segments() {
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert!(overlaps("items", &path("items")));
        assert!(overlaps("items.3.qty", &path("items")));
        assert!(overlaps("order", &path("order.items")));
        assert!(overlaps("", &path("items")));
        assert!(!overlaps("order.total", &path("order.items")));
        assert!(!overlaps("itemsCount", &path("items")));
        assert!(!overlaps("status", &path("items")));
    }
}
