//! Resource quantities as numbers (`500m` → 0.5, `64Mi` → 67108864) and the host's totals,
//! for cgroup limits and the downward API.

/// A quantity in base units (cores for CPU, bytes for memory); None when malformed.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "u" => 1e-6,
        "n" => 1e-9,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with('e') || s.starts_with('E') => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Milli-units, rounded up (CPU requests/limits).
pub fn milli(q: &str) -> Option<i64> {
    parse(q).map(|v| (v * 1000.0).ceil() as i64)
}

/// Whole units, rounded up (memory bytes).
pub fn whole(q: &str) -> Option<i64> {
    parse(q).map(|v| v.ceil() as i64)
}

pub fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn host_memory_bytes() -> u64 {
    crate::node::meminfo_kib("MemTotal").map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(whole("64Mi"), Some(64 * 1024 * 1024));
        assert_eq!(whole("1G"), Some(1_000_000_000));
        assert_eq!(whole("1e3"), Some(1000));
        assert_eq!(parse("x"), None);
    }
}
