//! Cisco IOS, IOS-XE, IOS-XR and NX-OS lines, which are not RFC syslog: after the PRI come
//! sequence numbers, an optional hostname (`logging origin-id`) and the device's own time —
//! marked `*` when its clock was never set and `.` when NTP sync was lost, often with
//! milliseconds, a year or a zone abbreviation, or the uptime (`00:01:23`, `1w2d`) — each ended
//! by `: `, then `%FACILITY-SEVERITY-MNEMONIC: text`. IOS-XR adds its node (`RP/0/RSP0/CPU0:`)
//! in front of the time and its process (`ifmgr[123]`) after it. NX-OS may write
//! `yyyy Mmm dd hh:mm:ss host` with no `: ` at all. A relay (rsyslog, a load balancer) may put
//! its own `Mmm dd hh:mm:ss host` in front.
//!
//! The `%FAC-SEV-MNEMONIC` tag is also what Arista EOS and other vendors write at the start of
//! an RFC 3164 message, and a relay's RFC 3164/5424/3339 header may hold a whole Cisco header
//! in its message: [`parse_message`] reads those.

use chrono::NaiveDateTime;
use serde_json::{Map, Value, json};

/// A time in UTC as the event's `timestamp` (RFC 3339, fractions only as sent).
pub fn rfc3339(t: NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The `%FACILITY-SEVERITY-MNEMONIC:` at the start of `text` (IOS-XR writes ` :` after it):
/// (facility, severity, mnemonic).
pub fn tag(text: &str) -> Option<(&str, u8, &str)> {
    let body = text.strip_prefix('%')?;
    let end = body.find(':')?;
    let tag = &body[..end];
    let tag = tag.strip_suffix(' ').unwrap_or(tag);
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
    let mut m = Map::with_capacity(9);
    m.insert("facility".into(), json!(facility));
    m.insert("severity".into(), json!(severity));
    m.insert("mnemonic".into(), json!(mnemonic));
    Some(m)
}

/// The tag anywhere in `text` (at its start or after a space), for a line whose header could
/// not be read.
pub fn tag_anywhere(text: &str) -> Option<Map<String, Value>> {
    tag_fields(&text[tag_start(text)?..])
}

/// What a Cisco header held, borrowed from the line.
#[derive(Debug, Default, PartialEq)]
pub struct Header<'a> {
    /// The origin-id hostname, or the host named by a relay's (or NX-OS's) header.
    pub hostname: Option<&'a str>,
    pub sequence: Vec<u64>,
    /// The device's time as written (without its `*`/`.` mark), its uptime, or else the
    /// relay's time.
    pub time_text: Option<&'a str>,
    /// The device's time in UTC, when it could be read (a zone other than UTC/GMT cannot).
    /// Kept as a date, written out only for the event ([`rfc3339`]).
    pub timestamp: Option<NaiveDateTime>,
    /// The time of the header in front of the device's (a relay's, NX-OS's), in UTC.
    pub relay_timestamp: Option<NaiveDateTime>,
    /// `*`: the clock was never set; `.`: NTP sync was lost.
    pub clock: Option<&'static str>,
    /// IOS-XR's node (`RP/0/RSP0/CPU0`).
    pub node: Option<&'a str>,
    /// IOS-XR's process and its id (`ifmgr[123]`).
    pub app_name: Option<&'a str>,
    pub procid: Option<&'a str>,
}

impl<'a> Header<'a> {
    /// A number, the device's time or uptime, IOS-XR's `node:time` or `process[pid]`: `false`
    /// when `part` is none of these.
    fn read(&mut self, part: &'a str, year: &impl Fn(u32, u32) -> i32) -> bool {
        if let Ok(n) = part.parse::<u64>() {
            self.sequence.push(n);
        } else if let Some(t) = time(part, year).or_else(|| uptime(part)) {
            self.device_time(t);
        } else if let Some((host, node, t)) = node_time(part, year) {
            self.hostname = host.or(self.hostname);
            self.node = Some(node);
            self.device_time(t);
        } else if let Some((name, pid)) = process(part) {
            self.app_name = Some(name);
            self.procid = Some(pid);
        } else {
            return false;
        }
        true
    }

    /// The event's `timestamp`: the device's time, else the relay's — the relay's first when
    /// the device's clock was never set (`*`).
    pub fn timestamp_or(&mut self, relay: Option<String>) -> Option<String> {
        let device = self.timestamp.take();
        if self.clock == Some("unset") {
            relay.or_else(|| device.map(rfc3339))
        } else {
            device.map(rfc3339).or(relay)
        }
    }

    /// The event's `timestamp` from this header's own times, as [`Header::timestamp_or`].
    pub fn timestamp(&mut self) -> Option<String> {
        let (device, relay) = (self.timestamp.take(), self.relay_timestamp.take());
        let t = if self.clock == Some("unset") {
            relay.or(device)
        } else {
            device.or(relay)
        };
        t.map(rfc3339)
    }

    fn device_time(&mut self, t: Time<'a>) {
        self.clock = t.clock;
        self.time_text = Some(t.text);
        self.timestamp = t.at;
    }

    /// `Mmm dd hh:mm:ss host [seq …]` (a relay's BSD header) or NX-OS's
    /// `yyyy Mmm dd hh:mm:ss host`: the shortest leading time followed by one hostname and only
    /// sequence numbers.
    fn read_time_and_host(&mut self, part: &'a str, year: &impl Fn(u32, u32) -> i32) -> bool {
        let mut words = 0;
        'split: for w in part.split_ascii_whitespace() {
            words += 1;
            if words < 3 {
                continue;
            }
            if words > 5 {
                return false;
            }
            let end = offset(part, w) + w.len();
            let Some(t) = time(&part[..end], year) else {
                continue;
            };
            let mut after = part[end..].split_ascii_whitespace();
            let Some(host) = after.next() else {
                continue;
            };
            let known = self.sequence.len();
            for n in after {
                match n.parse() {
                    Ok(n) => self.sequence.push(n),
                    Err(_) => {
                        self.sequence.truncate(known);
                        continue 'split;
                    }
                }
            }
            self.hostname = Some(host);
            self.time_text.get_or_insert(t.text);
            self.relay_timestamp = t.at;
            return true;
        }
        false
    }
}

/// Where `inner` (a slice of `outer`) starts in `outer`.
fn offset(outer: &str, inner: &str) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
}

/// The parts of a header before the tag, each ended by `: ` (or `:` before the tag).
fn parts(head: &str) -> impl Iterator<Item = &str> {
    let head = head.trim_end();
    let head = head.strip_suffix(':').unwrap_or(head);
    head.split(": ")
        .map(|p| p.trim().trim_end_matches(':'))
        .filter(|p| !p.is_empty())
}

/// Splits a line (after its PRI) into the Cisco header and the message starting at `%`, when
/// it is a Cisco line: every part before the tag is a sequence number, a time, a hostname or
/// one of IOS-XR's.
pub fn parse<'a>(rest: &'a str, year: impl Fn(u32, u32) -> i32) -> Option<(Header<'a>, &'a str)> {
    let at = tag_start(rest)?;
    let mut h = Header::default();
    for (i, part) in parts(&rest[..at]).enumerate() {
        if h.read(part, &year) || (i == 0 && h.read_time_and_host(part, &year)) {
            continue;
        }
        if part.contains(' ') {
            return None;
        }
        h.hostname = Some(part);
    }
    Some((h, &rest[at..]))
}

/// The Cisco header and tag at the start of a message another header came before (an RFC 3164
/// TAG, a relay's RFC 5424 or RFC 3339 header): the tag itself (Arista's `%LINEPROTO-5-UPDOWN:
/// …`), or parts each ended by `: ` before it (`124: %…`, `*Dec  7 05:54:05.000: %…`). A
/// hostname is taken only after a sequence number, so free text ahead of a `%` is not read as
/// one.
pub fn parse_message<'a>(
    msg: &'a str,
    year: impl Fn(u32, u32) -> i32,
) -> Option<(Header<'a>, &'a str)> {
    parse_relayed(msg, false, year)
}

/// As [`parse_message`], for the message of a relay's header whose TAG (APP-NAME) was a
/// number when `numbered`: that number was the device's sequence number, so a hostname may
/// come first (`logging origin-id hostname`: rsyslog forwards `57: r7: *Dec  7 …: %SYS-…` with
/// TAG `57` and the message `r7: *Dec  7 …`).
pub fn parse_relayed<'a>(
    msg: &'a str,
    numbered: bool,
    year: impl Fn(u32, u32) -> i32,
) -> Option<(Header<'a>, &'a str)> {
    if tag(msg).is_some() {
        return Some((Header::default(), msg));
    }
    let at = tag_start(msg)?;
    let head = msg[..at].trim_end().strip_suffix(':')?;
    let mut h = Header::default();
    for part in parts(head) {
        if h.read(part, &year) {
            continue;
        }
        if (h.sequence.is_empty() && !numbered) || h.hostname.is_some() || part.contains(' ') {
            return None;
        }
        h.hostname = Some(part);
    }
    Some((h, &msg[at..]))
}

/// Where the `%FAC-SEV-MNEMONIC:` tag starts: at the start or after a space.
fn tag_start(text: &str) -> Option<usize> {
    text.match_indices('%')
        .map(|(i, _)| i)
        .find(|&i| (i == 0 || text.as_bytes()[i - 1] == b' ') && tag(&text[i..]).is_some())
}

/// A device's (or a relay's) time as read: the text kept as written for `cisco.time`, and the
/// date when it names one in UTC.
struct Time<'a> {
    text: &'a str,
    /// The time in UTC, when it names a date in UTC.
    at: Option<NaiveDateTime>,
    clock: Option<&'static str>,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The `*` (never set) or `.` (unsynced) mark in front of a device's time, and the rest.
fn mark(text: &str) -> (Option<&'static str>, &str) {
    match text.as_bytes().first() {
        Some(b'*') => (Some("unset"), &text[1..]),
        Some(b'.') => (Some("unsynced"), &text[1..]),
        _ => (None, text),
    }
}

/// Sets `slot` once: `None` when it was already set (a second day, a second year …).
fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    slot.replace(v).is_none().then_some(())
}

/// A time zone abbreviation as Cisco writes it (`UTC`, `CET`, `PDT`).
fn is_zone(w: &str) -> bool {
    (2..=5).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_uppercase())
}

/// A Cisco time: month name, day and `hh:mm:ss[.fff]` in any order with an optional year and
/// a zone abbreviation last (`*Mar  1 00:09:07.555`, `.Jan 12 2024 10:11:12.123 UTC`,
/// `2013 Mar 15 11:06:26 UTC`); each at most once.
fn time<'a>(text: &'a str, year: &impl Fn(u32, u32) -> i32) -> Option<Time<'a>> {
    let (clock, body) = mark(text);
    let body = body.trim();
    let (mut y, mut mo, mut d, mut hms, mut zone) = (None, None, None, None, None);
    for w in body.split_ascii_whitespace() {
        if zone.is_some() {
            return None;
        }
        if let Some(m) = MONTHS.iter().position(|m| *m == w) {
            once(&mut mo, m as u32 + 1)?;
        } else if w.len() == 4 && w.bytes().all(|b| b.is_ascii_digit()) {
            once(&mut y, w.parse::<i32>().ok()?)?;
        } else if w.len() <= 2 && w.bytes().all(|b| b.is_ascii_digit()) {
            once(&mut d, w.parse::<u32>().ok()?)?;
        } else if w.contains(':') {
            once(&mut hms, w)?;
        } else if hms.is_some() && is_zone(w) {
            zone = Some(w);
        } else {
            return None;
        }
    }
    let (mo, d, hms) = (mo?, d?, hms?);
    let (h, mi, s, nanos) = clock_time(hms)?;
    let utc = zone.is_none_or(|z| matches!(z, "UTC" | "GMT"));
    let at = if utc {
        let year = y.unwrap_or_else(|| year(mo, d));
        let date = chrono::NaiveDate::from_ymd_opt(year, mo, d)?;
        let t = chrono::NaiveTime::from_hms_nano_opt(h, mi, s, nanos)?;
        Some(NaiveDateTime::new(date, t))
    } else {
        None
    };
    Some(Time {
        text: body,
        at,
        clock,
    })
}

/// `hh:mm:ss[.fff]`: hours (any number of digits, as an uptime has), minutes, seconds and
/// nanoseconds.
fn clock_time(hms: &str) -> Option<(u32, u32, u32, u32)> {
    let (clock_part, frac) = match hms.split_once('.') {
        Some((c, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (c, Some(f)),
        Some(_) => return None,
        None => (hms, None),
    };
    let mut parts = clock_part.split(':').map(|p| {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    });
    let (h, mi, s) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || mi > 59 || s > 60 {
        return None;
    }
    let nanos = frac
        .map(|f| {
            let digits = &f[..f.len().min(9)];
            digits.parse::<u32>().unwrap_or(0) * 10u32.pow(9 - digits.len() as u32)
        })
        .unwrap_or(0);
    Some((h, mi, s, nanos))
}

/// A device's uptime, as `service timestamps log uptime` writes it: `00:01:23[.456]` in the
/// first day, then `1d02h`, `1w2d`, `1y2w`. No `timestamp` can be made of it.
fn uptime(text: &str) -> Option<Time<'_>> {
    let (clock, body) = mark(text);
    let ok = if body.contains(':') {
        clock_time(body).is_some()
    } else {
        let mut digits = 0;
        let mut groups = 0;
        for b in body.bytes() {
            match b {
                b'0'..=b'9' => digits += 1,
                b'y' | b'w' | b'd' | b'h' | b'm' if digits > 0 => {
                    digits = 0;
                    groups += 1;
                }
                _ => return None,
            }
        }
        groups > 0 && digits == 0
    };
    ok.then_some(Time {
        text: body,
        at: None,
        clock,
    })
}

/// IOS-XR's `[host ]node:time` (`RP/0/RSP0/CPU0:Dec  7 05:52:01.123 UTC`).
fn node_time<'a>(
    part: &'a str,
    year: &impl Fn(u32, u32) -> i32,
) -> Option<(Option<&'a str>, &'a str, Time<'a>)> {
    let (before, after) = part.split_once(':')?;
    let (host, node) = match before.split_once(' ') {
        Some((host, node)) => (Some(host), node.trim_start()),
        None => (None, before),
    };
    if !node.contains('/') || node.contains(' ') {
        return None;
    }
    Some((host, node, time(after, year)?))
}

/// IOS-XR's `process[pid]`.
fn process(part: &str) -> Option<(&str, &str)> {
    let (name, pid) = part.strip_suffix(']')?.split_once('[')?;
    let named = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (named && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some((name, pid))
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
        assert_eq!(
            tag("%PKT_INFRA-LINK-3-UPDOWN : x"),
            Some(("PKT_INFRA-LINK", 3, "UPDOWN"))
        );
        assert_eq!(tag("%SYS-9-X: x"), None);
        assert_eq!(tag("%sys-5-x: x"), None);
        assert_eq!(tag("%SYS-5-CONFIG_I"), None);
        assert_eq!(tag("%SYS-5-CONFIG_I  : x"), None);
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
        assert_eq!(
            h.timestamp.map(rfc3339).as_deref(),
            Some("2026-03-01T00:09:07.555Z")
        );
        assert_eq!(h.time_text, Some("Mar  1 00:09:07.555"));
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
        assert_eq!(h.hostname, Some("10.1.186.49"));
        assert_eq!(h.sequence, vec![87117903, 87117909]);
        assert_eq!(
            h.timestamp.map(rfc3339).as_deref(),
            Some("2026-11-05T14:01:19.115Z")
        );
        assert_eq!(
            h.relay_timestamp.map(rfc3339).as_deref(),
            Some("2026-11-05T14:01:20Z")
        );
        assert!(msg.starts_with("%FMANFP-6-IPACCESSLOGP: F0:"));
    }

    #[test]
    fn origin_id_unsynced_zones_and_nxos() {
        let (h, _) = parse(
            "1234: router1: .Jan 12 10:11:12.123 CET: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
            y,
        )
        .unwrap();
        assert_eq!(h.hostname, Some("router1"));
        assert_eq!(h.clock, Some("unsynced"));
        assert_eq!(
            h.timestamp, None,
            "CET cannot be read without a zone database"
        );
        assert_eq!(h.time_text, Some("Jan 12 10:11:12.123 CET"));
        let (h, msg) = parse(
            ": 2013 Mar 15 11:06:26 UTC: %ETHPORT-5-IF_DOWN_LINK_FAILURE: Interface Ethernet1/1 is down (Link failure)",
            y,
        )
        .unwrap();
        assert_eq!(
            h.timestamp.map(rfc3339).as_deref(),
            Some("2013-03-15T11:06:26Z")
        );
        assert!(msg.starts_with("%ETHPORT-5-"));
        let (h, _) = parse(
            "83: Jan 12 2024 10:11:12.123 UTC: %SYS-5-CONFIG_I: Configured",
            y,
        )
        .unwrap();
        assert_eq!(
            h.timestamp.map(rfc3339).as_deref(),
            Some("2024-01-12T10:11:12.123Z")
        );
        // NX-OS with `logging origin-id`: time, host, tag, no `: ` between.
        let (h, _) = parse("2026 Dec  7 05:52:01 nx1 %ETHPORT-5-IF_UP: x", y).unwrap();
        assert_eq!(h.hostname, Some("nx1"));
        assert_eq!(h.time_text, Some("2026 Dec  7 05:52:01"));
        assert_eq!(
            h.relay_timestamp.map(rfc3339).as_deref(),
            Some("2026-12-07T05:52:01Z")
        );
        // An all-capitals host is not taken for a zone when a sequence number follows it.
        let (h, _) = parse("Dec  7 05:51:15 CORE 82: %LINK-3-UPDOWN: x", y).unwrap();
        assert_eq!(h.hostname, Some("CORE"));
        assert_eq!(h.sequence, vec![82]);
    }

    #[test]
    fn times_are_read_strictly() {
        assert!(time("Dec  7 05:51:15 vm myapp", &y).is_none());
        assert!(time("Dec  7 05:51:15 UTC CET", &y).is_none());
        assert!(time("Dec  7 05:51:15 12", &y).is_none(), "a second day");
        assert!(time("Dec  7 05:61:15", &y).is_none());
        assert!(
            time("UTC Dec  7 05:51:15", &y).is_none(),
            "the zone is last"
        );
        let t = time("*Dec  7 05:51:15.5 UTC", &y).unwrap();
        assert_eq!(t.text, "Dec  7 05:51:15.5 UTC");
        assert_eq!(
            t.at.map(rfc3339).as_deref(),
            Some("2026-12-07T05:51:15.500Z")
        );
    }

    #[test]
    fn uptimes() {
        for ok in ["00:01:23", "123:01:23.456", "1w2d", "1d02h", "1y2w"] {
            assert_eq!(uptime(ok).map(|t| t.text), Some(ok), "{ok}");
        }
        for not in ["r1", "1w2", "w2d", "00:01", "1:2:3:4", "12h!"] {
            assert!(uptime(not).is_none(), "{not}");
        }
    }

    #[test]
    fn ios_xr_parts() {
        let (h, msg) = parse(
            "94307: gw2.acy1 LC/0/2/CPU0:Jul  7 20:16:14.834 : ifmgr[214]: %PKT_INFRA-LINK-3-UPDOWN : Interface TenGigE0/2/0/4, changed state to Down",
            y,
        )
        .unwrap();
        assert_eq!(h.sequence, vec![94307]);
        assert_eq!(h.hostname, Some("gw2.acy1"));
        assert_eq!(h.node, Some("LC/0/2/CPU0"));
        assert_eq!(h.time_text, Some("Jul  7 20:16:14.834"));
        assert_eq!((h.app_name, h.procid), (Some("ifmgr"), Some("214")));
        assert!(msg.starts_with("%PKT_INFRA-LINK-3-UPDOWN : Interface"));
        assert_eq!(process("bgp[1051]"), Some(("bgp", "1051")));
        assert_eq!(process("bgp[x]"), None);
    }

    #[test]
    fn messages_with_a_cisco_header() {
        let (h, msg) = parse_message("124: %LINEPROTO-5-UPDOWN: x", y).unwrap();
        assert_eq!(h.sequence, vec![124]);
        assert_eq!(msg, "%LINEPROTO-5-UPDOWN: x");
        let (h, msg) = parse_message("%SYS-5-CONFIG_I: x", y).unwrap();
        assert_eq!(h, Header::default());
        assert_eq!(msg, "%SYS-5-CONFIG_I: x");
        let (h, _) = parse_message("7: r1: 00:00:42: %SYS-5-CONFIG_I: x", y).unwrap();
        assert_eq!((h.hostname, h.time_text), (Some("r1"), Some("00:00:42")));
        // Free text ahead of a tag is not a header.
        assert!(parse_message("hello %LINK-3-UPDOWN: x", y).is_none());
        assert!(parse_message("hello: %LINK-3-UPDOWN: x", y).is_none());
        assert!(parse_message("user admin: %LINK-3-UPDOWN: x", y).is_none());
        assert!(parse_message("no tag: here", y).is_none());
    }

    #[test]
    fn not_cisco() {
        assert!(parse("Jan 12 10:11:12 host sshd[1]: accepted", y).is_none());
        assert!(parse("Jan 12 10:11:12 host app: free text here: %SYS-5-X: y", y).is_none());
        assert!(parse("Dec  7 05:51:15 vm myapp: %LINK-3-UPDOWN: x", y).is_none());
        assert!(parse("Dec  7 05:53:01 vm myapp: hello %LINK-3-UPDOWN: x", y).is_none());
    }
}
