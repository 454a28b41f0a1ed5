//! Parsing the `type:` of a mapping column into a [`PgType`].
//!
//! Case-insensitive, whitespace-tolerant, with the aliases Postgres itself accepts (`int4`,
//! `float8`, `bool`, `character varying`, `timestamp with time zone`, ...), so a type copied
//! from `\d table` output works.

use super::model::PgType;

/// Largest precision Postgres allows for `numeric(p,s)`.
const NUMERIC_MAX_PRECISION: u32 = 1000;
/// Largest length Postgres allows for `varchar(n)`.
const VARCHAR_MAX_LENGTH: u32 = 10_485_760;

/// Parses a type name; the error says what is wrong and lists what is accepted.
pub fn parse_type(text: &str) -> Result<PgType, String> {
    let norm = normalize(text);
    if let Some(inner) = norm.strip_suffix("[]") {
        let elem = parse_scalar(inner.trim_end())?;
        return match elem {
            PgType::Json | PgType::Jsonb => Err(format!(
                "`{text}`: arrays of {elem} are not supported (use plain {elem}: a JSON array \
                 fits in it)"
            )),
            _ => Ok(PgType::Array(Box::new(elem))),
        };
    }
    parse_scalar(&norm)
}

/// Lower case, single spaces, no spaces around parentheses and commas.
fn normalize(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined = words.join(" ").to_ascii_lowercase();
    joined
        .replace(" (", "(")
        .replace("( ", "(")
        .replace(" )", ")")
        .replace(" ,", ",")
        .replace(", ", ",")
        .replace(" [", "[")
}

fn parse_scalar(norm: &str) -> Result<PgType, String> {
    if norm.ends_with("[]") {
        return Err(format!(
            "`{norm}`: only one-dimensional arrays are supported (use jsonb for nested arrays)"
        ));
    }
    let (name, args) = match norm.split_once('(') {
        Some((name, rest)) => {
            let Some(args) = rest.strip_suffix(')') else {
                return Err(format!("`{norm}`: unbalanced parentheses"));
            };
            (name, Some(args))
        }
        None => (norm, None),
    };
    let plain = |ty: PgType| match args {
        None => Ok(ty),
        Some(_) => Err(format!("`{norm}`: {name} takes no parameters")),
    };
    match name {
        "text" => plain(PgType::Text),
        "varchar" | "character varying" => match args {
            None => Ok(PgType::Varchar(None)),
            Some(a) => {
                let n = number(a, norm)?;
                if n == 0 || n > VARCHAR_MAX_LENGTH {
                    return Err(format!(
                        "`{norm}`: the length must be between 1 and {VARCHAR_MAX_LENGTH}"
                    ));
                }
                Ok(PgType::Varchar(Some(n)))
            }
        },
        "smallint" | "int2" => plain(PgType::SmallInt),
        "integer" | "int" | "int4" => plain(PgType::Integer),
        "bigint" | "int8" => plain(PgType::BigInt),
        "real" | "float4" => plain(PgType::Real),
        "double precision" | "float8" => plain(PgType::DoublePrecision),
        "numeric" | "decimal" => match args {
            None => Ok(PgType::Numeric(None)),
            Some(a) => {
                let (p, s) = match a.split_once(',') {
                    Some((p, s)) => (number(p, norm)?, Some(number(s, norm)?)),
                    None => (number(a, norm)?, None),
                };
                if p == 0 || p > NUMERIC_MAX_PRECISION {
                    return Err(format!(
                        "`{norm}`: the precision must be between 1 and {NUMERIC_MAX_PRECISION}"
                    ));
                }
                if s.is_some_and(|s| s > p) {
                    return Err(format!(
                        "`{norm}`: the scale must be between 0 and the precision"
                    ));
                }
                Ok(PgType::Numeric(Some((p, s))))
            }
        },
        "boolean" | "bool" => plain(PgType::Boolean),
        "timestamptz" | "timestamp with time zone" => plain(PgType::Timestamptz),
        "timestamp" | "timestamp without time zone" => plain(PgType::Timestamp),
        "date" => plain(PgType::Date),
        "uuid" => plain(PgType::Uuid),
        "bytea" => plain(PgType::Bytea),
        "json" => plain(PgType::Json),
        "jsonb" => plain(PgType::Jsonb),
        _ => Err(format!("unknown type `{norm}`")),
    }
}

fn number(text: &str, whole: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("`{whole}`: `{text}` is not a whole number"))
}

/// The hint printed with a type error.
pub const TYPE_HINT: &str = "accepted: text, varchar(n), smallint, integer, bigint, real, \
    double precision, numeric, numeric(p), numeric(p,s), boolean, timestamptz, timestamp, date, \
    uuid, bytea, json, jsonb, and X[] of the non-JSON ones";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_spec_type_and_common_aliases() {
        let cases = [
            ("text", PgType::Text),
            ("VARCHAR(12)", PgType::Varchar(Some(12))),
            ("character varying", PgType::Varchar(None)),
            ("smallint", PgType::SmallInt),
            ("int", PgType::Integer),
            ("int4", PgType::Integer),
            ("Integer", PgType::Integer),
            ("int8", PgType::BigInt),
            ("real", PgType::Real),
            ("double  precision", PgType::DoublePrecision),
            ("float8", PgType::DoublePrecision),
            ("numeric", PgType::Numeric(None)),
            ("numeric(10)", PgType::Numeric(Some((10, None)))),
            ("numeric( 12 , 2 )", PgType::Numeric(Some((12, Some(2))))),
            ("decimal(5,5)", PgType::Numeric(Some((5, Some(5))))),
            ("bool", PgType::Boolean),
            ("timestamptz", PgType::Timestamptz),
            ("timestamp with time zone", PgType::Timestamptz),
            ("timestamp", PgType::Timestamp),
            ("date", PgType::Date),
            ("uuid", PgType::Uuid),
            ("bytea", PgType::Bytea),
            ("json", PgType::Json),
            ("JSONB", PgType::Jsonb),
            ("text[]", PgType::Array(Box::new(PgType::Text))),
            (
                "numeric(4,1) []",
                PgType::Array(Box::new(PgType::Numeric(Some((4, Some(1)))))),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_type(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "varchar(3)",
            "numeric(12,2)",
            "double precision",
            "bigint[]",
        ] {
            assert_eq!(parse_type(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn refuses_what_postgres_or_the_spec_would_not_take() {
        for text in [
            "string",
            "int[][]",
            "jsonb[]",
            "varchar(0)",
            "numeric(0)",
            "numeric(3,4)",
            "numeric(x)",
            "text(3)",
            "numeric(1,2",
            "",
        ] {
            assert!(parse_type(text).is_err(), "{text} accepted");
        }
        assert_eq!(parse_type("strng"), Err("unknown type `strng`".to_owned()));
    }
}
