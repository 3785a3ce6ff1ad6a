//! The broker's in-memory guards, per replica: a replay cache of nonces (and one-time
//! proofs) and a per-source rate limit. Both are bounded in memory and take the time as an
//! argument.

use std::collections::HashMap;
use std::hash::Hash;

use super::protocol::{Refusal, RefusalCode};

/// Keys seen within their lifetime. A full cache refuses new keys rather than forgetting
/// live ones (forgetting would re-open the replay window).
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashMap<String, i64>,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: HashMap::new(),
            capacity,
        }
    }

    /// Records `key` until `until`; refused when it was seen and has not expired.
    pub fn check_and_insert(&mut self, key: &str, until: i64, now: i64) -> Result<(), Refusal> {
        if let Some(&expiry) = self.seen.get(key) {
            if expiry > now {
                return Err(Refusal::new(
                    RefusalCode::Replayed,
                    "this request (its nonce or its one-time proof) was already used",
                ));
            }
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, &mut expiry| expiry > now);
            if self.seen.len() >= self.capacity {
                return Err(Refusal::new(
                    RefusalCode::RateLimited,
                    "the broker's replay cache is full: retry in a minute",
                ));
            }
        }
        self.seen.insert(key.to_owned(), until);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// A token bucket per source: `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RateLimiter<K> {
    buckets: HashMap<K, (f64, f64)>,
    per_second: f64,
    burst: f64,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_second: f64, burst: u32, capacity: usize) -> RateLimiter<K> {
        RateLimiter {
            buckets: HashMap::new(),
            per_second,
            burst: f64::from(burst),
            capacity,
        }
    }

    /// Takes one request from `source`'s bucket at `now` (seconds, fractional).
    pub fn allow(&mut self, source: &K, now: f64) -> Result<(), Refusal> {
        if !self.buckets.contains_key(source) && self.buckets.len() >= self.capacity {
            // Full buckets hold no information: forget them first.
            let (rate, burst) = (self.per_second, self.burst);
            self.buckets
                .retain(|_, (tokens, at)| (*tokens + (now - *at) * rate) < burst);
        }
        let (rate, burst) = (self.per_second, self.burst);
        let (tokens, at) = self.buckets.entry(source.clone()).or_insert((burst, now));
        *tokens = (*tokens + (now - *at).max(0.0) * rate).min(burst);
        *at = now;
        if *tokens < 1.0 {
            return Err(Refusal::new(
                RefusalCode::RateLimited,
                format!("too many requests from this address (at most {rate}/s): retry later"),
            ));
        }
        *tokens -= 1.0;
        Ok(())
    }
}
