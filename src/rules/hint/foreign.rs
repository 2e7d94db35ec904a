//! Operators people bring from other languages: JavaScript's `===` and `!==`, a single `&` or
//! `|`, Python's `not`, Perl's and Ruby's `=~`. The engine says only that such a condition is
//! not a valid query; each is named here with the condition written as JSONPath writes it.

use super::{Hint, code_chars, fixed, split_logical};

/// The first operator of another language in `text`, with the condition rewritten.
pub(super) fn foreign_operator(text: &str) -> Option<Hint> {
    regex_operator(text)
        .or_else(|| symbol(text))
        .or_else(|| not_word(text))
        .or_else(|| word_comparison(text))
}

/// `query in [list]`, `query contains "text"`, `query is "x"` / `is not "x"` (Python, SQL,
/// Jinja): written as comparisons, `search()`, `==` and `!=`.
fn word_comparison(text: &str) -> Option<Hint> {
    for (start, s) in split_logical(text) {
        if !s.starts_with(['$', '@']) {
            continue;
        }
        let plain: String = code_chars(s).iter().map(|&(_, c)| c).collect();
        for word in [" in ", " contains ", " is not ", " is "] {
            let Some(p) = plain.find(word) else { continue };
            // The same offset in `s`: nothing before the word is quoted in a plain query.
            let query = &s[..p];
            if query.contains(['"', '\'']) {
                break;
            }
            let value = s[p + word.len()..].trim();
            let Some(written) = rewrite(query, word.trim(), value) else {
                continue;
            };
            let at = start + p + 1;
            let message = match word.trim() {
                "in" => "`in` is not an operator: compare with each value, joined by `||`",
                "contains" => {
                    "`contains` is not an operator: `search(query, \"text\")` finds a regular expression anywhere in the text"
                }
                _ => "`is` is not an operator: write `==` (`is not`: `!=`)",
            };
            return match written {
                Some(w) => {
                    let fix = format!("{}{w}{}", &text[..start], &text[start + s.len()..]);
                    fixed(at, message, fix)
                }
                None => super::err(at, message),
            };
        }
    }
    None
}

/// The condition `query WORD value` means, when it can be written (`None` inside: the word is
/// recognised but the value cannot be carried over); `None` when `value` is not a literal.
fn rewrite(query: &str, word: &str, value: &str) -> Option<Option<String>> {
    let parsed: serde_json::Value = super::super::condition::literal(value)?;
    Some(match (word, &parsed) {
        ("in", serde_json::Value::Array(items)) if !items.is_empty() => {
            let each: Vec<String> = items.iter().map(|v| format!("{query} == {v}")).collect();
            Some(format!("({})", each.join(" || ")))
        }
        ("in", _) => None,
        ("contains", serde_json::Value::String(t)) if plain(t) => {
            Some(format!("search({query}, {value})"))
        }
        ("contains", _) => None,
        ("is not", v) if !v.is_array() && !v.is_object() => Some(format!("{query} != {value}")),
        ("is", v) if !v.is_array() && !v.is_object() => Some(format!("{query} == {value}")),
        _ => return None,
    })
}

/// `===`, `!==`, and a lone `&` or `|` (outside strings).
fn symbol(text: &str) -> Option<Hint> {
    let cs = code_chars(text);
    let at = |k: usize| cs.get(k).map(|&(_, c)| c);
    // Adjacent in the text, not only among the characters outside strings.
    let next_to = |k: usize| cs.get(k + 1).is_some_and(|&(j, _)| j == cs[k].0 + 1);
    for k in 0..cs.len() {
        let (i, c) = cs[k];
        let (len, by, message) = match c {
            '=' | '!' if at(k + 1) == Some('=') && at(k + 2) == Some('=') => {
                if !(next_to(k) && next_to(k + 1)) {
                    continue;
                }
                let by = if c == '=' { "==" } else { "!=" };
                (3, by, format!("`{c}==` is not an operator: write `{by}`"))
            }
            '&' | '|' => {
                let doubled = |n: Option<usize>| {
                    n.and_then(|n| cs.get(n))
                        .is_some_and(|&(j, d)| d == c && j.abs_diff(i) == 1)
                };
                if doubled(k.checked_sub(1)) || doubled(Some(k + 1)) {
                    continue;
                }
                let by = if c == '&' { "&&" } else { "||" };
                (1, by, format!("`{c}` is written `{by}` in a condition"))
            }
            _ => continue,
        };
        let fix = format!("{}{by}{}", &text[..i], &text[i + len..]);
        return fixed(i, message, fix);
    }
    None
}

/// `not $.test` (Python): JSONPath writes it `!$.test`.
fn not_word(text: &str) -> Option<Hint> {
    for (start, s) in split_logical(text) {
        let Some(rest) = s.strip_prefix("not ") else {
            continue;
        };
        let rest = rest.trim_start();
        if !rest.starts_with(['$', '@', '(']) {
            continue;
        }
        let fix = format!("{}!{rest}{}", &text[..start], &text[start + s.len()..]);
        return fixed(start, "`not` is written `!` in a condition", fix);
    }
    None
}

/// `$.msg =~ "pattern"`: a regular expression is tested with `search()` (anywhere in the text)
/// or `match()` (the whole text).
fn regex_operator(text: &str) -> Option<Hint> {
    for (start, s) in split_logical(text) {
        let Some(p) = code_chars(s)
            .windows(2)
            .find(|w| w[0].1 == '=' && w[1].1 == '~' && w[1].0 == w[0].0 + 1)
            .map(|w| w[0].0)
        else {
            continue;
        };
        let (query, pattern) = (s[..p].trim(), s[p + 2..].trim());
        let quoted = pattern.len() >= 2
            && matches!(pattern.chars().next(), Some('"' | '\''))
            && pattern.ends_with(&pattern[..1]);
        let message = "`=~` is not an operator: a regular expression is tested with `search(query, \"pattern\")` (anywhere in the text) or `match()` (the whole text)";
        if !query.starts_with(['$', '@']) || !quoted {
            return super::err(start + p, message);
        }
        let fix = format!(
            "{}search({query}, {pattern}){}",
            &text[..start],
            &text[start + s.len()..]
        );
        return fixed(start + p, message, fix);
    }
    None
}

/// Whether `text` has no character a regular expression reads specially, so `search()` finds
/// it as written.
fn plain(text: &str) -> bool {
    !text.contains([
        '(', ')', '*', '+', '.', '?', '[', ']', '\\', '{', '}', '|', '^', '$',
    ])
}
