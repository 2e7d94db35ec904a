//! Durations (`500ms`, `30s`, `5m`, `1h`, `7d`) and sizes (`65536`, `64KiB`, `1MiB`) as users
//! write them in rulebooks.

use std::time::Duration;

/// The longest duration accepted anywhere (100 years): instants computed from it stay in range.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// Parses a duration written with a unit suffix (`ms`, `s`, `m`, `h`, `d`), at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration `{t}` needs a unit: ms, s, m, h or d (e.g. `30s`)"))?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration `{t}` must start with a whole number"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "duration `{t}` has unknown unit `{unit}`: use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("duration `{t}` is too large: at most 36500d (100 years)"))
}

/// A duration as rulebooks write it: `5m`, `30s`, `7d`, `1500ms` (the largest exact unit).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses a size: a number of bytes, or a number with `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size `{t}` must start with a whole number"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        _ => {
            return Err(format!(
                "size `{t}` has unknown unit `{unit}`: use KiB or MiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{t}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
        // Windows that would overflow an instant are refused, not wrapped.
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        assert!(parse_duration("36501d").unwrap_err().contains("too large"));
        assert!(parse_duration("9999999999999999d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn durations_print_as_written() {
        for t in ["5m", "30s", "7d", "1500ms", "2h", "0ms"] {
            assert_eq!(format_duration(parse_duration(t).unwrap()), t);
        }
    }
}
