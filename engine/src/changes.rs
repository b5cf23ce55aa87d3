//! Tailing the `authz_changes` log (DESIGN §6.1): every engine reads new rows, records their
//! revisions in the version map and drops the entities from its caches.
//!
//! The *low water* is the revision up to which every change has been applied; it is the data
//! revision of consistency tokens and the `read_seq` of what is read from the database. PostgreSQL
//! sequences can commit out of order, so a missing revision is a gap that is waited for (it may be
//! a transaction still running) and given up after `gap_timeout` (a rolled-back transaction).
//!
//! The feed also tracks its own health: beyond `max_staleness` without a successful read, the
//! engine stops trusting caches (see `Engine`). This module does not decide anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::Row;

use crate::cache::EntityCache;
use crate::clock::SharedClock;
use crate::db::{Database, Dialect, db_error};
use crate::error::Result;
use crate::ids::{EntityKind, EntityRef, parse_uuid};

/// Change feed settings.
#[derive(Debug, Clone)]
pub struct ChangeFeedConfig {
    /// How often the log is read when nothing wakes the feed earlier.
    pub interval: Duration,
    /// Longest time without a successful read before caches stop being trusted.
    pub max_staleness: Duration,
    /// How long a missing revision is waited for before it is assumed rolled back.
    pub gap_timeout: Duration,
    /// Most rows read per query.
    pub batch: i64,
}

impl Default for ChangeFeedConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            max_staleness: Duration::from_secs(5),
            gap_timeout: Duration::from_secs(10),
            batch: 1000,
        }
    }
}

#[derive(Debug, Default)]
struct TailState {
    /// Highest revision read.
    high: i64,
    /// Missing revisions below `high`, with when they were first noticed (ms).
    gaps: BTreeMap<i64, i64>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    cache: EntityCache,
    clock: SharedClock,
    config: ChangeFeedConfig,
    state: tokio::sync::Mutex<TailState>,
    low_water: AtomicI64,
    last_ok_ms: AtomicI64,
    wake: tokio::sync::Notify,
    applied: tokio::sync::watch::Sender<i64>,
}

/// The change-log tail of one engine. A cheap `Clone` handle.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

/// The highest revision in the change log: the data revision a writer's token should carry
/// after its transaction committed.
pub async fn current_revision(db: &Database) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(rev), 0) FROM authz_changes")
        .fetch_one(db.pool())
        .await
        .map_err(db_error)?;
    row.try_get::<i64, _>(0).map_err(db_error)
}

/// The cache keys a logged change names. A user's credit account shares the user's id.
pub fn keys_of(entity_type: &str, entity_id: &str) -> Vec<EntityRef> {
    let (Some(kind), Ok(id)) = (
        EntityKind::from_change_name(entity_type),
        parse_uuid(entity_id),
    ) else {
        return Vec::new();
    };
    let mut keys = vec![EntityRef::new(kind, id)];
    if kind == EntityKind::User {
        keys.push(EntityRef::new(EntityKind::CreditAccount, id));
    }
    keys
}

impl ChangeFeed {
    /// A feed starting after the newest change now in the log.
    pub async fn start(
        db: Database,
        cache: EntityCache,
        clock: SharedClock,
        config: ChangeFeedConfig,
    ) -> Result<Self> {
        let start = current_revision(&db).await?;
        let now = clock.now_ms();
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                cache,
                clock,
                config,
                state: tokio::sync::Mutex::new(TailState {
                    high: start,
                    gaps: BTreeMap::new(),
                }),
                low_water: AtomicI64::new(start),
                last_ok_ms: AtomicI64::new(now),
                wake: tokio::sync::Notify::new(),
                applied: tokio::sync::watch::Sender::new(start),
            }),
        })
    }

    /// Every change up to this revision has been applied.
    pub fn low_water(&self) -> i64 {
        self.inner.low_water.load(Ordering::Acquire)
    }

    /// Whether the log was read successfully within `max_staleness`.
    pub fn fresh(&self) -> bool {
        let max = i64::try_from(self.inner.config.max_staleness.as_millis()).unwrap_or(i64::MAX);
        self.lag_ms() <= max
    }

    /// Milliseconds since the last successful read of the log.
    pub fn lag_ms(&self) -> i64 {
        self.inner.clock.now_ms() - self.inner.last_ok_ms.load(Ordering::Acquire)
    }

    /// A receiver of low-water updates.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.applied.subscribe()
    }

    /// Ask the background loop to read the log now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Read new changes once and apply them. Returns the number of changes applied.
    pub async fn tick(&self) -> Result<usize> {
        let mut state = self.inner.state.lock().await;
        let result = self.read_and_apply(&mut state).await;
        match &result {
            Ok(_) => {
                self.inner
                    .last_ok_ms
                    .store(self.inner.clock.now_ms(), Ordering::Release);
            }
            Err(e) => {
                metrics::counter!("velro_change_feed_errors_total").increment(1);
                tracing::warn!(error = %e, lag_ms = self.lag_ms(), "cannot read the change log");
            }
        }
        metrics::gauge!("velro_change_feed_lag_ms").set(self.lag_ms() as f64);
        result
    }

    async fn read_and_apply(&self, state: &mut TailState) -> Result<usize> {
        let mut rows = self.fetch(NEW_CHANGES, &[state.high]).await?;
        if let (Some(first), Some(last)) = (state.gaps.keys().next(), state.gaps.keys().last()) {
            rows.extend(
                self.fetch(GAP_CHANGES, &[*first, *last])
                    .await?
                    .into_iter()
                    .filter(|(rev, _)| state.gaps.contains_key(rev)),
            );
        }
        let now = self.inner.clock.now_ms();
        let mut changes = Vec::new();
        let mut seen = BTreeSet::new();
        for (rev, keys) in rows {
            if !seen.insert(rev) {
                continue;
            }
            state.gaps.remove(&rev);
            if rev > state.high {
                for missing in (state.high + 1)..rev {
                    state.gaps.entry(missing).or_insert(now);
                }
                state.high = rev;
            }
            changes.extend(keys.into_iter().map(|k| (k, rev)));
        }
        let timeout = i64::try_from(self.inner.config.gap_timeout.as_millis()).unwrap_or(i64::MAX);
        state.gaps.retain(|rev, first_seen| {
            let keep = now - *first_seen < timeout;
            if !keep {
                tracing::debug!(rev, "change-log gap given up (rolled-back transaction)");
            }
            keep
        });
        if !changes.is_empty() {
            self.inner.cache.changed(&changes).await;
        }
        let low = state
            .gaps
            .keys()
            .next()
            .map_or(state.high, |first_gap| first_gap - 1);
        if low > self.low_water() {
            self.inner.low_water.store(low, Ordering::Release);
            self.inner.applied.send_replace(low);
        }
        Ok(changes.len())
    }

    async fn fetch(&self, sql: &'static str, binds: &[i64]) -> Result<Vec<(i64, Vec<EntityRef>)>> {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = query.bind(*bind);
        }
        let rows = query
            .bind(self.inner.config.batch)
            .fetch_all(self.inner.db.pool())
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let rev: i64 = row.try_get(0).map_err(db_error)?;
                let entity_type: String = row.try_get(1).map_err(db_error)?;
                let entity_id: String = row.try_get(2).map_err(db_error)?;
                Ok((rev, keys_of(&entity_type, &entity_id)))
            })
            .collect()
    }

    /// Read the log every `interval`, and at once when woken (by `wake`, PostgreSQL NOTIFY or a
    /// Redis message), until `shutdown` resolves.
    pub fn spawn(
        &self,
        redis_url: Option<String>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        if self.inner.db.dialect() == Dialect::Postgres {
            self.spawn_pg_listener(shutdown.clone());
        }
        if let Some(url) = redis_url {
            self.spawn_redis_listener(url, shutdown.clone());
        }
        let feed = self.clone();
        let mut shutdown = shutdown;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(feed.inner.config.interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    () = feed.inner.wake.notified() => {}
                    _ = shutdown.changed() => break,
                }
                // Errors are logged by `tick` and show in staleness.
                let _ = feed.tick().await;
            }
        })
    }

    fn spawn_pg_listener(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let feed = self.clone();
        let url = self.inner.db.url().to_owned();
        spawn_reconnecting("LISTEN", shutdown, move || {
            listen_pg(url.clone(), feed.clone())
        });
    }

    fn spawn_redis_listener(&self, url: String, shutdown: tokio::sync::watch::Receiver<bool>) {
        let feed = self.clone();
        spawn_reconnecting("Redis wake-up", shutdown, move || {
            listen_redis(url.clone(), feed.clone())
        });
    }
}

/// Run `listen` until shutdown, reconnecting a second after each failure. Wake-ups only speed
/// things up; the polling loop stays correct without them.
fn spawn_reconnecting<F, Fut, E>(
    what: &'static str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    listen: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                result = listen() => {
                    if let Err(e) = result {
                        tracing::debug!(listener = what, error = %e, "wake-up listener lost; polling continues");
                    }
                }
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

async fn listen_pg(url: String, feed: ChangeFeed) -> std::result::Result<(), sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
    listener.listen(CHANNEL).await?;
    loop {
        listener.recv().await?;
        feed.wake();
    }
}

async fn listen_redis(url: String, feed: ChangeFeed) -> std::result::Result<(), redis::RedisError> {
    let client = redis::Client::open(url.as_str())?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(REDIS_CHANNEL).await?;
    let mut messages = pubsub.on_message();
    while futures::StreamExt::next(&mut messages).await.is_some() {
        feed.wake();
    }
    Ok(())
}

const NEW_CHANGES: &str = "SELECT rev, entity_type, entity_id FROM authz_changes \
     WHERE rev > $1 ORDER BY rev LIMIT $2";
const GAP_CHANGES: &str = "SELECT rev, entity_type, entity_id FROM authz_changes \
     WHERE rev >= $1 AND rev <= $2 ORDER BY rev LIMIT $3";

/// PostgreSQL NOTIFY channel written by the `authz_changes` trigger.
pub const CHANNEL: &str = "velro_authz_changes";
/// Redis channel writers may publish to after committing, to wake every engine at once.
pub const REDIS_CHANNEL: &str = "velro:authz_changes";

/// Wake every engine listening on Redis (best effort; polling catches up anyway).
pub async fn publish_wake(conn: &mut redis::aio::ConnectionManager, revision: i64) {
    let result: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(REDIS_CHANNEL)
        .arg(revision)
        .query_async(conn)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot publish change wake-up");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_names_map_to_cache_keys() {
        let id = "0190b2f4-6c1e-7c2a-9d7e-1f2a3b4c5d6e";
        let keys = keys_of("user", id);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].kind, EntityKind::CreditAccount);
        assert_eq!(keys_of("project", id)[0].kind, EntityKind::Project);
        assert!(keys_of("spaceship", id).is_empty());
        assert!(keys_of("user", "not-a-uuid").is_empty());
    }
}
