//! BSON values: every scalar type at its edges, strings of hostile characters, nested and
//! deep documents and arrays, and values aimed at each SQL type (in range, or near it).

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, DateTime, JavaScriptCodeWithScope, Regex, Timestamp};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::super::forms::{
    days_from_civil, dec128_special, encode_dec128, uuid_text, DEC128_MAX_COEFFICIENT,
    MILLIS_PER_DAY,
};
use super::super::oracle::Rules;
use super::super::spec::SqlType;

/// Names of unmapped fields.
const EXTRA_NAMES: &[&str] = &["x", "y", "n", "note", "😀", "empty", "deep", "b"];

const INT32_EDGES: &[i32] = &[
    0,
    1,
    -1,
    i32::MIN,
    i32::MAX,
    32_767,
    32_768,
    -32_768,
    -32_769,
    16_777_216,
    16_777_217,
    -16_777_217,
];
const INT64_EDGES: &[i64] = &[
    i64::MIN,
    i64::MAX,
    1 << 53,
    (1 << 53) + 1,
    -(1 << 53) - 1,
    1 << 31,
    -(1 << 31) - 1,
    (1 << 24) + 1,
    1 << 62,
    i64::MAX - 1023,
    0,
    -1,
];
const DOUBLE_EDGES: &[f64] = &[
    0.0,
    -0.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.1,
    1.5,
    5.0,
    -2.0,
    1e300,
    -1e300,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    5e-324,
    9_007_199_254_740_992.0,
    9_007_199_254_740_994.0,
    9.223_372_036_854_776e18,
    -9.223_372_036_854_776e18,
    32_767.0,
    32_768.0,
    -32_769.0,
    2_147_483_647.0,
    2_147_483_648.0,
    16_777_217.0,
    3.402_823_466_385_288_6e38,
    6.805_646_932_770_577e38,
    1.175_494_350_822_287_5e-38,
    1e-7,
    123.456,
    0.300_000_000_000_000_04,
    1e16,
    1e15,
    1e21,
    1e-5,
    0.5,
];

fn int32() -> BoxedStrategy<Bson> {
    prop_oneof![select(INT32_EDGES), any::<i32>(), -1000i32..1000]
        .prop_map(Bson::Int32)
        .boxed()
}

fn int64() -> BoxedStrategy<Bson> {
    prop_oneof![select(INT64_EDGES), any::<i64>(), -1000i64..1000]
        .prop_map(Bson::Int64)
        .boxed()
}

fn double() -> BoxedStrategy<Bson> {
    prop_oneof![
        3 => select(DOUBLE_EDGES),
        1 => any::<u64>().prop_map(f64::from_bits),
        2 => (-100_000i32..100_000).prop_map(|i| f64::from(i) / 8.0),
        1 => any::<f32>().prop_map(f64::from),
    ]
    .prop_map(Bson::Double)
    .boxed()
}

/// Decimal128: NaN, ±Infinity, ±0 at any exponent, 1 to 34 digits, exponents near zero and
/// at both ends, and values at the edges of the other number types.
fn decimal128() -> BoxedStrategy<Bson> {
    let exp = prop_oneof![
        6 => -12i64..12,
        1 => -6176i64..=6111,
        1 => select(vec![-6176i64, 6111, -6143, 6144 - 34, -400, 400, -20, 20]),
    ];
    let digits = prop_oneof![
        3 => 0u128..1000,
        2 => any::<u128>().prop_map(|c| c % (DEC128_MAX_COEFFICIENT + 1)),
        1 => (1u32..=34).prop_map(|n| 10u128.pow(n - 1)),
        1 => Just(DEC128_MAX_COEFFICIENT),
    ];
    let finite = (any::<bool>(), digits, exp)
        .prop_map(|(neg, c, e)| Bson::Decimal128(encode_dec128(neg, c, e)));
    let texts = select(vec![
        "0.1",
        "12.50",
        "1.05E+3",
        "1E+2",
        "1.000",
        "-0",
        "-0.00",
        "0E-6176",
        "0.10000000000000001",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775809",
        "32767",
        "32768",
        "16777217",
        "9007199254740993",
        "1.5",
        "2.0",
        "3.4028235E+38",
        "1E-400",
        "1E+400",
    ])
    .prop_map(|t| Bson::Decimal128(t.parse().unwrap()));
    let special = (any::<bool>(), any::<bool>())
        .prop_map(|(nan, neg)| Bson::Decimal128(dec128_special(nan, neg)));
    prop_oneof![4 => finite, 2 => texts, 1 => special].boxed()
}

pub(super) fn pg_min_millis() -> i64 {
    days_from_civil(-4713, 11, 24) * MILLIS_PER_DAY
}

fn date_edges() -> Vec<i64> {
    let pg_date_end = (days_from_civil(5_874_898, 1, 1) - 1) * MILLIS_PER_DAY;
    let iso_max = (days_from_civil(262_142, 12, 31) + 1) * MILLIS_PER_DAY - 1;
    let iso_min = days_from_civil(-262_143, 1, 1) * MILLIS_PER_DAY;
    vec![
        0,
        -1,
        1,
        pg_min_millis(),
        pg_min_millis() - 1,
        pg_min_millis() + 1,
        pg_min_millis() - MILLIS_PER_DAY,
        i64::MIN,
        i64::MAX,
        i64::MAX / 1000,
        i64::MAX / 1000 + 1,
        i64::MIN / 1000,
        i64::MIN / 1000 - 1,
        253_402_300_799_999,
        253_402_300_800_000,
        -62_167_219_200_000,
        -62_167_219_200_001,
        iso_max,
        iso_max + 1,
        iso_min,
        iso_min - 1,
        pg_date_end,
        pg_date_end + MILLIS_PER_DAY,
        1_704_164_645_678,
    ]
}

fn date() -> BoxedStrategy<Bson> {
    prop_oneof![
        2 => select(date_edges()),
        2 => -5_000_000_000_000i64..5_000_000_000_000,
        1 => any::<i64>(),
        2 => (-1_000_000i64..1_000_000).prop_map(|d| d * MILLIS_PER_DAY),
    ]
    .prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms)))
    .boxed()
}

/// A string that `world` turns into bytes that are not UTF-8 (`C3 28 FF`, same length) when
/// it inserts a document: BSON that drivers do not check and MongoDB stores.
pub const INVALID_UTF8: &str = "\u{1}\u{2}\u{3}BAD";

/// Characters worth a string: ASCII, accents, CJK, astral, BOM, non-characters, controls,
/// quotes, backslashes, line separators; U+0000 when the rules handle it.
pub(super) fn string(rules: Rules) -> BoxedStrategy<String> {
    let mut specials = vec![
        'é',
        'ß',
        '日',
        '\u{1F600}',
        '\u{10FFFF}',
        '\u{FEFF}',
        '\u{FFFF}',
        '\u{7F}',
        '\u{1}',
        '\u{1F}',
        '\n',
        '\t',
        '"',
        '\\',
        '\u{200B}',
        '\u{301}',
        '\u{2028}',
        '\'',
        '{',
        '}',
    ];
    if rules.nul {
        specials.push('\0');
    }
    let ch = prop_oneof![3 => proptest::char::range(' ', '~'), 1 => select(specials)];
    let free = vec(ch, 0..14).prop_map(String::from_iter);
    let invalid = if rules.invalid_utf8 { 1 } else { 0 };
    let shaped = prop_oneof![
        invalid => Just(INVALID_UTF8.to_owned()),
        1 => any::<[u8; 16]>().prop_map(|b| uuid_text(&b)),
        1 => any::<[u8; 16]>().prop_map(|b| uuid_text(&b).to_uppercase()),
        1 => any::<[u8; 12]>().prop_map(|b| ObjectId::from_bytes(b).to_hex()),
        1 => select(vec![
            "1",
            "1.5",
            "-0",
            "true",
            "NaN",
            "",
            "9007199254740993",
            "2024-01-02T03:04:05.678Z"
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{7,12}",
    ];
    prop_oneof![4 => free, 1 => shaped].boxed()
}

pub(super) fn binary() -> BoxedStrategy<Bson> {
    let subtype = select(vec![0u8, 1, 2, 3, 4, 4, 5, 6, 7, 8, 0x80, 0x85]);
    let bytes = prop_oneof![vec(any::<u8>(), 0..20), vec(any::<u8>(), 16..=16)];
    (subtype, bytes)
        .prop_map(|(s, bytes)| {
            Bson::Binary(Binary {
                subtype: BinarySubtype::from(s),
                bytes,
            })
        })
        .boxed()
}

pub(super) fn uuid_binary() -> BoxedStrategy<Bson> {
    any::<[u8; 16]>()
        .prop_map(|b| {
            Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                bytes: b.to_vec(),
            })
        })
        .boxed()
}

pub(super) fn object_id() -> BoxedStrategy<Bson> {
    any::<[u8; 12]>()
        .prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b)))
        .boxed()
}

fn db_pointer() -> BoxedStrategy<Bson> {
    any::<[u8; 12]>()
        .prop_map(|b| {
            let hex = ObjectId::from_bytes(b).to_hex();
            Bson::try_from(
                serde_json::json!({"$dbPointer": {"$ref": "db.c", "$id": {"$oid": hex}}}),
            )
            .unwrap()
        })
        .boxed()
}

/// Every BSON scalar type, with edge values.
pub(super) fn scalar(rules: Rules) -> BoxedStrategy<Bson> {
    let regex = (
        select(vec!["^a", "x.*y", "", "[\"\\\\]", "é+"]),
        "[imsux]{0,3}",
    )
        .prop_map(|(pattern, options)| {
            let mut o: Vec<char> = options.chars().collect();
            o.sort_unstable();
            o.dedup();
            Bson::RegularExpression(Regex {
                pattern: pattern.to_owned(),
                options: o.into_iter().collect(),
            })
        });
    prop_oneof![
        3 => int32(),
        3 => int64(),
        4 => double(),
        4 => decimal128(),
        6 => string(rules).prop_map(Bson::String),
        2 => any::<bool>().prop_map(Bson::Boolean),
        2 => Just(Bson::Null),
        1 => Just(Bson::Undefined),
        2 => object_id(),
        4 => date(),
        3 => binary(),
        1 => (any::<u32>(), any::<u32>())
            .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
        1 => regex,
        1 => string(rules).prop_map(Bson::JavaScriptCode),
        1 => string(rules).prop_map(|code| {
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code,
                scope: bson::doc! {"x": 1},
            })
        }),
        1 => string(rules).prop_map(Bson::Symbol),
        1 => Just(Bson::MinKey),
        1 => Just(Bson::MaxKey),
        1 => db_pointer(),
        1 => object_id().prop_map(|id| Bson::Document(bson::doc! {"$ref": "other", "$id": id})),
    ]
    .boxed()
}

pub(super) fn field_name() -> BoxedStrategy<String> {
    prop_oneof![
        select(EXTRA_NAMES).prop_map(str::to_owned),
        "[a-zA-Z_][a-zA-Z0-9_ ]{0,6}",
    ]
    .boxed()
}

/// Any value: scalars, documents and arrays (possibly empty) nested a few levels, and now
/// and then a deeply nested one.
pub(super) fn any_value(rules: Rules) -> BoxedStrategy<Bson> {
    let nested = scalar(rules).prop_recursive(3, 16, 4, move |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Bson::Array),
            vec((field_name(), inner), 0..4)
                .prop_map(|fields| Bson::Document(fields.into_iter().collect())),
        ]
    });
    let deep = (1usize..40, any::<bool>()).prop_map(|(depth, arrays)| {
        let mut v = Bson::Int32(depth as i32);
        for i in 0..depth {
            v = if arrays && i % 2 == 0 {
                Bson::Array(vec![v])
            } else {
                Bson::Document(bson::doc! {"d": v})
            };
        }
        v
    });
    prop_oneof![12 => nested, 1 => deep].boxed()
}

/// Values near `ty`: of the types it takes, at and beyond its edges.
fn edgy(ty: &SqlType, rules: Rules) -> BoxedStrategy<Bson> {
    let numbers = || prop_oneof![int32(), int64(), double(), decimal128()].boxed();
    match ty {
        SqlType::Text | SqlType::Varchar(_) => prop_oneof![
            4 => string(rules).prop_map(Bson::String),
            1 => scalar(rules),
        ]
        .boxed(),
        SqlType::SmallInt | SqlType::Integer | SqlType::BigInt | SqlType::Numeric(_) => numbers(),
        SqlType::Real | SqlType::Double => prop_oneof![
            numbers(),
            any::<f32>().prop_map(|f| Bson::Double(f64::from(f))),
        ]
        .boxed(),
        SqlType::Boolean => any::<bool>().prop_map(Bson::Boolean).boxed(),
        SqlType::Timestamptz | SqlType::Timestamp => date(),
        SqlType::Date => prop_oneof![
            (-3_000_000i64..3_000_000)
                .prop_map(|d| Bson::DateTime(DateTime::from_millis(d * MILLIS_PER_DAY))),
            date(),
        ]
        .boxed(),
        SqlType::Uuid => prop_oneof![
            uuid_binary(),
            any::<[u8; 16]>().prop_map(|b| Bson::String(uuid_text(&b))),
            any::<[u8; 16]>().prop_map(|b| Bson::String(uuid_text(&b).to_uppercase())),
            binary(),
        ]
        .boxed(),
        SqlType::Bytea => prop_oneof![binary(), object_id()].boxed(),
        SqlType::Json | SqlType::Jsonb => any_value(rules),
        SqlType::Array(inner) => {
            let element = prop_oneof![
                8 => edgy(inner, rules),
                1 => Just(Bson::Null),
                1 => any_value(rules),
            ];
            vec(element, 0..5).prop_map(Bson::Array).boxed()
        }
    }
}

/// Values `ty` takes as they are (most of the time).
fn in_range(ty: &SqlType, rules: Rules) -> BoxedStrategy<Bson> {
    let small = || -999i32..1000;
    match ty {
        SqlType::Text => string(rules).prop_map(Bson::String).boxed(),
        SqlType::Varchar(n) => {
            let n = n.unwrap_or(20) as usize;
            string(rules)
                .prop_map(move |s| Bson::String(s.chars().take(n).collect()))
                .boxed()
        }
        SqlType::SmallInt => (-32_768i32..32_768).prop_map(Bson::Int32).boxed(),
        SqlType::Integer => prop_oneof![
            any::<i32>().prop_map(Bson::Int32),
            small().prop_map(|i| Bson::Double(f64::from(i)))
        ]
        .boxed(),
        SqlType::BigInt => prop_oneof![
            any::<i64>().prop_map(Bson::Int64),
            any::<i32>().prop_map(Bson::Int32)
        ]
        .boxed(),
        SqlType::Numeric(spec) => {
            let (p, s) = match spec {
                None => (30, 6),
                Some((p, s)) => (*p, s.unwrap_or(0)),
            };
            let digits = p.min(30);
            (any::<bool>(), any::<u128>(), 0..=s.min(digits))
                .prop_map(move |(neg, c, scale)| {
                    // At most p - s digits before the point and `scale` (≤ s) after it.
                    let int_digits = (p - s).min(digits - scale);
                    let c = c % 10u128.pow(int_digits + scale);
                    Bson::Decimal128(encode_dec128(neg, c, -i64::from(scale)))
                })
                .boxed()
        }
        SqlType::Real => prop_oneof![
            any::<f32>().prop_map(|f| Bson::Double(f64::from(f))),
            (-16_777_216i32..16_777_217).prop_map(Bson::Int32),
        ]
        .boxed(),
        SqlType::Double => prop_oneof![
            any::<f64>().prop_map(Bson::Double),
            small().prop_map(|i| Bson::Double(f64::from(i) / 4.0)),
        ]
        .boxed(),
        SqlType::Boolean => any::<bool>().prop_map(Bson::Boolean).boxed(),
        SqlType::Timestamptz | SqlType::Timestamp => (-5_000_000_000_000i64..5_000_000_000_000)
            .prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms)))
            .boxed(),
        SqlType::Date => (-1_000_000i64..1_000_000)
            .prop_map(|d| Bson::DateTime(DateTime::from_millis(d * MILLIS_PER_DAY)))
            .boxed(),
        SqlType::Uuid => prop_oneof![
            uuid_binary(),
            any::<[u8; 16]>().prop_map(|b| Bson::String(uuid_text(&b))),
        ]
        .boxed(),
        SqlType::Bytea => prop_oneof![binary(), object_id()].boxed(),
        SqlType::Json | SqlType::Jsonb => any_value(rules),
        SqlType::Array(inner) => {
            let element = prop_oneof![6 => in_range(inner, rules), 1 => Just(Bson::Null)];
            vec(element, 0..5).prop_map(Bson::Array).boxed()
        }
    }
}

pub(super) fn fitting(ty: &SqlType, rules: Rules) -> BoxedStrategy<Bson> {
    prop_oneof![3 => in_range(ty, rules), 1 => edgy(ty, rules)].boxed()
}

/// A value for a column: one that fits (tame documents), or one that mostly fits and else is
/// anything (wild ones).
pub(super) fn for_column(ty: &SqlType, rules: Rules, wild: bool) -> BoxedStrategy<Bson> {
    if wild {
        prop_oneof![3 => fitting(ty, rules), 2 => any_value(rules)].boxed()
    } else {
        fitting(ty, rules)
    }
}
