//! Periodic batch jobs: a cron expression in a time zone, and what to do
//! when a run is still going at the next firing.
//!
//! The expression has the five fields of cron(5): minute (0-59), hour
//! (0-23), day of month (1-31), month (1-12 or jan-dec) and day of week
//! (0-7 or sun-sat, 0 and 7 both Sunday), each `*`, a value, a range
//! `a-b`, a step `*/n`, `a-b/n` or `a/n`, or a list of those; or one of
//! `@yearly`, `@monthly`, `@weekly`, `@daily` and `@hourly`. As in cron,
//! when both day fields are restricted a day matching either one fires.
//! Times are read in `timezone` (an IANA name, default UTC, from a time
//! zone database built into Drover so every scheduler agrees): a firing
//! in a gap a clock change skips runs at the first time after the gap;
//! one in a repeated hour, once, at its first occurrence.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::{Deserialize, Serialize};

/// When a periodic batch job runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: String,
    #[serde(default = "utc", skip_serializing_if = "is_utc")]
    pub timezone: String,
    #[serde(default, skip_serializing_if = "Overlap::is_default")]
    pub overlap: Overlap,
}

fn utc() -> String {
    "UTC".into()
}

fn is_utc(tz: &str) -> bool {
    tz == "UTC"
}

/// What a firing does while the job's previous run has not ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Skip this firing; the previous run goes on (Kubernetes' `Forbid`,
    /// Nomad's `prohibit_overlap`).
    #[default]
    Skip,
    /// Stop the previous run's replicas and start a new run.
    Replace,
}

impl Overlap {
    pub fn is_default(&self) -> bool {
        *self == Overlap::Skip
    }

    pub fn word(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Replace => "replace",
        }
    }
}

/// How far back a missed firing is still run (once, however many were
/// missed): a week, as the search for it stays cheap.
pub const CATCH_UP_MS: i64 = 7 * 24 * 3_600_000;

/// The most steps the search for a firing takes: more than eight years of
/// days, so every expression that can fire is found from any time.
const MAX_STEPS: u32 = 100_000;

impl Schedule {
    /// The parsed expression and the time zone, or the field and why not.
    pub fn parts(&self) -> Result<(Cron, TimeZone), (&'static str, String)> {
        let cron = Cron::parse(&self.cron).map_err(|m| ("cron", m))?;
        let tz = TimeZone::get(&self.timezone).map_err(|_| {
            (
                "timezone",
                format!(
                    "{:?} is not a time zone (an IANA name such as Europe/Berlin or UTC)",
                    self.timezone
                ),
            )
        })?;
        Ok((cron, tz))
    }

    /// The first firing strictly after `after_ms` (Unix milliseconds).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let (cron, tz) = self.parts().ok()?;
        cron.next_after(&tz, after_ms)
    }

    /// The latest firing after `after_ms` and no later than `now_ms`, if
    /// one is due; firings missed more than [`CATCH_UP_MS`] ago are not.
    pub fn due(&self, after_ms: i64, now_ms: i64) -> Option<i64> {
        let (cron, tz) = self.parts().ok()?;
        let mut t = cron.next_after(&tz, after_ms.max(now_ms - CATCH_UP_MS))?;
        if t > now_ms {
            return None;
        }
        while let Some(n) = cron.next_after(&tz, t).filter(|n| *n <= now_ms) {
            t = n;
        }
        Some(t)
    }
}

/// A parsed cron expression: the values each field allows, as bit sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// The day fields began with `*`: unrestricted, for cron's rule that
    /// a day matching either restricted field fires.
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                    "{t:?} is not one of @yearly, @monthly, @weekly, @daily, @hourly"
                ))
            }
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?} has {} fields, not 5 (minute hour day-of-month month day-of-week)",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(fields[4], "day of week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            any_day: fields[2].starts_with('*'),
            any_weekday: fields[4].starts_with('*'),
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        let day = self.days & (1 << d.day()) != 0;
        let weekday = self.weekdays & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => weekday,
            (false, true) => day,
            (false, false) => day || weekday,
        }
    }

    /// The first firing strictly after `after_ms`, in `tz`.
    pub fn next_after(&self, tz: &TimeZone, after_ms: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(after_ms)
            .ok()?
            .to_zoned(tz.clone());
        let mut t = start
            .datetime()
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?;
        t = t.checked_add(Span::new().minutes(1)).ok()?;
        for _ in 0..MAX_STEPS {
            let next = if self.months & (1 << t.month()) == 0 {
                let first = t.date().first_of_month();
                first
                    .checked_add(Span::new().months(1))
                    .ok()?
                    .to_datetime(Time::midnight())
            } else if !self.day_matches(t.date()) {
                t.date().tomorrow().ok()?.to_datetime(Time::midnight())
            } else if self.hours & (1 << t.hour()) == 0 {
                let hour: DateTime = t.with().minute(0).build().ok()?;
                hour.checked_add(Span::new().hours(1)).ok()?
            } else if self.minutes & (1 << t.minute()) == 0 {
                t.checked_add(Span::new().minutes(1)).ok()?
            } else {
                let at = tz.to_zoned(t).ok()?.timestamp().as_millisecond();
                if at > after_ms {
                    return Some(at);
                }
                // A repeated hour's second time: already passed.
                t.checked_add(Span::new().minutes(1)).ok()?
            };
            t = next;
        }
        None
    }
}

/// One field's allowed values as a bit set.
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + min);
        }
        let n: u32 = s.parse().map_err(|_| {
            format!(
                "{what} field {text:?}: {s:?} is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })?;
        if n < min || n > max {
            return Err(format!(
                "{what} field {text:?}: {n} is not from {min} to {max}"
            ));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("{what} field {text:?}: step {s:?} is not a number above 0")
                })?;
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!(
                    "{what} field {text:?}: the range {range} runs backwards"
                ));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `a/n` runs from a to the end, as in cron.
            (a, if step > 1 { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn show(ms: i64) -> String {
        Timestamp::from_millisecond(ms).unwrap().to_string()
    }

    fn next(cron: &str, tz: &str, after: &str) -> String {
        let s = Schedule {
            cron: cron.into(),
            timezone: tz.into(),
            overlap: Overlap::Skip,
        };
        show(s.next_after(at(after)).expect("it fires"))
    }

    #[test]
    fn fires_at_the_next_matching_minute() {
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-03-01T10:07:30Z"),
            "2026-03-01T10:15:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-03-01T10:15:00Z"),
            "2026-03-01T10:30:00Z"
        );
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-03-01T10:00:00Z"),
            "2026-03-02T03:00:00Z"
        );
        assert_eq!(
            next("@monthly", "UTC", "2026-12-15T00:00:00Z"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("30 9 * * mon-fri", "UTC", "2026-12-04T10:00:00Z"),
            "2026-12-07T09:30:00Z"
        );
        assert_eq!(
            next("0 0 29 feb *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        // Both day fields restricted: either one.
        assert_eq!(
            next("0 0 13 * fri", "UTC", "2026-12-01T00:00:00Z"),
            "2026-12-04T00:00:00Z"
        );
        assert_eq!(
            next("0 12 * * 7", "UTC", "2026-12-01T00:00:00Z"),
            "2026-12-06T12:00:00Z"
        );
    }

    #[test]
    fn reads_times_in_its_time_zone_across_clock_changes() {
        // 08:00 in Berlin is 07:00 UTC in winter, 06:00 in summer.
        assert_eq!(
            next("0 8 * * *", "Europe/Berlin", "2026-01-10T12:00:00Z"),
            "2026-01-11T07:00:00Z"
        );
        assert_eq!(
            next("0 8 * * *", "Europe/Berlin", "2026-07-10T12:00:00Z"),
            "2026-07-11T06:00:00Z"
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: it runs at 03:00 local.
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"),
            "2026-03-29T01:30:00Z"
        );
        // 02:30 happens twice on 2026-10-25: it runs once.
        let first = next("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z");
        assert_eq!(first, "2026-10-25T00:30:00Z");
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", &first),
            "2026-10-26T01:30:00Z"
        );
    }

    #[test]
    fn a_due_firing_is_the_latest_missed_one() {
        let s = Schedule {
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            overlap: Overlap::Skip,
        };
        let last = at("2026-03-01T10:00:00Z");
        assert_eq!(s.due(last, at("2026-03-01T10:59:59Z")), None);
        assert_eq!(
            s.due(last, at("2026-03-01T11:00:00Z")).map(show).unwrap(),
            "2026-03-01T11:00:00Z"
        );
        assert_eq!(
            s.due(last, at("2026-03-01T15:20:00Z")).map(show).unwrap(),
            "2026-03-01T15:00:00Z"
        );
    }

    #[test]
    fn bad_expressions_say_which_field_and_why() {
        let err = |c: &str| Cron::parse(c).unwrap_err();
        assert_eq!(
            err("* * * *"),
            "\"* * * *\" has 4 fields, not 5 (minute hour day-of-month month day-of-week)"
        );
        assert_eq!(
            err("61 * * * *"),
            "minute field \"61\": 61 is not from 0 to 59"
        );
        assert_eq!(
            err("* * * smarch *"),
            "month field \"smarch\": \"smarch\" is not a number or a name"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "minute field \"*/0\": step \"0\" is not a number above 0"
        );
        assert_eq!(
            err("* 5-2 * * *"),
            "hour field \"5-2\": the range 5-2 runs backwards"
        );
        assert_eq!(
            err("@often"),
            "\"@often\" is not one of @yearly, @monthly, @weekly, @daily, @hourly"
        );
        let never = Schedule {
            cron: "0 0 31 feb *".into(),
            timezone: "UTC".into(),
            overlap: Overlap::Skip,
        };
        assert_eq!(never.next_after(0), None);
        let tz = Schedule {
            cron: "@daily".into(),
            timezone: "Mars/Olympus".into(),
            overlap: Overlap::Skip,
        };
        assert_eq!(tz.parts().unwrap_err().0, "timezone");
    }

    #[test]
    fn names_and_lists_and_steps() {
        let c = Cron::parse("0,30 9-17/4 1,15 jan,JUL sun").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 30);
        assert_eq!(c.hours, 1 << 9 | 1 << 13 | 1 << 17);
        assert_eq!(c.months, 1 << 1 | 1 << 7);
        assert_eq!(c.weekdays, 1);
        assert_eq!(
            Cron::parse("5/20 * * * *").unwrap().minutes,
            1 << 5 | 1 << 25 | 1 << 45
        );
    }
}
