//! Resource quantities ("500m", "1.5Gi", "2e3") as the scheduler counts them: integers of
//! milli-units for cpu and of whole units (bytes, counts) for everything else, rounded up.

/// A parsed quantity: `digits * 10^exp10 * 2^exp2`, exact (no floating point), so "1.1"
/// cpu is 1100 millicores and not 1101.
struct Parsed {
    negative: bool,
    digits: i128,
    exp10: i32,
    exp2: u32,
}

fn parse(text: &str) -> Option<Parsed> {
    let t = text.trim();
    let (negative, t) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    // Beyond 30 significant digits the value is far outside any allocatable: clamp.
    let all: String = format!("{int}{frac}");
    let trimmed = all.trim_start_matches('0');
    if trimmed.len() > 30 {
        return None;
    }
    let digits: i128 = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().ok()?
    };
    let mut exp10 = -(frac.len() as i32);
    let mut exp2 = 0u32;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    Some(Parsed {
        negative,
        digits,
        exp10,
        exp2,
    })
}

/// The value multiplied by `10^scale`, rounded up (as upstream's `ScaledValue`), saturating.
fn scaled(text: &str, scale: i32) -> i64 {
    let Some(p) = parse(text) else { return 0 };
    let mut v = p.digits;
    let mut exp = p.exp10 + scale;
    for _ in 0..p.exp2 {
        v = v.saturating_mul(2);
    }
    while exp > 0 {
        v = v.saturating_mul(10);
        exp -= 1;
    }
    let mut rem = false;
    while exp < 0 {
        rem |= v % 10 != 0;
        v /= 10;
        exp += 1;
    }
    if rem {
        v += 1;
    }
    let v = if p.negative { -v } else { v };
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Milli-units (cpu), rounded up.
pub fn milli(text: &str) -> i64 {
    scaled(text, 3)
}

/// Whole units (bytes, counts, extended resources), rounded up.
pub fn value(text: &str) -> i64 {
    scaled(text, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_forms() {
        assert_eq!(milli("500m"), 500);
        assert_eq!(milli("1.1"), 1100);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("1n"), 1);
        assert_eq!(milli("2e3"), 2_000_000);
        assert_eq!(value("1Gi"), 1 << 30);
        assert_eq!(value("1.5Ki"), 1536);
        assert_eq!(value("128M"), 128_000_000);
        assert_eq!(value("110"), 110);
        assert_eq!(value("100m"), 1);
        assert_eq!(value("junk"), 0);
    }
}
