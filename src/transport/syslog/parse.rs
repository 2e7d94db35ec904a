//! One syslog message (a datagram or a frame) to the event rules see.
//!
//! After the PRI, a Cisco header (IOS, IOS-XE, IOS-XR, NX-OS, with or without a relay's BSD
//! header in front) is read by [`super::cisco`]; anything else by `syslog_loose` (RFC 5424
//! first, then RFC 3164; a missing PRI is tolerated), whose message may hold a Cisco header in
//! turn (a relay's, Arista's sequence number). Fields not sent are absent, never empty strings.
//! A line whose header cannot be read keeps its PRI's fields, the rest whole as `message`, and
//! `parse_error: true`; it is never dropped.

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
    let pri = pri(text);
    let mut m = match pri.and_then(|(p, rest)| Some((p, cisco::parse(rest, year_of)?))) {
        Some((p, (header, message))) => cisco_event(p, header, message),
        None => loose_event(text, pri),
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
    let relay = h.relay_timestamp.take();
    if let Some(t) = h.timestamp_or(relay) {
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

fn loose_event(text: &str, pri: Option<(u8, &str)>) -> Map<String, Value> {
    let msg = syslog_loose::parse_message_with_year_tz(
        text,
        |(mo, d, ..)| year_of(mo, d),
        Some(Utc),
        Variant::Either,
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
    let mut cisco = cisco::parse_message(text, year_of);
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
    match cisco {
        Some((h, message)) => put_cisco(&mut m, h, message),
        None if !text.is_empty() => {
            m.insert("message".into(), json!(text));
        }
        None => {}
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
            format!("{}-12-07T05:54:05Z", year_of(12, 7))
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
