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

/// Seconds since the Unix epoch of a wire datetime, in the forms XAPI
/// reads (`20240420T12:00:00Z`, `2024-04-20T12:00:00Z`, a fraction of a
/// second, an offset `+02:00` or `+0200`, or none, read as UTC); `None`
/// for anything else.
pub fn parse_wire(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once('T')?;
    let date: String = date.chars().filter(|c| *c != '-').collect();
    let (clock, offset) = if let Some(clock) = rest.strip_suffix('Z') {
        (clock, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (clock, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours: i64 = digits[..2].parse().ok()?;
        let minutes: i64 = digits[2..].parse().ok()?;
        (clock, sign * (hours * 3600 + minutes * 60))
    } else {
        (rest, 0)
    };
    let whole = match clock.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit()) => whole,
        Some(_) => return None,
        None => clock,
    };
    let clock: String = whole.chars().filter(|c| *c != ':').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(&date, 8) || !digits(&clock, 6) {
        return None;
    }
    let n = |s: &str| s.parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(n(&date[4..6])?).ok()?).ok()?;
    let day = time::Date::from_calendar_date(
        i32::try_from(n(&date[..4])?).ok()?,
        month,
        u8::try_from(n(&date[6..])?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms(
        u8::try_from(n(&clock[..2])?).ok()?,
        u8::try_from(n(&clock[2..4])?).ok()?,
        u8::try_from(n(&clock[4..])?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(day, at).assume_utc().unix_timestamp() - offset)
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

    #[test]
    fn wire_times_parse_in_xapis_forms() {
        let noon = Some(1_713_614_400);
        for text in [
            "20240420T12:00:00Z",
            "2024-04-20T12:00:00Z",
            "20240420T12:00:00",
            "20240420T12:00:00.999Z",
            "20240420T14:00:00+02:00",
            "20240420T11:30:00-0030",
            "20240420T120000Z",
        ] {
            assert_eq!(parse_wire(text), noon, "{text}");
        }
        for bad in [
            "",
            "x",
            "20240420",
            "20241320T12:00:00Z",
            "20240420T25:00:00Z",
            "20240420T12:00:00+2",
            "2024042T12:00:00Z",
            "20240420T12:00:00.Z",
            "+0000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_wire(bad), None, "{bad}");
        }
        assert_eq!(parse_wire(&wire(1_713_614_400_999)), noon);
    }
}
