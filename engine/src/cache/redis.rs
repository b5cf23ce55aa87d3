//! The shared L2 entity cache in Redis. Keys (under a configurable prefix):
//! `e:<kind>:<id>` → `{"s": read_seq, "f": facts}` with a TTL, and `v:<kind>:<id>` → the highest
//! change revision any engine has seen for that entity. An entry is served only when its `read_seq`
//! is not older than that revision, and a write is refused (by a Lua script) when it already is.
//!
//! Redis is an accelerator: every failure or slow answer is a miss, the engine reads SQL, and
//! the cache stays out of the way for a short back-off so a dead Redis costs nothing per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

use super::SharedCache;
use crate::clock::SharedClock;
use crate::entities::Facts;
use crate::error::{Error, Result};
use crate::ids::EntityRef;

/// Stores an entry unless the entity's recorded version is already newer than the entry.
const PUT_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[2])
if v and tonumber(v) > tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
";

/// For each (version key, entry key) pair: raise the version to the change's revision, drop the entry.
const CHANGED_SCRIPT: &str = r"
for i = 1, #KEYS, 2 do
  local rev = tonumber(ARGV[(i + 1) / 2])
  local v = redis.call('GET', KEYS[i])
  if not v or tonumber(v) < rev then
    redis.call('SET', KEYS[i], rev, 'EX', ARGV[#ARGV])
  end
  redis.call('DEL', KEYS[i + 1])
end
return 1
";

/// Redis L2 settings.
#[derive(Debug, Clone)]
pub struct RedisCacheConfig {
    /// Key prefix, e.g. `velro:`; lets several deployments (or tests) share one Redis.
    pub prefix: String,
    /// Lifetime of a cached entry.
    pub entry_ttl: Duration,
    /// Lifetime of a recorded version; must exceed `entry_ttl`.
    pub version_ttl: Duration,
    /// Longest wait for one Redis operation before treating it as a miss.
    pub op_timeout: Duration,
    /// How long to skip Redis after a failure.
    pub backoff: Duration,
}

impl Default for RedisCacheConfig {
    fn default() -> Self {
        Self {
            prefix: "velro:".into(),
            entry_ttl: Duration::from_secs(300),
            version_ttl: Duration::from_secs(900),
            op_timeout: Duration::from_millis(100),
            backoff: Duration::from_secs(1),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    s: i64,
    f: Facts,
}

#[derive(Debug)]
struct Inner {
    conn: ConnectionManager,
    config: RedisCacheConfig,
    clock: SharedClock,
    down_until_ms: AtomicI64,
    put_script: redis::Script,
    changed_script: redis::Script,
}

/// The Redis-backed shared cache.
#[derive(Debug, Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

impl RedisCache {
    /// A cache on the Redis at `url`. Connects lazily: an unreachable Redis at start-up is only a
    /// series of misses.
    pub fn new(url: &str, config: RedisCacheConfig, clock: SharedClock) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::Config(format!("invalid Redis URL: {e}")))?;
        let conn = ConnectionManager::new_lazy_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.op_timeout * 5))
                .set_response_timeout(Some(config.op_timeout))
                .set_number_of_retries(1),
        )
        .map_err(|e| Error::Config(format!("cannot set up Redis: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                config,
                clock,
                down_until_ms: AtomicI64::new(0),
                put_script: redis::Script::new(PUT_SCRIPT),
                changed_script: redis::Script::new(CHANGED_SCRIPT),
            }),
        })
    }

    fn entry_key(&self, key: &EntityRef) -> String {
        format!(
            "{}e:{}:{}",
            self.inner.config.prefix,
            key.kind.change_name(),
            key.id
        )
    }

    fn version_key(&self, key: &EntityRef) -> String {
        format!(
            "{}v:{}:{}",
            self.inner.config.prefix,
            key.kind.change_name(),
            key.id
        )
    }

    fn available(&self) -> bool {
        self.inner.clock.now_ms() >= self.inner.down_until_ms.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        let backoff = i64::try_from(self.inner.config.backoff.as_millis()).unwrap_or(1000);
        self.inner
            .down_until_ms
            .store(self.inner.clock.now_ms() + backoff, Ordering::Relaxed);
        metrics::counter!("velro_l2_errors_total").increment(1);
        tracing::warn!(
            l2.operation = what,
            error = %error,
            backoff_ms = backoff,
            "Redis cache unavailable; reading the database instead"
        );
    }

    /// Run `op` with the operation timeout; failures mark Redis down and yield `None`.
    async fn run<T, F>(&self, what: &str, op: F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.available() {
            return None;
        }
        match tokio::time::timeout(self.inner.config.op_timeout, op).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.failed(what, &e);
                None
            }
            Err(_) => {
                self.failed(what, &"timed out");
                None
            }
        }
    }

    /// Whether Redis answers a PING now.
    pub async fn ping(&self) -> bool {
        let mut conn = self.inner.conn.clone();
        matches!(
            tokio::time::timeout(
                self.inner.config.op_timeout,
                redis::cmd("PING").query_async::<String>(&mut conn)
            )
            .await,
            Ok(Ok(_))
        )
    }

    /// A connection for other Redis users of the engine (violation windows, wake-ups).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// The configured key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.config.prefix
    }
}

impl SharedCache for RedisCache {
    fn get(&self, key: EntityRef) -> BoxFuture<'_, Option<(Facts, i64)>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let keys = [self.entry_key(&key), self.version_key(&key)];
            let (entry, version): (Option<String>, Option<i64>) = self
                .run("get", async {
                    redis::cmd("MGET").arg(&keys).query_async(&mut conn).await
                })
                .await?;
            let entry: Entry = serde_json::from_str(&entry?).ok()?;
            if version.is_some_and(|v| v > entry.s) {
                return None;
            }
            Some((entry.f, entry.s))
        })
    }

    fn put(&self, key: EntityRef, facts: Facts, read_seq: i64) -> BoxFuture<'_, ()> {
        let this = self.clone();
        Box::pin(async move {
            if !this.available() {
                return;
            }
            let Ok(json) = serde_json::to_string(&Entry {
                s: read_seq,
                f: facts,
            }) else {
                return;
            };
            // Writing is off the request path: spawn it.
            tokio::spawn(async move {
                let mut conn = this.inner.conn.clone();
                let mut invocation = this.inner.put_script.key(this.entry_key(&key));
                invocation
                    .key(this.version_key(&key))
                    .arg(json)
                    .arg(read_seq)
                    .arg(this.inner.config.entry_ttl.as_secs().max(1));
                let _: Option<i64> = this.run("put", invocation.invoke_async(&mut conn)).await;
            });
        })
    }

    fn changed(&self, changes: Vec<(EntityRef, i64)>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if changes.is_empty() {
                return;
            }
            let mut conn = self.inner.conn.clone();
            let mut invocation = self.inner.changed_script.prepare_invoke();
            for (key, rev) in &changes {
                invocation
                    .key(self.version_key(key))
                    .key(self.entry_key(key))
                    .arg(*rev);
            }
            invocation.arg(self.inner.config.version_ttl.as_secs().max(1));
            // Retried by the next change or expired by TTL if Redis is down; the local version
            // map already protects this engine.
            let _: Option<i64> = self
                .run("changed", invocation.invoke_async(&mut conn))
                .await;
        })
    }
}
