//! ARM's request limits as token buckets (FACTS §12, learn.microsoft.com "Understand how Azure
//! Resource Manager throttles requests", the 2024 token-bucket model), for the fake ARM.
//!
//! Per region and subscription there is one bucket per **security principal** (the token's `oid`)
//! and operation type, and one **global** bucket per operation type shared by every principal:
//!
//! | operation | principal bucket | refill | global bucket | refill |
//! |---|---|---|---|---|
//! | reads (GET, HEAD) | 250 | 25/s | 3,750 | 375/s |
//! | writes (PUT, POST, PATCH) | 200 | 10/s | 3,000 | 150/s |
//! | deletes (DELETE) | 200 | 10/s | 3,000 | 150/s |
//!
//! A request takes one token from its principal's bucket and one from the global bucket. When
//! either holds less than one token the request is answered 429 `TooManyRequests` with
//! `Retry-After` (whole seconds, at least 1: the time until the emptier bucket holds one token
//! again) and takes nothing. Every answer, 429 or not, carries the remaining budget of the
//! request's operation type: `x-ms-ratelimit-remaining-subscription-{reads|writes|deletes}` (the
//! principal's bucket) and `x-ms-ratelimit-remaining-subscription-global-{reads|writes|deletes}`
//! (the subscription's), as whole tokens after this request.
//!
//! The fake ARM is one region, so buckets are keyed by subscription (and principal). Requests
//! without a readable token are not metered (ARM answers them 401 before they reach a bucket).
//! Which request a throttled-then-retried client gets back first is not modelled: there is no
//! queue, whoever asks when a token is there gets it.
//!
//! Time is passed in (seconds since any fixed origin), so the arithmetic is tested with a fake
//! clock.

use std::collections::HashMap;

/// The three operation types ARM meters separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Write,
    Delete,
}

impl Op {
    /// ARM's operation type of an HTTP method: GET/HEAD read, DELETE deletes, the rest write
    /// (PUT, PATCH, and POST actions such as `assignRelay` or `listAccessDetails`).
    pub fn of_method(method: &str) -> Op {
        match method.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" => Op::Read,
            "DELETE" => Op::Delete,
            _ => Op::Write,
        }
    }

    /// The header suffix: `reads`, `writes`, `deletes`.
    pub fn plural(self) -> &'static str {
        match self {
            Op::Read => "reads",
            Op::Write => "writes",
            Op::Delete => "deletes",
        }
    }

    fn index(self) -> usize {
        match self {
            Op::Read => 0,
            Op::Write => 1,
            Op::Delete => 2,
        }
    }

    pub const ALL: [Op; 3] = [Op::Read, Op::Write, Op::Delete];
}

/// A bucket's size and how fast it fills.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

/// The buckets for reads, writes and deletes, per principal and global.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Indexed reads, writes, deletes.
    pub principal: [Bucket; 3],
    pub global: [Bucket; 3],
}

/// How many times the principal bucket the global one is (FACTS §12).
pub const GLOBAL_FACTOR: f64 = 15.0;

impl Limits {
    /// ARM's documented limits (FACTS §12).
    pub fn documented() -> Limits {
        let p = [
            Bucket {
                capacity: 250.0,
                refill_per_sec: 25.0,
            },
            Bucket {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
            Bucket {
                capacity: 200.0,
                refill_per_sec: 10.0,
            },
        ];
        let g = p.map(|b| Bucket {
            capacity: b.capacity * GLOBAL_FACTOR,
            refill_per_sec: b.refill_per_sec * GLOBAL_FACTOR,
        });
        Limits {
            principal: p,
            global: g,
        }
    }

    /// The documented limits with every size and rate multiplied by `factor` (a small factor
    /// makes a test meet the buckets in a few requests and refill in a fraction of a second).
    pub fn scaled(factor: f64) -> Limits {
        let s = |b: Bucket| Bucket {
            capacity: b.capacity * factor,
            refill_per_sec: b.refill_per_sec * factor,
        };
        let d = Limits::documented();
        Limits {
            principal: d.principal.map(s),
            global: d.global.map(s),
        }
    }

    pub fn principal(&self, op: Op) -> Bucket {
        self.principal[op.index()]
    }

    pub fn global(&self, op: Op) -> Bucket {
        self.global[op.index()]
    }
}

#[derive(Clone, Copy, Debug)]
struct Level {
    tokens: f64,
    at: f64,
}

impl Level {
    fn full(b: Bucket, now: f64) -> Level {
        Level {
            tokens: b.capacity,
            at: now,
        }
    }

    fn refill(&mut self, b: Bucket, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * b.refill_per_sec).min(b.capacity);
            self.at = now;
        }
    }

    /// Seconds until the bucket holds one token (0 when it does).
    fn wait_for_one(&self, b: Bucket) -> f64 {
        if self.tokens >= 1.0 {
            0.0
        } else if b.refill_per_sec <= 0.0 {
            f64::INFINITY
        } else {
            (1.0 - self.tokens) / b.refill_per_sec
        }
    }
}

/// What the limiter decided about one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub op: Op,
    /// `None`: admitted. `Some(secs)`: throttled, retry after that many whole seconds.
    pub retry_after: Option<u64>,
    /// Whole tokens left in the principal's bucket after this request.
    pub remaining_principal: u64,
    /// Whole tokens left in the subscription's global bucket after this request.
    pub remaining_global: u64,
    /// Which bucket was empty when throttled: "principal" or "global".
    pub empty: Option<&'static str>,
}

impl Verdict {
    /// The `x-ms-ratelimit-remaining-*` headers of this answer.
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            (
                format!("x-ms-ratelimit-remaining-subscription-{}", self.op.plural()),
                self.remaining_principal.to_string(),
            ),
            (
                format!(
                    "x-ms-ratelimit-remaining-subscription-global-{}",
                    self.op.plural()
                ),
                self.remaining_global.to_string(),
            ),
        ]
    }
}

/// Every bucket of one fake ARM region.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    /// (subscription, principal, op)
    principals: HashMap<(String, String, Op), Level>,
    /// (subscription, op)
    globals: HashMap<(String, Op), Level>,
    /// Admitted and throttled requests, per op (reads, writes, deletes).
    pub admitted: [u64; 3],
    pub throttled: [u64; 3],
}

impl RateLimiter {
    pub fn new(limits: Limits) -> RateLimiter {
        RateLimiter {
            limits,
            principals: HashMap::new(),
            globals: HashMap::new(),
            admitted: [0; 3],
            throttled: [0; 3],
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// One request of `op` by `principal` in `subscription` at `now` (seconds).
    pub fn check(&mut self, now: f64, subscription: &str, principal: &str, op: Op) -> Verdict {
        let pb = self.limits.principal(op);
        let gb = self.limits.global(op);
        let sub = subscription.to_ascii_lowercase();
        let p = self
            .principals
            .entry((sub.clone(), principal.to_ascii_lowercase(), op))
            .or_insert_with(|| Level::full(pb, now));
        p.refill(pb, now);
        let g = self
            .globals
            .entry((sub, op))
            .or_insert_with(|| Level::full(gb, now));
        g.refill(gb, now);
        let (pw, gw) = (p.wait_for_one(pb), g.wait_for_one(gb));
        if pw > 0.0 || gw > 0.0 {
            self.throttled[op.index()] += 1;
            let wait = pw.max(gw);
            let secs = if wait.is_finite() {
                // (less a hair of float error: 1 / 0.1 must come to 10, not 11)
                ((wait - 1e-9).ceil() as u64).max(1)
            } else {
                3600
            };
            return Verdict {
                op,
                retry_after: Some(secs),
                remaining_principal: p.tokens.max(0.0).floor() as u64,
                remaining_global: g.tokens.max(0.0).floor() as u64,
                empty: Some(if pw >= gw { "principal" } else { "global" }),
            };
        }
        p.tokens -= 1.0;
        g.tokens -= 1.0;
        self.admitted[op.index()] += 1;
        Verdict {
            op,
            retry_after: None,
            remaining_principal: p.tokens.floor() as u64,
            remaining_global: g.tokens.floor() as u64,
            empty: None,
        }
    }
}

/// The fake ARM's entry hook: meter one request (when `limits` is set; the limiter is created on
/// first use). Only ARM resource requests (`/subscriptions/{sub}/...`) with a token that names a
/// principal (`oid`) are metered. `Ok(headers)`: admitted, add these headers to the answer;
/// `Err(verdict)`: throttled, answer 429 with `verdict.retry_after` and its headers.
pub fn admit(
    limiter: &mut Option<RateLimiter>,
    limits: Option<&Limits>,
    method: &str,
    path: &str,
    principal: Option<&str>,
    now: f64,
) -> Result<Vec<(String, String)>, Verdict> {
    let (Some(limits), Some(principal)) = (limits, principal) else {
        return Ok(Vec::new());
    };
    let mut seg = path.trim_matches('/').split('/');
    let (Some(first), Some(sub)) = (seg.next(), seg.next()) else {
        return Ok(Vec::new());
    };
    if !first.eq_ignore_ascii_case("subscriptions") || sub.is_empty() {
        return Ok(Vec::new());
    }
    let rl = limiter.get_or_insert_with(|| RateLimiter::new(limits.clone()));
    let v = rl.check(now, sub, principal, Op::of_method(method));
    match v.retry_after {
        None => Ok(v.headers()),
        Some(_) => Err(v),
    }
}

/// ARM's 429 body for the token-bucket limits (as real ARM words it; clients must not parse it).
pub fn throttled_body(v: &Verdict, subscription: &str, principal: &str) -> serde_json::Value {
    let kind = match v.op {
        Op::Read => "read",
        Op::Write => "write",
        Op::Delete => "delete",
    };
    serde_json::json!({"error": {
        "code": "SubscriptionRequestsThrottled",
        "message": format!(
            "Number of '{kind}' requests for subscription '{subscription}' actor '{principal}' exceeded. \
             Please try again after '{}' seconds after additional tokens are available. \
             Refer to https://aka.ms/arm-throttling for additional information.",
            v.retry_after.unwrap_or(1)
        ),
    }})
}

/// The least time any client schedule needs to get `admitted[op]` requests of each type through
/// the global buckets, which start full: `max over op of max(0, (admitted − capacity) / refill)`.
/// (A run that needs no more than a full bucket holds is not limited by ARM at all: 0.)
pub fn global_bound_secs(limits: &Limits, admitted: [u64; 3]) -> f64 {
    Op::ALL
        .iter()
        .map(|&op| {
            let b = limits.global(op);
            let need = admitted[op.index()] as f64;
            if need <= b.capacity {
                0.0
            } else {
                (need - b.capacity) / b.refill_per_sec
            }
        })
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "00000000-0000-0000-0000-000000000001";

    #[test]
    fn documented_numbers() {
        let l = Limits::documented();
        assert_eq!(l.principal(Op::Read).capacity, 250.0);
        assert_eq!(l.principal(Op::Read).refill_per_sec, 25.0);
        assert_eq!(l.principal(Op::Write).capacity, 200.0);
        assert_eq!(l.principal(Op::Write).refill_per_sec, 10.0);
        assert_eq!(l.principal(Op::Delete).capacity, 200.0);
        assert_eq!(l.global(Op::Read).capacity, 3750.0);
        assert_eq!(l.global(Op::Read).refill_per_sec, 375.0);
        assert_eq!(l.global(Op::Write).capacity, 3000.0);
        assert_eq!(l.global(Op::Write).refill_per_sec, 150.0);
        assert_eq!(l.global(Op::Delete).capacity, 3000.0);
        assert_eq!(l.global(Op::Delete).refill_per_sec, 150.0);
    }

    #[test]
    fn methods_map_to_operation_types() {
        assert_eq!(Op::of_method("GET"), Op::Read);
        assert_eq!(Op::of_method("head"), Op::Read);
        assert_eq!(Op::of_method("PUT"), Op::Write);
        assert_eq!(Op::of_method("POST"), Op::Write);
        assert_eq!(Op::of_method("PATCH"), Op::Write);
        assert_eq!(Op::of_method("DELETE"), Op::Delete);
    }

    #[test]
    fn a_principal_gets_its_bucket_then_429_then_the_refill() {
        let mut rl = RateLimiter::new(Limits::documented());
        for i in 0..250 {
            let v = rl.check(0.0, SUB, "a", Op::Read);
            assert_eq!(v.retry_after, None, "read {i}");
            assert_eq!(v.remaining_principal, 249 - i);
            assert_eq!(v.remaining_global, 3749 - i);
        }
        let v = rl.check(0.0, SUB, "a", Op::Read);
        assert_eq!(v.retry_after, Some(1));
        assert_eq!(v.empty, Some("principal"));
        assert_eq!(v.remaining_principal, 0);
        // A throttled request takes nothing from the global bucket.
        assert_eq!(v.remaining_global, 3500);
        // Another principal is not affected.
        assert_eq!(rl.check(0.0, SUB, "b", Op::Read).retry_after, None);
        // Writes are a separate bucket.
        assert_eq!(rl.check(0.0, SUB, "a", Op::Write).retry_after, None);
        // 25/s: after 0.25 s 6.25 tokens: six reads more, then none.
        let ok = (0..7)
            .filter(|_| rl.check(0.25, SUB, "a", Op::Read).retry_after.is_none())
            .count();
        assert_eq!(ok, 6);
        // 2 s later: 50 more.
        let ok = (0..60)
            .filter(|_| rl.check(2.25, SUB, "a", Op::Read).retry_after.is_none())
            .count();
        assert_eq!(ok, 50);
        // Refill never exceeds the bucket.
        let ok = (0..300)
            .filter(|_| rl.check(1000.0, SUB, "a", Op::Read).retry_after.is_none())
            .count();
        assert_eq!(ok, 250);
        assert_eq!(rl.throttled[0], 1 + 1 + 10 + 50);
    }

    #[test]
    fn the_global_bucket_is_shared_by_every_principal_of_a_subscription() {
        let mut rl = RateLimiter::new(Limits::documented());
        // 200 principals × 18 reads + 150 more = 3,750: the global bucket, none of theirs.
        let mut n = 0;
        for p in 0..200 {
            for _ in 0..18 {
                assert_eq!(
                    rl.check(0.0, SUB, &format!("p{p}"), Op::Read).retry_after,
                    None
                );
                n += 1;
            }
        }
        for p in 200..350 {
            assert_eq!(
                rl.check(0.0, SUB, &format!("p{p}"), Op::Read).retry_after,
                None
            );
            n += 1;
        }
        assert_eq!(n, 3750);
        let v = rl.check(0.0, SUB, "fresh", Op::Read);
        assert_eq!(v.retry_after, Some(1));
        assert_eq!(v.empty, Some("global"));
        assert_eq!(v.remaining_principal, 250);
        assert_eq!(v.remaining_global, 0);
        // Another subscription has its own global bucket.
        assert_eq!(
            rl.check(0.0, "other-sub", "fresh", Op::Read).retry_after,
            None
        );
        // 375/s: 0.1 s later 37 reads pass (37.5 tokens), the 38th does not.
        let ok = (0..40)
            .filter(|i| {
                rl.check(0.1, SUB, &format!("q{i}"), Op::Read)
                    .retry_after
                    .is_none()
            })
            .count();
        assert_eq!(ok, 37);
        // Global writes: 3,000 then 150/s.
        for i in 0..3000 {
            assert_eq!(
                rl.check(0.1, SUB, &format!("w{}", i % 20), Op::Write)
                    .retry_after,
                None
            );
        }
        assert_eq!(rl.check(0.1, SUB, "w-new", Op::Write).retry_after, Some(1));
        assert_eq!(rl.check(1.1, SUB, "w-new", Op::Write).retry_after, None);
    }

    #[test]
    fn retry_after_is_the_time_to_one_token_in_whole_seconds() {
        // Scaled so the principal read bucket is 2.5 tokens refilled at 0.25/s.
        let mut rl = RateLimiter::new(Limits::scaled(0.01));
        assert!((rl.limits().principal(Op::Read).capacity - 2.5).abs() < 1e-9);
        assert_eq!(rl.check(0.0, SUB, "a", Op::Read).retry_after, None);
        assert_eq!(rl.check(0.0, SUB, "a", Op::Read).retry_after, None);
        // 0.5 left: 2 s to one token.
        let v = rl.check(0.0, SUB, "a", Op::Read);
        assert_eq!(v.retry_after, Some(2));
        assert_eq!(v.remaining_principal, 0);
        // 1 s later 0.75: 1 s more.
        assert_eq!(rl.check(1.0, SUB, "a", Op::Read).retry_after, Some(1));
        assert_eq!(rl.check(2.0, SUB, "a", Op::Read).retry_after, None);
        // Writes: 2 tokens at 0.1/s; after both, 10 s.
        rl.check(0.0, SUB, "a", Op::Write);
        rl.check(0.0, SUB, "a", Op::Write);
        assert_eq!(rl.check(0.0, SUB, "a", Op::Write).retry_after, Some(10));
    }

    #[test]
    fn headers_name_the_operation_type() {
        let mut rl = RateLimiter::new(Limits::documented());
        let h = rl.check(0.0, SUB, "a", Op::Delete).headers();
        assert_eq!(
            h,
            vec![
                (
                    "x-ms-ratelimit-remaining-subscription-deletes".to_string(),
                    "199".to_string()
                ),
                (
                    "x-ms-ratelimit-remaining-subscription-global-deletes".to_string(),
                    "2999".to_string()
                ),
            ]
        );
        let h = rl.check(0.0, SUB, "a", Op::Read).headers();
        assert_eq!(h[0].0, "x-ms-ratelimit-remaining-subscription-reads");
        assert_eq!(
            h[1],
            (
                "x-ms-ratelimit-remaining-subscription-global-reads".into(),
                "3749".into()
            )
        );
    }

    #[test]
    fn global_bound_is_what_the_refill_allows_beyond_a_full_bucket() {
        let l = Limits::documented();
        assert_eq!(global_bound_secs(&l, [3750, 3000, 0]), 0.0);
        // 12,000 reads: 8,250 beyond the bucket at 375/s = 22 s.
        assert_eq!(global_bound_secs(&l, [12_000, 0, 0]), 22.0);
        // 4,500 writes: 1,500 beyond at 150/s = 10 s, more than the reads need.
        assert_eq!(global_bound_secs(&l, [4_125, 4_500, 0]), 10.0);
    }
}
