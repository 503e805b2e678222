//! Time as the lock item stores it: Unix nanoseconds, shown as RFC 3339 (UTC), and the two date formats lock-exec
//! reads (RFC 3339 from STS and credential endpoints, the HTTP `Date` header). A leaf module: the lock protocol,
//! the DynamoDB client and the logs all use it. Proleptic Gregorian calendar, days from civil dates as in Howard
//! Hinnant's `days_from_civil`; years 0 to 9999. Also the clock skew estimate from the answers' `Date` headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NS_PER_SEC: i128 = 1_000_000_000;

/// Unix nanoseconds of a time (negative before 1970).
pub fn unix_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The time of Unix nanoseconds (`None` before 1970, where lock-exec has nothing to do).
pub fn system_time(ns: i128) -> Option<SystemTime> {
    let ns = u128::try_from(ns).ok()?;
    let secs = u64::try_from(ns / NS_PER_SEC as u128).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, (ns % NS_PER_SEC as u128) as u32))
}

/// RFC 3339 text of a Unix ns time, for logs and `status`: `2026-11-30T15:52:34.411732232Z`, the fraction without
/// trailing zeros and left out when zero. Outside years 0 to 9999, the number itself.
pub fn rfc3339_ns(ns: i128) -> String {
    let Some((date, nanos)) = civil(ns) else { return ns.to_string() };
    if nanos == 0 {
        return format!("{date}Z");
    }
    let fraction = format!("{nanos:09}");
    format!("{date}.{}Z", fraction.trim_end_matches('0'))
}

/// RFC 3339 text with exactly three fraction digits (`2026-11-30T15:52:34.411Z`): fixed width, for text logs.
pub fn rfc3339_ms(ns: i128) -> String {
    match civil(ns) {
        Some((date, nanos)) => format!("{date}.{:03}Z", nanos / 1_000_000),
        None => ns.to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` and the nanoseconds of `ns`, `None` outside years 0 to 9999.
fn civil(ns: i128) -> Option<(String, i128)> {
    let secs = ns.div_euclid(NS_PER_SEC);
    let nanos = ns.rem_euclid(NS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).ok()?);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    Some((format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"), nanos))
}

/// Unix ns of an RFC 3339 text (`2021-08-16T20:52:53Z`, `t`/`z` too, a fraction of any length, an offset
/// `+HH:MM`); `None` when it is not one.
pub fn parse_rfc3339_ns(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let (month, day) = (digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let mut rest = &b[19..];
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        for (i, c) in fraction[..len].iter().enumerate().take(9) {
            nanos += i128::from(c - b'0') * 10i128.pow(8 - i as u32);
        }
        rest = &fraction[len..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let minutes = digits(&[*h1, *h2])? * 60 + digits(&[*m1, *m2])?;
            if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
        }
        _ => return None,
    };
    let seconds = seconds_of(year, month, day, hour, minute, second)? - offset;
    Some(i128::from(seconds) * NS_PER_SEC + nanos)
}

/// Unix ns of an HTTP date (RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date_ns(text: &str) -> Option<i128> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [weekday, day, month, year, clock, "GMT"] = parts.as_slice() else { return None };
    if weekday.len() != 4 || !weekday.ends_with(',') || day.len() != 2 || year.len() != 4 {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let c = clock.as_bytes();
    if c.len() != 8 || c[2] != b':' || c[5] != b':' {
        return None;
    }
    let seconds = seconds_of(
        digits(year.as_bytes())?,
        month,
        digits(day.as_bytes())?,
        digits(&c[0..2])?,
        digits(&c[3..5])?,
        digits(&c[6..8])?,
    )?;
    Some(i128::from(seconds) * NS_PER_SEC)
}

/// Unix seconds of a UTC civil time, checking each field's range (a leap second 60 is accepted as 59 + 1).
fn seconds_of(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The value of ASCII decimal digits, `None` if any byte is not a digit.
fn digits(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |n, c| n * 10 + i64::from(c - b'0')))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// An HTTP date (RFC 9110 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`), as in a `Date` header.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    system_time(parse_http_date_ns(text.trim())?)
}

const SECOND_NS: i128 = 1_000_000_000;

/// This host's clock minus the server's, as a range of nanoseconds: what `Date` headers can show. A `Date` has
/// whole seconds and was stamped at some moment of the exchange, so one answer gives a range at least a second
/// wide; more answers narrow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset {
    /// The smallest offset consistent with the answers (local minus server, ns).
    pub min_ns: i128,
    /// The largest.
    pub max_ns: i128,
}

impl Offset {
    /// From one exchange: the local clock when the request went out and when the answer had come, and the
    /// server's `Date` second. The server stamped the `Date` at some instant of [sent, received] (local), when
    /// its own clock read somewhere in [second, second + 1 s).
    pub fn from_exchange(sent: SystemTime, received: SystemTime, server_second: SystemTime) -> Offset {
        let (sent, second) = (unix_ns(sent), unix_ns(server_second));
        let received = unix_ns(received).max(sent);
        Offset { min_ns: sent - (second + SECOND_NS), max_ns: received - second }
    }

    /// What both show. Ranges that do not meet mean a clock was stepped between the two (NTP, an operator):
    /// the newer one stands alone.
    pub fn narrow(self, newer: Offset) -> Offset {
        let both = Offset { min_ns: self.min_ns.max(newer.min_ns), max_ns: self.max_ns.min(newer.max_ns) };
        if both.min_ns <= both.max_ns { both } else { newer }
    }

    /// The smallest skew consistent with the range: zero when it holds 0.
    pub fn at_least(self) -> std::time::Duration {
        let ns = if self.min_ns > 0 {
            self.min_ns
        } else if self.max_ns < 0 {
            -self.max_ns
        } else {
            0
        };
        std::time::Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// The middle of the range in ms: the best single guess.
    pub fn middle_ms(self) -> i64 {
        ((self.min_ns + self.max_ns) / 2 / 1_000_000) as i64
    }

    /// `ahead of` or `behind`, by the middle of the range.
    pub fn direction(self) -> &'static str {
        if self.min_ns + self.max_ns >= 0 { "ahead of" } else { "behind" }
    }

    /// The earliest the server's clock can read when the local one reads `local`.
    pub fn server_earliest(self, local: SystemTime) -> i128 {
        unix_ns(local) - self.max_ns
    }
}

/// The clock skew estimate of one process, narrowed by every DynamoDB answer's `Date` header, shared by every
/// thread's client.
#[derive(Debug, Default)]
pub struct Skew {
    offset: std::sync::Mutex<Option<Offset>>,
    /// The warning that the skew passed half the bound has been given.
    warned: std::sync::atomic::AtomicBool,
}

impl Skew {
    /// Takes in one exchange; returns the estimate when it is now beyond `warn_at` for the first time (the
    /// caller warns once).
    pub fn observe(&self, exchange: Offset, warn_at: std::time::Duration) -> Option<Offset> {
        let mut offset = self.offset.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let narrowed = offset.map_or(exchange, |known| known.narrow(exchange));
        *offset = Some(narrowed);
        let first = narrowed.at_least() > warn_at && !self.warned.swap(true, std::sync::atomic::Ordering::SeqCst);
        first.then_some(narrowed)
    }

    /// The estimate so far, `None` before any answer with a `Date`.
    pub fn offset(&self) -> Option<Offset> {
        *self.offset.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_rfc3339_in_utc() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ns(1_796_053_954_411_732_232), "2026-11-30T15:52:34.411732232Z");
        assert_eq!(rfc3339_ns(951_782_400_500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339_ms(1_796_053_954_411_732_232), "2026-11-30T15:52:34.411Z");
        assert_eq!(rfc3339_ms(1_796_053_954_000_000_000), "2026-11-30T15:52:34.000Z");
        assert_eq!(rfc3339_ns(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_ns(i128::MAX), i128::MAX.to_string());
    }

    #[test]
    fn parses_rfc3339_forms() {
        assert_eq!(parse_rfc3339_ns("2021-08-16T20:52:53Z"), Some(1_629_147_173 * NS_PER_SEC));
        assert_eq!(parse_rfc3339_ns("2021-08-16t20:52:53.25z"), Some(1_629_147_173 * NS_PER_SEC + 250_000_000));
        assert_eq!(parse_rfc3339_ns("2021-08-16T22:52:53+02:00"), Some(1_629_147_173 * NS_PER_SEC));
        assert_eq!(parse_rfc3339_ns("2021-08-16T20:52:53.1234567891Z"), Some(1_629_147_173 * NS_PER_SEC + 123_456_789));
        for bad in ["", "2021-08-16", "2021-13-01T00:00:00Z", "2021-02-29T00:00:00Z", "2021-08-16T20:52:53", "x"] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad:?}");
        }
        for ns in [0, 1_796_053_954_411_732_232, 951_782_400_000_000_000, 4_102_444_799 * NS_PER_SEC] {
            assert_eq!(parse_rfc3339_ns(&rfc3339_ns(ns)), Some(ns));
        }
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(parse_http_date_ns("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777 * NS_PER_SEC));
        assert_eq!(parse_http_date_ns("Mon, 30 Nov 2026 15:52:34 GMT"), Some(1_796_053_954 * NS_PER_SEC));
        for bad in
            ["", "Sun, 06 Nov 1994 08:49:37 UTC", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT"]
        {
            assert_eq!(parse_http_date_ns(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn days_round_trip_over_centuries() {
        for days in (-800_000..3_000_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn range(min_ms: i128, max_ms: i128) -> Offset {
        Offset { min_ns: min_ms * 1_000_000, max_ns: max_ms * 1_000_000 }
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(UNIX_EPOCH + Duration::from_secs(784111777)));
        assert_eq!(parse_http_date("Tue, 14 Nov 2023 22:13:20 GMT"), Some(at(1_700_000_000_000)));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(""), None);
    }

    #[test]
    fn one_exchange_gives_a_range_a_second_wide_plus_its_duration() {
        // (sent, received, Date second) in ms -> (min, max, at least) in ms
        let check = |sent: u64, received: u64, second: u64, expected: (i128, i128, u64)| {
            let offset = Offset::from_exchange(at(sent), at(received), at(second));
            let actual = (offset.min_ns / 1_000_000, offset.max_ns / 1_000_000, offset.at_least().as_millis() as u64);
            assert_eq!(actual, expected, "{sent} {received} {second}");
        };
        // The exchange falls inside the server's second: no skew can be shown.
        check(10_100, 10_300, 10_000, (-900, 300, 0));
        check(10_900, 11_100, 10_000, (-100, 1_100, 0));
        // Ahead: the exchange starts after the server's second ended.
        check(14_000, 14_200, 10_000, (3_000, 4_200, 3_000));
        // Behind.
        check(5_000, 5_100, 10_000, (-6_000, -4_900, 4_900));
        // A clock read backwards between the two ends counts as an instant exchange.
        check(5_000, 4_000, 5_000, (-1_000, 0, 0));
    }

    #[test]
    fn answers_narrow_the_range_and_a_stepped_clock_starts_again() {
        let check = |a: Offset, b: Offset, expected: Offset| assert_eq!(a.narrow(b), expected, "{a:?} {b:?}");
        check(range(-900, 300), range(-100, 1_100), range(-100, 300));
        check(range(2_000, 3_100), range(2_500, 3_600), range(2_500, 3_100));
        // Disjoint: the clock was stepped; the newer exchange stands alone.
        check(range(-900, 300), range(5_000, 6_100), range(5_000, 6_100));
        // Answers on both sides of a server's second boundary pin the offset to about the exchanges' duration.
        let before = Offset::from_exchange(at(10_900), at(11_000), at(10_000));
        let after = Offset::from_exchange(at(11_000), at(11_050), at(11_000));
        assert_eq!(before.narrow(after), range(-100, 50));
    }

    #[test]
    fn skew_at_least_and_direction() {
        assert_eq!(range(-900, 300).at_least(), Duration::ZERO);
        assert_eq!(range(1_500, 2_600).at_least(), Duration::from_millis(1_500));
        assert_eq!(range(-3_200, -2_100).at_least(), Duration::from_millis(2_100));
        assert_eq!((range(1_500, 2_600).direction(), range(-3_200, -2_100).direction()), ("ahead of", "behind"));
        assert_eq!(range(1_500, 2_600).middle_ms(), 2_050);
        // The server's clock is at least local - max.
        assert_eq!(range(-3_200, -2_100).server_earliest(at(10_000)), 12_100_000_000);
    }

    #[test]
    fn the_warning_comes_once() {
        let skew = Skew::default();
        let half = Duration::from_secs(1);
        assert_eq!(skew.offset(), None);
        assert_eq!(skew.observe(range(-900, 300), half), None);
        assert_eq!(skew.observe(range(1_500, 2_600), half), Some(range(1_500, 2_600)), "stepped, then beyond half");
        assert_eq!(skew.observe(range(1_600, 2_700), half), None, "only once");
        assert_eq!(skew.offset(), Some(range(1_600, 2_600)));
    }
}
