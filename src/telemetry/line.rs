//! The plain-text log line, written directly.
//!
//! The same line tracing-subscriber's default (`Full`) format writes without colours —
//! `2026-12-07T05:40:55.123456Z  INFO rulehook::rule: message field=value …` — with the same
//! escaping of the message (terminal control characters shown as `\x1b`, C1 controls as
//! `\u{9b}`), but each part appended as text instead of through `write!`, the timestamp from
//! integer arithmetic, and no colour painting to skip. The default cost ~10k instructions per
//! line: as much as storing the event. Used when stderr is not a terminal (a service's log);
//! a terminal keeps the library's coloured format.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format (see the module).
pub struct Line;

/// The fields' format: `message` first as text, then `name=value` (values as `Debug`).
pub struct LineFields;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut stamp = [0u8; 27];
        writer.write_str(timestamp(std::time::SystemTime::now(), &mut stamp))?;
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

impl<'a> MakeVisitor<Writer<'a>> for LineFields {
    type Visitor = Visitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Visitor<'a> {
        Visitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's (or span's) fields; see [`LineFields`].
pub struct Visitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    /// The separating space before every field but the first; false if the field is skipped
    /// or an earlier write failed.
    fn start(&mut self, field: &Field) -> bool {
        // What the `log` crate's records carry as fields (the default format skips them too).
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
        self.result.is_ok()
    }

    /// `name=` (a raw identifier without its `r#`).
    fn name(&mut self, field: &Field) -> fmt::Result {
        let name = field.name();
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Escaping(&mut self.writer).write_str(value)
        } else if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            // `Debug` of such a text is the text in quotes.
            self.name(field).and_then(|()| {
                self.writer.write_char('"')?;
                self.writer.write_str(value)?;
                self.writer.write_char('"')
            })
        } else {
            self.name(field)
                .and_then(|()| write!(self.writer, "{value:?}"))
        };
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Rare (and with its sources listed): as the default format writes it.
        if self.result.is_err() {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        v.record_error(field, value);
        self.is_empty = false;
        self.result = v.finish();
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write!(Escaping(&mut self.writer), "{value:?}")
        } else {
            self.name(field)
                .and_then(|()| write!(self.writer, "{value:?}"))
        };
    }
}

impl VisitOutput<fmt::Result> for Visitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for Visitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// Escapes what a terminal would act on, as tracing-subscriber does for messages: ESC, BEL,
/// BS, FF and DEL as `\x..`, C1 controls as `\u{..}`. Text without them is written whole.
struct Escaping<'w, 'a>(&'w mut Writer<'a>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // C1 controls (U+0080–U+009F) are encoded as 0xC2 0x80–0x9F.
        if !s
            .bytes()
            .any(|b| matches!(b, 0x07 | 0x08 | 0x0c | 0x1b | 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                c if ('\u{80}'..='\u{9f}').contains(&c) => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), as the default format's timer writes it
/// for years 0–9999.
fn timestamp(at: std::time::SystemTime, buf: &mut [u8; 27]) -> &str {
    let d = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil(days as i64);
    let y = y.clamp(0, 9999) as u32;
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, day);
    put(11, 2, (rest / 3600) as u32);
    put(14, 2, (rest % 3600 / 60) as u32);
    put(17, 2, (rest % 60) as u32);
    put(20, 6, d.subsec_micros());
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        buf[i] = c;
    }
    // Only ASCII digits and separators were written.
    std::str::from_utf8(buf).unwrap_or("<unknown time>")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_read_as_the_default_timer_writes_them() {
        let mut buf = [0u8; 27];
        let at = UNIX_EPOCH + Duration::new(1_796_622_055, 123_456_789);
        assert_eq!(timestamp(at, &mut buf), "2026-12-07T05:40:55.123456Z");
        let at = UNIX_EPOCH + Duration::new(951_782_400, 7_000); // a leap day
        assert_eq!(timestamp(at, &mut buf), "2000-02-29T00:00:00.000007Z");
        assert_eq!(
            timestamp(UNIX_EPOCH, &mut buf),
            "1970-01-01T00:00:00.000000Z"
        );
        let at = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // the last second of 2099
        assert_eq!(timestamp(at, &mut buf), "2099-12-31T23:59:59.000000Z");
    }

    /// A writer that collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Collect {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The same events through the default format (no colours) and through [`Line`]: the
    /// lines are the same after their timestamps.
    fn both(events: impl Fn()) -> (String, String) {
        let run = |fast: bool| {
            let out = Collect::default();
            let w = out.clone();
            let builder = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(Level::DEBUG)
                .with_writer(move || w.clone());
            if fast {
                let s = builder.event_format(Line).fmt_fields(LineFields).finish();
                tracing::subscriber::with_default(s, &events);
            } else {
                tracing::subscriber::with_default(builder.finish(), &events);
            }
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            // Each line without its timestamp (27 characters).
            text.lines()
                .map(|l| format!("{}\n", &l[27..]))
                .collect::<String>()
        };
        (run(false), run(true))
    }

    #[test]
    fn lines_are_the_default_formats_lines() {
        #[derive(Debug)]
        struct Cause;
        impl fmt::Display for Cause {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("refused")
            }
        }
        impl std::error::Error for Cause {}
        let (default, fast) = both(|| {
            let (rule, id) = (String::from("r0"), String::from("e1"));
            tracing::info!(target: "rulehook::rule", rule, event = id, "snapshot {} completed", "a6b1");
            tracing::warn!(rule = %rule, action = "log", attempt = 2u32, ok = true, "action failed");
            tracing::error!(
                error = &Cause as &(dyn std::error::Error + 'static),
                "cannot"
            );
            tracing::debug!(
                r#type = "x",
                text = "quote \" and \\ and é",
                "esc \x1b[31m red \u{9b} bel \x07"
            );
            tracing::info!("{}", "tab\there");
        });
        assert_eq!(fast, default);
        assert!(
            fast.contains(
                "  INFO rulehook::rule: snapshot a6b1 completed rule=\"r0\" event=\"e1\"\n"
            ),
            "{fast}"
        );
        assert!(
            fast.contains("esc \\x1b[31m red \\u{9b} bel \\x07 type=\"x\""),
            "{fast}"
        );
        assert!(fast.contains("attempt=2 ok=true"), "{fast}");
    }

    #[test]
    fn spans_are_written_as_the_default_format_writes_them() {
        let (default, fast) = both(|| {
            let outer = tracing::info_span!("outer", n = 1);
            let _o = outer.enter();
            let inner = tracing::info_span!("inner");
            let _i = inner.enter();
            tracing::info!(x = 2, "inside");
        });
        assert_eq!(fast, default);
        assert!(fast.contains("outer{n=1}:inner: "), "{fast}");
    }
}
