//! Time as the lock item stores it: Unix nanoseconds, shown as RFC 3339. A leaf module: the lock protocol, the
//! DynamoDB client and the logs all use it. Also the clock skew estimate from the answers' `Date` headers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix nanoseconds of a time (negative before 1970).
pub fn unix_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// RFC 3339 text of a Unix ns time, for logs and `status`.
pub fn rfc3339_ns(ns: i128) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

/// Unix ns of an RFC 3339 text (`None` when it is not one).
pub fn parse_rfc3339_ns(text: &str) -> Option<i128> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

/// An HTTP date (RFC 7231 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`), as in a `Date` header.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(text.trim(), format).ok()?.assume_utc();
    Some(SystemTime::from(at))
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
    use std::time::{Duration, UNIX_EPOCH};

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
