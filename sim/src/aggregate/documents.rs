//! `$documents` (MongoDB 5.1+): the documents a collectionless aggregation (`{aggregate: 1}`)
//! starts from, given as an array or an expression that evaluates to one. The server
//! desugars it into `$queue` + `$unwind` + `$replaceRoot`, so a non-array is 5858203 and an
//! element that is not an object is `$replaceRoot`'s 40228.

use bson::{Bson, Document};

use super::expression::{eval_expression, type_name};
use crate::query::QueryError;

pub const STAGE: &str = "$documents";

/// The documents `$documents: spec` produces.
pub fn documents(spec: &Bson) -> Result<Vec<Document>, QueryError> {
    let value = match spec {
        Bson::Array(_) => spec.clone(),
        other => eval_expression(other, &Document::new())?.unwrap_or(Bson::Null),
    };
    let Bson::Array(items) = value else {
        return Err(QueryError::new(
            5858203,
            "Location5858203",
            "an array is expected",
        ));
    };
    items
        .into_iter()
        .map(|item| match item {
            Bson::Document(d) => Ok(d),
            other => Err(QueryError::new(
                40228,
                "Location40228",
                format!(
                    "'newRoot' expression must evaluate to an object, but resulting value was: \
                     {other}. Type of resulting value: '{}'.",
                    type_name(&other)
                ),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;

    #[test]
    fn arrays_of_objects_only() {
        let docs = documents(&Bson::Array(vec![
            doc! {"a": 1}.into(),
            doc! {"a": 2}.into(),
        ]));
        assert_eq!(docs.unwrap(), [doc! {"a": 1}, doc! {"a": 2}]);
        let literal = documents(&Bson::Document(doc! {"$literal": [{"x": 1}]})).unwrap();
        assert_eq!(literal, [doc! {"x": 1}]);
        assert_eq!(
            documents(&Bson::Array(vec![1.into()])).unwrap_err().code,
            40228
        );
        assert_eq!(
            documents(&Bson::String("s".into())).unwrap_err().code,
            5858203
        );
    }
}
