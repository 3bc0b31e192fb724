//! Times and durations as an operator reads them.

use time::OffsetDateTime;

pub fn now_ms() -> i64 {
    shared::clock::epoch_millis(OffsetDateTime::now_utc())
}

/// Epoch milliseconds as RFC 3339 (the number itself when out of range).
pub fn time_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(shared::clock::rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

/// `3d 4h`, `2h 5m`, `5m 12s`, `12s`, `0.4s`: the two largest units.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.unsigned_abs();
    if ms < 1_000 {
        return format!("{:.1}s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `(in 5m 2s)` or `(3m 12s ago)`, relative to `now_ms`.
pub fn relative_ms(at_ms: i64, now_ms: i64) -> String {
    if at_ms >= now_ms {
        format!("in {}", duration_ms(at_ms - now_ms))
    } else {
        format!("{} ago", duration_ms(now_ms - at_ms))
    }
}

/// A text field's value, or `-` when there is none.
pub fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_their_two_largest_units() {
        assert_eq!(duration_ms(400), "0.4s");
        assert_eq!(duration_ms(12_000), "12s");
        assert_eq!(duration_ms(312_000), "5m 12s");
        assert_eq!(duration_ms(7_500_000), "2h 5m");
        assert_eq!(duration_ms(273_600_000), "3d 4h");
        assert_eq!(relative_ms(10_000, 4_000), "in 6s");
        assert_eq!(relative_ms(4_000, 10_000), "6s ago");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(time_ms(0), "1970-01-01T00:00:00Z");
    }
}
