//! The problems found in one request, kept within a fixed size.
//!
//! Validation names every problem it finds, so a caller can fix them all at
//! once; but a request can hold a million bad values, and each problem is
//! repeated in `grpc-message` and in the `BadRequest` details. [`Violations`]
//! keeps the first [`MAX_REPORTED`] problems, within [`MAX_REPORTED_BYTES`] of
//! text (each field name and description cut to a short prefix), and only
//! counts the rest: the status says "…and N more problems".

/// Most problems of one request reported one by one.
pub(crate) const MAX_REPORTED: usize = 20;
/// Most bytes of field names and descriptions reported for one request.
pub(crate) const MAX_REPORTED_BYTES: usize = 1024;
/// Longest field path kept of one problem.
const MAX_FIELD_BYTES: usize = 96;
/// Longest description kept of one problem.
const MAX_PROBLEM_BYTES: usize = 320;

/// Problems found in a request: (field path, what is wrong and what to do),
/// the first ones kept, the rest counted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Violations {
    /// The problems reported one by one, in the order found.
    kept: Vec<(String, String)>,
    /// Bytes of field names and descriptions in `kept`.
    bytes: usize,
    /// Problems found after `kept` was full: counted, not described.
    more: usize,
}

impl Violations {
    /// No problem found yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records a problem: kept if there is room, else counted.
    pub(crate) fn push(&mut self, violation: (String, String)) {
        self.push_with(|| violation);
    }

    /// Records a problem, building its text only if it is kept (for checks
    /// over lists of any length).
    pub(crate) fn push_with(&mut self, violation: impl FnOnce() -> (String, String)) {
        if self.more > 0 || self.kept.len() >= MAX_REPORTED {
            self.more += 1;
            return;
        }
        let (field, problem) = violation();
        let field = shorten(field, MAX_FIELD_BYTES);
        let problem = shorten(problem, MAX_PROBLEM_BYTES);
        let size = field.len() + problem.len();
        if self.bytes + size > MAX_REPORTED_BYTES {
            // Later problems are counted too, so the order found is kept.
            self.more += 1;
            return;
        }
        self.bytes += size;
        self.kept.push((field, problem));
    }

    /// Whether the request is fine.
    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.more == 0
    }

    /// Problems found, reported or only counted.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.kept.len() + self.more
    }

    /// The problems reported one by one, and how many more were found.
    pub(crate) fn into_parts(self) -> (Vec<(String, String)>, usize) {
        (self.kept, self.more)
    }
}

impl FromIterator<(String, String)> for Violations {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut violations = Self::new();
        for violation in iter {
            violations.push(violation);
        }
        violations
    }
}

/// `text` cut to at most `max` bytes, at a character boundary, marked with
/// "…" when cut.
pub(crate) fn shorten(mut text: String, max: usize) -> String {
    const MARK: char = '…';
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub(MARK.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push(MARK);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_problems_and_counts_the_rest() {
        let mut violations = Violations::new();
        assert!(violations.is_empty());
        let mut built = 0;
        for i in 0..100_000 {
            violations.push_with(|| {
                built += 1;
                (format!("user_ids[{i}]"), "is required".to_owned())
            });
        }
        assert_eq!(built, MAX_REPORTED, "dropped problems are never built");
        assert_eq!(violations.len(), 100_000);
        let (kept, more) = violations.into_parts();
        assert_eq!(kept.len(), MAX_REPORTED);
        assert_eq!(kept[0].0, "user_ids[0]");
        assert_eq!(more, 100_000 - MAX_REPORTED);
    }

    #[test]
    fn long_texts_are_cut_and_the_total_stays_bounded() {
        let violations: Violations = (0..50)
            .map(|i| (format!("f{i}{}", "é".repeat(500)), "x".repeat(10_000)))
            .collect();
        let (kept, more) = violations.into_parts();
        assert!(!kept.is_empty());
        assert_eq!(kept.len() + more, 50);
        let total: usize = kept.iter().map(|(f, p)| f.len() + p.len()).sum();
        assert!(total <= MAX_REPORTED_BYTES, "{total}");
        for (field, problem) in &kept {
            assert!(
                field.len() <= MAX_FIELD_BYTES && field.ends_with('…'),
                "{field}"
            );
            assert!(problem.len() <= MAX_PROBLEM_BYTES && problem.ends_with('…'));
        }
    }

    #[test]
    fn shortens_at_character_boundaries() {
        assert_eq!(shorten("short".to_owned(), 10), "short");
        assert_eq!(shorten("abcdefgh".to_owned(), 6), "abc…");
        // 'é' is two bytes: the cut never splits one.
        assert_eq!(shorten("éééé".to_owned(), 6), "é…");
    }
}
