//! Wall-clock helpers for artifacts: UTC timestamps in RFC 3339 form, computed from the Unix time without a
//! calendar crate (proleptic Gregorian, days-from-civil arithmetic).

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-23T21:15:00.123Z` for the given time (times before 1970 print as the epoch).
pub fn rfc3339(time: SystemTime) -> String {
    let utc = Utc::of(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.millis
    )
}

/// `20261123T211500Z`, for names that sort by time.
pub fn compact(time: SystemTime) -> String {
    let utc = Utc::of(time);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second
    )
}

/// A time broken down into UTC calendar fields.
struct Utc {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    millis: u32,
}

impl Utc {
    fn of(time: SystemTime) -> Utc {
        let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (year, month, day, seconds_of_day) = civil(since_epoch.as_secs());
        Utc {
            year,
            month,
            day,
            hour: seconds_of_day / 3600,
            minute: seconds_of_day / 60 % 60,
            second: seconds_of_day % 60,
            millis: since_epoch.subsec_millis(),
        }
    }
}

/// Splits Unix seconds into (year, month, day, seconds of the day).
fn civil(unix_seconds: u64) -> (i64, u32, u32, u64) {
    let days = (unix_seconds / 86_400) as i64;
    let seconds_of_day = unix_seconds % 86_400;
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a 400-year era.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day, seconds_of_day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap_day = UNIX_EPOCH + Duration::from_millis(951_782_400_250);
        assert_eq!(rfc3339(leap_day), "2000-02-29T00:00:00.250Z");
        let session_day = UNIX_EPOCH + Duration::from_secs(1_795_468_500);
        assert_eq!(compact(session_day), "20261123T211500Z");
    }
}
