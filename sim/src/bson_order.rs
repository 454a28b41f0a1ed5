//! MongoDB's total order over BSON values, used for sorting, range operators
//! and as the key order of the in-memory collections (documents sorted by `_id`).
//!
//! Values are first ordered by type bracket (MinKey < Undefined < Null <
//! numbers < String/Symbol < Document < Array < Binary < ObjectId < Boolean <
//! DateTime < Timestamp < Regex < DbPointer < JavaScript < JavaScriptWithScope
//! < MaxKey), then by value within the bracket. All numeric types share one
//! bracket and compare by mathematical value; NaN sorts below every other
//! number and equals itself, as in the server.
//!
//! Also owns the exact decoding of Decimal128 ([`Dec`]) that the comparison
//! needs; `update` and `aggregate` reuse it for arithmetic.
//!
//! Nuances of the real server not reproduced: collations (strings always
//! compare byte-wise), and Decimal128 against Double is compared through an
//! `f64` conversion of the decimal rather than exactly.

use std::cmp::Ordering;

use bson::{Bson, Decimal128, Document};

/// A BSON value ordered by [`compare`], usable as a `BTreeMap` key.
#[derive(Clone, Debug)]
pub struct OrderedBson(pub Bson);

impl PartialEq for OrderedBson {
    fn eq(&self, other: &Self) -> bool {
        compare(&self.0, &other.0) == Ordering::Equal
    }
}

impl Eq for OrderedBson {}

impl PartialOrd for OrderedBson {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBson {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}

/// The canonical type bracket of a value (the server's `canonicalizeBSONType`).
pub fn type_bracket(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Undefined => 1,
        Bson::Null => 5,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 10,
        Bson::String(_) | Bson::Symbol(_) => 15,
        Bson::Document(_) => 20,
        Bson::Array(_) => 25,
        Bson::Binary(_) => 30,
        Bson::ObjectId(_) => 35,
        Bson::Boolean(_) => 40,
        Bson::DateTime(_) => 45,
        Bson::Timestamp(_) => 47,
        Bson::RegularExpression(_) => 50,
        Bson::DbPointer(_) => 55,
        Bson::JavaScriptCode(_) => 60,
        Bson::JavaScriptCodeWithScope(_) => 65,
        Bson::MaxKey => 127,
    }
}

/// MongoDB's comparison of two BSON values (no collation).
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let (ta, tb) = (type_bracket(a), type_bracket(b));
    if ta != tb {
        return ta.cmp(&tb);
    }
    match (a, b) {
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (Bson::Document(x), Bson::Document(y)) => compare_documents(x, y),
        (Bson::Array(x), Bson::Array(y)) => compare_arrays(x, y),
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.timestamp_millis().cmp(&y.timestamp_millis()),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => x
            .time
            .cmp(&y.time)
            .then_with(|| x.increment.cmp(&y.increment)),
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .cmp(&y.pattern)
            .then_with(|| x.options.cmp(&y.options)),
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.cmp(y),
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => x
            .code
            .cmp(&y.code)
            .then_with(|| compare_documents(&x.scope, &y.scope)),
        // DbPointer's fields are private in the bson crate; compare the
        // serialized form, which orders by namespace then id like the server.
        (Bson::DbPointer(_), Bson::DbPointer(_)) => format!("{a:?}").cmp(&format!("{b:?}")),
        _ if ta == 10 => compare_numbers(a, b),
        // MinKey, MaxKey, Null and Undefined: one value per bracket.
        _ => Ordering::Equal,
    }
}

/// Element-wise comparison: bracket, then field name, then value; a prefix sorts first.
pub fn compare_documents(a: &Document, b: &Document) -> Ordering {
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let ord = type_bracket(va)
                    .cmp(&type_bracket(vb))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| compare(va, vb));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

fn compare_arrays(a: &[Bson], b: &[Bson]) -> Ordering {
    for (va, vb) in a.iter().zip(b.iter()) {
        let ord = type_bracket(va)
            .cmp(&type_bracket(vb))
            .then_with(|| compare(va, vb));
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

/// True for Int32, Int64, Double and Decimal128.
pub fn is_number(v: &Bson) -> bool {
    type_bracket(v) == 10
}

/// A numeric value as i64 (doubles and decimals truncated toward zero);
/// `None` for non-numbers and non-finite values.
pub fn number_as_i64(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) if d.is_finite() => Some(d.trunc() as i64),
        Bson::Decimal128(d) => {
            let f = Dec::from_decimal(d).to_f64();
            f.is_finite().then(|| f.trunc() as i64)
        }
        _ => None,
    }
}

/// A numeric value as f64 (decimals approximated); `None` for non-numbers.
pub fn number_as_f64(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        Bson::Decimal128(d) => Some(Dec::from_decimal(d).to_f64()),
        _ => None,
    }
}

/// Compares two numeric values by mathematical value (NaN lowest).
fn compare_numbers(a: &Bson, b: &Bson) -> Ordering {
    match (a, b) {
        (Bson::Decimal128(x), _) | (_, Bson::Decimal128(x)) => {
            let dx = Dec::from_decimal(x);
            let other = if matches!(a, Bson::Decimal128(_)) {
                b
            } else {
                a
            };
            let ord = match other {
                Bson::Decimal128(y) => dx.cmp_value(&Dec::from_decimal(y)),
                Bson::Int32(i) => dx.cmp_value(&Dec::from_i64(i64::from(*i))),
                Bson::Int64(i) => dx.cmp_value(&Dec::from_i64(*i)),
                Bson::Double(d) => cmp_f64(dx.to_f64(), *d),
                _ => Ordering::Equal,
            };
            if matches!(a, Bson::Decimal128(_)) {
                ord
            } else {
                ord.reverse()
            }
        }
        (Bson::Double(x), Bson::Double(y)) => cmp_f64(*x, *y),
        (Bson::Double(x), _) => cmp_f64_i64(*x, int_value(b)),
        (_, Bson::Double(y)) => cmp_f64_i64(*y, int_value(a)).reverse(),
        _ => int_value(a).cmp(&int_value(b)),
    }
}

fn int_value(v: &Bson) -> i64 {
    match v {
        Bson::Int32(i) => i64::from(*i),
        Bson::Int64(i) => *i,
        _ => 0,
    }
}

/// Total order on doubles with NaN below everything and -0 == 0.
pub(crate) fn cmp_f64(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// Exact comparison of a double with a 64-bit integer (no rounding of the integer).
fn cmp_f64_i64(x: f64, i: i64) -> Ordering {
    if x.is_nan() {
        return Ordering::Less;
    }
    // 2^63 is exactly representable; every i64 is below it.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if x >= TWO_63 {
        return Ordering::Greater;
    }
    if x < -TWO_63 {
        return Ordering::Less;
    }
    let t = x.trunc();
    // In range, so the cast is exact.
    let ti = t as i64;
    ti.cmp(&i).then_with(|| cmp_f64(x - t, 0.0))
}

/// A decoded Decimal128: sign, coefficient and exponent, or a special value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dec {
    NaN,
    Inf { neg: bool },
    Finite { neg: bool, coef: u128, exp: i32 },
}

const DEC_BIAS: i32 = 6176;
const DEC_MAX_COEF: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;

impl Dec {
    pub(crate) fn from_decimal(d: &Decimal128) -> Dec {
        let bits = u128::from_le_bytes(d.bytes());
        let neg = bits >> 127 == 1;
        let combo = (bits >> 122) & 0x1f;
        if combo == 0x1f {
            return Dec::NaN;
        }
        if combo == 0x1e {
            return Dec::Inf { neg };
        }
        let (exp_bits, coef) = if (bits >> 125) & 0b11 == 0b11 {
            // Non-canonical large-coefficient form: its value exceeds the
            // maximum coefficient, which the spec says reads as zero.
            ((bits >> 111) & 0x3fff, 0)
        } else {
            ((bits >> 113) & 0x3fff, bits & ((1u128 << 113) - 1))
        };
        let coef = if coef > DEC_MAX_COEF { 0 } else { coef };
        Dec::Finite {
            neg,
            coef,
            exp: exp_bits as i32 - DEC_BIAS,
        }
    }

    pub(crate) fn from_i64(i: i64) -> Dec {
        Dec::Finite {
            neg: i < 0,
            coef: u128::from(i.unsigned_abs()),
            exp: 0,
        }
    }

    /// Packs into Decimal128, rounding away excess digits (half-even is not
    /// needed for the sums the simulator makes; digits are truncated).
    pub(crate) fn to_decimal(self) -> Decimal128 {
        let bits: u128 = match self {
            Dec::NaN => 0x1f << 122,
            Dec::Inf { neg } => (0x1e << 122) | (u128::from(neg) << 127),
            Dec::Finite {
                neg,
                mut coef,
                mut exp,
            } => {
                while coef > DEC_MAX_COEF {
                    coef /= 10;
                    exp += 1;
                }
                let exp = (exp + DEC_BIAS).clamp(0, 0x2fff) as u128;
                (u128::from(neg) << 127) | (exp << 113) | coef
            }
        };
        Decimal128::from_bytes(bits.to_le_bytes())
    }

    pub(crate) fn to_f64(self) -> f64 {
        match self {
            Dec::NaN => f64::NAN,
            Dec::Inf { neg } => {
                if neg {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            }
            Dec::Finite { neg, coef, exp } => {
                let v: f64 = format!("{coef}e{exp}").parse().unwrap_or(0.0);
                if neg {
                    -v
                } else {
                    v
                }
            }
        }
    }

    /// Exact comparison by value (NaN lowest, -0 == 0).
    pub(crate) fn cmp_value(&self, other: &Dec) -> Ordering {
        match (self, other) {
            (Dec::NaN, Dec::NaN) => Ordering::Equal,
            (Dec::NaN, _) => Ordering::Less,
            (_, Dec::NaN) => Ordering::Greater,
            (Dec::Inf { neg: a }, Dec::Inf { neg: b }) => b.cmp(a),
            (Dec::Inf { neg }, _) => {
                if *neg {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (_, Dec::Inf { neg }) => {
                if *neg {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (
                Dec::Finite {
                    neg: na,
                    coef: ca,
                    exp: ea,
                },
                Dec::Finite {
                    neg: nb,
                    coef: cb,
                    exp: eb,
                },
            ) => {
                let sa = if *ca == 0 {
                    0
                } else if *na {
                    -1
                } else {
                    1
                };
                let sb = if *cb == 0 {
                    0
                } else if *nb {
                    -1
                } else {
                    1
                };
                if sa != sb || sa == 0 {
                    return sa.cmp(&sb);
                }
                let mag = cmp_magnitude(*ca, *ea, *cb, *eb);
                if sa < 0 {
                    mag.reverse()
                } else {
                    mag
                }
            }
        }
    }
}

fn digits(c: u128) -> i32 {
    let mut n = 1;
    let mut c = c / 10;
    while c > 0 {
        n += 1;
        c /= 10;
    }
    n
}

/// Compares `ca·10^ea` with `cb·10^eb` for non-zero coefficients.
fn cmp_magnitude(ca: u128, ea: i32, cb: u128, eb: i32) -> Ordering {
    let (da, db) = (digits(ca), digits(cb));
    let adj = (ea + da).cmp(&(eb + db));
    if adj != Ordering::Equal {
        return adj;
    }
    // Same magnitude: pad the shorter coefficient to the same digit count
    // (both have at most 34 digits, so this fits in u128).
    let (mut a, mut b) = (ca, cb);
    for _ in da..db {
        a *= 10;
    }
    for _ in db..da {
        b *= 10;
    }
    a.cmp(&b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, Binary, Timestamp};
    use proptest::prelude::*;

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse().unwrap())
    }

    #[test]
    fn brackets_follow_server_order() {
        let ordered = vec![
            Bson::MinKey,
            Bson::Null,
            Bson::Int32(-5),
            Bson::String("a".into()),
            Bson::Document(doc! {}),
            Bson::Array(vec![]),
            Bson::Binary(Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: vec![],
            }),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::Boolean(false),
            Bson::DateTime(bson::DateTime::from_millis(0)),
            Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            }),
            Bson::RegularExpression(bson::Regex {
                pattern: "a".into(),
                options: "".into(),
            }),
            Bson::MaxKey,
        ];
        for w in ordered.windows(2) {
            assert_eq!(
                compare(&w[0], &w[1]),
                Ordering::Less,
                "{:?} < {:?}",
                w[0],
                w[1]
            );
            assert_eq!(compare(&w[1], &w[0]), Ordering::Greater);
        }
    }

    #[test]
    fn numbers_compare_across_types() {
        assert_eq!(
            compare(&Bson::Int32(1), &Bson::Double(1.0)),
            Ordering::Equal
        );
        assert_eq!(
            compare(&Bson::Int64(2), &Bson::Double(1.5)),
            Ordering::Greater
        );
        assert_eq!(
            compare(&Bson::Double(f64::NAN), &Bson::Int32(i32::MIN)),
            Ordering::Less
        );
        assert_eq!(
            compare(&Bson::Double(f64::NAN), &Bson::Double(f64::NAN)),
            Ordering::Equal
        );
        assert_eq!(compare(&dec("1.50"), &Bson::Double(1.5)), Ordering::Equal);
        assert_eq!(compare(&dec("1.50"), &dec("1.5")), Ordering::Equal);
        assert_eq!(compare(&dec("10"), &Bson::Int32(9)), Ordering::Greater);
        assert_eq!(compare(&Bson::Int32(9), &dec("10")), Ordering::Less);
        assert_eq!(compare(&dec("-3.25"), &dec("-3.2")), Ordering::Less);
        assert_eq!(compare(&dec("0.00"), &Bson::Int32(0)), Ordering::Equal);
        assert_eq!(
            compare(&dec("-Infinity"), &Bson::Int64(i64::MIN)),
            Ordering::Less
        );
        // An i64 that a double cannot represent still compares exactly.
        assert_eq!(
            compare(
                &Bson::Int64(9_007_199_254_740_993),
                &Bson::Double(9_007_199_254_740_992.0)
            ),
            Ordering::Greater
        );
    }

    #[test]
    fn strings_documents_arrays() {
        assert_eq!(
            compare(&Bson::String("a".into()), &Bson::Symbol("b".into())),
            Ordering::Less
        );
        assert_eq!(
            compare(
                &Bson::Document(doc! {"a": 1}),
                &Bson::Document(doc! {"a": 1, "b": 1})
            ),
            Ordering::Less
        );
        assert_eq!(
            compare(
                &Bson::Document(doc! {"a": 1}),
                &Bson::Document(doc! {"b": 0})
            ),
            Ordering::Less
        );
        // Type bracket of the first element decides before the field name.
        assert_eq!(
            compare(
                &Bson::Document(doc! {"z": 1}),
                &Bson::Document(doc! {"a": "x"})
            ),
            Ordering::Less
        );
        assert_eq!(
            compare(
                &Bson::Array(vec![1.into(), 2.into()]),
                &Bson::Array(vec![1.into(), 3.into()])
            ),
            Ordering::Less
        );
        assert_eq!(
            compare(
                &Bson::Array(vec![1.into()]),
                &Bson::Array(vec![1.into(), 0.into()])
            ),
            Ordering::Less
        );
    }

    #[test]
    fn decimal_round_trip() {
        for s in [
            "12.34",
            "-0.01",
            "0",
            "123456789012345678901234567890.1234",
            "1E+10",
        ] {
            let d: Decimal128 = s.parse().unwrap();
            assert_eq!(Dec::from_decimal(&d).to_decimal(), d, "{s}");
        }
        assert_eq!(Dec::from_decimal(&"NaN".parse().unwrap()), Dec::NaN);
        assert_eq!(Dec::from_decimal(&"12.5".parse().unwrap()).to_f64(), 12.5);
    }

    #[test]
    fn ordered_bson_as_map_key() {
        let mut m = std::collections::BTreeMap::new();
        m.insert(OrderedBson(Bson::String("b".into())), 1);
        m.insert(OrderedBson(Bson::Int32(7)), 2);
        m.insert(OrderedBson(Bson::Double(7.0)), 3);
        assert_eq!(m.len(), 2);
        assert_eq!(m.keys().next().unwrap().0, Bson::Int32(7));
    }

    pub(crate) fn arb_bson() -> impl Strategy<Value = Bson> {
        let leaf = prop_oneof![
            Just(Bson::Null),
            Just(Bson::MinKey),
            Just(Bson::MaxKey),
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            any::<f64>().prop_map(Bson::Double),
            (-100_000i64..100_000, 0u32..4).prop_map(|(c, e)| {
                let s = format!("{}E-{}", c, e);
                Bson::Decimal128(s.parse().unwrap())
            }),
            "[a-c]{0,3}".prop_map(Bson::String),
            any::<bool>().prop_map(Bson::Boolean),
            any::<i64>().prop_map(|m| Bson::DateTime(bson::DateTime::from_millis(m))),
            (any::<u32>(), any::<u32>()).prop_map(|(t, i)| Bson::Timestamp(Timestamp {
                time: t,
                increment: i
            })),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
                prop::collection::vec(("[a-c]", inner), 0..4)
                    .prop_map(|kv| { Bson::Document(kv.into_iter().collect()) }),
            ]
        })
    }

    proptest! {
        #[test]
        fn total_order(a in arb_bson(), b in arb_bson(), c in arb_bson()) {
            // antisymmetry
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            // reflexivity
            prop_assert_eq!(compare(&a, &a), Ordering::Equal);
            // transitivity
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn sorting_is_consistent(mut v in prop::collection::vec(arb_bson(), 0..12)) {
            v.sort_by(compare);
            for w in v.windows(2) {
                prop_assert_ne!(compare(&w[0], &w[1]), Ordering::Greater);
            }
        }
    }

    proptest! {
        #[test]
        fn decimals_compare_exactly_with_integers(x in any::<i64>(), frac in 1u32..100) {
            let whole = Bson::Decimal128(x.to_string().parse().unwrap());
            prop_assert_eq!(compare(&whole, &Bson::Int64(x)), Ordering::Equal);
            // x + frac/100 lies strictly between x and x + 1 (or x - 1 for negatives).
            let sign = if x < 0 { "-" } else { "" };
            let text = format!("{sign}{}.{frac:02}", x.unsigned_abs());
            let fractional = Bson::Decimal128(text.parse().unwrap());
            let expected = if x < 0 { Ordering::Less } else { Ordering::Greater };
            prop_assert_eq!(compare(&fractional, &Bson::Int64(x)), expected);
            prop_assert_eq!(compare(&Bson::Int64(x), &fractional), expected.reverse());
        }

        #[test]
        fn int64_and_double_agree_with_exact_arithmetic(x in any::<i64>(), y in -1.0e19f64..1.0e19) {
            let exact = (x as i128 as f64).partial_cmp(&y).unwrap();
            let ours = compare(&Bson::Int64(x), &Bson::Double(y));
            // Rounding x to f64 can only blur the order when the two are within 2^11.
            if (x as f64 - y).abs() > 4096.0 {
                prop_assert_eq!(ours, exact);
            }
            prop_assert_eq!(ours, compare(&Bson::Double(y), &Bson::Int64(x)).reverse());
        }
    }
}
