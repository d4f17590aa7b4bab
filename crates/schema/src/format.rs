//! The string and number formats upstream checks (`int32`, `date-time`, `ipv4`, …); an
//! unknown format is accepted, as in kube-openapi.

use base64::Engine;
use serde_json::Value;

/// Whether `v` satisfies `format` (`None` = the format does not apply to this value).
pub fn check(format: &str, v: &Value) -> Option<bool> {
    if let Some(n) = v.as_i64() {
        return match format {
            "int32" => Some(i32::try_from(n).is_ok()),
            _ => None,
        };
    }
    let s = v.as_str()?;
    Some(match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => cidr(s),
        "uuid" => uuid(s),
        "hostname" => hostname(s),
        "email" => s
            .split_once('@')
            .is_some_and(|(u, d)| !u.is_empty() && hostname(d)),
        "mac" => {
            let parts: Vec<&str> = s.split([':', '-']).collect();
            parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        "duration" => duration(s),
        _ => return None,
    })
}

/// `address/prefix`, IPv4 or IPv6, the prefix within the address's width (the `cidr`
/// format, and built-in fields such as NetworkPolicy ipBlocks).
pub fn cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => bits <= 32,
        Ok(std::net::IpAddr::V6(_)) => bits <= 128,
        Err(_) => false,
    }
}

fn uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Go durations: `1h30m`, `250ms`, `-1.5s`.
fn duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let num = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if num == 0 {
            return false;
        }
        rest = &rest[num..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde_json::json;

    #[test]
    fn formats() {
        assert_eq!(check("int32", &json!(2147483648i64)), Some(false));
        assert_eq!(check("int32", &json!(7)), Some(true));
        assert_eq!(
            check("date-time", &json!("2024-01-02T03:04:05Z")),
            Some(true)
        );
        assert_eq!(check("date-time", &json!("yesterday")), Some(false));
        assert_eq!(check("date", &json!("2024-02-30")), Some(false));
        assert_eq!(check("ipv4", &json!("10.0.0.1")), Some(true));
        assert_eq!(check("cidr", &json!("10.0.0.0/33")), Some(false));
        assert_eq!(
            check("uuid", &json!("123e4567-e89b-12d3-a456-426614174000")),
            Some(true)
        );
        assert_eq!(check("duration", &json!("1h30m")), Some(true));
        assert_eq!(check("duration", &json!("soon")), Some(false));
        assert_eq!(check("byte", &json!("aGk=")), Some(true));
        assert_eq!(check("whatever", &json!("x")), None);
    }
}
