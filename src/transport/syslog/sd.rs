//! RFC 5424 structured data as rules see it: `{"SD-ID": {"name": "value"}}`. An SD-PARAM may
//! repeat within its element (RFC 5424 §6.3.3), so a name given more than once holds every
//! value, in the order sent, as a list; a name given once stays a string. An SD-ID that a
//! sender repeats (which RFC 5424 forbids) adds its parameters to the first, so no value is
//! lost either way. Values are unescaped as RFC 5424 §6.3.3 says: `\"`, `\\` and `\]` are
//! the only escapes; any other backslash is kept with the character after it (an unescaped
//! Windows path `C:\new` stays as sent).

use serde_json::{Map, Value};
use syslog_loose::StructuredElement;

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
    fn a_repeated_sd_id_adds_to_the_first() {
        assert_eq!(
            sd(r#"<13>1 - h a - ID [x@1 a="1"][y@1 k="v"][x@1 a="2" c="3"] m"#),
            json!({"x@1": {"a": ["1", "2"], "c": "3"}, "y@1": {"k": "v"}})
        );
    }
}
