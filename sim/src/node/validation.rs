//! Document validation (`validator`, `validationLevel`, `validationAction` of `create` and
//! `collMod`): an insert, or an update that changes a document, must match the collection's
//! validator (a query filter) unless the command says `bypassDocumentValidation: true`.
//! `validationLevel: "moderate"` checks updates only of documents that matched before,
//! `"off"` nothing; `validationAction: "warn"` logs the failure and writes anyway. A failure is
//! 121 DocumentValidationFailure "Document failed validation" with `errInfo.failingDocumentId`
//! (mongod's `errInfo.details`, the explanation of which clause failed, is not produced).
//! `$jsonSchema` and other operators the query language lacks are refused when the validator
//! is first used, like any filter.

use bson::{doc, Bson, Document};

use crate::node::store::Collection;
use crate::node::writes::WriteError;
use crate::query::Filter;

/// What is being validated.
pub enum Write<'a> {
    Insert(&'a Document),
    /// An update's new document and the one it replaces.
    Update {
        post: &'a Document,
        pre: &'a Document,
    },
}

/// Checks a write against `c`'s validator; `bypass` is the command's
/// `bypassDocumentValidation`.
pub fn check(c: &Collection, write: Write<'_>, bypass: bool) -> Result<(), WriteError> {
    let Ok(validator) = c.options.get_document("validator") else {
        return Ok(());
    };
    if bypass || validator.is_empty() {
        return Ok(());
    }
    let level = c.options.get_str("validationLevel").unwrap_or("strict");
    let filter = Filter::parse(validator)?;
    let doc = match write {
        Write::Insert(d) => d,
        Write::Update { post, pre } => match level {
            "off" => return Ok(()),
            "moderate" if !filter.matches(pre) => return Ok(()),
            _ => post,
        },
    };
    if level == "off" || filter.matches(doc) {
        return Ok(());
    }
    let id = doc.get("_id").cloned().unwrap_or(Bson::Null);
    if c.options.get_str("validationAction") == Ok("warn") {
        tracing::warn!(id = %id, "Document would fail validation");
        return Ok(());
    }
    Err(WriteError {
        code: 121,
        code_name: "DocumentValidationFailure".into(),
        errmsg: "Document failed validation".into(),
        details: Some(Box::new(doc! {"errInfo": {"failingDocumentId": id}})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coll(options: Document) -> Collection {
        Collection::new(options)
    }

    #[test]
    fn inserts_and_updates_must_match_unless_bypassed() {
        let c = coll(doc! {"validator": {"a": {"$gte": 1}}});
        assert!(check(&c, Write::Insert(&doc! {"_id": 1, "a": 2}), false).is_ok());
        let e = check(&c, Write::Insert(&doc! {"_id": 2, "a": 0}), false).unwrap_err();
        assert_eq!(
            (e.code, e.errmsg.as_str()),
            (121, "Document failed validation")
        );
        assert!(check(&c, Write::Insert(&doc! {"_id": 2, "a": 0}), true).is_ok());
        let (pre, post) = (doc! {"_id": 1, "a": 0}, doc! {"_id": 1, "a": -1});
        let update = || Write::Update {
            post: &post,
            pre: &pre,
        };
        assert!(check(&c, update(), false).is_err());
        let moderate = coll(doc! {"validator": {"a": {"$gte": 1}}, "validationLevel": "moderate"});
        assert!(
            check(&moderate, update(), false).is_ok(),
            "pre did not match"
        );
        let warn = coll(doc! {"validator": {"a": {"$gte": 1}}, "validationAction": "warn"});
        assert!(check(&warn, update(), false).is_ok());
    }
}
