//! Cron schedules in a CronJob's time zone (croner parses and iterates, chrono-tz names the
//! zones) and upstream's reading of them: the most recent missed start, how many were
//! missed, and when the next one is due.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// A parsed schedule and the zone its fields are read in.
pub struct Schedule {
    kind: Kind,
    tz: Tz,
}

enum Kind {
    Cron(Box<Cron>),
    /// `@every <duration>`: a constant delay, whole seconds, at least one (robfig's).
    Every(chrono::Duration),
}

/// How many starts were missed since the last one (upstream's missedSchedules).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Missed {
    None,
    Few,
    /// More than 100: a Warning `TooManyMissedTimes`, and only the latest runs.
    Many,
}

/// A zone name as upstream's `time.LoadLocation`: empty is UTC; unknown names are refused.
pub fn zone(name: Option<&str>) -> Result<Tz, String> {
    match name {
        None | Some("") | Some("UTC") => Ok(Tz::UTC),
        Some(n) => n
            .parse::<Tz>()
            .map_err(|_| format!("unknown time zone {n}")),
    }
}

impl Schedule {
    /// Parse a standard 5-field schedule or an `@hourly`-style macro, read in `time_zone`.
    /// A `TZ=`/`CRON_TZ=` prefix (refused by the API server today, kept by old objects)
    /// names the zone as upstream's parser reads it.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        let mut text = schedule.trim();
        let mut tz = zone(time_zone)?;
        for prefix in ["TZ=", "CRON_TZ="] {
            if let Some(rest) = text.strip_prefix(prefix) {
                let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                tz = zone(Some(name))?;
                text = rest.trim();
            }
        }
        if let Some(d) = text.strip_prefix("@every ") {
            let ms = go_duration_ms(d.trim())
                .ok_or_else(|| format!("failed to parse duration {text}"))?;
            let secs = (ms / 1000).max(1);
            return Ok(Schedule {
                kind: Kind::Every(chrono::Duration::seconds(secs)),
                tz,
            });
        }
        // robfig reads `?` as `*` in every field and knows `@midnight`; croner does not.
        let text = if text.eq_ignore_ascii_case("@midnight") {
            "@daily".to_string()
        } else {
            text.replace('?', "*")
        };
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(&text).map_err(|e| e.to_string())?;
        Ok(Schedule {
            kind: Kind::Cron(Box::new(cron)),
            tz,
        })
    }

    /// The first start strictly after `t` (robfig/cron's `Next`).
    pub fn next(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron(cron) => {
                let local = t.with_timezone(&self.tz);
                cron.find_next_occurrence(&local, false)
                    .ok()
                    .map(|n| n.with_timezone(&Utc))
            }
            Kind::Every(d) => {
                let whole = DateTime::from_timestamp(t.timestamp(), 0)?;
                Some(whole + *d)
            }
        }
    }

    /// `t` in the schedule's zone, as the scheduled-timestamp annotation writes it.
    pub fn rfc3339(&self, t: DateTime<Utc>) -> String {
        self.tz
            .from_utc_datetime(&t.naive_utc())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

/// A Go duration (`1h30m`, `90s`, `500ms`) in milliseconds.
fn go_duration_ms(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_len].parse().ok()?;
        rest = &rest[n_len..];
        let u_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        total += n * match &rest[..u_len] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            _ => return None,
        };
        rest = &rest[u_len..];
    }
    Some(total as i64)
}

/// What `most_recent` finds: where it looked from, the latest due start, how many missed.
pub type Recent = (DateTime<Utc>, Option<DateTime<Utc>>, Missed);

/// Upstream's mostRecentScheduleTime: from `earliest` (the last start, else creation; with
/// `deadline_seconds`, no earlier than now − deadline), the latest start at or before
/// `now`, and how many were missed. Errors when two starts are under a second apart.
pub fn most_recent(
    sched: &Schedule,
    earliest: DateTime<Utc>,
    now: DateTime<Utc>,
    deadline_seconds: Option<i64>,
) -> Result<Recent, String> {
    let mut earliest = earliest;
    if let Some(d) = deadline_seconds {
        let limit = now - chrono::Duration::seconds(d);
        if limit > earliest {
            earliest = limit;
        }
    }
    let Some(t1) = sched.next(earliest) else {
        return Ok((earliest, None, Missed::None));
    };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = sched.next(t1) else {
        return Ok((earliest, Some(t1), Missed::None));
    };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = (t2 - t1).num_seconds();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = (now - t1).num_seconds();
    let missed = elapsed / between + 1;
    // Start one interval before the estimate and walk forward, as upstream, so irregular
    // schedules (`30 6-16/4 * * 1-5`) land on a real start.
    let mut t = t1 + chrono::Duration::seconds((missed - 2).max(0) * between);
    let mut latest = None;
    while let Some(n) = sched.next(t) {
        if n > now {
            break;
        }
        latest = Some(n);
        t = n;
    }
    let kind = if missed > 100 {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, latest, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn macros_zones_and_next_times() {
        let s = Schedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            s.next(at("2026-01-01T00:03:10Z")),
            Some(at("2026-01-01T00:05:00Z"))
        );
        assert_eq!(
            s.next(at("2026-01-01T00:05:00Z")),
            Some(at("2026-01-01T00:10:00Z"))
        );
        let h = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            h.next(at("2026-01-01T00:03:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
        // 09:00 in New York is 14:00 UTC in winter.
        let ny = Schedule::parse("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            ny.next(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T14:00:00Z"))
        );
        assert_eq!(
            ny.rfc3339(at("2026-01-01T14:00:00Z")),
            "2026-01-01T09:00:00-05:00"
        );
        assert!(Schedule::parse("0 9 * * *", Some("Mars/Olympus")).is_err());
        assert_eq!(
            zone(Some("Bad/Zone")).unwrap_err(),
            "unknown time zone Bad/Zone"
        );
        assert!(Schedule::parse("not a schedule", None).is_err());
        let every = Schedule::parse("@every 90s", None).unwrap();
        assert_eq!(
            every.next(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T00:01:30Z"))
        );
        let q = Schedule::parse("0 0 ? * ?", None).unwrap();
        assert_eq!(
            q.next(at("2026-01-01T00:03:00Z")),
            Some(at("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn most_recent_counts_missed_starts() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let created = at("2026-01-01T00:00:30Z");
        let (_, t, m) = most_recent(&s, created, at("2026-01-01T00:00:50Z"), None).unwrap();
        assert_eq!((t, m), (None, Missed::None));
        let (_, t, m) = most_recent(&s, created, at("2026-01-01T00:01:10Z"), None).unwrap();
        assert_eq!((t, m), (Some(at("2026-01-01T00:01:00Z")), Missed::None));
        let (_, t, m) = most_recent(&s, created, at("2026-01-01T00:05:10Z"), None).unwrap();
        assert_eq!((t, m), (Some(at("2026-01-01T00:05:00Z")), Missed::Few));
        let (_, t, m) = most_recent(&s, created, at("2026-01-01T03:00:10Z"), None).unwrap();
        assert_eq!((t, m), (Some(at("2026-01-01T03:00:00Z")), Missed::Many));
        // A starting deadline of 200 s leaves only the last three minutes to look at.
        let (_, t, m) = most_recent(&s, created, at("2026-01-01T03:00:10Z"), Some(200)).unwrap();
        assert_eq!((t, m), (Some(at("2026-01-01T03:00:00Z")), Missed::Few));
    }
}
