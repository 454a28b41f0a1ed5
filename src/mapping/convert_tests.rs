//! Unit tests of the conversion rules (`convert.rs`): one or more per rule of the table in
//! `docs/mappings.md`, then whole documents through the SPEC's example mapping.

use std::path::Path;

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{bson, doc, Binary, Bson, DateTime, Decimal128, Document};
use serde_json::json;

use super::convert::{
    convert_document, convert_key, convert_raw_document, convert_value, extra_props, ConvertError,
    Converted,
};
use super::load::load_str;
use super::model::{CollectionMapping, OnError, PgType};
use super::types::parse_type;
use super::value::PgValue;

/// `convert_document`, checked against `convert_raw_document` of the same document's bytes:
/// the full sync converts bytes, streaming converts parsed documents, and both must agree on
/// every row and every refusal.
fn convert_both(m: &CollectionMapping, d: &Document) -> Result<Converted, ConvertError> {
    let parsed = convert_document(m, d);
    let raw = bson::RawDocumentBuf::from_document(d).unwrap();
    assert_eq!(
        convert_raw_document(m, &raw),
        parsed,
        "raw and parsed differ for {d}"
    );
    parsed
}

fn ty(text: &str) -> PgType {
    parse_type(text).unwrap()
}

fn ok(v: Bson, t: &str) -> PgValue {
    convert_value(&v, &ty(t)).unwrap_or_else(|e| panic!("{v:?} into {t}: {e}"))
}

fn refused(v: Bson, t: &str) -> String {
    match convert_value(&v, &ty(t)) {
        Ok(got) => panic!("{v:?} into {t} was accepted as {got:?}"),
        Err(why) => why,
    }
}

fn dec(text: &str) -> Bson {
    Bson::Decimal128(text.parse::<Decimal128>().unwrap())
}

fn num(text: &str) -> PgValue {
    PgValue::Numeric(text.to_owned())
}

#[test]
fn null_is_null_for_every_type() {
    for t in [
        "text",
        "integer",
        "numeric(3,1)",
        "uuid",
        "jsonb",
        "date",
        "text[]",
    ] {
        assert_eq!(ok(Bson::Null, t), PgValue::Null);
        assert_eq!(ok(Bson::Undefined, t), PgValue::Null);
    }
}

#[test]
fn integers_fit_exactly_or_are_refused() {
    assert_eq!(ok(Bson::Int32(5), "smallint"), PgValue::Int2(5));
    assert_eq!(ok(Bson::Int64(-7), "integer"), PgValue::Int4(-7));
    assert_eq!(ok(Bson::Double(2.0), "bigint"), PgValue::Int8(2));
    assert_eq!(ok(Bson::Double(-0.0), "integer"), PgValue::Int4(0));
    assert_eq!(ok(dec("1E+2"), "integer"), PgValue::Int4(100));
    assert_eq!(ok(dec("-3.000"), "smallint"), PgValue::Int2(-3));
    assert!(refused(Bson::Int32(40_000), "smallint").contains("out of range"));
    assert!(refused(Bson::Int64(1 << 40), "integer").contains("out of range"));
    assert!(refused(Bson::Double(1.5), "integer").contains("not a whole number"));
    assert!(refused(Bson::Double(f64::NAN), "bigint").contains("not a whole number"));
    assert!(refused(Bson::Double(9.3e18), "bigint").contains("out of range"));
    assert!(refused(Bson::Double(9_223_372_036_854_775_808.0), "bigint").contains("out of range"));
    assert_eq!(
        ok(Bson::Double(-9_223_372_036_854_775_808.0), "bigint"),
        PgValue::Int8(i64::MIN)
    );
    assert!(refused(dec("1.5"), "bigint").contains("not a whole number"));
    assert!(refused(dec("1E+40"), "bigint").contains("out of range"));
    assert!(refused(dec("NaN"), "integer").contains("not a number"));
    refused(Bson::Boolean(true), "integer");
    refused(Bson::String("5".into()), "integer");
}

#[test]
fn floats_are_exact_or_refused() {
    assert_eq!(
        ok(Bson::Int64(1 << 53), "double precision"),
        PgValue::Float8(9_007_199_254_740_992.0)
    );
    assert!(refused(Bson::Int64((1 << 53) + 1), "double precision").contains("no exact"));
    refused(Bson::Int64(i64::MAX), "double precision");
    assert_eq!(ok(Bson::Double(0.1), "float8"), PgValue::Float8(0.1));
    match ok(Bson::Double(f64::NAN), "double precision") {
        PgValue::Float8(f) => assert!(f.is_nan()),
        other => panic!("{other:?}"),
    }
    assert_eq!(ok(dec("0.1"), "double precision"), PgValue::Float8(0.1));
    assert_eq!(
        ok(dec("1.05E+3"), "double precision"),
        PgValue::Float8(1050.0)
    );
    // Underflows to 0.0: not the same number.
    refused(dec("1E-400"), "double precision");
    assert_eq!(
        ok(dec("-Infinity"), "double precision"),
        PgValue::Float8(f64::NEG_INFINITY)
    );
    refused(dec("0.10000000000000001"), "double precision");
    refused(dec("1E+400"), "double precision");
    assert_eq!(ok(Bson::Double(1.5), "real"), PgValue::Float4(1.5));
    refused(Bson::Double(0.1), "real");
    assert_eq!(
        ok(Bson::Int32(16_777_216), "real"),
        PgValue::Float4(16_777_216.0)
    );
    refused(Bson::Int32(16_777_217), "real");
    assert_eq!(ok(dec("0.1"), "real"), PgValue::Float4(0.1));
}

#[test]
fn numeric_keeps_every_digit() {
    assert_eq!(
        ok(Bson::Int64(i64::MIN), "numeric"),
        num("-9223372036854775808")
    );
    assert_eq!(ok(Bson::Double(0.1), "numeric"), num("0.1"));
    assert_eq!(ok(Bson::Double(-2.5e-7), "numeric"), num("-0.00000025"));
    let big = ok(Bson::Double(1e300), "numeric");
    assert_eq!(big, num(&format!("1{}", "0".repeat(300))));
    assert_eq!(ok(dec("12.50"), "numeric"), num("12.50"));
    assert_eq!(ok(dec("1.05E+3"), "numeric"), num("1050"));
    assert_eq!(ok(dec("-0"), "numeric"), num("0"));
    assert!(refused(dec("NaN"), "numeric").contains("NaN"));
    refused(dec("Infinity"), "numeric");
    refused(Bson::Double(f64::INFINITY), "numeric");
    refused(Bson::String("1".into()), "numeric");
}

#[test]
fn numeric_with_precision_and_scale_refuses_rounding_and_overflow() {
    assert_eq!(ok(dec("12.5"), "numeric(12,2)"), num("12.50"));
    assert_eq!(ok(dec("12.500"), "numeric(12,2)"), num("12.50"));
    assert_eq!(ok(Bson::Int32(7), "numeric(3,1)"), num("7.0"));
    assert_eq!(ok(Bson::Double(0.25), "numeric(3,2)"), num("0.25"));
    assert_eq!(ok(Bson::Int32(99), "numeric(2)"), num("99"));
    assert!(refused(dec("12.345"), "numeric(12,2)").contains("round"));
    assert!(refused(Bson::Double(0.1 + 0.2), "numeric(12,2)").contains("round"));
    assert!(refused(dec("1234"), "numeric(4,2)").contains("digits before the point"));
    refused(Bson::Int32(100), "numeric(2)");
}

#[test]
fn object_ids_become_hex_text_or_twelve_bytes() {
    let oid = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
    assert_eq!(
        ok(Bson::ObjectId(oid), "text"),
        PgValue::Text("65a1b2c3d4e5f60718293a4b".into())
    );
    assert_eq!(
        ok(Bson::ObjectId(oid), "bytea"),
        PgValue::Bytea(oid.bytes().to_vec())
    );
    refused(Bson::ObjectId(oid), "uuid");
    refused(Bson::ObjectId(oid), "varchar(10)");
}

#[test]
fn dates_keep_the_instant() {
    let d = Bson::DateTime(DateTime::from_millis(1_704_164_645_678));
    assert_eq!(
        ok(d.clone(), "timestamptz"),
        PgValue::Timestamptz(1_704_164_645_678_000)
    );
    assert_eq!(
        ok(d.clone(), "timestamp"),
        PgValue::Timestamp(1_704_164_645_678_000)
    );
    assert!(refused(d.clone(), "date").contains("not midnight"));
    assert_eq!(
        ok(d, "text"),
        PgValue::Text("2024-01-02T03:04:05.678Z".into())
    );
    let midnight = Bson::DateTime(DateTime::from_millis(19_724 * 86_400_000));
    assert_eq!(ok(midnight, "date"), PgValue::Date(19_724));
    let before = Bson::DateTime(DateTime::from_millis(-86_400_000));
    assert_eq!(ok(before, "date"), PgValue::Date(-1));
    let ancient = Bson::DateTime(DateTime::from_millis(-300_000 * 365 * 86_400_000));
    assert!(refused(ancient.clone(), "timestamptz").contains("out of range"));
    assert!(refused(ancient, "date").contains("out of range"));
    refused(
        Bson::DateTime(DateTime::from_millis(i64::MAX)),
        "timestamptz",
    );
    refused(Bson::String("2024-01-02".into()), "date");
    refused(Bson::Int64(0), "timestamptz");
}

#[test]
fn uuids_from_subtype_4_or_canonical_strings() {
    let bytes: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
    let bin = Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: bytes.to_vec(),
    });
    assert_eq!(ok(bin.clone(), "uuid"), PgValue::Uuid(bytes));
    assert_eq!(ok(bin, "bytea"), PgValue::Bytea(bytes.to_vec()));
    let text = "00112233-4455-6677-8899-aabbccddeeff";
    assert_eq!(ok(Bson::String(text.into()), "uuid"), PgValue::Uuid(bytes));
    assert_eq!(
        ok(Bson::String(text.to_uppercase()), "uuid"),
        PgValue::Uuid(bytes)
    );
    refused(
        Bson::String("00112233445566778899aabbccddeeff".into()),
        "uuid",
    );
    refused(
        Bson::String("{00112233-4455-6677-8899-aabbccddeeff}".into()),
        "uuid",
    );
    let legacy = Bson::Binary(Binary {
        subtype: BinarySubtype::UuidOld,
        bytes: bytes.to_vec(),
    });
    assert!(refused(legacy, "uuid").contains("subtype 3"));
}

#[test]
fn strings_and_the_text_form_of_scalars() {
    assert_eq!(
        ok(Bson::String("héllo".into()), "varchar(5)"),
        PgValue::Text("héllo".into())
    );
    assert!(refused(Bson::String("héllo!".into()), "varchar(5)").contains("6 characters"));
    assert_eq!(ok(Bson::Int32(5), "text"), PgValue::Text("5".into()));
    assert_eq!(ok(Bson::Double(5.0), "text"), PgValue::Text("5.0".into()));
    assert_eq!(ok(Bson::Double(0.1), "text"), PgValue::Text("0.1".into()));
    assert_eq!(
        ok(Bson::Double(f64::NAN), "text"),
        PgValue::Text("NaN".into())
    );
    assert_eq!(
        ok(Bson::Boolean(true), "text"),
        PgValue::Text("true".into())
    );
    assert_eq!(ok(dec("1.05E+3"), "text"), PgValue::Text("1.05E+3".into()));
    assert_eq!(
        ok(Bson::Int64(9_007_199_254_740_993), "text"),
        PgValue::Text("9007199254740993".into())
    );
    assert!(refused(Bson::String("a\0b".into()), "text").contains("NUL"));
    assert!(refused(bson!({"a": 1}), "text").contains("json"));
    refused(bson!([1]), "text");
    refused(Bson::String("true".into()), "boolean");
    assert_eq!(ok(Bson::Boolean(false), "boolean"), PgValue::Bool(false));
}

#[test]
fn json_takes_any_value_without_nul() {
    assert_eq!(
        ok(bson!({"a": [1, {"b": null}]}), "jsonb"),
        PgValue::Json(json!({"a": [1, {"b": null}]}))
    );
    assert_eq!(ok(Bson::Int32(3), "json"), PgValue::Json(json!(3)));
    assert_eq!(ok(bson!([]), "jsonb"), PgValue::Json(json!([])));
    assert!(refused(bson!({"a": "x\0"}), "jsonb").contains("NUL"));
    refused(bson!({"a\0": 1}), "json");
}

#[test]
fn arrays_convert_element_wise() {
    assert_eq!(
        ok(bson!([1, null, 3]), "integer[]"),
        PgValue::Array(vec![PgValue::Int4(1), PgValue::Null, PgValue::Int4(3)])
    );
    assert_eq!(ok(bson!([]), "text[]"), PgValue::Array(vec![]));
    assert!(refused(bson!([1, 2.5]), "integer[]").starts_with("element 1:"));
    assert!(refused(bson!([[1]]), "integer[]").contains("one-dimensional"));
    assert!(refused(Bson::Int32(1), "integer[]").contains("not an array"));
}

fn shop() -> CollectionMapping {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/shop/orders.yml"),
    )
    .unwrap();
    load_str(&text, Path::new("orders.yml"))
        .unwrap()
        .collections
        .remove(0)
}

fn order() -> Document {
    doc! {
        "_id": "o1",
        "customer": { "_id": "c9", "email": "a@example.com", "vip": true },
        "total": dec("12.5"),
        "placedAt": DateTime::from_millis(1_000),
        "tags": ["new", "gift"],
        "items": [ { "sku": "A", "qty": 2 }, { "sku": "B", "qty": 1, "note": "x" } ],
        "notes": "leave at door",
        "meta": {},
    }
}

#[test]
fn spec_example_document_becomes_rows() {
    let m = shop();
    let c = convert_both(&m, &order()).unwrap();
    assert_eq!(c.key, PgValue::Text("o1".into()));
    assert!(c.nulled.is_empty());
    assert_eq!(
        c.rows.parent,
        vec![
            PgValue::Text("o1".into()),
            PgValue::Text("c9".into()),
            PgValue::Text("a@example.com".into()),
            num("12.50"),
            PgValue::Timestamptz(1_000_000),
            PgValue::Array(vec![
                PgValue::Text("new".into()),
                PgValue::Text("gift".into())
            ]),
            // customer.vip stays (customer not emptied); meta was empty already, so it stays.
            PgValue::Json(json!({"customer": {"vip": true}, "notes": "leave at door", "meta": {}})),
        ]
    );
    let key = || PgValue::Text("o1".into());
    assert_eq!(
        c.rows.children,
        vec![vec![
            vec![
                key(),
                PgValue::Int4(0),
                PgValue::Text("A".into()),
                PgValue::Int4(2)
            ],
            vec![
                key(),
                PgValue::Int4(1),
                PgValue::Text("B".into()),
                PgValue::Int4(1)
            ],
        ]]
    );
}

#[test]
fn extra_props_drops_emptied_sub_documents_and_is_empty_object_at_least() {
    let m = shop();
    let mut d = order();
    d.insert("customer", doc! { "_id": "c", "email": "e" });
    d.remove("notes");
    d.remove("meta");
    assert_eq!(extra_props(&m, &d), Document::new());
    let c = convert_both(&m, &d).unwrap();
    assert_eq!(c.rows.parent.last(), Some(&PgValue::Json(json!({}))));
}

#[test]
fn missing_fields_and_arrays_are_null_or_no_rows() {
    let m = shop();
    let c = convert_both(&m, &doc! { "_id": "o2", "items": null }).unwrap();
    assert_eq!(c.rows.parent[1], PgValue::Null);
    assert_eq!(c.rows.parent[5], PgValue::Null);
    assert_eq!(c.rows.children, vec![Vec::<Vec<PgValue>>::new()]);
    let c = convert_both(&m, &doc! { "_id": "o3", "tags": [], "items": [] }).unwrap();
    assert_eq!(c.rows.parent[5], PgValue::Array(vec![]));
    assert!(c.rows.children[0].is_empty());
}

#[test]
fn on_error_decides_between_dead_letter_null_and_fail() {
    let mut m = shop();
    let mut d = order();
    d.insert("total", dec("12.345"));
    let e = convert_both(&m, &d).unwrap_err();
    assert_eq!(
        (e.column.as_str(), e.path.as_str(), e.fatal),
        ("total", "total", false)
    );
    assert!(e.reason.contains("round"), "{e}");
    assert!(e
        .to_string()
        .starts_with("column `total` (source `total`): "));

    m.on_error = OnError::Fail;
    assert!(convert_both(&m, &d).unwrap_err().fatal);

    m.on_error = OnError::Null;
    d.insert("items", doc! { "not": "an array" });
    let c = convert_both(&m, &d).unwrap();
    assert_eq!(c.rows.parent[3], PgValue::Null);
    assert_eq!(c.nulled.len(), 2, "{:?}", c.nulled);
    assert!(c.nulled[0].to_string().starts_with("total (total): "));
    assert!(c.nulled[1]
        .to_string()
        .starts_with("order_items (items): a Document is not an array"));
    assert!(c.rows.children[0].is_empty());
}

#[test]
fn child_column_errors_name_the_element() {
    let m = shop();
    let mut d = order();
    d.insert("items", bson!([{ "sku": "A", "qty": 1.5 }]));
    let e = convert_both(&m, &d).unwrap_err();
    assert_eq!(e.column, "order_items.qty");
    assert_eq!(e.path, "items.0.qty");
    d.insert("items", bson!(["A"]));
    let e = convert_both(&m, &d).unwrap_err();
    assert!(e.reason.contains("element 0 is a String"), "{e}");
}

#[test]
fn paths_never_go_through_arrays() {
    let m = shop();
    let mut d = order();
    d.insert("customer", bson!([{ "_id": "c" }]));
    let e = convert_both(&m, &d).unwrap_err();
    assert_eq!(e.column, "customer_id");
    assert!(e.reason.contains("`customer` is an array"), "{e}");
    d.insert("customer", "just a name");
    let e = convert_both(&m, &d).unwrap_err();
    assert!(
        e.reason.contains("`customer` is a String, not a document"),
        "{e}"
    );
}

#[test]
fn scalar_array_children_use_dot() {
    let text = "database: d\ncollections:\n  c:\n    columns:\n      - { name: id, source: _id, type: bigint }\n    children:\n      - { table: t, source: tags, parent_key: c_id, columns: [ { name: tag, source: ., type: text } ] }\n";
    let m = load_str(text, Path::new("x.yml"))
        .unwrap()
        .collections
        .remove(0);
    let c = convert_both(&m, &doc! { "_id": 7_i64, "tags": ["a", null] }).unwrap();
    assert_eq!(c.key, PgValue::Int8(7));
    assert_eq!(
        c.rows.children[0],
        vec![
            vec![
                PgValue::Int8(7),
                PgValue::Int4(0),
                PgValue::Text("a".into())
            ],
            vec![PgValue::Int8(7), PgValue::Int4(1), PgValue::Null],
        ]
    );
}

#[test]
fn keys_are_never_null() {
    let mut m = shop();
    m.on_error = OnError::Null;
    let e = convert_both(&m, &doc! { "x": 1 }).unwrap_err();
    assert!(e.reason.contains("no _id") && !e.fatal);
    let e = convert_key(&m, &Bson::Null).unwrap_err();
    assert_eq!(e.path, "_id");
    assert!(!e.fatal);
    // A text key takes ObjectId and String _ids; numbers only under `id_type: number`.
    assert!(convert_key(&m, &Bson::Int32(5)).is_err());
    m.id_type = crate::mapping::model::IdType::Number;
    assert_eq!(
        convert_key(&m, &Bson::Int32(5)).unwrap(),
        PgValue::Text("5".into())
    );
    m.on_error = OnError::Fail;
    assert!(convert_key(&m, &bson!({"a": 1})).unwrap_err().fatal);
}

#[test]
fn on_nul_strip_and_replace_clean_every_string_but_the_id() {
    let mut m = shop();
    let mut d = order();
    d.insert("notes", "nul\0inside");
    d.insert("customer", doc! {"_id": "c\09", "email": "a\0@example.com"});
    m.on_nul = crate::mapping::model::OnNul::Strip;
    let c = convert_both(&m, &d).unwrap();
    assert!(c
        .rows
        .parent
        .contains(&PgValue::Text("a@example.com".into())));
    assert!(c.rows.parent.contains(&PgValue::Text("c9".into())));
    m.on_nul = crate::mapping::model::OnNul::Replace;
    let c = convert_both(&m, &d).unwrap();
    assert!(c
        .rows
        .parent
        .contains(&PgValue::Text("a\u{FFFD}@example.com".into())));
    // The _id is never altered: stripping could make two documents share a row.
    d.insert("_id", "o\0x");
    assert!(convert_both(&m, &d).unwrap_err().reason.contains("NUL"));
}

#[test]
fn unstorable_extra_props_follow_on_error() {
    let mut m = shop();
    let mut d = order();
    d.insert("notes", "nul\0inside");
    let e = convert_both(&m, &d).unwrap_err();
    assert_eq!(e.column, "extra");
    assert!(e.reason.contains("NUL"), "{e}");
    m.on_error = OnError::Null;
    let c = convert_both(&m, &d).unwrap();
    assert_eq!(c.rows.parent.last(), Some(&PgValue::Null));
    assert_eq!(c.nulled.len(), 1);
    assert!(
        c.nulled[0].to_string().starts_with("extra "),
        "{:?}",
        c.nulled
    );
}
