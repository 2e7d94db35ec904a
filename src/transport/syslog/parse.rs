//! One syslog message (a datagram or a frame) to the event rules see.
//!
//! The common RFC 3164 shape (`<PRI>Mmm dd hh:mm:ss host tag[pid]: text`) is read in place by
//! [`Line::read`], so the rule index can rule a line out before its event is built. Anything
//! else: after the PRI, a Cisco header (IOS, IOS-XE, IOS-XR, NX-OS, with or without a relay's
//! BSD header in front) is read by [`super::cisco`]; the rest by `syslog_loose` (RFC 5424 when
//! the PRI is followed by a version digit, else RFC 3164; a missing PRI is tolerated), whose
//! message may hold a Cisco header in turn (a relay's, Arista's sequence number). Both give the
//! same event for a line of the common shape. Fields not sent are absent, never empty strings.
//! A line whose header cannot be read keeps its PRI's fields, the rest whole as `message`, and
//! `parse_error: true`; it is never dropped.

use std::borrow::Cow;

use chrono::{Datelike, NaiveDate, Utc};
use serde_json::{Map, Value, json};
use syslog_loose::{Protocol, Variant};

use super::cisco;
use crate::rules::{Fields, Probe};

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clockd", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The clock, read once per batch of messages (one read off a stream, one datagram): the year
/// of a time sent without one, and the console's sampler, take it from here rather than from
/// a clock read per message.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Milliseconds since the epoch.
    pub ms: i64,
    today: NaiveDate,
}

impl Now {
    pub fn read() -> Now {
        let now = Utc::now();
        Now {
            ms: now.timestamp_millis(),
            today: now.date_naive(),
        }
    }

    /// The year of a time sent without one: this year, unless that puts it more than a day
    /// ahead of now (December's lines read in January).
    pub fn year_of(&self, month: u32, day: u32) -> i32 {
        let this = self.today.year();
        match NaiveDate::from_ymd_opt(this, month, day) {
            Some(d) if d > self.today + chrono::Days::new(1) => this - 1,
            _ => this,
        }
    }
}

/// `<PRI>` at the start: its value and the rest.
fn pri(text: &str) -> Option<(u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>')?;
    if end == 0 || end > 3 {
        return None;
    }
    let n: u8 = rest[..end].parse().ok()?;
    (n <= 191).then_some((n, &rest[end + 1..]))
}

fn put_pri(m: &mut Map<String, Value>, pri: u8) {
    let (facility, severity) = ((pri >> 3) as usize, (pri & 7) as usize);
    m.insert("facility".into(), json!(facility));
    m.insert("facility_name".into(), json!(FACILITIES[facility]));
    m.insert("severity".into(), json!(severity));
    m.insert("severity_name".into(), json!(SEVERITIES[severity]));
}

/// The event for one message; `truncated` when the transport cut it at `max_message`.
pub fn event(bytes: &[u8], truncated: bool) -> Value {
    read(bytes, truncated, &Now::read()).into_event()
}

/// One message read: a line of the common shape in place, or its event.
#[derive(Debug)]
pub enum Read<'a> {
    Line(Line<'a>),
    Event(Value),
}

impl Read<'_> {
    pub fn into_event(self) -> Value {
        match self {
            Read::Line(l) => l.event(),
            Read::Event(e) => e,
        }
    }
}

/// Reads one message with `now` for a time sent without a year.
pub fn read<'a>(bytes: &'a [u8], truncated: bool, now: &Now) -> Read<'a> {
    let (text, escaped) = super::utf8::text(bytes, truncated);
    if !truncated
        && let Cow::Borrowed(text) = text
        && let Some(line) = Line::read(text, now)
    {
        return Read::Line(line);
    }
    let mut event = general(&text, truncated, now, variant(&text));
    if escaped && let Value::Object(m) = &mut event {
        m.insert("invalid_utf8".into(), json!(true));
    }
    Read::Event(event)
}

/// The event of any message: a Cisco line, or what `syslog_loose` reads as `variant`.
fn general(text: &str, truncated: bool, now: &Now, variant: Variant) -> Value {
    let text = text.trim_end_matches(['\n', '\r', '\0', ' ']);
    let year = |month, day| now.year_of(month, day);
    let pri = pri(text);
    let mut m = match pri.and_then(|(p, rest)| Some((p, cisco::parse(rest, year)?))) {
        Some((p, (header, message))) => cisco_event(p, header, message),
        None => loose_event(text, pri, now, variant),
    };
    if truncated {
        m.insert("truncated".into(), json!(true));
    }
    Value::Object(m)
}

/// Room for every field an event gets: built once, never grown (growing rehashes every key).
const FIELDS: usize = 14;

fn cisco_event(pri: u8, mut h: cisco::Header, message: &str) -> Map<String, Value> {
    let mut m = Map::with_capacity(FIELDS);
    m.insert("format".into(), json!("rfc3164"));
    put_pri(&mut m, pri);
    if let Some(t) = h.timestamp() {
        m.insert("timestamp".into(), json!(t));
    }
    for (name, v) in [
        ("hostname", h.hostname),
        ("app_name", h.app_name),
        ("procid", h.procid),
    ] {
        if let Some(v) = v {
            m.insert(name.into(), json!(v));
        }
    }
    put_cisco(&mut m, h, message);
    m
}

/// `message` from the tag on, and the `cisco` object: the tag and what the header held.
fn put_cisco(m: &mut Map<String, Value>, h: cisco::Header, message: &str) {
    m.insert("message".into(), json!(message));
    let mut c = cisco::tag_fields(message).unwrap_or_default();
    if let Some(last) = h.sequence.last() {
        c.insert("sequence".into(), json!(last));
    }
    if h.sequence.len() > 1 {
        c.insert("sequence_numbers".into(), json!(h.sequence));
    }
    if let Some(t) = h.time_text {
        c.insert("time".into(), json!(t));
    }
    if let Some(mark) = h.clock {
        c.insert("clock".into(), json!(mark));
    }
    if let Some(node) = h.node {
        c.insert("node".into(), json!(node));
    }
    m.insert("cisco".into(), Value::Object(c));
}

/// A line no header could be read of: its PRI when it had one, the rest whole as `message`,
/// and the `cisco` tag when one is in it.
fn unread_event(text: &str, pri: Option<(u8, &str)>) -> Map<String, Value> {
    let mut m = Map::with_capacity(FIELDS);
    m.insert("format".into(), json!("unknown"));
    let message = match pri {
        Some((p, rest)) => {
            put_pri(&mut m, p);
            rest
        }
        None => text,
    };
    if !message.is_empty() {
        m.insert("message".into(), json!(message));
    }
    if let Some(c) = cisco::tag_anywhere(message) {
        m.insert("cisco".into(), Value::Object(c));
    }
    m.insert("parse_error".into(), json!(true));
    m
}

fn loose_event(
    text: &str,
    pri: Option<(u8, &str)>,
    now: &Now,
    variant: Variant,
) -> Map<String, Value> {
    let line = text;
    let msg = syslog_loose::parse_message_with_year_tz(
        line,
        |(mo, d, ..)| now.year_of(mo, d),
        Some(Utc),
        variant,
    );
    let unread = msg.facility.is_none()
        && msg.severity.is_none()
        && msg.timestamp.is_none()
        && msg.hostname.is_none()
        && msg.appname.is_none();
    if unread {
        return unread_event(text, pri);
    }
    let mut m = Map::with_capacity(FIELDS);
    m.insert(
        "format".into(),
        json!(match msg.protocol {
            Protocol::RFC5424(_) => "rfc5424",
            Protocol::RFC3164 => "rfc3164",
        }),
    );
    if let (Some(f), Some(s)) = (msg.facility, msg.severity) {
        put_pri(&mut m, ((f as u8) << 3) | s as u8);
    }
    // RFC 5424 §6.4: a UTF-8 MSG may start with a BOM; it is not part of the text.
    let text = msg.msg.strip_prefix('\u{feff}').unwrap_or(msg.msg);
    let numbered = msg
        .appname
        .is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
    let mut cisco = cisco::parse_relayed(text, numbered, |m, d| now.year_of(m, d));
    let timestamp = msg
        .timestamp
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    let timestamp = match &mut cisco {
        Some((h, _)) => h.timestamp_or(timestamp),
        None => timestamp,
    };
    if let Some(t) = timestamp {
        m.insert("timestamp".into(), json!(t));
    }
    let mut appname = msg.appname;
    if let Some((h, _)) = &mut cisco {
        // A relay's TAG that is a number (`82:`, RFC 5424's APP-NAME `82`) is the device's
        // sequence number.
        if let Some(n) = appname
            .filter(|a| a.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|a| a.parse::<u64>().ok())
        {
            h.sequence.insert(0, n);
            appname = h.app_name;
        }
    }
    let (host, xr_pid) = cisco
        .as_ref()
        .map_or((None, None), |(h, _)| (h.hostname, h.procid));
    let mut text_field = |name: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty() && *v != "-") {
            m.insert(name.into(), json!(v));
        }
    };
    text_field("hostname", host.or(msg.hostname));
    text_field("app_name", appname);
    let procid = msg.procid.as_ref().map(|p| p.to_string());
    text_field("procid", procid.as_deref().or(xr_pid));
    text_field("msgid", msg.msgid);
    if matches!(msg.protocol, Protocol::RFC5424(_)) {
        super::sd::put(&mut m, line, &msg.structured_data);
    }
    match cisco {
        Some((h, message)) => put_cisco(&mut m, h, message),
        None if !text.is_empty() => {
            m.insert("message".into(), json!(text));
        }
        None => {}
    }
    m
}

/// RFC 5424 can only be what follows the PRI when that starts with a digit (its version):
/// anything else is read as RFC 3164 without trying 5424 first.
fn variant(text: &str) -> Variant {
    let t = text.trim_start();
    let after_pri = pri(t).map_or(t, |(_, rest)| rest);
    if after_pri.starts_with(|c: char| c.is_ascii_digit()) {
        Variant::Either
    } else {
        Variant::RFC3164
    }
}

/// An RFC 3164 line of the common shape — `<PRI>Mmm dd hh:mm:ss host tag[pid]: text`, with
/// a valid date, a host and a tag — read in place, giving the event `syslog_loose` gives for
/// it. Its fields are looked at through [`Fields`] (what the rule index asks) without building
/// anything; [`Line::event`] builds the event.
#[derive(Debug)]
pub struct Line<'a> {
    pri: u8,
    /// `YYYY-MM-DDThh:mm:ssZ`.
    timestamp: [u8; 20],
    hostname: &'a str,
    /// Empty when the tag is only `[pid]`.
    app_name: &'a str,
    procid: Option<&'a str>,
    message: &'a str,
}

/// One or two digits at the start of `s`, and the rest.
fn two_digits(s: &str) -> Option<(u32, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || n > 2 {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

/// `s` without its leading spaces and tabs; `None` when `one` asks for one and there is none.
fn spaces(s: &str, one: bool) -> Option<&str> {
    let rest = s.trim_start_matches([' ', '\t']);
    (!one || rest.len() < s.len()).then_some(rest)
}

const MONTHS: [&[u8; 3]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

impl<'a> Line<'a> {
    /// The line when it has the common shape and is no Cisco line; `None` leaves it to the
    /// general readers.
    pub fn read(text: &'a str, now: &Now) -> Option<Line<'a>> {
        // As `read` does: a Cisco line is told by what follows the PRI once the line's end
        // is trimmed, then syslog_loose reads the text trimmed of whitespace at both ends.
        let text = text.trim_end_matches(['\n', '\r', '\0', ' ']);
        let year = |m, d| now.year_of(m, d);
        let percent = memchr::memchr(b'%', text.as_bytes()).is_some();
        if percent
            && let Some((_, rest)) = pri(text)
            && cisco::parse(rest, year).is_some()
        {
            return None;
        }
        let (pri, rest) = pri(text.trim())?;
        let month = rest.as_bytes().get(..3)?;
        let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
        let rest = spaces(&rest[3..], true)?;
        let (day, rest) = two_digits(rest)?;
        let rest = spaces(rest, true)?;
        let (hour, rest) = two_digits(rest)?;
        let (minute, rest) = two_digits(rest.strip_prefix(':')?)?;
        let (second, rest) = two_digits(rest.strip_prefix(':')?)?;
        let date = NaiveDate::from_ymd_opt(now.year_of(month, day), month, day)?;
        date.and_hms_opt(hour, minute, second)?;
        // The host: one space, then up to whitespace (colons allowed, not at its end).
        let rest = rest.strip_prefix(' ')?;
        let host_len = rest.find(char::is_whitespace)?;
        let hostname = &rest[..host_len];
        if hostname.is_empty() || hostname == "-" || hostname.ends_with(':') {
            return None;
        }
        // The tag: one space, then up to whitespace or a colon.
        let rest = rest[host_len..].strip_prefix(' ')?;
        let tag_len = rest
            .find(|c: char| c.is_whitespace() || c == ':')
            .unwrap_or(rest.len());
        let tag = &rest[..tag_len];
        if tag.is_empty() || tag == "-" {
            return None;
        }
        let rest = spaces(&rest[tag_len..], false)?;
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        let message = spaces(rest, false)?;
        if message.starts_with(['[', '-']) {
            // Structured data (or its `-`) in a 3164 line: syslog_loose's to read.
            return None;
        }
        let message = message.strip_prefix('\u{feff}').unwrap_or(message);
        let numbered = tag.bytes().all(|b| b.is_ascii_digit());
        if percent
            && cisco::tag(message).is_none()
            && cisco::parse_relayed(message, numbered, year).is_some()
        {
            // A Cisco header in the message (Arista's `Ebra: 124: %…`): the general reader's.
            return None;
        }
        let (app_name, procid) = split_tag(tag)?;
        let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
        Some(Line {
            pri,
            timestamp: rfc3339([year, month, day, hour, minute, second]),
            hostname,
            app_name,
            procid,
            message,
        })
    }

    fn timestamp(&self) -> &str {
        std::str::from_utf8(&self.timestamp).unwrap_or_default()
    }

    /// The event, as [`event`] builds it for this line.
    pub fn event(&self) -> Value {
        let mut m = Map::with_capacity(FIELDS);
        m.insert("format".into(), json!("rfc3164"));
        put_pri(&mut m, self.pri);
        m.insert("timestamp".into(), json!(self.timestamp()));
        m.insert("hostname".into(), json!(self.hostname));
        if !self.app_name.is_empty() {
            m.insert("app_name".into(), json!(self.app_name));
        }
        if let Some(p) = self.procid {
            m.insert("procid".into(), json!(p));
        }
        if !self.message.is_empty() {
            m.insert("message".into(), json!(self.message));
        }
        if let Some(c) = cisco::tag_fields(self.message) {
            m.insert("cisco".into(), Value::Object(c));
        }
        Value::Object(m)
    }
}

/// `YYYY-MM-DDThh:mm:ssZ` of [year, month, day, hour, minute, second] (year below 10,000).
fn rfc3339(parts: [u32; 6]) -> [u8; 20] {
    let mut out = *b"0000-00-00T00:00:00Z";
    for (mut n, (at, width)) in
        parts
            .into_iter()
            .zip([(0, 4), (5, 2), (8, 2), (11, 2), (14, 2), (17, 2)])
    {
        for b in out[at..at + width].iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    out
}

/// `app[pid]` as syslog_loose splits a tag: (app, pid) when the tag is exactly that, else the
/// whole tag as the app. `None` for a pid syslog_loose would rewrite (`007` is read as 7).
fn split_tag(tag: &str) -> Option<(&str, Option<&str>)> {
    let Some(open) = tag.find('[') else {
        return Some((tag, None));
    };
    let pid = tag[open + 1..].strip_suffix(']');
    let Some(pid) = pid.filter(|p| !p.is_empty() && !p.contains(']')) else {
        return Some((tag, None));
    };
    let canonical =
        pid.bytes().all(|b| b.is_ascii_digit()) && (pid.len() == 1 || !pid.starts_with('0'));
    if pid.parse::<i32>().is_ok() && !canonical {
        return None;
    }
    Some((&tag[..open], Some(pid)))
}

impl Fields for Line<'_> {
    fn field(&self, name: &str) -> Probe<'_> {
        match name {
            "format" => Probe::Str("rfc3164"),
            "facility_name" => Probe::Str(FACILITIES[usize::from(self.pri >> 3)]),
            "severity_name" => Probe::Str(SEVERITIES[usize::from(self.pri & 7)]),
            "timestamp" => Probe::Str(self.timestamp()),
            "hostname" => Probe::Str(self.hostname),
            "app_name" if !self.app_name.is_empty() => Probe::Str(self.app_name),
            "procid" => self.procid.map_or(Probe::Absent, Probe::Str),
            "message" if !self.message.is_empty() => Probe::Str(self.message),
            "cisco" if cisco::tag(self.message).is_some() => Probe::Unknown,
            // Numbers (facility, severity), and fields this line has not.
            _ => Probe::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_with_structured_data_junos() {
        // Junos `structured-data` (Juniper's documentation example).
        let e = event(
            br#"<165>1 2007-10-03T19:49:00.437-07:00 router1 mgd 3046 UI_DBASE_LOGOUT_EVENT [junos@2636.1.1.1.2.18 username="regress"] User 'regress' exiting configuration mode"#,
            false,
        );
        assert_eq!(e["format"], "rfc5424");
        assert_eq!(e["facility"], 20);
        assert_eq!(e["facility_name"], "local4");
        assert_eq!(e["severity"], 5);
        assert_eq!(e["severity_name"], "notice");
        assert_eq!(e["timestamp"], "2007-10-03T19:49:00.437-07:00");
        assert_eq!(e["hostname"], "router1");
        assert_eq!(e["app_name"], "mgd");
        assert_eq!(e["procid"], "3046");
        assert_eq!(e["msgid"], "UI_DBASE_LOGOUT_EVENT");
        assert_eq!(
            e["structured_data"]["junos@2636.1.1.1.2.18"]["username"],
            "regress"
        );
        assert_eq!(e["message"], "User 'regress' exiting configuration mode");
    }

    #[test]
    fn rfc3164_and_arista() {
        let e = event(
            b"<189>Jan 12 10:11:12 sw1 Ebra: %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to up",
            false,
        );
        assert_eq!(e["format"], "rfc3164");
        assert_eq!(e["hostname"], "sw1");
        assert_eq!(e["app_name"], "Ebra");
        assert_eq!(e["cisco"]["mnemonic"], "UPDOWN");
        assert_eq!(e["cisco"]["severity"], 5);
        assert!(
            e["timestamp"]
                .as_str()
                .unwrap()
                .ends_with("-01-12T10:11:12Z")
        );
        assert!(e.get("procid").is_none(), "absent, not empty: {e}");
        assert!(e.get("msgid").is_none());
    }

    #[test]
    fn cisco_ios() {
        let e = event(
            b"<189>49: *Mar  1 00:09:07.555: %SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.1)",
            false,
        );
        assert_eq!(e["format"], "rfc3164");
        assert_eq!(e["facility_name"], "local7");
        assert_eq!(e["severity_name"], "notice");
        assert_eq!(
            e["message"],
            "%SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.1)"
        );
        assert_eq!(e["cisco"]["facility"], "SYS");
        assert_eq!(e["cisco"]["sequence"], 49);
        assert_eq!(e["cisco"]["clock"], "unset");
        assert!(e.get("hostname").is_none());
    }

    /// Lines of many shapes: vendors', the tests', and the edges of the common shape.
    const LINES: &[&str] = &[
        "<134>Dec  6 23:00:01 edge1 sshd[1001]: Accepted publickey for ops from 10.0.1.1 port 22 ssh2",
        "<30>Dec  6 10:00:00 mx1 mgd[1234]: UI_COMMIT: User 'ops' requested 'commit' operation",
        "<189>Jan 12 10:11:12 leaf1 Ebra: %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to up",
        "<13>Jan 12 10:11:12 host app: one",
        "<13>Jan 12 10:11:12 host app:one",
        "<13>Jan 12 10:11:12 host app one two",
        "<13>Jan 12 10:11:12 host app",
        "<13>Jan 12 10:11:12 host app:",
        "<13>Jan 12 10:11:12 host app: \t  spaced  \t",
        "<13>Jan 12 10:11:12 host [42]: only a pid",
        "<13>Jan 12 10:11:12 host app[]: empty pid",
        "<13>Jan 12 10:11:12 host app[x]: named pid",
        "<13>Jan 12 10:11:12 host app[007]: padded pid",
        "<13>Jan 12 10:11:12 host app[-7]: negative pid",
        "<13>Jan 12 10:11:12 host app[+7]: signed pid",
        "<13>Jan 12 10:11:12 host app[7]x: trailing",
        "<13>Jan 12 10:11:12 host app[1][2]: two",
        "<13>Jan 12 10:11:12 host app: [sd@1 a=\"b\"] with data",
        "<13>Jan 12 10:11:12 host app: - dash",
        "<13>Jan 12 10:11:12 host app: -dash",
        "<13>Jan 12 10:11:12 - app: no host",
        "<13>Jan 12 10:11:12 host - no tag",
        "<13>Jan 12 10:11:12 host: message",
        "<13>Jan 12 10:11:12  host app: two spaces",
        "<13>Jan 12 10:11:12 host  app: two spaces",
        "<13>Jan 12 10:11:12: host app: colon",
        "<13>JAN 12 10:11:12 host app: upper",
        "<13>jan 2 1:2:3 host app: short",
        "<13>Jan\t12\t10:11:12 host app: tabs",
        "<13>Jan 012 10:11:12 host app: long day",
        "<13>Feb 30 10:11:12 host app: no such day",
        "<13>Feb 29 10:11:12 host app: leap",
        "<13>Jan 12 24:11:12 host app: hour",
        "<13>Jan 12 10:11:60 host app: leap second",
        "<13>Jan 12 2026 10:11:12 host app: with a year",
        "<13> Jan 12 10:11:12 host app: space after pri",
        "<191>Jan 12 10:11:12 host app: top pri",
        "<192>Jan 12 10:11:12 host app: pri too big",
        "<0>Jan 12 10:11:12 host app: pri zero",
        "<00>Jan 12 10:11:12 host app: pri padded",
        "Jan 12 10:11:12 host app: no pri",
        "  <13>Jan 12 10:11:12 host app: leading spaces",
        "<13>Jan 12 10:11:12 host app: trailing nul\0",
        "<13>Jan 12 10:11:12 host app: trailing cr\r\n",
        "<13>Jan 12 10:11:12 host app: trailing tab\t",
        "<13>Jan 12 10:11:12 2001:db8::1 app: v6 host",
        "<13>Jan 12 10:11:12 host app: %SYS-5-CONFIG_I: a Cisco tag in a 3164 line",
        "<13>Jan 12 10:11:12 host app: 100% sure",
        "<13>Jan 12 10:11:12 hôst äpp: ünicode",
        "<13>Jan 12 10:11:12 host\u{2003}app: em space",
        "<189>49: *Mar  1 00:09:07.555: %SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.1)",
        "<190>Nov  5 14:01:20 10.1.186.49 87117903: 87117909: Nov  5 14:01:19.115: %FMANFP-6-IPACCESSLOGP: F0: fman_fp_image: list 101 denied",
        "<189>Jan  6 11:22:33 router1 %LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
        "<166>2026-12-06T10:00:00.123Z leaf1 Ebra: %LINEPROTO-5-UPDOWN: Line protocol up",
        "<13>1 2026-12-06T10:00:00Z host app 123 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"App\"] message",
        "<13>12 2026-12-06T10:00:00Z host app 123 ID47 - version twelve",
        "<13>1 not-a-time host app - - -",
        "date=2024-01-01 devname=fw1 action=deny",
        "",
        "<187>Dec  7 05:51:15 vm myapp: %LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
        "<187>Dec  7 05:53:01 vm myapp: hello %LINK-3-UPDOWN: x",
        "<189>Dec  7 05:52:01 sw1 Ebra: 124: %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to up",
        "<187>Dec  7 05:54:13 r1 82: *Dec  7 05:54:05.000: %LINK-3-UPDOWN: Interface Gi0/13, changed state to down",
        "<187>2026-12-07T05:54:13.552289+00:00 localhost 82: *Dec  7 05:54:05.000: %LINK-3-UPDOWN: x",
        "<187>Dec  7 05:53:01 r1: %SYS-5-CONFIG_I: Configured from console by admin on vty0",
        "<187>12: 00:01:23: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
        "<187>1234: RP/0/RSP0/CPU0:Dec  7 05:52:01.123 UTC: ifmgr[123]: %PKT_INFRA-LINK-3-UPDOWN : x",
        "<187>2026 Dec  7 05:52:01 nx1 %ETHPORT-5-IF_DOWN_LINK_FAILURE: x",
        "<189>date=2026-12-07 time=05:52:01 devname=\"fw1\" type=\"traffic\"",
        "<13>Dec  7 05:53:01 host app: \u{feff}bom",
        "<14>1 2026-12-07T05:52:01Z h1 app - - - \u{feff}bom message",
    ];

    fn json_text(v: &Value) -> String {
        serde_json::to_string(v).unwrap()
    }

    #[test]
    fn the_common_shape_read_in_place_is_the_event_syslog_loose_gives() {
        let now = Now::read();
        let mut in_place = 0;
        for line in LINES {
            // What syslog_loose gives, trying 5424 first as it did before the shortcut.
            let reference = general(line, false, &now, Variant::Either);
            let read = read(line.as_bytes(), false, &now);
            if matches!(read, Read::Line(_)) {
                in_place += 1;
            }
            assert_eq!(
                json_text(&read.into_event()),
                json_text(&reference),
                "{line:?}"
            );
        }
        assert!(in_place >= 20, "{in_place} lines read in place");
        let truncated = read(LINES[0].as_bytes(), true, &now);
        assert!(matches!(&truncated, Read::Event(e) if e["truncated"] == true));
    }

    #[test]
    fn every_combination_of_header_parts_reads_as_syslog_loose_reads_it() {
        let now = Now::read();
        let pris = ["<13>", "<191>", "<0>", "<1234>", ""];
        let times = [
            "Jan 12 10:11:12",
            "dec  6 23:59:59",
            "Feb 29 00:00:00",
            "Jan 1 1:2:3",
            "Jan 12 10:11:12:",
            "Jan 12  10:11:12",
            "Foo 12 10:11:12",
        ];
        let hosts = [" host", " 10.0.0.1", " -", " h:", "  host", " host:x", ""];
        let tags = [
            " app",
            " app[42]",
            " app[042]",
            " [42]",
            " app[x y]",
            " -",
            " app:",
            ": ",
            "",
        ];
        let rests = [
            ": text",
            ":text",
            " text with: colon",
            ": [sd@1 a=\"b\"] text",
            ": - text",
            "",
            ":",
            " \t%LINK-3-UPDOWN: up",
            ": 124: %LINK-3-UPDOWN: up",
            ": hello %LINK-3-UPDOWN: up",
            ": \u{feff}bom",
        ];
        let mut in_place = 0;
        for p in pris {
            for t in times {
                for h in hosts {
                    for g in tags {
                        for r in rests {
                            let line = format!("{p}{t}{h}{g}{r}");
                            let reference = general(&line, false, &now, Variant::Either);
                            let read = read(line.as_bytes(), false, &now);
                            in_place += usize::from(matches!(read, Read::Line(_)));
                            assert_eq!(
                                json_text(&read.into_event()),
                                json_text(&reference),
                                "{line:?}"
                            );
                        }
                    }
                }
            }
        }
        assert!(in_place > 1000, "{in_place} lines read in place");
    }

    #[test]
    fn the_fields_the_index_reads_are_the_events() {
        let now = Now::read();
        let names = [
            "format",
            "facility",
            "facility_name",
            "severity",
            "severity_name",
            "timestamp",
            "hostname",
            "app_name",
            "procid",
            "msgid",
            "message",
            "cisco",
            "structured_data",
            "truncated",
            "parse_error",
            "other",
        ];
        let mut read = 0;
        for line in LINES {
            let Some(l) = Line::read(line, &now) else {
                continue;
            };
            read += 1;
            let event = l.event();
            for name in names {
                let probe = l.field(name);
                match event.get(name) {
                    Some(Value::String(s)) => assert_eq!(probe, Probe::Str(s), "{line:?} {name}"),
                    None | Some(Value::Number(_)) => {
                        assert_eq!(probe, Probe::Absent, "{line:?} {name}")
                    }
                    Some(_) => assert_eq!(probe, Probe::Unknown, "{line:?} {name}"),
                }
            }
        }
        // Else the loop checks nothing: 31 of the lines are read in place today.
        assert!(
            read >= 30,
            "only {read} of {} lines read in place",
            LINES.len()
        );
    }

    #[test]
    fn unreadable_lines_are_kept_whole() {
        let e = event(b"date=2024-01-01 devname=fw1 action=deny", true);
        assert_eq!(e["parse_error"], true);
        assert_eq!(e["truncated"], true);
        assert_eq!(e["message"], "date=2024-01-01 devname=fw1 action=deny");
        let e = event(&[0xff, 0xfe, b'<', b'1'], false);
        assert!(e["message"].is_string());
    }

    /// A year-less time read as this year (or last): its RFC 3339 text ends with `tail`.
    fn this_year(e: &Value, tail: &str) -> bool {
        e["timestamp"].as_str().is_some_and(|t| t.ends_with(tail))
    }

    #[test]
    fn bsd_tag_without_pid_before_a_cisco_tag() {
        // util-linux `logger --rfc3164 -t myapp` with a `%FAC-SEV-MNEMONIC:` text.
        let e = event(
            b"<187>Dec  7 05:51:15 vm myapp: %LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
            false,
        );
        assert_eq!(e["format"], "rfc3164");
        assert_eq!(e["hostname"], "vm");
        assert_eq!(e["app_name"], "myapp");
        assert!(this_year(&e, "-12-07T05:51:15Z"), "{e}");
        assert_eq!(
            e["message"],
            "%LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down"
        );
        assert_eq!(e["cisco"]["mnemonic"], "UPDOWN");
        assert!(e["cisco"].get("time").is_none(), "{e}");
        // Text ahead of the tag stays in the message.
        let e = event(
            b"<187>Dec  7 05:53:01 vm myapp: hello %LINK-3-UPDOWN: x",
            false,
        );
        assert_eq!(e["hostname"], "vm");
        assert_eq!(e["app_name"], "myapp");
        assert_eq!(e["message"], "hello %LINK-3-UPDOWN: x");
        assert!(e.get("cisco").is_none(), "{e}");
    }

    #[test]
    fn cisco_behind_rsyslog_relay_headers() {
        // rsyslog's forwarding format (RFC 3339 time, TAG `82:`), as omrelp and omfwd send it.
        let e = event(
            b"<187>2026-12-07T05:54:13.552289+00:00 localhost 82: *Dec  7 05:54:05.000: %LINK-3-UPDOWN: Interface Gi0/13, changed state to down",
            false,
        );
        assert_eq!(e["hostname"], "localhost");
        assert!(e.get("app_name").is_none(), "82 is a sequence number: {e}");
        assert_eq!(
            e["message"],
            "%LINK-3-UPDOWN: Interface Gi0/13, changed state to down"
        );
        assert_eq!(e["cisco"]["mnemonic"], "UPDOWN");
        assert_eq!(e["cisco"]["sequence"], 82);
        assert_eq!(e["cisco"]["time"], "Dec  7 05:54:05.000");
        assert_eq!(e["cisco"]["clock"], "unset");
        // The device's clock was never set: the relay's time is the better one.
        assert_eq!(e["timestamp"], "2026-12-07T05:54:13.552289Z");
        // RFC 5424 (rsyslog's RSYSLOG_SyslogProtocol23Format): APP-NAME `82`.
        let e = event(
            b"<187>1 2026-12-07T05:54:13.552289+00:00 localhost 82 - - - 83: Dec  7 05:54:05.000 UTC: %LINK-3-UPDOWN: Interface Gi0/13, changed state to down",
            false,
        );
        assert_eq!(e["format"], "rfc5424");
        assert!(e.get("app_name").is_none(), "{e}");
        assert_eq!(e["cisco"]["sequence_numbers"], json!([82, 83]));
        assert_eq!(
            e["timestamp"],
            format!("{}-12-07T05:54:05Z", Now::read().year_of(12, 7))
        );
    }

    #[test]
    fn arista_sequence_number_after_its_tag() {
        let e = event(
            b"<189>Dec  7 05:52:01 sw1 Ebra: 124: %LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to up",
            false,
        );
        assert_eq!(e["hostname"], "sw1");
        assert_eq!(e["app_name"], "Ebra");
        assert_eq!(e["cisco"]["mnemonic"], "UPDOWN");
        assert_eq!(e["cisco"]["sequence"], 124);
        assert_eq!(
            e["message"],
            "%LINEPROTO-5-UPDOWN: Line protocol on Interface Ethernet1, changed state to up"
        );
    }

    #[test]
    fn cisco_uptime_stamps_are_the_device_time() {
        for (line, time) in [
            (
                &b"<187>12: 00:01:23: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down"[..],
                "00:01:23",
            ),
            (
                b"<187>13: 1w2d: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
                "1w2d",
            ),
            (
                b"<187>14: 1d02h: %LINK-3-UPDOWN: Interface Gi0/1, changed state to down",
                "1d02h",
            ),
        ] {
            let e = event(line, false);
            assert!(e.get("hostname").is_none(), "{e}");
            assert!(e.get("timestamp").is_none(), "{e}");
            assert_eq!(e["cisco"]["time"], time);
            assert_eq!(e["cisco"]["mnemonic"], "UPDOWN");
        }
    }

    #[test]
    fn ios_xr() {
        let e = event(
            b"<187>1234: RP/0/RSP0/CPU0:Dec  7 05:52:01.123 UTC: ifmgr[123]: %PKT_INFRA-LINK-3-UPDOWN : Interface GigabitEthernet0/0/0/0, changed state to Down",
            false,
        );
        assert_eq!(e["format"], "rfc3164");
        assert_eq!(e["severity_name"], "err");
        assert_eq!(e["app_name"], "ifmgr");
        assert_eq!(e["procid"], "123");
        assert!(this_year(&e, "-12-07T05:52:01.123Z"), "{e}");
        assert_eq!(e["cisco"]["facility"], "PKT_INFRA-LINK");
        assert_eq!(e["cisco"]["severity"], 3);
        assert_eq!(e["cisco"]["mnemonic"], "UPDOWN");
        assert_eq!(e["cisco"]["sequence"], 1234);
        assert_eq!(e["cisco"]["node"], "RP/0/RSP0/CPU0");
        assert_eq!(e["cisco"]["time"], "Dec  7 05:52:01.123 UTC");
        assert!(e.get("parse_error").is_none());
        // With `logging hostnameprefix`, and no zone.
        let e = event(
            b"<190>40: xrv RP/0/RP0/CPU0:Oct  4 22:52:47.441 : cfgmgr_trial_confirm[67310]: %MGBL-CONFIG-6-DB_COMMIT : Configuration committed by user 'vagrant'.",
            false,
        );
        assert_eq!(e["hostname"], "xrv");
        assert_eq!(e["app_name"], "cfgmgr_trial_confirm");
        assert_eq!(e["cisco"]["mnemonic"], "DB_COMMIT");
        assert_eq!(e["cisco"]["node"], "RP/0/RP0/CPU0");
        // Behind a BSD relay header.
        let e = event(
            b"<187>Apr 14 23:50:04 10.1.1.1 462620: CRS-L RP/0/RP0/CPU0:Apr 15 09:18:13 : config[65956]: %MGBL-CONFIG-6-DB_COMMIT : Configuration committed by user 'ops'.",
            false,
        );
        assert_eq!(e["hostname"], "CRS-L");
        assert_eq!(e["app_name"], "config");
        assert_eq!(e["cisco"]["sequence"], 462620);
        assert_eq!(e["cisco"]["time"], "Apr 15 09:18:13");
        assert!(this_year(&e, "-04-15T09:18:13Z"), "{e}");
    }

    #[test]
    fn nxos_year_first_with_hostname() {
        let e = event(
            b"<187>2026 Dec  7 05:52:01 nx1 %ETHPORT-5-IF_DOWN_LINK_FAILURE: Interface Ethernet1/1 is down (Link failure)",
            false,
        );
        assert_eq!(e["format"], "rfc3164");
        assert_eq!(e["hostname"], "nx1");
        assert_eq!(e["timestamp"], "2026-12-07T05:52:01Z");
        assert_eq!(e["cisco"]["mnemonic"], "IF_DOWN_LINK_FAILURE");
        assert_eq!(e["cisco"]["time"], "2026 Dec  7 05:52:01");
    }

    #[test]
    fn an_unread_header_keeps_its_pri() {
        // FortiGate: a PRI, then `key=value` pairs.
        let e = event(
            br#"<189>date=2026-12-07 time=05:52:01 devname="fw1" logid="0000000013" type="traffic""#,
            false,
        );
        assert_eq!(e["format"], "unknown");
        assert_eq!(e["parse_error"], true);
        assert_eq!(e["severity"], 5);
        assert_eq!(e["facility_name"], "local7");
        assert_eq!(
            e["message"],
            r#"date=2026-12-07 time=05:52:01 devname="fw1" logid="0000000013" type="traffic""#
        );
        // A tag somewhere in an unread line is still read.
        let e = event(b"<187>Dec  7 ??:?? r1: %SYS-5-CONFIG_I: x", false);
        assert_eq!(e["parse_error"], true, "{e}");
        assert_eq!(e["severity"], 3);
        assert_eq!(e["cisco"]["mnemonic"], "CONFIG_I");
    }

    #[test]
    fn rfc5424_bom_and_no_msg() {
        let e = event(
            b"<14>1 2026-12-07T05:52:01Z h1 app - - - \xEF\xBB\xBFbom message",
            false,
        );
        assert_eq!(e["message"], "bom message");
        // RFC 5424 §6.5, example 4: no MSG.
        let e = event(
            br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#,
            false,
        );
        assert_eq!(e["msgid"], "ID47");
        assert_eq!(
            e["structured_data"]["examplePriority@32473"]["class"],
            "high"
        );
        assert!(e.get("message").is_none(), "absent, not empty: {e}");
    }

    #[test]
    fn cisco_time_as_written() {
        let e = event(
            b"<187>Dec  7 05:53:01 r1: %SYS-5-CONFIG_I: Configured from console by admin on vty0",
            false,
        );
        assert_eq!(e["hostname"], "r1");
        assert_eq!(e["cisco"]["time"], "Dec  7 05:53:01");
        assert!(this_year(&e, "-12-07T05:53:01Z"), "{e}");
    }
}
