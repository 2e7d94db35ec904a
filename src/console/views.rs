//! Pure helpers that turn history rows into what pages show: masked headers, formatted JSON,
//! safe links, and the overview's bar charts.

use serde::Serialize;
use serde_json::Value;

/// What a masked value shows.
pub const MASK: &str = "***";

/// Whether a header may carry a credential (stored headers already lack the known ones; this
/// catches the rest).
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "authorization",
        "cookie",
        "token",
        "secret",
        "signature",
        "password",
        "api-key",
        "apikey",
        "auth",
        "key",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// Headers as (name, value) pairs with credential values masked.
pub fn masked_headers(headers: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let shown = if is_credential_header(k) {
                MASK.to_string()
            } else {
                match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            };
            (k.clone(), shown)
        })
        .collect()
}

/// JSON as indented text (escaped by the template like any text).
pub fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A rendered action as the history keeps it, indented, its `timeout` a duration (`5m`) as
/// `rulehook test` prints it ([`crate::actions::for_people`]).
pub fn readable_action(v: &Value) -> String {
    pretty(&crate::actions::for_people(v))
}

/// A dry run's `approval` or `throttle` for people: its field `key` (`timeout`,
/// `once_within`: milliseconds in JSON) as a duration (`30m`), as the rulebook writes it.
pub fn readable_duration(of: &Value, key: &str) -> Value {
    let mut v = of.clone();
    if let Some(t) = v.get_mut(key)
        && let Some(ms) = t.as_u64()
    {
        *t = Value::String(crate::units::format_duration(
            std::time::Duration::from_millis(ms),
        ));
    }
    v
}

/// A URL fit for `href`: only http(s); anything else (`javascript:`, `data:`) is shown as text.
pub fn safe_link(url: &str) -> Option<String> {
    let lower = url.trim().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| url.trim().to_string())
}

/// The link to a ticket or issue an attempt's result names, if any.
pub fn ticket_link(result: Option<&Value>) -> Option<String> {
    let r = result?;
    ["html_url", "web_url", "url", "link"]
        .iter()
        .find_map(|k| r.get(*k).and_then(Value::as_str))
        .and_then(safe_link)
}

/// One bar of a stacked bar chart: a time bucket, its segments bottom-up.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bar {
    pub x: u32,
    pub label: String,
    pub total: u64,
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Segment {
    /// The series' position (its CSS class `c{series}`).
    pub series: usize,
    pub y: u32,
    pub height: u32,
    pub count: u64,
}

/// A server-rendered stacked bar chart (SVG drawn by the template).
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub bar_width: u32,
    pub series: Vec<String>,
    pub bars: Vec<Bar>,
    pub max: u64,
}

/// Height of the plot area; bars scale to the tallest.
const PLOT: u32 = 160;

/// A chart of `buckets` time buckets of `bucket_ms` ending at `now_ms`: `points` are
/// (time in ms, series name); series appear in the order given, then first-seen order.
pub fn chart(
    points: &[(i64, String)],
    series: &[&str],
    now_ms: i64,
    buckets: u32,
    bucket_ms: i64,
) -> Chart {
    let mut names: Vec<String> = series.iter().map(|s| s.to_string()).collect();
    let mut counts = vec![Vec::<u64>::new(); buckets as usize];
    let start = now_ms - bucket_ms * i64::from(buckets);
    for (t, s) in points {
        if *t < start || *t > now_ms {
            continue;
        }
        let b = (((t - start) / bucket_ms) as usize).min(buckets as usize - 1);
        let k = match names.iter().position(|n| n == s) {
            Some(k) => k,
            None => {
                names.push(s.clone());
                names.len() - 1
            }
        };
        let row = &mut counts[b];
        if row.len() <= k {
            row.resize(k + 1, 0);
        }
        row[k] += 1;
    }
    let max = counts
        .iter()
        .map(|r| r.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar_width = 24;
    let bars = counts
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut top = PLOT;
            let segments = row
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(series, &count)| {
                    let height = ((count * u64::from(PLOT)) / max).max(1) as u32;
                    top = top.saturating_sub(height);
                    Segment {
                        series,
                        y: top,
                        height,
                        count,
                    }
                })
                .collect();
            let ago = (i64::from(buckets) - i as i64) * bucket_ms / 60_000;
            Bar {
                x: i as u32 * (bar_width + 6),
                label: format!("-{ago}m"),
                total: row.iter().sum(),
                segments,
            }
        })
        .collect();
    Chart {
        width: buckets * (bar_width + 6),
        height: PLOT,
        bar_width,
        series: names,
        bars,
        max,
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (0 when it is not one).
pub fn parse_ms(t: &str) -> i64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

/// Bytes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Each source's colour class (`c0`…`c15`, the chart palette), by its place in the rule set,
/// so the first sixteen sources never share one.
pub fn source_colours(sources: &[&str]) -> serde_json::Map<String, serde_json::Value> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.to_string(),
                serde_json::Value::String(format!("c{}", i % 16)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_try_page_shows_dry_run_durations_as_written() {
        let approval = json!({"timeout": 1_800_000, "on_timeout": "reject"});
        assert_eq!(readable_duration(&approval, "timeout")["timeout"], "30m");
        let throttle = json!({"once_within": 600_000, "group": "x"});
        assert_eq!(
            readable_duration(&throttle, "once_within")["once_within"],
            "10m"
        );
        assert_eq!(readable_duration(&Value::Null, "timeout"), Value::Null);
    }

    #[test]
    fn credential_headers_are_masked() {
        let h = json!({"x-api-key": "k", "x-hub-signature-256": "sha256=aa", "x-auth-token": "t",
                       "content-type": "application/json", "x-request-id": "r-1"});
        let shown = masked_headers(h.as_object().unwrap());
        let get = |n: &str| shown.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("x-api-key"), MASK);
        assert_eq!(get("x-hub-signature-256"), MASK);
        assert_eq!(get("x-auth-token"), MASK);
        assert_eq!(get("content-type"), "application/json");
        assert_eq!(get("x-request-id"), "r-1");
    }

    #[test]
    fn only_http_links_are_links() {
        assert_eq!(
            safe_link("https://x.example/1").as_deref(),
            Some("https://x.example/1")
        );
        assert_eq!(safe_link(" JavaScript:alert(1)"), None);
        assert_eq!(safe_link("data:text/html,x"), None);
        assert_eq!(
            ticket_link(Some(&json!({"html_url": "javascript:alert(1)"}))),
            None
        );
        assert_eq!(
            ticket_link(Some(&json!({"web_url": "http://gitlab.local/i/2"}))).as_deref(),
            Some("http://gitlab.local/i/2")
        );
    }

    #[test]
    fn charts_bucket_and_stack() {
        let now = 3_600_000;
        let pts = vec![
            (now - 10, "a".to_string()),
            (now - 20, "b".to_string()),
            (now - 30, "a".to_string()),
            (now - 3_599_000, "b".to_string()),
            (now - 7_200_000, "a".to_string()), // outside the hour
        ];
        let c = chart(&pts, &[], now, 12, 300_000);
        assert_eq!(c.series, vec!["a", "b"]);
        assert_eq!(c.bars.len(), 12);
        assert_eq!(c.bars[11].total, 3);
        assert_eq!(c.bars[0].total, 1);
        assert_eq!(c.max, 3);
        let last = &c.bars[11].segments;
        assert_eq!(last.len(), 2);
        assert_eq!((last[0].series, last[0].count, last[0].height), (0, 2, 106));
        assert_eq!(last[1].y + last[1].height, last[0].y, "stacked");
        assert_eq!(c.bars.iter().map(|b| b.total).sum::<u64>(), 4);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
