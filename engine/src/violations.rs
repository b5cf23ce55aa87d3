//! Security-violation detection (DESIGN §6.5): a sliding one-second window per principal and per
//! client IP counts denials and invalid inputs; above the threshold it reports a violation (once per
//! window) and, when configured, locks the principal out for a while. With Redis, windows and
//! lockouts are shared so replicas agree; without it (or while Redis fails) they are local.
//!
//! The window is the usual two-bucket estimate: this second's count plus the previous second's
//! weighted by how much of it still overlaps the last 1000 ms.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::clock::SharedClock;

/// Detector settings.
#[derive(Debug, Clone)]
pub struct ViolationConfig {
    /// Offences per second above which a violation is reported (`SECURITY_VIOLATION_THRESHOLD`).
    pub threshold_per_sec: u32,
    /// How long a violating principal is denied (`SECURITY_LOCKOUT_SECONDS`); zero disables.
    pub lockout: Duration,
}

impl Default for ViolationConfig {
    fn default() -> Self {
        Self {
            threshold_per_sec: 5,
            lockout: Duration::ZERO,
        }
    }
}

/// What was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// A request was denied.
    Denied,
    /// A request was malformed (a possible probe).
    Invalid,
}

/// A reported violation.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// `principal:<entity>` or `ip:<address>`.
    pub subject: String,
    /// The estimated offences in the last second.
    pub rate: f64,
    /// Whether the principal is now locked out.
    pub locked_out: bool,
}

#[derive(Debug, Clone, Copy)]
struct Buckets {
    second: i64,
    current: u32,
    previous: u32,
    reported: bool,
}

#[derive(Debug, Clone)]
struct Shared {
    conn: ConnectionManager,
    prefix: String,
}

/// The detector. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ViolationDetector {
    config: ViolationConfig,
    clock: SharedClock,
    windows: moka::sync::Cache<String, Arc<std::sync::Mutex<Buckets>>>,
    lockouts: moka::sync::Cache<String, i64>,
    shared: Option<Shared>,
}

/// Longest wait for Redis before counting locally.
const REDIS_TIMEOUT: Duration = Duration::from_millis(50);

impl ViolationDetector {
    /// A detector; with `redis` (connection and key prefix) windows are shared.
    pub fn new(
        config: ViolationConfig,
        clock: SharedClock,
        redis: Option<(ConnectionManager, String)>,
    ) -> Self {
        Self {
            config,
            clock,
            windows: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(10))
                .build(),
            lockouts: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            shared: redis.map(|(conn, prefix)| Shared { conn, prefix }),
        }
    }

    /// Count an offence by `principal` from `ip`; returns the violations it triggered.
    pub async fn note(
        &self,
        principal: Option<&str>,
        ip: Option<IpAddr>,
        _offence: Offence,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        if let Some(p) = principal
            && let Some(v) = self.count(format!("principal:{p}"), Some(p)).await
        {
            out.push(v);
        }
        if let Some(ip) = ip
            && let Some(v) = self.count(format!("ip:{ip}"), None).await
        {
            out.push(v);
        }
        out
    }

    async fn count(&self, subject: String, principal: Option<&str>) -> Option<Violation> {
        let now = self.clock.now_ms();
        let second = now.div_euclid(1000);
        let fraction = (now.rem_euclid(1000)) as f64 / 1000.0;
        let shared = match &self.shared {
            Some(shared) => self.count_shared(shared, &subject, second).await,
            None => None,
        };
        let window = self.windows.get_with(subject.clone(), || {
            Arc::new(std::sync::Mutex::new(Buckets {
                second,
                current: 0,
                previous: 0,
                reported: false,
            }))
        });
        let (rate, newly_over) = {
            let mut b = window
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if b.second != second {
                b.previous = if b.second == second - 1 { b.current } else { 0 };
                b.current = 0;
                b.second = second;
                b.reported = false;
            }
            b.current = b.current.saturating_add(1);
            let (current, previous) = shared.unwrap_or((b.current, b.previous));
            let rate = f64::from(current) + f64::from(previous) * (1.0 - fraction);
            let over = rate > f64::from(self.config.threshold_per_sec);
            let newly = over && !b.reported;
            if newly {
                b.reported = true;
            }
            (rate, newly)
        };
        if !newly_over {
            return None;
        }
        let mut locked_out = false;
        if let Some(principal) = principal
            && !self.config.lockout.is_zero()
        {
            self.lock_out(principal, now).await;
            locked_out = true;
        }
        metrics::counter!("velro_security_violations_total").increment(1);
        Some(Violation {
            subject,
            rate,
            locked_out,
        })
    }

    async fn count_shared(
        &self,
        shared: &Shared,
        subject: &str,
        second: i64,
    ) -> Option<(u32, u32)> {
        let current_key = format!("{}viol:{subject}:{second}", shared.prefix);
        let previous_key = format!("{}viol:{subject}:{}", shared.prefix, second - 1);
        let mut conn = shared.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&current_key, 1)
            .expire(&current_key, 3)
            .ignore()
            .get(&previous_key);
        let result: Result<redis::RedisResult<(u32, Option<u32>)>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async(&mut conn)).await;
        match result {
            Ok(Ok((current, previous))) => Some((current, previous.unwrap_or(0))),
            _ => None,
        }
    }

    async fn lock_out(&self, principal: &str, now: i64) {
        let until = now + i64::try_from(self.config.lockout.as_millis()).unwrap_or(0);
        self.lockouts.insert(principal.to_owned(), until);
        if let Some(shared) = &self.shared {
            let mut conn = shared.conn.clone();
            let key = format!("{}lockout:{principal}", shared.prefix);
            let ms = u64::try_from(self.config.lockout.as_millis())
                .unwrap_or(1)
                .max(1);
            let _: Result<redis::RedisResult<()>, _> = tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::cmd("SET")
                    .arg(&key)
                    .arg(until)
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut conn),
            )
            .await;
        }
    }

    /// Whether lockouts are configured at all (callers can skip naming the principal otherwise).
    pub fn lockouts_enabled(&self) -> bool {
        !self.config.lockout.is_zero()
    }

    /// Whether `principal` is locked out now.
    pub async fn locked_out(&self, principal: &str) -> bool {
        if self.config.lockout.is_zero() {
            return false;
        }
        let now = self.clock.now_ms();
        if self
            .lockouts
            .get(principal)
            .is_some_and(|until| until > now)
        {
            return true;
        }
        if let Some(shared) = &self.shared {
            let mut conn = shared.conn.clone();
            let key = format!("{}lockout:{principal}", shared.prefix);
            let result: Result<redis::RedisResult<Option<i64>>, _> = tokio::time::timeout(
                REDIS_TIMEOUT,
                redis::cmd("GET").arg(&key).query_async(&mut conn),
            )
            .await;
            if let Ok(Ok(Some(until))) = result
                && until > now
            {
                self.lockouts.insert(principal.to_owned(), until);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn detector(lockout: u64) -> (ViolationDetector, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let d = ViolationDetector::new(
            ViolationConfig {
                threshold_per_sec: 5,
                lockout: Duration::from_secs(lockout),
            },
            Arc::new(clock.clone()),
            None,
        );
        (d, clock)
    }

    #[tokio::test]
    async fn five_per_second_is_fine_the_sixth_is_a_violation_reported_once() {
        let (d, _) = detector(0);
        for _ in 0..5 {
            assert!(d.note(Some("u"), None, Offence::Denied).await.is_empty());
        }
        let v = d.note(Some("u"), None, Offence::Denied).await;
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].subject, "principal:u");
        assert!(!v[0].locked_out);
        assert!(d.note(Some("u"), None, Offence::Denied).await.is_empty());
        assert!(!d.locked_out("u").await);
    }

    #[tokio::test]
    async fn the_window_slides() {
        let (d, clock) = detector(0);
        for _ in 0..5 {
            d.note(Some("u"), None, Offence::Invalid).await;
        }
        clock.advance(2_000);
        for _ in 0..5 {
            assert!(d.note(Some("u"), None, Offence::Invalid).await.is_empty());
        }
    }

    #[tokio::test]
    async fn ips_are_counted_separately_and_lockouts_expire() {
        let (d, clock) = detector(30);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let mut violations = Vec::new();
        for _ in 0..6 {
            violations.extend(d.note(Some("u"), Some(ip), Offence::Denied).await);
        }
        assert_eq!(violations.len(), 2);
        assert!(violations.iter().any(|v| v.subject == "ip:198.51.100.7"));
        assert!(d.locked_out("u").await);
        assert!(!d.locked_out("someone-else").await);
        clock.advance(30_001);
        assert!(!d.locked_out("u").await);
    }
}
