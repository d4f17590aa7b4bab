//! Resource quantities (`500m`, `1Gi`, `1e9`) parsed exactly and written back in the
//! canonical form kube-apiserver stores, so `cpu: 0.5` reads back as `"500m"`.

/// How the quantity was written, which decides how it is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// `mantissa × 10^scale`, exact, rounded up to nano (scale ≥ -9) as upstream does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    scale: i32,
    pub format: Format,
}

/// Upstream's message for a string that is not a quantity (a decode error, 400).
pub const SYNTAX_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

const DECIMAL: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];
const BINARY: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// Quantities beyond this many digits are kept as written rather than computed on.
const MAX_DIGITS: usize = 30;

impl Quantity {
    pub fn parse(text: &str) -> Option<Quantity> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
            return None;
        }
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > MAX_DIGITS {
            return None;
        }
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().ok()?
        };
        let mut scale = -i32::try_from(frac_part.len()).ok()?;
        let format = if let Some(&(_, exp)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
            scale += exp;
            Format::DecimalSi
        } else if let Some(power) = BINARY.iter().position(|s| *s == suffix) {
            for _ in 0..power {
                mantissa = mantissa.checked_mul(1024)?;
            }
            Format::BinarySi
        } else if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
            // A range check, not abs(): `e-2147483648` must not overflow.
            let exp: i32 = exp.parse().ok().filter(|e| (-100..=100).contains(e))?;
            scale += exp;
            Format::DecimalExponent
        } else {
            return None;
        };
        // Below a nano, round away from zero (upstream's RoundUp to scale -9).
        if scale < -9 {
            let shift = u32::try_from(-9 - scale).ok()?;
            let div = 10i128.checked_pow(shift).unwrap_or(i128::MAX);
            let rounded_up = mantissa % div != 0;
            mantissa = mantissa / div + i128::from(rounded_up);
            scale = -9;
        }
        if negative {
            mantissa = -mantissa;
        }
        Some(Quantity {
            mantissa,
            scale,
            format,
        })
    }

    /// The value in thousandths, rounded up (what quota and limit arithmetic sums).
    pub fn milli(&self) -> i128 {
        let e = self.scale + 3;
        if e >= 0 {
            10i128
                .checked_pow(e as u32)
                .and_then(|p| self.mantissa.checked_mul(p))
                .unwrap_or(i128::MAX)
        } else {
            let div = 10i128.checked_pow((-e) as u32).unwrap_or(i128::MAX);
            let q = self.mantissa / div;
            if self.mantissa % div > 0 {
                q + 1
            } else {
                q
            }
        }
    }

    /// `milli` thousandths, written in `format` (canonical() gives upstream's text).
    pub fn from_milli(milli: i128, format: Format) -> Quantity {
        Quantity {
            mantissa: milli,
            scale: -3,
            format,
        }
    }

    /// The value as a float, for comparisons (requests ≤ limits).
    pub fn as_f64(&self) -> f64 {
        self.mantissa as f64 * 10f64.powi(self.scale)
    }

    fn integer(&self) -> Option<i128> {
        if self.scale >= 0 {
            self.mantissa
                .checked_mul(10i128.checked_pow(self.scale as u32)?)
        } else {
            let div = 10i128.checked_pow((-self.scale) as u32)?;
            (self.mantissa % div == 0).then(|| self.mantissa / div)
        }
    }

    /// The canonical text upstream serializes (`Quantity.String()`).
    pub fn canonical(&self) -> String {
        if self.mantissa == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        if format == Format::BinarySi {
            let small = self.as_f64().abs() < 1024.0;
            match self.integer() {
                Some(n) if !small => return binary(n),
                _ => format = Format::DecimalSi,
            }
        }
        // Fewest digits with an exponent that is a multiple of three.
        let (mut m, mut e) = (self.mantissa, self.scale);
        while m % 10 == 0 {
            m /= 10;
            e += 1;
        }
        let down = e.rem_euclid(3);
        for _ in 0..down {
            m *= 10;
        }
        e -= down;
        let suffix = match format {
            Format::DecimalSi => match DECIMAL.iter().find(|(_, x)| *x == e) {
                Some((s, _)) => (*s).to_string(),
                None => format!("e{e}"),
            },
            _ if e == 0 => String::new(),
            _ => format!("e{e}"),
        };
        format!("{m}{suffix}")
    }
}

fn binary(mut n: i128) -> String {
    let mut power = 0;
    while power < BINARY.len() - 1 && n % 1024 == 0 {
        n /= 1024;
        power += 1;
    }
    format!("{n}{}", BINARY[power])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Quantity::parse(s)
            .map(|q| q.canonical())
            .unwrap_or_else(|| "invalid".into())
    }

    #[test]
    fn milli_arithmetic_round_trips() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert_eq!(q("500m").milli(), 500);
        assert_eq!(q("2").milli(), 2000);
        assert_eq!(q("1n").milli(), 1);
        assert_eq!(
            Quantity::from_milli(q("128Mi").milli() * 2, Format::BinarySi).canonical(),
            "256Mi"
        );
        assert_eq!(
            Quantity::from_milli(1500, Format::DecimalSi).canonical(),
            "1500m"
        );
        assert_eq!(
            Quantity::from_milli(3000, Format::DecimalSi).canonical(),
            "3"
        );
    }

    #[test]
    fn canonical_forms_match_upstream() {
        // Pairs taken from apimachinery's quantity tests.
        for (input, want) in [
            ("0", "0"),
            ("0.5", "500m"),
            ("1000m", "1"),
            ("1500", "1500"),
            ("2000", "2k"),
            ("1000000000", "1G"),
            ("1e9", "1e9"),
            ("1E3", "1e3"),
            ("1.5e3", "1500"),
            ("1e-3", "1e-3"),
            ("128Mi", "128Mi"),
            ("1024Mi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("1Ki", "1Ki"),
            ("100m", "100m"),
            ("0.1", "100m"),
            ("1.0000000001", "1000000001n"),
            ("-1.5", "-1500m"),
            ("+3", "3"),
            ("12.34k", "12340"),
            ("1n", "1n"),
            ("0.0000000001", "1n"),
            ("5Ei", "5Ei"),
        ] {
            assert_eq!(canon(input), want, "{input}");
        }
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for bad in [
            "",
            "lots",
            "1Gb",
            "1..2",
            ".",
            "1e",
            "--1",
            "1 Gi",
            "1e1000",
            "Mi",
            "1e-2147483648",
            "99999999999999999999999999999999Ei",
        ] {
            assert_eq!(canon(bad), "invalid", "{bad:?}");
        }
        assert_eq!(Quantity::parse("500m").map(|q| q.as_f64()), Some(0.5));
    }
}
