//! What to tell someone whose condition does not parse. The JSONPath engine says only that the
//! input is invalid; these checks recognise the usual mistakes (`=` for `==`, a missing value,
//! a key with spaces after a dot, a wildcard compared to a value, unbalanced brackets) and point
//! at the character with a fix. They run only after the engine refused the text, so a valid
//! condition never gets a hint.

use super::condition::ConditionError;

/// One character of the expression outside string literals, with its byte offset.
fn code_chars(text: &str) -> Vec<(usize, char)> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None => out.push((i, c)),
        }
    }
    out
}

fn err(offset: usize, message: impl Into<String>) -> Option<ConditionError> {
    Some(ConditionError {
        offset,
        message: message.into(),
    })
}

const OPS: &[&str] = &["==", "!=", "<=", ">=", "<", ">"];

/// The most likely mistake in `text`, located, or `None` when nothing familiar is wrong.
pub fn hint(text: &str) -> Option<ConditionError> {
    unclosed(text)
        .or_else(|| assignment(text))
        .or_else(|| word_operators(text))
        .or_else(|| empty_operand(text))
        .or_else(|| missing_value(text))
        .or_else(|| spaced_key(text))
        .or_else(|| not_singular(text))
}

/// An unterminated string, or a bracket or parenthesis without its partner.
fn unclosed(text: &str) -> Option<ConditionError> {
    let mut quote: Option<(usize, char)> = None;
    let mut escaped = false;
    let mut stack: Vec<(usize, char)> = Vec::new();
    for (i, c) in text.char_indices() {
        if let Some((_, q)) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some((i, c)),
            '(' | '[' => stack.push((i, c)),
            ')' | ']' => {
                let want = if c == ')' { '(' } else { '[' };
                match stack.pop() {
                    Some((_, open)) if open == want => {}
                    Some((at, open)) => {
                        return err(
                            at,
                            format!("`{open}` is closed by `{c}`: check the brackets"),
                        );
                    }
                    None => return err(i, format!("`{c}` has no opening `{want}`")),
                }
            }
            _ => {}
        }
    }
    if let Some((at, q)) = quote {
        return err(at, format!("the string starting here has no closing {q}"));
    }
    if let Some((at, open)) = stack.pop() {
        let close = if open == '(' { ')' } else { ']' };
        return err(at, format!("`{open}` is never closed: add `{close}`"));
    }
    None
}

/// `=` alone, or `=!`, `=<`, `=>`.
fn assignment(text: &str) -> Option<ConditionError> {
    let cs = code_chars(text);
    for (k, &(i, c)) in cs.iter().enumerate() {
        if c != '=' {
            continue;
        }
        let prev = k.checked_sub(1).map(|p| cs[p]).filter(|(j, _)| j + 1 == i);
        let next = cs.get(k + 1).copied().filter(|(j, _)| *j == i + 1);
        if matches!(prev, Some((_, '=' | '!' | '<' | '>'))) {
            continue;
        }
        match next {
            Some((_, '=')) => continue,
            Some((_, '!')) => {
                return err(i, "`=!` is not an operator: write `!=` (not equal)");
            }
            Some((_, '<')) => return err(i, "`=<` is not an operator: write `<=`"),
            Some((_, '>')) => return err(i, "`=>` is not an operator: write `>=`"),
            _ => {
                return err(
                    i,
                    "`=` is not an operator: write `==` to compare (or `!=` for not equal)",
                );
            }
        }
    }
    None
}

/// `and`, `or`, `not` written as words.
fn word_operators(text: &str) -> Option<ConditionError> {
    let cs = code_chars(text);
    let plain: String = cs.iter().map(|&(_, c)| c).collect();
    for (word, op) in [
        (" and ", "&&"),
        (" or ", "||"),
        (" AND ", "&&"),
        (" OR ", "||"),
    ] {
        if let Some(p) = plain.find(word) {
            let at = cs[plain[..p].chars().count() + 1].0;
            return err(at, format!("write `{op}` instead of `{}`", word.trim()));
        }
    }
    None
}

/// `&&` / `||` with nothing on one side.
fn empty_operand(text: &str) -> Option<ConditionError> {
    let parts = split_logical(text);
    if parts.len() < 2 {
        return None;
    }
    for (k, (start, s)) in parts.iter().enumerate() {
        if s.is_empty() {
            // The operator next to the empty operand.
            let at = if k == 0 {
                parts[1].0.saturating_sub(2)
            } else {
                let before = &text[..*start];
                before.trim_end().len().saturating_sub(2)
            };
            let op = &text[at..(at + 2).min(text.len())];
            let side = if k == 0 { "left" } else { "right" };
            return err(at, format!("`{op}` needs a condition on its {side}"));
        }
    }
    None
}

/// A comparison operator with nothing on one side.
fn missing_value(text: &str) -> Option<ConditionError> {
    for part in split_logical(text) {
        let (start, s) = part;
        for op in OPS {
            if let Some(p) = find_op(s, op) {
                let left = s[..p].trim();
                let right = s[p + op.len()..].trim();
                if right.is_empty() {
                    return err(
                        start + p,
                        format!(
                            "`{op}` needs a value on its right, e.g. `{} {op} \"value\"`",
                            if left.is_empty() { "$.field" } else { left }
                        ),
                    );
                }
                if left.is_empty() {
                    return err(
                        start + p,
                        format!("`{op}` needs a query on its left, e.g. `$.field {op} {right}`"),
                    );
                }
                break;
            }
        }
    }
    None
}

/// `$.details.Assurance Issue Status == "x"`: a member name with spaces after a dot.
fn spaced_key(text: &str) -> Option<ConditionError> {
    for (start, s) in split_logical(text) {
        let lhs_end = OPS
            .iter()
            .filter_map(|op| find_op(s, op))
            .min()
            .unwrap_or(s.len());
        let side = s[..lhs_end].trim_end();
        let lead = side.len() - side.trim_start().len();
        let side = side.trim_start();
        if !(side.starts_with('$') || side.starts_with('@')) || !side.contains(' ') {
            continue;
        }
        // The last `.` before the first space starts the spaced name.
        let space = side.find(' ')?;
        let dot = side[..space].rfind('.')?;
        let name = &side[dot + 1..];
        if name.is_empty() || name.contains(['[', ']', '(', ')', '\'', '"']) {
            continue;
        }
        let fixed = format!("{}['{}']", &side[..dot], name);
        return err(
            start + lead + dot,
            format!("keys with spaces need brackets: `{fixed}`"),
        );
    }
    None
}

/// `$.tags[*] == "core"`: comparisons take one node; a filter tests each.
fn not_singular(text: &str) -> Option<ConditionError> {
    for (start, s) in split_logical(text) {
        for op in OPS {
            let Some(p) = find_op(s, op) else { continue };
            let (left, right) = (s[..p].trim(), s[p + op.len()..].trim());
            for (side, other, at) in [(left, right, start), (right, left, start + p + op.len())] {
                if !(side.starts_with('$') || side.starts_with('@')) {
                    continue;
                }
                if side.contains("[*]")
                    || side.contains("..")
                    || side.contains(".*")
                    || side.contains("[?")
                {
                    let base = side
                        .strip_suffix("[*]")
                        .or_else(|| side.strip_suffix(".*"))
                        .unwrap_or(side);
                    let lead = s[at - start..].len() - s[at - start..].trim_start().len();
                    return err(
                        at + lead,
                        format!(
                            "`{side}` can select several nodes, and `{op}` compares one: use a filter, `{base}[?@ {op} {other}]`"
                        ),
                    );
                }
            }
            break;
        }
    }
    None
}

/// The operands between top-level `&&` / `||` (and `!`, `(`, `)`), with their offsets.
fn split_logical(text: &str) -> Vec<(usize, &str)> {
    let cs = code_chars(text);
    let mut cuts = Vec::new();
    let mut k = 0;
    while k < cs.len() {
        let (i, c) = cs[k];
        let pair = cs.get(k + 1).filter(|(j, _)| *j == i + 1).map(|x| x.1);
        if (c == '&' && pair == Some('&')) || (c == '|' && pair == Some('|')) {
            cuts.push((i, 2));
            k += 2;
            continue;
        }
        k += 1;
    }
    let mut out = Vec::new();
    let mut from = 0;
    for (at, len) in cuts {
        out.push((from, &text[from..at]));
        from = at + len;
    }
    out.push((from, &text[from..]));
    out.into_iter()
        .map(|(o, s)| {
            // Drop a leading `(` / `!` and a trailing `)`: they are not part of the comparison.
            let trimmed = s.trim_start_matches(|c: char| c == '(' || c == '!' || c.is_whitespace());
            let o = o + (s.len() - trimmed.len());
            (
                o,
                trimmed.trim_end_matches(|c: char| c == ')' || c.is_whitespace()),
            )
        })
        .collect()
}

/// Where comparison `op` occurs in `s` outside strings (and not as part of a longer operator).
fn find_op(s: &str, op: &str) -> Option<usize> {
    let cs = code_chars(s);
    let plain: Vec<char> = cs.iter().map(|&(_, c)| c).collect();
    let want: Vec<char> = op.chars().collect();
    for k in 0..plain.len() {
        if plain[k..].starts_with(&want) {
            let next = plain.get(k + want.len()).copied();
            let prev = k.checked_sub(1).map(|p| plain[p]);
            if want.len() == 1 && (next == Some('=') || prev == Some('=')) {
                continue;
            }
            if matches!(prev, Some('=' | '!' | '<' | '>')) {
                continue;
            }
            return Some(cs[k].0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(text: &str) -> (usize, String) {
        let e = hint(text).unwrap_or_else(|| panic!("no hint for {text}"));
        (e.offset, e.message)
    }

    #[test]
    fn the_usual_mistakes_are_named_and_located() {
        let (at, m) = h(r#"$.a = "x""#);
        assert_eq!(at, 4);
        assert!(m.contains("write `==`"), "{m}");

        let (at, m) = h(r#"$.a =! "x""#);
        assert_eq!(at, 4);
        assert!(m.contains("write `!=`"), "{m}");

        let (at, m) = h("$.a == ");
        assert_eq!(at, 4);
        assert!(
            m.contains("needs a value on its right, e.g. `$.a == \"value\"`"),
            "{m}"
        );

        let (at, m) = h(r#"$.details.Assurance Issue Status == "x""#);
        assert_eq!(at, 9);
        assert!(
            m.contains("keys with spaces need brackets: `$.details['Assurance Issue Status']`"),
            "{m}"
        );

        let (at, m) = h(r#"$.tags[*] == "core""#);
        assert_eq!(at, 0);
        assert!(m.contains(r#"use a filter, `$.tags[?@ == "core"]`"#), "{m}");

        let (at, m) = h(r#"$.a == 1 and $.b == 2"#);
        assert_eq!(at, 9);
        assert!(m.contains("write `&&` instead of `and`"), "{m}");

        let (at, m) = h(r#"($.a == 1 && $.b == "x""#);
        assert_eq!(at, 0);
        assert!(m.contains("never closed"), "{m}");

        let (at, m) = h(r#"$.a == "x" &&"#);
        assert_eq!(at, 11);
        assert!(m.contains("`&&` needs a condition on its right"), "{m}");

        let (at, m) = h(r#"$.a == "x"#);
        assert_eq!(at, 7);
        assert!(m.contains("no closing"), "{m}");
    }

    #[test]
    fn operators_inside_strings_are_not_mistakes() {
        assert!(assignment(r#"$.a == "x = y""#).is_none());
        assert!(assignment(r#"$.a != 1 && $.b <= 2 && $.c >= 3"#).is_none());
        assert!(missing_value(r#"$.a == "==""#).is_none());
        assert!(spaced_key(r#"$['a b'] == 1"#).is_none());
    }
}
