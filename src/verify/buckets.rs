//! Hashed key buckets: finding rows that have no document without holding every key.
//!
//! While documents are compared, every row fetched for them is counted in the bucket
//! `hashtext(key::text) & mask` together with the sum of those hashes (Postgres computes the
//! hash in the same query, so both sides use one function of one value). Afterwards Postgres
//! counts and sums each whole table per bucket in one `GROUP BY`. A bucket whose count or sum
//! differs holds a row no document accounted for (or a row that changed under a live stream);
//! only such buckets are read again, key by key. Memory: two numbers per bucket, whatever the
//! table size; the sum catches a row deleted and another added in one bucket.

/// Counts and hash sums per bucket of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    mask: i32,
    counts: Vec<u64>,
    sums: Vec<i64>,
}

impl Buckets {
    /// `n` buckets, rounded up to a power of two (at least 1, at most 2^20).
    pub fn new(n: usize) -> Buckets {
        let n = n.clamp(1, 1 << 20).next_power_of_two();
        Buckets {
            mask: i32::try_from(n - 1).unwrap_or(0),
            counts: vec![0; n],
            sums: vec![0; n],
        }
    }

    pub fn mask(&self) -> i32 {
        self.mask
    }

    fn index(&self, bucket: i32) -> usize {
        usize::try_from(bucket & self.mask).unwrap_or(0)
    }

    /// Counts one row whose key hashes to `hash`.
    pub fn add(&mut self, hash: i32) {
        let i = self.index(hash);
        self.counts[i] += 1;
        self.sums[i] = self.sums[i].wrapping_add(i64::from(hash));
    }

    /// Sets a bucket from Postgres' `GROUP BY` (`bucket` already masked).
    pub fn set(&mut self, bucket: i32, count: u64, sum: i64) {
        let i = self.index(bucket);
        self.counts[i] = count;
        self.sums[i] = sum;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Buckets of `table` (Postgres' counts) that hold rows `self` (the rows seen for
    /// documents) does not account for.
    pub fn unaccounted(&self, table: &Buckets) -> Vec<i32> {
        (0..table.counts.len())
            .filter(|&i| {
                table.counts[i] > 0
                    && (table.counts[i] != self.counts[i] || table.sums[i] != self.sums[i])
            })
            .filter_map(|i| i32::try_from(i).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_added_or_swapped_shows_in_its_bucket_only() {
        let mut seen = Buckets::new(16);
        let mut table = Buckets::new(16);
        for h in [1, 17, 2, -5] {
            seen.add(h);
            table.add(h);
        }
        assert!(seen.unaccounted(&table).is_empty());
        table.add(33); // bucket 1: an extra row
        assert_eq!(seen.unaccounted(&table), vec![1]);

        // Bucket 2: a row deleted and another added keeps the count but not the sum.
        let mut swapped = seen.clone();
        swapped.counts[2] = 1;
        swapped.sums[2] = 18;
        assert_eq!(seen.unaccounted(&swapped), vec![2]);

        // Rows only deleted leave nothing to look for.
        let empty = Buckets::new(16);
        assert!(seen.unaccounted(&empty).is_empty());
    }

    #[test]
    fn sizes_round_up_to_a_power_of_two() {
        let mut b = Buckets::new(5);
        assert_eq!(b.mask(), 7);
        for h in 0..40 {
            b.add(h * 7919);
        }
        assert_eq!(b.total(), 40);
    }
}
