//! Cisco IOS, IOS-XE and NX-OS lines, which are not RFC syslog: after the PRI come sequence
//! numbers, an optional hostname (`logging origin-id`) and the device's own time — marked `*`
//! when its clock was never set and `.` when NTP sync was lost, often with milliseconds, a year
//! or a zone abbreviation — each ended by `: `, then `%FACILITY-SEVERITY-MNEMONIC: text`.
//! A relay (rsyslog, a load balancer) may put its own `Mmm dd hh:mm:ss host` in front.
//!
//! The `%FAC-SEV-MNEMONIC` tag is also what Arista EOS and other vendors write at the start of
//! an RFC 3164 message: [`tag`] reads it wherever it starts the message.

use serde_json::{Map, Value, json};

/// The `%FACILITY-SEVERITY-MNEMONIC:` at the start of `text`: (facility, severity, mnemonic).
pub fn tag(text: &str) -> Option<(&str, u8, &str)> {
    let body = text.strip_prefix('%')?;
    let end = body.find(':')?;
    let tag = &body[..end];
    if tag.is_empty()
        || !tag
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return None;
    }
    let (rest, mnemonic) = tag.rsplit_once('-')?;
    let (facility, severity) = rest.rsplit_once('-')?;
    let severity = match severity.as_bytes() {
        [d @ b'0'..=b'7'] => d - b'0',
        _ => return None,
    };
    if facility.is_empty() || mnemonic.is_empty() {
        return None;
    }
    Some((facility, severity, mnemonic))
}

/// The tag as the event's `cisco` object.
pub fn tag_fields(text: &str) -> Option<Map<String, Value>> {
    let (facility, severity, mnemonic) = tag(text)?;
    let mut m = Map::new();
    m.insert("facility".into(), json!(facility));
    m.insert("severity".into(), json!(severity));
    m.insert("mnemonic".into(), json!(mnemonic));
    Some(m)
}

/// What a Cisco header held.
#[derive(Debug, Default, PartialEq)]
pub struct Header {
    pub hostname: Option<String>,
    pub sequence: Vec<u64>,
    /// The device's time as written (without its `*`/`.` mark).
    pub time_text: Option<String>,
    /// RFC 3339, when the time could be read (a zone other than UTC/GMT cannot be).
    pub timestamp: Option<String>,
    /// `*`: the clock was never set; `.`: NTP sync was lost.
    pub clock: Option<&'static str>,
}

/// Splits a line (after its PRI) into the Cisco header and the message starting at `%`, when
/// it is a Cisco line: every part before the tag is a sequence number, a time or a hostname.
pub fn parse(rest: &str, year: impl Fn(u32, u32) -> i32) -> Option<(Header, &str)> {
    let at = tag_start(rest)?;
    let head = rest[..at].trim_end();
    let head = head.strip_suffix(':').unwrap_or(head);
    let mut h = Header::default();
    for (i, part) in head.split(": ").enumerate() {
        let part = part.trim().trim_end_matches(':');
        if part.is_empty() {
            continue;
        }
        if let Ok(n) = part.parse::<u64>() {
            h.sequence.push(n);
        } else if let Some(t) = time(part, &year) {
            if let Some(mark) = t.clock {
                h.clock = Some(mark);
            }
            h.time_text = Some(t.text);
            h.timestamp = t.rfc3339;
        } else if i == 0 {
            // A relay's `Mmm dd hh:mm:ss host [seq]` in front of the device's header.
            let words: Vec<&str> = part.split_whitespace().collect();
            if words.len() < 4 {
                if words.len() == 1 {
                    h.hostname = Some(part.to_string());
                    continue;
                }
                return None;
            }
            let relay = time(&words[..3].join(" "), &year)?;
            h.time_text.get_or_insert(relay.text);
            if h.timestamp.is_none() {
                h.timestamp = relay.rfc3339;
            }
            h.hostname = Some(words[3].to_string());
            for w in &words[4..] {
                h.sequence.push(w.parse().ok()?);
            }
        } else if !part.contains(' ') {
            h.hostname = Some(part.to_string());
        } else {
            return None;
        }
    }
    Some((h, &rest[at..]))
}

/// Where the `%FAC-SEV-MNEMONIC:` tag starts: at the start or after a space.
fn tag_start(text: &str) -> Option<usize> {
    text.match_indices('%')
        .map(|(i, _)| i)
        .find(|&i| (i == 0 || text.as_bytes()[i - 1] == b' ') && tag(&text[i..]).is_some())
}

struct Time {
    text: String,
    rfc3339: Option<String>,
    clock: Option<&'static str>,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A Cisco time: month name, day and `hh:mm:ss[.fff]` in any order with an optional year and
/// zone abbreviation (`*Mar  1 00:09:07.555`, `.Jan 12 2024 10:11:12.123 UTC`,
/// `2013 Mar 15 11:06:26 UTC`).
fn time(text: &str, year: &impl Fn(u32, u32) -> i32) -> Option<Time> {
    let (clock, body) = match text.as_bytes().first()? {
        b'*' => (Some("unset"), &text[1..]),
        b'.' => (Some("unsynced"), &text[1..]),
        _ => (None, text),
    };
    let (mut y, mut mo, mut d, mut hms, mut zone) = (None, None, None, None, None);
    for w in body.split_whitespace() {
        if let Some(m) = MONTHS.iter().position(|m| *m == w) {
            mo = Some(m as u32 + 1);
        } else if w.len() == 4 && w.bytes().all(|b| b.is_ascii_digit()) {
            y = w.parse::<i32>().ok();
        } else if w.len() <= 2 && w.bytes().all(|b| b.is_ascii_digit()) {
            d = w.parse::<u32>().ok();
        } else if w.contains(':') {
            hms = Some(w);
        } else if w.bytes().all(|b| b.is_ascii_alphabetic()) && w.len() <= 5 {
            zone = Some(w);
        } else {
            return None;
        }
    }
    let (mo, d, hms) = (mo?, d?, hms?);
    let (clock_part, frac) = match hms.split_once('.') {
        Some((c, f)) if f.bytes().all(|b| b.is_ascii_digit()) && !f.is_empty() => (c, Some(f)),
        Some(_) => return None,
        None => (hms, None),
    };
    let mut hms_parts = clock_part.split(':').map(|p| p.parse::<u32>().ok());
    let (h, mi, s) = (hms_parts.next()??, hms_parts.next()??, hms_parts.next()??);
    if hms_parts.next().is_some() {
        return None;
    }
    let utc = zone.is_none_or(|z| matches!(z, "UTC" | "GMT" | "Z"));
    let rfc3339 = if utc {
        let year = y.unwrap_or_else(|| year(mo, d));
        let date = chrono::NaiveDate::from_ymd_opt(year, mo, d)?;
        let nanos = frac
            .map(|f| {
                let digits = &f[..f.len().min(9)];
                digits.parse::<u32>().unwrap_or(0) * 10u32.pow(9 - digits.len() as u32)
            })
            .unwrap_or(0);
        let t = chrono::NaiveTime::from_hms_nano_opt(h, mi, s, nanos)?;
        Some(
            chrono::NaiveDateTime::new(date, t)
                .and_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    } else {
        None
    };
    Some(Time {
        text: body.trim().to_string(),
        rfc3339,
        clock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(_: u32, _: u32) -> i32 {
        2026
    }

    #[test]
    fn tags() {
        assert_eq!(tag("%SYS-5-CONFIG_I: x"), Some(("SYS", 5, "CONFIG_I")));
        assert_eq!(
            tag("%ROUTING-BGP-5-ADJCHANGE: x"),
            Some(("ROUTING-BGP", 5, "ADJCHANGE"))
        );
        assert_eq!(tag("%SYS-9-X: x"), None);
        assert_eq!(tag("%sys-5-x: x"), None);
        assert_eq!(tag("%SYS-5-CONFIG_I"), None);
        assert_eq!(tag("100% done: x"), None);
    }

    #[test]
    fn ios_with_unset_clock_and_sequence() {
        let (h, msg) = parse(
            "49: *Mar  1 00:09:07.555: %SYS-5-CONFIG_I: Configured from console by vty0",
            y,
        )
        .unwrap();
        assert_eq!(h.sequence, vec![49]);
        assert_eq!(h.clock, Some("unset"));
        assert_eq!(h.timestamp.as_deref(), Some("2026-03-01T00:09:07.555Z"));
        assert_eq!(h.hostname, None);
        assert!(msg.starts_with("%SYS-5-CONFIG_I: Configured"));
    }

    #[test]
    fn relayed_with_two_sequence_numbers() {
        let (h, msg) = parse(
            "Nov  5 14:01:20 10.1.186.49 87117903: 87117909: Nov  5 14:01:19.115: %FMANFP-6-IPACCESSLOGP: F0: fman_fp_image: list 101 denied udp",
            y,
        )
        .unwrap();
        assert_eq!(h.hostname.as_deref(), Some("10.1.186.49"));
        assert_eq!(h.sequence, vec![87117903, 87117909]);
        assert_eq!(h.timestamp.as_deref(), Some("2026-11-05T14:01:19.115Z"));
        assert!(msg.starts_with("%FMANFP-6-IPACCESSLOGP: F0:"));
    }

    #[test]
    fn origin_id_unsynced_zones_and_nxos() {
        let (h, _) = parse(
            "1234: router1: .Jan 12 10:11:12.123 CET: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
            y,
        )
        .unwrap();
        assert_eq!(h.hostname.as_deref(), Some("router1"));
        assert_eq!(h.clock, Some("unsynced"));
        assert_eq!(
            h.timestamp, None,
            "CET cannot be read without a zone database"
        );
        assert_eq!(h.time_text.as_deref(), Some("Jan 12 10:11:12.123 CET"));
        let (h, msg) = parse(
            ": 2013 Mar 15 11:06:26 UTC: %ETHPORT-5-IF_DOWN_LINK_FAILURE: Interface Ethernet1/1 is down (Link failure)",
            y,
        )
        .unwrap();
        assert_eq!(h.timestamp.as_deref(), Some("2013-03-15T11:06:26Z"));
        assert!(msg.starts_with("%ETHPORT-5-"));
        let (h, _) = parse(
            "83: Jan 12 2024 10:11:12.123 UTC: %SYS-5-CONFIG_I: Configured",
            y,
        )
        .unwrap();
        assert_eq!(h.timestamp.as_deref(), Some("2024-01-12T10:11:12.123Z"));
    }

    #[test]
    fn not_cisco() {
        assert!(parse("Jan 12 10:11:12 host sshd[1]: accepted", y).is_none());
        assert!(parse("Jan 12 10:11:12 host app: free text here: %SYS-5-X: y", y).is_none());
    }
}
