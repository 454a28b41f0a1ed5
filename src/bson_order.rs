//! MongoDB's sort order of BSON values, for `_id`s: the canonical type order first (MinKey,
//! null, numbers, strings, documents, arrays, binary, ObjectId, bool, date, timestamp, regex,
//! code, MaxKey), then the value within its type; numbers compare by value across Int32, Int64,
//! Double and Decimal128. The online re-copy (`pipeline::recopy`) uses it to tell whether a
//! streamed change falls inside a copied `_id` range, the full sync (`source::snapshot`) to
//! sort and deduplicate its split points.
//!
//! Decimal128 values compare through their nearest `f64` (the `bson` crate has no decimal
//! arithmetic): two decimals closer than a double can tell apart compare equal, which only
//! makes a range test include a neighbour, never lose a key of its own value.

use std::cmp::Ordering;

use bson::Bson;

/// MongoDB's canonical type order (`bsontypes.h` `canonicalizeBSONType`).
pub fn bracket(v: &Bson) -> u8 {
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

/// The order MongoDB sorts `a` and `b` in (a total order: NaN sorts below every number).
pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    bracket(a).cmp(&bracket(b)).then_with(|| same_bracket(a, b))
}

fn same_bracket(a: &Bson, b: &Bson) -> Ordering {
    match (a, b) {
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (Bson::Document(x), Bson::Document(y)) => {
            let mut xs = x.iter();
            let mut ys = y.iter();
            loop {
                match (xs.next(), ys.next()) {
                    (None, None) => return Ordering::Equal,
                    (None, Some(_)) => return Ordering::Less,
                    (Some(_), None) => return Ordering::Greater,
                    (Some((kx, vx)), Some((ky, vy))) => {
                        let o = bracket(vx)
                            .cmp(&bracket(vy))
                            .then_with(|| kx.as_bytes().cmp(ky.as_bytes()))
                            .then_with(|| same_bracket(vx, vy));
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                }
            }
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (vx, vy) in x.iter().zip(y) {
                let o = compare(vx, vy);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Binary(x), Bson::Binary(y)) => x
            .bytes
            .len()
            .cmp(&y.bytes.len())
            .then_with(|| u8::from(x.subtype).cmp(&u8::from(y.subtype)))
            .then_with(|| x.bytes.cmp(&y.bytes)),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (Bson::RegularExpression(x), Bson::RegularExpression(y)) => x
            .pattern
            .cmp(&y.pattern)
            .then_with(|| x.options.cmp(&y.options)),
        (Bson::JavaScriptCode(x), Bson::JavaScriptCode(y)) => x.cmp(y),
        (Bson::JavaScriptCodeWithScope(x), Bson::JavaScriptCodeWithScope(y)) => {
            x.code.cmp(&y.code).then_with(|| {
                same_bracket(
                    &Bson::Document(x.scope.clone()),
                    &Bson::Document(y.scope.clone()),
                )
            })
        }
        (Bson::DbPointer(_), Bson::DbPointer(_)) => format!("{a:?}").cmp(&format!("{b:?}")),
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => compare_numbers(x, y),
            // MinKey, MaxKey, null, undefined: one value each.
            _ => Ordering::Equal,
        },
    }
}

/// A number exactly where it can be (integers), else as a double.
#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
}

fn number(v: &Bson) -> Option<Number> {
    match v {
        Bson::Int32(i) => Some(Number::Int(i64::from(*i))),
        Bson::Int64(i) => Some(Number::Int(*i)),
        Bson::Double(d) => Some(Number::Float(*d)),
        Bson::Decimal128(d) => Some(Number::Float(
            d.to_string().parse::<f64>().unwrap_or(f64::NAN),
        )),
        _ => None,
    }
}

fn compare_numbers(a: Number, b: Number) -> Ordering {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(&y),
        (Number::Float(x), Number::Float(y)) => compare_floats(x, y),
        (Number::Int(x), Number::Float(y)) => compare_int_float(x, y),
        (Number::Float(x), Number::Int(y)) => compare_int_float(y, x).reverse(),
    }
}

/// NaN is the smallest number and equal to itself (MongoDB's order).
fn compare_floats(x: f64, y: f64) -> Ordering {
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
    }
}

/// An integer against a double without rounding the integer (2^53 + 1 > 2^53 as a double).
fn compare_int_float(x: i64, y: f64) -> Ordering {
    if y.is_nan() {
        return Ordering::Greater;
    }
    // i64's range is [-2^63, 2^63): doubles outside it are beyond every integer.
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if y >= TWO_63 {
        return Ordering::Less;
    }
    if y < -TWO_63 {
        return Ordering::Greater;
    }
    let floor = y.floor();
    // In range, so the cast is exact.
    let whole = floor as i64;
    match x.cmp(&whole) {
        Ordering::Equal if y > floor => Ordering::Less,
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, oid::ObjectId, DateTime, Decimal128};
    use proptest::prelude::*;

    #[test]
    fn types_sort_in_canonical_order() {
        let ordered = [
            Bson::MinKey,
            Bson::Null,
            Bson::Double(f64::NAN),
            Bson::Int64(-5),
            Bson::Double(2.5),
            Bson::Int32(3),
            Bson::String("".into()),
            Bson::String("a".into()),
            Bson::Document(doc! {"a": 1}),
            Bson::ObjectId(ObjectId::from_bytes([1; 12])),
            Bson::Boolean(false),
            Bson::Boolean(true),
            Bson::DateTime(DateTime::from_millis(0)),
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
    fn numbers_compare_by_value_across_types() {
        let dec = |s: &str| Bson::Decimal128(s.parse::<Decimal128>().unwrap());
        assert_eq!(
            compare(&Bson::Int32(1), &Bson::Double(1.0)),
            Ordering::Equal
        );
        assert_eq!(compare(&Bson::Int64(1), &dec("1")), Ordering::Equal);
        assert_eq!(compare(&dec("1.5"), &Bson::Int32(2)), Ordering::Less);
        // 2^53 + 1 is above 2^53 although it rounds to it as a double.
        let big = (1i64 << 53) + 1;
        assert_eq!(
            compare(&Bson::Int64(big), &Bson::Double((1i64 << 53) as f64)),
            Ordering::Greater
        );
        assert_eq!(
            compare(&Bson::Int64(i64::MAX), &Bson::Double(1e19)),
            Ordering::Less
        );
        assert_eq!(
            compare(&Bson::Int64(i64::MIN), &Bson::Double(f64::NEG_INFINITY)),
            Ordering::Greater
        );
        assert_eq!(
            compare(&Bson::Int32(-1), &Bson::Double(-0.5)),
            Ordering::Less
        );
    }

    #[test]
    fn documents_compare_field_by_field() {
        let a = Bson::Document(doc! {"a": 1, "b": 1});
        let b = Bson::Document(doc! {"a": 1, "b": 2});
        let c = Bson::Document(doc! {"a": 1});
        let d = Bson::Document(doc! {"a": "x"});
        assert_eq!(compare(&a, &b), Ordering::Less);
        assert_eq!(compare(&c, &a), Ordering::Less, "a prefix sorts first");
        assert_eq!(compare(&a, &d), Ordering::Less, "a number before a string");
    }

    fn arb_id() -> impl Strategy<Value = Bson> {
        prop_oneof![
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            any::<f64>().prop_map(Bson::Double),
            "[a-c]{0,3}".prop_map(Bson::String),
            any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
            any::<bool>().prop_map(Bson::Boolean),
            any::<i64>().prop_map(|m| Bson::DateTime(DateTime::from_millis(m))),
            Just(Bson::Null),
            Just(Bson::MinKey),
            Just(Bson::MaxKey),
        ]
    }

    proptest! {
        #[test]
        fn the_order_is_total(a in arb_id(), b in arb_id(), c in arb_id()) {
            prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
            prop_assert_eq!(compare(&a, &a), Ordering::Equal);
            if compare(&a, &b) != Ordering::Greater && compare(&b, &c) != Ordering::Greater {
                prop_assert_ne!(compare(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn integers_and_doubles_agree_with_exact_arithmetic(x in any::<i64>(), y in -1e19f64..1e19) {
            let exact = (x as i128 * 2).cmp(&((y.floor() as i128) * 2 + i128::from(y > y.floor())));
            prop_assert_eq!(compare(&Bson::Int64(x), &Bson::Double(y)), exact);
        }
    }
}
