//! Autostart schedules: parsing `9:30 Mon-Fri Europe/Dublin` (or Coder's
//! cron form, `CRON_TZ=Europe/Dublin 30 9 * * 1-5`) and finding the next
//! start after a given instant. Pure: no clock, no I/O.
//!
//! A schedule is a minute of the day, a set of weekdays (default: every
//! day) and an IANA time zone (default: UTC). A local time that a DST change
//! skips starts an hour later; one that occurs twice starts at the first.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A parsed autostart schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    hour: u32,
    minute: u32,
    /// Bit `n` set: weekday `n` (Monday = 0).
    days: u8,
    tz: Tz,
}

const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const EVERY_DAY: u8 = 0x7f;

/// Why a schedule did not parse; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; write a schedule like \"9:30 Mon-Fri Europe/Dublin\" (time, optional days, optional time zone)")]
pub struct ScheduleError(String);

fn err(s: impl Into<String>) -> ScheduleError {
    ScheduleError(s.into())
}

const FULL_DAY_NAMES: [&str; 7] =
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// `Mon` or `Monday`, any case.
fn weekday(s: &str) -> Option<u32> {
    let is = |i: &usize| {
        DAY_NAMES[*i].eq_ignore_ascii_case(s) || FULL_DAY_NAMES[*i].eq_ignore_ascii_case(s)
    };
    (0..7).find(is).map(|i| i as u32)
}

/// `Mon-Fri`, `Sat,Sun`, `Mon,Wed-Fri`, `daily`, `*`.
fn parse_days(s: &str, cron: bool) -> Result<u8, ScheduleError> {
    if s == "*" || s.eq_ignore_ascii_case("daily") {
        return Ok(EVERY_DAY);
    }
    let day = |d: &str| -> Result<u32, ScheduleError> {
        if cron {
            // Cron numbers days from Sunday = 0 (7 also Sunday).
            let n: u32 = d.parse().map_err(|_| err(format!("{d:?} is not a day number")))?;
            if n > 7 {
                return Err(err(format!("day {n} is out of range 0-7")));
            }
            Ok((n + 6) % 7)
        } else {
            weekday(d).ok_or_else(|| err(format!("{d:?} is not a day")))
        }
    };
    let mut days = 0u8;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    days |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << day(part)?,
        }
    }
    Ok(days)
}

fn parse_tz(s: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(s).map_err(|_| err(format!("{s:?} is not an IANA time zone")))
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let fields: Vec<&str> = s.split_whitespace().collect();
        if let Some(tz) = fields.first().and_then(|f| f.strip_prefix("CRON_TZ=")) {
            return Self::parse_cron(parse_tz(tz)?, &fields[1..]);
        }
        if fields.len() == 5 {
            return Self::parse_cron(Tz::UTC, &fields);
        }
        let (time, rest) = fields.split_first().ok_or_else(|| err("the schedule is empty"))?;
        let t = NaiveTime::parse_from_str(time, "%H:%M")
            .map_err(|_| err(format!("{time:?} is not a time of day (HH:MM, 24-hour)")))?;
        let (days, tz) = match rest {
            [] => (EVERY_DAY, Tz::UTC),
            [one] if one.contains('/') || *one == "UTC" => (EVERY_DAY, parse_tz(one)?),
            [one] => (parse_days(one, false)?, Tz::UTC),
            [d, z] => (parse_days(d, false)?, parse_tz(z)?),
            _ => return Err(err(format!("{s:?} has too many fields"))),
        };
        Ok(Schedule { hour: t.hour(), minute: t.minute(), days, tz })
    }
}

impl Schedule {
    /// `M H * * DOW`: one minute and one hour, any day of month and month.
    fn parse_cron(tz: Tz, f: &[&str]) -> Result<Schedule, ScheduleError> {
        let [minute, hour, "*", "*", dow] = f else {
            return Err(err("a cron schedule must be \"M H * * DAYS\""));
        };
        let minute: u32 =
            minute.parse().ok().filter(|m| *m < 60).ok_or_else(|| err("bad minute"))?;
        let hour: u32 = hour.parse().ok().filter(|h| *h < 24).ok_or_else(|| err("bad hour"))?;
        Ok(Schedule { hour, minute, days: parse_days(dow, true)?, tz })
    }

    /// The first start strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        let start = after.with_timezone(&self.tz).date_naive();
        // Eight days always contain the next matching weekday.
        for offset in 0..8 {
            let date = start + Duration::days(offset);
            if self.days & (1 << date.weekday().num_days_from_monday()) == 0 {
                continue;
            }
            let Some(local) = date.and_hms_opt(self.hour, self.minute, 0) else { continue };
            let at = match self.tz.from_local_datetime(&local) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                // Skipped by a DST change: an hour later exists.
                LocalResult::None => {
                    match self.tz.from_local_datetime(&(local + Duration::hours(1))) {
                        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t,
                        LocalResult::None => continue,
                    }
                }
            };
            let at = at.with_timezone(&Utc);
            if at > after {
                return at;
            }
        }
        // Unreachable for a schedule with at least one day; a week on is safe.
        after + Duration::days(7)
    }
}

impl fmt::Display for Schedule {
    /// The canonical form: `9:30 Mon-Fri Europe/Dublin`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{:02} ", self.hour, self.minute)?;
        if self.days == EVERY_DAY {
            f.write_str("daily")?;
        } else {
            let mut parts = Vec::new();
            let mut d = 0;
            while d < 7 {
                if self.days & (1 << d) == 0 {
                    d += 1;
                    continue;
                }
                let first = d;
                while d + 1 < 7 && self.days & (1 << (d + 1)) != 0 {
                    d += 1;
                }
                parts.push(match d - first {
                    0 => DAY_NAMES[first].to_owned(),
                    1 => format!("{},{}", DAY_NAMES[first], DAY_NAMES[d]),
                    _ => format!("{}-{}", DAY_NAMES[first], DAY_NAMES[d]),
                });
                d += 1;
            }
            f.write_str(&parts.join(","))?;
        }
        write!(f, " {}", self.tz.name())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_the_human_and_the_cron_form_alike() {
        let a: Schedule = "9:30 Mon-Fri Europe/Dublin".parse().unwrap();
        let b: Schedule = "CRON_TZ=Europe/Dublin 30 9 * * 1-5".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "9:30 Mon-Fri Europe/Dublin");
        assert_eq!("07:05".parse::<Schedule>().unwrap().to_string(), "7:05 daily UTC");
        let weekend: Schedule = "18:00 Sat,Sun".parse().unwrap();
        assert_eq!(weekend.to_string(), "18:00 Sat,Sun UTC");
        assert_eq!(
            "8:00 Fri-Mon UTC".parse::<Schedule>().unwrap().to_string(),
            "8:00 Mon,Fri-Sun UTC"
        );
        for bad in [
            "",
            "25:00",
            "9:30 Someday",
            "9:30 Mon Mars/Olympus",
            "9:30 Mon UTC extra",
            "CRON_TZ=UTC 30 9 1 * *",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn next_start_follows_days_and_the_time_zone() {
        let s: Schedule = "9:30 Mon-Fri Europe/Dublin".parse().unwrap();
        // Friday 2026-12-04 10:00 UTC (Dublin is UTC in winter): next is Monday.
        assert_eq!(s.next_after(utc("2026-12-04T10:00:00Z")), utc("2026-12-07T09:30:00Z"));
        // Before the time on a weekday: the same day.
        assert_eq!(s.next_after(utc("2026-12-07T09:29:59Z")), utc("2026-12-07T09:30:00Z"));
        // Exactly at it: strictly after, so the next day.
        assert_eq!(s.next_after(utc("2026-12-07T09:30:00Z")), utc("2026-12-08T09:30:00Z"));
        // Summer time: 9:30 in Dublin is 8:30 UTC.
        assert_eq!(s.next_after(utc("2026-07-01T00:00:00Z")), utc("2026-07-01T08:30:00Z"));
        // A time the spring-forward change skips starts an hour later.
        let skipped: Schedule = "1:30 daily Europe/Dublin".parse().unwrap();
        assert_eq!(skipped.next_after(utc("2026-03-29T00:00:00Z")), utc("2026-03-29T01:30:00Z"));
    }
}
