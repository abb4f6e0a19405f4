//! Wall-clock time as `xapid` records and shows it: milliseconds since the
//! Unix epoch, and XAPI's wire datetime (`20240420T12:00:00Z`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// XAPI's wire datetime of `unix_ms`, to the second.
pub fn wire(unix_ms: u64) -> String {
    let secs = i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX);
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[year][month][day]T[hour]:[minute]:[second]Z");
    t.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_times_are_xapis() {
        assert_eq!(wire(0), "19700101T00:00:00Z");
        assert_eq!(wire(1_713_614_400_999), "20240420T12:00:00Z");
        assert!(unix_ms() > 1_713_614_400_000);
    }
}
