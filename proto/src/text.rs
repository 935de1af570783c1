//! Bounds on free text that crosses the wire.

/// The most bytes of an allocation report's `reason` or `health_detail`
/// that are kept: enough for any error and a probe's output, small enough
/// that thousands of reports stay far under a Raft entry's limit.
pub const REPORT_TEXT_MAX: usize = 4096;

/// `s` cut to at most `max` bytes at a character boundary, saying how much
/// was cut; `s` itself when it fits.
pub fn clip(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let total = s.len();
    let note_room = 40.min(max);
    let mut end = max - note_room;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    let note = format!(" …({} bytes cut)", total - end);
    if s.len() + note.len() <= max {
        s.push_str(&note);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(clip("exited with code 3".into(), 64), "exited with code 3");
    }

    #[test]
    fn long_text_is_cut_within_the_bound_and_says_so() {
        let s = "x".repeat(1 << 20);
        let c = clip(s, REPORT_TEXT_MAX);
        assert!(c.len() <= REPORT_TEXT_MAX, "{}", c.len());
        assert!(c.ends_with("bytes cut)"), "{}", &c[c.len() - 30..]);
        assert!(c.contains(&format!(
            "({} bytes cut)",
            (1 << 20) - (REPORT_TEXT_MAX - 40)
        )));
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        // Three-byte characters: no cut point but every third byte is valid.
        let s = "€".repeat(5000);
        let c = clip(s, 1001);
        assert!(c.len() <= 1001);
        assert!(c.starts_with("€€€"));
    }

    #[test]
    fn a_tiny_bound_still_holds() {
        assert!(clip("abcdefghij".repeat(10), 8).len() <= 8);
    }
}
