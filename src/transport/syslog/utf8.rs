//! A message's bytes as text. Syslog senders are asked for UTF-8 (RFC 5424 §6.4) but many send
//! Latin-1 or raw bytes; replacing those with U+FFFD lost what they sent without a word. Each
//! byte that is not part of a UTF-8 character is written `\xNN` instead (as syslog-ng does), and
//! the caller flags and counts the message.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `bytes` as text, and whether any byte had to be escaped. UTF-8 is borrowed as it is. A
/// character that a cut (`truncated`) split at the very end is dropped, not escaped: the cut
/// is flagged on its own.
pub fn text(bytes: &[u8], truncated: bool) -> (Cow<'_, str>, bool) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return (Cow::Borrowed(text), false);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    let mut escaped = false;
    let mut chunks = bytes.utf8_chunks().peekable();
    while let Some(chunk) = chunks.next() {
        out.push_str(chunk.valid());
        let last = chunks.peek().is_none();
        if last && truncated && incomplete(chunk.invalid()) {
            break;
        }
        for b in chunk.invalid() {
            escaped = true;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    (Cow::Owned(out), escaped)
}

/// Whether `tail` is the start of a UTF-8 character that was cut off.
fn incomplete(tail: &[u8]) -> bool {
    let Some(&lead) = tail.first() else {
        return false;
    };
    let needs = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return false,
    };
    tail.len() < needs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_borrowed_other_bytes_escaped() {
        assert_eq!(
            text("Störung é".as_bytes(), false),
            ("Störung é".into(), false)
        );
        assert_eq!(
            text(b"St\xf6rung \xff\xfe \xc3\xa9", false),
            (r"St\xf6rung \xff\xfe é".into(), true)
        );
    }

    #[test]
    fn a_character_cut_at_the_end_is_dropped_only_when_truncated() {
        assert_eq!(text(b"caf\xc3", true), ("caf".into(), false));
        assert_eq!(text(b"caf\xc3", false), (r"caf\xc3".into(), true));
        assert_eq!(text(b"caf\xe2\x82", true), ("caf".into(), false));
        assert_eq!(text(b"\xff caf\xc3", true), (r"\xff caf".into(), true));
    }
}
