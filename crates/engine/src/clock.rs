//! The run's clock: tokio time only (so that a simulation runs on virtual time), with a wall-clock
//! anchor taken once for the journal's timestamps and the Lease.

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::time::Instant;

/// Seconds since the run started, and the date they correspond to.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall0: DateTime<Utc>,
    t0: Instant,
}

impl Clock {
    /// Anchors the clock now.
    pub fn start() -> Self {
        Clock {
            wall0: Utc::now(),
            t0: Instant::now(),
        }
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// The current date on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        let d = chrono::Duration::from_std(self.t0.elapsed()).unwrap_or_default();
        self.wall0 + d
    }

    /// [`Clock::now`] in RFC 3339 with milliseconds.
    pub fn rfc3339(&self) -> String {
        self.now().to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}
