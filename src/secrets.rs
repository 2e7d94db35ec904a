//! `${env:NAME}`, `${env:NAME:-fallback}` and `${file:PATH}` references in rulebook strings.
//!
//! Expansion happens once, at load. The expanded value is wrapped in [`Secret`] wherever it is a
//! credential, so it cannot reach a log line or an error message by accident.
//!
//! Every value a reference brought in (not its `:-` fallback, which is written in the rulebook)
//! is also remembered process-wide, and [`mask`] replaces it by `***` in any text: the history
//! (rendered actions, errors, output), the log writer ([`MaskingWriter`]), HTTP error bodies and
//! `/metrics` all pass through it. This is the one place masking happens.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// A credential read from a rulebook: its `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The value itself, for the one place that needs it (a MAC key, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What expanding one string found: the value, and the fallbacks that were used.
#[derive(Debug, Default)]
pub struct Expanded {
    pub value: String,
    /// Names of environment variables that were unset and replaced by their `:-` fallback.
    pub fallbacks: Vec<String>,
    /// True when any `${...}` reference was replaced (the string carries outside data).
    pub referenced: bool,
    /// The values the references brought in (environment values, file contents).
    pub secrets: Vec<String>,
}

/// Values shorter than this are not masked (`***` for every `a` would hide everything and
/// protect nothing); loading warns about them.
pub const MIN_MASKED: usize = 3;

/// Every secret value seen by this process, longest first (so a secret that contains another
/// is masked whole). Only grows: an old rule version may still run after a reload.
fn known() -> &'static ArcSwap<Vec<String>> {
    static KNOWN: std::sync::OnceLock<ArcSwap<Vec<String>>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| ArcSwap::from_pointee(Vec::new()))
}

/// Remembers `value` as a secret to mask from now on. Returns false when it is too short to mask.
pub fn remember(value: &str) -> bool {
    if value.len() < MIN_MASKED {
        return value.is_empty();
    }
    static WRITE: Mutex<()> = Mutex::new(());
    let _guard = WRITE.lock().unwrap_or_else(|e| e.into_inner());
    let current = known().load();
    if current.iter().any(|v| v == value) {
        return true;
    }
    let mut next: Vec<String> = current.as_ref().clone();
    next.push(value.to_string());
    // Written into JSON (a rendered action stored as JSON text, a `--log-json` line) a value
    // with `"`, `\` or a control character appears escaped: that form is masked too.
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let escaped = quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default();
    if escaped != value && !escaped.is_empty() && !next.iter().any(|v| v == escaped) {
        next.push(escaped.to_string());
    }
    next.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    known().store(Arc::new(next));
    true
}

/// `text` with every remembered secret replaced by `***`.
pub fn mask(text: &str) -> Cow<'_, str> {
    let known = known().load();
    let mut out = Cow::Borrowed(text);
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), "***"));
        }
    }
    out
}

/// [`mask`] into an owned string, for fields that are owned already.
pub fn mask_owned(text: String) -> String {
    match mask(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(masked) => masked,
    }
}

/// JSON text with every remembered secret masked inside its strings (the text stays valid JSON:
/// a secret such as `true` is not replaced outside a string). Costs one search per secret when
/// nothing is found, the usual case.
pub fn mask_json_text(text: String) -> String {
    if matches!(mask(&text), Cow::Borrowed(_)) {
        return text;
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(mut v) => {
            mask_json(&mut v);
            serde_json::to_string(&v).unwrap_or_else(|_| "null".into())
        }
        Err(_) => mask_owned(text),
    }
}

/// Masks every string (and key) of a JSON value in place.
pub fn mask_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(m) = mask(s) {
                *s = m;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::Object(map) => {
            let masked_key = map.keys().any(|k| matches!(mask(k), Cow::Owned(_)));
            if masked_key {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    mask_json(&mut v);
                    map.insert(mask_owned(k), v);
                }
            } else {
                map.values_mut().for_each(mask_json);
            }
        }
        _ => {}
    }
}

/// A log writer that masks secrets in each line before it reaches `W` (the tracing formatter
/// writes one event per `write`, so a secret is never split between two writes).
pub struct MaskingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => match mask(text) {
                Cow::Borrowed(_) => self.0.write_all(buf)?,
                Cow::Owned(m) => self.0.write_all(m.as_bytes())?,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(buf);
                self.0.write_all(mask(&text).as_bytes())?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Replaces every `${env:…}` / `${file:…}` in `text`. Errors name the missing variable or file,
/// never a value.
pub fn expand(text: &str) -> Result<Expanded, String> {
    let mut out = Expanded::default();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(kind) = ["env:", "file:"].iter().find(|k| after.starts_with(**k)) else {
            // Not ours (a template or shell text): keep it verbatim.
            out.value.push_str(&rest[..start + 2]);
            rest = after;
            continue;
        };
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{{kind}` reference"))?;
        out.value.push_str(&rest[..start]);
        let body = &after[kind.len()..end];
        out.referenced = true;
        if *kind == "env:" {
            let (name, fallback) = match body.split_once(":-") {
                Some((n, f)) => (n, Some(f)),
                None => (body, None),
            };
            match (std::env::var(name), fallback) {
                (Ok(v), _) => {
                    out.value.push_str(&v);
                    out.secrets.push(v);
                }
                (Err(_), Some(f)) => {
                    out.value.push_str(f);
                    out.fallbacks.push(name.to_string());
                }
                (Err(_), None) => {
                    return Err(format!("environment variable `{name}` is not set"));
                }
            }
        } else {
            let content = read_secret_file(body)?;
            let content = content.trim_end_matches(['\n', '\r']);
            out.value.push_str(content);
            out.secrets.push(content.to_string());
        }
        rest = &after[end + 1..];
    }
    out.value.push_str(rest);
    Ok(out)
}

/// Secret files are small regular files: a device (`/dev/zero`) or a pipe would hang loading.
const MAX_SECRET_FILE: u64 = 64 * 1024;

fn read_secret_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    let fail = |e: &dyn fmt::Display| format!("secret file `{path}` cannot be read: {e}");
    let meta = std::fs::metadata(path).map_err(|e| fail(&e))?;
    if !meta.is_file() {
        return Err(fail(&"it is not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_FILE + 1).read_to_string(&mut text))
        .map_err(|e| fail(&e))?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(fail(&"it is larger than 64 KiB"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_fallback() {
        // SAFETY of the test: a name no other test uses.
        unsafe { std::env::set_var("RULEHOOK_TEST_SECRET_A", "s3cr3t") };
        let e = expand("k=${env:RULEHOOK_TEST_SECRET_A}").unwrap();
        assert_eq!(e.value, "k=s3cr3t");
        let e = expand("${env:RULEHOOK_TEST_UNSET_B:-dev}").unwrap();
        assert_eq!(e.value, "dev");
        assert_eq!(e.fallbacks, vec!["RULEHOOK_TEST_UNSET_B"]);
        let err = expand("${env:RULEHOOK_TEST_UNSET_C}").unwrap_err();
        assert!(err.contains("RULEHOOK_TEST_UNSET_C"));
    }

    #[test]
    fn file_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "from-file\n").unwrap();
        let e = expand(&format!("${{file:{}}}", p.display())).unwrap();
        assert_eq!(e.value, "from-file");
        assert_eq!(
            expand("{{ event.x }} ${HOME}").unwrap().value,
            "{{ event.x }} ${HOME}"
        );
        assert!(
            expand("${file:/nonexistent/x}")
                .unwrap_err()
                .contains("/nonexistent/x")
        );
        // A device would never end: refused, not read.
        assert!(
            expand("${file:/dev/zero}")
                .unwrap_err()
                .contains("not a regular file")
        );
    }

    #[test]
    fn remembered_values_are_masked_everywhere() {
        assert!(remember("rh-test-mask-long-secret"));
        assert!(remember("rh-test-mask"));
        assert!(!remember("ab"));
        assert_eq!(
            mask("x rh-test-mask-long-secret y rh-test-mask z"),
            "x *** y *** z"
        );
        assert!(matches!(mask("nothing here"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({"a": ["rh-test-mask"], "rh-test-mask": 1});
        mask_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["***"], "***": 1}));
        let mut out = MaskingWriter(Vec::new());
        std::io::Write::write_all(&mut out, b"line rh-test-mask\n").unwrap();
        assert_eq!(out.0, b"line ***\n");
    }

    /// A secret with a quote or a backslash is escaped in JSON text: `mask_json_text` (what the
    /// history stores of a rendered action) and JSON log lines found nothing to mask and kept it.
    #[test]
    fn secrets_are_masked_in_json_text_too() {
        let secret = r#"rh-test-"quoted\back"#;
        assert!(remember(secret));
        let text = serde_json::json!({"env": [["TOK", secret]], "args": [format!("x{secret}y")]})
            .to_string();
        let masked = mask_json_text(text);
        assert!(!masked.contains("rh-test-"), "{masked}");
        let v: serde_json::Value = serde_json::from_str(&masked).unwrap();
        assert_eq!(v["env"][0][1], "***");
        assert_eq!(v["args"][0], "x***y");
        let mut out = MaskingWriter(Vec::new());
        let line = format!(
            "{{\"message\":{}}}\n",
            serde_json::to_string(secret).unwrap()
        );
        std::io::Write::write_all(&mut out, line.as_bytes()).unwrap();
        let written = String::from_utf8(out.0).unwrap();
        assert!(!written.contains("rh-test-"), "{written}");
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("pw".into())), "Secret(***)");
    }
}
