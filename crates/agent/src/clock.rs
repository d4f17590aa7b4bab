//! Wall-clock time as the agent and the simulator keep it (Unix milliseconds) and as the API
//! writes it (RFC 3339 in UTC, whole seconds for `Time`, microseconds for `MicroTime`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix time in milliseconds.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `metav1.Time`: whole seconds, `Z`.
pub fn rfc3339(ms: Millis) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// `metav1.MicroTime`: six fractional digits, `Z`.
pub fn rfc3339_micro(ms: Millis) -> String {
    let secs = rfc3339(ms);
    let micros = ms.rem_euclid(1000) * 1000;
    format!("{}.{micros:06}Z", secs.trim_end_matches('Z'))
}

/// How long from `now` until `at` (zero when it has passed).
pub fn until(at: Millis, now: Millis) -> Duration {
    Duration::from_millis((at - now).max(0) as u64)
}

/// A duration as the exit annotation writes it: `5s`, `500ms`, `2m`, `1h`, or bare seconds.
pub fn parse_duration(s: &str) -> Option<Millis> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some((n * scale).round() as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_the_api_does() {
        assert_eq!(rfc3339(1_735_689_600_999), "2025-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_micro(1_735_689_600_042),
            "2025-01-01T00:00:00.042000Z"
        );
    }

    #[test]
    fn durations_in_annotations() {
        assert_eq!(parse_duration("5s"), Some(5000));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("1.5s"), Some(1500));
        assert_eq!(parse_duration("2m"), Some(120_000));
        assert_eq!(parse_duration("3"), Some(3000));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
