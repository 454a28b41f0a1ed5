//! `$regex` with MongoDB's PCRE syntax. The `regex` crate (linear time, no backtracking)
//! compiles what it can; patterns it refuses for PCRE features it lacks (look-ahead,
//! look-behind, back-references, atomic groups), such as the `^(?!system\.)` filters drivers
//! and tools send to `listCollections` and change streams, go to `fancy-regex`, a backtracking
//! engine layered on the same automata. A pattern neither accepts is 51091, as mongod answers
//! a pattern PCRE refuses.

use std::sync::atomic::{AtomicBool, Ordering};

/// A compiled `$regex`.
#[derive(Debug, Clone)]
pub enum Pcre {
    Fast(regex::Regex),
    Backtracking(fancy_regex::Regex),
}

impl Pcre {
    /// Compiles `full` (the pattern with its flags inline); the error is the first engine's
    /// when the second fails too (it names the construct both lack).
    pub fn new(full: &str) -> Result<Self, String> {
        match regex::Regex::new(full) {
            Ok(re) => Ok(Pcre::Fast(re)),
            Err(first) => fancy_regex::Regex::new(full)
                .map(Pcre::Backtracking)
                .map_err(|_| first.to_string()),
        }
    }

    pub fn is_match(&self, s: &str) -> bool {
        match self {
            Pcre::Fast(re) => re.is_match(s),
            Pcre::Backtracking(re) => re.is_match(s).unwrap_or_else(|e| {
                // PCRE has a match limit too; say once that a match gave up.
                static SAID: AtomicBool = AtomicBool::new(false);
                if !SAID.swap(true, Ordering::Relaxed) {
                    tracing::warn!(pattern = re.as_str(), error = %e, "regex match gave up");
                }
                false
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Pcre::Fast(re) => re.as_str(),
            Pcre::Backtracking(re) => re.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_around_goes_to_the_backtracking_engine() {
        let re = Pcre::new(r"^(?!system\.)").unwrap();
        assert!(matches!(re, Pcre::Backtracking(_)));
        assert!(re.is_match("users"));
        assert!(!re.is_match("system.views"));
        let behind = Pcre::new(r"(?<=a)b").unwrap();
        assert!(behind.is_match("ab") && !behind.is_match("cb"));
        let backref = Pcre::new(r"^(\w)\1$").unwrap();
        assert!(backref.is_match("aa") && !backref.is_match("ab"));
    }

    #[test]
    fn plain_patterns_stay_on_the_linear_engine() {
        let re = Pcre::new("(?i)^ab+c").unwrap();
        assert!(matches!(re, Pcre::Fast(_)));
        assert!(re.is_match("ABBC"));
        assert!(Pcre::new("(unclosed").is_err());
    }
}
