//! The entity slice of one request (DESIGN §6 step 4): the principal, the resource and exactly
//! what the policies can reach from them: a project's ancestors and a generation's project,
//! the project's ancestors and the generation's lineage, each to the store's `entity_depth`, plus
//! entities named in the context. Facts only; the policies decide.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy_core::ast::EntityUID;
use serde_json::Value;

use crate::cache::{EntityCache, Loaded, Tier};
use crate::entities::{Facts, SharedEntity, fixed_entity};
use crate::error::Result;
use crate::ids::{EntityKind, EntityRef};

/// Entities already loaded for this request or batch.
pub(super) type Memo = HashMap<EntityRef, (Arc<Loaded>, Tier)>;

/// A loaded slice.
#[derive(Debug, Default)]
pub(super) struct Slice {
    /// Cedar entities, one per uid.
    pub entities: Vec<SharedEntity>,
    /// (entity, read_seq) for the decision cache.
    pub deps: Vec<(EntityRef, i64)>,
    /// The slowest tier used.
    pub tier: Option<Tier>,
    /// Whether the principal exists (fixed principals always do).
    pub principal_exists: bool,
    /// Whether the resource exists.
    pub resource_exists: bool,
}

pub(super) struct SliceLoader<'a> {
    pub cache: &'a EntityCache,
    pub read_seq: i64,
    pub trust_caches: bool,
    pub depth: u32,
    pub memo: &'a mut Memo,
}

impl SliceLoader<'_> {
    /// The entity, and the tier it came from: the tier that fetched it for its first use in a
    /// batch (it may have been prefetched), in-process memory afterwards.
    async fn get(&mut self, key: EntityRef) -> Result<(Arc<Loaded>, Tier)> {
        if let Some((loaded, tier)) = self.memo.get_mut(&key) {
            let first_use = std::mem::replace(tier, Tier::L1);
            return Ok((Arc::clone(loaded), first_use));
        }
        let (loaded, tier) = self
            .cache
            .get(key, self.read_seq, self.trust_caches)
            .await?;
        self.memo.insert(key, (Arc::clone(&loaded), tier));
        Ok((loaded, tier))
    }

    /// Load the slice for `principal` acting on `resource` with context entities `extra`.
    pub async fn load(
        &mut self,
        principal: EntityRef,
        resource: EntityRef,
        extra: &[EntityRef],
    ) -> Result<Slice> {
        let mut keys: Vec<EntityRef> = Vec::new();
        let mut slice = Slice::default();

        let principal_loaded = self.load_one(principal, &mut keys, &mut slice).await?;
        slice.principal_exists = principal_loaded;
        let resource_loaded = self.load_one(resource, &mut keys, &mut slice).await?;
        slice.resource_exists = resource_loaded;

        if resource_loaded {
            let (resource_facts, _) = self.get(resource).await?;
            match &resource_facts.facts {
                Facts::Project(p) => self.ancestors(p.parent, &mut keys, &mut slice).await?,
                Facts::Generation(g) => {
                    let project = EntityRef::new(EntityKind::Project, g.project);
                    if self.load_one(project, &mut keys, &mut slice).await? {
                        let parent = match &self.get(project).await?.0.facts {
                            Facts::Project(p) => p.parent,
                            _ => None,
                        };
                        self.ancestors(parent, &mut keys, &mut slice).await?;
                    }
                    let mut next = g.parent;
                    for _ in 0..self.depth {
                        let Some(id) = next else { break };
                        let key = EntityRef::new(EntityKind::Generation, id);
                        if !self.load_one(key, &mut keys, &mut slice).await? {
                            break;
                        }
                        next = match &self.get(key).await?.0.facts {
                            Facts::Generation(parent) => parent.parent,
                            _ => None,
                        };
                    }
                }
                _ => {}
            }
        }
        for key in extra {
            self.load_one(*key, &mut keys, &mut slice).await?;
        }

        let mut seen: HashSet<EntityUID> = HashSet::new();
        for key in &keys {
            if let Some((loaded, _)) = self.memo.get(key) {
                for entity in &loaded.cedar {
                    if seen.insert(entity.uid().clone()) {
                        slice.entities.push(Arc::clone(entity));
                    }
                }
            }
        }
        for fixed in [principal, resource] {
            if let Some(entity) = fixed_entity(&fixed)?
                && seen.insert(entity.uid().clone())
            {
                slice.entities.push(entity);
            }
        }
        Ok(slice)
    }

    /// Load `key` into the slice; returns whether it exists. Fixed-id kinds always exist.
    async fn load_one(
        &mut self,
        key: EntityRef,
        keys: &mut Vec<EntityRef>,
        slice: &mut Slice,
    ) -> Result<bool> {
        if key.kind.fixed_id().is_some() {
            return Ok(true);
        }
        let (loaded, tier) = self.get(key).await?;
        if !keys.contains(&key) {
            keys.push(key);
            slice.deps.push((key, loaded.read_seq));
            slice.tier = Some(slice.tier.map_or(tier, |t| t.max(tier)));
        }
        Ok(loaded.facts.exists())
    }

    /// A project's ancestors, up to the depth.
    async fn ancestors(
        &mut self,
        mut next: Option<uuid::Uuid>,
        keys: &mut Vec<EntityRef>,
        slice: &mut Slice,
    ) -> Result<()> {
        for _ in 0..self.depth {
            let Some(id) = next else { break };
            let key = EntityRef::new(EntityKind::Project, id);
            if !self.load_one(key, keys, slice).await? {
                break;
            }
            next = match &self.get(key).await?.0.facts {
                Facts::Project(p) => p.parent,
                _ => None,
            };
        }
        Ok(())
    }
}

/// Entity references in a request context: objects `{"type": T, "id": I}` or
/// `{"__entity": {"type": T, "id": I}}` whose type is a Velro kind with a valid id. Anything else
/// is left for Cedar's schema-based context parsing to accept or refuse.
pub(super) fn context_entities(context: &serde_json::Map<String, Value>) -> Vec<EntityRef> {
    fn walk(value: &Value, out: &mut Vec<EntityRef>) {
        match value {
            Value::Object(map) => {
                let target = map.get("__entity").unwrap_or(value);
                if let (Some(Value::String(t)), Some(Value::String(id))) =
                    (target.get("type"), target.get("id"))
                    && let Ok(key) = EntityRef::parse(t, id)
                {
                    out.push(key);
                    return;
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    context.values().for_each(|v| walk(v, &mut out));
    out
}

/// Request entities from a slice plus the request's action entity. Ancestor sets are already
/// transitively closed (users carry their whole role closure; the schema's action groups are
/// closed), so Cedar is told not to recompute them, and entities are shared, not copied.
pub(super) fn request_entities(
    entities: Vec<SharedEntity>,
    action: Option<&SharedEntity>,
) -> Result<cedar_policy::Entities> {
    let core = cedar_policy_core::entities::Entities::new()
        .add_entities(
            entities.into_iter().chain(action.cloned()),
            None::<&cedar_policy_core::entities::NoEntitiesSchema>,
            cedar_policy_core::entities::TCComputation::AssumeAlreadyComputed,
            cedar_policy_core::extensions::Extensions::all_available(),
        )
        .map_err(|e| crate::error::Error::Database(format!("inconsistent entity slice: {e}")))?;
    Ok(cedar_policy::Entities::from(core))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_entities_are_found_in_both_spellings() {
        let team = "0190b2f4-6c1e-7c2a-9d7e-1f2a3b4c5d6e";
        let user = "0190b2f4-6c1e-7c2a-9d7e-1f2a3b4c5d6f";
        let context = serde_json::json!({
            "team": {"type": "Velro::Team", "id": team},
            "recipient": {"__entity": {"type": "User", "id": user}},
            "target_role": {"type": "Velro::TeamRole", "id": "admin"},
            "n": 3
        });
        let found = context_entities(context.as_object().unwrap());
        assert_eq!(found.len(), 2);
        assert!(found.iter().any(|k| k.kind == EntityKind::Team));
        assert!(found.iter().any(|k| k.kind == EntityKind::User));
    }
}
