//! `Engine`: the decision path of DESIGN §6, wired together. A cheap `Clone` handle over the policy
//! stores, the entity tiers, the change feed, the decision cache, the media URL signer, the audit
//! log and the violation detector. It opens no network servers; the PDP does.
//!
//! The embedded and distributed modes differ only in configuration: the database URL (SQLite or
//! PostgreSQL) and whether a Redis URL is set.

mod check;
mod decision_cache;
mod lookup;
mod media;
mod slice;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::audit::{AuditConfig, AuditLog, AuditRecord, AuditWriter, RecordKind, SinkConfig};
use crate::cache::{EntityCache, EntityCacheConfig, RedisCache, SharedCache, Versions};
use crate::changes::{ChangeFeed, ChangeFeedConfig};
use crate::clock::SharedClock;
use crate::consistency::ConsistencyToken;
use crate::db::{Database, DbConfig};
use crate::error::{Error, Result};
use crate::media_url::{KeyRing, MediaUrlConfig, MediaUrlSigner};
use crate::stores::PolicyStores;
use crate::violations::{ViolationConfig, ViolationDetector};

use decision_cache::DecisionCache;
pub use media::{MintOutcome, MintRequest, MintedMedia};

/// Everything the engine needs, typed. The engine never reads the environment.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The store whose entities come from the database (`velro`); other stores take entities
    /// from the request.
    pub sql_store: String,
    /// The database.
    pub database: DbConfig,
    /// Redis for the shared cache, shared violation windows and wake-ups; `None` = L1 only.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this engine writes.
    pub redis_prefix: String,
    /// Change-log tailing.
    pub feed: ChangeFeedConfig,
    /// L1 entity cache.
    pub entity_cache: EntityCacheConfig,
    /// Decision cache capacity (entries).
    pub decision_cache_capacity: u64,
    /// Decision cache time to live.
    pub decision_ttl: Duration,
    /// `EMERGENCY_AUTH_MODE`: break-glass policies may apply.
    pub emergency_mode: bool,
    /// Audit sink spec: `file:<dir>`, `stdout` or `postgres`.
    pub audit_sink: String,
    /// Name of this instance's audit chain.
    pub audit_instance: String,
    /// Media URL signing.
    pub media: MediaUrlConfig,
    /// Key ring file; generated on first start if absent.
    pub keys_file: PathBuf,
    /// Violation detection.
    pub violations: ViolationConfig,
    /// Largest accepted request context (serialized JSON bytes).
    pub max_context_bytes: usize,
    /// Most items in a batch check.
    pub max_batch: usize,
    /// Most candidates a lookup page examines before returning a truncated page.
    pub lookup_scan_budget: usize,
}

impl EngineConfig {
    /// Embedded defaults for a data folder: SQLite, file audit, local keys.
    pub fn embedded(data_dir: &std::path::Path) -> Self {
        Self {
            sql_store: crate::decision::DEFAULT_STORE.into(),
            database: DbConfig::new(format!("sqlite://{}", data_dir.join("velro.db").display())),
            redis_url: None,
            redis_prefix: "velro:".into(),
            feed: ChangeFeedConfig::default(),
            entity_cache: EntityCacheConfig::default(),
            decision_cache_capacity: 200_000,
            decision_ttl: Duration::from_secs(600),
            emergency_mode: false,
            audit_sink: format!("file:{}", data_dir.join("audit").display()),
            audit_instance: "pdp".into(),
            media: MediaUrlConfig::default(),
            keys_file: data_dir.join("keys").join("media-signing.json"),
            violations: ViolationConfig::default(),
            max_context_bytes: 16 * 1024,
            max_batch: 1000,
            lookup_scan_budget: 10_000,
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: EngineConfig,
    stores: PolicyStores,
    db: Database,
    cache: EntityCache,
    redis: Option<RedisCache>,
    feed: ChangeFeed,
    decisions: DecisionCache,
    /// Request contexts already parsed against their action's context type.
    contexts: moka::sync::Cache<(Arc<str>, String, String), cedar_policy::Context>,
    signer: MediaUrlSigner,
    audit: AuditLog,
    violations: ViolationDetector,
    clock: SharedClock,
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// The decision engine. Clone freely; all clones share state.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Background work an engine runs; await `finished` after `Engine::shutdown` to flush the audit log.
#[derive(Debug)]
pub struct EngineTasks {
    feed: tokio::task::JoinHandle<()>,
    audit: AuditWriter,
}

impl EngineTasks {
    /// Wait until the change feed stopped and every audit record is written. Call after every
    /// `Engine` handle is dropped (the audit writer drains when its last sender goes).
    pub async fn finished(self) {
        if let Err(e) = self.feed.await {
            tracing::error!(error = %e, "change feed ended abnormally");
        }
        self.audit.finished().await;
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Every store has a loaded version.
    pub policies_loaded: bool,
    /// The database answered just now.
    pub database: bool,
    /// The change log was read within the staleness bound.
    pub change_feed_fresh: bool,
    /// Milliseconds since the change log was last read.
    pub change_feed_lag_ms: i64,
    /// Redis answered (`None` when not configured).
    pub redis: Option<bool>,
    /// Records waiting for the audit writer.
    pub audit_queue: usize,
    /// Data revision applied.
    pub revision: i64,
}

impl Health {
    /// Ready to answer: policies, database and a fresh change feed.
    pub fn ready(&self) -> bool {
        self.policies_loaded && self.database && self.change_feed_fresh
    }
}

impl Engine {
    /// Connect, migrate, open the audit log and key ring, and start tailing the change log.
    pub async fn start(
        config: EngineConfig,
        stores: PolicyStores,
        clock: SharedClock,
    ) -> Result<(Self, EngineTasks)> {
        let db = Database::connect(&config.database).await?;
        let redis = match &config.redis_url {
            Some(url) => Some(RedisCache::new(
                url,
                crate::cache::redis::RedisCacheConfig {
                    prefix: config.redis_prefix.clone(),
                    ..Default::default()
                },
                Arc::clone(&clock),
            )?),
            None => None,
        };
        let shared: Option<Arc<dyn SharedCache>> = redis
            .as_ref()
            .map(|r| Arc::new(r.clone()) as Arc<dyn SharedCache>);
        // Versions must outlive every cached entry they guard (L1, decisions, L2 entries).
        let retention =
            (config.entity_cache.l1_ttl.max(config.decision_ttl) + Duration::from_secs(300)) * 3;
        let versions = Versions::new(retention);
        let cache = EntityCache::new(db.clone(), shared, versions.clone(), &config.entity_cache);
        let feed = ChangeFeed::start(
            db.clone(),
            cache.clone(),
            Arc::clone(&clock),
            config.feed.clone(),
        )
        .await?;
        let ring = KeyRing::load_or_generate(&config.keys_file, clock.now_ms())?;
        let signer = MediaUrlSigner::new(ring, config.media.clone(), Arc::clone(&clock));
        let sink = SinkConfig::parse(&config.audit_sink, &config.audit_instance, Some(&db))?;
        let (audit, audit_writer) = AuditLog::start(AuditConfig::new(sink)).await?;
        let violations = ViolationDetector::new(
            config.violations.clone(),
            Arc::clone(&clock),
            redis
                .as_ref()
                .map(|r| (r.connection(), r.prefix().to_owned())),
        );
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let feed_task = feed.spawn(config.redis_url.clone(), shutdown_rx);
        let decisions = DecisionCache::new(
            config.decision_cache_capacity,
            config.decision_ttl,
            versions,
        );
        tracing::info!(
            database = db.display_url(),
            redis = config.redis_url.is_some(),
            audit = %config.audit_sink,
            emergency_mode = config.emergency_mode,
            revision = feed.low_water(),
            "engine started"
        );
        let engine = Self {
            inner: Arc::new(Inner {
                config,
                stores,
                db,
                cache,
                redis,
                feed,
                decisions,
                contexts: moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(600))
                    .build(),
                signer,
                audit,
                violations,
                clock,
                shutdown,
            }),
        };
        Ok((
            engine,
            EngineTasks {
                feed: feed_task,
                audit: audit_writer,
            },
        ))
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The policy stores.
    pub fn stores(&self) -> &PolicyStores {
        &self.inner.stores
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The change feed (for tests and operators: `tick` reads the log now).
    pub fn change_feed(&self) -> &ChangeFeed {
        &self.inner.feed
    }

    /// The media URL signer.
    pub fn signer(&self) -> &MediaUrlSigner {
        &self.inner.signer
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The data revision applied now.
    pub fn revision(&self) -> i64 {
        self.inner.feed.low_water()
    }

    /// A token for `store` at the current revision.
    pub fn token(&self, store: &str) -> ConsistencyToken {
        let version = self
            .inner
            .stores
            .get(store)
            .ok()
            .map(|s| s.version().to_owned());
        ConsistencyToken::new(store, version.as_deref(), self.revision())
    }

    /// Health of every dependency.
    pub async fn health(&self) -> Health {
        let statuses = self.inner.stores.statuses();
        let policies_loaded =
            !statuses.is_empty() && statuses.values().all(|s| s.current.is_some());
        let database = self.inner.db.ping().await.is_ok();
        let redis = match &self.inner.redis {
            Some(r) => Some(r.ping().await),
            None => None,
        };
        Health {
            policies_loaded,
            database,
            change_feed_fresh: self.inner.feed.fresh(),
            change_feed_lag_ms: self.inner.feed.lag_ms(),
            redis,
            audit_queue: self.inner.audit.depth(),
            revision: self.inner.feed.low_water(),
        }
    }

    /// Record a non-decision event (reload, admin call) in the audit log.
    pub async fn record_event(
        &self,
        kind: RecordKind,
        detail: String,
        principal: Option<String>,
    ) -> Result<()> {
        let mut record = AuditRecord::new(kind, self.inner.clock.now_ms());
        record.detail = Some(detail);
        record.principal = principal.map(crate::audit::Subject::Text);
        self.inner.audit.record(record).await
    }

    /// Stop background work. Await `EngineTasks::finished` afterwards to flush the audit log.
    pub fn shutdown(&self) {
        // Receivers gone means the feed already stopped.
        let _ = self.inner.shutdown.send(true);
    }

    fn store(&self, name: Option<&str>) -> Result<Arc<crate::PolicyStore>> {
        let name = name.unwrap_or(crate::decision::DEFAULT_STORE);
        self.inner.stores.get(name)
    }

    fn is_sql_store(&self, store: &crate::PolicyStore) -> bool {
        store.name() == self.inner.config.sql_store
    }
}

/// Map an error seen by a caller: database trouble becomes `Unavailable` (fail closed).
pub(crate) fn unavailable(e: Error) -> Error {
    match e {
        Error::Database(msg) => {
            tracing::error!(error = %msg, "database unavailable");
            Error::Unavailable("the database cannot be reached".into())
        }
        other => other,
    }
}
