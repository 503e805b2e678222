//! Go duration syntax (`time.ParseDuration`): `300ms`, `90s`, `1h30m`, `1.5h`, `2h45m30.5s`.

use std::fmt;
use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The text as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: {} (examples: 300ms, 90s, 1h30m)", self.value, self.reason)
    }
}

impl std::error::Error for DurationError {}

/// Parses a Go duration. Negative durations are refused (a lease or a grace cannot be negative).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let fail = |reason| Err(DurationError { value: text.to_owned(), reason });
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    // One sign at most, as in Go.
    if let Some(magnitude) = text.strip_prefix('-') {
        // `-0s` is zero in Go too, not a negative duration. A second sign is refused before the magnitude is
        // parsed: parsing it first recursed once per `-` (a long run of them overflowed the stack).
        if magnitude.starts_with(['-', '+']) {
            return fail("negative durations are not allowed");
        }
        return match parse(magnitude) {
            Ok(zero) if zero.is_zero() => Ok(zero),
            _ => fail("negative durations are not allowed"),
        };
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return fail("empty");
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return fail("expected a number");
        }
        let unit_len = after_number.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return fail("missing unit (ns, us, ms, s, m, h)"),
            _ => return fail("unknown unit (use ns, us, ms, s, m, h)"),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            match int_part.parse::<u128>() {
                Ok(v) if v <= u64::MAX as u128 => v,
                _ => return fail("too large"),
            }
        };
        let mut nanos = whole.saturating_mul(nanos_per_unit);
        let mut scale = nanos_per_unit;
        for digit in frac_part.bytes().take(20) {
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total = total.saturating_add(nanos);
        if total > i64::MAX as u128 {
            return fail("too large");
        }
        rest = after_unit;
    }
    let secs = u64::try_from(total / 1_000_000_000).unwrap_or(u64::MAX);
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration the way Go prints one (`1m0s`, `1.5s`, `300ms`), for messages.
pub fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (whole, fraction, digits, unit) = if nanos < 1_000 {
            (nanos, 0, 0, "ns")
        } else if nanos < 1_000_000 {
            (nanos / 1_000, nanos % 1_000, 3, "µs")
        } else {
            (nanos / 1_000_000, nanos % 1_000_000, 6, "ms")
        };
        return format!("{whole}{}{unit}", decimals(fraction, digits));
    }
    let total_secs = d.as_secs();
    let (h, m) = (total_secs / 3600, (total_secs / 60) % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}{}s", total_secs % 60, decimals(u128::from(d.subsec_nanos()), 9)));
    out
}

/// `.DIGITS` of `fraction` written with `digits` places, trailing zeros cut (Go's way), or nothing when zero: exact
/// integer arithmetic, where adding the fraction as a float printed `1.9898018039999998s`.
fn decimals(fraction: u128, digits: usize) -> String {
    if fraction == 0 {
        return String::new();
    }
    format!(".{}", format!("{fraction:0digits$}").trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Option<Duration>) {
        assert_eq!(parse(text).ok(), expected, "parse({text:?})");
    }

    #[test]
    fn go_examples() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        check("0", Some(Duration::ZERO));
        check("300ms", Some(ms(300)));
        check("90s", Some(s(90)));
        check("1h30m", Some(s(5400)));
        check("24h", Some(s(86400)));
        check("1.5h", Some(s(5400)));
        check("2h45m30.5s", Some(ms(9_930_500)));
        check(".5s", Some(ms(500)));
        check("1.s", Some(s(1)));
        check("+5s", Some(s(5)));
        check("10us", Some(Duration::from_micros(10)));
        check("10µs", Some(Duration::from_micros(10)));
        check("10μs", Some(Duration::from_micros(10)));
        check("7ns", Some(Duration::from_nanos(7)));
        check("1m0s", Some(s(60)));
        check("", None);
        check("5", None);
        check("s", None);
        check(".s", None);
        check("-5s", None);
        // Zero with a sign is zero, as in Go; a doubled sign is not a duration.
        check("-0s", Some(Duration::ZERO));
        check("+-0s", None);
        assert!(parse(&format!("{}0s", "-".repeat(100_000))).is_err());
        check("-0", Some(Duration::ZERO));
        check("--0s", None);
        check("-+0s", None);
        check("5x", None);
        check("5 s", None);
        check("1d", None);
        check("9999999999999999999h", None);
    }

    #[test]
    fn errors_name_the_value() {
        let e = parse("5x").expect_err("5x is not a duration");
        assert_eq!(
            e.to_string(),
            "invalid duration \"5x\": unknown unit (use ns, us, ms, s, m, h) (examples: 300ms, 90s, 1h30m)"
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(60)), "1m0s");
        assert_eq!(format(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format(Duration::from_millis(300)), "300ms");
        assert_eq!(format(Duration::ZERO), "0s");
        // Exact digits, no float noise.
        assert_eq!(format(Duration::from_nanos(1_989_801_804)), "1.989801804s");
        assert_eq!(format(Duration::from_nanos(61_000_000_001)), "1m1.000000001s");
        assert_eq!(format(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(format(Duration::from_nanos(2_250_000)), "2.25ms");
    }
}
