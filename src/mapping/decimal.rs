//! Exact decimal numbers for the numeric conversions: parse any decimal text (`-1.50`,
//! `1.05E+3`, Rust's `1.5e-7`), test integrality and `numeric(p,s)` fit, render plain digits.
//!
//! Arbitrary precision without a bignum crate: a number is its digit string and a power of ten,
//! which is all that checking "fits exactly" and rendering Postgres numeric text need.

/// `(-1)^neg × digits × 10^exp`. `digits` is ASCII, never empty, no leading zeros (zero is
/// `"0"`). Trailing zeros are kept: `1.50` has digits `150`, exp `-2` (its scale matters to
/// numeric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dec {
    pub neg: bool,
    pub digits: String,
    pub exp: i64,
}

impl Dec {
    /// Parses `[+-]digits[.digits][(e|E)[+-]digits]`. `None` for anything else (NaN, Infinity).
    pub fn parse(text: &str) -> Option<Dec> {
        let (neg, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all = format!("{int}{frac}");
        let trimmed = all.trim_start_matches('0');
        let digits = if trimmed.is_empty() { "0" } else { trimmed };
        let exp = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
        Some(Dec {
            neg,
            digits: digits.to_owned(),
            exp,
        })
    }

    pub fn is_zero(&self) -> bool {
        self.digits == "0"
    }

    /// The same value with trailing zeros removed (smallest scale).
    pub fn stripped(&self) -> Dec {
        if self.is_zero() {
            return Dec {
                neg: false,
                digits: "0".to_owned(),
                exp: 0,
            };
        }
        let kept = self.digits.trim_end_matches('0');
        let removed = (self.digits.len() - kept.len()) as i64;
        Dec {
            neg: self.neg,
            digits: kept.to_owned(),
            exp: self.exp + removed,
        }
    }

    /// Digits after the decimal point needed to write the value exactly.
    pub fn needed_scale(&self) -> i64 {
        (-self.stripped().exp).max(0)
    }

    /// Digits before the decimal point (0 for values below 1).
    pub fn integer_digits(&self) -> i64 {
        let s = self.stripped();
        if s.is_zero() {
            0
        } else {
            (s.digits.len() as i64 + s.exp).max(0)
        }
    }

    /// The value as an integer when it is one and fits in i128.
    pub fn to_i128(&self) -> Option<i128> {
        let s = self.stripped();
        if s.exp < 0 || s.integer_digits() > 38 {
            return None;
        }
        let mut v: i128 = s.digits.parse().ok()?;
        for _ in 0..s.exp {
            v = v.checked_mul(10)?;
        }
        Some(if s.neg { -v } else { v })
    }

    /// Plain digits with exactly `scale` fractional digits (`scale` at least the needed
    /// scale, else the value would be rounded: callers check first). Zero has no sign.
    pub fn to_plain(&self, scale: i64) -> String {
        let scale = scale.max(self.needed_scale());
        let s = self.stripped();
        // Write the stripped digits shifted so that `scale` digits follow the point.
        let shift = s.exp + scale; // zeros to append to `digits` to get the scaled integer
        let mut int_text = s.digits.clone();
        if shift >= 0 {
            int_text.push_str(&"0".repeat(shift as usize));
        }
        let scale = scale.max(0) as usize;
        if int_text.len() <= scale {
            int_text = format!("{}{}", "0".repeat(scale + 1 - int_text.len()), int_text);
        }
        let split = int_text.len() - scale;
        let mut out = String::with_capacity(int_text.len() + 2);
        if s.neg && !s.is_zero() {
            out.push('-');
        }
        out.push_str(&int_text[..split]);
        if scale > 0 {
            out.push('.');
            out.push_str(&int_text[split..]);
        }
        out
    }

    /// Plain digits keeping the value's own scale (trailing zeros of `1.50` stay).
    pub fn to_plain_own_scale(&self) -> String {
        self.to_plain((-self.exp).max(self.needed_scale()))
    }

    /// True when both denote the same number.
    pub fn same_value(&self, other: &Dec) -> bool {
        self.stripped() == other.stripped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Dec {
        Dec::parse(text).unwrap()
    }

    #[test]
    fn parses_every_decimal_spelling() {
        assert_eq!(
            d("-1.50"),
            Dec {
                neg: true,
                digits: "150".into(),
                exp: -2
            }
        );
        assert_eq!(d("1.05E+3").to_plain_own_scale(), "1050");
        assert_eq!(d("1.5e-7").to_plain_own_scale(), "0.00000015");
        assert_eq!(d("0E-3").to_plain_own_scale(), "0.000");
        assert_eq!(d("-0").to_plain_own_scale(), "0");
        assert_eq!(d("007.0").to_plain_own_scale(), "7.0");
        assert_eq!(d(".5").to_plain_own_scale(), "0.5");
        for bad in ["", "-", ".", "NaN", "Infinity", "1e", "1.2.3", "1e+x"] {
            assert_eq!(Dec::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn scale_and_integer_digits() {
        assert_eq!(d("12.340").needed_scale(), 2);
        assert_eq!(d("1200").integer_digits(), 4);
        assert_eq!(d("0.001").integer_digits(), 0);
        assert_eq!(d("1.5").to_plain(3), "1.500");
        assert_eq!(d("-0.5").to_plain(1), "-0.5");
    }

    #[test]
    fn integers() {
        assert_eq!(d("1E+2").to_i128(), Some(100));
        assert_eq!(d("-3.000").to_i128(), Some(-3));
        assert_eq!(d("3.5").to_i128(), None);
        assert_eq!(d("1E+40").to_i128(), None);
    }
}
