//! The CronJob controller's clock: real time, or for tests real time shifted and sped up
//! (`--cronjob-clock-offset-seconds`, `--cronjob-clock-speed`) — the schedule code is the
//! same either way.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

pub struct Clock {
    started_real: DateTime<Utc>,
    started: Instant,
    offset_seconds: i64,
    speed: f64,
}

impl Clock {
    pub fn new(offset_seconds: i64, speed: f64) -> Self {
        Clock {
            started_real: Utc::now(),
            started: Instant::now(),
            offset_seconds,
            speed: if speed > 0.0 { speed } else { 1.0 },
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        if self.offset_seconds == 0 && self.speed == 1.0 {
            return Utc::now();
        }
        let run = self.started.elapsed().as_secs_f64() * self.speed;
        self.started_real
            + chrono::Duration::seconds(self.offset_seconds)
            + chrono::Duration::milliseconds((run * 1000.0) as i64)
    }

    /// How long real time takes to pass `d` on this clock.
    pub fn real(&self, d: chrono::Duration) -> Duration {
        let ms = d.num_milliseconds().max(0) as f64 / self.speed;
        Duration::from_millis(ms as u64)
    }
}
