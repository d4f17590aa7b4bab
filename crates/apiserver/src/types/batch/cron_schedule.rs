//! CronJob schedules as upstream's parser (robfig/cron `ParseStandard`) reads them: five
//! fields or a descriptor (`@hourly` … `@every 1h30m`), numbers, names, ranges, steps, `*`
//! and `?` — nothing else (no `L`, `W`, `#`), with robfig's error texts.

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Bounds; 5] = [
    Bounds {
        min: 0,
        max: 59,
        names: &[],
    },
    Bounds {
        min: 0,
        max: 23,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 31,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Bounds {
        min: 0,
        max: 6,
        names: DAYS,
    },
];

/// Why `spec` is not a schedule upstream accepts (None: it is one).
pub(crate) fn parse_error(spec: &str) -> Option<String> {
    if spec.is_empty() {
        return Some("empty spec string".into());
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let (tz, rest) = spec.split_once(' ').unwrap_or((spec, ""));
        let name = tz.split_once('=').map(|(_, n)| n).unwrap_or("");
        if name.parse::<chrono_tz::Tz>().is_err() && name != "UTC" && name != "Local" {
            return Some(format!(
                "provided bad location {name}: unknown time zone {name}"
            ));
        }
        spec = rest.trim();
    }
    if let Some(d) = spec.strip_prefix('@') {
        return descriptor(d, spec);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    fields
        .iter()
        .zip(FIELDS.iter())
        .find_map(|(f, b)| field_error(f, b))
}

fn descriptor(d: &str, spec: &str) -> Option<String> {
    match d {
        "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => None,
        _ => match d.strip_prefix("every ") {
            Some(dur) if go_duration_ms(dur.trim()).is_some() => None,
            Some(dur) => Some(format!(
                "failed to parse duration {spec}: time: invalid duration \"{}\"",
                dur.trim()
            )),
            None => Some(format!("unrecognized descriptor: {spec}")),
        },
    }
}

/// A Go duration (`1h30m`, `90s`, `1.5h`, `500ms`) in milliseconds.
pub(crate) fn go_duration_ms(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        total += n * ms;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

fn field_error(field: &str, b: &Bounds) -> Option<String> {
    field.split(',').find_map(|r| range_error(r, b))
}

fn range_error(expr: &str, b: &Bounds) -> Option<String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        (b.min, b.max)
    } else {
        let start = match int_or_name(low_high[0], b) {
            Ok(v) => v,
            Err(e) => return Some(e),
        };
        let end = match low_high.len() {
            1 => start,
            2 => match int_or_name(low_high[1], b) {
                Ok(v) => v,
                Err(e) => return Some(e),
            },
            _ => return Some(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let s = match int(range_and_step[1]) {
                Ok(v) => v,
                Err(e) => return Some(e),
            };
            if single {
                end = b.max;
            }
            s
        }
        _ => return Some(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Some(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Some(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Some(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Some(format!("step of range should be a positive number: {expr}"));
    }
    None
}

fn int_or_name(s: &str, b: &Bounds) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        // Months are 1-based, weekdays 0-based, as robfig's name tables.
        return Ok(i as u32 + if b.min == 1 { 1 } else { 0 });
    }
    int(s)
}

fn int(s: &str) -> Result<u32, String> {
    match s.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {s}")),
        Ok(n) => Ok(n.min(i64::from(u32::MAX)) as u32),
        Err(_) => Err(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing \"{s}\": invalid syntax"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_robfig_accepts() {
        for ok in [
            "*/5 * * * *",
            "0 9 * * MON-FRI",
            "30 6-16/4 * * 1-5",
            "0 0 1 jan,jul ?",
            "@hourly",
            "@every 1h30m",
            "TZ=UTC 0 * * * *",
        ] {
            assert_eq!(parse_error(ok), None, "{ok}");
        }
        assert_eq!(
            parse_error("0 0 L * *").as_deref(),
            Some("failed to parse int from L: strconv.Atoi: parsing \"L\": invalid syntax")
        );
        assert!(parse_error("0 0 * * 1#2").is_some());
        assert!(parse_error("0 0 15W * *").is_some());
        assert_eq!(
            parse_error("* * * *").as_deref(),
            Some("expected exactly 5 fields, found 4: [* * * *]")
        );
        assert_eq!(
            parse_error("0 0 * * 7").as_deref(),
            Some("end of range (7) above maximum (6): 7")
        );
        assert_eq!(
            parse_error("@often").as_deref(),
            Some("unrecognized descriptor: @often")
        );
        assert_eq!(go_duration_ms("1h30m"), Some(5_400_000));
    }
}
