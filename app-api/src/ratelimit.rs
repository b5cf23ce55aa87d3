//! Fixed-window rate limits per user, per client IP and per endpoint class (DESIGN §8): counted in
//! memory when the API runs alone, in Redis (`INCR` + `EXPIRE`, shared by replicas) when
//! `REDIS_URL` is set. If Redis fails mid-run, counting falls back to memory for that request:
//! a limit is a fairness measure, not an access decision.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{ApiError, ApiResult};

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every request of a signed-in user.
    User,
    /// Every request from one IP.
    Ip,
    /// Generation creates of a user.
    Generation,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Ip => "ip",
            Self::Generation => "generation",
        }
    }
}

/// The limiter. Shared by every request.
pub struct Limiter {
    limits: [u32; 3],
    window: Duration,
    memory: Mutex<HashMap<(Class, String), (u64, u32)>>,
    redis: Option<redis::aio::ConnectionManager>,
    prefix: String,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.limits)
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

fn window_index(window: Duration) -> (u64, u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let size = window.as_secs().max(1);
    (now / size, size - now % size)
}

impl Limiter {
    /// Limits per minute for users, IPs and generation creates.
    pub fn new(
        user: u32,
        ip: u32,
        generations: u32,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Self {
        Self {
            limits: [user, ip, generations],
            window: Duration::from_secs(60),
            memory: Mutex::new(HashMap::new()),
            redis,
            prefix: "velro-api:rl:".into(),
        }
    }

    fn limit(&self, class: Class) -> u32 {
        match class {
            Class::User => self.limits[0],
            Class::Ip => self.limits[1],
            Class::Generation => self.limits[2],
        }
    }

    /// Count one request of `key` in `class`; 429 with `Retry-After` beyond the limit.
    pub async fn hit(&self, class: Class, key: &str) -> ApiResult<()> {
        let (window, retry_after) = window_index(self.window);
        let count = match self.redis_hit(class, key, window).await {
            Some(count) => count,
            None => self.memory_hit(class, key, window),
        };
        if count > u64::from(self.limit(class)) {
            metrics::counter!("velro_api_rate_limited_total", "class" => class.name()).increment(1);
            return Err(ApiError::RateLimited { retry_after });
        }
        Ok(())
    }

    async fn redis_hit(&self, class: Class, key: &str, window: u64) -> Option<u64> {
        let mut conn = self.redis.clone()?;
        let redis_key = format!("{}{}:{key}:{window}", self.prefix, class.name());
        let result: redis::RedisResult<(u64, i64)> = redis::pipe()
            .atomic()
            .incr(&redis_key, 1)
            .expire(
                &redis_key,
                i64::try_from(self.window.as_secs() * 2).unwrap_or(120),
            )
            .query_async(&mut conn)
            .await;
        match result {
            Ok((count, _)) => Some(count),
            Err(e) => {
                tracing::warn!(error = %e, "Redis rate limit failed; counting in memory");
                None
            }
        }
    }

    fn memory_hit(&self, class: Class, key: &str, window: u64) -> u64 {
        let Ok(mut memory) = self.memory.lock() else {
            return 0;
        };
        if memory.len() > 200_000 {
            memory.retain(|_, (w, _)| *w == window);
        }
        let entry = memory.entry((class, key.to_owned())).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        u64::from(entry.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_class_key_and_window() {
        let limiter = Limiter::new(3, 100, 1, None);
        for n in 1..=4 {
            assert_eq!(limiter.memory_hit(Class::User, "u1", 7), n);
        }
        assert_eq!(limiter.memory_hit(Class::User, "u2", 7), 1);
        assert_eq!(limiter.memory_hit(Class::Generation, "u1", 7), 1);
        assert_eq!(
            limiter.memory_hit(Class::User, "u1", 8),
            1,
            "a new window starts over"
        );
    }

    #[tokio::test]
    async fn beyond_the_limit_is_429_with_retry_after() {
        let limiter = Limiter::new(100, 100, 1, None);
        // Two hits in one window are over a limit of 1; a boundary in between gives a third try.
        let mut refused = None;
        for _ in 0..3 {
            if let Err(e) = limiter.hit(Class::Generation, "u").await {
                refused = Some(e);
                break;
            }
        }
        assert!(
            matches!(refused, Some(ApiError::RateLimited { retry_after }) if (1..=60).contains(&retry_after))
        );
    }
}
