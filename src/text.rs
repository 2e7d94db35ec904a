//! Small text helpers shared by the modules that read what people write (rulebooks, conditions,
//! templates), kept here so that none of them has to import another for them: the closest name
//! to a typo, and the characters of an expression outside its quoted strings.

/// The candidate closest to `given`, when it is close enough to be a typo.
pub fn closest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (given.len() / 3).max(1);
    candidates
        .iter()
        .map(|c| (distance(given, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (names are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Each character of `text` outside its string literals (quoted with `"` or `'`, a backslash
/// escaping the next character), with its byte offset; the quotes themselves are left out.
pub fn outside_quotes(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    text.char_indices().filter(move |&(_, c)| match quote {
        Some(q) => {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            false
        }
        None if c == '"' || c == '\'' => {
            quote = Some(c);
            false
        }
        None => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_quotes_skips_strings_and_their_escapes() {
        let text = r#"a "b\"c" 'd' e"#;
        let kept: String = outside_quotes(text).map(|(_, c)| c).collect();
        assert_eq!(kept, "a   e");
        assert_eq!(outside_quotes(text).last(), Some((13, 'e')));
    }
}
