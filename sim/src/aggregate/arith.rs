//! Numeric arithmetic with MongoDB's type promotion: Int32 overflows into
//! Int64, any Double makes a Double, any Decimal128 makes a Decimal128
//! (computed exactly on the decoded coefficient and exponent).

use bson::Bson;

use crate::bson_order::{number_as_f64, number_as_i64, Dec};

fn to_dec(v: &Bson) -> Dec {
    match v {
        Bson::Decimal128(d) => Dec::from_decimal(d),
        Bson::Int32(i) => Dec::from_i64(i64::from(*i)),
        Bson::Int64(i) => Dec::from_i64(*i),
        Bson::Double(d) => match f64_to_decimal(*d) {
            Bson::Decimal128(d) => Dec::from_decimal(&d),
            _ => Dec::NaN,
        },
        _ => Dec::NaN,
    }
}

pub(crate) fn f64_to_decimal(f: f64) -> Bson {
    let s = if f.is_nan() {
        "NaN".to_string()
    } else if f.is_infinite() {
        if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else {
        // 15 significant digits, like the server's double → decimal conversion.
        format!("{f:.14e}")
    };
    s.parse().map(Bson::Decimal128).unwrap_or(Bson::Double(f))
}

pub(crate) fn negate(v: &Bson) -> Bson {
    match v {
        Bson::Int32(i) => i
            .checked_neg()
            .map(Bson::Int32)
            .unwrap_or(Bson::Int64(-i64::from(*i))),
        Bson::Int64(i) => i
            .checked_neg()
            .map(Bson::Int64)
            .unwrap_or(Bson::Double(-(*i as f64))),
        Bson::Double(d) => Bson::Double(-d),
        Bson::Decimal128(d) => match Dec::from_decimal(d) {
            Dec::Finite { neg, coef, exp } => Bson::Decimal128(
                Dec::Finite {
                    neg: !neg,
                    coef,
                    exp,
                }
                .to_decimal(),
            ),
            Dec::Inf { neg } => Bson::Decimal128(Dec::Inf { neg: !neg }.to_decimal()),
            Dec::NaN => v.clone(),
        },
        other => other.clone(),
    }
}

/// `a + b` with MongoDB's numeric promotion. Non-numbers count as zero
/// (callers check types first).
pub(crate) fn add_numbers(a: &Bson, b: &Bson) -> Bson {
    match (a, b) {
        (Bson::Decimal128(_), _) | (_, Bson::Decimal128(_)) => {
            Bson::Decimal128(dec_add(to_dec(a), to_dec(b)).to_decimal())
        }
        (Bson::Double(_), _) | (_, Bson::Double(_)) => {
            Bson::Double(number_as_f64(a).unwrap_or(0.0) + number_as_f64(b).unwrap_or(0.0))
        }
        (Bson::Int32(x), Bson::Int32(y)) => x
            .checked_add(*y)
            .map(Bson::Int32)
            .unwrap_or(Bson::Int64(i64::from(*x) + i64::from(*y))),
        _ => {
            let (x, y) = (number_as_i64(a).unwrap_or(0), number_as_i64(b).unwrap_or(0));
            x.checked_add(y)
                .map(Bson::Int64)
                .unwrap_or(Bson::Double(x as f64 + y as f64))
        }
    }
}

/// `a * b` with MongoDB's numeric promotion.
pub(crate) fn mul_numbers(a: &Bson, b: &Bson) -> Bson {
    match (a, b) {
        (Bson::Decimal128(_), _) | (_, Bson::Decimal128(_)) => {
            Bson::Decimal128(dec_mul(to_dec(a), to_dec(b)).to_decimal())
        }
        (Bson::Double(_), _) | (_, Bson::Double(_)) => {
            Bson::Double(number_as_f64(a).unwrap_or(0.0) * number_as_f64(b).unwrap_or(0.0))
        }
        (Bson::Int32(x), Bson::Int32(y)) => x
            .checked_mul(*y)
            .map(Bson::Int32)
            .unwrap_or(Bson::Int64(i64::from(*x) * i64::from(*y))),
        _ => {
            let (x, y) = (number_as_i64(a).unwrap_or(0), number_as_i64(b).unwrap_or(0));
            x.checked_mul(y)
                .map(Bson::Int64)
                .unwrap_or(Bson::Double(x as f64 * y as f64))
        }
    }
}

fn dec_add(a: Dec, b: Dec) -> Dec {
    match (a, b) {
        (Dec::NaN, _) | (_, Dec::NaN) => Dec::NaN,
        (Dec::Inf { neg: x }, Dec::Inf { neg: y }) if x != y => Dec::NaN,
        (Dec::Inf { neg }, _) | (_, Dec::Inf { neg }) => Dec::Inf { neg },
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
            let exp = ea.min(eb);
            let scale = |c: u128, e: i32| -> Option<i128> {
                let mut v = i128::try_from(c).ok()?;
                for _ in 0..(e - exp) {
                    v = v.checked_mul(10)?;
                }
                Some(v)
            };
            match (scale(ca, ea), scale(cb, eb)) {
                (Some(x), Some(y)) => {
                    let x = if na { -x } else { x };
                    let y = if nb { -y } else { y };
                    match x.checked_add(y) {
                        Some(sum) => Dec::Finite {
                            neg: sum < 0,
                            coef: sum.unsigned_abs(),
                            exp,
                        },
                        None => approx(a.to_f64() + b.to_f64()),
                    }
                }
                _ => approx(a.to_f64() + b.to_f64()),
            }
        }
    }
}

fn dec_mul(a: Dec, b: Dec) -> Dec {
    match (a, b) {
        (Dec::NaN, _) | (_, Dec::NaN) => Dec::NaN,
        (Dec::Inf { neg: x }, other) | (other, Dec::Inf { neg: x }) => match other {
            Dec::Finite { coef: 0, .. } => Dec::NaN,
            Dec::Finite { neg, .. } | Dec::Inf { neg } => Dec::Inf { neg: x != neg },
            Dec::NaN => Dec::NaN,
        },
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
        ) => match ca.checked_mul(cb) {
            Some(coef) => Dec::Finite {
                neg: na != nb,
                coef,
                exp: ea + eb,
            },
            None => approx(a.to_f64() * b.to_f64()),
        },
    }
}

fn approx(f: f64) -> Dec {
    match f64_to_decimal(f) {
        Bson::Decimal128(d) => Dec::from_decimal(&d),
        _ => Dec::NaN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse().unwrap())
    }

    #[test]
    fn arithmetic_promotion() {
        assert_eq!(
            add_numbers(&Bson::Int32(i32::MAX), &Bson::Int32(1)),
            Bson::Int64(i64::from(i32::MAX) + 1)
        );
        assert_eq!(
            add_numbers(&Bson::Int32(1), &Bson::Int64(1)),
            Bson::Int64(2)
        );
        assert_eq!(
            add_numbers(&Bson::Int32(1), &Bson::Double(0.5)),
            Bson::Double(1.5)
        );
        assert_eq!(add_numbers(&dec("0.10"), &dec("0.2")), dec("0.30"));
        assert_eq!(add_numbers(&dec("1.5"), &Bson::Int32(-2)), dec("-0.5"));
        assert_eq!(
            mul_numbers(&Bson::Int32(3), &Bson::Int32(4)),
            Bson::Int32(12)
        );
        assert_eq!(mul_numbers(&dec("2.50"), &Bson::Int32(2)), dec("5.00"));
    }
}
