//! What to tell someone whose condition does not parse. The JSONPath engine says only that the
//! input is invalid; these checks recognise the usual mistakes (`=` for `==`, a missing value,
//! a key with spaces after a dot, a wildcard compared to a value, unbalanced brackets) and point
//! at the character with a fix. They run only after the engine refused the text, so a valid
//! condition never gets a hint.

use super::condition::ConditionError;

/// One character of the expression outside string literals, with its byte offset.
fn code_chars(text: &str) -> Vec<(usize, char)> {
    crate::text::outside_quotes(text).collect()
}

/// A mistake found: where, what, and the whole condition corrected when one can be named.
struct Hint {
    offset: usize,
    message: String,
    /// The corrected condition, and the words that lead to it after the message.
    fix: Option<(&'static str, String)>,
}

fn err(offset: usize, message: impl Into<String>) -> Option<Hint> {
    Some(Hint {
        offset,
        message: message.into(),
        fix: None,
    })
}

fn fixed(offset: usize, message: impl Into<String>, fix: String) -> Option<Hint> {
    fixed_as(offset, message, ": ", fix)
}

fn fixed_as(
    offset: usize,
    message: impl Into<String>,
    lead: &'static str,
    fix: String,
) -> Option<Hint> {
    Some(Hint {
        offset,
        message: message.into(),
        fix: Some((lead, fix)),
    })
}

const OPS: &[&str] = &["==", "!=", "<=", ">=", "<", ">"];

/// The most likely mistake in `text`, located, or `None` when nothing familiar is wrong. A hint
/// proposes the whole condition corrected (the message ends with it in backticks) only when
/// that condition is valid; one that could not be named is left out rather than guessed.
pub fn hint(text: &str) -> Option<ConditionError> {
    let h = unclosed(text)
        .or_else(|| assignment(text))
        .or_else(|| word_operators(text))
        .or_else(|| empty_operand(text))
        .or_else(|| missing_value(text))
        .or_else(|| existence_words(text))
        .or_else(|| spaced_key(text))
        .or_else(|| not_singular(text))
        .or_else(|| bare_word(text))?;
    let fix = h
        .fix
        .filter(|(_, f)| super::condition::compile_filter(f, 0).is_ok());
    Some(ConditionError {
        offset: h.offset,
        message: match fix {
            Some((lead, f)) => format!("{}{lead}`{f}`", h.message),
            None => h.message,
        },
    })
}

/// An unterminated string, or a bracket or parenthesis without its partner.
fn unclosed(text: &str) -> Option<Hint> {
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
                    None => return err(i, format!("`{c}` has no opening `{want}` before it")),
                }
            }
            _ => {}
        }
    }
    if let Some((at, q)) = quote {
        // Closed at the end, the rest of the text is the string.
        let mut fix = format!("{}{q}", text.trim_end());
        for &(_, open) in stack.iter().rev() {
            fix.push(if open == '(' { ')' } else { ']' });
        }
        return fixed(
            at,
            format!("the string starting here has no closing {q}"),
            fix,
        );
    }
    if let Some(&(at, open)) = stack.last() {
        let close = if open == '(' { ')' } else { ']' };
        let mut fix = text.trim_end().to_string();
        for &(_, open) in stack.iter().rev() {
            fix.push(if open == '(' { ')' } else { ']' });
        }
        return fixed(at, format!("`{open}` is never closed (add `{close}`)"), fix);
    }
    None
}

/// `=` alone, or `=!`, `=<`, `=>`.
fn assignment(text: &str) -> Option<Hint> {
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
        let (len, op, message) = match next {
            Some((_, '=')) => continue,
            Some((_, '!')) => (2, "!=", "`=!` is not an operator: write `!=` (not equal)"),
            Some((_, '<')) => (2, "<=", "`=<` is not an operator: write `<=` (at most)"),
            Some((_, '>')) => (2, ">=", "`=>` is not an operator: write `>=` (at least)"),
            _ => (
                1,
                "==",
                "`=` is not an operator: write `==` to compare (`!=` for not equal)",
            ),
        };
        let fix = format!("{}{op}{}", &text[..i], &text[i + len..]);
        return fixed(i, message, fix);
    }
    None
}

/// `and`, `or`, `not` written as words.
fn word_operators(text: &str) -> Option<Hint> {
    let cs = code_chars(text);
    let plain: String = cs.iter().map(|&(_, c)| c).collect();
    let words = [
        (" and ", "&&"),
        (" or ", "||"),
        (" AND ", "&&"),
        (" OR ", "||"),
    ];
    let (word, op, p) = words
        .iter()
        .filter_map(|&(w, op)| plain.find(w).map(|p| (w, op, p)))
        .min_by_key(|&(_, _, p)| p)?;
    let at = cs[plain[..p].chars().count() + 1].0;
    // Every such word outside strings, replaced.
    let mut fix = String::with_capacity(text.len());
    let mut last = 0;
    let mut k = 0;
    let chars: Vec<char> = plain.chars().collect();
    while k < chars.len() {
        let hit = words.iter().find(|(w, _)| {
            let w: Vec<char> = w.chars().collect();
            chars[k..].starts_with(&w) && cs[k + w.len() - 1].0 == cs[k].0 + w.len() - 1
        });
        match hit {
            Some((w, o)) => {
                fix.push_str(&text[last..cs[k].0]);
                fix.push_str(&format!(" {o} "));
                last = cs[k].0 + w.len();
                k += w.len();
            }
            None => k += 1,
        }
    }
    fix.push_str(&text[last..]);
    fixed(
        at,
        format!("`{}` is written `{op}` in a condition", word.trim()),
        fix,
    )
}

/// `&&` / `||` with nothing on one side.
fn empty_operand(text: &str) -> Option<Hint> {
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
            // Without the dangling operator.
            let fix = format!(
                "{}{}",
                text[..at].trim_end(),
                &text[(at + 2).min(text.len())..]
            )
            .trim()
            .to_string();
            return fixed_as(
                at,
                format!("`{op}` needs a condition on its {side}"),
                "; without it: ",
                fix,
            );
        }
    }
    None
}

/// A comparison operator with nothing on one side.
fn missing_value(text: &str) -> Option<Hint> {
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
                            "`{op}` needs a value on its right (a string in quotes, a number, true, false or null)"
                        ),
                    );
                }
                if left.is_empty() {
                    return err(
                        start + p,
                        format!("`{op}` needs a query on its left (a path such as `$.field`)"),
                    );
                }
                break;
            }
        }
    }
    None
}

/// `$.x exists`, `$.x is defined` (Jinja's test), `$.x is not defined`: an existence test
/// written in words. In a condition the query alone tests that the node is there, `!` that it
/// is not; read as a key with spaces (`$['x exists']`) it would never match.
fn existence_words(text: &str) -> Option<Hint> {
    const WORDS: &[(&str, bool)] = &[
        (" is not defined", false),
        (" is undefined", false),
        (" does not exist", false),
        (" not exists", false),
        (" is defined", true),
        (" exists", true),
    ];
    for (start, s) in split_logical(text) {
        if !(s.starts_with('$') || s.starts_with('@')) {
            continue;
        }
        let Some((words, present)) = WORDS.iter().find(|(w, _)| s.ends_with(w)) else {
            continue;
        };
        let query = s[..s.len() - words.len()].trim_end();
        if query.contains([' ', '"', '\'', '(']) {
            continue;
        }
        let test = if *present {
            query.to_string()
        } else {
            format!("!{query}")
        };
        let fix = format!("{}{test}{}", &text[..start], &text[start + s.len()..]);
        return fixed(
            start + query.len() + 1,
            format!(
                "`{}` is not part of a condition: a query alone tests that its field is there, `!` before it that it is not",
                words.trim()
            ),
            fix,
        );
    }
    None
}

/// `$.details.Assurance Issue Status == "x"`: a member name with spaces after a dot.
fn spaced_key(text: &str) -> Option<Hint> {
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
        let query = format!("{}['{}']", &side[..dot], name);
        let from = start + lead;
        let fix = format!("{}{query}{}", &text[..from], &text[from + side.len()..]);
        return fixed(from + dot, "keys with spaces need brackets", fix);
    }
    None
}

/// `$.tags[*] == "core"`: comparisons take one node; a filter tests each.
fn not_singular(text: &str) -> Option<Hint> {
    for (start, s) in split_logical(text) {
        for op in OPS {
            let Some(p) = find_op(s, op) else { continue };
            let (left, right) = (s[..p].trim(), s[p + op.len()..].trim());
            for (side, other, at, on_left) in [
                (left, right, start, true),
                (right, left, start + p + op.len(), false),
            ] {
                if !(side.starts_with('$') || side.starts_with('@')) {
                    continue;
                }
                let Some((prefix, filter, rest)) = split_last_multi(side) else {
                    continue;
                };
                if filter.is_some()
                    && rest.is_empty()
                    && let Some(h) = filter_as_boolean(text, start, s, side, at, op, other)
                {
                    return Some(h);
                }
                let test = if on_left {
                    format!("@{rest} {op} {other}")
                } else {
                    format!("{other} {op} @{rest}")
                };
                let inner = match filter {
                    Some(f) if f.contains("||") => format!("({}) && {test}", f.trim()),
                    Some(f) => format!("{} && {test}", f.trim()),
                    None => test,
                };
                let fix = format!(
                    "{}{prefix}[?{inner}]{}",
                    &text[..start],
                    &text[start + s.len()..]
                );
                let lead = s[at - start..].len() - s[at - start..].trim_start().len();
                return fixed(
                    at + lead,
                    format!(
                        "`{side}` can select several nodes, and `{op}` compares one: use a filter"
                    ),
                    fix,
                );
            }
            break;
        }
    }
    None
}

/// `$.tags[?@ == "core"] == true`: a filter is already a test (true when an element matches),
/// so compared to a boolean the query alone (or `!` before it, for "no element matches") is
/// what was meant; folding the boolean into the filter (`@ == true`) would never match.
fn filter_as_boolean(
    text: &str,
    start: usize,
    s: &str,
    side: &str,
    at: usize,
    op: &str,
    other: &str,
) -> Option<Hint> {
    let wanted = match (op, other) {
        ("==", "true") | ("!=", "false") => true,
        ("==", "false") | ("!=", "true") => false,
        _ => return None,
    };
    let test = if wanted {
        side.to_string()
    } else {
        format!("!{side}")
    };
    let fix = format!("{}{test}{}", &text[..start], &text[start + s.len()..]);
    let lead = s[at - start..].len() - s[at - start..].trim_start().len();
    fixed(
        at + lead,
        format!(
            "`{side}` is a test already, true when an element matches: write it alone (`!` before it for none), not `{op} {other}`"
        ),
        fix,
    )
}

/// Splits a query at its last segment that can select several nodes (`[*]`, `.*`, `..name`,
/// `[?…]`): the query before it (ending in `..` for a descendant segment), the filter it
/// already has, and what follows as a path relative to each node (`.labels.severity`).
fn split_last_multi(side: &str) -> Option<(String, Option<String>, String)> {
    let cs = code_chars(side);
    let mut depth = 0i32;
    let mut last = None;
    for (k, &(i, c)) in cs.iter().enumerate() {
        let next = |n: usize| cs.get(k + n).map(|x| x.1);
        match c {
            '[' if depth == 0 => {
                if next(1) == Some('*') && next(2) == Some(']') {
                    last = Some((i, "[*]"));
                } else if next(1) == Some('?') {
                    last = Some((i, "[?"));
                }
                depth += 1;
            }
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            '.' if depth == 0 && next(1) == Some('.') => last = Some((i, "..")),
            '.' if depth == 0 && next(1) == Some('*') && k > 0 && cs[k - 1].1 != '.' => {
                last = Some((i, ".*"))
            }
            _ => {}
        }
    }
    let (i, kind) = last?;
    match kind {
        "[*]" | ".*" => Some((
            side[..i].to_string(),
            None,
            side[i + kind.len()..].to_string(),
        )),
        ".." => {
            let after = &side[i + 2..];
            let prefix = format!("{}..", &side[..i]);
            if let Some(r) = after.strip_prefix('*') {
                Some((prefix, None, r.to_string()))
            } else if after.starts_with('[') {
                Some((prefix, None, after.to_string()))
            } else {
                Some((prefix, None, format!(".{after}")))
            }
        }
        _ => {
            // `[?…]`: its closing bracket, outside strings.
            let mut depth = 0i32;
            let close = cs.iter().find(|&&(j, c)| {
                if j < i {
                    return false;
                }
                match c {
                    '[' | '(' => depth += 1,
                    ']' | ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })?;
            let filter = side[i + 2..close.0].to_string();
            Some((
                side[..i].to_string(),
                Some(filter),
                side[close.0 + 1..].to_string(),
            ))
        }
    }
}

/// A side of a comparison that is a bare word: a string written without its quotes
/// (`$.state == down`), or a field written without the `$` that stands for the event
/// (`state == "down"`, or `event.state` as templates write it).
fn bare_word(text: &str) -> Option<Hint> {
    let word = |t: &str| {
        t.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !matches!(t, "true" | "false" | "null")
    };
    let query = |t: &str| t.starts_with('$') || t.starts_with('@');
    for (start, s) in split_logical(text) {
        let Some((p, op)) = OPS.iter().find_map(|op| find_op(s, op).map(|p| (p, *op))) else {
            continue;
        };
        let (left, right) = (&s[..p], &s[p + op.len()..]);
        let (l, r) = (left.trim(), right.trim());
        let at_left = start + (left.len() - left.trim_start().len());
        let at_right = start + p + op.len() + (right.len() - right.trim_start().len());
        let replaced =
            |at: usize, len: usize, by: &str| format!("{}{by}{}", &text[..at], &text[at + len..]);
        if let (Some(literal), true) = (json_literal(r), query(l)) {
            let fix = replaced(at_right, r.len(), literal);
            return fixed(
                at_right,
                format!("`{r}` is not a value: JSON writes it `{literal}`, in lower case"),
                fix,
            );
        }
        if word(r) && query(l) {
            let fix = replaced(at_right, r.len(), &format!("\"{r}\""));
            return fixed(
                at_right,
                format!(
                    "`{r}` is not a value: a string goes in double quotes (numbers, true, false and null bare)"
                ),
                fix,
            );
        }
        if word(l) && !query(r) {
            let path = l.strip_prefix("event.").unwrap_or(l);
            let fix = replaced(at_left, l.len(), &format!("$.{path}"));
            return fixed(
                at_left,
                format!("`{l}` is not a query: a field of the event is `$.{path}`"),
                fix,
            );
        }
    }
    None
}

/// JSON's literal that `word` spells another language's way (Python's `True`, `None`; YAML
/// 1.1's `TRUE`, `Null`): the value meant, never the string `"True"`.
fn json_literal(word: &str) -> Option<&'static str> {
    match word.to_ascii_lowercase().as_str() {
        _ if matches!(word, "true" | "false" | "null") => None,
        "true" => Some("true"),
        "false" => Some("false"),
        "null" | "none" | "nil" => Some("null"),
        _ => None,
    }
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

/// Where comparison `op` occurs in `s` outside strings and brackets (and not as part of a
/// longer operator).
fn find_op(s: &str, op: &str) -> Option<usize> {
    let cs = code_chars(s);
    let plain: Vec<char> = cs.iter().map(|&(_, c)| c).collect();
    let want: Vec<char> = op.chars().collect();
    let mut depth = 0i32;
    for k in 0..plain.len() {
        // Inside brackets (a filter's own comparisons) is not this comparison.
        match plain[k] {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if depth == 0 && plain[k..].starts_with(&want) {
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
        assert!(m.contains("needs a value on its right"), "{m}");

        let (at, m) = h(r#"$.details.Assurance Issue Status == "x""#);
        assert_eq!(at, 9);
        assert!(
            m.contains(
                r#"keys with spaces need brackets: `$.details['Assurance Issue Status'] == "x"`"#
            ),
            "{m}"
        );

        let (at, m) = h(r#"$.tags[*] == "core""#);
        assert_eq!(at, 0);
        assert!(m.contains(r#"use a filter: `$.tags[?@ == "core"]`"#), "{m}");

        let (at, m) = h(r#"$.a == 1 and $.b == 2"#);
        assert_eq!(at, 9);
        assert!(m.contains("`and` is written `&&` in a condition"), "{m}");

        let (at, m) = h(r#"($.a == 1 && $.b == "x""#);
        assert_eq!(at, 0);
        assert!(m.contains("never closed"), "{m}");

        let (at, m) = h(r#"$.a == "x" &&"#);
        assert_eq!(at, 11);
        assert!(m.contains("`&&` needs a condition on its right"), "{m}");

        let (at, m) = h(r#"$.a == "x"#);
        assert_eq!(at, 7);
        assert!(m.contains("no closing"), "{m}");

        let (at, m) = h("$.a == 1 && $.state == down");
        assert_eq!(at, 23);
        assert!(
            m.contains(r#"`down` is not a value: a string goes in double quotes"#)
                && m.ends_with(r#"`$.a == 1 && $.state == "down"`"#),
            "{m}"
        );

        let (at, m) = h("$.snapshot.id exists");
        assert_eq!(at, 14);
        assert!(
            m.starts_with("`exists` is not part of a condition") && m.ends_with("`$.snapshot.id`"),
            "{m}"
        );

        let (at, m) = h(r#"event.state == "down""#);
        assert_eq!(at, 0);
        assert!(
            m.contains("`event.state` is not a query: a field of the event is `$.state`")
                && m.ends_with(r#"`$.state == "down"`"#),
            "{m}"
        );
    }

    /// The condition a hint proposes: the text between the last pair of backticks, when the
    /// message ends with one.
    fn proposed(message: &str) -> Option<&str> {
        let body = message.strip_suffix('`')?;
        let open = body.rfind('`')?;
        Some(&body[open + 1..])
    }

    #[test]
    fn every_condition_a_hint_proposes_matches_the_event_it_was_written_for() {
        use crate::domain::EventDoc;
        use crate::rules::condition::Expr;
        use serde_json::json;
        let alert = json!({"status": "firing", "alerts": [
            {"status": "resolved", "labels": {"severity": "warning", "alertname": "Disk"}},
            {"status": "firing", "labels": {"severity": "critical", "alertname": "LinkDown"}}
        ]});
        let calm = json!({"status": "firing", "alerts": [
            {"status": "firing", "labels": {"severity": "warning"}}
        ]});
        // (mistaken condition, the event it was written for, an event it must not match)
        let cases = [
            (
                r#"$.alerts[*].labels.severity == "critical""#,
                &alert,
                &calm,
            ),
            (r#"$.alerts.*.labels.severity == "critical""#, &alert, &calm),
            (r#"$..severity == "critical""#, &alert, &calm),
            (
                r#""critical" == $.alerts[*].labels.severity"#,
                &alert,
                &calm,
            ),
            (
                r#"$.alerts[?@.status == "firing"].labels.severity == "critical""#,
                &alert,
                &calm,
            ),
            (
                r#"$.status == "firing" && $.alerts[*].labels.alertname == "LinkDown""#,
                &alert,
                &calm,
            ),
            (
                r#"$.tags[*] == "core""#,
                &json!({"tags": ["edge", "core"]}),
                &json!({"tags": ["edge"]}),
            ),
            (r#"$.a = "x""#, &json!({"a": "x"}), &json!({"a": "y"})),
            (r#"$.a =! "x""#, &json!({"a": "y"}), &json!({"a": "x"})),
            (r#"$.a =< 3"#, &json!({"a": 2}), &json!({"a": 4})),
            (r#"$.a => 3"#, &json!({"a": 4}), &json!({"a": 2})),
            (
                r#"$.a == 1 and $.b == 2"#,
                &json!({"a": 1, "b": 2}),
                &json!({"a": 1, "b": 3}),
            ),
            (
                r#"$.a == 1 or $.b == 2"#,
                &json!({"a": 0, "b": 2}),
                &json!({"a": 0, "b": 3}),
            ),
            (
                r#"$.details.Assurance Issue Status == "x""#,
                &json!({"details": {"Assurance Issue Status": "x"}}),
                &json!({"details": {"Assurance Issue Status": "y"}}),
            ),
            (
                r#"($.a == 1 && $.b == "x""#,
                &json!({"a": 1, "b": "x"}),
                &json!({"a": 1}),
            ),
            (r#"$.a == "x"#, &json!({"a": "x"}), &json!({"a": "y"})),
            (r#"$.a == "x" &&"#, &json!({"a": "x"}), &json!({"a": "y"})),
            (
                r#"$.state == down"#,
                &json!({"state": "down"}),
                &json!({"state": "up"}),
            ),
            (
                r#"$.a == 1 && $.state != up"#,
                &json!({"a": 1, "state": "down"}),
                &json!({"a": 1, "state": "up"}),
            ),
            (
                r#"state == "down""#,
                &json!({"state": "down"}),
                &json!({"state": "up"}),
            ),
            (
                r#"event.data.kind == "InfraDevice""#,
                &json!({"data": {"kind": "InfraDevice"}}),
                &json!({"data": {"kind": "Other"}}),
            ),
            // Python's and YAML 1.1's spellings of JSON's literals.
            (r#"$.x == True"#, &json!({"x": true}), &json!({"x": "True"})),
            (r#"$.x != False"#, &json!({"x": true}), &json!({"x": false})),
            (r#"$.x == None"#, &json!({"x": null}), &json!({"x": "None"})),
            (r#"$.x == NULL"#, &json!({"x": null}), &json!({"x": "NULL"})),
            // A filter (already true when an element matches) compared to a boolean.
            (
                r#"$.tags[?@ == "core"] == true"#,
                &json!({"tags": ["edge", "core"]}),
                &json!({"tags": ["edge"]}),
            ),
            (
                r#"$.tags[?@ == "core"] == false"#,
                &json!({"tags": ["edge"]}),
                &json!({"tags": ["edge", "core"]}),
            ),
            (
                r#"$.a == 1 && $.alerts[?@.labels.severity == "page"] != false"#,
                &json!({"a": 1, "alerts": [{"labels": {"severity": "page"}}]}),
                &json!({"a": 1, "alerts": [{"labels": {"severity": "info"}}]}),
            ),
            // An existence test in words.
            (
                r#"$.snapshot.id exists"#,
                &json!({"snapshot": {"id": "a"}}),
                &json!({"snapshot": {}}),
            ),
            (
                r#"$.a == 1 && $.test is defined"#,
                &json!({"a": 1, "test": false}),
                &json!({"a": 1}),
            ),
            (
                r#"$.test is not defined"#,
                &json!({"a": 1}),
                &json!({"test": false}),
            ),
        ];
        for (text, event, other) in cases {
            assert!(Expr::compile(text).is_err(), "{text} is a mistake");
            let h = hint(text).unwrap_or_else(|| panic!("no hint for {text}"));
            let fix = proposed(&h.message)
                .unwrap_or_else(|| panic!("{text}: the hint proposes no condition: {}", h.message));
            let expr = Expr::compile(fix)
                .unwrap_or_else(|e| panic!("{text}: the proposal `{fix}` does not compile: {e:?}"));
            assert!(
                expr.eval(&EventDoc::new(event.clone())),
                "{text}: the proposal `{fix}` does not match {event}"
            );
            assert!(
                !expr.eval(&EventDoc::new(other.clone())),
                "{text}: the proposal `{fix}` also matches {other}"
            );
        }
        // A hint that cannot name a whole condition proposes none.
        for text in ["$.a == ", "== 3", "$.a == 1)"] {
            let h = hint(text).unwrap_or_else(|| panic!("no hint for {text}"));
            assert_eq!(proposed(&h.message), None, "{text}: {}", h.message);
        }
    }

    #[test]
    fn operators_inside_strings_are_not_mistakes() {
        assert!(assignment(r#"$.a == "x = y""#).is_none());
        assert!(assignment(r#"$.a != 1 && $.b <= 2 && $.c >= 3"#).is_none());
        assert!(missing_value(r#"$.a == "==""#).is_none());
        assert!(spaced_key(r#"$['a b'] == 1"#).is_none());
    }
}
