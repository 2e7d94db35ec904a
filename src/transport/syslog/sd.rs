//! RFC 5424 structured data as rules see it: `{"SD-ID": {"name": "value"}}`. An SD-PARAM may
//! repeat within its element (RFC 5424 §6.3.3), so a name given more than once holds every
//! value, in the order sent, as a list; a name given once stays a string. An SD-ID that a
//! sender repeats (which RFC 5424 forbids) adds its parameters to the first, so no value is
//! lost either way. Values are unescaped as RFC 5424 §6.3.3 says: `\"`, `\\` and `\]` are
//! the only escapes; any other backslash is kept with the character after it (an unescaped
//! Windows path `C:\new` stays as sent). An element `syslog_loose` could not read (a value
//! without its closing quote, a space before `]`) is left out by it; [`unread`] finds it again,
//! so it is kept as sent in `structured_data_unread` and counted rather than lost.

use serde_json::{Map, Value};
use syslog_loose::StructuredElement;

/// Puts `structured_data` (the elements read) and `structured_data_unread` (those that could
/// not be, as sent) of the RFC 5424 message `line` into its event.
pub fn put(m: &mut Map<String, Value>, line: &str, elements: &[StructuredElement<&str>]) {
    if !elements.is_empty() {
        m.insert("structured_data".into(), Value::Object(object(elements)));
    }
    let unread = unread(line, elements.len());
    if !unread.is_empty() {
        let unread = unread
            .into_iter()
            .map(|e| Value::String(e.into()))
            .collect();
        m.insert("structured_data_unread".into(), Value::Array(unread));
    }
}

/// The SD elements of the RFC 5424 message `line` that could not be read, as sent: each `[`
/// up to the next `]` where no element could be read, as `syslog_loose` skips it. `read`: how
/// many elements it did read; when this scan does not find as many, it cannot tell where the
/// elements are and finds none.
pub fn unread(line: &str, read: usize) -> Vec<&str> {
    let Some(start) = sd_start(line) else {
        return Vec::new();
    };
    let mut s = &line[start..];
    let mut readable = 0;
    let mut unread = Vec::new();
    while s.starts_with('[') {
        if let Some(n) = element(s) {
            readable += 1;
            s = &s[n..];
            continue;
        }
        let Some(close) = s.find(']') else {
            break;
        };
        unread.push(&s[..=close]);
        s = &s[close + 1..];
    }
    if readable != read {
        return Vec::new();
    }
    unread
}

/// Where STRUCTURED-DATA starts: after `<PRI>VERSION` and five header fields (TIMESTAMP,
/// HOSTNAME, APP-NAME, PROCID, MSGID), none of which holds a space.
fn sd_start(line: &str) -> Option<usize> {
    let s = line.strip_prefix('<')?;
    let mut s = &s[s.find('>')? + 1..];
    let version = s.bytes().take_while(u8::is_ascii_digit).count();
    if version == 0 {
        return None;
    }
    s = &s[version..];
    for _ in 0..5 {
        let field = s.trim_start_matches([' ', '\t']);
        if field.len() == s.len() {
            return None;
        }
        let end = field.find(char::is_whitespace).unwrap_or(field.len());
        if end == 0 {
            return None;
        }
        s = &field[end..];
    }
    Some(line.len() - s.trim_start_matches([' ', '\t']).len())
}

/// The length of the element at the start of `s` when it can be read as `syslog_loose` reads
/// one: `[`, an SD-ID, parameters separated by one space, `]`.
fn element(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('[')?;
    let id = rest
        .find(|c: char| c.is_whitespace() || c == ']' || c == '=')
        .unwrap_or(rest.len());
    if id == 0 {
        return None;
    }
    let mut rest = rest[id..].trim_start_matches([' ', '\t']);
    if let Some(n) = param(rest) {
        rest = &rest[n..];
        while let Some(after) = rest.strip_prefix(' ') {
            match param(after) {
                Some(n) => rest = &after[n..],
                None => break,
            }
        }
    }
    let rest = rest.strip_prefix(']')?;
    Some(s.len() - rest.len())
}

/// The length of `name="value"` at the start of `s` (spaces allowed after `=`; a backslash
/// takes the character after it).
fn param(s: &str) -> Option<usize> {
    let name = s.find([']', '=']).unwrap_or(s.len());
    if name == 0 {
        return None;
    }
    let value = s[name..]
        .strip_prefix('=')?
        .trim_start_matches([' ', '\t'])
        .strip_prefix('"')?;
    let mut chars = value.char_indices();
    let close = loop {
        match chars.next()? {
            (i, '"') => break i,
            (_, '\\') => {
                chars.next()?;
            }
            _ => {}
        }
    };
    Some(s.len() - value.len() + close + 1)
}

/// The `structured_data` object of a message's elements.
pub fn object(elements: &[StructuredElement<&str>]) -> Map<String, Value> {
    let mut sd = Map::new();
    for el in elements {
        let Value::Object(params) = sd
            .entry(el.id.to_string())
            .or_insert_with(|| Value::Object(Map::new()))
        else {
            continue;
        };
        for (name, value) in &el.params {
            add(params, name, unescape(value));
        }
    }
    sd
}

/// A PARAM-VALUE as sent (between its quotes) without its escapes.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('"' | '\\' | ']')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Adds one parameter: a second value of a name makes it a list.
fn add(params: &mut Map<String, Value>, name: &str, value: String) {
    match params.get_mut(name) {
        None => {
            params.insert(name.to_string(), Value::String(value));
        }
        Some(Value::Array(values)) => values.push(Value::String(value)),
        Some(first) => {
            let first = first.take();
            params.insert(
                name.to_string(),
                Value::Array(vec![first, Value::String(value)]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sd(line: &str) -> Value {
        let msg = syslog_loose::parse_message(line, syslog_loose::Variant::RFC5424);
        Value::Object(object(&msg.structured_data))
    }

    #[test]
    fn a_name_given_once_is_a_string_a_repeated_one_a_list() {
        assert_eq!(
            sd(r#"<13>1 - h a - ID [x@1 a="1" b="2" a="3" a="4"] m"#),
            json!({"x@1": {"a": ["1", "3", "4"], "b": "2"}})
        );
    }

    #[test]
    fn only_quote_backslash_and_bracket_are_escapes() {
        assert_eq!(unescape(r#"C:\new\temp"#), r"C:\new\temp");
        assert_eq!(unescape(r#"a\"b\\c\]d"#), r#"a"b\c]d"#);
        assert_eq!(unescape(r"\\n"), r"\n");
        assert_eq!(unescape(""), "");
    }

    #[test]
    fn elements_that_cannot_be_read_are_found_as_sent() {
        let unread = |line: &str| {
            let msg = syslog_loose::parse_message(line, syslog_loose::Variant::RFC5424);
            unread(line, msg.structured_data.len())
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert!(unread(r#"<13>1 - h a - ID [x@1 a="1" b="\"]\\"][y@1] m"#).is_empty());
        assert!(unread(r#"<13>1 - h a - ID - [x@1 a="1] m"#).is_empty());
        assert_eq!(
            unread(r#"<13>1 2026-12-08T00:00:00Z h a 1 ID [x@1 a="1][y@1 k="v"][z@1 b="2" ] m"#),
            [r#"[x@1 a="1]"#, r#"[z@1 b="2" ]"#]
        );
        assert_eq!(unread(r#"<13>1  -  h a - ID [x y][ok] [z w] m"#), ["[x y]"]);
        assert_eq!(unread(r#"<13>1 - h a - ID [=] m"#), ["[=]"]);
    }

    #[test]
    fn a_repeated_sd_id_adds_to_the_first() {
        assert_eq!(
            sd(r#"<13>1 - h a - ID [x@1 a="1"][y@1 k="v"][x@1 a="2" c="3"] m"#),
            json!({"x@1": {"a": ["1", "2"], "c": "3"}, "y@1": {"k": "v"}})
        );
    }
}
