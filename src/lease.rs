//! The lease clock: when to renew, and when the command must be stopped because the lease could not be kept.
//!
//! Pure timing on `Instant`s, no I/O: the supervisor feeds it what happened and asks it what is next.
//!
//! The lease end counts from when a renewal was *sent* (the server may have applied it at any later moment,
//! so the earliest send is the safe bound). If renewals fail, the command gets SIGTERM at
//! `lease end - grace - margin` and SIGKILL at `lease end - margin`, so it is dead before anyone else may take
//! the lock (clocks agreeing).

use std::time::{Duration, Instant};

/// The state of our lease.
#[derive(Debug, Clone)]
pub struct Lease {
    length: Duration,
    /// Grace between SIGTERM and SIGKILL when the lock is lost.
    grace: Duration,
    /// The last confirmed lease end.
    end: Instant,
    next_renewal: Instant,
    in_flight: bool,
}

/// What the lease needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing before the given instant.
    Wait(Instant),
    /// Send a renewal now.
    Renew,
    /// The lease is about to end unconfirmed: stop the command (SIGTERM now, SIGKILL at the instant given).
    Stop(Instant),
}

impl Lease {
    /// A lease of `length` whose acquire was sent at `sent`; `kill_after` is the grace a stopped command gets
    /// (at most a third of the lease).
    pub fn new(sent: Instant, length: Duration, kill_after: Duration) -> Lease {
        Lease {
            length,
            grace: kill_after.min(length / 3),
            end: sent + length,
            next_renewal: sent + length / 3,
            in_flight: false,
        }
    }

    /// Safety margin before the lease end by which the command must be dead.
    pub fn margin(&self) -> Duration {
        (self.length / 10).min(Duration::from_secs(1))
    }

    /// The lease length.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// The grace between SIGTERM and SIGKILL when the lock is lost.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// When the command must get SIGTERM if the lease is not renewed.
    pub fn stop_at(&self) -> Instant {
        self.end.checked_sub(self.grace + self.margin()).unwrap_or(self.end)
    }

    /// When the command must get SIGKILL if the lease is not renewed.
    pub fn kill_at(&self) -> Instant {
        self.end.checked_sub(self.margin()).unwrap_or(self.end)
    }

    /// Whether a renewal is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// What is due at `now`.
    pub fn due(&self, now: Instant) -> Due {
        let stop_at = self.stop_at();
        if now >= stop_at {
            return Due::Stop(self.kill_at().max(now));
        }
        if self.in_flight {
            return Due::Wait(stop_at);
        }
        if now >= self.next_renewal {
            return Due::Renew;
        }
        Due::Wait(self.next_renewal.min(stop_at))
    }

    /// A renewal was sent.
    pub fn sent(&mut self) {
        self.in_flight = true;
    }

    /// The renewal sent at `sent` was confirmed.
    pub fn renewed(&mut self, sent: Instant) {
        self.in_flight = false;
        self.end = self.end.max(sent + self.length);
        self.next_renewal = sent + self.length / 3;
    }

    /// The renewal failed at `now`: retry soon (every second, or a third of a short lease), and at the latest
    /// halfway to the SIGTERM instant (not sooner than 100 ms), so a short lease survives one failed renewal: with
    /// `-e 3s` the first renewal comes 1 s in and the command must be stopped 1.7 s in.
    pub fn failed(&mut self, now: Instant) {
        self.in_flight = false;
        let halfway = (self.stop_at().saturating_duration_since(now) / 2).max(Duration::from_millis(100));
        self.next_renewal = now + (self.length / 3).min(Duration::from_secs(1)).min(halfway);
    }

    /// After lock-exec was stopped (job control), the lease may have lapsed while nothing ran: renew at once,
    /// and count the lease from `now` so the renewal has its full time to be confirmed. The command stays
    /// stopped until it is.
    pub fn resume(&mut self, now: Instant) {
        self.in_flight = false;
        self.next_renewal = now;
        self.end = self.end.max(now + self.length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn renewals_come_every_third_of_the_lease() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, 30 * SECOND, 10 * SECOND);
        assert_eq!(lease.due(t0), Due::Wait(t0 + 10 * SECOND));
        assert_eq!(lease.due(t0 + 10 * SECOND), Due::Renew);
        lease.sent();
        assert_eq!(lease.due(t0 + 11 * SECOND), Due::Wait(lease.stop_at()));
        lease.renewed(t0 + 10 * SECOND);
        assert_eq!(lease.due(t0 + 11 * SECOND), Due::Wait(t0 + 20 * SECOND));
    }

    #[test]
    fn failing_renewals_stop_the_command_before_the_lease_ends() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, 30 * SECOND, 10 * SECOND);
        // grace 10 s, margin 1 s: SIGTERM at 19 s, SIGKILL at 29 s.
        lease.failed(t0 + 10 * SECOND);
        assert_eq!(lease.due(t0 + 10 * SECOND), Due::Wait(t0 + 11 * SECOND));
        assert_eq!(lease.due(t0 + 19 * SECOND), Due::Stop(t0 + 29 * SECOND));
    }

    #[test]
    fn a_failed_renewal_of_a_short_lease_is_retried_before_the_command_must_stop() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, 3 * SECOND, 10 * SECOND);
        // grace 1 s, margin 0.3 s: SIGTERM at 1.7 s. The renewal sent at 1 s fails at 1.1 s.
        lease.sent();
        lease.failed(t0 + Duration::from_millis(1100));
        assert_eq!(lease.due(t0 + Duration::from_millis(1100)), Due::Wait(t0 + Duration::from_millis(1400)));
        assert_eq!(lease.due(t0 + Duration::from_millis(1400)), Due::Renew);
        // Close to the stop, retries stay at least 100 ms apart.
        lease.sent();
        lease.failed(t0 + Duration::from_millis(1650));
        assert_eq!(lease.due(t0 + Duration::from_millis(1650)), Due::Wait(t0 + Duration::from_millis(1700)));
        assert_eq!(lease.due(t0 + Duration::from_millis(1700)), Due::Stop(t0 + Duration::from_millis(2700)));
    }

    #[test]
    fn grace_and_margin_fit_short_leases() {
        let t0 = Instant::now();
        let lease = Lease::new(t0, 3 * SECOND, 10 * SECOND);
        assert_eq!(lease.grace(), SECOND);
        assert_eq!(lease.margin(), Duration::from_millis(300));
        assert_eq!(lease.stop_at(), t0 + Duration::from_millis(1700));
    }

    #[test]
    fn a_resumed_lease_renews_at_once_and_is_not_stopped_for_the_time_it_was_stopped() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, 30 * SECOND, 10 * SECOND);
        let later = t0 + 600 * SECOND;
        lease.resume(later);
        assert_eq!(lease.due(later), Due::Renew);
        lease.sent();
        assert!(matches!(lease.due(later + SECOND), Due::Wait(_)));
    }

    #[test]
    fn a_late_confirmation_never_shortens_the_lease() {
        let t0 = Instant::now();
        let mut lease = Lease::new(t0, 30 * SECOND, 10 * SECOND);
        lease.resume(t0 + 100 * SECOND);
        lease.renewed(t0 + 10 * SECOND);
        assert!(lease.stop_at() > t0 + 100 * SECOND);
    }
}
