//! `$sample`: the stage's parsing exactly as mongod 7.0 words its errors,
//! and the two ways mongod picks the documents.
//!
//! - Random sort (`DocumentSourceSample`): every input document gets a random
//!   value and the `size` smallest win, so no document appears twice. Used
//!   whenever `$sample` is not the first stage, or the collection is small.
//! - Random cursor (`$sampleFromRandomCursor`): when `$sample` leads the
//!   pipeline, the collection holds more than 100 documents and `size` is at
//!   most 5% of them, mongod reads a WiredTiger random cursor, which may hand
//!   back the same record more than once. The stage drops the repeats (by
//!   `_id`) and gives up with 28799 after 100 repeats in a row, so the
//!   client still never sees a document twice.
//!
//! Both are pure here: callers supply the randomness.

use bson::Bson;
use rand::Rng;

use crate::bson_order::number_as_f64;
use crate::query::QueryError;

/// mongod's `kMaxSampleRatioForRandCursor`: above this share of the
/// collection a random cursor would mostly return repeats.
pub const MAX_RANDOM_CURSOR_RATIO: f64 = 0.05;
/// A collection needs more documents than this for the random cursor.
pub const MIN_RANDOM_CURSOR_RECORDS: usize = 100;
/// Repeats in a row after which the random cursor gives up (28799).
pub const MAX_DUPLICATE_ATTEMPTS: usize = 100;

/// Parses `{$sample: {size: N}}`'s argument into N (at least 1).
pub fn parse(spec: &Bson) -> Result<usize, QueryError> {
    let Bson::Document(spec) = spec else {
        return Err(QueryError::new(
            28745,
            "Location28745",
            "the $sample stage specification must be an object",
        ));
    };
    let mut size = None;
    for (field, value) in spec {
        if field != "size" {
            return Err(QueryError::new(
                28748,
                "Location28748",
                format!("unrecognized option to $sample: {field}"),
            ));
        }
        size = Some(safe_number_long(value).ok_or_else(|| {
            QueryError::new(
                28746,
                "Location28746",
                "size argument to $sample must be a number",
            )
        })?);
    }
    let size = size.ok_or_else(|| {
        QueryError::new(28749, "Location28749", "$sample stage must specify a size")
    })?;
    if size <= 0 {
        return Err(QueryError::new(
            28747,
            "Location28747",
            "size argument to $sample must be a positive integer",
        ));
    }
    // A size beyond memory can only ever mean "everything".
    Ok(usize::try_from(size).unwrap_or(usize::MAX))
}

/// `BSONElement::safeNumberLong`: doubles truncate, decimals round half to
/// even, NaN is 0 and out-of-range values saturate; `None` for non-numbers.
fn safe_number_long(v: &Bson) -> Option<i64> {
    let f = match v {
        Bson::Int32(n) => return Some(i64::from(*n)),
        Bson::Int64(n) => return Some(*n),
        Bson::Double(d) => d.trunc(),
        Bson::Decimal128(_) => number_as_f64(v)?.round_ties_even(),
        _ => return None,
    };
    if f.is_nan() {
        return Some(0);
    }
    // `as` saturates at the i64 bounds, which is what the server does.
    Some(f as i64)
}

/// Whether mongod answers a leading `$sample` of `size` over `records`
/// documents with a random cursor (may draw repeats) rather than a sort.
pub fn uses_random_cursor(records: usize, size: usize) -> bool {
    records > MIN_RANDOM_CURSOR_RECORDS && size as f64 <= records as f64 * MAX_RANDOM_CURSOR_RATIO
}

/// The random sort: `size` distinct positions out of `0..len` (all of them
/// when `size >= len`), in random order.
pub fn random_sort(len: usize, size: usize, rng: &mut impl Rng) -> Vec<usize> {
    rand::seq::index::sample(rng, len, size.min(len)).into_vec()
}

/// The random cursor: positions from `draw` (which may repeat), repeats
/// skipped, until `size` distinct ones are found; 28799 after
/// [`MAX_DUPLICATE_ATTEMPTS`] repeats in a row. `size` must be reachable
/// (it is: at most 5% of the collection).
pub fn random_cursor(
    size: usize,
    mut draw: impl FnMut() -> usize,
) -> Result<Vec<usize>, QueryError> {
    let mut seen = std::collections::HashSet::with_capacity(size);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let mut attempts = 0;
        loop {
            let pos = draw();
            if seen.insert(pos) {
                out.push(pos);
                break;
            }
            attempts += 1;
            if attempts >= MAX_DUPLICATE_ATTEMPTS {
                return Err(QueryError::new(
                    28799,
                    "Location28799",
                    format!(
                        "$sample stage could not find a non-duplicate document after \
                         {MAX_DUPLICATE_ATTEMPTS} while using a random cursor. This is likely a \
                         sporadic failure, please try again."
                    ),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn code(spec: Bson) -> i32 {
        parse(&spec).unwrap_err().code
    }

    #[test]
    fn parse_accepts_numbers_and_refuses_what_mongod_refuses() {
        assert_eq!(parse(&Bson::Document(doc! {"size": 3})).unwrap(), 3);
        assert_eq!(parse(&Bson::Document(doc! {"size": 3i64})).unwrap(), 3);
        assert_eq!(parse(&Bson::Document(doc! {"size": 2.9})).unwrap(), 2);
        let dec = |s: &str| Bson::Decimal128(s.parse().unwrap());
        assert_eq!(
            parse(&Bson::Document(doc! {"size": dec("2.5")})).unwrap(),
            2
        );
        assert_eq!(
            parse(&Bson::Document(doc! {"size": dec("3.5")})).unwrap(),
            4
        );
        assert_eq!(
            parse(&Bson::Document(doc! {"size": 1e300})).unwrap(),
            usize::try_from(i64::MAX).unwrap()
        );
        assert_eq!(code(Bson::Int32(3)), 28745);
        assert_eq!(code(Bson::Document(doc! {"size": "3"})), 28746);
        assert_eq!(code(Bson::Document(doc! {"size": null})), 28746);
        assert_eq!(code(Bson::Document(doc! {"size": 0})), 28747);
        assert_eq!(code(Bson::Document(doc! {"size": -2})), 28747);
        assert_eq!(code(Bson::Document(doc! {"size": 0.5})), 28747);
        assert_eq!(code(Bson::Document(doc! {"size": f64::NAN})), 28747);
        assert_eq!(code(Bson::Document(doc! {"size": 1, "seed": 2})), 28748);
        assert_eq!(code(Bson::Document(doc! {"seed": 2, "size": 1})), 28748);
        assert_eq!(code(Bson::Document(doc! {})), 28749);
        let msg = parse(&Bson::Document(doc! {"size": 1, "x": 1}))
            .unwrap_err()
            .message;
        assert_eq!(msg, "unrecognized option to $sample: x");
    }

    #[test]
    fn random_cursor_only_for_a_small_share_of_a_big_collection() {
        assert!(!uses_random_cursor(100, 1));
        assert!(uses_random_cursor(101, 5));
        assert!(!uses_random_cursor(101, 6));
        assert!(uses_random_cursor(2000, 100));
        assert!(!uses_random_cursor(2000, 101));
    }

    #[test]
    fn random_sort_picks_distinct_positions() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut picks = random_sort(10, 4, &mut rng);
        assert_eq!(picks.len(), 4);
        picks.sort_unstable();
        picks.dedup();
        assert_eq!(picks.len(), 4);
        let mut all = random_sort(5, 9, &mut rng);
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn random_cursor_skips_repeats_and_gives_up_after_100() {
        let draws = [3, 3, 1, 3, 1, 4];
        let mut it = draws.iter().copied();
        let out = random_cursor(3, || it.next().unwrap_or(0)).unwrap();
        assert_eq!(out, vec![3, 1, 4]);
        // Always the same record: one document, then 100 repeats.
        let err = random_cursor(2, || 9).unwrap_err();
        assert_eq!(err.code, 28799);
        // 99 repeats are still fine.
        let mut n = 0;
        let out = random_cursor(2, || {
            n += 1;
            if n < 101 {
                9
            } else {
                8
            }
        })
        .unwrap();
        assert_eq!(out, vec![9, 8]);
    }
}
