//! Facts as Cedar entities of the velro schema (policies/velro/schema.cedarschema). The mapping is
//! mechanical: which (link cap, role level) pairs confer rights is decided by the policies.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use uuid::Uuid;

use super::Facts;
use crate::error::{Error, Result};
use crate::ids::{EntityKind, EntityRef, LinkCap, TeamRole};

/// Cedar entities of one entity's facts.
pub type CedarEntities = Vec<Entity>;

/// A Cedar entity as shared between requests (the engine assembles request entities from these
/// without copying).
pub type SharedEntity = std::sync::Arc<cedar_policy_core::ast::Entity>;

/// Share a Cedar entity.
pub fn share(entity: &Entity) -> SharedEntity {
    let ast: &cedar_policy_core::ast::Entity = entity.as_ref();
    std::sync::Arc::new(ast.clone())
}

/// Role levels that appear in project link buckets (owners are admins of a link).
const LINK_LEVELS: [TeamRole; 4] = [
    TeamRole::Viewer,
    TeamRole::Contributor,
    TeamRole::Editor,
    TeamRole::Admin,
];

#[expect(
    clippy::expect_used,
    reason = "constant, well-formed Cedar type names; covered by tests"
)]
fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(name).expect("valid Cedar type name")
}

struct Types {
    kinds: HashMap<EntityKind, EntityTypeName>,
    role: EntityTypeName,
    visibility: EntityTypeName,
    status: EntityTypeName,
}

static TYPES: LazyLock<Types> = LazyLock::new(|| Types {
    kinds: EntityKind::ALL
        .into_iter()
        .map(|k| (k, type_name(&format!("Velro::{}", k.type_name()))))
        .collect(),
    role: type_name("Velro::Role"),
    visibility: type_name("Velro::Visibility"),
    status: type_name("Velro::GenerationStatus"),
});

/// The Cedar uid of a Velro entity.
pub fn uid(key: &EntityRef) -> EntityUid {
    let type_name = TYPES
        .kinds
        .get(&key.kind)
        .cloned()
        .unwrap_or_else(|| type_name("Velro::Unknown"));
    EntityUid::from_type_name_and_id(type_name, EntityId::new(key.id.to_string()))
}

fn kind_uid(kind: EntityKind, id: Uuid) -> EntityUid {
    uid(&EntityRef::new(kind, id))
}

/// `Role::"<team>#<role>"`.
pub fn role_uid(team: Uuid, role: TeamRole) -> EntityUid {
    EntityUid::from_type_name_and_id(
        TYPES.role.clone(),
        EntityId::new(format!("{}#{}", team.hyphenated(), role.as_str())),
    )
}

fn enum_uid(type_name: &EntityTypeName, value: &str) -> RestrictedExpression {
    RestrictedExpression::new_entity_uid(EntityUid::from_type_name_and_id(
        type_name.clone(),
        EntityId::new(value),
    ))
}

fn entity(key: &EntityRef, attrs: Vec<(&str, RestrictedExpression)>) -> Result<Entity> {
    entity_with_parents(uid(key), attrs, HashSet::new())
}

fn entity_with_parents(
    uid: EntityUid,
    attrs: Vec<(&str, RestrictedExpression)>,
    parents: HashSet<EntityUid>,
) -> Result<Entity> {
    let attrs = attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Entity::new(uid, attrs, parents)
        .map_err(|e| Error::Database(format!("cannot build entity: {e}")))
}

fn record(fields: Vec<(&str, RestrictedExpression)>) -> Result<RestrictedExpression> {
    RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| Error::Database(format!("cannot build record: {e}")))
}

fn owner_attr(owner: Uuid) -> (&'static str, RestrictedExpression) {
    (
        "owner",
        RestrictedExpression::new_entity_uid(kind_uid(EntityKind::User, owner)),
    )
}

/// The role groups of `teams` at `level`.
fn role_set(teams: &[Uuid], level: TeamRole) -> RestrictedExpression {
    RestrictedExpression::new_set(
        teams
            .iter()
            .map(|t| RestrictedExpression::new_entity_uid(role_uid(*t, level))),
    )
}

/// A `LinkedRoles` record: each linked team's role group per level.
fn linked_roles(teams: &[Uuid]) -> Result<RestrictedExpression> {
    record(
        LINK_LEVELS
            .iter()
            .map(|level| (level.as_str(), role_set(teams, *level)))
            .collect(),
    )
}

/// The Cedar entities for `facts` about `key`; none for missing rows.
pub fn to_cedar(key: &EntityRef, facts: &Facts) -> Result<CedarEntities> {
    Ok(match facts {
        Facts::Missing => Vec::new(),
        Facts::User(user) => {
            // A user's ancestors are every role group their roles imply (an editor is in the
            // editor, contributor and viewer groups): the transitive closure of the role
            // hierarchy owner ∈ admin ∈ editor ∈ contributor ∈ viewer, so no role entities are
            // needed in a request and Cedar need not compute it.
            let parents = user
                .memberships
                .iter()
                .flat_map(|(team, role)| {
                    TeamRole::ALL
                        .iter()
                        .filter(move |r| *r <= role)
                        .map(move |r| role_uid(*team, *r))
                })
                .collect();
            vec![entity_with_parents(
                uid(key),
                vec![
                    ("suspended", RestrictedExpression::new_bool(user.suspended)),
                    (
                        "break_glass",
                        RestrictedExpression::new_bool(user.break_glass),
                    ),
                    (
                        "platform_admin",
                        RestrictedExpression::new_bool(user.platform_admin),
                    ),
                ],
                parents,
            )?]
        }
        Facts::Team(team) => {
            let id = key.uuid().unwrap_or_default();
            let roles = record(
                TeamRole::ALL
                    .iter()
                    .map(|r| {
                        (
                            r.as_str(),
                            RestrictedExpression::new_entity_uid(role_uid(id, *r)),
                        )
                    })
                    .collect(),
            )?;
            vec![entity(
                key,
                vec![
                    ("roles", roles),
                    (
                        "owner_count",
                        RestrictedExpression::new_long(team.owner_count),
                    ),
                ],
            )?]
        }
        Facts::Project(project) => {
            let by_cap = |cap: LinkCap| -> Vec<Uuid> {
                project
                    .links
                    .iter()
                    .filter(|(_, c)| *c == cap)
                    .map(|(t, _)| *t)
                    .collect()
            };
            let home: Vec<Uuid> = project.home_team.into_iter().collect();
            let links = record(vec![
                ("home", linked_roles(&home)?),
                ("read", linked_roles(&by_cap(LinkCap::Read))?),
                ("write", linked_roles(&by_cap(LinkCap::Write))?),
                ("admin", linked_roles(&by_cap(LinkCap::Admin))?),
            ])?;
            let mut attrs = vec![
                owner_attr(project.owner),
                ("project", RestrictedExpression::new_entity_uid(uid(key))),
                (
                    "visibility",
                    enum_uid(&TYPES.visibility, project.visibility.as_str()),
                ),
                (
                    "inherit_access",
                    RestrictedExpression::new_bool(project.inherit_access),
                ),
                ("links", links),
            ];
            if let Some(parent) = project.parent {
                attrs.push((
                    "parent",
                    RestrictedExpression::new_entity_uid(kind_uid(EntityKind::Project, parent)),
                ));
            }
            vec![entity(key, attrs)?]
        }
        Facts::Generation(generation) => {
            let mut attrs = vec![
                owner_attr(generation.owner),
                (
                    "project",
                    RestrictedExpression::new_entity_uid(kind_uid(
                        EntityKind::Project,
                        generation.project,
                    )),
                ),
                (
                    "status",
                    enum_uid(&TYPES.status, generation.status.as_str()),
                ),
            ];
            if let Some(parent) = generation.parent {
                attrs.push((
                    "parent",
                    RestrictedExpression::new_entity_uid(kind_uid(EntityKind::Generation, parent)),
                ));
            }
            vec![entity(key, attrs)?]
        }
        Facts::MediaFile { owner }
        | Facts::ChatSession { owner }
        | Facts::CreditAccount { owner } => vec![entity(key, vec![owner_attr(*owner)])?],
        Facts::StyleStack {
            owner,
            public,
            builtin,
        } => {
            let mut attrs = vec![
                ("public", RestrictedExpression::new_bool(*public)),
                ("builtin", RestrictedExpression::new_bool(*builtin)),
            ];
            if let Some(owner) = owner {
                attrs.push(owner_attr(*owner));
            }
            vec![entity(key, attrs)?]
        }
    })
}

/// Entities that exist without a row: the anonymous principal and the platform.
pub(crate) fn fixed_entity(key: &EntityRef) -> Result<Option<SharedEntity>> {
    match key.kind {
        EntityKind::Anonymous | EntityKind::Platform => {
            entity(key, Vec::new()).map(|e| Some(share(&e)))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entities::{GenerationFacts, ProjectFacts, UserFacts};
    use crate::ids::{GenerationStatus, Visibility};
    use crate::policy_store::PolicyStore;

    fn velro_schema() -> cedar_policy::Schema {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/velro");
        PolicyStore::load(&dir).unwrap().schema().clone()
    }

    /// Every kind of facts produces entities the velro schema accepts.
    #[test]
    fn facts_conform_to_the_velro_schema() {
        let u = Uuid::now_v7();
        let t = Uuid::now_v7();
        let p = Uuid::now_v7();
        let samples = vec![
            (
                EntityRef::new(EntityKind::User, u),
                Facts::User(UserFacts {
                    suspended: false,
                    break_glass: true,
                    platform_admin: false,
                    memberships: vec![(t, TeamRole::Editor)],
                }),
            ),
            (
                EntityRef::new(EntityKind::Team, t),
                Facts::Team(super::super::TeamFacts { owner_count: 2 }),
            ),
            (
                EntityRef::new(EntityKind::Project, p),
                Facts::Project(ProjectFacts {
                    owner: u,
                    parent: Some(Uuid::now_v7()),
                    visibility: Visibility::TeamOpen,
                    inherit_access: true,
                    home_team: Some(t),
                    links: vec![(Uuid::now_v7(), LinkCap::Write)],
                }),
            ),
            (
                EntityRef::new(EntityKind::Generation, Uuid::now_v7()),
                Facts::Generation(GenerationFacts {
                    owner: u,
                    project: p,
                    parent: None,
                    status: GenerationStatus::Completed,
                }),
            ),
            (
                EntityRef::new(EntityKind::StyleStack, Uuid::now_v7()),
                Facts::StyleStack {
                    owner: None,
                    public: false,
                    builtin: true,
                },
            ),
            (
                EntityRef::new(EntityKind::MediaFile, Uuid::now_v7()),
                Facts::MediaFile { owner: u },
            ),
            (
                EntityRef::new(EntityKind::ChatSession, Uuid::now_v7()),
                Facts::ChatSession { owner: u },
            ),
            (
                EntityRef::new(EntityKind::CreditAccount, u),
                Facts::CreditAccount { owner: u },
            ),
        ];
        let schema = velro_schema();
        let mut all = Vec::new();
        for (key, facts) in &samples {
            all.extend(to_cedar(key, facts).unwrap());
        }
        for key in [EntityRef::anonymous(), EntityRef::platform()] {
            all.push(Entity::from(
                fixed_entity(&key).unwrap().unwrap().as_ref().clone(),
            ));
        }
        let entities = cedar_policy::Entities::from_entities(all, Some(&schema)).unwrap();
        let user = uid(&samples[0].0);
        // The user's parents already hold the closure of the role hierarchy.
        let parents: Vec<_> = entities.ancestors(&user).unwrap().cloned().collect();
        assert_eq!(parents.len(), 3, "editor, contributor, viewer");
        assert!(parents.contains(&role_uid(t, TeamRole::Viewer)));
        assert!(!parents.contains(&role_uid(t, TeamRole::Admin)));
        assert!(to_cedar(&samples[0].0, &Facts::Missing).unwrap().is_empty());
    }
}
