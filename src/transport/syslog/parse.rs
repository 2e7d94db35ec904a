//! One syslog message (a datagram or a frame) to the event rules see.
//!
//! RFC 5424 and RFC 3164 are read by `syslog_loose` (5424 first, then 3164; a missing PRI is
//! tolerated); Cisco's own header is read first by [`super::cisco`]. Fields not sent are
//! absent, never empty strings. A line nothing could read is kept whole as `message` with
//! `parse_error: true`, never dropped.

use chrono::{Datelike, Utc};
use serde_json::{Map, Value, json};
use syslog_loose::{Protocol, Variant};

use super::cisco;

const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clockd", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// The year of a time sent without one: this year, unless that puts it more than a day
/// ahead of now (December's lines read in January).
fn year_of(month: u32, day: u32) -> i32 {
    let now = Utc::now();
    let this = now.year();
    match chrono::NaiveDate::from_ymd_opt(this, month, day) {
        Some(d) if d > now.date_naive() + chrono::Days::new(1) => this - 1,
        _ => this,
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
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r', '\0', ' ']);
    let mut m = match pri(text).and_then(|(p, rest)| Some((p, cisco::parse(rest, year_of)?))) {
        Some((p, (header, message))) => cisco_event(p, header, message),
        None => loose_event(text),
    };
    if truncated {
        m.insert("truncated".into(), json!(true));
    }
    Value::Object(m)
}

/// Room for every field an event gets: built once, never grown (growing rehashes every key).
const FIELDS: usize = 14;

fn cisco_event(pri: u8, h: cisco::Header, message: &str) -> Map<String, Value> {
    let mut m = Map::with_capacity(FIELDS);
    m.insert("format".into(), json!("rfc3164"));
    put_pri(&mut m, pri);
    if let Some(t) = h.timestamp {
        m.insert("timestamp".into(), json!(t));
    }
    if let Some(host) = h.hostname {
        m.insert("hostname".into(), json!(host));
    }
    m.insert("message".into(), json!(message));
    let mut c = cisco::tag_fields(message).unwrap_or_default();
    if let Some(first) = h.sequence.last() {
        c.insert("sequence".into(), json!(first));
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
    m.insert("cisco".into(), Value::Object(c));
    m
}

fn loose_event(text: &str) -> Map<String, Value> {
    let msg = syslog_loose::parse_message_with_year_tz(
        text,
        |(mo, d, ..)| year_of(mo, d),
        Some(Utc),
        Variant::Either,
    );
    let mut m = Map::with_capacity(FIELDS);
    let unread = msg.facility.is_none()
        && msg.severity.is_none()
        && msg.timestamp.is_none()
        && msg.hostname.is_none()
        && msg.appname.is_none();
    if unread {
        m.insert("format".into(), json!("unknown"));
        m.insert("message".into(), json!(text));
        m.insert("parse_error".into(), json!(true));
        return m;
    }
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
    if let Some(t) = msg.timestamp {
        m.insert(
            "timestamp".into(),
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        );
    }
    let mut text_field = |name: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty() && *v != "-") {
            m.insert(name.into(), json!(v));
        }
    };
    text_field("hostname", msg.hostname);
    text_field("app_name", msg.appname);
    let procid = msg.procid.as_ref().map(|p| p.to_string());
    text_field("procid", procid.as_deref());
    text_field("msgid", msg.msgid);
    if !msg.structured_data.is_empty() {
        let mut sd = Map::new();
        for el in &msg.structured_data {
            let params: Map<String, Value> = el
                .params()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            sd.insert(el.id.to_string(), Value::Object(params));
        }
        m.insert("structured_data".into(), Value::Object(sd));
    }
    m.insert("message".into(), json!(msg.msg));
    if let Some(c) = cisco::tag_fields(msg.msg) {
        m.insert("cisco".into(), Value::Object(c));
    }
    m
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

    #[test]
    fn unreadable_lines_are_kept_whole() {
        let e = event(b"date=2024-01-01 devname=fw1 action=deny", true);
        assert_eq!(e["parse_error"], true);
        assert_eq!(e["truncated"], true);
        assert_eq!(e["message"], "date=2024-01-01 devname=fw1 action=deny");
        let e = event(&[0xff, 0xfe, b'<', b'1'], false);
        assert!(e["message"].is_string());
    }
}
