//! A change event's `updateDescription` from a `$v: 2` diff, following the
//! server's diff parser: `u` and `i` entries (and array `u<idx>`) become
//! `updatedFields`, `d` entries `removedFields`, an array `l` a
//! `truncatedArrays` entry, and paths with numeric-looking or dotted field
//! names are spelled out in `disambiguatedPaths`.

use bson::{Bson, Document};

/// A path component while walking a diff: a field name or an array index.
#[derive(Clone)]
enum Comp {
    Field(String),
    Index(usize),
}

struct DescBuilder {
    updated: Document,
    removed: Vec<Bson>,
    truncated: Vec<Bson>,
    disambiguated: Document,
    path: Vec<Comp>,
    /// Per component: whether the path is ambiguous up to and including it.
    ambiguous: Vec<bool>,
}

impl DescBuilder {
    fn push(&mut self, comp: Comp) {
        let prior = self.ambiguous.last().copied().unwrap_or(false);
        let this = match &comp {
            Comp::Index(_) => false,
            // A numeric field name is ambiguous unless it is the first component.
            Comp::Field(f) => (!self.path.is_empty() && is_numeric_strict(f)) || f.contains('.'),
        };
        self.path.push(comp);
        self.ambiguous.push(prior || this);
    }

    fn pop(&mut self) {
        self.path.pop();
        self.ambiguous.pop();
    }

    fn dotted(&self) -> String {
        self.path
            .iter()
            .map(|c| match c {
                Comp::Field(f) => f.clone(),
                Comp::Index(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn note_ambiguity(&mut self) {
        if self.ambiguous.last().copied().unwrap_or(false) {
            let parts: Vec<Bson> = self
                .path
                .iter()
                .map(|c| match c {
                    Comp::Field(f) => Bson::String(f.clone()),
                    Comp::Index(i) => Bson::Int32(i32::try_from(*i).unwrap_or(i32::MAX)),
                })
                .collect();
            let dotted = self.dotted();
            self.disambiguated.insert(dotted, parts);
        }
    }

    fn updated_field(&mut self, comp: Comp, value: &Bson) {
        self.push(comp);
        self.updated.insert(self.dotted(), value.clone());
        self.note_ambiguity();
        self.pop();
    }

    fn removed_field(&mut self, name: &str) {
        self.push(Comp::Field(name.to_string()));
        self.removed.push(Bson::String(self.dotted()));
        self.note_ambiguity();
        self.pop();
    }
}

fn is_numeric_strict(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s.len() == 1 || !s.starts_with('0'))
}

/// Builds a change event's `updateDescription` from a `$v: 2` diff:
/// `{updatedFields, removedFields, truncatedArrays}`, plus
/// `disambiguatedPaths` (possibly empty) when `show_expanded_events` is set,
/// as servers before 8.2 emit it.
pub fn update_description(diff: &Document, show_expanded_events: bool) -> Document {
    let mut b = DescBuilder {
        updated: Document::new(),
        removed: Vec::new(),
        truncated: Vec::new(),
        disambiguated: Document::new(),
        path: Vec::new(),
        ambiguous: Vec::new(),
    };
    walk_doc(diff, &mut b);
    let mut out = Document::new();
    out.insert("updatedFields", b.updated);
    out.insert("removedFields", b.removed);
    out.insert("truncatedArrays", b.truncated);
    if show_expanded_events {
        out.insert("disambiguatedPaths", b.disambiguated);
    }
    out
}

fn walk_doc(diff: &Document, b: &mut DescBuilder) {
    for name in ["u", "i"] {
        if let Some(Bson::Document(sec)) = diff.get(name) {
            for (k, v) in sec {
                b.updated_field(Comp::Field(k.clone()), v);
            }
        }
    }
    if let Some(Bson::Document(sec)) = diff.get("d") {
        for k in sec.keys() {
            b.removed_field(k);
        }
    }
    for (k, v) in diff {
        if matches!(k.as_str(), "d" | "u" | "i" | "b") {
            continue;
        }
        if let (Some(name), Bson::Document(sub)) = (k.strip_prefix('s'), v) {
            b.push(Comp::Field(name.to_string()));
            walk_sub(sub, b);
            b.pop();
        }
    }
}

fn walk_sub(sub: &Document, b: &mut DescBuilder) {
    if !matches!(sub.get("a"), Some(Bson::Boolean(true))) {
        walk_doc(sub, b);
        return;
    }
    if let Some(l) = sub.get("l") {
        let new_size = crate::bson_order::number_as_i64(l).unwrap_or(0);
        let mut entry = Document::new();
        entry.insert("field", b.dotted());
        entry.insert(
            "newSize",
            Bson::Int32(i32::try_from(new_size).unwrap_or(i32::MAX)),
        );
        b.truncated.push(Bson::Document(entry));
        b.note_ambiguity();
    }
    for (k, v) in sub {
        if k == "a" || k == "l" {
            continue;
        }
        let (kind, idx) = k.split_at(1);
        let Ok(idx) = idx.parse::<usize>() else {
            continue;
        };
        match (kind, v) {
            ("u", v) => b.updated_field(Comp::Index(idx), v),
            ("s", Bson::Document(inner)) => {
                b.push(Comp::Index(idx));
                walk_sub(inner, b);
                b.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn update_descriptions() {
        let diff = doc! {"u": {"a": 5}, "i": {"n": true}, "sb": {"d": {"d": false}, "u": {"c": 9}}, "stags": {"a": true, "u1": "y"}};
        let desc = update_description(&diff, false);
        assert_eq!(
            desc,
            doc! {"updatedFields": {"a": 5, "n": true, "b.c": 9, "tags.1": "y"}, "removedFields": ["b.d"], "truncatedArrays": []}
        );
        let desc = update_description(&doc! {"sarray": {"a": true, "l": 2}}, false);
        assert_eq!(
            desc.get_array("truncatedArrays").unwrap(),
            &vec![Bson::Document(doc! {"field": "array", "newSize": 2})]
        );
        assert_eq!(desc.get_document("updatedFields").unwrap(), &doc! {});
        assert!(!desc.contains_key("disambiguatedPaths"));
        let desc = update_description(&doc! {"u": {"x": 1}}, true);
        assert_eq!(desc.get_document("disambiguatedPaths").unwrap(), &doc! {});
    }

    #[test]
    fn disambiguated_paths_match_the_spec_tests() {
        // {$set: {"a.1": 2}} on {a: {"1": 1}}.
        let d = update_description(&doc! {"sa": {"u": {"1": 2}}}, true);
        assert_eq!(
            d.get_document("disambiguatedPaths").unwrap(),
            &doc! {"a.1": ["a", "1"]}
        );
        // {$set: {"a.0.1": 2}} on {a: [{"1": 1}]}: indexes come back as integers.
        let d = update_description(&doc! {"sa": {"a": true, "s0": {"u": {"1": 2}}}}, true);
        assert_eq!(
            d.get_document("disambiguatedPaths").unwrap(),
            &doc! {"a.0.1": ["a", 0, "1"]}
        );
        // An array index alone is not ambiguous, nor is a numeric first component.
        let d = update_description(&doc! {"sa": {"a": true, "u3": 1}, "u": {"7": 1}}, true);
        assert_eq!(d.get_document("disambiguatedPaths").unwrap(), &doc! {});
        let d = update_description(&doc! {"u": {"a.b": 1}}, true);
        assert_eq!(
            d.get_document("disambiguatedPaths").unwrap(),
            &doc! {"a.b": ["a.b"]}
        );
    }
}
