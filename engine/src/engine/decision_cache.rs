//! The decision cache (DESIGN §6 step 3): answers keyed by (store, policy version, principal,
//! action, resource, context), each valid only while no entity it was computed from has changed
//! since it was read. Break-glass and errored decisions are never stored (the caller decides).

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Versions;
use crate::decision::{DenyKind, DeterminingPolicy};
use crate::ids::EntityRef;

/// What identifies a question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct DecisionKey {
    pub store: Arc<str>,
    pub policy_version: Arc<str>,
    pub principal: EntityRef,
    pub action: Arc<str>,
    pub resource: EntityRef,
    /// The caller's context as canonical JSON.
    pub context: String,
}

/// A cached answer and the entity versions it depends on.
#[derive(Debug)]
pub(super) struct CachedDecision {
    pub allowed: bool,
    pub deny_kind: Option<DenyKind>,
    pub policies: Vec<DeterminingPolicy>,
    /// (entity, `read_seq` of the facts used): valid while no change is newer.
    pub deps: Vec<(EntityRef, i64)>,
    /// The change counter read before the facts were: if it has not moved, no dependency
    /// changed either.
    pub epoch: u64,
}

#[derive(Debug)]
pub(super) struct DecisionCache {
    cache: moka::sync::Cache<DecisionKey, Arc<CachedDecision>>,
    versions: Versions,
}

impl DecisionCache {
    pub fn new(capacity: u64, ttl: Duration, versions: Versions) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            versions,
        }
    }

    /// A still-valid answer for `key`.
    pub fn get(&self, key: &DecisionKey) -> Option<Arc<CachedDecision>> {
        let hit = self.cache.get(key)?;
        if hit.epoch == self.versions.epoch()
            || hit
                .deps
                .iter()
                .all(|(entity, read_seq)| self.versions.get(entity) <= *read_seq)
        {
            Some(hit)
        } else {
            self.cache.invalidate(key);
            None
        }
    }

    pub fn insert(&self, key: DecisionKey, decision: CachedDecision) {
        self.cache.insert(key, Arc::new(decision));
    }
}
