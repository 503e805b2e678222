//! Time as the lock item stores it: Unix nanoseconds, shown as RFC 3339. A leaf module: the lock protocol, the
//! DynamoDB client and the logs all use it.

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
