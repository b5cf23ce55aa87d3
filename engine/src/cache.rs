//! The entity tiers (DESIGN §6 step 4): L1 in-process (moka), L2 shared (Redis, optional), L3 SQL.
//!
//! Correctness does not rest on eviction. Every cached entry remembers `read_seq`, the data
//! revision up to which every change had been applied when its SQL read began; `Versions` remembers,
//! per entity, the highest change revision seen. An entry is trusted only while no change to its
//! entity is newer than its `read_seq`. Eviction on change only saves memory and round trips.
//! Missing rows are cached the same way (negative caching); creating a row logs a change.
//!
//! This module does not tail the change log (see `changes`) and does not decide.

pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

pub use self::redis::RedisCache;
use crate::db::Database;
use crate::entities::{Facts, SharedEntity, load, share, to_cedar};
use crate::error::Result;
use crate::ids::EntityRef;

/// Which tier served an entity or a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The decision cache.
    Decision,
    /// In-process entity cache.
    L1,
    /// Shared Redis cache.
    L2,
    /// The database.
    L3,
}

impl Tier {
    /// Lowercase name for metrics and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decision => "decision",
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::L3 => "l3",
        }
    }
}

/// One entity's facts as cached, with their Cedar form built once.
#[derive(Debug)]
pub struct Loaded {
    /// The facts.
    pub facts: Facts,
    /// The Cedar entities built from them, shared with every request that uses them.
    pub cedar: Vec<SharedEntity>,
    /// Data revision applied when the SQL read that produced them began.
    pub read_seq: i64,
    /// The change counter when the read began (see `Versions::epoch`).
    pub epoch: u64,
}

/// Per entity, the highest change revision seen in the change log.
#[derive(Debug, Clone)]
pub struct Versions {
    map: moka::sync::Cache<EntityRef, i64>,
    /// Counts every recorded change: while it has not moved, nothing cached can be stale, and
    /// per-entity checks can be skipped.
    epoch: Arc<std::sync::atomic::AtomicU64>,
}

impl Versions {
    /// Versions remembered for `retention` after an entity's last change. Retention must exceed
    /// every cache TTL, so no entry read before a change can outlive the record of that change.
    pub fn new(retention: Duration) -> Self {
        Self {
            map: moka::sync::Cache::builder().time_to_live(retention).build(),
            epoch: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// The change counter now. Read it *before* reading anything that will be cached.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The highest change revision seen for `key` (0 if none within retention).
    pub fn get(&self, key: &EntityRef) -> i64 {
        self.map.get(key).unwrap_or(0)
    }

    /// Record a change of `key` at `rev`.
    pub fn bump(&self, key: EntityRef, rev: i64) {
        self.map
            .entry(key)
            .and_upsert_with(|current| current.map_or(rev, |c| (*c.value()).max(rev)));
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A cache shared between engines (L2). Failures are not errors: a shared cache that does not
/// answer is a miss, and the engine reads the database instead.
pub trait SharedCache: Send + Sync + std::fmt::Debug {
    /// The cached facts of `key` with their `read_seq`, if present and not older than any change
    /// recorded in the shared cache itself.
    fn get(&self, key: EntityRef) -> BoxFuture<'_, Option<(Facts, i64)>>;
    /// Store facts read at `read_seq`.
    fn put(&self, key: EntityRef, facts: Facts, read_seq: i64) -> BoxFuture<'_, ()>;
    /// Record changes (entity, revision): drop the entries and remember the revisions.
    fn changed(&self, changes: Vec<(EntityRef, i64)>) -> BoxFuture<'_, ()>;
}

/// Entity cache settings.
#[derive(Debug, Clone)]
pub struct EntityCacheConfig {
    /// L1 capacity in entities.
    pub l1_capacity: u64,
    /// L1 time to live.
    pub l1_ttl: Duration,
}

impl Default for EntityCacheConfig {
    fn default() -> Self {
        Self {
            l1_capacity: 200_000,
            // Correctness comes from the change log, not from expiry; the TTL only bounds memory
            // held by entities nobody asks for.
            l1_ttl: Duration::from_secs(600),
        }
    }
}

#[derive(Debug)]
struct Inner {
    db: Database,
    l1: moka::future::Cache<EntityRef, Arc<Loaded>>,
    l2: Option<Arc<dyn SharedCache>>,
    versions: Versions,
}

/// L1 → L2 → L3 lookups of entity facts. A cheap `Clone` handle.
#[derive(Debug, Clone)]
pub struct EntityCache {
    inner: Arc<Inner>,
}

impl EntityCache {
    /// A cache over `db`, optionally sharing through `l2`.
    pub fn new(
        db: Database,
        l2: Option<Arc<dyn SharedCache>>,
        versions: Versions,
        config: &EntityCacheConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                l1: moka::future::Cache::builder()
                    .max_capacity(config.l1_capacity)
                    .time_to_live(config.l1_ttl)
                    .build(),
                l2,
                versions,
            }),
        }
    }

    /// The version map shared with the change feed and the decision cache.
    pub fn versions(&self) -> &Versions {
        &self.inner.versions
    }

    /// The database (L3).
    pub fn db(&self) -> &Database {
        &self.inner.db
    }

    /// The shared cache, if configured.
    pub fn shared(&self) -> Option<&Arc<dyn SharedCache>> {
        self.inner.l2.as_ref()
    }

    /// Facts of `key`. With `trust_caches`, L1 then L2 may answer; otherwise the database does.
    /// `read_seq` is the data revision applied right now (the change feed's low water).
    pub async fn get(
        &self,
        key: EntityRef,
        read_seq: i64,
        trust_caches: bool,
    ) -> Result<(Arc<Loaded>, Tier)> {
        let epoch = self.inner.versions.epoch();
        if trust_caches {
            if let Some(hit) = self.inner.l1.get(&key).await {
                // Unchanged counter: nothing at all changed since the entry was read.
                if hit.epoch == epoch || hit.read_seq >= self.inner.versions.get(&key) {
                    metrics::counter!("velro_cache_hits_total", "tier" => "l1").increment(1);
                    return Ok((hit, Tier::L1));
                }
                self.inner.l1.invalidate(&key).await;
            }
            metrics::counter!("velro_cache_misses_total", "tier" => "l1").increment(1);
            if let Some(l2) = &self.inner.l2 {
                if let Some((facts, entry_seq)) = l2.get(key).await
                    && entry_seq >= self.inner.versions.get(&key)
                {
                    let loaded = Arc::new(Loaded {
                        cedar: to_cedar(&key, &facts)?.iter().map(share).collect(),
                        facts,
                        read_seq: entry_seq,
                        epoch,
                    });
                    self.inner.l1.insert(key, Arc::clone(&loaded)).await;
                    metrics::counter!("velro_cache_hits_total", "tier" => "l2").increment(1);
                    return Ok((loaded, Tier::L2));
                }
                metrics::counter!("velro_cache_misses_total", "tier" => "l2").increment(1);
            }
        }
        let facts = load(&self.inner.db, key).await?;
        metrics::counter!("velro_cache_hits_total", "tier" => "l3").increment(1);
        let loaded = Arc::new(Loaded {
            cedar: to_cedar(&key, &facts)?.iter().map(share).collect(),
            facts: facts.clone(),
            read_seq,
            epoch,
        });
        self.inner.l1.insert(key, Arc::clone(&loaded)).await;
        if let Some(l2) = &self.inner.l2 {
            l2.put(key, facts, read_seq).await;
        }
        Ok((loaded, Tier::L3))
    }

    /// Apply changes from the change log: record their revisions, drop L1 entries, tell L2.
    pub async fn changed(&self, changes: &[(EntityRef, i64)]) {
        for (key, rev) in changes {
            self.inner.versions.bump(*key, *rev);
            self.inner.l1.invalidate(key).await;
        }
        if let Some(l2) = &self.inner.l2 {
            l2.changed(changes.to_vec()).await;
        }
    }

    /// Number of entities in L1 (approximate).
    pub fn l1_len(&self) -> u64 {
        self.inner.l1.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_grow() {
        let versions = Versions::new(Duration::from_secs(60));
        let key = EntityRef::new(crate::ids::EntityKind::User, uuid::Uuid::now_v7());
        assert_eq!(versions.get(&key), 0);
        versions.bump(key, 11);
        versions.bump(key, 10);
        assert_eq!(versions.get(&key), 11);
        versions.bump(key, 12);
        assert_eq!(versions.get(&key), 12);
    }
}
