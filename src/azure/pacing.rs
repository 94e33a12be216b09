//! Pacing ARM requests by the budget ARM reports (FACTS §12): ARM meters requests in token
//! buckets per security principal (reads 250, refilled 25/s; writes and deletes 200, 10/s) and per
//! subscription across all principals (15×: reads 3,750 at 375/s, writes and deletes 3,000 at
//! 150/s). Every answer carries what is left after it:
//! `x-ms-ratelimit-remaining-subscription-{reads|writes|deletes}` (this principal's bucket) and
//! `x-ms-ratelimit-remaining-subscription-global-{reads|writes|deletes}` (the subscription's).
//!
//! A fleet of VMs in one subscription meets the global bucket long before any one VM meets its
//! own, so the global budget is the one to watch (the principal one when ARM sends no global).
//! Policy (`pace`): while the budget is at or above a low-water mark (a tenth of the bucket), go
//! on at once; below it, wait about as long as the bucket needs to refill back to the mark,
//! `(mark − remaining) / refill`, times a random factor in [0.5, 1.5) so that the VMs of a wave
//! that all read the same low number do not come back together. With the global read bucket that
//! is at most 1 s (375 tokens at 375/s) and 0.5 s on average for an empty bucket: short against the
//! run, and enough that the fleet as a whole slows to what the bucket refills instead of spending
//! requests on 429s. A 429 is still possible (VMs that have not yet heard the budget); its
//! `Retry-After` is honoured as a floor by the retry loop (`retry::retry`), with jitter on top.
//! Each 429 also doubles this process's stretch of the wait for that operation type (at most
//! ×16), and each answer with the budget back above the mark halves it (`next_crowd`): the refill
//! time is what one client alone would need, and a 429 is the sign that many are waiting on the
//! same bucket (multiplicative increase and decrease, as TCP shares a link).
//!
//! `ARC_ENROLL_ARM_LIMITS_SCALE` (tests only, like `ARC_ENROLL_TIME_SCALE`): the bucket sizes and
//! refill rates assumed here times that factor, for `make fleet` against a fake ARM whose buckets
//! are scaled the same way (a 2-core machine cannot run enough VMs to meet ARM's real limits).

use std::sync::Mutex;
use std::time::Duration;

use crate::azure::http::{Failure, Reply};
use crate::error::Error;
use crate::retry::Deadline;
use crate::timefmt::human;

/// The operation types ARM meters separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    Delete,
}

impl Op {
    pub fn of_method(method: &str) -> Op {
        match method {
            "GET" | "HEAD" => Op::Read,
            "DELETE" => Op::Delete,
            _ => Op::Write,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Op::Read => "reads",
            Op::Write => "writes",
            Op::Delete => "deletes",
        }
    }
}

/// Which bucket a reported budget is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The subscription's, shared by every principal (`...-global-reads`).
    Global,
    /// This principal's (`...-reads`).
    Principal,
}

/// A bucket's documented size and refill rate (FACTS §12).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

pub fn documented(op: Op, scope: Scope) -> Bucket {
    let (capacity, refill_per_sec) = match op {
        Op::Read => (250.0, 25.0),
        Op::Write | Op::Delete => (200.0, 10.0),
    };
    let f = match scope {
        Scope::Global => 15.0,
        Scope::Principal => 1.0,
    };
    Bucket {
        capacity: capacity * f,
        refill_per_sec: refill_per_sec * f,
    }
}

/// The environment variable that scales the assumed buckets, for tests.
pub const LIMITS_SCALE_ENV: &str = "ARC_ENROLL_ARM_LIMITS_SCALE";

/// The bucket assumed for `op`/`scope`: documented, times `ARC_ENROLL_ARM_LIMITS_SCALE` if set.
pub fn assumed(op: Op, scope: Scope) -> Bucket {
    let b = documented(op, scope);
    let f = std::env::var(LIMITS_SCALE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or(1.0);
    Bucket {
        capacity: b.capacity * f,
        refill_per_sec: b.refill_per_sec * f,
    }
}

/// Below this share of the bucket the budget counts as low.
pub const LOW_WATER: f64 = 0.1;
/// No single pacing wait is longer than this (the deadline bounds it too).
pub const MAX_PACE: Duration = Duration::from_secs(30);

/// The wait before the next request, given what ARM last reported: `remaining` tokens in
/// `bucket`, `since` ago. `u` is uniform in [0, 1) (the jitter). Pure: the whole policy.
/// Budget at or above the low-water mark: no wait. Below: the time the bucket needs to refill
/// to the mark, times 0.5 + u, less the time already gone since the report.
pub fn pace(remaining: u64, bucket: Bucket, since: Duration, u: f64) -> Duration {
    pace_in_crowd(remaining, bucket, since, u, 1.0)
}

/// `pace` with the wait stretched by `crowd` (see `next_crowd`): the refill time to the mark is
/// what one client alone needs; a crowd of clients that all read the same low number and come
/// back together drains the bucket again at once, and each 429 says so.
pub fn pace_in_crowd(
    remaining: u64,
    bucket: Bucket,
    since: Duration,
    u: f64,
    crowd: f64,
) -> Duration {
    let low = bucket.capacity * LOW_WATER;
    let r = remaining as f64;
    if r >= low || bucket.refill_per_sec <= 0.0 {
        return Duration::ZERO;
    }
    let full = (low - r) / bucket.refill_per_sec * (0.5 + u.clamp(0.0, 1.0)) * crowd.max(1.0);
    Duration::from_secs_f64(full.min(MAX_PACE.as_secs_f64())).saturating_sub(since)
}

/// The most a run of 429s stretches the pacing wait.
pub const MAX_CROWD: f64 = 16.0;

/// How crowded a bucket looks after an answer (multiplicative increase, multiplicative
/// decrease, as TCP meets a shared link): a 429 doubles the stretch (at most `MAX_CROWD`); an
/// answer with the budget at or above the low-water mark halves it (at least 1); an answer with
/// a low budget leaves it.
pub fn next_crowd(crowd: f64, status: u16, budget_low: bool) -> f64 {
    if status == 429 {
        (crowd * 2.0).min(MAX_CROWD)
    } else if budget_low {
        crowd
    } else {
        (crowd / 2.0).max(1.0)
    }
}

/// What one answer said about the budget: the global figure when ARM sent one, else the
/// principal's (FACTS §12: a fleet meets the global bucket first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub op: Op,
    pub scope: Scope,
    pub remaining: u64,
}

/// Read the budget from an answer's headers (`name` lower-case, value).
pub fn budget_of<'a>(
    op: Op,
    headers: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Option<Budget> {
    let find = |name: String| {
        headers
            .clone()
            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    };
    let global = find(format!(
        "x-ms-ratelimit-remaining-subscription-global-{}",
        op.plural()
    ));
    let principal = find(format!(
        "x-ms-ratelimit-remaining-subscription-{}",
        op.plural()
    ));
    match (global, principal) {
        (Some(g), _) => Some(Budget {
            op,
            scope: Scope::Global,
            remaining: g,
        }),
        (None, Some(p)) => Some(Budget {
            op,
            scope: Scope::Principal,
            remaining: p,
        }),
        (None, None) => None,
    }
}

/// What this process has sent to ARM and learnt from it (one run is one process).
struct Meter {
    requests: u64,
    throttled: u64,
    paced: Duration,
    /// Per operation type (reads, writes, deletes): the last budget reported, and when
    /// (`Clock::elapsed`).
    last: [Option<(Budget, Duration)>; 3],
    /// Per operation type: how much a run of 429s stretches the pacing wait (`next_crowd`).
    crowd: [f64; 3],
    rng: u64,
}

static METER: Mutex<Meter> = Mutex::new(Meter {
    requests: 0,
    throttled: 0,
    paced: Duration::ZERO,
    last: [None, None, None],
    crowd: [1.0; 3],
    rng: 0,
});

fn meter() -> std::sync::MutexGuard<'static, Meter> {
    METER.lock().unwrap_or_else(|p| p.into_inner())
}

fn index(op: Op) -> usize {
    match op {
        Op::Read => 0,
        Op::Write => 1,
        Op::Delete => 2,
    }
}

impl Meter {
    /// Uniform in [0, 1) (xorshift64*, seeded from the clock and pid on first use).
    fn unit(&mut self) -> f64 {
        if self.rng == 0 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            self.rng = (nanos ^ (u64::from(std::process::id()) << 32))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                | 1;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Before an ARM request of type `op`: when the last answer said the budget is low, wait as
/// `pace` says (logged, never past the deadline). `what` names the request for the log.
pub fn before_request(op: Op, what: &str, deadline: &Deadline) -> Result<(), Error> {
    let (wait, budget, crowd) = {
        let mut m = meter();
        let Some((budget, at)) = m.last[index(op)] else {
            return Ok(());
        };
        let since = deadline.clock.elapsed().saturating_sub(at);
        let u = m.unit();
        let crowd = m.crowd[index(op)];
        (
            pace_in_crowd(budget.remaining, assumed(op, budget.scope), since, u, crowd),
            budget,
            crowd,
        )
    };
    if wait.is_zero() {
        return Ok(());
    }
    let left = deadline.remaining();
    let wait = wait.min(left);
    log::info!(
        "ARM budget low: {} {} left in {} bucket; waiting {}{} before {what} so as not to be throttled (deadline in {})",
        budget.remaining,
        op.plural(),
        match budget.scope {
            Scope::Global => "the subscription's global",
            Scope::Principal => "this identity's",
        },
        human(wait),
        if crowd > 1.0 {
            format!(" (×{crowd:.0}: others are reading the same bucket, ARM answered 429)")
        } else {
            String::new()
        },
        human(left)
    );
    deadline.clock.sleep(wait)?;
    meter().paced += wait;
    Ok(())
}

/// The last budget reported for `op` when it is under the low-water mark (a tenth of the
/// bucket): advisory requests can then be left out (the agent answers the same question).
pub fn budget_low(op: Op) -> Option<Budget> {
    let (b, _) = meter().last[index(op)]?;
    let low = assumed(op, b.scope).capacity * LOW_WATER;
    ((b.remaining as f64) < low).then_some(b)
}

/// After an ARM request of type `op`: count it, and remember the budget its answer reported
/// (`status` None: no answer).
pub fn after_request(
    op: Op,
    status: Option<u16>,
    headers: &[(String, String)],
    deadline: &Deadline,
) {
    let mut m = meter();
    m.requests += 1;
    if status == Some(429) {
        m.throttled += 1;
    }
    let budget = budget_of(op, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(status) = status {
        let low = budget
            .is_some_and(|b| (b.remaining as f64) < assumed(op, b.scope).capacity * LOW_WATER);
        m.crowd[index(op)] = next_crowd(m.crowd[index(op)], status, low);
    }
    if let Some(b) = budget {
        m.last[index(op)] = Some((b, deadline.clock.elapsed()));
    }
}

/// One ARM request of type `op`, paced and metered: `before_request`, `send`, `after_request`.
/// Every ARM request goes through here, so the budget a write's answer reports slows the next
/// poll too, and the `--json` count covers every path.
pub fn metered(
    op: Op,
    what: &str,
    deadline: &Deadline,
    send: impl FnOnce() -> Result<Reply, Failure>,
) -> Result<Result<Reply, Failure>, Error> {
    before_request(op, what, deadline)?;
    let answer = send();
    match &answer {
        Ok(r) => after_request(op, Some(r.status), &r.ratelimit, deadline),
        Err(_) => after_request(op, None, &[], deadline),
    }
    Ok(answer)
}

/// ARM requests this process sent (every attempt, answered or not), how many were answered 429,
/// and how long it waited for the budget.
pub fn totals() -> (u64, u64, Duration) {
    let m = meter();
    (m.requests, m.throttled, m.paced)
}
#[cfg(test)]
mod tests {
    use super::*;

    const READS: Bucket = Bucket {
        capacity: 3750.0,
        refill_per_sec: 375.0,
    };

    #[test]
    fn no_wait_while_the_budget_is_above_a_tenth() {
        for r in [375, 376, 1000, 3750, 10_000] {
            assert_eq!(pace(r, READS, Duration::ZERO, 0.5), Duration::ZERO, "{r}");
        }
    }

    #[test]
    fn below_a_tenth_the_wait_is_the_refill_to_the_mark_jittered() {
        // Empty: 375 tokens at 375/s = 1 s, times 0.5..1.5.
        assert_eq!(
            pace(0, READS, Duration::ZERO, 0.0),
            Duration::from_millis(500)
        );
        assert_eq!(pace(0, READS, Duration::ZERO, 0.5), Duration::from_secs(1));
        let hi = pace(0, READS, Duration::ZERO, 0.999_999);
        assert!(hi > Duration::from_millis(1499) && hi < Duration::from_millis(1500));
        // Half way to the mark: half the wait.
        let half = pace(187, READS, Duration::ZERO, 0.5);
        assert!(
            (half.as_secs_f64() - 188.0 / 375.0).abs() < 1e-9,
            "{half:?}"
        );
        // Time already gone counts.
        assert_eq!(
            pace(0, READS, Duration::from_millis(300), 0.5),
            Duration::from_millis(700)
        );
        assert_eq!(pace(0, READS, Duration::from_secs(5), 0.5), Duration::ZERO);
    }

    #[test]
    fn throttled_answers_stretch_the_wait_and_good_ones_shrink_it() {
        let mut c = 1.0;
        for want in [2.0, 4.0, 8.0, 16.0, 16.0] {
            c = next_crowd(c, 429, true);
            assert_eq!(c, want);
        }
        assert_eq!(next_crowd(c, 200, true), 16.0, "a low budget keeps it");
        assert_eq!(next_crowd(c, 202, false), 8.0, "a good budget halves it");
        assert_eq!(next_crowd(1.0, 200, false), 1.0);
        assert_eq!(
            pace_in_crowd(0, READS, Duration::ZERO, 0.5, 4.0),
            Duration::from_secs(4)
        );
        assert_eq!(
            pace_in_crowd(0, READS, Duration::ZERO, 0.5, 0.2),
            Duration::from_secs(1),
            "never shorter than alone"
        );
        assert_eq!(
            pace_in_crowd(400, READS, Duration::ZERO, 0.5, 16.0),
            Duration::ZERO
        );
        assert_eq!(pace_in_crowd(0, READS, Duration::ZERO, 0.5, 1e9), MAX_PACE);
    }

    #[test]
    fn jitter_spreads_a_wave_that_read_the_same_budget() {
        let waits: Vec<Duration> = (0..10)
            .map(|i| pace(0, READS, Duration::ZERO, i as f64 / 10.0))
            .collect();
        let mut distinct = waits.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 10);
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_millis(500) && *w < Duration::from_millis(1500)));
    }

    #[test]
    fn principal_and_write_buckets_and_the_cap() {
        let p = documented(Op::Read, Scope::Principal);
        assert_eq!((p.capacity, p.refill_per_sec), (250.0, 25.0));
        assert_eq!(pace(0, p, Duration::ZERO, 0.5), Duration::from_secs(1));
        let w = documented(Op::Write, Scope::Global);
        assert_eq!((w.capacity, w.refill_per_sec), (3000.0, 150.0));
        // 300 tokens at 150/s = 2 s.
        assert_eq!(pace(0, w, Duration::ZERO, 0.5), Duration::from_secs(2));
        let slow = Bucket {
            capacity: 10_000.0,
            refill_per_sec: 1.0,
        };
        assert_eq!(pace(0, slow, Duration::ZERO, 0.5), MAX_PACE);
    }

    #[test]
    fn the_global_budget_is_preferred() {
        let h = [
            ("x-ms-ratelimit-remaining-subscription-reads", "249"),
            ("X-Ms-Ratelimit-Remaining-Subscription-Global-Reads", "12"),
        ];
        assert_eq!(
            budget_of(Op::Read, h.iter().copied()),
            Some(Budget {
                op: Op::Read,
                scope: Scope::Global,
                remaining: 12
            })
        );
        let p = [("x-ms-ratelimit-remaining-subscription-writes", "7")];
        assert_eq!(
            budget_of(Op::Write, p.iter().copied()),
            Some(Budget {
                op: Op::Write,
                scope: Scope::Principal,
                remaining: 7
            })
        );
        // Another operation's header is not this one's budget.
        assert_eq!(budget_of(Op::Read, p.iter().copied()), None);
        assert_eq!(
            budget_of(
                Op::Read,
                [("x-ms-ratelimit-remaining-subscription-reads", "x")]
                    .iter()
                    .copied()
            ),
            None
        );
    }
}
