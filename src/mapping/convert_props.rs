//! Property tests: any BSON value into any column type either converts with the value
//! preserved (the same number by its decimal text and float bits, the same instant, the same
//! bytes) or is refused with a reason. Never silently altered.

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, Decimal128};
use proptest::prelude::*;

use super::convert::convert_value;
use super::decimal::Dec;
use super::json::to_json;
use super::model::PgType;
use super::value::PgValue;

fn all_types() -> Vec<PgType> {
    let scalars = vec![
        PgType::Text,
        PgType::Varchar(Some(5)),
        PgType::SmallInt,
        PgType::Integer,
        PgType::BigInt,
        PgType::Real,
        PgType::DoublePrecision,
        PgType::Numeric(None),
        PgType::Numeric(Some((6, Some(2)))),
        PgType::Numeric(Some((30, None))),
        PgType::Boolean,
        PgType::Timestamptz,
        PgType::Timestamp,
        PgType::Date,
        PgType::Uuid,
        PgType::Bytea,
        PgType::Json,
        PgType::Jsonb,
    ];
    let mut all = scalars.clone();
    all.extend(
        scalars
            .into_iter()
            .filter(|t| !matches!(t, PgType::Json | PgType::Jsonb))
            .map(|t| PgType::Array(Box::new(t))),
    );
    all
}

fn decimal128() -> impl Strategy<Value = Bson> {
    let finite = (any::<bool>(), "[0-9]{1,34}", -60i32..60).prop_map(|(neg, digits, exp)| {
        let text = format!("{}{digits}E{exp}", if neg { "-" } else { "" });
        text.parse::<Decimal128>()
            .map(Bson::Decimal128)
            .unwrap_or(Bson::Null)
    });
    // `select`, not a bare &str: that would be a regex (`.` matching any character).
    let special = proptest::sample::select(vec!["NaN", "Infinity", "-Infinity", "-0", "0.00"])
        .prop_map(|t| Bson::Decimal128(t.parse::<Decimal128>().unwrap()));
    prop_oneof![4 => finite, 1 => special]
}

fn scalar() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        (-1i64 << 54..1i64 << 54).prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        any::<u64>().prop_map(|b| Bson::Double(f64::from_bits(b))),
        (-1_000_000i32..1_000_000).prop_map(|i| Bson::Double(f64::from(i) / 4.0)),
        decimal128(),
        any::<bool>().prop_map(Bson::Boolean),
        ".{0,8}".prop_map(Bson::String),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        (-100_000i64..100_000).prop_map(|d| Bson::DateTime(DateTime::from_millis(d * 86_400_000))),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..20)).prop_map(|(u, bytes)| {
            let subtype = if u {
                BinarySubtype::Uuid
            } else {
                BinarySubtype::Generic
            };
            Bson::Binary(Binary { subtype, bytes })
        }),
        any::<[u8; 16]>().prop_map(|b| Bson::String(uuid::Uuid::from_bytes(b).to_string())),
        Just(Bson::Null),
    ]
}

fn value() -> impl Strategy<Value = Bson> {
    prop_oneof![
        4 => scalar(),
        1 => proptest::collection::vec(scalar(), 0..4).prop_map(Bson::Array),
    ]
}

/// The exact number a numeric BSON value denotes (`None` for NaN/Infinity/non-numbers).
fn number(v: &Bson) -> Option<Dec> {
    match v {
        Bson::Int32(i) => Dec::parse(&i.to_string()),
        Bson::Int64(i) => Dec::parse(&i.to_string()),
        Bson::Double(d) if d.is_finite() => Dec::parse(&format!("{d:e}")),
        Bson::Decimal128(d) => Dec::parse(&d.to_string()),
        _ => None,
    }
}

/// Panics (fails the property) when `out` is not exactly `v`.
fn check_preserved(v: &Bson, ty: &PgType, out: &PgValue) {
    if matches!(v, Bson::Null) {
        assert_eq!(out, &PgValue::Null);
        return;
    }
    let same_int = |i: i128| {
        // A double is exactly the integer it converts to (its binary value, not its shortest
        // decimal text, which may differ in the last digits above 2^53).
        if let Bson::Double(d) = v {
            assert_eq!((i as f64).to_bits(), (d + 0.0).to_bits(), "{v:?} -> {i}");
            assert_eq!(i as f64 as i128, i, "{v:?} -> {i}");
            return;
        }
        let n = number(v).expect("only numbers convert to integers");
        assert!(
            n.same_value(&Dec::parse(&i.to_string()).unwrap()),
            "{v:?} -> {i}"
        );
    };
    match (ty, out) {
        (PgType::Text | PgType::Varchar(_), PgValue::Text(s)) => {
            assert!(!s.contains('\0'));
            if let PgType::Varchar(Some(n)) = ty {
                assert!(s.chars().count() <= *n as usize);
            }
            match v {
                Bson::String(orig) => assert_eq!(s, orig),
                Bson::Double(d) if d.is_finite() => {
                    assert_eq!(s.parse::<f64>().unwrap().to_bits(), d.to_bits(), "{s}")
                }
                Bson::Int32(_) | Bson::Int64(_) => {
                    assert!(number(v).unwrap().same_value(&Dec::parse(s).unwrap()))
                }
                Bson::Decimal128(d) => assert_eq!(s, &d.to_string()),
                Bson::ObjectId(oid) => assert_eq!(s, &oid.to_hex()),
                Bson::DateTime(d) => assert_eq!(
                    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3fZ")
                        .unwrap_or_else(|e| panic!("{s}: {e}"))
                        .and_utc()
                        .timestamp_millis(),
                    d.timestamp_millis()
                ),
                Bson::Boolean(b) => assert_eq!(s, if *b { "true" } else { "false" }),
                _ => {
                    let want = match to_json(v) {
                        serde_json::Value::String(text) => text,
                        other => other.to_string(),
                    };
                    assert_eq!(s, &want);
                }
            }
        }
        (PgType::SmallInt, PgValue::Int2(i)) => same_int(i128::from(*i)),
        (PgType::Integer, PgValue::Int4(i)) => same_int(i128::from(*i)),
        (PgType::BigInt, PgValue::Int8(i)) => same_int(i128::from(*i)),
        (PgType::DoublePrecision, PgValue::Float8(f)) => match v {
            Bson::Double(d) => assert_eq!(f.to_bits(), d.to_bits()),
            Bson::Decimal128(d) if !f.is_finite() => {
                assert_eq!(
                    to_json(&Bson::Double(*f)),
                    serde_json::Value::String(d.to_string())
                )
            }
            Bson::Int32(_) | Bson::Int64(_) => same_int(*f as i128),
            _ => assert!(number(v)
                .unwrap()
                .same_value(&Dec::parse(&format!("{f:e}")).unwrap())),
        },
        (PgType::Real, PgValue::Float4(f)) => match v {
            Bson::Double(d) if d.is_nan() => assert!(f.is_nan()),
            Bson::Double(d) => assert_eq!(f64::from(*f).to_bits(), d.to_bits()),
            Bson::Decimal128(d) if !f.is_finite() => {
                assert_eq!(
                    to_json(&Bson::Double(f64::from(*f))),
                    serde_json::Value::String(d.to_string())
                )
            }
            Bson::Int32(_) | Bson::Int64(_) => same_int(*f as i128),
            _ => assert!(number(v)
                .unwrap()
                .same_value(&Dec::parse(&format!("{f:e}")).unwrap())),
        },
        (PgType::Numeric(spec), PgValue::Numeric(text)) => {
            let got = Dec::parse(text).expect("numeric text is plain digits");
            assert!(!text.contains(['e', 'E']), "{text}");
            assert!(number(v).unwrap().same_value(&got), "{v:?} -> {text}");
            if let Bson::Double(d) = v {
                assert_eq!(text.parse::<f64>().unwrap().to_bits(), (d + 0.0).to_bits());
            }
            if let Some((p, s)) = spec {
                let s = i64::from(s.unwrap_or(0));
                assert_eq!(got.needed_scale().max(s), s);
                assert!(got.integer_digits() <= i64::from(*p) - s);
            }
        }
        (PgType::Boolean, PgValue::Bool(b)) => assert_eq!(v, &Bson::Boolean(*b)),
        (PgType::Timestamptz, PgValue::Timestamptz(m))
        | (PgType::Timestamp, PgValue::Timestamp(m)) => {
            let Bson::DateTime(d) = v else {
                panic!("{v:?}")
            };
            assert_eq!(*m, d.timestamp_millis() * 1000);
        }
        (PgType::Date, PgValue::Date(days)) => {
            let Bson::DateTime(d) = v else {
                panic!("{v:?}")
            };
            assert_eq!(i64::from(*days) * 86_400_000, d.timestamp_millis());
        }
        (PgType::Uuid, PgValue::Uuid(bytes)) => match v {
            Bson::Binary(b) => assert_eq!(&b.bytes[..], &bytes[..]),
            Bson::String(s) => assert_eq!(uuid::Uuid::parse_str(s).unwrap().as_bytes(), bytes),
            _ => panic!("{v:?}"),
        },
        (PgType::Bytea, PgValue::Bytea(bytes)) => match v {
            Bson::Binary(b) => assert_eq!(&b.bytes, bytes),
            Bson::ObjectId(oid) => assert_eq!(&oid.bytes()[..], &bytes[..]),
            _ => panic!("{v:?}"),
        },
        (PgType::Json | PgType::Jsonb, PgValue::Json(j)) => assert_eq!(j, &to_json(v)),
        (PgType::Array(elem), PgValue::Array(items)) => {
            let Bson::Array(orig) = v else {
                panic!("{v:?}")
            };
            assert_eq!(orig.len(), items.len());
            for (o, i) in orig.iter().zip(items) {
                check_preserved(o, elem, i);
            }
        }
        _ => panic!("{v:?} into {ty} produced the wrong variant {out:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_value_into_every_type_is_preserved_or_refused(v in value()) {
        for ty in all_types() {
            match convert_value(&v, &ty) {
                Ok(out) => check_preserved(&v, &ty, &out),
                Err(reason) => prop_assert!(!reason.is_empty()),
            }
        }
    }

    #[test]
    fn doubles_into_numeric_round_trip_bit_for_bit(bits in any::<u64>()) {
        let d = f64::from_bits(bits);
        match convert_value(&Bson::Double(d), &PgType::Numeric(None)) {
            Ok(PgValue::Numeric(text)) => {
                prop_assert!(d.is_finite());
                prop_assert_eq!(text.parse::<f64>().unwrap().to_bits(), (d + 0.0).to_bits());
            }
            Ok(other) => prop_assert!(false, "{:?}", other),
            Err(_) => prop_assert!(!d.is_finite()),
        }
    }

    #[test]
    fn whole_numbers_reach_bigint_exactly(i in any::<i64>()) {
        prop_assert_eq!(convert_value(&Bson::Int64(i), &PgType::BigInt), Ok(PgValue::Int8(i)));
        let as_double = convert_value(&Bson::Int64(i), &PgType::DoublePrecision);
        prop_assert_eq!(as_double.is_ok(), (i as f64) as i128 == i128::from(i));
    }
}

/// The obvious definition of `extra_props`' removal, kept to check the one that skips instead
/// of cloning: clone everything, remove each path, drop sub-documents the removal emptied.
fn removed_by_cloning(d: &bson::Document, paths: &[Vec<String>]) -> bson::Document {
    fn remove(d: &mut bson::Document, path: &[String]) {
        match path {
            [] => {}
            [last] => {
                d.remove(last);
            }
            [first, rest @ ..] => {
                if let Some(Bson::Document(sub)) = d.get_mut(first) {
                    let had_fields = !sub.is_empty();
                    remove(sub, rest);
                    if had_fields && sub.is_empty() {
                        d.remove(first);
                    }
                }
            }
        }
    }
    let mut out = d.clone();
    for p in paths {
        remove(&mut out, p);
    }
    out
}

/// Nested documents over a three-letter key alphabet, so random paths often hit something.
fn nested() -> impl Strategy<Value = bson::Document> {
    let key = proptest::sample::select(vec!["a", "b", "c"]);
    let leaf = prop_oneof![
        Just(Bson::Int32(1)),
        Just(Bson::Null),
        Just(Bson::Array(vec![]))
    ];
    let tree = leaf.prop_recursive(3, 24, 3, move |inner| {
        proptest::collection::vec((key.clone(), inner), 0..3).prop_map(|fields| {
            Bson::Document(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        })
    });
    proptest::collection::vec((proptest::sample::select(vec!["a", "b", "c"]), tree), 0..4)
        .prop_map(|fields| fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

proptest! {
    #[test]
    fn unmapped_fields_are_the_document_minus_the_mapped_paths(
        d in nested(),
        paths in proptest::collection::vec(
            proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 1..4),
            0..4,
        ),
    ) {
        let paths: Vec<Vec<String>> = paths
            .into_iter()
            .map(|p| p.into_iter().map(str::to_owned).collect())
            .collect();
        let slices: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(
            super::convert::without_paths(&d, &slices),
            removed_by_cloning(&d, &paths)
        );
    }
}

/// A mapping reading `paths` as integer columns (so documents and arrays on the way are
/// refused), a child table over `c` and `extra_props`.
fn mapping_of(
    paths: &[Vec<String>],
    on_error: super::model::OnError,
) -> super::model::CollectionMapping {
    use super::model::{ChildMapping, CollectionMapping, ColumnMapping, FieldPath};
    let column = |name: String, path: &str, pg_type: PgType| ColumnMapping {
        name,
        source: FieldPath::parse(path),
        pg_type,
    };
    let mut columns = vec![column("id".into(), "_id", PgType::Integer)];
    for (i, p) in paths.iter().enumerate() {
        columns.push(column(format!("c{i}"), &p.join("."), PgType::Integer));
    }
    CollectionMapping {
        database: "d".into(),
        collection: "c".into(),
        table: "t".into(),
        columns,
        extra_props: Some("extra".into()),
        on_error,
        on_nul: super::model::OnNul::default(),
        id_type: super::model::IdType::default(),
        children: vec![ChildMapping {
            table: "t_c".into(),
            source: FieldPath::parse("c"),
            parent_key: "t_id".into(),
            columns: vec![column("a".into(), "a", PgType::Jsonb)],
        }],
    }
}

proptest! {
    #[test]
    fn bson_bytes_convert_like_the_parsed_document(
        d in nested(),
        paths in proptest::collection::vec(
            proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 1..4),
            0..4,
        ),
        null_on_error in any::<bool>(),
    ) {
        use super::model::OnError;
        let paths: Vec<Vec<String>> = paths
            .into_iter()
            .map(|p| p.into_iter().map(str::to_owned).collect())
            .collect();
        let on_error = if null_on_error { OnError::Null } else { OnError::DeadLetter };
        let m = mapping_of(&paths, on_error);
        let mut d = d;
        d.insert("_id", 1);
        let raw = bson::RawDocumentBuf::from_document(&d).unwrap();
        prop_assert_eq!(
            super::convert::convert_raw_document(&m, &raw),
            super::convert::convert_document(&m, &d)
        );
    }
}
