//! Kubernetes resource quantities (`100m`, `1.5`, `512Mi`, `1G`, `1e3`), normalized to integers.
//!
//! The snapshot stores CPU in millicores and memory in bytes; capture code turns the strings of
//! `resources.requests` and `status.allocatable` into those integers with [`parse_cpu_millis`] and
//! [`parse_bytes`]. Like Kubernetes' `Quantity.MilliValue()` and `Quantity.Value()`, a value that
//! does not fall on a whole unit is rounded up (away from zero): `100n` CPU is 1 millicore.
//!
//! Grammar (k8s.io/apimachinery/pkg/api/resource):
//! `<sign>? <digits> ( "." <digits>? )? <suffix>` where the suffix is a binary SI unit
//! (`Ki Mi Gi Ti Pi Ei`), a decimal SI unit (`n u m "" k M G T P E`) or a decimal exponent
//! (`e<int>` / `E<int>`).

use thiserror::Error;

/// A quantity string that could not be parsed, or whose value does not fit in 64 bits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Empty input.
    #[error("empty quantity")]
    Empty,
    /// The number part is missing or malformed.
    #[error("invalid quantity {0:?}: expected a number such as 100m, 1.5, 512Mi, 1G or 1e3")]
    Syntax(String),
    /// The unit suffix is not one Kubernetes knows.
    #[error(
        "invalid quantity {quantity:?}: unknown suffix {suffix:?} (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or e<exponent>)"
    )]
    Suffix {
        /// The whole input.
        quantity: String,
        /// The suffix that was not recognized.
        suffix: String,
    },
    /// The value does not fit in a signed 64-bit integer of the target unit.
    #[error("quantity {0:?} is too large")]
    Overflow(String),
}

/// The multiplier a suffix stands for.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// `10^n` (n may be negative).
    Decimal(i32),
    /// `2^n`.
    Binary(u32),
}

fn suffix_scale(quantity: &str, suffix: &str) -> Result<Scale, QuantityError> {
    let scale = match suffix {
        "" => Scale::Decimal(0),
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(10),
        "Mi" => Scale::Binary(20),
        "Gi" => Scale::Binary(30),
        "Ti" => Scale::Binary(40),
        "Pi" => Scale::Binary(50),
        "Ei" => Scale::Binary(60),
        _ => {
            let bad = || QuantityError::Suffix {
                quantity: quantity.to_string(),
                suffix: suffix.to_string(),
            };
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(bad)?;
            let digits = rest
                .strip_prefix('-')
                .or_else(|| rest.strip_prefix('+'))
                .unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let exp: i32 = rest.parse().map_err(|_| bad())?;
            Scale::Decimal(exp)
        }
    };
    Ok(scale)
}

fn pow10(exp: u32, quantity: &str) -> Result<u128, QuantityError> {
    10u128
        .checked_pow(exp)
        .ok_or_else(|| QuantityError::Overflow(quantity.to_string()))
}

/// Parses a quantity and returns it in units of `10^-unit_exp` of the base unit, rounded up
/// (away from zero). `unit_exp = 3` gives milli-units, `0` whole units.
pub fn parse_scaled(quantity: &str, unit_exp: u32) -> Result<i64, QuantityError> {
    let s = quantity.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let syntax = || QuantityError::Syntax(s.to_string());
    let overflow = || QuantityError::Overflow(s.to_string());
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = body.split_at(number_len);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => {
            if f.contains('.') {
                return Err(syntax());
            }
            (i, f)
        }
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(syntax());
    }
    let scale = suffix_scale(s, suffix)?;
    // Mantissa as an integer over 10^frac_digits. Leading zeros do not count against the limit.
    let frac_trimmed = frac_part.trim_end_matches('0');
    let int_trimmed = int_part.trim_start_matches('0');
    if int_trimmed.len() + frac_trimmed.len() > 30 {
        return Err(overflow());
    }
    let mut mantissa: u128 = 0;
    for b in int_trimmed.bytes().chain(frac_trimmed.bytes()) {
        mantissa = mantissa * 10 + u128::from(b - b'0');
    }
    let frac_digits = frac_trimmed.len() as i64;
    // value = mantissa * 10^-frac_digits * scale * 10^unit_exp
    let (mut num, mut den) = (mantissa, 1u128);
    let mut dec_exp: i64 = i64::from(unit_exp) - frac_digits;
    match scale {
        Scale::Decimal(e) => dec_exp += i64::from(e),
        Scale::Binary(b) => num = num.checked_mul(1u128 << b).ok_or_else(overflow)?,
    }
    if mantissa != 0 {
        if dec_exp >= 0 {
            let e = u32::try_from(dec_exp).map_err(|_| overflow())?;
            num = num.checked_mul(pow10(e, s)?).ok_or_else(overflow)?;
        } else {
            let e = u32::try_from(-dec_exp).map_err(|_| overflow())?;
            // Anything below 10^-38 of the unit is just "more than zero": round up to 1.
            den = if e > 38 { u128::MAX } else { pow10(e, s)? };
        }
    }
    let value = num.div_ceil(den);
    let value = i64::try_from(value).map_err(|_| overflow())?;
    Ok(if negative { -value } else { value })
}

/// CPU quantity in millicores: `"100m"` → 100, `"1.5"` → 1500, `"2"` → 2000.
pub fn parse_cpu_millis(quantity: &str) -> Result<i64, QuantityError> {
    parse_scaled(quantity, 3)
}

/// Memory (or any byte) quantity in bytes: `"512Mi"` → 536870912, `"1G"` → 1000000000.
pub fn parse_bytes(quantity: &str) -> Result<i64, QuantityError> {
    parse_scaled(quantity, 0)
}

/// A plain count such as allocatable `pods` (`"110"`), rounded up.
pub fn parse_count(quantity: &str) -> Result<i64, QuantityError> {
    parse_scaled(quantity, 0)
}

/// Formats millicores for people: `1500` → `"1500m"`, `2000` → `"2"`.
pub fn format_cpu_millis(millis: i64) -> String {
    if millis % 1000 == 0 {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes for people with a binary unit, one decimal when needed: `1610612736` → `"1.5Gi"`.
pub fn format_bytes(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value.abs() < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit.is_empty() {
        format!("{bytes}")
    } else if (value - value.round()).abs() < 0.05 {
        format!("{}{unit}", value.round() as i64)
    } else {
        format!("{value:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(s: &str) -> i64 {
        parse_cpu_millis(s).unwrap()
    }
    fn mem(s: &str) -> i64 {
        parse_bytes(s).unwrap()
    }

    #[test]
    fn cpu_quantities() {
        for (input, millis) in [
            ("100m", 100),
            ("1.5", 1500),
            ("1", 1000),
            ("0.1", 100),
            (".5", 500),
            ("2.", 2000),
            ("250m", 250),
            ("100n", 1),
            ("1u", 1),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1e-3", 1),
            ("+4", 4000),
            ("-1", -1000),
            ("0", 0),
            ("0.0001", 1),
            ("1k", 1_000_000),
            ("  2 ", 2000),
        ] {
            assert_eq!(cpu(input), millis, "{input}");
        }
    }

    #[test]
    fn memory_quantities() {
        for (input, bytes) in [
            ("512Mi", 512 * 1024 * 1024),
            ("1G", 1_000_000_000),
            ("1.5Gi", 1_610_612_736),
            ("129e6", 129_000_000),
            ("128974848", 128_974_848),
            ("123Mi", 128_974_848),
            ("1Ki", 1024),
            ("1k", 1000),
            ("1M", 1_000_000),
            ("1Ti", 1 << 40),
            ("1Ei", 1 << 60),
            ("1E", 1_000_000_000_000_000_000),
            ("0.5", 1),
            ("1m", 1),
        ] {
            assert_eq!(mem(input), bytes, "{input}");
        }
    }

    #[test]
    fn rejects_bad_quantities() {
        assert_eq!(parse_bytes(""), Err(QuantityError::Empty));
        for bad in [
            "abc", "1.2.3", ".", "1X", "1e", "1ee3", "1Kb", "Mi", "1 Mi", "e3", "--1",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad} should be rejected");
        }
        assert!(matches!(
            parse_bytes("1e40"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            parse_bytes("9999999999999999999999999999999Ei"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            parse_bytes("1e99999999999"),
            Err(QuantityError::Suffix { .. }) | Err(QuantityError::Overflow(_))
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(format_cpu_millis(1500), "1500m");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_bytes(1_610_612_736), "1.5Gi");
        assert_eq!(format_bytes(512 * 1024 * 1024), "512Mi");
        assert_eq!(format_bytes(100), "100");
    }
}
