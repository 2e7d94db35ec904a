//! `${env:NAME}`, `${env:NAME:-fallback}` and `${file:PATH}` references in rulebook strings.
//!
//! Expansion happens once, at load. The expanded value is wrapped in [`Secret`] wherever it is a
//! credential, so it cannot reach a log line or an error message by accident.

use std::fmt;

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
                (Ok(v), _) => out.value.push_str(&v),
                (Err(_), Some(f)) => {
                    out.value.push_str(f);
                    out.fallbacks.push(name.to_string());
                }
                (Err(_), None) => {
                    return Err(format!("environment variable `{name}` is not set"));
                }
            }
        } else {
            let content = std::fs::read_to_string(body)
                .map_err(|e| format!("secret file `{body}` cannot be read: {e}"))?;
            out.value.push_str(content.trim_end_matches(['\n', '\r']));
        }
        rest = &after[end + 1..];
    }
    out.value.push_str(rest);
    Ok(out)
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
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("pw".into())), "Secret(***)");
    }
}
