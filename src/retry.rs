//! Time: the clock, the run's one deadline, and the retry loop with exponential backoff and jitter.
//!
//! Schedule (FACTS §5.4–§5.5): Microsoft recommends exponential backoff with jitter for IMDS
//! (~0, 2, 6, 14, 30 s, max 60 s); 410 means "available within 70 s", so nothing here gives up on a
//! transient answer before the deadline does. We wait `BACKOFF_BASE × 2^(n-1)` capped at
//! `BACKOFF_CAP`, with "equal jitter" (half fixed, half random) so a fleet booting from one image
//! does not retry in lock-step.
//!
//! "IMDS is updating" (404/410) is polled instead (`Attempt::Poll`): every 1–2 s, so the token
//! comes within about 2 s of IMDS being back rather than up to a 30 s backoff step later. IMDS is
//! per host, so one VM polling at under 1 request/s is far below its 20 requests/s identity limit.
//!
//! A server's `Retry-After` is a floor. On top of it comes a random share of a window that grows
//! with each consecutive failure: `RA + U^0.7 × min(2·RA·1.5^(n-1), BACKOFF_CAP)`. Why this shape
//! (measured with `make fleet`: N VMs at once against an IMDS that serves 20 token requests/s and
//! answers the rest 429 `Retry-After: 1`; see BENCHMARKS.md):
//! - Retrying right after `Retry-After` re-synchronises the fleet: every second N−20 clients come
//!   back together and 20 get through, ~N/40 requests per enrollment (13 at N = 500).
//! - A client cannot know N; all it learns is how many times in a row it was throttled. The first
//!   retry must land within ~3 s, or a small fleet (N = 50, ideal 2.5 s) overshoots 1.5× its ideal
//!   wall time; a large fleet then spends that first retry mostly on 429s. So no schedule meets
//!   "wall ≤ 1.5× ideal" at N = 50 and "≤ 3 requests per enrollment" at N = 500 at once (the
//!   bound: with ~all first retries inside 3 s, at N = 500 ~430 of 480 fail twice, ≥ 3.6
//!   requests each). The window starts at 2·RA and grows 1.5× per failure: with simulated
//!   fleets it keeps the wall time ≤ 1.5× ideal at N = 50, 200, 500 and the requests at
//!   1.6 / 2.9 / 4.4 per enrollment (the previous "RA + U × max(RA, backoff/2)" gave
//!   1.8 / 3.6 / 5.3 with 1.56× wall at N = 50). `U^0.7` leans the share slightly late in the
//!   window, where the server has room once the first retries are served.
//!
//! `ARC_ENROLL_TIME_SCALE` (tests only) runs the clock faster: with `100`, a logged 8 s wait sleeps
//! 80 ms and the 15 min deadline passes in 9 s of real time. Every decision sees the scaled
//! ("virtual") time, so logs and policies read exactly as in production.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::timefmt::human;

pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// `Attempt::Poll` for "IMDS is updating" (404/410): wait between half of this and all of it.
pub const IMDS_UPDATING_POLL: Duration = Duration::from_secs(2);
/// After a `Retry-After`, the random share's window starts at this many times the server's value
/// and grows by `RETRY_AFTER_GROWTH` per consecutive failure (see the module comment).
const RETRY_AFTER_WINDOW: f64 = 2.0;
const RETRY_AFTER_GROWTH: f64 = 1.5;
/// The share is `U^RETRY_AFTER_SKEW` of the window (U uniform in [0, 1)).
const RETRY_AFTER_SKEW: f64 = 0.7;
/// How often a sleep wakes to see whether SIGTERM/SIGINT arrived (real time).
const SLEEP_SLICE: Duration = Duration::from_millis(50);

/// See `Clock::io_timeout`.
const MIN_REAL_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The environment variable that speeds the clock up, for tests.
pub const TIME_SCALE_ENV: &str = "ARC_ENROLL_TIME_SCALE";

/// The fastest clock: a larger scale overflows `Duration` arithmetic (1e300 would panic), and
/// no test needs more than a few hundred.
pub const MAX_TIME_SCALE: f64 = 10_000.0;

/// Monotonic clock in virtual time, and the sleeper. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_unix: Duration,
    scale: f64,
}

impl Clock {
    /// The real clock, sped up by `ARC_ENROLL_TIME_SCALE` when that is set (tests).
    pub fn from_env() -> Result<Clock, Error> {
        let scale = parse_time_scale(std::env::var(TIME_SCALE_ENV).ok().as_deref())?;
        Ok(Clock::with_scale(scale))
    }

    pub fn with_scale(scale: f64) -> Clock {
        Clock {
            start: Instant::now(),
            start_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            scale,
        }
    }

    /// Virtual time since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed().mul_f64(self.scale)
    }

    /// Unix time now, in seconds, on the same (possibly sped-up) time line.
    pub fn unix_now(&self) -> u64 {
        (self.start_unix + self.elapsed()).as_secs()
    }

    /// Real duration that corresponds to a virtual one (for socket time-outs).
    pub fn real(&self, virtual_duration: Duration) -> Duration {
        virtual_duration.div_f64(self.scale)
    }

    /// A socket or child-process time-out in real time: `real(d)`, but never under
    /// `MIN_REAL_IO_TIMEOUT` (or `d` itself when shorter). With a sped-up clock in tests, a
    /// loaded machine must not turn a slow-but-healthy loopback answer into a time-out;
    /// at normal speed this is exactly `d`.
    pub fn io_timeout(&self, d: Duration) -> Duration {
        self.real(d).max(d.min(MIN_REAL_IO_TIMEOUT))
    }

    /// Sleep for a virtual duration; wakes early and returns `Interrupted` on SIGTERM/SIGINT.
    pub fn sleep(&self, d: Duration) -> Result<(), Error> {
        let until = Instant::now() + self.real(d);
        loop {
            stop_if_signalled()?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(SLEEP_SLICE));
        }
    }
}

/// `ARC_ENROLL_TIME_SCALE`'s value (unset: 1): a number from 1 to `MAX_TIME_SCALE`, else exit 2.
pub fn parse_time_scale(value: Option<&str>) -> Result<f64, Error> {
    let Some(v) = value else { return Ok(1.0) };
    match v.trim().parse::<f64>() {
        Ok(s) if (1.0..=MAX_TIME_SCALE).contains(&s) => Ok(s),
        _ => Err(Error::invalid(
            TIME_SCALE_ENV,
            v,
            format!("environment {TIME_SCALE_ENV}"),
            format!("must be a number from 1 to {MAX_TIME_SCALE} (tests only)"),
        )),
    }
}

/// The run's one deadline (`--timeout`). Every wait is bounded by it.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub clock: Clock,
    pub timeout: Duration,
}

impl Deadline {
    pub fn new(clock: Clock, timeout: Duration) -> Deadline {
        Deadline { clock, timeout }
    }

    pub fn remaining(&self) -> Duration {
        self.timeout.saturating_sub(self.clock.elapsed())
    }

    pub fn expired(&self) -> bool {
        self.remaining().is_zero()
    }

    /// A per-request time-out: `cap`, or less when the deadline is closer (virtual time).
    pub fn bounded(&self, cap: Duration) -> Duration {
        cap.min(self.remaining()).max(Duration::from_millis(1))
    }
}

/// What one attempt of a retried operation came to.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// A transient failure: `reason` is logged; `retry_after` is the server's floor, if it gave one.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The server says it is coming back soon (IMDS 404/410 "updating"): poll steadily, every
    /// `every/2 .. every` with jitter, instead of backing off, so the answer is seen promptly.
    Poll {
        reason: String,
        every: Duration,
    },
    /// A permanent failure: stop now.
    Fail(Error),
}

/// Exponential backoff with equal jitter: half of the step is fixed, half random.
#[derive(Clone, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// What one attempt needs at least: no wait starts that would leave less than this before
    /// the deadline (an attempt begun with seconds left can only fail for the wrong reason).
    pub min_attempt: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            min_attempt: Duration::ZERO,
            rng: seed(),
        }
    }

    /// See `min_attempt`.
    pub fn with_min_attempt(mut self, d: Duration) -> Backoff {
        self.min_attempt = d;
        self
    }

    /// A backoff with a fixed seed, for tests.
    pub fn seeded(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap,
            min_attempt: Duration::ZERO,
            rng: seed | 1,
        }
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        // xorshift64*: plenty for spreading retries; not for anything secret.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The wait before attempt `attempt + 1`, after `attempt` (1-based) failed.
    pub fn delay(&mut self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.cap);
        let jittered = exp / 2 + exp.mul_f64(self.unit() / 2.0);
        match retry_after {
            // The server's floor, plus a random share of a window that grows with each failure, so
            // a throttled fleet spreads out over the next windows instead of all coming back at once.
            Some(ra) => {
                let growth = RETRY_AFTER_GROWTH.powi(attempt.saturating_sub(1).min(32) as i32);
                let window = ra
                    .mul_f64(RETRY_AFTER_WINDOW * growth)
                    .min(self.cap.max(ra));
                ra + window.mul_f64(self.unit().powf(RETRY_AFTER_SKEW))
            }
            None => jittered,
        }
    }

    /// A steady poll: between half of `every` and all of it.
    pub fn poll(&mut self, every: Duration) -> Duration {
        every / 2 + (every / 2).mul_f64(self.unit())
    }
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Run `op` until it is done, fails permanently, or the deadline leaves no time for another try.
/// Every wait is logged: what came back, attempt n, how long we wait, how long until the deadline.
/// `on_deadline` turns the last transient reason into the error to return.
pub fn retry<T>(
    what: &str,
    deadline: &Deadline,
    backoff: &mut Backoff,
    mut op: impl FnMut(u32) -> Attempt<T>,
    on_deadline: impl FnOnce(String) -> Error,
) -> Result<T, Error> {
    retry_with(
        what,
        deadline,
        backoff,
        &mut (),
        |_, n| op(n),
        |_, last| on_deadline(last),
    )
}

/// `retry` for a sequence that learns things between attempts: `op` updates `progress`, and
/// `on_deadline` reads it to say what was still missing (no shared cells between two closures).
pub fn retry_with<S, T>(
    what: &str,
    deadline: &Deadline,
    backoff: &mut Backoff,
    progress: &mut S,
    mut op: impl FnMut(&mut S, u32) -> Attempt<T>,
    on_deadline: impl FnOnce(&S, String) -> Error,
) -> Result<T, Error> {
    let mut attempt = 1;
    loop {
        stop_if_signalled()?;
        let (reason, retry_after, wait) = match op(progress, attempt) {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry {
                reason,
                retry_after,
            } => {
                let wait = backoff.delay(attempt, retry_after);
                (reason, retry_after, wait)
            }
            Attempt::Poll { reason, every } => (reason, None, backoff.poll(every)),
        };
        // A stop signal that cut the attempt short is the answer, not a reason to retry.
        stop_if_signalled()?;
        let remaining = deadline.remaining();
        if wait + backoff.min_attempt >= remaining {
            log::warn!(
                "{what} attempt {attempt}: {reason}; no time left for another try (deadline in {})",
                human(remaining)
            );
            return Err(on_deadline(progress, reason));
        }
        let why = match retry_after {
            Some(ra) => format!(" (server asked for Retry-After {})", human(ra)),
            None => String::new(),
        };
        log::warn!(
            "{what} attempt {attempt}: {reason}; retrying in {}{why} (deadline in {})",
            human(wait),
            human(remaining)
        );
        deadline.clock.sleep(wait)?;
        attempt += 1;
    }
}

/// `Err(Interrupted)` once SIGTERM/SIGINT has arrived: every wait and attempt checks it.
pub fn stop_if_signalled() -> Result<(), Error> {
    match crate::signals::received() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => Ok(()),
    }
}

/// Parse a `Retry-After` header: delta-seconds only (IMDS and ARM send seconds).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && (0.0..=3600.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_scale_is_one_unset_and_else_a_number_from_1_to_the_maximum() {
        assert_eq!(parse_time_scale(None).unwrap(), 1.0);
        for (text, want) in [("1", 1.0), (" 50 ", 50.0), ("10000", MAX_TIME_SCALE)] {
            assert_eq!(parse_time_scale(Some(text)).unwrap(), want, "{text:?}");
        }
        for bad in ["0", "0.99", "-1", "10000.5", "1e300", "NaN", "inf", "", "x"] {
            assert!(parse_time_scale(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_clock_maps_virtual_time_to_real_time_by_its_scale() {
        let c = Clock::with_scale(10.0);
        assert_eq!(c.real(Duration::from_secs(10)), Duration::from_secs(1));
        // io_timeout: real time, floored at MIN_REAL_IO_TIMEOUT (or d itself when shorter)
        let fast = Clock::with_scale(100.0);
        assert_eq!(
            fast.io_timeout(Duration::from_secs(60)),
            MIN_REAL_IO_TIMEOUT
        );
        assert_eq!(
            fast.io_timeout(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
        assert_eq!(
            fast.io_timeout(Duration::from_secs(1000)),
            Duration::from_secs(10)
        );
        let real = Clock::with_scale(1.0);
        assert_eq!(
            real.io_timeout(Duration::from_secs(7)),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn unix_now_is_the_wall_clock_moved_on_by_virtual_time() {
        let wall = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let c = Clock::with_scale(1.0);
        assert!(c.unix_now().abs_diff(wall()) <= 1);
        let fast = Clock::with_scale(10_000.0);
        std::thread::sleep(Duration::from_millis(20));
        // 20 ms real = 200 s virtual: the sped-up clock is ahead of the wall clock, not behind
        let ahead = fast.unix_now() as i64 - wall() as i64;
        assert!((150..3_600).contains(&ahead), "ahead by {ahead} s");
    }

    #[test]
    fn sleep_waits_the_real_share_of_a_virtual_duration() {
        let c = Clock::with_scale(100.0);
        let t = Instant::now();
        c.sleep(Duration::from_secs(3)).unwrap(); // 30 ms real
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(30), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn a_deadline_expires_and_bounds_per_request_time_outs() {
        let c = Clock::with_scale(1.0);
        let gone = Deadline::new(c, Duration::ZERO);
        assert!(gone.expired());
        assert_eq!(
            gone.bounded(Duration::from_secs(5)),
            Duration::from_millis(1)
        );
        let far = Deadline::new(c, Duration::from_secs(3600));
        assert!(!far.expired());
        assert_eq!(far.bounded(Duration::from_secs(5)), Duration::from_secs(5));
        let near = Deadline::new(c, Duration::from_secs(2));
        assert!(near.bounded(Duration::from_secs(5)) <= Duration::from_secs(2));
        assert!(near.bounded(Duration::from_secs(5)) > Duration::from_secs(1));
    }

    #[test]
    fn the_jitter_source_is_xorshift64_star() {
        // Reference values for seed 1, computed independently (Vigna's xorshift64*, 12/25/27,
        // multiplier 0x2545F4914F6CDD1D, top 53 bits).
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(1), 1);
        for want in [0.28083505005035947, 0.6711372530266764, 0.7258461452833668] {
            let got = b.unit();
            assert!((got - want).abs() < 1e-12, "{got} != {want}");
        }
        // an even seed is made odd (an all-zero state would stay zero: no jitter at all)
        let mut z = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(1), 0);
        let draws: Vec<f64> = (0..100).map(|_| z.unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.3..0.7).contains(&mean), "mean {mean}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_inside_half_to_full_step() {
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 7);
        for (attempt, step) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (4, 8.0),
            (5, 16.0),
            (6, 30.0),
            (20, 30.0),
        ] {
            for _ in 0..50 {
                let d = b.delay(attempt, None).as_secs_f64();
                assert!(
                    d >= step / 2.0 && d <= step,
                    "attempt {attempt}: {d} not in [{}, {step}]",
                    step / 2.0
                );
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor_and_is_spread() {
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 3);
        let waits: Vec<f64> = (0..200)
            .map(|_| b.delay(1, Some(Duration::from_secs(2))).as_secs_f64())
            .collect();
        // First failure: RA + a share of a 2·RA window.
        assert!(waits.iter().all(|w| (2.0..=6.0).contains(w)), "{waits:?}");
        let spread = waits.iter().cloned().fold(f64::MIN, f64::max)
            - waits.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread > 2.5, "jitter must spread retries, spread {spread}");
    }

    #[test]
    fn retry_after_window_grows_with_consecutive_throttles_up_to_the_cap() {
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 5);
        let ra = Some(Duration::from_secs(1));
        for (attempt, window) in [
            (1, 2.0),
            (2, 3.0),
            (3, 4.5),
            (5, 10.125),
            (12, 30.0),
            (40, 30.0),
        ] {
            let waits: Vec<f64> = (0..300)
                .map(|_| b.delay(attempt, ra).as_secs_f64())
                .collect();
            let max = waits.iter().cloned().fold(f64::MIN, f64::max);
            let min = waits.iter().cloned().fold(f64::MAX, f64::min);
            assert!(
                min >= 1.0,
                "attempt {attempt}: below the Retry-After floor: {min}"
            );
            assert!(
                max <= 1.0 + window + 1e-9,
                "attempt {attempt}: {max} past 1 + {window}"
            );
            assert!(
                max > 1.0 + window * 0.9,
                "attempt {attempt}: the window is not used: {max}"
            );
        }
        // A Retry-After longer than the cap is still honoured.
        assert!(b.delay(3, Some(Duration::from_secs(60))) >= Duration::from_secs(60));
    }

    #[test]
    fn polling_waits_between_half_and_all_of_the_interval() {
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 11);
        for _ in 0..200 {
            let d = b.poll(IMDS_UPDATING_POLL);
            assert!(
                d >= IMDS_UPDATING_POLL / 2 && d <= IMDS_UPDATING_POLL,
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_polls_steadily_instead_of_backing_off() {
        let clock = Clock::with_scale(1000.0);
        let deadline = Deadline::new(clock, Duration::from_secs(60));
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 9);
        let mut calls = 0;
        let r: Result<u32, Error> = retry(
            "test",
            &deadline,
            &mut b,
            |n| {
                calls += 1;
                if n < 20 {
                    Attempt::Poll {
                        reason: "HTTP 410".into(),
                        every: IMDS_UPDATING_POLL,
                    }
                } else {
                    Attempt::Done(n)
                }
            },
            |_| unreachable!("20 polls of at most 2 s fit in 60 s"),
        );
        assert_eq!(r.unwrap(), 20);
        assert_eq!(calls, 20);
    }

    #[test]
    fn parses_retry_after_seconds_only() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 2.5 "),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("99999"), None);
    }

    #[test]
    fn retry_stops_when_the_wait_would_pass_the_deadline() {
        let clock = Clock::with_scale(1000.0);
        let deadline = Deadline::new(clock, Duration::from_secs(20));
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 9);
        let mut calls = 0;
        let r: Result<(), Error> = retry(
            "test",
            &deadline,
            &mut b,
            |_| {
                calls += 1;
                Attempt::Retry {
                    reason: "HTTP 503".into(),
                    retry_after: None,
                }
            },
            |last| Error::Deadline {
                timeout: deadline.timeout,
                waiting_for: "test".into(),
                last,
            },
        );
        assert!(matches!(r, Err(Error::Deadline { .. })), "{r:?}");
        // Waits of 1, 2, 4, 8 s (jittered down to half) fit in 20 s; scheduling delays on a busy
        // machine can only make the virtual clock run ahead, i.e. fewer attempts, never more.
        assert!((2..=8).contains(&calls), "calls {calls}");
    }

    #[test]
    fn retry_returns_permanent_failures_at_once() {
        let clock = Clock::with_scale(1000.0);
        let deadline = Deadline::new(clock, Duration::from_secs(20));
        let mut b = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 9);
        let mut calls = 0;
        let r: Result<(), Error> = retry(
            "test",
            &deadline,
            &mut b,
            |_| {
                calls += 1;
                Attempt::Fail(Error::Internal("x".into()))
            },
            |_| unreachable!(),
        );
        assert!(matches!(r, Err(Error::Internal(_))));
        assert_eq!(calls, 1);
    }
}
