//! Python's `json.dumps(obj, separators=(",", ":"))` (with its default `ensure_ascii=True`),
//! which is what Infrahub signs: the body a receiver gets may be spaced or ordered differently.

use serde_json::Value;
use std::io;

/// A serde_json formatter that escapes every non-ASCII character as `\uXXXX` (UTF-16 units,
/// lowercase hex), as Python does.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// The compact, ASCII-escaped encoding of `value`, keys in their received order.
pub fn compact_ascii(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    // Serializing an in-memory Value into a Vec cannot fail.
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_dumps() {
        // python3 -c 'import json;print(json.dumps({"b":"é","a":[1,"😀"],"c":None},separators=(",",":")))'
        let v: Value = serde_json::from_str(r#"{ "b": "é", "a": [1, "😀"], "c": null }"#).unwrap();
        assert_eq!(
            String::from_utf8(compact_ascii(&v)).unwrap(),
            r#"{"b":"\u00e9","a":[1,"\ud83d\ude00"],"c":null}"#
        );
    }
}
