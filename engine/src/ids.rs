//! Typed identities of the Velro data model: entity kinds, their canonical UUID ids, and the closed
//! vocabularies (roles, caps, visibilities, statuses) as enums parsed once at the edge.
//!
//! This module knows the velro schema's entity type names; it does not load or decide anything.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The kinds of Velro entities that live in the database (plus the two fixed ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// `Velro::User`.
    User,
    /// `Velro::Anonymous` (fixed id `anonymous`).
    Anonymous,
    /// `Velro::Team`.
    Team,
    /// `Velro::Project`.
    Project,
    /// `Velro::Generation`.
    Generation,
    /// `Velro::MediaFile`.
    MediaFile,
    /// `Velro::StyleStack`.
    StyleStack,
    /// `Velro::ChatSession`.
    ChatSession,
    /// `Velro::CreditAccount` (its id is its owner's user id).
    CreditAccount,
    /// `Velro::Platform` (fixed id `velro`).
    Platform,
}

impl EntityKind {
    /// Every kind.
    pub const ALL: [Self; 10] = [
        Self::User,
        Self::Anonymous,
        Self::Team,
        Self::Project,
        Self::Generation,
        Self::MediaFile,
        Self::StyleStack,
        Self::ChatSession,
        Self::CreditAccount,
        Self::Platform,
    ];

    /// The Cedar type name without namespace, e.g. `Project`.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::User => "User",
            Self::Anonymous => "Anonymous",
            Self::Team => "Team",
            Self::Project => "Project",
            Self::Generation => "Generation",
            Self::MediaFile => "MediaFile",
            Self::StyleStack => "StyleStack",
            Self::ChatSession => "ChatSession",
            Self::CreditAccount => "CreditAccount",
            Self::Platform => "Platform",
        }
    }

    /// The name used in `authz_changes.entity_type`, e.g. `media_file`.
    pub fn change_name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Anonymous => "anonymous",
            Self::Team => "team",
            Self::Project => "project",
            Self::Generation => "generation",
            Self::MediaFile => "media_file",
            Self::StyleStack => "style_stack",
            Self::ChatSession => "chat_session",
            Self::CreditAccount => "credit_account",
            Self::Platform => "platform",
        }
    }

    /// Parse a Cedar type name (`Project` or `Velro::Project`).
    pub fn from_type_name(name: &str) -> Option<Self> {
        let base = name.strip_prefix("Velro::").unwrap_or(name);
        Self::ALL.into_iter().find(|k| k.type_name() == base)
    }

    /// Parse an `authz_changes.entity_type`.
    pub fn from_change_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.change_name() == name)
    }

    /// The one id a fixed-id kind accepts.
    pub fn fixed_id(self) -> Option<&'static str> {
        match self {
            Self::Anonymous => Some("anonymous"),
            Self::Platform => Some("velro"),
            _ => None,
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_name())
    }
}

/// The id part of an entity reference: a canonical UUID, or the fixed id of a fixed-id kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityId {
    /// A database row's id.
    Uuid(Uuid),
    /// `anonymous` or `velro`.
    Fixed(&'static str),
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(u) => write!(f, "{}", u.hyphenated()),
            Self::Fixed(s) => f.write_str(s),
        }
    }
}

/// A reference to one Velro entity: kind and id, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    /// The entity's kind.
    pub kind: EntityKind,
    /// The entity's id.
    pub id: EntityId,
}

impl EntityRef {
    /// A database-backed entity.
    pub fn new(kind: EntityKind, id: Uuid) -> Self {
        Self {
            kind,
            id: EntityId::Uuid(id),
        }
    }

    /// The anonymous principal.
    pub fn anonymous() -> Self {
        Self {
            kind: EntityKind::Anonymous,
            id: EntityId::Fixed("anonymous"),
        }
    }

    /// The platform resource.
    pub fn platform() -> Self {
        Self {
            kind: EntityKind::Platform,
            id: EntityId::Fixed("velro"),
        }
    }

    /// Parse kind name and id text. Ids of database-backed kinds must be canonical lowercase
    /// hyphenated UUIDs: anything else is refused (it would only ever be a miss, or a probe).
    pub fn parse(type_name: &str, id: &str) -> Result<Self> {
        let kind = EntityKind::from_type_name(type_name)
            .ok_or_else(|| Error::InvalidRequest(format!("unknown entity type `{type_name}`")))?;
        Self::parse_id(kind, id)
    }

    /// Parse the id of an entity of a known kind.
    pub fn parse_id(kind: EntityKind, id: &str) -> Result<Self> {
        if let Some(fixed) = kind.fixed_id() {
            return if id == fixed {
                Ok(Self {
                    kind,
                    id: EntityId::Fixed(fixed),
                })
            } else {
                Err(Error::InvalidRequest(format!(
                    "the id of a {kind} must be `{fixed}`"
                )))
            };
        }
        Ok(Self::new(kind, parse_uuid(id)?))
    }

    /// The UUID of a database-backed entity.
    pub fn uuid(&self) -> Option<Uuid> {
        match self.id {
            EntityId::Uuid(u) => Some(u),
            EntityId::Fixed(_) => None,
        }
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Velro::{}::\"{}\"", self.kind.type_name(), self.id)
    }
}

/// Parse a canonical UUID (lowercase, hyphenated, 36 characters).
pub fn parse_uuid(text: &str) -> Result<Uuid> {
    let invalid = || {
        let shown: String = text.chars().take(40).collect();
        Error::InvalidRequest(format!("`{shown}` is not a canonical UUID"))
    };
    if text.len() != 36 {
        return Err(invalid());
    }
    let uuid = Uuid::parse_str(text).map_err(|_| invalid())?;
    if uuid.hyphenated().to_string() != text {
        return Err(invalid());
    }
    Ok(uuid)
}

macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(
                #[doc = concat!("`", $text, "`")]
                $variant,
            )+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The text form used in the database and in Cedar.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(Error::InvalidRequest(format!(
                        concat!("`{}` is not a valid ", stringify!($name)),
                        other.chars().take(40).collect::<String>()
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set!(
    /// A member's role in a team, lowest first.
    TeamRole {
        Viewer = "viewer",
        Contributor = "contributor",
        Editor = "editor",
        Admin = "admin",
        Owner = "owner",
    }
);

closed_set!(
    /// The access cap of a team link.
    LinkCap {
        Read = "read",
        Write = "write",
        Admin = "admin",
    }
);

closed_set!(
    /// Project visibility.
    Visibility {
        Private = "private",
        TeamRestricted = "team_restricted",
        TeamOpen = "team_open",
        PublicRead = "public_read",
        Public = "public",
    }
);

closed_set!(
    /// Generation lifecycle.
    GenerationStatus {
        Pending = "pending",
        Processing = "processing",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_uuids_are_ids() {
        let u = "0190b2f4-6c1e-7c2a-9d7e-1f2a3b4c5d6e";
        assert_eq!(
            EntityRef::parse("User", u).unwrap().to_string(),
            format!("Velro::User::\"{u}\"")
        );
        assert_eq!(
            EntityRef::parse("Velro::Project", u).unwrap().kind,
            EntityKind::Project
        );
        for bad in [
            "0190B2F4-6C1E-7C2A-9D7E-1F2A3B4C5D6E",
            "0190b2f46c1e7c2a9d7e1f2a3b4c5d6e",
            "{0190b2f4-6c1e-7c2a-9d7e-1f2a3b4c5d6e}",
            "1' OR '1'='1",
            "",
        ] {
            assert!(EntityRef::parse("User", bad).is_err(), "{bad}");
        }
        assert!(EntityRef::parse("Robot", u).is_err());
    }

    #[test]
    fn fixed_ids_are_exact() {
        assert_eq!(
            EntityRef::parse("Anonymous", "anonymous").unwrap(),
            EntityRef::anonymous()
        );
        assert!(EntityRef::parse("Anonymous", "someone").is_err());
        assert_eq!(
            EntityRef::parse("Platform", "velro").unwrap(),
            EntityRef::platform()
        );
    }

    #[test]
    fn closed_sets_round_trip_and_refuse_others() {
        for role in TeamRole::ALL {
            assert_eq!(role.as_str().parse::<TeamRole>().unwrap(), *role);
        }
        assert!("superuser".parse::<TeamRole>().is_err());
        assert!(TeamRole::Owner > TeamRole::Admin);
        assert_eq!(
            EntityKind::from_change_name("media_file"),
            Some(EntityKind::MediaFile)
        );
    }
}
