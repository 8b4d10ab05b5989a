//! Event and action timestamps: UTC, microsecond precision, RFC 3339 on the wire.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant with microsecond precision, stored as microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp that carries an offset (`Z` or `±hh:mm`). Digits past
    /// microseconds are truncated.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = chrono::DateTime::parse_from_rfc3339(text).map_err(|err| {
            format!("'{text}' is not an RFC 3339 timestamp with an offset ({err})")
        })?;
        Ok(Timestamp(parsed.timestamp_micros()))
    }

    /// Current wall-clock time.
    pub fn now() -> Self {
        Timestamp(chrono::Utc::now().timestamp_micros())
    }
}

impl Timestamp {
    /// The text `YYYY-MM-DDTHH:MM:SS.ffffffZ`, or None for a year outside 0..=9999.
    /// Hand-rolled: every event and action passes through here, and chrono's formatter
    /// was a tenth of the host's CPU time.
    pub(super) fn text(self) -> Option<[u8; 27]> {
        let micros = self.0.rem_euclid(1_000_000);
        let seconds = self.0.div_euclid(1_000_000);
        let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, second_of_day / 3600);
        put(14, 2, second_of_day / 60 % 60);
        put(17, 2, second_of_day % 60);
        put(20, 6, micros);
        Some(text)
    }
}

impl fmt::Display for Timestamp {
    /// Formats as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            Some(text) => f.write_str(std::str::from_utf8(&text).expect("ASCII digits")),
            None => write!(f, "<out of range: {} µs>", self.0),
        }
    }
}

/// Year, month and day of the proleptic Gregorian calendar for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Some(text) => {
                serializer.serialize_str(std::str::from_utf8(&text).expect("ASCII digits"))
            }
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_normalise_to_utc_microseconds() {
        let ts = Timestamp::parse("2025-03-01T12:00:00.1234567+02:00").unwrap();
        assert_eq!(ts.to_string(), "2025-03-01T10:00:00.123456Z");
        assert_eq!(Timestamp::parse(&ts.to_string()).unwrap(), ts);
    }

    proptest::proptest! {
        #[test]
        fn timestamp_formatting_matches_chrono(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
            let ours = Timestamp::from_micros(micros).to_string();
            let chrono = chrono::DateTime::from_timestamp_micros(micros)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            proptest::prop_assert_eq!(ours, chrono);
        }
    }

    #[test]
    fn timestamps_without_offset_are_rejected() {
        assert!(Timestamp::parse("2025-03-01T12:00:00").is_err());
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
