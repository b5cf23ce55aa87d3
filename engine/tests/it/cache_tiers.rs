//! The entity tiers on their own: an entry older than a change the engine knows about is never
//! served, whatever eviction did or did not happen.

use std::sync::Arc;
use std::time::Duration;

use velro_engine::cache::{
    EntityCache, EntityCacheConfig, RedisCache, SharedCache, Tier, Versions,
};
use velro_engine::clock::SystemClock;
use velro_engine::db::{Database, DbConfig};
use velro_engine::entities::Facts;
use velro_engine::ids::{EntityKind, EntityRef};

use crate::support::{Backend, World, available, redis_url};

async fn sqlite() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&DbConfig::new(format!(
        "sqlite://{}",
        dir.path().join("t.db").display()
    )))
    .await
    .unwrap();
    (dir, db)
}

#[tokio::test]
async fn stale_l1_entries_are_read_again() {
    let (_dir, db) = sqlite().await;
    let world = World { db: db.clone() };
    let user = world.user().await;
    let key = EntityRef::new(EntityKind::User, user);
    let versions = Versions::new(Duration::from_secs(600));
    let cache = EntityCache::new(db, None, versions.clone(), &EntityCacheConfig::default());

    let (first, tier) = cache.get(key, 5, true).await.unwrap();
    assert_eq!(tier, Tier::L3);
    assert_eq!(first.read_seq, 5);
    assert_eq!(cache.get(key, 5, true).await.unwrap().1, Tier::L1);
    // A change at revision 7 is known, but nothing evicted the entry: it must not be served.
    versions.bump(key, 7);
    assert_eq!(cache.get(key, 7, true).await.unwrap().1, Tier::L3);
    assert_eq!(cache.get(key, 7, true).await.unwrap().1, Tier::L1);
    // Bypassing caches always reads the database.
    assert_eq!(cache.get(key, 7, false).await.unwrap().1, Tier::L3);
    // Missing rows are cached too (negative caching) and evicted by a change.
    let missing = EntityRef::new(EntityKind::User, uuid::Uuid::now_v7());
    let (facts, tier) = cache.get(missing, 7, true).await.unwrap();
    assert_eq!((facts.facts.clone(), tier), (Facts::Missing, Tier::L3));
    assert_eq!(cache.get(missing, 7, true).await.unwrap().1, Tier::L1);
    cache.changed(&[(missing, 8)]).await;
    assert_eq!(cache.get(missing, 8, true).await.unwrap().1, Tier::L3);
}

#[tokio::test]
async fn redis_refuses_entries_older_than_a_recorded_change() {
    if !available(Backend::SqliteRedis).await {
        return;
    }
    let prefix = format!("velro-test-{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisCache::new(
        &redis_url(),
        velro_engine::cache::redis::RedisCacheConfig {
            prefix,
            ..Default::default()
        },
        Arc::new(SystemClock),
    )
    .unwrap();
    let key = EntityRef::new(EntityKind::ChatSession, uuid::Uuid::now_v7());
    let facts = Facts::ChatSession {
        owner: uuid::Uuid::now_v7(),
    };
    redis.put(key, facts.clone(), 10).await;
    assert!(
        crate::support::eventually(|| async { redis.get(key).await.is_some() }).await,
        "the entry never arrived"
    );
    assert_eq!(redis.get(key).await, Some((facts.clone(), 10)));
    // Another engine saw a change at revision 12: the entry is dropped and a late write of data
    // read at revision 11 is refused.
    redis.changed(vec![(key, 12)]).await;
    assert_eq!(redis.get(key).await, None);
    redis.put(key, facts.clone(), 11).await;
    redis.put(key, facts.clone(), 12).await;
    assert!(crate::support::eventually(|| async { redis.get(key).await.is_some() }).await);
    assert_eq!(redis.get(key).await.map(|(_, s)| s), Some(12));
}

/// With Redis, violation windows and lockouts are shared: offences seen by two replicas add up.
#[tokio::test]
async fn replicas_share_violation_windows_and_lockouts_through_redis() {
    use velro_engine::clock::ManualClock;
    use velro_engine::violations::{Offence, ViolationConfig, ViolationDetector};
    if !available(Backend::SqliteRedis).await {
        return;
    }
    let prefix = format!("velro-test-{}:", uuid::Uuid::new_v4().simple());
    // Mid-second, so the window does not roll over during the test.
    let clock = ManualClock::new(1_900_000_000_000);
    let detector = |prefix: &str| {
        let redis = RedisCache::new(
            &redis_url(),
            velro_engine::cache::redis::RedisCacheConfig {
                prefix: prefix.to_owned(),
                ..Default::default()
            },
            Arc::new(SystemClock),
        )
        .unwrap();
        ViolationDetector::new(
            ViolationConfig {
                threshold_per_sec: 5,
                lockout: Duration::from_secs(60),
            },
            Arc::new(clock.clone()),
            Some((redis.connection(), prefix.to_owned())),
        )
    };
    let (a, b) = (detector(&prefix), detector(&prefix));
    for _ in 0..3 {
        assert!(
            a.note(Some("user-1"), None, Offence::Denied)
                .await
                .is_empty()
        );
    }
    for _ in 0..2 {
        assert!(
            b.note(Some("user-1"), None, Offence::Denied)
                .await
                .is_empty()
        );
    }
    // The sixth offence, on either replica, is over the shared threshold.
    let v = b.note(Some("user-1"), None, Offence::Denied).await;
    assert_eq!(v.len(), 1, "replica b saw only 3 offences itself");
    assert!(v[0].locked_out);
    // The other replica sees the lockout too.
    assert!(a.locked_out("user-1").await);
    assert!(!a.locked_out("user-2").await);
}
