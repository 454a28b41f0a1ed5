//! Sorting by a sort specification (`{a: 1, "b.c": -1}`) with MongoDB's
//! rules: an array field sorts by its smallest element ascending and its
//! largest descending, and a missing field sorts as null.

use std::cmp::Ordering;

use bson::{Bson, Document};

use super::{collect_from_doc, QueryError};
use crate::bson_order::compare;

/// Sorts documents in place by a sort specification such as `{a: 1, "b.c": -1}`.
/// An array field sorts by its smallest element ascending and its largest
/// descending, and a missing field sorts as null. The sort is stable.
pub fn sort_documents(docs: &mut [Document], sort: &Document) -> Result<(), QueryError> {
    let keys = parse_sort(sort)?;
    if keys.is_empty() {
        return Ok(());
    }
    docs.sort_by(|a, b| compare_by_keys(a, b, &keys));
    Ok(())
}

/// A parsed sort specification: `(path, ascending)` pairs.
pub(crate) fn parse_sort(sort: &Document) -> Result<Vec<(String, bool)>, QueryError> {
    let mut keys = Vec::with_capacity(sort.len());
    for (path, dir) in sort {
        let asc = match crate::bson_order::number_as_f64(dir) {
            Some(1.0) => true,
            Some(-1.0) => false,
            _ => match dir {
                // {$meta: "textScore"} etc.: no text search here, keep order.
                Bson::Document(d) if d.contains_key("$meta") => continue,
                _ => {
                    return Err(QueryError::new(
                        15974,
                        "Location15974",
                        format!(
                            "Illegal key in $sort specification: {path}: {dir}; \
                             $sort key ordering must be 1 (for ascending) or -1 (for descending)"
                        ),
                    ))
                }
            },
        };
        if path.is_empty() {
            return Err(QueryError::bad_value(
                "FieldPath cannot be constructed with empty string",
            ));
        }
        keys.push((path.clone(), asc));
    }
    Ok(keys)
}

pub(crate) fn compare_by_keys(a: &Document, b: &Document, keys: &[(String, bool)]) -> Ordering {
    for (path, asc) in keys {
        let ka = sort_key(a, path, *asc);
        let kb = sort_key(b, path, *asc);
        let ord = compare(&ka, &kb);
        let ord = if *asc { ord } else { ord.reverse() };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

fn sort_key(doc: &Document, path: &str, asc: bool) -> Bson {
    let parts: Vec<&str> = path.split('.').collect();
    let mut values = Vec::new();
    collect_from_doc(doc, &parts, &mut values);
    let mut flat: Vec<&Bson> = Vec::new();
    for v in values.iter().flatten() {
        match v {
            Bson::Array(items) if !items.is_empty() => flat.extend(items.iter()),
            other => flat.push(other),
        }
    }
    let best = if asc {
        flat.into_iter().min_by(|x, y| compare(x, y))
    } else {
        flat.into_iter().max_by(|x, y| compare(x, y))
    };
    match best {
        Some(Bson::Array(_)) | None => Bson::Null,
        Some(v) => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn sorting() {
        let mut docs = vec![
            doc! {"_id": 1, "a": 3, "b": "x"},
            doc! {"_id": 2, "a": [5, 0], "b": "y"},
            doc! {"_id": 3, "b": "z"},
            doc! {"_id": 4, "a": 3, "b": "w"},
        ];
        sort_documents(&mut docs, &doc! {"a": 1, "b": -1}).unwrap();
        let ids: Vec<i32> = docs.iter().map(|d| d.get_i32("_id").unwrap()).collect();
        assert_eq!(ids, vec![3, 2, 1, 4]);
        sort_documents(&mut docs, &doc! {"a": -1}).unwrap();
        let ids: Vec<i32> = docs.iter().map(|d| d.get_i32("_id").unwrap()).collect();
        assert_eq!(ids, vec![2, 1, 4, 3]);
        assert_eq!(
            sort_documents(&mut docs, &doc! {"a": 2}).unwrap_err().code,
            15974
        );
    }

    #[test]
    fn missing_and_null_sort_first_and_types_follow_brackets() {
        let mut docs = vec![
            doc! {"_id": 1, "v": "s"},
            doc! {"_id": 2},
            doc! {"_id": 3, "v": 2.5},
            doc! {"_id": 4, "v": null},
            doc! {"_id": 5, "v": {"x": 1}},
            doc! {"_id": 6, "v": 1i64},
        ];
        sort_documents(&mut docs, &doc! {"v": 1, "_id": 1}).unwrap();
        let ids: Vec<i32> = docs.iter().map(|d| d.get_i32("_id").unwrap()).collect();
        assert_eq!(ids, vec![2, 4, 6, 3, 1, 5]);
        sort_documents(&mut docs, &doc! {"v": -1, "_id": 1}).unwrap();
        let ids: Vec<i32> = docs.iter().map(|d| d.get_i32("_id").unwrap()).collect();
        assert_eq!(ids, vec![5, 1, 3, 6, 2, 4]);
    }

    proptest::proptest! {
        #[test]
        fn sorted_output_is_ordered(values in proptest::collection::vec(proptest::prelude::any::<i64>(), 0..20)) {
            let mut docs: Vec<Document> = values.iter().map(|v| doc! {"v": *v}).collect();
            sort_documents(&mut docs, &doc! {"v": -1}).unwrap();
            let got: Vec<i64> = docs.iter().map(|d| d.get_i64("v").unwrap()).collect();
            let mut want = values.clone();
            want.sort_by(|a, b| b.cmp(a));
            proptest::prop_assert_eq!(got, want);
        }
    }
}
