//! What a source's body is (`format:`), and the event conditions and templates see for it.
//!
//! Senders do not all post JSON: a Cisco EEM script posts a line of text, GitHub and GitLab can
//! be set to `application/x-www-form-urlencoded`. Decoding happens only after verification
//! succeeded on the raw bytes; the result is always a JSON value:
//!
//! | format | event |
//! | --- | --- |
//! | `json` | the body as parsed |
//! | `text` | `{"text": "<the body>"}` (UTF-8) |
//! | `form` | `{"field": "value", …}`; a repeated field becomes a list; a form whose only field is `payload` holding JSON (GitHub's form encoding) is that JSON |
//! | `auto` | by `Content-Type`: `…json` → json, `application/x-www-form-urlencoded` → form (text when no field has `=`: `curl -d` and Tcl send text that way), `text/…` → text; none or other: json when it parses, else text |

use serde_json::{Map, Value};

/// How a source's body is decoded into the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    #[default]
    Json,
    Text,
    Form,
    Auto,
}

/// Why a body is not what its source's format promises (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body is not UTF-8 text")]
    NotText,
    #[error("body is nested deeper than {MAX_DEPTH} levels of arrays and objects")]
    TooDeep,
}

/// The deepest nesting of arrays and objects a JSON body may have. Every answer that carries
/// an event wraps its body in a few more levels (`/api/events/{id}`, `/api/stored-events`),
/// and JSON readers stop at 128 (serde_json, so `rulehook event`, `whatif --url`): a body
/// nested 127 deep was stored, then could be read by no tool (whatif failed whole).
pub const MAX_DEPTH: usize = 64;

impl BodyError {
    /// The short code of the HTTP error body.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::Json(_) => "invalid_json",
            BodyError::NotText => "invalid_text",
            BodyError::TooDeep => "too_deep",
        }
    }
}

pub const FORMATS: &[&str] = &["json", "text", "form", "auto"];

impl BodyFormat {
    pub fn parse(s: &str) -> Option<BodyFormat> {
        Some(match s {
            "json" => BodyFormat::Json,
            "text" => BodyFormat::Text,
            "form" => BodyFormat::Form,
            "auto" => BodyFormat::Auto,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            BodyFormat::Json => "json",
            BodyFormat::Text => "text",
            BodyFormat::Form => "form",
            BodyFormat::Auto => "auto",
        }
    }

    /// Decodes `body` (sent with `content_type`); returns the event and whether it is the body
    /// parsed as JSON (then the raw bytes are what the history stores and replays).
    pub fn decode(
        self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(Value, bool), BodyError> {
        self.decode_as_sent(content_type, body)
            .map_err(|e| with_charset(e, content_type))
    }

    fn decode_as_sent(
        self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(Value, bool), BodyError> {
        match self {
            BodyFormat::Json => json(body).map(|v| (v, true)),
            BodyFormat::Text => text(body).map(|v| (v, false)),
            BodyFormat::Form => Ok((form(body), false)),
            BodyFormat::Auto => {
                let mime = content_type
                    .and_then(|c| c.split(';').next())
                    .map(|m| m.trim().to_ascii_lowercase())
                    .unwrap_or_default();
                if mime == "application/json" || mime.ends_with("+json") {
                    json(body).map(|v| (v, true))
                } else if mime == "application/x-www-form-urlencoded" {
                    if body.contains(&b'=') {
                        Ok((form(body), false))
                    } else {
                        text(body).map(|v| (v, false))
                    }
                } else if mime.starts_with("text/") {
                    text(body).map(|v| (v, false))
                } else {
                    match json(body) {
                        Ok(v) => Ok((v, true)),
                        Err(_) => text(body).map(|v| (v, false)),
                    }
                }
            }
        }
    }
}

/// A body that did not decode, sent with a charset other than UTF-8 (`charset=utf-16`): the
/// error says so, since rulehook reads every body as UTF-8 (as JSON is, RFC 8259). It said
/// only `expected value at line 1 column 1`.
fn with_charset(e: BodyError, content_type: Option<&str>) -> BodyError {
    let BodyError::Json(why) = e else {
        return e;
    };
    let charset = content_type
        .into_iter()
        .flat_map(|c| c.split(';').skip(1))
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, v)| v.trim().trim_matches('"'));
    match charset {
        Some(c) if !c.eq_ignore_ascii_case("utf-8") && !c.eq_ignore_ascii_case("us-ascii") => {
            let shown: String = c
                .chars()
                .filter(|ch| ch.is_ascii_graphic())
                .take(32)
                .collect();
            BodyError::Json(format!(
                "{why} (the request says charset={shown}: send it as UTF-8, the only encoding rulehook reads)"
            ))
        }
        _ => BodyError::Json(why),
    }
}

fn json(body: &[u8]) -> Result<Value, BodyError> {
    if too_deep(body) {
        return Err(BodyError::TooDeep);
    }
    // Checked as UTF-8 once, whole: parsing from a `str` skips the check of every string
    // inside (~1k instructions for a small event). A body that is not UTF-8 is parsed from
    // the bytes, for the same error as before.
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
    .map_err(|e| BodyError::Json(e.to_string()))
}

/// Whether the JSON text `body` nests arrays and objects deeper than [`MAX_DEPTH`] (brackets
/// inside strings do not count). Fewer opening brackets than that in all cannot be: one fast
/// count settles nearly every body, the exact scan runs only for the rest.
pub fn too_deep(body: &[u8]) -> bool {
    if memchr::memchr2_iter(b'[', b'{', body)
        .nth(MAX_DEPTH)
        .is_none()
    {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn text(body: &[u8]) -> Result<Value, BodyError> {
    let s = std::str::from_utf8(body).map_err(|_| BodyError::NotText)?;
    let mut m = Map::new();
    m.insert("text".into(), Value::String(s.to_string()));
    Ok(Value::Object(m))
}

fn form(body: &[u8]) -> Value {
    let mut m = Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        let v = Value::String(v.into_owned());
        match m.get_mut(k.as_ref()) {
            None => {
                m.insert(k.into_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => {
                let first = first.take();
                m.insert(k.into_owned(), Value::Array(vec![first, v]));
            }
        }
    }
    if m.len() == 1
        && let Some(Value::String(p)) = m.get("payload")
        && !too_deep(p.as_bytes())
        && let Ok(v @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str::<Value>(p)
    {
        return v;
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_an_object_with_the_text() {
        let (v, raw) = BodyFormat::Text
            .decode(None, b"Interface GigabitEthernet0/1 is up")
            .unwrap();
        assert_eq!(v, json!({"text": "Interface GigabitEthernet0/1 is up"}));
        assert!(!raw);
        assert_eq!(
            BodyFormat::Text.decode(None, &[0xff, 0xfe]),
            Err(BodyError::NotText)
        );
    }

    #[test]
    fn form_fields_repeats_and_github_payload() {
        let (v, _) = BodyFormat::Form
            .decode(None, b"a=1&b=two+words&a=3&c=%C3%A9")
            .unwrap();
        assert_eq!(v, json!({"a": ["1", "3"], "b": "two words", "c": "é"}));
        let (v, _) = BodyFormat::Form
            .decode(None, b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D")
            .unwrap();
        assert_eq!(v, json!({"ref": "refs/heads/main"}));
        // A `payload` that is not JSON stays a field.
        let (v, _) = BodyFormat::Form.decode(None, b"payload=hello").unwrap();
        assert_eq!(v, json!({"payload": "hello"}));
    }

    #[test]
    fn json_errors_are_those_of_the_bytes() {
        for body in [
            &b"{\"a\": \"\xff\"}"[..],
            b"{\"a\": 1,}",
            b"[1, 2",
            b"{\"a\": \"caf\xc3\xa9\"} x",
            b"\xef\xbb\xbf{}",
        ] {
            let want = serde_json::from_slice::<Value>(body).map_err(|e| e.to_string());
            let got = json(body).map_err(|e| match e {
                BodyError::Json(m) => m,
                other => other.to_string(),
            });
            assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
        }
    }

    /// A body nested deeper than 64 levels is refused (`too_deep`): one of 127 levels passed
    /// serde_json's limit, was stored, and then no answer carrying it could be read back
    /// (`rulehook event` showed nothing, `whatif --url` failed for the whole period).
    #[test]
    fn bodies_nested_too_deep_are_refused() {
        let nest = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(BodyFormat::Json.decode(None, nest(64).as_bytes()).is_ok());
        assert_eq!(
            BodyFormat::Json.decode(None, nest(65).as_bytes()),
            Err(BodyError::TooDeep)
        );
        let objects = format!("{}1{}", r#"{"a":"#.repeat(127), "}".repeat(127));
        assert_eq!(
            BodyFormat::Auto.decode(Some("application/json"), objects.as_bytes()),
            Err(BodyError::TooDeep)
        );
        assert_eq!(BodyError::TooDeep.code(), "too_deep");
        // Brackets inside strings are text, not nesting; escaped quotes stay inside.
        let text = format!(
            r#"{{"a": "{}\"{}", "b": [[1]]}}"#,
            "[".repeat(200),
            "{".repeat(200)
        );
        assert!(BodyFormat::Json.decode(None, text.as_bytes()).is_ok());
        // Many arrays side by side are not deep.
        let wide = format!("[{}1]", "[1],".repeat(500));
        assert!(BodyFormat::Json.decode(None, wide.as_bytes()).is_ok());
        // GitHub's form encoding: a payload too deep stays a field.
        let form = format!("payload={}", nest(100));
        let (v, _) = BodyFormat::Form.decode(None, form.as_bytes()).unwrap();
        assert!(v["payload"].is_string(), "{v}");
    }

    /// JSON sent as UTF-16 fails to parse, and the error names the charset the request gave,
    /// instead of `expected value at line 1 column 1` alone; UTF-8 and no charset read as before.
    #[test]
    fn a_body_in_another_charset_says_so() {
        let utf16 = b"\xff\xfe{\x00}\x00";
        for (format, ct) in [
            (BodyFormat::Json, "application/json; charset=UTF-16"),
            (BodyFormat::Auto, "application/json;charset=\"utf-16le\""),
        ] {
            let Err(BodyError::Json(m)) = format.decode(Some(ct), utf16) else {
                panic!("{ct}")
            };
            assert!(
                m.contains("charset=utf-16") || m.contains("charset=UTF-16"),
                "{m}"
            );
            assert!(m.contains("send it as UTF-8"), "{m}");
        }
        let Err(BodyError::Json(m)) =
            BodyFormat::Json.decode(Some("application/json; charset=utf-8"), b"{")
        else {
            panic!("not json")
        };
        assert!(!m.contains("charset"), "{m}");
        assert!(
            BodyFormat::Json
                .decode(Some("application/json; charset=iso-8859-1"), br#"{"a": 1}"#)
                .is_ok(),
            "an ASCII body under another charset still reads"
        );
    }

    #[test]
    fn json_is_strict() {
        assert!(matches!(
            BodyFormat::Json.decode(Some("text/plain"), b"link up"),
            Err(BodyError::Json(_))
        ));
        assert_eq!(
            BodyFormat::Json.decode(None, b"{\"a\":1}").unwrap(),
            (json!({"a": 1}), true)
        );
    }

    #[test]
    fn auto_follows_the_content_type() {
        let d = |ct: Option<&str>, b: &[u8]| BodyFormat::Auto.decode(ct, b).unwrap().0;
        assert_eq!(
            d(Some("application/json; charset=utf-8"), b"[1]"),
            json!([1])
        );
        assert_eq!(d(Some("application/vnd.x+json"), b"{}"), json!({}));
        assert!(
            BodyFormat::Auto
                .decode(Some("application/json"), b"nope")
                .is_err()
        );
        assert_eq!(
            d(Some("application/x-www-form-urlencoded"), b"x=1"),
            json!({"x": "1"})
        );
        // curl -d / Tcl geturl send text with the form content type.
        assert_eq!(
            d(Some("application/x-www-form-urlencoded"), b"link down"),
            json!({"text": "link down"})
        );
        assert_eq!(d(Some("text/plain"), b"42"), json!({"text": "42"}));
        assert_eq!(d(None, b"{\"a\":1}"), json!({"a": 1}));
        assert_eq!(d(None, b"link up"), json!({"text": "link up"}));
        assert_eq!(
            d(Some("application/octet-stream"), b"x"),
            json!({"text": "x"})
        );
    }

    #[test]
    fn names_round_trip() {
        for f in FORMATS {
            assert_eq!(BodyFormat::parse(f).unwrap().name(), *f);
        }
        assert_eq!(BodyFormat::parse("yaml"), None);
    }
}
