//! Query filters (`find`, `update`, `delete`, `$match`), sorting and `find`
//! projections, with MongoDB's matching semantics: dotted paths traverse
//! arrays of sub-documents, a predicate on an array field matches when the
//! whole array or any element matches, and negations (`$ne`, `$nin`, `$not`,
//! `$nor`) negate the whole path predicate.
//!
//! Also owns [`QueryError`], the error every pure module returns; the server
//! turns it into `{ok: 0, errmsg, code, codeName}`.
//!
//! Layout: `parse` (filter document → expression tree), this file
//! (matching, paths), `keys` (the `_id` keys a filter can match), `sort`,
//! `projection`, `pcre` (`$regex` with PCRE's look-around and back-references).
//!
//! Nuances of the real server not reproduced: collations, `$where`,
//! `$text`, geo and bitwise operators, `$jsonSchema` (all rejected with
//! BadValue); PCRE constructs neither `regex` nor `fancy-regex` knows (callouts,
//! `\C`, some verbs) are refused with 51091; in sort keys an empty array
//! sorts like null rather than below it; `$elemMatch` in object form matches
//! only sub-document elements.

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::bson_order::{compare, type_bracket};

/// A command-level error with the server's numeric code and code name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub code: i32,
    pub code_name: &'static str,
    pub message: String,
}

impl QueryError {
    pub fn new(code: i32, code_name: &'static str, message: impl Into<String>) -> Self {
        QueryError {
            code,
            code_name,
            message: message.into(),
        }
    }

    /// Code 2, the server's generic "your request is malformed" error.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, "BadValue", message)
    }

    /// Code 14, a value of the wrong BSON type for an operator.
    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(14, "TypeMismatch", message)
    }

    /// Code 9, a malformed command or specification.
    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(9, "FailedToParse", message)
    }
}

/// A parsed query filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Expr,
    id_eq: Option<Bson>,
    id_in: Option<Vec<Bson>>,
    id_keys: IdKeys,
}

#[derive(Debug, Clone)]
enum Expr {
    /// `$expr`: an aggregation expression, true when it evaluates truthy.
    Aggregate(Bson),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Nor(Vec<Expr>),
    Const(bool),
    Path(String, Pred),
}

#[derive(Debug, Clone)]
enum Pred {
    Cmp(CmpOp, Bson),
    In(Vec<InItem>),
    Exists(bool),
    Type(Vec<TypeSel>),
    Size(usize),
    All(Vec<Pred>),
    ElemMatchDoc(Box<Expr>),
    ElemMatchValue(Vec<Pred>),
    Regex(pcre::Pcre),
    Mod(i64, i64),
    /// Negation of the whole path predicate (`$ne`, `$nin`, `$not`).
    Not(Box<Pred>),
    /// Several operators on one path; each is evaluated on its own.
    And(Vec<Pred>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone)]
enum InItem {
    Value(Bson),
    Regex(pcre::Pcre),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TypeSel {
    Code(i32),
    Number,
}

impl Filter {
    pub fn parse(filter: &Document) -> Result<Filter, QueryError> {
        let root = parse_document(filter)?;
        let id_eq = match filter.get("_id") {
            Some(v) if filter.len() == 1 => id_literal(v),
            _ => None,
        };
        let id_in = match filter.get("_id") {
            Some(v) if filter.len() == 1 => id_in_list(v),
            _ => None,
        };
        Ok(Filter {
            root,
            id_eq,
            id_in,
            id_keys: IdKeys::of(filter),
        })
    }

    /// A filter that matches every document.
    pub fn all() -> Filter {
        Filter {
            root: Expr::Const(true),
            id_eq: None,
            id_in: None,
            id_keys: IdKeys::Any,
        }
    }

    pub fn matches(&self, doc: &(impl Fields + ?Sized)) -> bool {
        eval_expr(&self.root, doc)
    }

    /// Whether the filter may look at top-level field `key` (`$expr` may
    /// look at anything).
    pub fn mentions(&self, key: &str) -> bool {
        expr_mentions(&self.root, key)
    }

    /// The `_id` value for filters of the exact shape `{_id: v}` or
    /// `{_id: {$eq: v}}`, so the store can look the document up by key.
    pub fn id_equality(&self) -> Option<&Bson> {
        self.id_eq.as_ref()
    }

    /// The `_id` values for filters of the exact shape `{_id: {$in: [...]}}`
    /// whose members are plain values (no regex, array, document, null), so
    /// the store can look each one up by key instead of scanning.
    pub fn id_in(&self) -> Option<&[Bson]> {
        self.id_in.as_deref()
    }

    /// The `_id` keys this filter can match: what the store visits (see `keys`).
    pub fn id_keys(&self) -> &IdKeys {
        &self.id_keys
    }

    /// The index the positional operator `$` stands for in an update of
    /// `array_path`: the first element of that array satisfying every
    /// top-level condition of this filter on paths inside the array.
    pub(crate) fn positional_index(&self, doc: &Document, array_path: &str) -> Option<usize> {
        let Some(Bson::Array(items)) = get_path(doc, array_path) else {
            return None;
        };
        let mut conds: Vec<(&str, &Pred)> = Vec::new();
        array_conditions(&self.root, array_path, &mut conds);
        if conds.is_empty() {
            return None;
        }
        items.iter().position(|item| {
            conds.iter().all(|(rest, pred)| match (*rest, pred) {
                ("", Pred::ElemMatchDoc(expr)) => {
                    matches!(item, Bson::Document(d) if eval_expr(expr, d))
                }
                ("", Pred::ElemMatchValue(preds)) => {
                    preds.iter().all(|p| eval_pred(p, &[Some(item)]))
                }
                ("", pred) => eval_pred(pred, &[Some(item)]),
                (rest, pred) => {
                    let parts: Vec<&str> = rest.split('.').collect();
                    let mut values = Vec::new();
                    collect_path(item, &parts, &mut values);
                    eval_pred(pred, &values)
                }
            })
        })
    }
}

/// Top-level (possibly `$and`-nested) conditions on `array_path` or below
/// it, with the path remainder inside an element.
fn array_conditions<'a>(expr: &'a Expr, array_path: &str, out: &mut Vec<(&'a str, &'a Pred)>) {
    match expr {
        Expr::And(subs) => {
            for sub in subs {
                array_conditions(sub, array_path, out);
            }
        }
        Expr::Path(path, pred) => {
            if path == array_path {
                out.push(("", pred));
            } else if let Some(rest) = path
                .strip_prefix(array_path)
                .and_then(|r| r.strip_prefix('.'))
            {
                out.push((rest, pred));
            }
        }
        _ => {}
    }
}

fn expr_mentions(expr: &Expr, key: &str) -> bool {
    match expr {
        Expr::And(subs) | Expr::Or(subs) | Expr::Nor(subs) => {
            subs.iter().any(|e| expr_mentions(e, key))
        }
        Expr::Const(_) => false,
        Expr::Aggregate(_) => true,
        Expr::Path(path, _) => path.split('.').next() == Some(key),
    }
}

// ---- evaluation ----

fn eval_expr<F: Fields + ?Sized>(expr: &Expr, doc: &F) -> bool {
    match expr {
        Expr::And(subs) => subs.iter().all(|e| eval_expr(e, doc)),
        Expr::Or(subs) => subs.iter().any(|e| eval_expr(e, doc)),
        Expr::Nor(subs) => !subs.iter().any(|e| eval_expr(e, doc)),
        Expr::Const(b) => *b,
        // An expression that fails on this document (e.g. `$divide` by zero)
        // does not match it; the server would fail the whole query instead.
        Expr::Aggregate(e) => crate::aggregate::eval_expression(e, &doc.to_document())
            .ok()
            .flatten()
            .is_some_and(|v| truthy(&v)),
        Expr::Path(path, pred) => {
            let parts: Vec<&str> = path.split('.').collect();
            let mut values = Vec::new();
            collect_from_doc(doc, &parts, &mut values);
            eval_pred(pred, &values)
        }
    }
}

fn collect_from_doc<'a, F: Fields + ?Sized>(
    doc: &'a F,
    parts: &[&str],
    out: &mut Vec<Option<&'a Bson>>,
) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    match doc.field(first) {
        Some(child) => collect_path(child, rest, out),
        None => out.push(None),
    }
}

/// Values reached by a dotted path; `None` marks a branch where the path is missing.
fn collect_path<'a>(value: &'a Bson, parts: &[&str], out: &mut Vec<Option<&'a Bson>>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(Some(value));
        return;
    };
    match value {
        Bson::Document(d) => collect_from_doc(d, parts, out),
        Bson::Array(items) => {
            let before = out.len();
            if let Ok(idx) = first.parse::<usize>() {
                if let Some(item) = items.get(idx) {
                    collect_path(item, rest, out);
                }
            }
            for item in items {
                if let Bson::Document(_) = item {
                    collect_path(item, parts, out);
                }
            }
            if out.len() == before {
                out.push(None);
            }
        }
        _ => out.push(None),
    }
}

fn eval_pred(pred: &Pred, values: &[Option<&Bson>]) -> bool {
    match pred {
        Pred::Not(inner) => !eval_pred(inner, values),
        Pred::And(preds) => preds.iter().all(|p| eval_pred(p, values)),
        Pred::Exists(want) => values.iter().any(Option::is_some) == *want,
        Pred::Size(n) => values
            .iter()
            .any(|v| matches!(v, Some(Bson::Array(a)) if a.len() == *n)),
        Pred::All(preds) => !preds.is_empty() && preds.iter().all(|p| eval_pred(p, values)),
        Pred::ElemMatchDoc(expr) => values.iter().any(|v| match v {
            Some(Bson::Array(items)) => items
                .iter()
                .any(|item| matches!(item, Bson::Document(d) if eval_expr(expr, d))),
            _ => false,
        }),
        Pred::ElemMatchValue(preds) => values.iter().any(|v| match v {
            Some(Bson::Array(items)) => items
                .iter()
                .any(|item| preds.iter().all(|p| eval_pred(p, &[Some(item)]))),
            _ => false,
        }),
        leaf => values.iter().any(|v| match v {
            None => leaf_matches_missing(leaf),
            Some(Bson::Array(items)) => {
                leaf_matches(leaf, v.unwrap_or(&Bson::Null))
                    || items.iter().any(|item| leaf_matches(leaf, item))
            }
            Some(value) => leaf_matches(leaf, value),
        }),
    }
}

fn leaf_matches_missing(pred: &Pred) -> bool {
    match pred {
        Pred::Cmp(CmpOp::Eq | CmpOp::Gte | CmpOp::Lte, Bson::Null) => true,
        Pred::In(items) => items.iter().any(|i| matches!(i, InItem::Value(Bson::Null))),
        _ => false,
    }
}

fn leaf_matches(pred: &Pred, value: &Bson) -> bool {
    match pred {
        Pred::Cmp(op, target) => compare_op(*op, value, target),
        Pred::In(items) => items.iter().any(|item| match item {
            InItem::Value(target) => compare_op(CmpOp::Eq, value, target),
            InItem::Regex(re) => regex_matches(re, value),
        }),
        Pred::Type(sels) => sels.iter().any(|sel| match sel {
            TypeSel::Number => crate::bson_order::is_number(value),
            TypeSel::Code(c) => bson_type_code(value) == *c,
        }),
        Pred::Regex(re) => regex_matches(re, value),
        Pred::Mod(divisor, remainder) => match value {
            Bson::Double(d) if !d.is_finite() => false,
            _ => crate::bson_order::number_as_i64(value)
                .is_some_and(|n| n.wrapping_rem(*divisor) == *remainder),
        },
        // Array-level predicates never reach here (handled in eval_pred);
        // nested inside $elemMatch value form they see the element itself.
        other => eval_pred(other, &[Some(value)]),
    }
}

fn regex_matches(re: &pcre::Pcre, value: &Bson) -> bool {
    match value {
        Bson::String(s) | Bson::Symbol(s) => re.is_match(s),
        Bson::RegularExpression(r) => re.as_str().ends_with(r.pattern.as_str()),
        _ => false,
    }
}

fn compare_op(op: CmpOp, value: &Bson, target: &Bson) -> bool {
    // Null queries also match undefined, as in the server.
    let value = if matches!(value, Bson::Undefined) && matches!(target, Bson::Null) {
        &Bson::Null
    } else {
        value
    };
    if op == CmpOp::Eq {
        return compare(value, target) == Ordering::Equal;
    }
    // Range operators only match within the target's type bracket, except
    // MinKey/MaxKey which bound every type.
    let same_bracket = type_bracket(value) == type_bracket(target)
        || matches!(target, Bson::MinKey | Bson::MaxKey);
    if !same_bracket {
        return false;
    }
    let ord = compare(value, target);
    match op {
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Gte => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Lte => ord != Ordering::Greater,
        CmpOp::Eq => ord == Ordering::Equal,
    }
}

// ---- paths ----

/// Top-level field access to something document-shaped: a `Document`, or
/// an oplog entry that keeps its fields in a plain list (building a
/// `Document` per entry was most of what an insert cost).
pub trait Fields {
    fn field(&self, key: &str) -> Option<&Bson>;

    /// A sub-document kept as BSON bytes, which `field` does not return.
    /// With `store::approx_size` of the document it encodes.
    fn raw_doc_field(&self, _key: &str) -> Option<(&bson::RawDocument, usize)> {
        None
    }

    /// The whole thing as a `Document`, for the rare reader that needs one.
    fn to_document(&self) -> std::borrow::Cow<'_, Document>;

    fn str_field(&self, key: &str) -> Option<&str> {
        match self.field(key)? {
            Bson::String(s) => Some(s),
            _ => None,
        }
    }

    fn doc_field(&self, key: &str) -> Option<&Document> {
        match self.field(key)? {
            Bson::Document(d) => Some(d),
            _ => None,
        }
    }

    fn bool_field(&self, key: &str) -> Option<bool> {
        match self.field(key)? {
            Bson::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    fn ts_field(&self, key: &str) -> Option<bson::Timestamp> {
        match self.field(key)? {
            Bson::Timestamp(ts) => Some(*ts),
            _ => None,
        }
    }

    fn date_field(&self, key: &str) -> Option<bson::DateTime> {
        match self.field(key)? {
            Bson::DateTime(d) => Some(*d),
            _ => None,
        }
    }
}

impl<T: Fields + ?Sized> Fields for &T {
    fn field(&self, key: &str) -> Option<&Bson> {
        (**self).field(key)
    }

    fn raw_doc_field(&self, key: &str) -> Option<(&bson::RawDocument, usize)> {
        (**self).raw_doc_field(key)
    }

    fn to_document(&self) -> std::borrow::Cow<'_, Document> {
        (**self).to_document()
    }
}

impl Fields for Document {
    fn field(&self, key: &str) -> Option<&Bson> {
        self.get(key)
    }

    fn to_document(&self) -> std::borrow::Cow<'_, Document> {
        std::borrow::Cow::Borrowed(self)
    }
}

/// The value at a dotted path, following sub-documents and numeric array
/// indexes only (no array fan-out): the lookup `update` and sorting need.
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut current = doc.get(parts.next()?)?;
    for part in parts {
        current = match current {
            Bson::Document(d) => d.get(part)?,
            Bson::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

mod keys;
mod parse;
mod pcre;
mod projection;
mod sort;

pub use keys::{IdKeys, IdRange};
pub use parse::bson_type_code;
use parse::{id_in_list, id_literal, parse_document};
pub(crate) use parse::{is_operator_doc, truthy};
pub use projection::project;
pub(crate) use projection::Projection;
pub use sort::sort_documents;
pub(crate) use sort::{compare_by_keys, parse_sort};

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId};

    fn m(filter: Document, doc: Document) -> bool {
        Filter::parse(&filter).unwrap().matches(&doc)
    }

    #[test]
    fn implicit_equality_and_dotted_paths() {
        let d = doc! {"_id": 1, "a": 5, "b": {"c": "x"}, "arr": [1, 2, 3], "subs": [{"k": 1}, {"k": 2}]};
        assert!(m(doc! {"a": 5}, d.clone()));
        assert!(m(doc! {"a": 5.0}, d.clone()));
        assert!(!m(doc! {"a": 6}, d.clone()));
        assert!(m(doc! {"b.c": "x"}, d.clone()));
        assert!(m(doc! {"b": {"c": "x"}}, d.clone()));
        assert!(!m(doc! {"b": {"c": "x", "d": 1}}, d.clone()));
        assert!(m(doc! {"arr": 2}, d.clone()));
        assert!(m(doc! {"arr": [1, 2, 3]}, d.clone()));
        assert!(!m(doc! {"arr": [1, 2]}, d.clone()));
        assert!(m(doc! {"arr.1": 2}, d.clone()));
        assert!(m(doc! {"subs.k": 2}, d.clone()));
        assert!(!m(doc! {"subs.k": 3}, d.clone()));
        assert!(m(doc! {"missing": null}, d.clone()));
        assert!(!m(doc! {"a": null}, d.clone()));
        assert!(m(doc! {"a": 5, "b.c": "x"}, d.clone()));
        assert!(!m(doc! {"a": 5, "b.c": "y"}, d));
    }

    #[test]
    fn comparison_operators() {
        let d = doc! {"n": 10, "s": "m", "arr": [1, 20]};
        assert!(m(doc! {"n": {"$gt": 5}}, d.clone()));
        assert!(!m(doc! {"n": {"$gt": 10}}, d.clone()));
        assert!(m(doc! {"n": {"$gte": 10, "$lte": 10}}, d.clone()));
        assert!(m(doc! {"n": {"$lt": 10.5}}, d.clone()));
        // Type bracketing: a number is never greater than a string.
        assert!(!m(doc! {"n": {"$gt": "a"}}, d.clone()));
        assert!(m(doc! {"s": {"$gt": "a", "$lt": "z"}}, d.clone()));
        // Each operator may be satisfied by a different array element.
        assert!(m(doc! {"arr": {"$gt": 10, "$lt": 5}}, d.clone()));
        assert!(!m(
            doc! {"arr": {"$elemMatch": {"$gt": 10, "$lt": 5}}},
            d.clone()
        ));
        assert!(m(doc! {"n": {"$ne": 3}}, d.clone()));
        assert!(!m(doc! {"arr": {"$ne": 20}}, d.clone()));
        assert!(m(doc! {"missing": {"$ne": 3}}, d.clone()));
        assert!(m(doc! {"n": {"$eq": 10}}, d.clone()));
        assert!(m(doc! {"n": {"$in": [1, 10]}}, d.clone()));
        assert!(m(doc! {"arr": {"$in": [20]}}, d.clone()));
        assert!(m(doc! {"n": {"$nin": [1, 2]}}, d.clone()));
        assert!(!m(doc! {"arr": {"$nin": [1]}}, d.clone()));
        assert!(m(doc! {"missing": {"$in": [null]}}, d.clone()));
        assert!(m(doc! {"missing": {"$gte": null}}, d));
    }

    #[test]
    fn logical_operators() {
        let d = doc! {"a": 1, "b": 2};
        assert!(m(doc! {"$or": [{"a": 2}, {"b": 2}]}, d.clone()));
        assert!(!m(doc! {"$and": [{"a": 1}, {"b": 3}]}, d.clone()));
        assert!(m(doc! {"$nor": [{"a": 2}, {"b": 3}]}, d.clone()));
        assert!(m(doc! {"a": {"$not": {"$gt": 5}}}, d.clone()));
        assert!(!m(doc! {"a": {"$not": {"$lt": 5}}}, d.clone()));
        assert!(m(doc! {"missing": {"$not": {"$gt": 5}}}, d));
        let err = Filter::parse(&doc! {"$or": []}).unwrap_err();
        assert_eq!(err.code, 2);
        let err = Filter::parse(&doc! {"$foo": 1}).unwrap_err();
        assert_eq!(err.message, "unknown top level operator: $foo");
        let err = Filter::parse(&doc! {"a": {"$bogus": 1}}).unwrap_err();
        assert_eq!((err.code, err.code_name), (2, "BadValue"));
    }

    #[test]
    fn element_operators() {
        let d = doc! {"a": null, "n": 1i64, "arr": ["x", "y"], "subs": [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]};
        assert!(m(doc! {"a": {"$exists": true}}, d.clone()));
        assert!(m(doc! {"zz": {"$exists": false}}, d.clone()));
        assert!(!m(doc! {"zz": {"$exists": 1}}, d.clone()));
        assert!(m(doc! {"subs.k": {"$exists": true}}, d.clone()));
        assert!(m(doc! {"n": {"$type": "long"}}, d.clone()));
        assert!(m(doc! {"n": {"$type": "number"}}, d.clone()));
        assert!(m(doc! {"n": {"$type": 18}}, d.clone()));
        assert!(m(doc! {"arr": {"$type": "array"}}, d.clone()));
        assert!(m(doc! {"arr": {"$type": "string"}}, d.clone()));
        assert!(m(doc! {"a": {"$type": ["int", "null"]}}, d.clone()));
        assert!(m(doc! {"arr": {"$size": 2}}, d.clone()));
        assert!(!m(doc! {"arr": {"$size": 1}}, d.clone()));
        assert!(m(doc! {"arr": {"$all": ["y", "x"]}}, d.clone()));
        assert!(!m(doc! {"arr": {"$all": ["y", "z"]}}, d.clone()));
        assert!(!m(doc! {"arr": {"$all": []}}, d.clone()));
        assert!(m(
            doc! {"subs": {"$elemMatch": {"k": 2, "v": "b"}}},
            d.clone()
        ));
        assert!(!m(
            doc! {"subs": {"$elemMatch": {"k": 2, "v": "a"}}},
            d.clone()
        ));
        assert!(m(
            doc! {"subs": {"$elemMatch": {"k": {"$gt": 1}}}},
            d.clone()
        ));
        assert!(m(doc! {"n": {"$mod": [2, 1]}}, d));
        assert_eq!(
            Filter::parse(&doc! {"a": {"$size": -1}}).unwrap_err().code,
            2
        );
        assert_eq!(Filter::parse(&doc! {"a": {"$in": 5}}).unwrap_err().code, 2);
    }

    #[test]
    fn a_dbref_is_a_value_not_operators() {
        // The server's matcher (isExpressionDocument) takes a document with both `$ref` and
        // `$id` as a value, in `$in` and as an equality; any other `$`-first document under
        // `$in` is refused.
        let r = doc! {"$ref": "other", "$id": 1};
        let d = doc! {"_id": {"x": 1, "n": r.clone()}, "link": r.clone()};
        assert!(m(doc! {"link": r.clone()}, d.clone()));
        assert!(m(doc! {"link": {"$in": [r.clone(), 5]}}, d.clone()));
        assert!(m(
            doc! {"_id": {"$in": [{"x": 1, "n": r.clone()}]}},
            d.clone()
        ));
        assert!(!m(doc! {"link": {"$in": [{"$id": 1, "$ref": "x"}]}}, d));
        let refused = Filter::parse(&doc! {"a": {"$in": [{"$ref": "other"}]}}).unwrap_err();
        assert_eq!(
            (refused.code, refused.message.as_str()),
            (2, "cannot nest $ under $in")
        );
    }

    #[test]
    fn regex_operators() {
        let d = doc! {"name": "Alice", "tags": ["red", "Blue"]};
        assert!(m(
            doc! {"name": {"$regex": "^al", "$options": "i"}},
            d.clone()
        ));
        assert!(!m(doc! {"name": {"$regex": "^al"}}, d.clone()));
        assert!(m(
            doc! {"name": bson::Regex { pattern: "ice$".into(), options: "".into() }},
            d.clone()
        ));
        assert!(m(
            doc! {"tags": {"$regex": "^b", "$options": "i"}},
            d.clone()
        ));
        assert!(m(
            doc! {"tags": {"$in": [bson::Regex { pattern: "^r".into(), options: "".into() }]}},
            d.clone()
        ));
        assert!(m(
            doc! {"name": {"$not": bson::Regex { pattern: "^B".into(), options: "".into() }}},
            d
        ));
        assert_eq!(
            Filter::parse(&doc! {"a": {"$regex": "a("}})
                .unwrap_err()
                .code,
            51091
        );
        // PCRE's look-around, as in `listCollections` filters.
        assert!(m(
            doc! {"name": {"$regex": "^(?!system\\.)"}},
            doc! {"name": "orders"}
        ));
        assert!(!m(
            doc! {"name": {"$regex": "^(?!system\\.)"}},
            doc! {"name": "system.views"}
        ));
    }

    #[test]
    fn id_in_fast_path() {
        let ids = |f: Document| Filter::parse(&f).unwrap().id_in().map(<[Bson]>::to_vec);
        assert_eq!(
            ids(doc! {"_id": {"$in": [1, "a"]}}),
            Some(vec![Bson::Int32(1), Bson::String("a".into())])
        );
        assert_eq!(ids(doc! {"_id": {"$in": []}}), Some(vec![]));
        assert!(ids(doc! {"_id": {"$in": [1, null]}}).is_none());
        assert!(ids(doc! {"_id": {"$in": [{"a": 1}]}}).is_none());
        assert!(ids(doc! {"_id": {"$in": [[1]]}}).is_none());
        assert!(ids(doc! {"_id": {"$in": [1], "$gt": 0}}).is_none());
        assert!(ids(doc! {"_id": {"$in": [1]}, "a": 1}).is_none());
        assert!(ids(doc! {"_id": {"$nin": [1]}}).is_none());
    }

    #[test]
    fn id_fast_path() {
        let oid = ObjectId::new();
        assert_eq!(
            Filter::parse(&doc! {"_id": oid}).unwrap().id_equality(),
            Some(&Bson::ObjectId(oid))
        );
        assert_eq!(
            Filter::parse(&doc! {"_id": {"$eq": 4}})
                .unwrap()
                .id_equality(),
            Some(&Bson::Int32(4))
        );
        assert!(Filter::parse(&doc! {"_id": {"$gt": 4}})
            .unwrap()
            .id_equality()
            .is_none());
        assert!(Filter::parse(&doc! {"_id": 1, "a": 2})
            .unwrap()
            .id_equality()
            .is_none());
        assert_eq!(
            Filter::parse(&doc! {"_id": {"a": 1}})
                .unwrap()
                .id_equality(),
            Some(&Bson::Document(doc! {"a": 1}))
        );
    }

    #[test]
    fn get_path_follows_indexes() {
        let d = doc! {"a": {"b": [10, {"c": 3}]}};
        assert_eq!(get_path(&d, "a.b.0"), Some(&Bson::Int32(10)));
        assert_eq!(get_path(&d, "a.b.1.c"), Some(&Bson::Int32(3)));
        assert_eq!(get_path(&d, "a.x"), None);
    }

    #[test]
    fn expr_compares_fields() {
        let d = doc! {"spent": 120, "budget": 100};
        assert!(m(doc! {"$expr": {"$gt": ["$spent", "$budget"]}}, d.clone()));
        assert!(!m(
            doc! {"$expr": {"$lt": ["$spent", "$budget"]}},
            d.clone()
        ));
        assert!(!m(doc! {"$expr": {"$divide": [1, 0]}}, d));
    }

    #[test]
    fn positional_index_finds_the_matched_element() {
        let d = doc! {"items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 5}, {"sku": "b", "qty": 9}], "n": [3, 7]};
        let f = Filter::parse(&doc! {"items.sku": "b", "items.qty": {"$gt": 6}}).unwrap();
        assert_eq!(f.positional_index(&d, "items"), Some(2));
        let f = Filter::parse(&doc! {"items": {"$elemMatch": {"sku": "b"}}}).unwrap();
        assert_eq!(f.positional_index(&d, "items"), Some(1));
        let f = Filter::parse(&doc! {"n": {"$gte": 5}}).unwrap();
        assert_eq!(f.positional_index(&d, "n"), Some(1));
        let f = Filter::parse(&doc! {"other": 1}).unwrap();
        assert_eq!(f.positional_index(&d, "items"), None);
    }
}
