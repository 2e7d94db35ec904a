//! Request URLs built from templates (`post_webhook`'s and `notify`'s `url`): event data may
//! fill in what the rule leaves open, but never move the request to a host the rule does not
//! name. Without this, `url: "https://hooks.example.net{{ event.path }}"` sent the request, and
//! the credentials in its headers, to `evil.test` when an event's `path` was `@evil.test/` or
//! `.evil.test/`.
//!
//! Each value written into a URL template is framed by two private-use characters while the
//! template renders ([`write_value`]); [`finish`] then knows which characters of the rendered URL
//! came from values and which from the rule's own text, checks the authority, and drops the
//! frames. When the URL's scheme (`https://`) is itself a value, the rule takes the whole URL from
//! the event, and nothing is checked.

/// The auto-escape mode of URL templates.
pub(super) const MARK: &str = "url";
/// Suffix of the names of templates compiled as URLs.
pub(super) const SUFFIX: &str = "#url";

const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// Writes one value of a URL template, framed.
pub(super) fn write_value(
    out: &mut minijinja::Output,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    let text = value.to_string();
    let text: String = text.chars().filter(|c| *c != OPEN && *c != CLOSE).collect();
    write!(out, "{OPEN}{text}{CLOSE}")
        .map_err(|_| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "write failed"))
}

/// Where the authority of a URL ends (for `http`/`https`, a backslash is a slash).
fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '\\')
}

/// The rendered URL without its frames, or why a value would change the host the rule names.
pub(super) fn finish(marked: &str) -> Result<String, String> {
    // Each character, and whether it came from a value.
    let mut chars = Vec::with_capacity(marked.len());
    let mut in_value = false;
    for c in marked.chars() {
        match c {
            OPEN => in_value = true,
            CLOSE => in_value = false,
            c => chars.push((c, in_value)),
        }
    }
    let plain: String = chars.iter().map(|(c, _)| c).collect();
    let refuse = |why: &str| {
        Err(format!(
            "a value written into this url would {why}; write event values into its path or \
             query (after the `/` that ends the host), or encode them with `| urlencode`"
        ))
    };
    let Some(sep) = plain.find("://").map(|at| plain[..at].chars().count()) else {
        return Ok(plain);
    };
    let start = sep + 3;
    if chars[..start].iter().any(|(_, v)| *v) {
        // The scheme is the event's: so is the whole URL, by the rule's design.
        return Ok(plain);
    }
    let end = chars[start..]
        .iter()
        .position(|(c, _)| ends_authority(*c))
        .map_or(chars.len(), |i| start + i);
    let authority = &chars[start..end];
    if authority.iter().any(|(c, v)| *v && *c == '@') {
        return refuse("put `@` before the host (user information: the host would change)");
    }
    if end < chars.len() && chars[end].1 {
        // A value ends the host part: the rule's own text that follows must not be part of it.
        let next_literal = chars[end..].iter().find(|(_, v)| !*v);
        if next_literal.is_some_and(|(c, _)| !ends_authority(*c)) {
            return refuse("end the host part before the rule's own text of it");
        }
    }
    let after_user = authority
        .iter()
        .rposition(|(c, _)| *c == '@')
        .map_or(0, |i| i + 1);
    let host_and_port = &authority[after_user..];
    let host_len = if host_and_port.first().is_some_and(|(c, _)| *c == '[') {
        host_and_port
            .iter()
            .position(|(c, _)| *c == ']')
            .map_or(host_and_port.len(), |i| i + 1)
    } else {
        host_and_port
            .iter()
            .position(|(c, _)| *c == ':')
            .unwrap_or(host_and_port.len())
    };
    let host = &host_and_port[..host_len];
    let named = host.iter().any(|(_, v)| !*v);
    if named && host.last().is_some_and(|(_, v)| *v) {
        // `https://hooks.example.net{{ x }}`: a value after the host the rule wrote would
        // extend it (`.evil.test`).
        return refuse("extend the host the rule names");
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `parts` as rendered: `(text, from a value)`.
    fn marked(parts: &[(&str, bool)]) -> String {
        parts
            .iter()
            .map(|(t, v)| {
                if *v {
                    format!("{OPEN}{t}{CLOSE}")
                } else {
                    t.to_string()
                }
            })
            .collect()
    }

    #[test]
    fn values_fill_what_the_rule_leaves_open() {
        for (parts, want) in [
            (
                &[("https://h.example.net/a/", false), ("x/../y?z", true)][..],
                "https://h.example.net/a/x/../y?z",
            ),
            (
                &[("https://h.example.net", false), ("/p?q=1", true)][..],
                "https://h.example.net/p?q=1",
            ),
            (
                &[("https://h.example.net", false), (":8443/p", true)][..],
                "https://h.example.net:8443/p",
            ),
            (
                &[
                    ("https://", false),
                    ("sw1.fra", true),
                    (".mgmt.example.net/api", false),
                ][..],
                "https://sw1.fra.mgmt.example.net/api",
            ),
            (
                &[
                    ("https://api-", false),
                    ("7", true),
                    (".example.net/", false),
                ][..],
                "https://api-7.example.net/",
            ),
            (
                &[("https://", false), ("device.example.org/x", true)][..],
                "https://device.example.org/x",
            ),
            (
                &[("https://", false), ("evil.test", true), ("/p", false)][..],
                "https://evil.test/p",
            ),
            (&[("", false), ("https://a@b/c", true)][..], "https://a@b/c"),
            (
                &[("https://h.example.net/x?u=", false), ("a@b/c#d", true)][..],
                "https://h.example.net/x?u=a@b/c#d",
            ),
        ] {
            assert_eq!(finish(&marked(parts)).as_deref(), Ok(want), "{parts:?}");
        }
    }

    #[test]
    fn values_cannot_move_the_request_to_another_host() {
        for parts in [
            &[("https://hooks.example.net", false), ("@evil.test/x", true)][..],
            &[("https://hooks.example.net", false), (".evil.test/x", true)][..],
            &[("https://hooks.example.net", false), (".evil.test", true)][..],
            &[
                ("https://hooks.example.net:", false),
                ("443@evil.test", true),
            ][..],
            &[
                ("https://", false),
                ("evil.test/", true),
                (".mgmt.example.net/api", false),
            ][..],
            &[
                ("https://", false),
                ("evil.test#", true),
                (".mgmt.example.net/api", false),
            ][..],
            &[
                ("https://", false),
                ("evil.test\\", true),
                (".mgmt.example.net/api", false),
            ][..],
            &[
                ("https://", false),
                ("x@evil.test", true),
                (".mgmt.example.net/api", false),
            ][..],
        ] {
            let got = finish(&marked(parts));
            assert!(got.is_err(), "{parts:?}: {got:?}");
        }
    }
}
