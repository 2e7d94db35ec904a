//! The regular expressions written as string literals in `match()` and `search()`. RFC 9535
//! (§2.4.6) makes a pattern that is not a valid regular expression evaluate to false, so the
//! engine compiles a condition such as `search($.msg, "Gi0/1 (up|down")` without a word and the
//! rule never matches: a typo `check` must name. Each literal pattern is compiled here the way
//! the engine does (the `regex` crate, `match()` anchored at both ends); a pattern that comes
//! from the event (`match($.a, $.b)`) can only be judged when an event comes.

use super::condition::ConditionError;

/// The first literal pattern of `match()` / `search()` in `text` that is not a valid regular
/// expression, located at its opening quote.
pub(super) fn invalid_pattern(text: &str) -> Option<ConditionError> {
    let code: Vec<(usize, char)> = crate::text::outside_quotes(text).collect();
    for (k, &(i, c)) in code.iter().enumerate() {
        if !c.is_ascii_alphabetic() || k.checked_sub(1).is_some_and(|p| word_char(code[p].1)) {
            continue;
        }
        let name = if text[i..].starts_with("match") {
            "match"
        } else if text[i..].starts_with("search") {
            "search"
        } else {
            continue;
        };
        let Some(args) = text[i + name.len()..].trim_start().strip_prefix('(') else {
            continue;
        };
        let args_at = text.len() - args.len();
        let Some((at, pattern)) = second_argument(text, args_at) else {
            continue;
        };
        let translated = if name == "match" {
            format!(r"\A(?:{pattern})\z")
        } else {
            pattern.clone()
        };
        if let Err(e) = regex::Regex::new(&translated) {
            return Some(ConditionError {
                offset: at,
                message: format!(
                    "the regular expression {pattern:?} of `{name}()` is not valid ({}), so the condition could never be true; a character meant as itself (`(`, `[`, `*`, `.`, `+`, `?`, `|` …) is escaped with a backslash, `\\\\(` inside the string",
                    reason(&e)
                ),
            });
        }
    }
    None
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '@')
}

/// The second argument of the call whose arguments start at `from`, when it is a string
/// literal: its offset and its value.
fn second_argument(text: &str, from: usize) -> Option<(usize, String)> {
    let mut depth = 0i32;
    let mut comma = None;
    for (i, c) in crate::text::outside_quotes(&text[from..]) {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' if depth == 0 => return None,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                comma = Some(from + i + 1);
                break;
            }
            _ => {}
        }
    }
    let rest = &text[comma?..];
    let at = text.len() - rest.trim_start().len();
    let quote = text[at..]
        .chars()
        .next()
        .filter(|c| matches!(c, '"' | '\''))?;
    let mut escaped = false;
    let end = text[at + 1..].char_indices().find_map(|(i, c)| {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some(at + 1 + i + 1);
        }
        None
    })?;
    match super::condition::literal(&text[at..end])? {
        serde_json::Value::String(s) => Some((at, s)),
        _ => None,
    }
}

/// The regex crate's reason, without its drawing of the pattern (`unclosed group`).
fn reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or("not a regular expression")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::super::condition::Expr;

    #[test]
    fn an_invalid_literal_pattern_is_an_error_at_its_string() {
        let text = r#"$.a == 1 && search($.msg, "Gi0/1 (up|down")"#;
        let e = Expr::compile(text).expect_err("a pattern that can never match");
        assert_eq!(e.offset, text.find("\"Gi0").unwrap_or(0), "{e:?}");
        assert!(
            e.message
                .contains(r#""Gi0/1 (up|down" of `search()` is not valid (unclosed group)"#),
            "{}",
            e.message
        );
        let e = Expr::compile(r#"match($.msg, '*down')"#).expect_err("a leading `*`");
        assert_eq!(e.offset, 13, "{e:?}");
        assert!(
            e.message.contains("of `match()` is not valid"),
            "{}",
            e.message
        );
    }

    #[test]
    fn valid_patterns_and_patterns_from_the_event_still_compile() {
        for ok in [
            r#"search($.text, "changed state to (up|down)")"#,
            r#"match($.ref, "refs/heads/release-.*")"#,
            r#"search(meta("peer"), "^10\\.1\\.")"#,
            r#"match($.a, $.b)"#,
            r#"$.note == "search($.x, \"(\")""#,
            r#"$.items[?search(@.name, 'ge-0/0/[0-9]+')]"#,
            r#"length($.a) > 0 && search($.b, "x") && match($.c, "a|b")"#,
        ] {
            assert!(
                Expr::compile(ok).is_ok(),
                "{ok}: {:?}",
                Expr::compile(ok).err()
            );
        }
    }
}
