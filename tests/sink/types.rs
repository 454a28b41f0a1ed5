//! Every `PgValue` variant, arrays included, written through the sink and read back equal.

use tributary::mapping::model::{CollectionMapping, MappingSet, OnError, PgType};
use tributary::mapping::value::PgValue;
use tributary::sink::{Batch, Change, DocumentRows, Sink};

use super::{column, sink_for};
use crate::support::fresh_database;

fn types() -> Vec<(&'static str, PgType)> {
    use PgType::*;
    let scalars = vec![
        ("c_text", Text),
        ("c_varchar", Varchar(Some(20))),
        ("c_int2", SmallInt),
        ("c_int4", Integer),
        ("c_int8", BigInt),
        ("c_float4", Real),
        ("c_float8", DoublePrecision),
        ("c_numeric", Numeric(None)),
        ("c_bool", Boolean),
        ("c_timestamptz", Timestamptz),
        ("c_timestamp", Timestamp),
        ("c_date", Date),
        ("c_uuid", Uuid),
        ("c_bytea", Bytea),
        ("c_json", Json),
        ("c_jsonb", Jsonb),
    ];
    let arrays: Vec<(&'static str, PgType)> = scalars
        .iter()
        .map(|(n, t)| {
            let name: &'static str = Box::leak(format!("{n}_arr").into_boxed_str());
            (name, Array(Box::new(t.clone())))
        })
        .collect();
    scalars.into_iter().chain(arrays).collect()
}

fn mapping() -> MappingSet {
    let mut columns = vec![column("id", "_id", PgType::Text)];
    columns.extend(types().into_iter().map(|(n, t)| column(n, n, t)));
    MappingSet {
        collections: vec![CollectionMapping {
            database: "db".into(),
            collection: "all_types".into(),
            table: "all_types".into(),
            columns,
            extra_props: None,
            on_error: OnError::Fail,
            on_nul: tributary::mapping::model::OnNul::default(),
            id_type: tributary::mapping::model::IdType::default(),
            children: vec![],
        }],
    }
}

/// Interesting values per scalar column, the first being the "typical" one.
fn samples(name: &str) -> Vec<PgValue> {
    use PgValue::*;
    match name {
        "c_text" => vec![
            Text("héllo ✓ \"quoted\" \\ 'x'".into()),
            Text(String::new()),
        ],
        "c_varchar" => vec![Text("exactly twenty chars".into())],
        "c_int2" => vec![Int2(i16::MIN), Int2(i16::MAX), Int2(0)],
        "c_int4" => vec![Int4(i32::MIN), Int4(i32::MAX)],
        "c_int8" => vec![Int8(i64::MIN), Int8(i64::MAX)],
        "c_float4" => vec![
            Float4(-0.0),
            Float4(f32::NAN),
            Float4(f32::INFINITY),
            Float4(1.0e-40),
            Float4(f32::MAX),
        ],
        "c_float8" => vec![
            Float8(0.1),
            Float8(f64::NAN),
            Float8(f64::NEG_INFINITY),
            Float8(-0.0),
            Float8(5e-324),
            Float8(f64::MAX),
        ],
        "c_numeric" => vec![
            Numeric("-123456789012345678901234567890.123456789".into()),
            Numeric("0".into()),
            Numeric("0.0000000000000000000000000000000001".into()),
            Numeric("9999999999999999999999999999999999".into()),
            Numeric("12.50".into()),
            Numeric("NaN".into()),
        ],
        "c_bool" => vec![Bool(true), Bool(false)],
        "c_timestamptz" => vec![
            Timestamptz(1_700_000_000_123_456),
            Timestamptz(-62_135_596_800_000_000), // 0001-01-01
            Timestamptz(253_402_300_799_999_999), // 9999-12-31T23:59:59.999999
            Timestamptz(0),
        ],
        "c_timestamp" => vec![Timestamp(-1), Timestamp(946_684_800_000_000)],
        "c_date" => vec![Date(19_000), Date(-719_162), Date(2_932_896)],
        "c_uuid" => vec![Uuid(
            *b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff",
        )],
        "c_bytea" => vec![Bytea(vec![0, 1, 0xff, b'\\', b'x']), Bytea(vec![])],
        "c_json" => vec![
            Json(serde_json::json!({"b": [1, 2.5, "x", null, true], "a": {"nested": {}}})),
            Json(serde_json::json!([])),
        ],
        "c_jsonb" => vec![
            Json(serde_json::json!({"z": 1, "a": [{"k": "v"}], "emoji": "✓"})),
            Json(serde_json::json!("just a string")),
        ],
        other => panic!("no samples for {other}"),
    }
}

/// Rows: one per sample index, plus one all-NULL row and one with empty arrays.
fn rows() -> Vec<Vec<PgValue>> {
    let cols = types();
    let depth = cols
        .iter()
        .filter(|(n, _)| !n.ends_with("_arr"))
        .map(|(n, _)| samples(n).len())
        .max()
        .unwrap();
    let mut out = Vec::new();
    for i in 0..depth {
        let mut row = vec![PgValue::Text(format!("row{i}"))];
        for (n, _) in &cols {
            row.push(match n.strip_suffix("_arr") {
                // Arrays: every sample of the scalar column, with a NULL in the middle.
                Some(base) => {
                    let mut items = samples(base);
                    items.insert(items.len() / 2, PgValue::Null);
                    PgValue::Array(items)
                }
                None => {
                    let s = samples(n);
                    s[i % s.len()].clone()
                }
            });
        }
        out.push(row);
    }
    let mut nulls = vec![PgValue::Text("nulls".into())];
    nulls.extend(cols.iter().map(|_| PgValue::Null));
    out.push(nulls);
    let mut empty = vec![PgValue::Text("empty arrays".into())];
    empty.extend(cols.iter().map(|(n, _)| {
        if n.ends_with("_arr") {
            PgValue::Array(vec![])
        } else {
            PgValue::Null
        }
    }));
    out.push(empty);
    out
}

/// Equality that treats floats by bit pattern (NaN == NaN, -0.0 != 0.0).
pub fn same(a: &PgValue, b: &PgValue) -> bool {
    match (a, b) {
        (PgValue::Float4(x), PgValue::Float4(y)) => x.to_bits() == y.to_bits(),
        (PgValue::Float8(x), PgValue::Float8(y)) => x.to_bits() == y.to_bits(),
        (PgValue::Array(x), PgValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

#[tokio::test]
async fn every_value_type_round_trips() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, mapping()).await;
    let written = rows();
    let changes = written
        .iter()
        .map(|r| Change::Upsert {
            collection: 0,
            key: r[0].clone(),
            rows: DocumentRows {
                parent: r.clone(),
                children: vec![],
                ..DocumentRows::default()
            },
        })
        .collect();
    sink.apply(&Batch {
        changes,
        ..Batch::default()
    })
    .await
    .unwrap();

    let names: Vec<String> = std::iter::once("id".to_owned())
        .chain(types().iter().map(|(n, _)| format!("\"{n}\"")))
        .collect();
    for expected in &written {
        let row = db
            .client
            .query_one(
                &format!("SELECT {} FROM all_types WHERE id = $1", names.join(", ")),
                &[&expected[0]],
            )
            .await
            .unwrap();
        for (i, want) in expected.iter().enumerate() {
            let got: PgValue = row.get(i);
            assert!(
                same(&got, want),
                "row {:?}, column {}: wrote {want:?}, read {got:?}",
                expected[0],
                names[i]
            );
        }
    }

    // The text Postgres prints agrees with ours for the types whose text form matters to users.
    let text: (String, String, String) = {
        let r = db
            .client
            .query_one(
                "SELECT c_numeric::text, (c_timestamptz AT TIME ZONE 'UTC')::text, c_uuid::text \
                 FROM all_types WHERE id = 'row0'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        text,
        (
            "-123456789012345678901234567890.123456789".to_owned(),
            "2023-11-14 22:13:20.123456".to_owned(),
            "00112233-4455-6677-8899-aabbccddeeff".to_owned()
        )
    );
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_not_altered() {
    let db = fresh_database().await;
    let mut sink = sink_for(&db, mapping()).await;
    let mut row = rows().remove(0);
    row[3] = PgValue::Text("not a smallint".into()); // c_int2
    let err = sink
        .apply(&Batch {
            changes: vec![Change::Upsert {
                collection: 0,
                key: row[0].clone(),
                rows: DocumentRows {
                    parent: row,
                    children: vec![],
                    ..DocumentRows::default()
                },
            }],
            ..Batch::default()
        })
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("all_types"), "{err}");
    let n: i64 = db
        .client
        .query_one("SELECT count(*) FROM all_types", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

/// The hand-written numeric encoder against Postgres' own parser: thousands of random decimal
/// texts (signs, leading and trailing zeros, exponents, up to 60 digits) sent both in binary
/// (our encoder) and as text (Postgres parses it) must print identically.
#[tokio::test]
async fn numeric_encoder_agrees_with_postgres_parser() {
    use rand::Rng;
    let db = fresh_database().await;
    let mut rng = rand::thread_rng();
    let mut texts: Vec<String> = Vec::new();
    let digits = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect()
    };
    for _ in 0..5000 {
        let mut s = String::new();
        match rng.gen_range(0..3) {
            0 => s.push('-'),
            1 => s.push('+'),
            _ => {}
        }
        let int_len = rng.gen_range(0..30);
        let frac_len = rng.gen_range(0..30);
        s.push_str(&digits(&mut rng, int_len));
        if frac_len > 0 || int_len == 0 {
            s.push('.');
            s.push_str(&digits(&mut rng, frac_len.max(1)));
        }
        if rng.gen_bool(0.2) {
            s.push_str(&format!("e{}", rng.gen_range(-40..40)));
        }
        texts.push(s);
    }
    texts.extend(
        [
            "0", "-0", "0.0", "00.000", "1e0", "1E+5", "9.999e-3", "10000", "0.0001",
        ]
        .map(String::from),
    );
    let binary = PgValue::Array(texts.iter().cloned().map(PgValue::Numeric).collect());
    let rows = db
        .client
        .query(
            "SELECT t, a::text, t::numeric::text FROM unnest($1::numeric[], $2::text[]) AS u(a, t)",
            &[&binary, &texts],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), texts.len());
    for r in rows {
        let (t, ours, theirs): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(ours, theirs, "input {t:?}");
    }
}
