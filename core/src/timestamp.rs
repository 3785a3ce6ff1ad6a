//! Times and durations as messages show them: `2026-11-26T11:38:50Z`, `1h 5m`. The calendar
//! is the `time` crate's; the clock is never read here: callers pass the times in.

use std::time::Duration;

use time::UtcDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC, to the second.
pub fn rfc3339(t: UtcDateTime) -> String {
    // RFC 3339 has four-digit years; a time outside them (a token's absurd `exp`) is still
    // shown, in `time`'s own notation.
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// A duration in its two largest units: `2d 3h`, `1h 5m`, `15m`, `42s`.
pub fn human_duration(d: Duration) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = d.as_secs();
    for (size, name) in units {
        if rest >= size {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 || (!parts.is_empty() && rest == 0) {
            break;
        }
    }
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_796_650_730, "2026-12-07T13:38:50Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (4_102_444_800, "2100-01-01T00:00:00Z"),
        ] {
            let t = UtcDateTime::from_unix_timestamp(secs).unwrap();
            assert_eq!(rfc3339(t), text, "{secs}");
        }
        let far = UtcDateTime::from_unix_timestamp(-100_000_000_000).unwrap();
        assert!(!rfc3339(far).is_empty());
    }

    #[test]
    fn formats_durations() {
        for (secs, text) in [
            (0, "0s"),
            (42, "42s"),
            (900, "15m"),
            (3900, "1h 5m"),
            (3601, "1h 1s"),
            (90_061, "1d 1h"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), text, "{secs}");
        }
    }
}
