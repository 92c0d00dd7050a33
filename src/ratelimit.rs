//! Rate limits: a token bucket per key (a client's IP, a user id), so one client that
//! loops on a request cannot take the server from everybody else.
//!
//! Each key may make `burst` requests at once and `per_sec` a second after that. The
//! bucket is kept as the generic cell rate algorithm keeps it: one instant per key, the
//! "theoretical arrival time" (TAT) at which the key's bucket is full again. A request
//! at `now` moves it one interval (`1 / per_sec`) later, and is refused if that would
//! put it more than `burst` intervals ahead of `now`. A key whose TAT has passed has a
//! full bucket: it is the same as a key never seen, so it can be forgotten, which is
//! how memory stays bounded.
//!
//! Time is an input, as everywhere in Huddle: [`RateLimiter::check`] takes `now`
//! from the caller (the call service's clock), and the unit tests below run minutes
//! of traffic in simulated time.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};

use crate::calls::model::UserId;

/// Most keys one limiter remembers. A limited key costs a few dozen bytes; past this
/// many, the keys closest to a full bucket are forgotten (see [`RateLimiter::check`]).
pub const MAX_KEYS: usize = 100_000;

/// How often buckets that have filled up again are forgotten, in the limiter's time.
const SWEEP_EVERY_SECS: i64 = 60;

/// A budget: `burst` requests at once, then `per_sec` a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_sec: u32,
    pub burst: u32,
}

/// A refusal: the key may try again after this many whole seconds (at least 1, as the
/// HTTP `Retry-After` header wants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

/// A token bucket per key `K`; see the module documentation.
#[derive(Debug)]
pub struct RateLimiter<K> {
    /// `None`: the limit is off and every request passes.
    cell: Option<Cell>,
    /// Most keys remembered at once.
    max_keys: usize,
    // A std mutex: held for a map lookup and insert, never across an await.
    buckets: Mutex<Buckets<K>>,
    /// Requests refused since the process began, for `/metrics`.
    refused: AtomicU64,
}

/// The algorithm's two constants for one [`Rate`].
#[derive(Debug, Clone, Copy)]
struct Cell {
    /// Time one request takes out of the bucket: `1 s / per_sec`.
    interval: Duration,
    /// How far ahead of `now` a TAT may run: `burst` intervals.
    tolerance: Duration,
}

#[derive(Debug)]
struct Buckets<K> {
    /// Each remembered key's TAT; a key absent has a full bucket.
    tat: HashMap<K, DateTime<Utc>>,
    /// When full buckets were last forgotten.
    swept: Option<DateTime<Utc>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter for `rate`; a rate whose `per_sec` or `burst` is 0 is no limit at all.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        let cell = (rate.per_sec > 0 && rate.burst > 0).then(|| {
            let interval = Duration::nanoseconds(1_000_000_000 / i64::from(rate.per_sec));
            Cell {
                interval,
                tolerance: interval * i32::try_from(rate.burst).unwrap_or(i32::MAX),
            }
        });
        Self {
            cell,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(Buckets {
                tat: HashMap::new(),
                swept: None,
            }),
            refused: AtomicU64::new(0),
        }
    }

    /// Takes one request out of `key`'s bucket at `now`, or says how long until it can.
    /// A refused request takes nothing, so a client that keeps retrying is served
    /// as soon as its budget allows.
    ///
    /// Memory: every minute (of `now`) the keys whose buckets are full again are
    /// forgotten; and a new key arriving when [`MAX_KEYS`]-many are remembered first
    /// forgets the full ones, then, if that is not enough, an eighth of the keys, those
    /// closest to full. Those keys are forgiven the rest of their wait: the price of
    /// a bound, paid by the clients that were least limited.
    pub fn check(&self, key: &K, now: DateTime<Utc>) -> Result<(), RetryAfter> {
        let Some(cell) = self.cell else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets
            .swept
            .is_none_or(|at| now - at >= Duration::seconds(SWEEP_EVERY_SECS) || now < at)
        {
            buckets.tat.retain(|_, tat| *tat > now);
            buckets.swept = Some(now);
        }
        let known = buckets.tat.get(key).copied();
        // Capped at one full burst ahead, so that a wall clock stepped back (NTP) costs
        // a client at most one burst's wait, not the size of the step.
        let tat = known.map_or(now, |tat| tat.clamp(now, now + cell.tolerance));
        let next = tat + cell.interval;
        let ahead = next - now;
        if ahead > cell.tolerance {
            if known.is_some_and(|known| known > tat) {
                // The clock went back: keep the capped TAT, or the key would wait
                // for the old one after all.
                buckets.tat.insert(key.clone(), tat);
            }
            self.refused.fetch_add(1, Ordering::Relaxed);
            let wait = ahead - cell.tolerance;
            let secs = (wait.num_milliseconds() + 999) / 1000;
            return Err(RetryAfter(secs.max(1).unsigned_abs()));
        }
        if known.is_none() && buckets.tat.len() >= self.max_keys {
            buckets.make_room(self.max_keys, now);
        }
        buckets.tat.insert(key.clone(), next);
        Ok(())
    }

    /// Keys remembered now (those limited in the last minute or so).
    pub fn keys(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tat
            .len()
    }

    /// Requests refused since the process began.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl<K: Eq + Hash> Buckets<K> {
    /// Brings the map below `max_keys`: full buckets first, then the fullest eighth.
    fn make_room(&mut self, max_keys: usize, now: DateTime<Utc>) {
        self.tat.retain(|_, tat| *tat > now);
        self.swept = Some(now);
        let keep = max_keys - (max_keys / 8).max(1);
        if self.tat.len() <= keep {
            return;
        }
        let excess = self.tat.len() - keep;
        let mut tats: Vec<DateTime<Utc>> = self.tat.values().copied().collect();
        let (_, cutoff, _) = tats.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        self.tat.retain(|_, tat| *tat > cutoff);
    }
}

/// The key a client's IP is limited under. An IPv6 host usually holds a whole /64, so
/// its addresses share one bucket; an IPv4 address reached over IPv6 (`::ffff:a.b.c.d`)
/// is that IPv4 address.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The limiters of the server, one instance each, shared by every door that spends
/// the same budget (REST now; Socket.IO events can take the same instances).
#[derive(Debug)]
pub struct RateLimits {
    /// Per client IP ([`ip_key`]), before any token is read: RATE_LIMIT_IP_*.
    pub ip: RateLimiter<IpAddr>,
    /// Per user, once their token is verified: RATE_LIMIT_USER_*.
    pub user: RateLimiter<UserId>,
}

impl RateLimits {
    pub fn new(ip: Rate, user: Rate) -> Self {
        Self {
            ip: RateLimiter::new(ip, MAX_KEYS),
            user: RateLimiter::new(user, MAX_KEYS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn ms(n: i64) -> Duration {
        Duration::milliseconds(n)
    }

    fn limiter(per_sec: u32, burst: u32) -> RateLimiter<&'static str> {
        RateLimiter::new(Rate { per_sec, burst }, MAX_KEYS)
    }

    #[test]
    fn a_burst_passes_and_the_next_request_is_told_when_to_retry() {
        let l = limiter(2, 5);
        for _ in 0..5 {
            assert_eq!(l.check(&"a", t0()), Ok(()));
        }
        assert_eq!(l.check(&"a", t0()), Err(RetryAfter(1)));
        assert_eq!(l.refused(), 1);
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let l = limiter(2, 2);
        assert!(l.check(&"a", t0()).is_ok());
        assert!(l.check(&"a", t0()).is_ok());
        assert!(l.check(&"a", t0() + ms(499)).is_err());
        assert!(
            l.check(&"a", t0() + ms(500)).is_ok(),
            "one token back after 1/2 s"
        );
        assert!(l.check(&"a", t0() + ms(500)).is_err());
        // A minute of steady traffic at exactly the rate is never refused.
        for i in 2..120 {
            assert!(l.check(&"a", t0() + ms(500 * i)).is_ok(), "request {i}");
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        let l = limiter(1, 1);
        assert!(l.check(&"a", t0()).is_ok());
        assert_eq!(l.check(&"a", t0()), Err(RetryAfter(1)));
        assert_eq!(
            l.check(&"a", t0() + ms(999)),
            Err(RetryAfter(1)),
            "1 ms left"
        );
    }

    #[test]
    fn refused_requests_take_nothing() {
        let l = limiter(1, 1);
        assert!(l.check(&"a", t0()).is_ok());
        for i in 0..50 {
            assert!(l.check(&"a", t0() + ms(i * 10)).is_err());
        }
        assert!(l.check(&"a", t0() + ms(1000)).is_ok());
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let l = limiter(1, 1);
        assert!(l.check(&"a", t0()).is_ok());
        assert!(l.check(&"a", t0()).is_err());
        assert!(l.check(&"b", t0()).is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        for (per_sec, burst) in [(0, 10), (10, 0), (0, 0)] {
            let l = limiter(per_sec, burst);
            for _ in 0..1000 {
                assert!(l.check(&"a", t0()).is_ok());
            }
            assert_eq!(l.keys(), 0, "an off limit remembers nothing");
        }
    }

    #[test]
    fn a_clock_stepped_back_costs_at_most_one_burst() {
        let l = limiter(1, 3);
        for _ in 0..3 {
            assert!(l.check(&"a", t0()).is_ok());
        }
        let an_hour_earlier = t0() - Duration::hours(1);
        assert_eq!(l.check(&"a", an_hour_earlier), Err(RetryAfter(1)));
        assert!(l.check(&"a", an_hour_earlier + ms(1000)).is_ok());
    }

    #[test]
    fn buckets_that_filled_up_again_are_forgotten() {
        let l = limiter(10, 10);
        for key in ["a", "b", "c"] {
            assert!(l.check(&key, t0()).is_ok());
        }
        assert_eq!(l.keys(), 3);
        let later = t0() + Duration::seconds(SWEEP_EVERY_SECS);
        assert!(l.check(&"d", later).is_ok());
        assert_eq!(l.keys(), 1, "only the key just seen");
    }

    #[test]
    fn past_the_cap_on_keys_the_fullest_buckets_are_forgotten() {
        let l = RateLimiter::new(
            Rate {
                per_sec: 1,
                burst: 100,
            },
            16,
        );
        let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        // "k0" is the busiest: its bucket is the emptiest, and it must stay limited.
        for _ in 0..100 {
            assert!(l.check(&keys[0], t0()).is_ok());
        }
        for (i, key) in keys.iter().enumerate().skip(1) {
            assert!(l.check(key, t0() + ms(i as i64)).is_ok());
            assert!(l.keys() <= 16, "{} keys", l.keys());
        }
        assert!(l.check(&keys[0], t0() + ms(100)).is_err(), "still limited");
    }

    #[test]
    fn ipv6_hosts_are_limited_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(other));
        assert_eq!(
            ip_key("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
    }
}
