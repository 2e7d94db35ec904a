//! A rulebook that does not parse, explained: the YAML parser's message without the position it
//! repeats (the caller prints `file:line:col`), "did you mean" for a misspelt key or action, and
//! what an indentation mistake looks like where the parser only says what it expected.

/// How the message for a rulebook past the size guard starts.
const TOO_LARGE: &str = "this rulebook is larger than one file may be";

/// Whether `message` (from [`explain`]) is the size guard's: a problem of the whole file.
pub fn is_too_large(message: &str) -> bool {
    message.starts_with(TOO_LARGE)
}

/// A tab in a line's indentation, where the parser stopped (`found a tab`, `tabs disallowed`):
/// its place and what to do. The parser reports such a tab at the end of the value before it
/// (the line above), and in words that do not say the fix.
pub fn indented_with_a_tab(message: &str, text: &str, line: u64) -> Option<(u64, u64, String)> {
    if !message.contains("tab") {
        return None;
    }
    let from = line.saturating_sub(1) as usize;
    text.lines()
        .enumerate()
        .skip(from)
        .take(2)
        .find_map(|(i, l)| {
            let indent = &l[..l.len() - l.trim_start().len()];
            let at = indent.find('\t')?;
            Some((
                i as u64 + 1,
                at as u64 + 1,
                "a tab in the indentation: YAML indents with spaces only (replace the tab with spaces)"
                    .to_string(),
            ))
        })
}

/// The message for a parse error at `line`/`column` (1-based) of `text`.
pub fn explain(message: &str, text: &str, line: u64, column: u64) -> String {
    let first = message.lines().next().unwrap_or("invalid rulebook");
    let msg = strip_position(first);
    if let Some(m) = unknown(&msg) {
        return m;
    }
    let src_line = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .unwrap_or("");
    if let Some(m) = not_a_number(&msg, src_line, column) {
        return m;
    }
    if let Some(m) = in_plain_words(&msg, text, line, src_line, column) {
        return m;
    }
    if let Some(detail) = msg.strip_prefix("budget breached: ") {
        let what = match between(detail, "nodes: ", " ") {
            Some(n) => format!(
                "{} YAML nodes (values, keys, list items)",
                n.trim_end_matches(',')
            ),
            None => detail.to_string(),
        };
        return format!(
            "{TOO_LARGE} ({what}; a guard against hostile files): split its rules into several files in the rulebooks directory"
        );
    }
    if let Some(field) = between(&msg, "missing field `", "`") {
        return misindented(text, line, field).unwrap_or_else(|| {
            format!("`{field}` is required and missing here: add `{field}:` to this mapping")
        });
    }
    if msg.contains("expected mapping") || msg.contains("invalid type: unit value") {
        // `- log:` followed by its fields at the same indentation as `log`.
        let key_line = if src_line.trim_end().ends_with(':') {
            Some(src_line)
        } else {
            line.checked_sub(2)
                .and_then(|l| text.lines().nth(l as usize))
                .filter(|l| l.trim_end().ends_with(':'))
        };
        if let Some(l) = key_line {
            let key = l.trim().trim_start_matches("- ").trim_end_matches(':');
            return format!(
                "`{key}:` has no value; if its fields are on the next lines, indent them further than `{key}`"
            );
        }
    }
    if let Some(m) = unquoted_ipv6(&msg, src_line) {
        return m;
    }
    if msg.contains("did not find expected") || msg.contains("mapping values are not allowed") {
        return format!(
            "{msg}: check the indentation here (keys of one mapping line up; list items start with `- `; tabs are not allowed)"
        );
    }
    let _ = column;
    msg
}

/// An IPv6 address in brackets (`udp://[::1]:514`) unquoted inside a flow list or mapping:
/// YAML reads its `[` as the start of another list, so what is wrong is the quoting, not the
/// indentation the parser's words suggest.
fn unquoted_ipv6(msg: &str, src_line: &str) -> Option<String> {
    if !(msg.contains("did not find expected") || msg.contains("flow")) {
        return None;
    }
    let at = src_line.find("://[")?;
    let before = &src_line[..at];
    let quoted = before.matches('"').count() % 2 == 1 || before.matches('\'').count() % 2 == 1;
    if quoted || !(before.contains('[') || before.contains('{')) {
        return None;
    }
    Some(format!(
        "{msg}: an IPv6 address inside `[…]` or `{{…}}` must be quoted, or YAML reads its `[` as the start of another list: listen: [\"udp://[::1]:514\"]"
    ))
}

/// The key written before `column` on `src_line` and the value at it (`enabled: maybe` at
/// the `m`: `enabled`, `maybe`); the key is empty when the line has none there.
fn key_and_value(src_line: &str, column: u64) -> (&str, &str) {
    let mut at = (column.saturating_sub(1) as usize).min(src_line.len());
    while !src_line.is_char_boundary(at) {
        at -= 1;
    }
    let (before, after) = src_line.split_at(at);
    let key = before
        .trim_end()
        .trim_end_matches(':')
        .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .next()
        .unwrap_or("");
    // A key with no value is reported at its colon (`windows:`): the colon is not the value.
    let after = after.strip_prefix(':').map_or(after, str::trim_start);
    let value = after
        .split(|c: char| c == ',' || c == '}' || c == ']' || c.is_whitespace())
        .next()
        .unwrap_or("");
    (key, value)
}

/// The YAML library's words for a value of the wrong type (`invalid boolean (strict mode
/// expects true/false)`, `cannot deserialize null into string; use Option<String>`,
/// `duplicate mapping key: k, set DuplicateKeyPolicy in Options …`) speak of its own settings
/// and Rust types, which a rulebook's author cannot act on: said instead with the key, the
/// value found and what goes there.
fn in_plain_words(msg: &str, text: &str, line: u64, src_line: &str, column: u64) -> Option<String> {
    let (key, value) = key_and_value(src_line, column);
    let named = |what: &str| {
        if key.is_empty() {
            format!("{what} goes here, not `{value}`")
        } else {
            format!("`{key}` must be {what}, not `{value}`")
        }
    };
    if msg.starts_with("invalid boolean") {
        return Some(named("`true` or `false`"));
    }
    if matches!(
        msg,
        "invalid floating point" | "invalid f64" | "invalid f32"
    ) {
        return Some(named("a number"));
    }
    if msg.starts_with("cannot deserialize null into") {
        return Some(if key.is_empty() {
            "a value is missing here".to_string()
        } else {
            format!("`{key}` has no value: write it after `{key}:`")
        });
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key") {
        let dup = rest
            .strip_prefix(": ")
            .and_then(|r| r.split(", set DuplicateKeyPolicy").next())
            .unwrap_or(key);
        let above: Vec<&str> = text.lines().take(line.saturating_sub(1) as usize).collect();
        let first = above
            .iter()
            .enumerate()
            .rev()
            .find(|(_, l)| {
                let t = l.trim_start().trim_start_matches("- ");
                t.starts_with(&format!("{dup}:")) && l.len() - t.len() == column as usize - 1
            })
            .map(|(n, _)| format!(" (first at line {})", n + 1))
            .unwrap_or_default();
        return Some(format!(
            "`{dup}` is written twice in one mapping{first}: keep one"
        ));
    }
    if msg == "expected sequence start" && !key.is_empty() {
        let example = if value.is_empty() { "a, b" } else { value };
        return Some(format!(
            "`{key}` must be a list: `{key}: [{example}]`, or one `- item` a line under it"
        ));
    }
    if msg == "expected string scalar" && !key.is_empty() {
        return Some(format!(
            "`{key}` must be a single value (text), not a list or mapping"
        ));
    }
    let first_line = text
        .lines()
        .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map_or(1, |n| n as u64 + 1);
    if msg.starts_with("expected mapping") && line == first_line && key.is_empty() {
        return Some(
            "a rulebook is a mapping of `sources:`, `rules:`, `windows:` and `mode:`, not a list or a value"
                .to_string(),
        );
    }
    None
}

/// `invalid u64` (a negative number, a fraction or one too large where a whole number goes), as
/// a sentence naming the key and the value found.
fn not_a_number(msg: &str, src_line: &str, column: u64) -> Option<String> {
    let ty = msg.strip_prefix("invalid ")?;
    let unsigned = match ty {
        "u8" | "u16" | "u32" | "u64" | "usize" => true,
        "i8" | "i16" | "i32" | "i64" | "isize" => false,
        _ => return None,
    };
    let (key, value) = key_and_value(src_line, column);
    let range = if unsigned { " of 0 or more" } else { "" };
    Some(if key.is_empty() {
        format!("a whole number{range} goes here, not `{value}`")
    } else {
        format!("`{key}` must be a whole number{range}, not `{value}`")
    })
}

/// Removes the parser's own ` at line N, column M` (the caller prints the position).
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(p) if msg[p..].contains("column") => msg[..p].to_string(),
        _ => msg.to_string(),
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let to = s[from..].find(end)? + from;
    Some(&s[from..to])
}

/// `unknown field `x`, expected one of a, b` / `unknown variant …`, with the closest name.
fn unknown(msg: &str) -> Option<String> {
    let (what, rest) = if let Some(r) = msg.strip_prefix("unknown field `") {
        ("key", r)
    } else if let Some(r) = msg.strip_prefix("unknown variant `") {
        ("action", r)
    } else {
        return None;
    };
    let (given, tail) = rest.split_once('`')?;
    let expected: Vec<&str> = tail
        .split_once("expected one of ")
        .map(|(_, l)| l)
        .or_else(|| tail.split_once("expected ").map(|(_, l)| l))?
        .split(", ")
        .map(|s| s.trim_matches('`').trim())
        .filter(|s| !s.is_empty())
        .collect();
    let list = expected.join(", ");
    if matches!(given, "token" | "key" | "api_key") && expected.contains(&"secret") {
        return Some(format!(
            "unknown key `{given}`: a source's credential is `secret` (for bearer tokens and GitLab tokens too), or `secrets: [...]` to accept several"
        ));
    }
    Some(match closest(given, &expected) {
        Some(best) => {
            format!("unknown {what} `{given}`; did you mean `{best}`? (expected one of: {list})")
        }
        None => format!("unknown {what} `{given}`; expected one of: {list}"),
    })
}

pub use crate::text::closest;

/// `missing field `actions`` when `actions:` is there, at another indentation than its siblings.
fn misindented(text: &str, line: u64, field: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let at = (line.saturating_sub(1) as usize).min(lines.len().saturating_sub(1));
    let indent = |l: &str| l.len() - l.trim_start().len();
    let sibling = lines.get(at).map(|l| indent(l.trim_start_matches("- ")))?;
    // Nearby lines (the same entry) that hold the key.
    let start = at.saturating_sub(20);
    let end = (at + 20).min(lines.len());
    for (n, l) in lines.iter().enumerate().take(end).skip(start) {
        let t = l.trim_start().trim_start_matches("- ");
        if t.starts_with(&format!("{field}:")) {
            let i = l.len() - t.len();
            let want = lines
                .get(at)
                .map(|s| {
                    let t = s.trim_start().trim_start_matches("- ");
                    s.len() - t.len()
                })
                .unwrap_or(sibling);
            if i != want {
                return Some(format!(
                    "`{field}` is missing here: line {} has `{field}:` indented {i} spaces, but the other keys of this entry are indented {want}; keys of one mapping must line up",
                    n + 1
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unquoted_ipv6_address_in_a_flow_list_is_named() {
        let text = "sources:\n  - {name: v6, kind: syslog, listen: [udp://[::1]:5514]}\n";
        let m = explain(
            "while parsing a flow mapping, did not find expected ',' or '}'",
            text,
            2,
            45,
        );
        assert!(m.contains("IPv6 address inside `[…]`"), "{m}");
        assert!(!m.contains("indentation"), "{m}");
        let quoted = "sources:\n  - {name: v6, kind: syslog, listen: [\"udp://[::1]:5514\"], x}\n";
        let m = explain("did not find expected ',' or '}'", quoted, 2, 60);
        assert!(!m.contains("IPv6"), "{m}");
    }

    #[test]
    fn unknown_keys_get_a_suggestion_and_no_repeated_position() {
        let m = explain(
            "unknown field `condtion`, expected one of `name`, `sources`, `condition`, `actions` at line 3, column 5",
            "",
            3,
            5,
        );
        assert_eq!(
            m,
            "unknown key `condtion`; did you mean `condition`? (expected one of: name, sources, condition, actions)"
        );
        let m = explain(
            "unknown variant `run_scrpt`, expected one of `run_script`, `log` at line 4, column 9",
            "",
            4,
            9,
        );
        assert!(
            m.starts_with("unknown action `run_scrpt`; did you mean `run_script`?"),
            "{m}"
        );
        let m = explain(
            "unknown field `token`, expected one of `name`, `kind`, `secret` at line 4, column 5",
            "",
            4,
            5,
        );
        assert!(m.contains("a source's credential is `secret`"), "{m}");
        let m = explain(
            "unknown field `nam`, expected one of `name`, `kind`, `secret` at line 4, column 5",
            "",
            4,
            5,
        );
        assert!(
            m.starts_with("unknown key `nam`; did you mean `name`?"),
            "{m}"
        );
        let m = explain(
            "unknown field `zzzz`, expected one of `name`, `kind`",
            "",
            1,
            1,
        );
        assert_eq!(m, "unknown key `zzzz`; expected one of: name, kind");
        assert!(!explain("x at line 2, column 3", "", 2, 3).contains("line 2"));
    }

    #[test]
    fn indentation_mistakes_are_explained() {
        let text = "rules:\n  - name: r\n    condition: '$.a'\n   actions:\n      - log: { message: hi }\n";
        let m = explain("missing field `actions` at line 3, column 5", text, 3, 5);
        assert!(
            m.contains("line 4 has `actions:` indented 3 spaces, but the other keys of this entry are indented 4"),
            "{m}"
        );
        let text = "rules:\n  - name: r\n    actions:\n    - log:\n      message: hi\n";
        let m = explain("expected mapping start at line 4, column 11", text, 4, 11);
        assert!(
            m.contains("`log:` has no value; if its fields are on the next lines, indent them further than `log`"),
            "{m}"
        );
    }

    #[test]
    fn closest_is_only_for_typos() {
        assert_eq!(
            closest("condtion", &["name", "condition"]),
            Some("condition")
        );
        assert_eq!(closest("token", &["name", "kind", "secret"]), None);
    }
}
