//! Calendar dates without a date library: days since 1970-01-01 ↔ (year, month, day) in the
//! proleptic Gregorian calendar, by the usual era arithmetic (400-year cycles of 146 097 days,
//! years counted from March so that the leap day falls last).

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A calendar date between 0001-01-01 and 9999-12-31, written and parsed as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Days since 1970-01-01 (negative before).
    days: i64,
}

const MIN_DAYS: i64 = -719_162; // 0001-01-01
const MAX_DAYS: i64 = 2_932_896; // 9999-12-31

impl Date {
    /// The date `year-month-day`; an error names what is out of range.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Result<Date> {
        let bad = |reason: String| Error::InvalidDate {
            input: format!("{year:04}-{month:02}-{day:02}"),
            reason,
        };
        if !(1..=9999).contains(&year) {
            return Err(bad(format!("year {year} is outside 1..=9999")));
        }
        if !(1..=12).contains(&month) {
            return Err(bad(format!("month {month} is outside 1..=12")));
        }
        let last = days_in_month(year, month);
        if !(1..=last).contains(&day) {
            return Err(bad(format!(
                "day {day} is outside 1..={last} for {year:04}-{month:02}"
            )));
        }
        Ok(Date {
            days: days_from_civil(i64::from(year), month, day),
        })
    }

    /// The date `days` days after 1970-01-01 (before it when negative), if within range.
    pub fn from_days_since_epoch(days: i64) -> Option<Date> {
        (MIN_DAYS..=MAX_DAYS)
            .contains(&days)
            .then_some(Date { days })
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        self.days
    }

    /// The date `n` days later, if still within range.
    pub fn add_days(self, n: i64) -> Option<Date> {
        Date::from_days_since_epoch(self.days.checked_add(n)?)
    }

    /// (year, month 1–12, day 1–31).
    pub fn ymd(self) -> (i32, u32, u32) {
        let (y, m, d) = civil_from_days(self.days);
        (y as i32, m, d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Date {
    type Err = Error;

    /// Parse `YYYY-MM-DD` (exactly that shape: four, two and two digits).
    fn from_str(s: &str) -> Result<Date> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(Error::InvalidDate {
                input: s.to_string(),
                reason: "expected YYYY-MM-DD, e.g. 2019-10-01".into(),
            });
        }
        let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
        Date::from_ymd(num(0..4) as i32, num(5..7), num(8..10)).map_err(|e| match e {
            Error::InvalidDate { reason, .. } => Error::InvalidDate {
                input: s.to_string(),
                reason,
            },
            e => e,
        })
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count years from March: January and February belong to the previous year, so the leap
    // day is the last day of a "year" and month lengths follow a fixed 5-month pattern.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400; // 0..=399
    let month_from_march = i64::from((month + 9) % 12); // March = 0
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1; // 0..=365
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719 468 = days from 0000-03-01 to 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097; // 0..=146096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let d: Date = "1970-01-01".parse().unwrap();
        assert_eq!(d.days_since_epoch(), 0);
        let d: Date = "2019-10-01".parse().unwrap();
        assert_eq!(d.days_since_epoch(), 18_170);
        assert_eq!(d.to_string(), "2019-10-01");
        assert_eq!(d.add_days(31).unwrap().to_string(), "2019-11-01");
        assert_eq!(
            "2020-02-28"
                .parse::<Date>()
                .unwrap()
                .add_days(1)
                .unwrap()
                .to_string(),
            "2020-02-29"
        );
        assert_eq!(
            "2019-12-31"
                .parse::<Date>()
                .unwrap()
                .add_days(1)
                .unwrap()
                .to_string(),
            "2020-01-01"
        );
        assert_eq!(
            Date::from_days_since_epoch(MIN_DAYS).unwrap().to_string(),
            "0001-01-01"
        );
        assert_eq!(
            Date::from_days_since_epoch(MAX_DAYS).unwrap().to_string(),
            "9999-12-31"
        );
        assert!(Date::from_days_since_epoch(MAX_DAYS + 1).is_none());
    }

    #[test]
    fn every_day_roundtrips_and_follows_the_calendar() {
        // Walk the calendar day by day through four centuries (1600 and 2000 are leap years,
        // 1700/1800/1900/2100 are not) and compare with the closed-form conversion.
        let (mut y, mut m, mut d) = (1600, 1, 1);
        let first = days_from_civil(1600, 1, 1);
        for days in first..first + 146_097 + 40_000 {
            assert_eq!(civil_from_days(days), (i64::from(y), m, d));
            assert_eq!(days_from_civil(i64::from(y), m, d), days);
            d += 1;
            if d > days_in_month(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn bad_dates_say_why() {
        for (s, needle) in [
            ("2019-13-01", "month 13"),
            ("2019-02-29", "day 29"),
            ("2019-10-1", "YYYY-MM-DD"),
            ("20191001", "YYYY-MM-DD"),
            ("2019-1a-01", "YYYY-MM-DD"),
            ("0000-01-01", "year 0"),
        ] {
            let e = s.parse::<Date>().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(s), "{s}: {e}");
        }
        assert!("2000-02-29".parse::<Date>().is_ok());
        assert!("1900-02-29".parse::<Date>().is_err());
    }
}
