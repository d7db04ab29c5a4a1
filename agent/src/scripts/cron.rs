//! Coder's cron schedules for periodic `coder_script`s: six fields, seconds
//! first (`second minute hour day-of-month month day-of-week`), each `*` (or
//! `?`), a number, a range `a-b`, a step `*/n`, `a/n` or `a-b/n`, or a list of
//! those; months and weekdays also by their English three-letter names. As in
//! cron, when both day fields are restricted a day matching either runs.
//!
//! Written here rather than taken from a crate: it is small, and the agent's
//! build stays offline-friendly. Times are the agent's local wall clock.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// Why a schedule did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cron schedule {schedule:?}: {reason}")]
pub struct CronError {
    schedule: String,
    reason: String,
}

const MONTHS: &[&str] =
    &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The set bits (`min..=max`) one field allows; `names[i]` stands for `min + i`.
fn field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(min + i as u32);
        }
        let n: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        // Sunday is 0 or 7.
        let n = if max == 6 && n == 7 { 0 } else { n };
        if n < min || n > max {
            return Err(format!("{n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("bad step {s:?}"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = match range {
            "*" | "?" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `a/n` runs from a to the end.
                None if step > 1 => (value(r)?, max),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if lo > hi {
            return Err(format!("the range {lo}-{hi} is empty"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl std::str::FromStr for Schedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, CronError> {
        let err = |reason: String| CronError { schedule: s.to_owned(), reason };
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 6 {
            return Err(err(format!("{} fields; a schedule has 6, seconds first", f.len())));
        }
        let restricted = |t: &str| t != "*" && t != "?";
        Ok(Schedule {
            seconds: field(f[0], 0, 59, &[]).map_err(err)?,
            minutes: field(f[1], 0, 59, &[]).map_err(err)?,
            hours: field(f[2], 0, 23, &[]).map_err(err)? as u32,
            days: field(f[3], 1, 31, &[]).map_err(err)? as u32,
            months: field(f[4], 1, 12, MONTHS).map_err(err)? as u16,
            weekdays: field(f[5], 0, 6, WEEKDAYS).map_err(err)? as u8,
            days_restricted: restricted(f[3]),
            weekdays_restricted: restricted(f[5]),
        })
    }
}

impl Schedule {
    fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.days & (1 << d.day()) != 0;
        let dow = self.weekdays & (1 << d.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first time strictly after `after` (whole seconds) the schedule
    /// fires; `None` if it never does within a few years (e.g. `31 2`).
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.with_nanosecond(0)? + Duration::seconds(1);
        let limit = after + Duration::days(366 * 5);
        while t <= limit {
            if self.months & (1 << t.month()) == 0 {
                let (y, m) =
                    if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
            } else if !self.day_matches(t.date()) {
                t = (t.date() + Duration::days(1)).and_hms_opt(0, 0, 0)?;
            } else if self.hours & (1 << t.hour()) == 0 {
                t = t.with_minute(0)?.with_second(0)? + Duration::hours(1);
            } else if self.minutes & (1 << t.minute()) == 0 {
                t = t.with_second(0)? + Duration::minutes(1);
            } else if self.seconds & (1 << t.second()) == 0 {
                t += Duration::seconds(1);
            } else {
                return Some(t);
            }
        }
        None
    }

    /// How long from now (local time) until the next run.
    pub fn until_next(&self) -> Option<std::time::Duration> {
        let now = chrono::Local::now().naive_local();
        let next = self.next_after(now)?;
        (next - now).to_std().ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        let s: Schedule = schedule.parse().unwrap();
        s.next_after(at(after)).unwrap().format("%Y-%m-%d %H:%M:%S").to_string()
    }

    #[test]
    fn next_runs() {
        assert_eq!(next("* * * * * *", "2026-01-01 00:00:00"), "2026-01-01 00:00:01");
        assert_eq!(next("*/5 * * * * *", "2026-01-01 00:00:03"), "2026-01-01 00:00:05");
        assert_eq!(next("0 */15 * * * *", "2026-01-01 10:50:00"), "2026-01-01 11:00:00");
        assert_eq!(next("30 30 9 * * mon-fri", "2026-12-04 10:00:00"), "2026-12-07 09:30:30");
        assert_eq!(next("0 0 0 29 feb *", "2026-03-01 00:00:00"), "2028-02-29 00:00:00");
        assert_eq!(
            next("0 0 12 1 * 0", "2026-12-01 13:00:00"),
            "2026-12-06 12:00:00",
            "either day field"
        );
        assert_eq!(
            next("0 0 0 * * 7", "2026-12-07 00:00:00"),
            "2026-12-13 00:00:00",
            "7 is sunday"
        );
        assert_eq!(next("10-20/5 * * * * *", "2026-01-01 00:00:16"), "2026-01-01 00:00:20");
    }

    #[test]
    fn bad_schedules() {
        for bad in ["* * * * *", "60 * * * * *", "*/0 * * * * *", "5-1 * * * * *", "x * * * * *"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        let never: Schedule = "0 0 0 31 feb *".parse().unwrap();
        assert_eq!(never.next_after(at("2026-01-01 00:00:00")), None);
    }
}
