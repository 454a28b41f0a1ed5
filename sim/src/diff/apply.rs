//! Applying a `$v: 2` diff to a document, as a secondary applies an
//! update oplog entry: document sections `d`/`u`/`i`/`s<field>` and array
//! sections `l`/`u<idx>`/`s<idx>` (arrays padded with null as needed).

use bson::{Bson, Document};

use crate::query::QueryError;

/// Applies a `$v: 2` diff (the `diff` value, not the `{$v, diff}` wrapper).
pub fn apply_v2_diff(doc: &Document, diff: &Document) -> Result<Document, QueryError> {
    apply_doc(doc, diff)
}

fn bad_diff(msg: impl Into<String>) -> QueryError {
    QueryError::new(
        4770500,
        "Location4770500",
        format!("Invalid $v:2 diff: {}", msg.into()),
    )
}

fn section<'a>(diff: &'a Document, name: &str) -> Result<Option<&'a Document>, QueryError> {
    match diff.get(name) {
        None => Ok(None),
        Some(Bson::Document(d)) => Ok(Some(d)),
        Some(_) => Err(bad_diff(format!("section '{name}' must be an object"))),
    }
}

fn apply_doc(pre: &Document, diff: &Document) -> Result<Document, QueryError> {
    let deletes = section(diff, "d")?;
    let updates = section(diff, "u")?;
    let inserts = section(diff, "i")?;
    let mut subs: Vec<(&str, &Document)> = Vec::new();
    for (k, v) in diff {
        match k.as_str() {
            "d" | "u" | "i" | "b" => {}
            _ => match (k.strip_prefix('s'), v) {
                (Some(name), Bson::Document(sub)) => subs.push((name, sub)),
                _ => return Err(bad_diff(format!("unknown section '{k}'"))),
            },
        }
    }
    let mut out = Document::new();
    for (k, v) in pre {
        if deletes.is_some_and(|d| d.contains_key(k)) || inserts.is_some_and(|i| i.contains_key(k))
        {
            continue;
        }
        if let Some(new) = updates.and_then(|u| u.get(k)) {
            out.insert(k.clone(), new.clone());
        } else if let Some((_, sub)) = subs.iter().find(|(n, _)| n == k) {
            out.insert(k.clone(), apply_sub(v, sub)?);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(u) = updates {
        for (k, v) in u {
            if !pre.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(i) = inserts {
        for (k, v) in i {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(out)
}

fn apply_sub(value: &Bson, sub: &Document) -> Result<Bson, QueryError> {
    let is_array_diff = matches!(sub.get("a"), Some(Bson::Boolean(true)));
    match (value, is_array_diff) {
        (Bson::Document(d), false) => Ok(Bson::Document(apply_doc(d, sub)?)),
        (Bson::Array(a), true) => Ok(Bson::Array(apply_arr(a, sub)?)),
        _ => Err(bad_diff(
            "sub-diff does not match the type of the field it applies to",
        )),
    }
}

fn apply_arr(pre: &[Bson], diff: &Document) -> Result<Vec<Bson>, QueryError> {
    let mut out = pre.to_vec();
    if let Some(l) = diff.get("l") {
        let n = crate::bson_order::number_as_i64(l)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| bad_diff("'l' must be a non-negative integer"))?;
        out.resize(n, Bson::Null);
    }
    for (k, v) in diff {
        if k == "a" || k == "l" {
            continue;
        }
        let (kind, idx) = k.split_at(1);
        let idx: usize = idx
            .parse()
            .map_err(|_| bad_diff(format!("bad array diff field '{k}'")))?;
        if out.len() <= idx {
            out.resize(idx + 1, Bson::Null);
        }
        match (kind, v) {
            ("u", v) => out[idx] = v.clone(),
            ("s", Bson::Document(sub)) => out[idx] = apply_sub(&out[idx], sub)?,
            _ => return Err(bad_diff(format!("bad array diff field '{k}'"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn applying_malformed_diffs_fails() {
        let pre = doc! {"_id": 1, "a": 1};
        assert!(apply_v2_diff(&pre, &doc! {"u": 5}).is_err());
        assert!(apply_v2_diff(&pre, &doc! {"sa": {"a": true, "u0": 1}}).is_err());
        assert!(apply_v2_diff(&pre, &doc! {"zz": {}}).is_err());
    }
}
