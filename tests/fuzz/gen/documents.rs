//! `_id`s (the key column's own family, look-alikes of other types, anything) and documents
//! shaped by a mapping, tame or wild.

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Document};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::forms::{iso_date, uuid_text};
use super::super::keys::key_cell;
use super::super::oracle::Rules;
use super::super::spec::{Child, Mapping, SqlType};
use super::values::{any_value, field_name, fitting, for_column, scalar, string};

/// `_id`s that only differ in type from one another: the collisions the key rules prevent.
fn colliding_ids() -> BoxedStrategy<Bson> {
    let n = prop_oneof![0i64..4, Just(1i64 << 53), Just((1i64 << 53) + 1)];
    let number = (n, 0usize..9).prop_map(|(n, variant)| match variant {
        0 => Bson::Int32(n as i32),
        1 => Bson::Int64(n),
        2 => Bson::Double(n as f64),
        3 => Bson::Decimal128(n.to_string().parse().unwrap()),
        4 => Bson::Decimal128(format!("{n}.0").parse().unwrap()),
        5 => Bson::String(n.to_string()),
        6 => Bson::Double(n as f64 + 0.5),
        7 => Bson::Decimal128(format!("{n}.5").parse().unwrap()),
        _ => Bson::String(format!("{n}.5")),
    });
    let oid = select(vec![[7u8; 12], [0xab; 12]]);
    let object = (oid, 0usize..3).prop_map(|(b, v)| match v {
        0 => Bson::ObjectId(ObjectId::from_bytes(b)),
        1 => Bson::String(ObjectId::from_bytes(b).to_hex()),
        _ => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: b.to_vec(),
        }),
    });
    let uuid = (select(vec![[1u8; 16], [0xcd; 16]]), 0usize..3).prop_map(|(b, v)| match v {
        0 => Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes: b.to_vec(),
        }),
        1 => Bson::String(uuid_text(&b)),
        _ => Bson::String(uuid_text(&b).to_uppercase()),
    });
    let date = (select(vec![0i64, 86_400_000]), any::<bool>()).prop_map(|(ms, text)| {
        if text {
            Bson::String(iso_date(ms).unwrap())
        } else {
            Bson::DateTime(DateTime::from_millis(ms))
        }
    });
    let docs = select(vec![
        bson::doc! {"a": 1, "b": 2},
        bson::doc! {"b": 2, "a": 1},
        bson::doc! {"a": "1"},
        bson::doc! {"a": 1.5},
        bson::doc! {"a": Bson::Decimal128("1.5".parse().unwrap())},
    ])
    .prop_map(Bson::Document);
    let bools = prop_oneof![
        any::<bool>().prop_map(Bson::Boolean),
        select(vec!["true", "false"]).prop_map(|s| Bson::String(s.to_owned())),
    ];
    let big = select(vec![
        "1e23",
        "1E+23",
        "99999999999999991611392",
        "9007199254740993",
    ])
    .prop_map(|t| match t {
        "1e23" => Bson::Double(1e23),
        "9007199254740993" => Bson::Int64(9_007_199_254_740_993),
        _ => Bson::Decimal128(t.parse().unwrap()),
    });
    prop_oneof![
        4 => number,
        2 => object,
        2 => uuid,
        1 => date,
        1 => docs,
        1 => bools,
        1 => big,
    ]
    .boxed()
}

/// An `_id` of any type MongoDB allows (not an array, regex or undefined).
fn any_id(rules: Rules) -> BoxedStrategy<Bson> {
    prop_oneof![
        6 => scalar(rules).prop_filter("MongoDB refuses these _ids", |v| !matches!(
            v,
            Bson::RegularExpression(_) | Bson::Undefined | Bson::Null
        )),
        1 => vec((field_name(), scalar(rules)), 0..3)
            .prop_map(|f| Bson::Document(f.into_iter().collect())),
    ]
    .boxed()
}

/// `_id`s for the mapping's key column: its own family, look-alikes of other types, and
/// anything. Without `strict_ids` only `_id`s that cannot collide under the old rules are kept
/// (refused ones, and those the new rules take, minus JSON strings from non-strings).
fn id(m: &Mapping, rules: Rules, wild: bool) -> BoxedStrategy<Bson> {
    let rules = Rules {
        invalid_utf8: false,
        ..rules
    };
    let own = fitting(&m.key.ty, rules).prop_filter("no arrays as _id", |v| {
        !matches!(v, Bson::Array(_) | Bson::Null | Bson::Undefined)
    });
    let all = if wild {
        prop_oneof![
            4 => own,
            3 => colliding_ids(),
            3 => any_id(rules),
            3 => string(rules).prop_map(Bson::String),
        ]
        .boxed()
    } else {
        prop_oneof![12 => own, 1 => colliding_ids()].boxed()
    };
    if rules.strict_ids {
        return all;
    }
    let m = m.clone();
    let strict = Rules {
        strict_ids: true,
        ..rules
    };
    all.prop_filter("could collide under the old key rules", move |id| {
        // JSON keys: a Decimal128, a large Int64 or an ObjectId is a JSON string like a String.
        let plain_json = m.key.ty != SqlType::Jsonb
            || matches!(id, Bson::String(_) | Bson::Int32(_) | Bson::Boolean(_))
            || matches!(id, Bson::Double(d) if d.is_finite());
        key_cell(&m, rules, id).is_err() || (key_cell(&m, strict, id).is_ok() && plain_json)
    })
    .boxed()
}

/// Puts `v` at `path` in `d`, creating sub-documents; a non-document on the way stays.
fn put(d: &mut Document, path: &[String], v: Bson) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = d;
    for seg in parents {
        if !cur.contains_key(seg) {
            cur.insert(seg.clone(), Document::new());
        }
        match cur.get_mut(seg) {
            Some(Bson::Document(sub)) => cur = sub,
            _ => return,
        }
    }
    cur.insert(last.clone(), v);
}

/// A child array: elements that are documents of the child's fields, scalars, nulls, nested
/// arrays; or, now and then, something that is not an array at all.
pub(super) fn child_value(child: &Child, rules: Rules, wild: bool) -> BoxedStrategy<Bson> {
    let fields: Vec<_> = child
        .columns
        .iter()
        .filter(|c| !c.source.is_empty())
        .map(|c| {
            let source = c.source.clone();
            (
                Just(source),
                proptest::option::weighted(0.8, for_column(&c.ty, rules, wild)),
            )
        })
        .collect();
    let dot = child
        .columns
        .iter()
        .find(|c| c.source.is_empty())
        .map(|c| c.ty.clone());
    let extra = proptest::option::weighted(if wild { 0.5 } else { 0.01 }, any_value(rules));
    let element_doc = (fields, extra).prop_map(|(fields, extra)| {
        let mut d = Document::new();
        for (source, v) in fields {
            if let Some(v) = v {
                put(&mut d, &source, v);
            }
        }
        if let Some(extra) = extra {
            d.insert("other", extra);
        }
        Bson::Document(d)
    });
    let element = match (dot, wild) {
        (Some(ty), true) => prop_oneof![
            2 => for_column(&ty, rules, wild),
            2 => element_doc,
            1 => Just(Bson::Null),
        ]
        .boxed(),
        (Some(ty), false) => prop_oneof![6 => fitting(&ty, rules), 1 => Just(Bson::Null)].boxed(),
        (None, true) => prop_oneof![
            5 => element_doc,
            1 => Just(Bson::Null),
            1 => any_value(rules),
        ]
        .boxed(),
        (None, false) => prop_oneof![6 => element_doc, 1 => Just(Bson::Null)].boxed(),
    };
    let array = vec(element, 0..5).prop_map(Bson::Array);
    if wild {
        prop_oneof![8 => array, 1 => any_value(rules)].boxed()
    } else {
        array.boxed()
    }
}

/// A document body (no `_id`) shaped by the mapping: tame (values that fit, child arrays of
/// elements) or wild (anything anywhere, paths crossing scalars and arrays).
pub(super) fn body(m: &Mapping, rules: Rules, wild: bool) -> BoxedStrategy<Document> {
    // Tame documents hold no NUL: it would refuse most of them.
    let rules = Rules {
        nul: rules.nul && wild,
        invalid_utf8: rules.invalid_utf8 && wild,
        ..rules
    };
    let columns: Vec<_> = m
        .columns
        .iter()
        .map(|c| {
            (
                Just(c.source.clone()),
                proptest::option::weighted(0.8, for_column(&c.ty, rules, wild)),
            )
        })
        .collect();
    let children: Vec<_> = m
        .children
        .iter()
        .map(|c| {
            (
                Just(c.source.clone()),
                proptest::option::weighted(0.8, child_value(c, rules, wild)),
            )
        })
        .collect();
    let extras = vec((field_name(), any_value(rules)), 0..4);
    let crossing = proptest::option::weighted(
        if wild { 0.2 } else { 0.01 },
        (select(vec!["n", "deep", "obj"]), any_value(rules)),
    );
    (columns, children, extras, crossing)
        .prop_map(|(columns, children, extras, crossing)| {
            let mut d = Document::new();
            if let Some((name, v)) = crossing {
                d.insert(name, v);
            }
            for (source, v) in columns.into_iter().chain(children) {
                if let Some(v) = v {
                    put(&mut d, &source, v);
                }
            }
            for (name, v) in extras {
                if !d.contains_key(&name) {
                    d.insert(name, v);
                }
            }
            d
        })
        .boxed()
}

pub(super) fn document(m: &Mapping, rules: Rules) -> BoxedStrategy<Document> {
    prop_oneof![3 => shaped(m, rules, false), 2 => shaped(m, rules, true)].boxed()
}

fn shaped(m: &Mapping, rules: Rules, wild: bool) -> BoxedStrategy<Document> {
    (id(m, rules, wild), body(m, rules, wild))
        .prop_map(|(id, body)| {
            let mut d = bson::doc! {"_id": id};
            d.extend(body);
            d
        })
        .boxed()
}
