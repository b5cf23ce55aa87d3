//! Entity facts: what the database says about one Velro entity, read by SQL and turned into the
//! Cedar entities of the velro schema. Facts only: nothing here decides anything, and nothing here
//! caches (see `cache`).
//!
//! One implementation serves both dialects; the SQL text is shared (see `db`).

mod cedar;
mod sql;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(crate) use cedar::fixed_entity;
pub use cedar::{CedarEntities, SharedEntity, role_uid, share, to_cedar, uid};
pub use sql::load;

use crate::ids::{EntityKind, EntityRef, GenerationStatus, LinkCap, TeamRole, Visibility};

/// What the database holds about one entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Facts {
    /// No such row.
    Missing,
    /// A user and their team memberships.
    User(UserFacts),
    /// A team.
    Team(TeamFacts),
    /// A project with its links.
    Project(ProjectFacts),
    /// A generation.
    Generation(GenerationFacts),
    /// An uploaded file.
    MediaFile {
        /// The uploader.
        owner: Uuid,
    },
    /// A style stack.
    StyleStack {
        /// The owner; built-in stacks have none.
        owner: Option<Uuid>,
        /// Shared with everyone.
        public: bool,
        /// Shipped with the product.
        builtin: bool,
    },
    /// A chat session.
    ChatSession {
        /// The owner.
        owner: Uuid,
    },
    /// A user's credit account (same id as the user).
    CreditAccount {
        /// The owner.
        owner: Uuid,
    },
}

/// A user's flags and memberships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFacts {
    /// Denied everything.
    pub suspended: bool,
    /// May use break-glass read access in emergency mode.
    pub break_glass: bool,
    /// May read metrics and the audit log.
    pub platform_admin: bool,
    /// (team, role), sorted by team.
    pub memberships: Vec<(Uuid, TeamRole)>,
}

/// A team's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamFacts {
    /// Members holding the owner role.
    pub owner_count: i64,
}

/// A project's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectFacts {
    /// The owner.
    pub owner: Uuid,
    /// The parent project.
    pub parent: Option<Uuid>,
    /// Visibility.
    pub visibility: Visibility,
    /// Whether the project inherits its ancestors' team links.
    pub inherit_access: bool,
    /// The home team.
    pub home_team: Option<Uuid>,
    /// (team, cap) links, sorted by team.
    pub links: Vec<(Uuid, LinkCap)>,
}

/// A generation's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationFacts {
    /// The creator.
    pub owner: Uuid,
    /// The project it lives in.
    pub project: Uuid,
    /// The generation it was derived from.
    pub parent: Option<Uuid>,
    /// Lifecycle status.
    pub status: GenerationStatus,
}

impl Facts {
    /// Whether the row exists.
    pub fn exists(&self) -> bool {
        !matches!(self, Self::Missing)
    }

    /// Entities these facts point at that a slice may need next: a project's parent, a
    /// generation's project and parent. (Owners and teams are referenced by id only.)
    pub fn next_hops(&self) -> Vec<EntityRef> {
        match self {
            Self::Project(p) => p
                .parent
                .map(|id| EntityRef::new(EntityKind::Project, id))
                .into_iter()
                .collect(),
            Self::Generation(g) => {
                let mut hops = vec![EntityRef::new(EntityKind::Project, g.project)];
                if let Some(parent) = g.parent {
                    hops.push(EntityRef::new(EntityKind::Generation, parent));
                }
                hops
            }
            _ => Vec::new(),
        }
    }
}
